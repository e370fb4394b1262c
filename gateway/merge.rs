//! Pure merge functions for the fan-out endpoints: a true cluster-wide top-k of hot ranges
//! (CockroachDB concatenates per-node lists unsorted) and the start-ordered session list
//! with keyset pagination (every session visited exactly once while the set is stable).

use crate::gateway::pagination::{Cursor, Limit, next_offset};
use crate::services::load::{LoadMetric, LoadRates};

/// One node's hot range before merging.
#[derive(Debug, Clone, PartialEq)]
pub struct HotCandidate<T> {
    /// Reporting (leaseholder) node.
    pub node_id: u64,
    /// Range id.
    pub range_id: u64,
    /// Its rates.
    pub rates: LoadRates,
    /// Everything else the response needs.
    pub payload: T,
}

/// Merges every node's candidates into one list sorted by `metric` (descending; ties by range
/// id, then node id, so pages are stable), then returns the page at `position` of `limit`
/// entries and the position of the next page while more remain. A range appears once: if two nodes report the
/// same range (a lease moved between their answers), the higher rate wins.
pub fn merge_hot_ranges<T>(
    mut candidates: Vec<HotCandidate<T>>,
    metric: LoadMetric,
    position: usize,
    limit: Limit,
) -> (Vec<HotCandidate<T>>, Option<usize>) {
    candidates.sort_by(|a, b| {
        b.rates
            .get(metric)
            .total_cmp(&a.rates.get(metric))
            .then(a.range_id.cmp(&b.range_id))
            .then(a.node_id.cmp(&b.node_id))
    });
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(c.range_id));
    debug_assert!(candidates.windows(2).all(|w| w[0].rates.get(metric) >= w[1].rates.get(metric)));
    let total = candidates.len();
    let page: Vec<_> = candidates.into_iter().skip(position).take(limit.get().unwrap_or(usize::MAX)).collect();
    (page, next_offset(total, limit, position))
}

/// A session's sort key: start time (ns), then the id in hex.
pub type SessionKey = (i64, String);

/// Orders sessions by start, skips those at or before `after`, takes `limit`, and
/// returns the cursor of the last one taken when more remain.
pub fn merge_sessions<T>(
    mut sessions: Vec<(SessionKey, T)>,
    after: Option<&SessionKey>,
    limit: Limit,
) -> (Vec<T>, Option<Cursor>) {
    sessions.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(after) = after {
        sessions.retain(|(key, _)| key > after);
    }
    let more = limit.get().is_some_and(|rows| sessions.len() > rows);
    if let Some(rows) = limit.get() {
        sessions.truncate(rows);
    }
    let next = if more {
        sessions.last().map(|((start, id), _)| Cursor::Sessions { start: *start, id: id.clone() })
    } else {
        None
    };
    (sessions.into_iter().map(|(_, s)| s).collect(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(limit: usize) -> Limit {
        Limit::at_most(std::num::NonZeroUsize::new(limit).unwrap())
    }

    fn hot(node_id: u64, range_id: u64, qps: f64, cpu: f64) -> HotCandidate<()> {
        HotCandidate {
            node_id,
            range_id,
            rates: LoadRates { queries_per_second: qps, cpu_time_per_second: cpu, ..Default::default() },
            payload: (),
        }
    }

    #[test]
    fn hot_ranges_are_a_global_top_k() {
        let candidates = vec![hot(1, 10, 5.0, 1.0), hot(2, 20, 50.0, 0.0), hot(3, 30, 7.0, 9.0), hot(1, 11, 1.0, 5.0)];
        let (page, next) = merge_hot_ranges(candidates.clone(), LoadMetric::Queries, 0, rows(2));
        assert_eq!(page.iter().map(|c| c.range_id).collect::<Vec<_>>(), vec![20, 30]);
        assert_eq!(next, Some(2));
        let (page, next) = merge_hot_ranges(candidates.clone(), LoadMetric::Queries, 2, rows(2));
        assert_eq!(page.iter().map(|c| c.range_id).collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(next, None);
        let (page, next) = merge_hot_ranges(candidates.clone(), LoadMetric::Cpu, 0, Limit::all());
        assert_eq!(page.iter().map(|c| c.range_id).collect::<Vec<_>>(), vec![30, 11, 10, 20]);
        assert_eq!(next, None);
        let (page, next) = merge_hot_ranges(candidates, LoadMetric::Queries, 9, rows(2));
        assert!(page.is_empty() && next.is_none());
    }

    #[test]
    fn a_range_reported_twice_appears_once() {
        let (page, _) =
            merge_hot_ranges(vec![hot(1, 10, 5.0, 0.0), hot(2, 10, 8.0, 0.0)], LoadMetric::Queries, 0, Limit::all());
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].node_id, 2);
    }

    #[test]
    fn session_pages_visit_everything_once() {
        let sessions: Vec<(SessionKey, u32)> =
            vec![((30, "c".into()), 3), ((10, "a".into()), 1), ((20, "b".into()), 2), ((20, "a".into()), 4)];
        let mut seen = Vec::new();
        let mut after: Option<SessionKey> = None;
        for _ in 0..10 {
            let (page, next) = merge_sessions(sessions.clone(), after.as_ref(), rows(2));
            seen.extend(page);
            match next {
                Some(Cursor::Sessions { start, id }) => after = Some((start, id)),
                Some(other) => panic!("{other:?}"),
                None => break,
            }
        }
        assert_eq!(seen, vec![1, 4, 2, 3]);
        let (all, next) = merge_sessions(sessions, None, Limit::all());
        assert_eq!((all.len(), next), (4, None));
    }
}
