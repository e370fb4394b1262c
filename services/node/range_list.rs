//! Every range of the cluster in a key span, as SQL's views need them (SHOW RANGES, table
//! sizes). With replicas on 3 of N nodes a node holds only some ranges: those it holds come
//! from its own replicas, every other one from a member that range 1's routing copy records
//! for it, asked over its StatusService (one call per node asked).

use super::*;
use crate::services::ranges::MetaRecord;
use crate::services::status::RangeSummary;

impl NodeCore {
    /// The ranges overlapping `[start, end)` (an empty `end`: to the end of the keyspace), in
    /// key order. Unavailable if none of some range's recorded members answers for it.
    pub async fn ranges_in_span(&self, start: &[u8], end: &[u8]) -> Result<Vec<RangeSummary>> {
        let active = self.active()?.clone();
        // A view that names no leaseholder (a follower that has not heard from its leader: a
        // quiesced group's may never) is used only if no member's view names one.
        let (mut found, mut unsure) = (BTreeMap::new(), BTreeMap::new());
        let mut keep = |found: &mut BTreeMap<u64, RangeSummary>, range: RangeSummary| {
            let id = range.descriptor.range_id;
            if range.leader_id != 0 {
                found.insert(id, range);
            } else {
                unsure.entry(id).or_insert(range);
            }
        };
        // Views only of the local ranges in the span: each asks its group's Raft core.
        let local: Vec<u64> =
            active.state.with_shared(|shared| shared.ranges.overlapping(start, end).map(|d| d.range_id).collect());
        let held = if local.is_empty() { Vec::new() } else { self.ranges(&local).await? };
        for replica in held.iter().filter(|replica| replica.descriptor.overlaps(start, end)) {
            keep(&mut found, RangeSummary::from(replica));
        }
        let missing: Vec<MetaRecord> = (self.meta_records().await?.into_iter())
            .filter(|record| record.descriptor.overlaps(start, end) && !found.contains_key(&record.descriptor.range_id))
            .collect();
        // Each round asks every range still missing of its next recorded member (voters first),
        // all the ranges one node is asked for in one call.
        // A record may be older than its range's last split: the member's answer then shows
        // a range that no longer reaches into the span, which is left out.
        let mut gone = BTreeSet::new();
        let rounds = missing.iter().map(|record| record.voters.len() + record.learners.len()).max().unwrap_or(0);
        for round in 0..rounds {
            let mut asks: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
            let wanted = |id: &u64| !found.contains_key(id) && !gone.contains(id);
            for record in missing.iter().filter(|record| wanted(&record.descriptor.range_id)) {
                if let Some(member) = record.voters.iter().chain(&record.learners).nth(round) {
                    asks.entry(*member).or_default().push(record.descriptor.range_id);
                }
            }
            for (node, range_ids) in asks {
                match self.ranges_of_node(&active, node, range_ids).await {
                    Ok(ranges) => {
                        for range in ranges {
                            if range.descriptor.overlaps(start, end) {
                                keep(&mut found, range);
                            } else {
                                gone.insert(range.descriptor.range_id);
                            }
                        }
                    }
                    Err(err) => tracing::debug!(node, error = %err, "asking a node for its ranges"),
                }
            }
        }
        for (id, range) in unsure {
            found.entry(id).or_insert(range);
        }
        let unanswered = |id: &u64| !found.contains_key(id) && !gone.contains(id);
        if let Some(record) = missing.iter().find(|record| unanswered(&record.descriptor.range_id)) {
            return Err(Error::Unavailable(format!(
                "range {}: none of its replicas (nodes {:?}) answered",
                record.descriptor.range_id,
                record.voters.iter().chain(&record.learners).collect::<Vec<_>>()
            )));
        }
        let mut ranges: Vec<RangeSummary> = found.into_values().collect();
        ranges.sort_by(|a, b| a.descriptor.start_key.cmp(&b.descriptor.start_key));
        Ok(ranges)
    }

    /// Node `node`'s own view of the ranges `range_ids` it holds (those it does not are left
    /// out).
    async fn ranges_of_node(&self, active: &Active, node: NodeId, range_ids: Vec<u64>) -> Result<Vec<RangeSummary>> {
        let addr = self.member_addr(active, node).ok_or_else(|| Error::NotFound(format!("node {node}'s address")))?;
        let mut client = pb::status_service_client::StatusServiceClient::new(self.dialer.channel(&addr)?);
        let mut request = tonic::Request::new(pb::RangesRequest { range_ids, limit: 0, offset: 0 });
        request.set_timeout(RAFT_REQUEST_TIMEOUT);
        let reply = client.ranges(request).await.map_err(Error::from)?.into_inner();
        Ok(reply.ranges.iter().filter_map(RangeSummary::from_info).collect())
    }
}
