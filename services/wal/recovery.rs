//! Recovery on open: replays the segments oldest first, one committed batch at a time, and
//! decides what damage means. Damage at the tail of the last segment, with no later commit
//! record behind it, is a batch that never finished: it is cut off and the space zeroed.
//! Damage anywhere else, or damage followed by a commit record of the damaged batch or a
//! later one (so the batch had been written whole, and perhaps acknowledged), refuses to
//! open with one line naming the file and the byte offset.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SegmentFile;
use super::index::{Index, Location};
use super::record::{self, Decoded, Op};
use super::segment::{self, HEADER_LEN};
use super::writer::Durable;
use crate::services::error::{Error, Result};

/// What the log holds after replay, and where appending resumes.
pub struct Recovered {
    /// Every group's live entries, purge mark and metadata.
    pub index: Index,
    /// The purge marks and metadata written so far (for segment heads).
    pub durable: Durable,
    /// The surviving segments by id.
    pub segments: BTreeMap<u64, SegmentFile>,
    /// The last segment's id and the offset just past its last committed batch.
    pub active: Option<(u64, u64)>,
    /// The sequence number the next batch gets.
    pub next_seq: u64,
}

/// The error for damage that must stop the open: one line, file and byte offset.
pub fn corrupt(path: &Path, offset: u64, why: &str) -> Error {
    Error::FailedPrecondition(format!("wal: {}: corrupt at byte offset {offset}: {why}", path.display()))
}

/// Replays the segments in `dir`, cutting a torn tail off the last one.
pub fn recover(dir: &Path, segment_size: u64) -> Result<Recovered> {
    let files = segment::list(dir)?;
    let mut recovered = Recovered {
        index: Index::default(),
        durable: Durable::default(),
        segments: BTreeMap::new(),
        active: None,
        next_seq: 1,
    };
    let count = files.len();
    let mut expected: Option<u64> = None;
    for (at, (id, path)) in files.into_iter().enumerate() {
        let last = at + 1 == count;
        let data = std::fs::read(&path).map_err(|e| segment::io_error(&path, "read", e))?;
        let first_seq = match segment::decode_header(&data) {
            Ok(seq) => seq,
            Err(_) if last && is_zero(data.get(HEADER_LEN as usize..).unwrap_or_default()) => {
                // A segment whose creation did not finish: no batch was ever written to it.
                std::fs::remove_file(&path).map_err(|e| segment::io_error(&path, "remove", e))?;
                segment::sync_dir(dir)?;
                tracing::warn!(file = %path.display(), "wal: removed a segment whose creation did not finish");
                break;
            }
            Err(why) => return Err(corrupt(&path, 0, &why)),
        };
        if first_seq != id {
            return Err(corrupt(&path, 0, &format!("header names first batch {first_seq}, the file name {id}")));
        }
        if let Some(want) = expected
            && first_seq != want
        {
            return Err(corrupt(&path, 0, &format!("segment starts at batch {first_seq}, batch {want} was next")));
        }
        let mut replay = Replay { path: &path, id, next: first_seq, recovered: &mut recovered };
        let scan = replay.scan(&data)?;
        expected = Some(replay.next);
        let damage = match scan.stop {
            Stop::Bad(offset, why) => Some((offset, why)),
            Stop::End(offset) if !is_zero(&data[offset..]) => Some((offset, "bytes after the end of the records")),
            Stop::End(_) => None,
        };
        if !last {
            if let Some((offset, why)) = damage {
                return Err(corrupt(&path, offset as u64, why));
            }
            if scan.uncommitted {
                return Err(corrupt(&path, scan.committed_end as u64, "records without a commit in a sealed segment"));
            }
        } else if let Some((offset, why)) = damage {
            // A commit of this batch or a later one past the damage means the damaged batch
            // had been written whole: the damage is not a torn write.
            let next = expected.unwrap_or(first_seq);
            if let Some((found, seq)) = find_commit(&data, offset + 1, next) {
                let why = format!("{why}, and batch {seq} follows at byte offset {found}");
                return Err(corrupt(&path, offset as u64, &why));
            }
        }
        let file = open(&path, last)?;
        if last {
            let end = scan.committed_end as u64;
            if !is_zero(&data[scan.committed_end..]) || (data.len() as u64) < segment_size {
                cut_tail(&file, &path, end, segment_size.max(data.len() as u64))?;
                if !is_zero(&data[scan.committed_end..]) {
                    tracing::warn!(file = %path.display(), offset = end, "wal: cut off a torn tail");
                }
            }
            recovered.active = Some((id, end));
        }
        recovered.segments.insert(id, SegmentFile { file: Arc::new(file), path });
    }
    recovered.next_seq = expected.unwrap_or(1);
    Ok(recovered)
}

/// Where the scan of a segment stopped.
enum Stop {
    /// Zeroes at this offset.
    End(usize),
    /// Not a record at this offset.
    Bad(usize, &'static str),
}

struct Scan {
    stop: Stop,
    /// Offset just past the last commit record (or the header).
    committed_end: usize,
    /// Whether records follow the last commit.
    uncommitted: bool,
}

struct Replay<'a> {
    path: &'a Path,
    id: u64,
    next: u64,
    recovered: &'a mut Recovered,
}

impl Replay<'_> {
    /// Applies every committed batch of one segment.
    fn scan(&mut self, data: &[u8]) -> Result<Scan> {
        let mut pos = HEADER_LEN as usize;
        let mut committed_end = pos;
        let mut batch: Vec<(u64, Op, usize, usize)> = Vec::new();
        let stop = loop {
            let (record, used) = match record::decode(&data[pos..]) {
                Decoded::End => break Stop::End(pos),
                Decoded::Bad(why) => break Stop::Bad(pos, why),
                Decoded::Record(record, used) => (record, used),
            };
            if let Op::Commit { seq } = record.op {
                if seq != self.next {
                    let why = format!("batch {seq} where batch {} was next", self.next);
                    return Err(corrupt(self.path, pos as u64, &why));
                }
                for (group, op, offset, len) in batch.drain(..) {
                    self.apply(group, &op, offset, len)?;
                }
                self.next += 1;
                committed_end = pos + used;
            } else {
                batch.push((record.group, record.op, pos, used));
            }
            pos += used;
        };
        Ok(Scan { stop, committed_end, uncommitted: !batch.is_empty() })
    }

    fn apply(&mut self, group: u64, op: &Op, offset: usize, len: usize) -> Result<()> {
        let location = matches!(op, Op::Entry { .. }).then_some(Location::File {
            segment: self.id,
            offset: offset as u64,
            len: len as u32,
        });
        self.recovered.durable.apply(group, op, self.id);
        self.recovered.index.apply(group, op, location).map_err(|e| corrupt(self.path, offset as u64, &e.to_string()))
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// The first whole commit record at or after `from` whose batch is `min_seq` or later.
fn find_commit(data: &[u8], from: usize, min_seq: u64) -> Option<(usize, u64)> {
    (from..data.len()).find_map(|at| record::commit_at(&data[at..]).filter(|seq| *seq >= min_seq).map(|s| (at, s)))
}

fn open(path: &PathBuf, writable: bool) -> Result<File> {
    OpenOptions::new().read(true).write(writable).open(path).map_err(|e| segment::io_error(path, "open", e))
}

/// Zeroes everything from `end` on (truncate, then reserve the space again) and syncs, so
/// that a later shorter batch never sits in front of an old torn one.
fn cut_tail(file: &File, path: &Path, end: u64, size: u64) -> Result<()> {
    file.set_len(end).map_err(|e| segment::io_error(path, "truncate", e))?;
    segment::preallocate(file, size).map_err(|e| segment::io_error(path, "preallocate", e))?;
    file.sync_all().map_err(|e| segment::io_error(path, "sync", e))
}
