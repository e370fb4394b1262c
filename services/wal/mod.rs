//! A write-ahead log made for Raft: one log per node, shared by many Raft groups (every
//! range's log), each record tagged with its group. One module per job:
//! - [`record`] — the record codec `[len][crc32][kind][group][body]`.
//! - [`segment`] — segment files: naming, header, preallocation.
//! - [`index`] — the in-memory index of live entries, purge marks and metadata per group.
//! - [`writer`] — the writer thread: group commit (one write + one fdatasync per batch of
//!   batches), segment rotation and collection.
//! - [`recovery`] — replay on open: a torn tail is cut off, damage elsewhere refuses to open.
//!
//! A [`WriteBatch`] is atomic: after a crash either all of its records are replayed or none
//! (a commit record closes every batch). Batches are applied to the index when submitted, so
//! reads see them at once; [`Wal::submit`] calls back once the batch is on disk.

mod index;
pub mod record;
mod recovery;
pub mod segment;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use self::index::{Index, Location, check_batch};
use self::record::{Decoded, Op};
use crate::services::error::{Error, Result};

/// The default segment size: large enough that rotation is rare, small enough that a
/// collected segment frees space soon after its groups purge.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

const LOCK_FILE: &str = "LOCK";

/// How a log is laid out on disk.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Bytes preallocated per segment file. A batch larger than this gets a segment of its own.
    pub segment_size: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig { segment_size: DEFAULT_SEGMENT_SIZE }
    }
}

/// Operations on any number of groups, written and recovered all together or not at all.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<(u64, Op)>,
}

impl WriteBatch {
    /// An empty batch (submitted alone, it waits for every earlier batch to be durable).
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Appends entry `index` to `group`'s log; it must follow the group's last index (or its
    /// purged index), unless the group is empty.
    pub fn append(&mut self, group: u64, index: u64, payload: impl Into<Arc<[u8]>>) -> &mut Self {
        self.ops.push((group, Op::Entry { index, payload: payload.into() }));
        self
    }

    /// Drops `group`'s entries from `index` on; `index` must be above the purged index.
    pub fn truncate_from(&mut self, group: u64, index: u64) -> &mut Self {
        self.ops.push((group, Op::TruncateFrom { index }));
        self
    }

    /// Drops `group`'s entries up to and including `index`, which may be past the last entry.
    pub fn purge_up_to(&mut self, group: u64, index: u64) -> &mut Self {
        self.ops.push((group, Op::PurgeUpTo { index }));
        self
    }

    /// Sets `group`'s metadata `key` (at most 255 bytes) to `value`.
    pub fn put_meta(&mut self, group: u64, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((group, Op::Meta { key: key.into(), value: value.into() }));
        self
    }

    /// Forgets `group` entirely: entries, purge mark, metadata.
    pub fn remove_group(&mut self, group: u64) -> &mut Self {
        self.ops.push((group, Op::RemoveGroup));
        self
    }

    /// The number of operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Counters of the log's work since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches made durable.
    pub batches: u64,
    /// Writes (each one `write` and one `fdatasync`) that made them durable.
    pub writes: u64,
    /// Segments created and deleted.
    pub segments_created: u64,
    /// Segments deleted because no group needed them.
    pub segments_deleted: u64,
}

/// Called once a batch is durable (with its sequence number) or failed; runs on the writer
/// thread, so it must not block.
type Done = Box<dyn FnOnce(Result<u64>) + Send>;

/// A batch waiting for the writer.
struct Submitted {
    seq: u64,
    ops: Vec<(u64, Op)>,
    done: Done,
}

/// A segment file open for reading (and, for the active one, writing).
struct SegmentFile {
    file: Arc<File>,
    path: PathBuf,
}

/// What callers and the writer share, behind one mutex.
struct State {
    index: Index,
    segments: BTreeMap<u64, SegmentFile>,
    queue: Vec<Submitted>,
    next_seq: u64,
    failed: Option<Error>,
    closing: bool,
    stats: WalStats,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// Locks the shared state. A panic while holding the lock cannot leave the index half
/// changed in a way later calls rely on (every change is checked first), so a poisoned
/// lock is taken over.
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// An open write-ahead log. Dropping it lets the writer finish the queued batches first.
pub struct Wal {
    shared: Arc<Shared>,
    dir: PathBuf,
    writer: Option<JoinHandle<()>>,
    _lock: File,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: replays it, cuts a torn tail, refuses
    /// with one line naming the file and byte offset if it finds damage elsewhere, and starts
    /// the writer thread. One process at a time: the directory is locked.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| segment::io_error(&dir, "create directory", e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| segment::io_error(&lock_path, "open", e))?;
        rustix::fs::flock(&lock_file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| Error::FailedPrecondition(format!("wal: {}: in use by another process", dir.display())))?;
        let segment_size = config.segment_size.max(segment::HEADER_LEN);
        let mut recovered = recovery::recover(&dir, segment_size)?;
        let (active, offset) = match recovered.active {
            Some(active) => active,
            None => {
                let (file, path) = segment::create(&dir, recovered.next_seq, segment_size)?;
                recovered.segments.insert(recovered.next_seq, SegmentFile { file: Arc::new(file), path });
                (recovered.next_seq, segment::HEADER_LEN)
            }
        };
        let (file, path) = match recovered.segments.get(&active) {
            Some(segment) => (segment.file.clone(), segment.path.clone()),
            None => return Err(Error::Internal("wal: the active segment went missing during open".into())),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index: recovered.index,
                segments: recovered.segments,
                queue: Vec::new(),
                next_seq: recovered.next_seq,
                failed: None,
                closing: false,
                stats: WalStats::default(),
            }),
            wake: Condvar::new(),
        });
        let writer = writer::Writer {
            shared: shared.clone(),
            dir: dir.clone(),
            segment_size,
            segment: active,
            file,
            path,
            offset,
            durable: recovered.durable,
            buffer: Vec::new(),
            undeleted: VecDeque::new(),
        };
        let writer = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::Internal(format!("wal: starting the writer thread: {e}")))?;
        Ok(Wal { shared, dir, writer: Some(writer), _lock: lock_file })
    }

    /// Queues `batch` and returns its sequence number; `on_durable` runs on the writer thread
    /// once the batch is synced (or the write failed). The batch is visible to reads at once.
    /// A batch that does not apply (an entry out of order) is refused whole.
    pub fn submit(&self, batch: WriteBatch, on_durable: impl FnOnce(Result<u64>) + Send + 'static) -> Result<u64> {
        let mut state = lock(&self.shared);
        if let Some(error) = &state.failed {
            return Err(error.clone());
        }
        if state.closing {
            return Err(Error::Unavailable("wal: closing".into()));
        }
        check_batch(&state.index, &batch.ops)?;
        for (group, op) in &batch.ops {
            let location = match op {
                Op::Entry { payload, .. } => Some(Location::Pending(payload.clone())),
                _ => None,
            };
            state.index.apply(*group, op, location)?;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.queue.push(Submitted { seq, ops: batch.ops, done: Box::new(on_durable) });
        drop(state);
        self.shared.wake.notify_one();
        Ok(seq)
    }

    /// Writes `batch` and waits until it is durable; returns its sequence number.
    pub fn write(&self, batch: WriteBatch) -> Result<u64> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit(batch, move |result| {
            // The receiver waits below; a send can only fail if this thread is gone.
            let _ = sender.send(result);
        })?;
        receiver.recv().map_err(|_| Error::Internal("wal: the writer stopped".into()))?
    }

    /// `group`'s entries with indexes in `range` that are live, in order (the part of the
    /// range between the first and last index). Each record read back is checked again.
    pub fn entries(&self, group: u64, range: Range<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        enum Source {
            Memory(Arc<[u8]>),
            Disk(Arc<File>, PathBuf, u64, u32),
        }
        let sources: Vec<(u64, Source)> = {
            let state = lock(&self.shared);
            let Some(g) = state.index.group(group) else { return Ok(Vec::new()) };
            let (Some(first), Some(last)) = (g.first_index(), g.last_index()) else { return Ok(Vec::new()) };
            let mut sources = Vec::new();
            for index in range.start.max(first)..range.end.min(last.saturating_add(1)) {
                let source = match g.location(index) {
                    Some(Location::Pending(bytes)) => Source::Memory(bytes.clone()),
                    Some(Location::File { segment, offset, len }) => match state.segments.get(segment) {
                        Some(s) => Source::Disk(s.file.clone(), s.path.clone(), *offset, *len),
                        None => return Err(Error::Internal(format!("wal: segment {segment} of a live entry is gone"))),
                    },
                    None => break,
                };
                sources.push((index, source));
            }
            sources
        };
        sources
            .into_iter()
            .map(|(index, source)| match source {
                Source::Memory(bytes) => Ok((index, bytes.to_vec())),
                Source::Disk(file, path, offset, len) => read_entry(&file, &path, offset, len, group, index),
            })
            .collect()
    }

    /// `group`'s first live index.
    pub fn first_index(&self, group: u64) -> Option<u64> {
        lock(&self.shared).index.group(group).and_then(|g| g.first_index())
    }

    /// `group`'s last live index.
    pub fn last_index(&self, group: u64) -> Option<u64> {
        lock(&self.shared).index.group(group).and_then(|g| g.last_index())
    }

    /// The highest index `group` has purged.
    pub fn purged(&self, group: u64) -> Option<u64> {
        lock(&self.shared).index.group(group).and_then(|g| g.purged())
    }

    /// `group`'s metadata value under `key`.
    pub fn meta(&self, group: u64, key: &[u8]) -> Option<Vec<u8>> {
        lock(&self.shared).index.group(group).and_then(|g| g.meta().get(key).cloned())
    }

    /// Every metadata key and value of `group`.
    pub fn meta_all(&self, group: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
        lock(&self.shared).index.group(group).map(|g| g.meta().clone()).unwrap_or_default()
    }

    /// The groups holding entries, a purge mark or metadata, in order.
    pub fn groups(&self) -> Vec<u64> {
        lock(&self.shared).index.group_ids()
    }

    /// The segment files in use, oldest first.
    pub fn segment_files(&self) -> Vec<PathBuf> {
        lock(&self.shared).segments.values().map(|s| s.path.clone()).collect()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        lock(&self.shared).stats
    }
}

/// Reads one entry record back from its segment and checks that it is whole and is the
/// entry asked for, so that damage after open is an error, never wrong data.
fn read_entry(file: &File, path: &Path, offset: u64, len: u32, group: u64, index: u64) -> Result<(u64, Vec<u8>)> {
    let mut buffer = vec![0; len as usize];
    file.read_exact_at(&mut buffer, offset).map_err(|e| segment::io_error(path, "read", e))?;
    match record::decode(&buffer) {
        Decoded::Record(found, _) if found.group == group => match found.op {
            Op::Entry { index: at, payload } if at == index => Ok((index, payload.to_vec())),
            _ => Err(recovery::corrupt(path, offset, &format!("expected entry {index} of group {group}"))),
        },
        Decoded::Record(..) => Err(recovery::corrupt(path, offset, &format!("expected a record of group {group}"))),
        Decoded::End => Err(recovery::corrupt(path, offset, "zeroes where an entry was written")),
        Decoded::Bad(why) => Err(recovery::corrupt(path, offset, why)),
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        lock(&self.shared).closing = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            // A panicked writer has already failed its batches' callers.
            let _ = writer.join();
        }
    }
}
