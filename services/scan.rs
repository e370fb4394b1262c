//! Paged scans that see one consistent state: the request and page types, the pure paging of
//! an ordered row iterator, and the registry of open cursors a node keeps between pages.
//!
//! Atomic visibility comes from the store: a redb read transaction is a snapshot (MVCC) that
//! sees one committed state however long it is held, and every write batch is applied in one
//! redb transaction. The first page of a scan is read by the leaseholder after the same lease
//! check a linearizable read makes; if more rows remain, the snapshot it read from stays open
//! on that node as a cursor, and every later page is read from it, on that node, wherever the
//! lease has moved meanwhile. So a scan of any length within one Raft group reads exactly the
//! state of the moment it began, never half of a concurrent batch. A scan crossing groups is
//! read one group's part after another, each part opened afresh at its group's leaseholder
//! (see [`ScanPage::resume`]), and is atomic only within each part. The price is that a snapshot held open keeps
//! the pages it sees from being reused; hence the bounds: a cursor unused for
//! [`CURSOR_IDLE_TIMEOUT`] or older than [`CURSOR_MAX_LIFETIME`] is closed (the next page then
//! fails, and the statement with it), and a node holds at most [`MAX_OPEN_CURSORS`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::services::error::{Error, Result};

/// How long an open cursor may go without a page being read before it is closed.
pub const CURSOR_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a cursor may stay open at all.
pub const CURSOR_MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Most cursors one node keeps open at once; a scan that would open one more fails.
pub const MAX_OPEN_CURSORS: usize = 256;

/// The node that holds a scan's snapshot, and the cursor's id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CursorRef {
    /// The node holding the snapshot.
    pub node_id: u64,
    /// The cursor's id on that node (never 0).
    pub id: u64,
}

/// How much one page may carry; a page always carries at least one row if any remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Most rows.
    pub max_rows: u32,
    /// Most key and value bytes.
    pub max_bytes: u32,
}

/// One page request of a paged scan of `[start, end)` (empty end: to the end).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRequest {
    /// First key to read: the scan's start, or the `resume` key of the previous page.
    pub start: Vec<u8>,
    /// End of the scan (exclusive; empty: unbounded).
    pub end: Vec<u8>,
    /// `None`: open a scan at the leaseholder. `Some`: the next page from that cursor.
    pub cursor: Option<CursorRef>,
    /// The size of this page.
    pub limits: PageLimits,
    /// Close the cursor instead of reading (a scan abandoned before its end).
    pub close: bool,
}

/// One page of a paged scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPage {
    /// Rows in key order.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the next page starts and which cursor holds the snapshot; `None` at the end.
    /// Without a cursor, the next page opens a new scan there: the rest lies in another
    /// Raft group, whose snapshot is another node's.
    pub resume: Option<(Option<CursorRef>, Vec<u8>)>,
}

/// One page taken from an ordered row iterator.
#[derive(Debug, PartialEq)]
pub struct TakenPage {
    /// The rows of the page.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// The key of the first row not taken, if any row remains.
    pub next_key: Option<Vec<u8>>,
}

/// Takes rows from `rows` until `limits` is reached (at least one row), then looks at the row
/// after: its key is where the next page starts, and its absence means the scan is done, so a
/// scan that fits one page never leaves a cursor open.
pub fn take_page<I>(rows: I, limits: PageLimits) -> Result<TakenPage>
where
    I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
{
    let mut rows = rows.into_iter();
    let mut page = Vec::new();
    let mut bytes = 0usize;
    let max_rows = limits.max_rows.max(1) as usize;
    while page.len() < max_rows && (page.is_empty() || bytes < limits.max_bytes as usize) {
        match rows.next().transpose()? {
            Some((key, value)) => {
                bytes += key.len() + value.len();
                page.push((key, value));
            }
            None => return Ok(TakenPage { rows: page, next_key: None }),
        }
    }
    let next_key = rows.next().transpose()?.map(|(key, _)| key);
    Ok(TakenPage { rows: page, next_key })
}

struct Open<S> {
    snapshot: Option<S>,
    end: Vec<u8>,
    opened: Instant,
    last_used: Instant,
}

/// What a node's open cursors may hold and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorBounds {
    /// See [`MAX_OPEN_CURSORS`].
    pub max_open: usize,
    /// See [`CURSOR_IDLE_TIMEOUT`].
    pub idle: Duration,
    /// See [`CURSOR_MAX_LIFETIME`].
    pub lifetime: Duration,
}

impl Default for CursorBounds {
    fn default() -> Self {
        Self { max_open: MAX_OPEN_CURSORS, idle: CURSOR_IDLE_TIMEOUT, lifetime: CURSOR_MAX_LIFETIME }
    }
}

/// A checked-out cursor: its snapshot and the end of its scan, returned with [`Cursors::put_back`].
pub struct CheckedOut<S> {
    /// The snapshot the scan reads.
    pub snapshot: S,
    /// The end of the scan.
    pub end: Vec<u8>,
}

/// The open cursors of one node, each holding a snapshot `S` between pages. A cursor is
/// checked out while a page is read from it, so one cursor never serves two reads at once.
pub struct Cursors<S> {
    open: Mutex<HashMap<u64, Open<S>>>,
    next_id: AtomicU64,
    bounds: CursorBounds,
}

impl<S> Cursors<S> {
    /// No cursors, within `bounds`.
    pub fn new(bounds: CursorBounds) -> Self {
        Self { open: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), bounds }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open<S>>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `snapshot` open for the rest of a scan ending at `end`; returns the cursor's id.
    pub fn register(&self, snapshot: S, end: Vec<u8>, now: Instant) -> Result<u64> {
        let mut open = self.lock();
        Self::sweep_locked(&mut open, self.bounds, now);
        if open.len() >= self.bounds.max_open {
            return Err(Error::Unavailable(format!(
                "this node has {} scans open, its limit; retry the statement",
                self.bounds.max_open
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.insert(id, Open { snapshot: Some(snapshot), end, opened: now, last_used: now });
        Ok(id)
    }

    /// Takes cursor `id` out for reading one page.
    pub fn check_out(&self, id: u64, now: Instant) -> Result<CheckedOut<S>> {
        let mut open = self.lock();
        Self::sweep_locked(&mut open, self.bounds, now);
        let gone = || {
            Error::Unavailable(format!(
                "scan cursor {id} is closed (unused for {:?}, older than {:?}, or its node restarted); \
                 retry the statement",
                self.bounds.idle, self.bounds.lifetime
            ))
        };
        let cursor = open.get_mut(&id).ok_or_else(gone)?;
        let snapshot = cursor
            .snapshot
            .take()
            .ok_or_else(|| Error::FailedPrecondition(format!("scan cursor {id} is already being read")))?;
        cursor.last_used = now;
        Ok(CheckedOut { snapshot, end: cursor.end.clone() })
    }

    /// Returns a checked-out cursor after reading a page that left rows to read.
    pub fn put_back(&self, id: u64, cursor: CheckedOut<S>, now: Instant) {
        if let Some(open) = self.lock().get_mut(&id) {
            open.snapshot = Some(cursor.snapshot);
            open.last_used = now;
        }
    }

    /// Closes cursor `id` (done, or abandoned by its reader); closing an unknown id is a no-op.
    pub fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes every cursor past its idle timeout or lifetime; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut open = self.lock();
        Self::sweep_locked(&mut open, self.bounds, now);
        open.len()
    }

    fn sweep_locked(open: &mut HashMap<u64, Open<S>>, bounds: CursorBounds, now: Instant) {
        // A checked-out cursor is being read right now, so it is not idle; past its lifetime
        // it goes all the same (its reader's `put_back` is then a no-op), so a reader that
        // never returns it cannot keep its entry forever.
        open.retain(|_, cursor| {
            now.saturating_duration_since(cursor.opened) < bounds.lifetime
                && (cursor.snapshot.is_none() || now.saturating_duration_since(cursor.last_used) < bounds.idle)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, value_len: usize) -> Vec<Result<(Vec<u8>, Vec<u8>)>> {
        (0..n).map(|i| Ok((format!("k{i:03}").into_bytes(), vec![b'v'; value_len]))).collect()
    }

    fn keys(page: &TakenPage) -> Vec<String> {
        page.rows.iter().map(|(k, _)| String::from_utf8(k.clone()).unwrap()).collect()
    }

    #[test]
    fn pages_stop_at_the_row_limit_and_name_the_next_key() {
        let page = take_page(rows(5, 1), PageLimits { max_rows: 2, max_bytes: 1 << 20 }).unwrap();
        assert_eq!(keys(&page), ["k000", "k001"]);
        assert_eq!(page.next_key.as_deref(), Some(&b"k002"[..]));
    }

    #[test]
    fn pages_stop_once_the_byte_limit_is_reached_but_carry_one_row_at_least() {
        // Each row is 4 + 10 bytes: the third row reaches 42 >= 30.
        let page = take_page(rows(5, 10), PageLimits { max_rows: 100, max_bytes: 30 }).unwrap();
        assert_eq!(keys(&page), ["k000", "k001", "k002"]);
        assert_eq!(page.next_key.as_deref(), Some(&b"k003"[..]));
        let page = take_page(rows(2, 1000), PageLimits { max_rows: 100, max_bytes: 10 }).unwrap();
        assert_eq!(keys(&page), ["k000"]);
        let page = take_page(rows(2, 1), PageLimits { max_rows: 0, max_bytes: 0 }).unwrap();
        assert_eq!(keys(&page), ["k000"]);
    }

    #[test]
    fn an_exact_fit_or_an_empty_scan_leaves_nothing_to_resume() {
        let page = take_page(rows(3, 1), PageLimits { max_rows: 3, max_bytes: 1 << 20 }).unwrap();
        assert_eq!((page.rows.len(), page.next_key), (3, None));
        let page = take_page(rows(0, 1), PageLimits { max_rows: 3, max_bytes: 1 << 20 }).unwrap();
        assert_eq!(page, TakenPage { rows: vec![], next_key: None });
    }

    #[test]
    fn consecutive_pages_cover_every_row_once() {
        let all = rows(50, 7);
        let limits = PageLimits { max_rows: 6, max_bytes: 40 };
        let mut start = 0;
        let mut seen = Vec::new();
        for _ in 0..all.len() {
            let rest = all[start..].iter().cloned();
            let page = take_page(rest, limits).unwrap();
            start += page.rows.len();
            seen.extend(page.rows.iter().map(|(k, _)| k.clone()));
            match page.next_key {
                Some(next) => assert_eq!(all[start].as_ref().unwrap().0, next),
                None => break,
            }
        }
        let expected: Vec<Vec<u8>> = all.iter().map(|r| r.as_ref().unwrap().0.clone()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_storage_error_fails_the_page() {
        let failing = vec![Ok((b"a".to_vec(), b"1".to_vec())), Err(Error::Internal("disk".into()))];
        assert!(take_page(failing, PageLimits { max_rows: 10, max_bytes: 100 }).is_err());
    }

    fn bounds(max_open: usize) -> CursorBounds {
        CursorBounds { max_open, idle: Duration::from_secs(10), lifetime: Duration::from_secs(60) }
    }

    #[test]
    fn cursors_are_checked_out_one_reader_at_a_time_and_closed_at_the_end() {
        let cursors = Cursors::new(bounds(4));
        let t0 = Instant::now();
        let id = cursors.register("snapshot", b"z".to_vec(), t0).unwrap();
        let out = cursors.check_out(id, t0).unwrap();
        assert_eq!((out.snapshot, out.end.as_slice()), ("snapshot", &b"z"[..]));
        assert!(matches!(cursors.check_out(id, t0), Err(Error::FailedPrecondition(_))));
        cursors.put_back(id, out, t0);
        assert!(cursors.check_out(id, t0).is_ok());
        cursors.close(id);
        assert!(matches!(cursors.check_out(id, t0), Err(Error::Unavailable(_))));
        assert_eq!(cursors.sweep(t0), 0);
    }

    #[test]
    fn idle_and_old_cursors_are_closed_and_the_count_is_capped() {
        let cursors = Cursors::new(bounds(2));
        let t0 = Instant::now();
        let a = cursors.register(1, Vec::new(), t0).unwrap();
        let b = cursors.register(2, Vec::new(), t0).unwrap();
        assert!(matches!(cursors.register(3, Vec::new(), t0), Err(Error::Unavailable(_))));
        // `a` is used every 8 s and stays open; `b` idles past 10 s and is closed.
        let mut now = t0;
        for _ in 0..3 {
            now += Duration::from_secs(8);
            let out = cursors.check_out(a, now).unwrap();
            cursors.put_back(a, out, now);
        }
        assert!(cursors.check_out(b, now).is_err());
        assert_eq!(cursors.sweep(now), 1);
        // However busy, a cursor is closed at its lifetime.
        while now < t0 + Duration::from_secs(60) {
            now += Duration::from_secs(8);
            if let Ok(out) = cursors.check_out(a, now) {
                cursors.put_back(a, out, now);
            }
        }
        assert_eq!(cursors.sweep(now), 0);
        // A cursor being read is not idle, however long the read takes.
        let c = cursors.register(3, Vec::new(), now).unwrap();
        let out = cursors.check_out(c, now).unwrap();
        assert_eq!(cursors.sweep(now + Duration::from_secs(30)), 1);
        cursors.put_back(c, out, now + Duration::from_secs(30));
        assert!(cursors.check_out(c, now + Duration::from_secs(31)).is_ok());
    }
}
