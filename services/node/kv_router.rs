//! KV routing: a batch runs here when this node holds the lease, otherwise it is forwarded to
//! the leaseholder; reads skip the quorum round while a read lease holds; splits; and the
//! attribution of each batch's load to the ranges it touched.

use super::*;

/// A leaseholder's right to serve reads from its own state without a quorum round.
///
/// openraft's followers refuse votes for `leader_lease` (= `ELECTION_TIMEOUT_MAX`) after the
/// last heartbeat they accepted, and do not campaign themselves for longer. So once a quorum
/// has acknowledged a heartbeat sent after `t0` (what `ensure_linearizable` waits for), no
/// other leader can exist before `t0 + ELECTION_TIMEOUT_MAX`; every write acknowledged before
/// the read was applied here first. Reads may skip the round while the same term holds and
/// the lease, shortened by a margin for scheduling delays, has not run out.
///
/// Assumptions, as for any lease: clocks on the nodes advance at about the same rate; and this
/// leader, if it grants a newer candidate its vote (openraft lets a leader whose own vote is
/// older than the lease do so), publishes the newer term in its metrics before that candidate
/// can be elected and commit a write, which takes it at least two more network round trips.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadLease {
    term: u64,
    expires: Instant,
}

/// One read in progress under the read lease, counted in [`NodeCore`]'s `lease_reads`.
pub(super) struct LeaseRead<'a>(&'a AtomicUsize);

impl<'a> LeaseRead<'a> {
    pub(super) fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for LeaseRead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many nodes one routing attempt forwards a batch to, following the leaders they name.
const FORWARD_HOPS: usize = 3;

/// The part of `ELECTION_TIMEOUT_MAX` a read lease uses; the rest is margin.
const READ_LEASE: Duration = Duration::from_millis(crate::services::raft::ELECTION_TIMEOUT_MAX.as_millis() as u64 / 2);

impl NodeCore {
    /// Runs a batch: here if this node holds the lease, otherwise forwarded to the
    /// leaseholder; retried while the lease moves. A batch `forwarded_by` another node (the
    /// one its client sent it to) runs only here.
    pub async fn kv_batch(&self, ops: Vec<Op>, forwarded_by: Option<NodeId>) -> Result<Vec<OpResult>> {
        kv::validate(&ops)?;
        let active = self.active()?.clone();
        if let Some(origin) = forwarded_by {
            return self.kv_local(&active, ops, origin).await;
        }
        if !ops.iter().any(Op::is_write) && matches!(self.route_group(&active, &ops).await, Err(Error::Unsupported(_)))
        {
            return self.read_across_groups(&active, ops).await;
        }
        kv::retry_batch(&ops, || self.kv_route(&active, ops.clone())).await
    }

    /// Runs a read-only batch whose keys lie in more than one Raft group one operation at a
    /// time, a scan one group's part at a time: each part is a linearizable read of its own,
    /// but together they are not one atomic view (see Atomicity in the README).
    async fn read_across_groups(&self, active: &Active, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let Op::Scan { start, end, limit } = op else {
                let single = vec![op];
                results.extend(kv::retry_batch(&single, || self.kv_route(active, single.clone())).await?);
                continue;
            };
            let mut rows = Vec::new();
            let pieces = self.pieces(active, &start, &end).await?;
            for (_, piece) in pieces {
                let wanted = if limit == 0 { 0 } else { limit - rows.len() as u32 };
                let part = vec![Op::Scan { start: piece.start, end: piece.end, limit: wanted }];
                let mut result = kv::retry_batch(&part, || self.kv_route(active, part.clone())).await?;
                rows.append(&mut result.remove(0).rows);
                if limit != 0 && rows.len() >= limit as usize {
                    break;
                }
            }
            results.push(OpResult { rows, ..Default::default() });
        }
        Ok(results)
    }

    /// Runs read-only `ops` against this node's applied copy, without the leaseholder: what
    /// this node knows, answered even while the range has no reachable leader.
    pub async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        kv::validate_read_only(&ops)?;
        Ok(self.active()?.state.read(ops).await?.0)
    }

    pub(super) async fn kv_route(&self, active: &Active, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let group = self.route_group(active, &ops).await?;
        let local = || self.kv_local(active, ops.clone(), active.node_id);
        self.at_leaseholder(active, group, local, |to| self.forward_batch(active, to, ops.clone())).await
    }

    /// Runs a request for `group` at its leaseholder: `local`ly if this node holds a replica
    /// and leads, otherwise `forward`ed (see [`NodeCore::on_leaseholder`]) to the leader this
    /// node's replica names, or to a member.
    pub(super) async fn at_leaseholder<T, L, LocalFut, F, Fut>(
        &self,
        active: &Active,
        group: u64,
        local: L,
        forward: F,
    ) -> Result<T>
    where
        L: FnOnce() -> LocalFut,
        LocalFut: std::future::Future<Output = Result<T>>,
        F: Fn(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let hint = if active.holds(group) {
            match local().await {
                Err(Error::NotLeaseholder { leader }) => leader.filter(|id| *id != active.node_id),
                other => return other,
            }
        } else {
            None
        };
        self.on_leaseholder(active, group, hint, forward).await
    }

    /// Runs `call` on another node for `group`'s leaseholder: on `hint` if given, otherwise on
    /// a member picked at random, which serves it if it leads or names the leader. An election
    /// may be under way, or this node may hold no replica (or one the group removed, whose
    /// view is frozen), and the node asked may itself be out of date as leases move: a few
    /// hops follow the leaders each one names.
    pub(super) async fn on_leaseholder<T, F, Fut>(
        &self,
        active: &Active,
        group: u64,
        hint: Option<NodeId>,
        call: F,
    ) -> Result<T>
    where
        F: Fn(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut target = match hint {
            Some(leader) => leader,
            None => {
                let members = self.group_members(active, group).await?;
                let others: Vec<NodeId> = members.into_iter().filter(|id| *id != active.node_id).collect();
                match others.get(rand::random_range(0..others.len().max(1))) {
                    Some(&member) => member,
                    None => return Err(Error::NotLeaseholder { leader: None }),
                }
            }
        };
        for _ in 0..FORWARD_HOPS {
            match call(target).await {
                Err(Error::NotLeaseholder { leader: Some(next) }) if next != active.node_id && next != target => {
                    target = next;
                }
                other => return other,
            }
        }
        Err(Error::NotLeaseholder { leader: None })
    }

    /// Runs `ops` on node `to` only (it does not forward them further).
    async fn forward_batch(&self, active: &Active, to: NodeId, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let addr = self.member_addr(active, to).ok_or(Error::NotLeaseholder { leader: None })?;
        let mut client = crate::pb::kv_service_client::KvServiceClient::new(self.dialer.channel(&addr)?)
            .max_decoding_message_size(crate::services::raft::network::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::services::raft::network::MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(pb::BatchRequest::from_ops(ops, Some(active.node_id)));
        request.set_timeout(RAFT_REQUEST_TIMEOUT + Duration::from_secs(1));
        let reply = client.batch(request).await.map_err(Error::from)?;
        Ok(reply.into_inner().into_results())
    }

    /// Runs a batch here, as the leaseholder of its range, for a client of node `origin`.
    pub(super) async fn kv_local(&self, active: &Active, ops: Vec<Op>, origin: NodeId) -> Result<Vec<OpResult>> {
        if self.is_draining() {
            return Err(Error::NotLeaseholder { leader: None });
        }
        // A batch forwarded here by a node whose routing copy was out of date: the sender looks
        // again (nothing was proposed).
        let group = match active.state.group_of_ops(&ops) {
            Ok(group) if active.holds(group) => group,
            Err(Error::Unavailable(_)) | Ok(_) => {
                return Err(Error::RangeKeyMismatch("this node holds no replica of the batch's range".into()));
            }
            Err(err) => return Err(err),
        };
        let group = active.routed_replica(group)?;
        if ops.iter().any(Op::is_write) {
            group.wake_to_propose().await;
            let reply =
                tokio::time::timeout(RAFT_REQUEST_TIMEOUT, group.raft.client_write(Command::Batch(ops.clone())))
                    .await
                    .map_err(|_| Error::DeadlineExceeded("timed out waiting for the write to commit".into()))?;
            match reply {
                Ok(response) => match response.data {
                    CommandResponse::Batch { results, cpu_nanos } => {
                        let results = results?;
                        self.record_load(&active.state, &ops, &results, cpu_nanos, origin);
                        Ok(results)
                    }
                    other => Err(Error::Internal(format!("unexpected apply response {other:?}"))),
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(Error::NotLeaseholder { leader: forward.leader_id })
                }
                Err(err) => Err(Error::Unavailable(format!("write failed: {err}"))),
            }
        } else {
            // Counted before the draining check, so drain sees every read that passed it.
            let _in_flight = LeaseRead::enter(&self.lease_reads);
            if self.is_draining() {
                return Err(Error::NotLeaseholder { leader: None });
            }
            // The test-only switch skips the lease, so a lagging follower answers from what it
            // has applied: the broken read path the nemesis test must catch.
            if !self.config.testing_stale_follower_reads {
                self.confirm_read_lease(active, &group).await?;
            }
            // The span is checked after the lease, as an apply checks it: the group may have
            // given keys away since the batch was routed.
            if !raft_mod::groups::ops_within(group.state.span().as_ref(), &ops) {
                return Err(crate::services::raft::state_machine::range_key_mismatch(group.group));
            }
            let (results, cpu_nanos) = group.state.read(ops.clone()).await?;
            self.record_load(&active.state, &ops, &results, cpu_nanos, origin);
            Ok(results)
        }
    }

    /// Returns once this node may serve a linearizable read from its own state: at once while
    /// its read lease holds, otherwise after a quorum round that renews the lease.
    pub(super) async fn confirm_read_lease(&self, active: &Active, group: &Replica) -> Result<()> {
        let (leader, term) = {
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow_watched();
            (metrics.current_leader, metrics.current_term)
        };
        if leader == Some(active.node_id) {
            let lease = *group.read_lease.lock().unwrap_or_else(|p| p.into_inner());
            if lease.is_some_and(|lease| lease.term == term && Instant::now() < lease.expires) {
                return Ok(());
            }
        }
        // The log's end from the Raft core itself: the metrics of a node just restarted may
        // not show its recovered log yet.
        let last_log_index = group
            .raft
            .with_raft_state(|st| st.log_ids.last().map(|id| id.index))
            .await
            .map_err(|err| Error::Unavailable(format!("read failed: {err}")))?;
        let sent = Instant::now();
        let check = tokio::time::timeout(RAFT_REQUEST_TIMEOUT, group.raft.ensure_linearizable(ReadPolicy::ReadIndex))
            .await
            .map_err(|_| Error::Unavailable("timed out confirming the lease with a quorum".into()))?;
        match check {
            Ok(_) => {
                // A leader that restarts keeps its term (openraft restores it as leader) and
                // reads at its term's old first entry or its commit index, whichever is later;
                // but the commit index is not persisted and restarts at the state machine's
                // last durable apply, which trails entries committed and acknowledged before
                // the crash. So wait until every entry in its log when the read came is
                // applied: they all commit while this leader's term holds.
                group
                    .raft
                    .wait(Some(RAFT_REQUEST_TIMEOUT))
                    .applied_index_at_least(last_log_index, "entries logged before the read applied")
                    .await
                    .map_err(|err| Error::Unavailable(format!("read failed: {err}")))?;
                // The term read before the round: if leadership changed meanwhile, the lease
                // recorded under the old term is never used.
                if leader == Some(active.node_id) {
                    *group.read_lease.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(ReadLease { term, expires: sent + READ_LEASE });
                }
                Ok(())
            }
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                Err(Error::NotLeaseholder { leader: forward.leader_id })
            }
            Err(err) => Err(Error::Unavailable(format!("read failed: {err}"))),
        }
    }

    /// Attributes one batch's work, for a client of node `origin`, to the ranges it touched:
    /// one query per range, keys and bytes per operation, CPU time shared evenly.
    pub(super) fn record_load(
        &self,
        state: &StateStore,
        ops: &[Op],
        results: &[OpResult],
        cpu_nanos: u64,
        origin: NodeId,
    ) {
        let samples = state.with_shared(|shared| load_samples(&shared.ranges, ops, results));
        let share = cpu_nanos / samples.len().max(1) as u64;
        for (range_id, mut sample) in samples {
            sample.cpu_nanos = share;
            self.load.record(range_id, sample, origin);
        }
    }

    /// A range id no other split uses, from a block this node takes from range 1's counter
    /// [`RANGE_ID_BLOCK`] at a time (as CockroachDB's stores do): a write to range 1 per split
    /// would make splitting a table into many ranges wait on range 1 each time. An id taken by
    /// a split that then fails or turns out a no-op, or left in a block when the node stops,
    /// is never used.
    async fn next_range_id(&self) -> Result<u64> {
        let mut block = self.range_ids.lock().await;
        if block.is_empty() {
            let delta = RANGE_ID_BLOCK as i64;
            let op = Op::Increment { key: keys::RANGE_ID_ALLOCATOR.to_vec(), delta };
            let last = self.kv_batch(vec![op], None).await?[0].new_value as u64;
            *block = last + 1 - RANGE_ID_BLOCK..last + 1;
        }
        block.next().ok_or_else(|| Error::Internal("range 1's counter returned no range ids".into()))
    }

    /// Splits the range containing `split_key` at that key (a no-op at an existing boundary).
    pub async fn split(&self, split_key: Vec<u8>, forwarded: bool) -> Result<(u64, u64)> {
        if split_key.is_empty() {
            return Err(Error::InvalidArgument("empty split key".into()));
        }
        let active = self.active()?.clone();
        // The new range's id comes from range 1's counter, in a write of its own: the split is
        // applied by the range's own group, which must not write range 1's keys.
        let right_range_id = self.next_range_id().await?;
        let forward = |to: NodeId| {
            let split_key = split_key.clone();
            let active = &active;
            async move {
                let addr = self.member_addr(active, to).ok_or(Error::NotLeaseholder { leader: None })?;
                let mut client = crate::pb::kv_service_client::KvServiceClient::new(self.dialer.channel(&addr)?);
                let reply = client
                    .admin_split(pb::AdminSplitRequest { split_key: split_key.into(), forwarded: true })
                    .await?
                    .into_inner();
                Ok((reply.left_range_id, reply.right_range_id))
            }
        };
        let attempt = || async {
            // Looked up on every attempt: a split just applied may have moved the key to a
            // group still starting here.
            let key_op = [Op::Get { key: split_key.clone() }];
            let not_here = || Error::RangeKeyMismatch("this node holds no replica of the range to split".into());
            let group = if forwarded {
                active.state.group_of_ops(&key_op).map_err(|_| not_here())?
            } else {
                self.route_group(&active, &key_op).await?
            };
            if !active.holds(group) {
                if forwarded {
                    return Err(not_here());
                }
                return self.on_leaseholder(&active, group, None, forward).await;
            }
            let group = active.routed_replica(group)?;
            let command = Command::Split { split_key: split_key.clone(), right_range_id };
            group.wake_to_propose().await;
            let reply = tokio::time::timeout(RAFT_REQUEST_TIMEOUT, group.raft.client_write(command))
                .await
                .map_err(|_| Error::DeadlineExceeded("timed out waiting for the split to commit".into()))?;
            match reply {
                Ok(response) => match response.data {
                    CommandResponse::Split(result) => result,
                    other => Err(Error::Internal(format!("unexpected apply response {other:?}"))),
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward_to))) if !forwarded => {
                    let hint = forward_to.leader_id.filter(|id| *id != active.node_id);
                    self.on_leaseholder(&active, group.group, hint, forward).await
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(Error::NotLeaseholder { leader: forward.leader_id })
                }
                Err(err) => Err(Error::Unavailable(format!("split failed: {err}"))),
            }
        };
        // A split is idempotent (a repeat at the same key is a no-op), so it may be retried.
        let mut backoff = Duration::from_millis(50);
        let deadline = Instant::now() + kv::RETRY_DEADLINE;
        loop {
            match attempt().await {
                Err(Error::NotLeaseholder { .. } | Error::RangeKeyMismatch(_) | Error::Unavailable(_))
                    if !forwarded && Instant::now() < deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Ok((left, right)) => {
                    // The new group starts on the left group's replicas.
                    if active.holds(left) {
                        wait_for_leader(&active, right).await;
                    }
                    return Ok((left, right));
                }
                Err(err) if !forwarded => return Err(kv::gave_up(err)),
                other => return other,
            }
        }
    }
}

/// How many range ids a node takes from range 1's counter at once.
const RANGE_ID_BLOCK: u64 = 16;

/// Waits (a little) until this node runs a replica of `group` that knows its leader: a split
/// returns once its new range can be used, so the statement after it neither waits for the
/// new group nor sees the range missing from this node's views.
async fn wait_for_leader(active: &Active, group: u64) {
    let deadline = Instant::now() + RAFT_REQUEST_TIMEOUT;
    while Instant::now() < deadline {
        let replica = active.replicas.get(group);
        if replica.is_some_and(|replica| replica.raft.metrics().borrow_watched().current_leader.is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Per-range load of one batch.
fn load_samples(index: &RangeIndex, ops: &[Op], results: &[OpResult]) -> Vec<(u64, LoadSample)> {
    let mut samples: BTreeMap<u64, LoadSample> = BTreeMap::new();
    let mut add = |key: &[u8], f: &dyn Fn(&mut LoadSample)| {
        if let Some(desc) = index.lookup(key) {
            f(samples.entry(desc.range_id).or_default());
        }
    };
    for (op, result) in ops.iter().zip(results) {
        match op {
            Op::Get { key } => {
                let bytes = (key.len() + result.value.as_ref().map_or(0, Vec::len)) as u64;
                add(key, &|s| {
                    s.reads += 1;
                    s.read_bytes += bytes;
                });
            }
            Op::Scan { start, .. } => {
                add(start, &|_| {});
                for (k, v) in &result.rows {
                    let bytes = (k.len() + v.len()) as u64;
                    add(k, &|s| {
                        s.reads += 1;
                        s.read_bytes += bytes;
                    });
                }
            }
            Op::Put { key, value } | Op::ConditionalPut { key, value, .. } | Op::PutIfAbsent { key, value } => {
                let bytes = (key.len() + value.len()) as u64;
                add(key, &|s| {
                    s.writes += 1;
                    s.write_bytes += bytes;
                });
            }
            Op::Delete { key } => {
                let bytes = key.len() as u64;
                add(key, &|s| {
                    s.writes += 1;
                    s.write_bytes += bytes;
                });
            }
            Op::DeleteRange { start, .. } => {
                let deleted = result.new_value.max(0) as u64;
                add(start, &|s| {
                    s.writes += deleted;
                });
            }
            Op::Increment { key, .. } => {
                let bytes = (key.len() + 8) as u64;
                add(key, &|s| {
                    s.writes += 1;
                    s.write_bytes += bytes;
                });
            }
        }
    }
    samples.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn load_is_attributed_to_the_ranges_touched() {
        let mut index = RangeIndex::default();
        for desc in ranges::bootstrap_descriptors() {
            index.insert(desc);
        }
        let (left, right) = index.plan_split(b"m", 3).unwrap();
        index.insert(left);
        index.insert(right);
        let ops = vec![
            Op::Get { key: b"a".to_vec() },
            Op::Put { key: b"n".to_vec(), value: b"12345".to_vec() },
            Op::Scan { start: b"a".to_vec(), end: b"z".to_vec(), limit: 0 },
        ];
        let results = vec![
            OpResult { value: Some(b"xy".to_vec()), ..Default::default() },
            OpResult::default(),
            OpResult {
                rows: vec![(b"b".to_vec(), b"1".to_vec()), (b"p".to_vec(), b"22".to_vec())],
                ..Default::default()
            },
        ];
        let samples = load_samples(&index, &ops, &results);
        assert_eq!(samples.len(), 2);
        let (id2, s2) = samples[0];
        let (id3, s3) = samples[1];
        assert_eq!((id2, s2.reads, s2.read_bytes, s2.writes), (2, 2, 3 + 2, 0));
        assert_eq!((id3, s3.reads, s3.read_bytes, s3.writes, s3.write_bytes), (3, 1, 3, 1, 6));
    }
}
