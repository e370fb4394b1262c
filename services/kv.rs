//! Key-value batches: the operations, their evaluation against a view of the data, and the
//! [`Kv`] handle through which everything above the store (SQL, web sessions, the gateway)
//! runs batches without knowing where the leaseholder is. A batch with any write is one Raft
//! command, evaluated at apply time on every replica so its effect is atomic and identical
//! everywhere; a read-only batch is evaluated by the leaseholder after openraft confirms it
//! is still leader and has applied everything committed (a linearizable read).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::services::error::{Error, Result};
use crate::services::keys;

/// The KV layer as everything above the store sees it: atomic batches that reach their range's
/// leaseholder wherever it is, and splits. The node implements it in-process; the gateway's
/// cluster client implements it over gRPC.
#[async_trait::async_trait]
pub trait Kv: Send + Sync {
    /// Runs `ops` as one atomic batch at the leaseholder, retrying while the lease moves.
    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>>;

    /// Splits the range containing `key` at `key` (a no-op at an existing boundary); returns
    /// the left and right range ids.
    async fn split(&self, key: Vec<u8>) -> Result<(u64, u64)>;

    /// Runs read-only `ops` against the applied copy of the node that serves the call, without
    /// asking the leaseholder: it may miss the newest writes, but it answers while the range
    /// has no reachable leader (a frozen or partitioned leaseholder).
    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>>;

    /// A number that grows whenever this process applies a write to the SQL catalog's keys, so
    /// that catalog reads may be cached until it changes; 0 (the default) turns caching off.
    fn catalog_version(&self) -> u64 {
        0
    }
}

/// Deletes the rows of pending deletion `id` (`[start, end)`) and then its record. Idempotent:
/// the statement that dropped the rows' table calls it once, and the leaseholder's maintenance
/// again for any record still there (the first attempt failed or the process died), so the
/// rows go in a batch of their own, apart from the catalog change, as a range's rows must
/// once each range is its own Raft group.
pub async fn delete_pending_span(kv: &dyn Kv, id: u64, start: Vec<u8>, end: Vec<u8>) -> Result<()> {
    kv.batch(vec![Op::DeleteRange { start, end }]).await?;
    kv.batch(vec![Op::Delete { key: keys::gc_key(id) }]).await?;
    Ok(())
}

/// The value at `key`: from the serving node's applied copy when it has one, else from the
/// leaseholder. For records that are created once and then only change by later writes the
/// caller tolerates seeing a moment late (web sessions, users): the common case then needs no
/// leaseholder at all, and a record written a moment ago elsewhere is still found.
pub async fn get_applied_first(kv: &dyn Kv, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
    match kv.read_applied(vec![Op::Get { key: key.clone() }]).await {
        Ok(mut results) if results.first().is_some_and(|r| r.value.is_some()) => Ok(results.remove(0).value),
        _ => Ok(kv.batch(vec![Op::Get { key }]).await?.remove(0).value),
    }
}

/// Refuses a batch meant for [`Kv::read_applied`] that writes.
pub fn validate_read_only(ops: &[Op]) -> Result<()> {
    validate(ops)?;
    if ops.iter().any(Op::is_write) {
        return Err(Error::InvalidArgument("a read from the applied copy cannot write".into()));
    }
    Ok(())
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Reads one key.
    Get { key: Vec<u8> },
    /// Writes one key.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Writes one key if its current value is `expected` (`None`: if it does not exist).
    ConditionalPut { key: Vec<u8>, value: Vec<u8>, expected: Option<Vec<u8>> },
    /// Removes one key.
    Delete { key: Vec<u8> },
    /// Reads keys in `[start, end)` (empty end: to the end), at most `limit` (0: no limit).
    Scan { start: Vec<u8>, end: Vec<u8>, limit: u32 },
    /// Adds `delta` to a big-endian u64 counter (absent: 0).
    Increment { key: Vec<u8>, delta: i64 },
    /// Writes one key only if it does not exist (`existed` tells which happened).
    PutIfAbsent { key: Vec<u8>, value: Vec<u8> },
    /// Removes every key in `[start, end)` (empty end: to the end); `new_value` counts them.
    DeleteRange { start: Vec<u8>, end: Vec<u8> },
}

impl Op {
    /// A scan of every key under `prefix`, at most `limit` (0: no limit).
    pub fn scan_prefix(prefix: &[u8], limit: u32) -> Op {
        Op::Scan { start: prefix.to_vec(), end: keys::prefix_end(prefix), limit }
    }

    /// Whether the operation changes data.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. } | Op::Scan { .. })
    }

    /// Whether running the operation twice has the effect of running it once, so a request
    /// whose outcome is unknown may be retried.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self, Op::Increment { .. } | Op::ConditionalPut { .. } | Op::PutIfAbsent { .. })
    }

    /// The first key the operation touches (used to find its range).
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::ConditionalPut { key, .. }
            | Op::Delete { key }
            | Op::Increment { key, .. }
            | Op::PutIfAbsent { key, .. } => key,
            Op::Scan { start, .. } | Op::DeleteRange { start, .. } => start,
        }
    }
}

/// The outcome of one operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// Get: the value found.
    pub value: Option<Vec<u8>>,
    /// Scan: the rows found.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Increment: the new value.
    pub new_value: i64,
    /// Delete: whether the key existed.
    pub existed: bool,
}

/// Read access to the data, implemented over redb tables and, in tests, a map.
pub trait KvRead {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Rows in `[start, end)` (empty end: unbounded), at most `limit` (0: no limit).
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

impl KvRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(BTreeMap::get(self, key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(if limit == 0 { rows.collect() } else { rows.take(limit).collect() })
    }
}

/// Writes a batch makes, applied by the caller only if the whole batch succeeded.
pub type PendingWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

struct Overlay<'a, R: KvRead> {
    base: &'a R,
    pending: PendingWrites,
}

impl<R: KvRead> Overlay<'_, R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(key),
        }
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let in_span = |k: &Vec<u8>| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end);
        let pending: Vec<_> = self.pending.iter().filter(|(k, _)| in_span(k)).collect();
        // Each pending delete can hide one base row, so read that many more.
        let base_limit = if limit == 0 { 0 } else { limit + pending.len() };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.base.scan(start, end, base_limit)?.into_iter().collect();
        for (key, value) in pending {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        let rows = merged.into_iter();
        Ok(if limit == 0 { rows.collect() } else { rows.take(limit).collect() })
    }
}

/// Evaluates `ops` in order against `base`, each seeing the writes of the ones before. On
/// success returns the results and the writes to apply; on the first failure returns the error
/// and nothing is to be written.
pub fn evaluate<R: KvRead>(base: &R, ops: &[Op]) -> Result<(Vec<OpResult>, PendingWrites)> {
    let mut overlay = Overlay { base, pending: PendingWrites::new() };
    let mut results = Vec::with_capacity(ops.len());
    for (op_index, op) in ops.iter().enumerate() {
        let mut result = OpResult::default();
        match op {
            Op::Get { key } => result.value = overlay.get(key)?,
            Op::Put { key, value } => {
                overlay.pending.insert(key.clone(), Some(value.clone()));
            }
            Op::ConditionalPut { key, value, expected } => {
                let actual = overlay.get(key)?;
                if &actual != expected {
                    return Err(Error::ConditionFailed { op_index, key: keys::pretty(key), actual });
                }
                overlay.pending.insert(key.clone(), Some(value.clone()));
            }
            Op::Delete { key } => {
                result.existed = overlay.get(key)?.is_some();
                overlay.pending.insert(key.clone(), None);
            }
            Op::Scan { start, end, limit } => result.rows = overlay.scan(start, end, *limit as usize)?,
            Op::PutIfAbsent { key, value } => {
                result.existed = overlay.get(key)?.is_some();
                if !result.existed {
                    overlay.pending.insert(key.clone(), Some(value.clone()));
                }
            }
            Op::DeleteRange { start, end } => {
                let rows = overlay.scan(start, end, 0)?;
                result.new_value = rows.len() as i64;
                for (key, _) in rows {
                    overlay.pending.insert(key, None);
                }
            }
            Op::Increment { key, delta } => {
                let current = match overlay.get(key)? {
                    Some(bytes) => keys::decode_u64(&bytes).ok_or_else(|| {
                        Error::InvalidArgument(format!("key {} does not hold a counter", keys::pretty(key)))
                    })?,
                    None => 0,
                };
                let next = (current as i64)
                    .checked_add(*delta)
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| Error::InvalidArgument(format!("counter {} out of range", keys::pretty(key))))?;
                overlay.pending.insert(key.clone(), Some(keys::encode_u64(next as u64)));
                result.new_value = next;
            }
        }
        results.push(result);
    }
    Ok((results, overlay.pending))
}

/// The most key and value bytes one batch may carry. A write batch becomes one Raft log entry,
/// and openraft gives each AppendEntries the heartbeat interval (150 ms) to be encoded,
/// sent, decoded and stored, in today's JSON entry encoding (up to 4 bytes per data byte). An
/// entry that cannot make it in time is retried forever and every write behind it waits: a
/// 5 MiB UPSERT (a 20 MB entry) did that on a loaded 2-core machine. So a batch is refused
/// before proposal above a size that replicates well within the interval.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

impl Op {
    /// The key and value bytes the operation carries.
    pub fn size(&self) -> usize {
        match self {
            Op::Get { key } | Op::Delete { key } | Op::Increment { key, .. } => key.len(),
            Op::Put { key, value } | Op::PutIfAbsent { key, value } => key.len() + value.len(),
            Op::ConditionalPut { key, value, expected } => {
                key.len() + value.len() + expected.as_ref().map_or(0, Vec::len)
            }
            Op::Scan { start, end, .. } | Op::DeleteRange { start, end } => start.len() + end.len(),
        }
    }
}

/// Checks a batch before it is proposed: keys must be non-empty, scans well-formed and the
/// whole within [`MAX_BATCH_BYTES`].
pub fn validate(ops: &[Op]) -> Result<()> {
    if ops.is_empty() {
        return Err(Error::InvalidArgument("empty batch".into()));
    }
    let bytes: usize = ops.iter().map(Op::size).sum();
    if bytes > MAX_BATCH_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a batch of {:.1} MiB exceeds the {} MiB limit of one write; split it into smaller statements",
            bytes as f64 / (1024.0 * 1024.0),
            MAX_BATCH_BYTES / (1024 * 1024)
        )));
    }
    for op in ops {
        match op {
            Op::Scan { start, end, .. } | Op::DeleteRange { start, end } if !end.is_empty() && end <= start => {
                return Err(Error::InvalidArgument(format!(
                    "scan end {} is not after start {}",
                    keys::pretty_end(end),
                    keys::pretty(start)
                )));
            }
            Op::Scan { .. } | Op::DeleteRange { .. } => {}
            other if other.key().is_empty() => return Err(Error::InvalidArgument("empty key".into())),
            _ => {}
        }
    }
    Ok(())
}

/// How long a node keeps retrying a batch while the leaseholder changes or is elected.
pub const RETRY_DEADLINE: Duration = Duration::from_secs(10);

/// What a caller that stopped retrying is told: a routing error it retried until its deadline
/// says that in the caller's terms (a client cannot act on "not leaseholder").
pub fn gave_up(err: Error) -> Error {
    match err {
        Error::NotLeaseholder { .. } => Error::Unavailable("no leaseholder could be reached".into()),
        Error::RangeKeyMismatch(_) => Error::Unavailable("the ranges holding the keys kept moving".into()),
        other => other,
    }
}

/// Runs `attempt` until it succeeds, fails for a reason retrying cannot fix, or `RETRY_DEADLINE`
/// passes. NotLeaseholder is always retried (nothing was proposed); other unavailability only
/// when the batch is idempotent, since a lost reply may hide an applied write.
pub async fn retry_batch<T, F, Fut>(ops: &[Op], mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let idempotent = ops.iter().all(Op::is_idempotent);
    let deadline = Instant::now() + RETRY_DEADLINE;
    let mut backoff = Duration::from_millis(20);
    loop {
        let err = match attempt().await {
            Ok(results) => return Ok(results),
            Err(err) => err,
        };
        let retryable = match &err {
            Error::NotLeaseholder { .. } | Error::RangeKeyMismatch(_) => true,
            Error::Unavailable(_) | Error::DeadlineExceeded(_) => idempotent,
            _ => false,
        };
        if !retryable || Instant::now() + backoff > deadline {
            return Err(gave_up(err));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put { key: k.into(), value: v.into() }
    }

    /// A leaseholder's data and a replica's applied copy that lags behind it.
    struct Lagging {
        leaseholder: BTreeMap<Vec<u8>, Vec<u8>>,
        applied: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    #[async_trait::async_trait]
    impl Kv for Lagging {
        async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
            Ok(evaluate(&self.leaseholder, &ops)?.0)
        }
        async fn split(&self, _key: Vec<u8>) -> Result<(u64, u64)> {
            Err(Error::Unsupported("split".into()))
        }
        async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
            validate_read_only(&ops)?;
            Ok(evaluate(&self.applied, &ops)?.0)
        }
    }

    #[tokio::test]
    async fn applied_copy_first_then_the_leaseholder() {
        let kv = Lagging { leaseholder: data(&[("a", "new"), ("b", "only-there")]), applied: data(&[("a", "old")]) };
        assert_eq!(get_applied_first(&kv, b"a".to_vec()).await.unwrap(), Some(b"old".to_vec()));
        assert_eq!(get_applied_first(&kv, b"b".to_vec()).await.unwrap(), Some(b"only-there".to_vec()));
        assert_eq!(get_applied_first(&kv, b"c".to_vec()).await.unwrap(), None);
        assert!(matches!(kv.read_applied(vec![put("a", "x")]).await, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn later_ops_see_earlier_writes() {
        let base = data(&[("a", "1"), ("c", "3")]);
        let ops = vec![
            put("b", "2"),
            Op::Delete { key: "c".into() },
            Op::Get { key: "b".into() },
            Op::Scan { start: "a".into(), end: Vec::new(), limit: 0 },
        ];
        let (results, pending) = evaluate(&base, &ops).unwrap();
        assert!(results[1].existed);
        assert_eq!(results[2].value.as_deref(), Some(&b"2"[..]));
        let keys: Vec<_> = results[3].rows.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn scan_limit_accounts_for_pending_deletes() {
        let base = data(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let ops = vec![Op::Delete { key: "a".into() }, Op::Scan { start: "a".into(), end: "z".into(), limit: 2 }];
        let (results, _) = evaluate(&base, &ops).unwrap();
        let keys: Vec<_> = results[1].rows.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn failed_condition_aborts_the_whole_batch() {
        let base = data(&[("k", "old")]);
        let ops = vec![put("x", "1"), Op::ConditionalPut { key: "k".into(), value: "new".into(), expected: None }];
        match evaluate(&base, &ops) {
            Err(Error::ConditionFailed { op_index, actual, .. }) => {
                assert_eq!(op_index, 1);
                assert_eq!(actual.as_deref(), Some(&b"old"[..]));
            }
            other => panic!("unexpected {other:?}"),
        }
        let ops = vec![Op::ConditionalPut { key: "k".into(), value: "new".into(), expected: Some("old".into()) }];
        assert!(evaluate(&base, &ops).is_ok());
    }

    #[test]
    fn put_if_absent_and_delete_range() {
        let base = data(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let ops = vec![
            Op::PutIfAbsent { key: "a".into(), value: "x".into() },
            Op::PutIfAbsent { key: "d".into(), value: "4".into() },
            Op::DeleteRange { start: "b".into(), end: "d".into() },
            Op::Scan { start: Vec::new(), end: Vec::new(), limit: 0 },
        ];
        let (results, _) = evaluate(&base, &ops).unwrap();
        assert!(results[0].existed && !results[1].existed);
        assert_eq!(results[2].new_value, 2);
        let rows: Vec<_> = results[3].rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(rows, vec![(b"a".to_vec(), b"1".to_vec()), (b"d".to_vec(), b"4".to_vec())]);
    }

    #[test]
    fn increment_counts_and_rejects_non_counters() {
        let base = data(&[("s", "text")]);
        let ops = vec![Op::Increment { key: "n".into(), delta: 1 }, Op::Increment { key: "n".into(), delta: 5 }];
        let (results, pending) = evaluate(&base, &ops).unwrap();
        assert_eq!((results[0].new_value, results[1].new_value), (1, 6));
        assert_eq!(pending[&b"n".to_vec()], Some(keys::encode_u64(6)));
        assert!(evaluate(&base, &[Op::Increment { key: "s".into(), delta: 1 }]).is_err());
        assert!(evaluate(&BTreeMap::new(), &[Op::Increment { key: "n".into(), delta: -1 }]).is_err());
    }

    #[test]
    fn validate_rejects_malformed_batches() {
        assert!(validate(&[]).is_err());
        assert!(validate(&[put("", "v")]).is_err());
        assert!(validate(&[Op::Scan { start: "b".into(), end: "a".into(), limit: 0 }]).is_err());
        assert!(validate(&[Op::Scan { start: Vec::new(), end: Vec::new(), limit: 0 }]).is_ok());
        let half = Op::Put { key: b"k".to_vec(), value: vec![0; MAX_BATCH_BYTES / 2] };
        assert!(validate(std::slice::from_ref(&half)).is_ok());
        let err = validate(&[half.clone(), half]).unwrap_err().to_string();
        assert!(err.contains("exceeds the 2 MiB limit of one write"), "{err}");
    }
}
