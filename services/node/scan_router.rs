//! Paged scans at the node: a scan opens at the leaseholder, after the same read-lease check a
//! linearizable read makes, and keeps its snapshot open here as a cursor while rows remain;
//! later pages are read from that cursor on the node that holds it, wherever the lease has
//! moved since. Either request is forwarded to the node that must serve it. Why this keeps a
//! scan's view atomic, and the cursors' bounds, are in [`crate::services::scan`].

use super::*;
use crate::services::raft::state_machine::ReadSnapshot;
use crate::services::scan::{CursorRef, Cursors, PageLimits, ScanPage, ScanRequest, TakenPage};

/// Most rows one page may carry.
const MAX_PAGE_ROWS: u32 = 16 * 1024;
/// Most key and value bytes one page may carry (past the row that crosses it): one page is
/// one gRPC message when forwarded.
const MAX_PAGE_BYTES: u32 = 4 * 1024 * 1024;

/// The snapshots of the scans this node serves.
pub(super) type ScanCursors = Cursors<ReadSnapshot>;

impl NodeCore {
    /// Serves one page of a paged scan: opens it (at the leaseholder, forwarding if this node
    /// is not) or reads the next page from its cursor (on the node holding it). Requests
    /// `forwarded_by` another node (the one its client asked) run only here.
    pub async fn scan_page(&self, mut request: ScanRequest, forwarded_by: Option<NodeId>) -> Result<ScanPage> {
        if !request.end.is_empty() && request.end <= request.start {
            return Err(Error::InvalidArgument("scan end is not after its start".into()));
        }
        request.limits = PageLimits {
            max_rows: request.limits.max_rows.clamp(1, MAX_PAGE_ROWS),
            max_bytes: request.limits.max_bytes.clamp(1, MAX_PAGE_BYTES),
        };
        let active = self.active()?.clone();
        // Whose client the page is for: the forwarding node's, or this node's own.
        let origin = forwarded_by.unwrap_or(active.node_id);
        match request.cursor {
            Some(cursor) if cursor.node_id == active.node_id => {
                self.scan_continue(&active, cursor.id, request, origin).await
            }
            Some(cursor) if forwarded_by.is_some() => Err(Error::InvalidArgument(format!(
                "scan cursor {} belongs to node {}, not this one",
                cursor.id, cursor.node_id
            ))),
            // The snapshot exists only on its node: no other node can serve the next page.
            Some(cursor) => self.scan_forward(&active, cursor.node_id, request).await,
            None if forwarded_by.is_some() => self.scan_open(&active, request, origin).await,
            None => {
                let op = [Op::Scan { start: request.start.clone(), end: request.end.clone(), limit: 0 }];
                kv::retry_batch(&op, || self.scan_route(&active, request.clone())).await
            }
        }
    }

    async fn scan_route(&self, active: &Active, request: ScanRequest) -> Result<ScanPage> {
        let (group, _) = self.first_scan_piece(active, &request).await?;
        let local = || self.scan_open(active, request.clone(), active.node_id);
        self.at_leaseholder(active, group, local, |to| self.scan_forward(active, to, request.clone())).await
    }

    /// The group holding the scan's first key, with the part of the scan it holds.
    async fn first_scan_piece(
        &self,
        active: &Active,
        request: &ScanRequest,
    ) -> Result<(u64, crate::services::raft::state_machine::Span)> {
        let pieces = self.pieces(active, &request.start, &request.end).await?;
        pieces.into_iter().next().ok_or_else(|| Error::Internal("a scan cut into no pieces".into()))
    }

    async fn scan_forward(&self, active: &Active, node_id: NodeId, request: ScanRequest) -> Result<ScanPage> {
        let addr = self
            .member_addr(active, node_id)
            .ok_or_else(|| Error::Unavailable(format!("node {node_id}, which serves this scan, is not a member")))?;
        let mut client = crate::pb::kv_service_client::KvServiceClient::new(self.dialer.channel(&addr)?)
            .max_decoding_message_size(crate::services::raft::network::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::services::raft::network::MAX_MESSAGE_BYTES);
        let mut call = tonic::Request::new(pb::ScanPageRequest::from_request(request, Some(active.node_id)));
        call.set_timeout(RAFT_REQUEST_TIMEOUT + Duration::from_secs(1));
        Ok(client.scan_page(call).await.map_err(Error::from)?.into_inner().into())
    }

    /// Opens a scan here, as leaseholder: its first page, and a cursor if rows remain.
    async fn scan_open(&self, active: &Active, request: ScanRequest, origin: NodeId) -> Result<ScanPage> {
        if request.close {
            return Ok(ScanPage::default());
        }
        // Counted until the snapshot is taken, so drain waits for it as for a read (`kv_local`).
        let _in_flight = super::kv_router::LeaseRead::enter(&self.lease_reads);
        if self.is_draining() {
            return Err(Error::NotLeaseholder { leader: None });
        }
        // A scan crossing groups reads one group's part here; the page then says where the
        // next part starts, without a cursor: another group's leaseholder serves it.
        let (group_id, piece) = self.first_scan_piece(active, &request).await?;
        if !active.holds(group_id) {
            // Forwarded here by a node whose routing copy was out of date: it looks again.
            return Err(Error::RangeKeyMismatch("this node holds no replica of the scan's range".into()));
        }
        let group = active.routed_replica(group_id)?;
        // The test-only switch skips the lease, as for batches (see `kv_local`).
        if !self.config.testing_stale_follower_reads {
            self.confirm_read_lease(active, &group).await?;
        }
        let op = [Op::Scan { start: piece.start.clone(), end: piece.end.clone(), limit: 0 }];
        if !raft_mod::groups::ops_within(group.state.span().as_ref(), &op) {
            return Err(crate::services::raft::state_machine::range_key_mismatch(group_id));
        }
        let state = group.state.clone();
        let (start, end, limits) = (piece.start, piece.end.clone(), request.limits);
        let (snapshot, page, cpu_nanos) = tokio::task::spawn_blocking(move || {
            let cpu = cpu_time::ThreadTime::now();
            let snapshot = state.snapshot()?;
            let page = snapshot.page(&start, &end, limits)?;
            Ok::<_, Error>((snapshot, page, cpu.elapsed().as_nanos() as u64))
        })
        .await
        .map_err(Error::internal)??;
        let TakenPage { rows, next_key } = page;
        let rows = self.record_scan_load(&active.state, &request, rows, cpu_nanos, origin);
        let resume = match next_key {
            Some(next) => {
                let id = self.cursors.register(snapshot, piece.end.clone(), Instant::now())?;
                Some((Some(CursorRef { node_id: active.node_id, id }), next))
            }
            None => next_part(&piece.end, &request.end),
        };
        Ok(ScanPage { rows, resume })
    }

    /// The next page from cursor `id` of this node.
    async fn scan_continue(&self, active: &Active, id: u64, request: ScanRequest, origin: NodeId) -> Result<ScanPage> {
        if request.close {
            self.cursors.close(id);
            return Ok(ScanPage::default());
        }
        let cursor = self.cursors.check_out(id, Instant::now())?;
        let (start, limits) = (request.start.clone(), request.limits);
        let read = tokio::task::spawn_blocking(move || {
            let cpu = cpu_time::ThreadTime::now();
            let page = cursor.snapshot.page(&start, &cursor.end, limits);
            (cursor, page.map(|page| (page, cpu.elapsed().as_nanos() as u64)))
        })
        .await;
        let (cursor, (TakenPage { rows, next_key }, cpu_nanos)) = match read {
            Ok((cursor, Ok(page))) => (cursor, page),
            Ok((_, Err(err))) => {
                self.cursors.close(id);
                return Err(err);
            }
            Err(join) => {
                self.cursors.close(id);
                return Err(Error::internal(join));
            }
        };
        let rows = self.record_scan_load(&active.state, &request, rows, cpu_nanos, origin);
        let resume = match next_key {
            Some(next) => {
                self.cursors.put_back(id, cursor, Instant::now());
                Some((Some(CursorRef { node_id: active.node_id, id }), next))
            }
            None => {
                self.cursors.close(id);
                next_part(&cursor.end, &request.end)
            }
        };
        Ok(ScanPage { rows, resume })
    }

    /// Attributes a page's reads, for a client of node `origin`, to the ranges they touched,
    /// as for a scan in a batch.
    fn record_scan_load(
        &self,
        state: &StateStore,
        request: &ScanRequest,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        cpu_nanos: u64,
        origin: NodeId,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let op = Op::Scan { start: request.start.clone(), end: request.end.clone(), limit: 0 };
        let result = OpResult { rows, ..Default::default() };
        self.record_load(state, std::slice::from_ref(&op), std::slice::from_ref(&result), cpu_nanos, origin);
        result.rows
    }
}

/// Where a scan of `[.., scan_end)` goes on once its part ending at `part_end` is read: the
/// next group's part, opened afresh, or nowhere.
fn next_part(part_end: &[u8], scan_end: &[u8]) -> Option<(Option<CursorRef>, Vec<u8>)> {
    let more = !part_end.is_empty() && (scan_end.is_empty() || part_end < scan_end);
    more.then(|| (None, part_end.to_vec()))
}
