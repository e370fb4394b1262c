//! The record codec: `[len u32][crc32 u32][kind u8][group u64][body]`, little-endian. `len`
//! counts kind, group and body; the CRC-32 (IEEE, crc32fast) covers the same bytes, so a
//! record is checked as a whole before any of it is believed.

use std::sync::Arc;

/// Bytes of `len` and `crc` in front of every record.
pub const FRAME_LEN: usize = 8;
/// Bytes of `kind` and `group`: the smallest `len` a record can have.
pub const MIN_LEN: usize = 9;
/// The largest `len` accepted. A larger value read back is damage, not a record.
pub const MAX_LEN: usize = 1 << 30;
/// `len` of a commit record (kind, group, seq): recovery looks for it past damage.
pub const COMMIT_LEN: usize = MIN_LEN + 8;

const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE_FROM: u8 = 2;
const KIND_PURGE_UP_TO: u8 = 3;
const KIND_META: u8 = 4;
const KIND_REMOVE_GROUP: u8 = 5;
const KIND_COMMIT: u8 = 6;

/// What a record does to its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A log entry at `index`; the payload (term and command) is opaque to the log.
    Entry {
        /// The entry's index in its group's log.
        index: u64,
        /// The entry's bytes.
        payload: Arc<[u8]>,
    },
    /// Drops the group's entries at `index` and after (a Raft log conflict).
    TruncateFrom {
        /// The first index dropped.
        index: u64,
    },
    /// Drops the group's entries up to and including `index` (after a snapshot).
    PurgeUpTo {
        /// The last index dropped.
        index: u64,
    },
    /// Sets the group's metadata value under `key` (vote, committed index…); the last one wins.
    Meta {
        /// The metadata key, at most 255 bytes.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Forgets the group: its entries, purge mark and metadata.
    RemoveGroup,
    /// Ends batch `seq`: the batch's records count only if this record follows them.
    Commit {
        /// The batch's sequence number.
        seq: u64,
    },
}

/// One record: an operation on one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Raft group (range) the record belongs to; 0 for commit records.
    pub group: u64,
    /// What the record does.
    pub op: Op,
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checked record and the bytes it took.
    Record(Record, usize),
    /// Zeroed space: a `len` of 0 with a zero CRC (preallocated, never written).
    End,
    /// Not a record: torn, damaged or garbage. The reason is for the error message.
    Bad(&'static str),
}

/// The bytes [`encode`] writes for an operation.
pub fn encoded_len(op: &Op) -> usize {
    FRAME_LEN + MIN_LEN + body_len(op)
}

fn body_len(op: &Op) -> usize {
    match op {
        Op::Entry { payload, .. } => 8 + payload.len(),
        Op::TruncateFrom { .. } | Op::PurgeUpTo { .. } | Op::Commit { .. } => 8,
        Op::Meta { key, value } => 1 + key.len() + value.len(),
        Op::RemoveGroup => 0,
    }
}

/// Appends the bytes of `op` on `group` to `out`. Meta keys longer than 255 bytes are refused
/// earlier, when the batch is checked.
pub fn encode(group: u64, op: &Op, out: &mut Vec<u8>) {
    let start = out.len();
    let len = MIN_LEN + body_len(op);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let (kind, number) = match op {
        Op::Entry { index, .. } => (KIND_ENTRY, Some(*index)),
        Op::TruncateFrom { index } => (KIND_TRUNCATE_FROM, Some(*index)),
        Op::PurgeUpTo { index } => (KIND_PURGE_UP_TO, Some(*index)),
        Op::Meta { .. } => (KIND_META, None),
        Op::RemoveGroup => (KIND_REMOVE_GROUP, None),
        Op::Commit { seq } => (KIND_COMMIT, Some(*seq)),
    };
    out.push(kind);
    out.extend_from_slice(&group.to_le_bytes());
    if let Some(number) = number {
        out.extend_from_slice(&number.to_le_bytes());
    }
    match op {
        Op::Entry { payload, .. } => out.extend_from_slice(payload),
        Op::Meta { key, value } => {
            debug_assert!(key.len() <= u8::MAX as usize, "meta keys are checked by the batch");
            out.push(key.len() as u8);
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        _ => {}
    }
    let crc = crc32fast::hash(&out[start + FRAME_LEN..]);
    out[start + 4..start + FRAME_LEN].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Reads the record at the start of `buf` (the rest of the segment file).
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < FRAME_LEN {
        return if buf.iter().all(|b| *b == 0) { Decoded::End } else { Decoded::Bad("record header cut short") };
    }
    let len = u32_at(buf, 0) as usize;
    let crc = u32_at(buf, 4);
    if len == 0 {
        return if crc == 0 { Decoded::End } else { Decoded::Bad("zero length with a checksum") };
    }
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Decoded::Bad("impossible record length");
    }
    let Some(checked) = buf.get(FRAME_LEN..FRAME_LEN + len) else {
        return Decoded::Bad("record runs past the end of the file");
    };
    if crc32fast::hash(checked) != crc {
        return Decoded::Bad("checksum mismatch");
    }
    let kind = checked[0];
    let group = u64_at(checked, 1);
    let body = &checked[MIN_LEN..];
    let number = || if body.len() >= 8 { Some(u64_at(body, 0)) } else { None };
    let op = match kind {
        KIND_ENTRY => number().map(|index| Op::Entry { index, payload: Arc::from(&body[8..]) }),
        KIND_TRUNCATE_FROM if body.len() == 8 => number().map(|index| Op::TruncateFrom { index }),
        KIND_PURGE_UP_TO if body.len() == 8 => number().map(|index| Op::PurgeUpTo { index }),
        KIND_COMMIT if body.len() == 8 => number().map(|seq| Op::Commit { seq }),
        KIND_REMOVE_GROUP if body.is_empty() => Some(Op::RemoveGroup),
        KIND_META if !body.is_empty() && body.len() > body[0] as usize => {
            let key_len = body[0] as usize;
            Some(Op::Meta { key: body[1..1 + key_len].to_vec(), value: body[1 + key_len..].to_vec() })
        }
        _ => None,
    };
    match op {
        Some(op) => Decoded::Record(Record { group, op }, FRAME_LEN + len),
        None => Decoded::Bad("unknown record kind or malformed body"),
    }
}

/// The sequence number of a commit record at the start of `buf`, if one is there whole.
/// Recovery calls it at every offset past damage, so it rejects on the length first.
pub fn commit_at(buf: &[u8]) -> Option<u64> {
    if buf.len() < FRAME_LEN + COMMIT_LEN || u32_at(buf, 0) as usize != COMMIT_LEN {
        return None;
    }
    match decode(buf) {
        Decoded::Record(Record { op: Op::Commit { seq }, .. }, _) => Some(seq),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        encode(record.group, &record.op, &mut out);
        out
    }

    #[test]
    fn entry_layout_is_len_crc_kind_group_index_payload() {
        let record = Record { group: 7, op: Op::Entry { index: 3, payload: Arc::from(&b"ab"[..]) } };
        let out = bytes(&record);
        let mut expected = vec![19, 0, 0, 0];
        let checked: Vec<u8> =
            [&[1u8][..], &7u64.to_le_bytes(), &3u64.to_le_bytes(), b"ab"].into_iter().flatten().copied().collect();
        expected.extend_from_slice(&crc32fast::hash(&checked).to_le_bytes());
        expected.extend_from_slice(&checked);
        assert_eq!(out, expected);
        assert_eq!(out.len(), encoded_len(&record.op));
        assert_eq!(decode(&out), Decoded::Record(record, 27));
    }

    #[test]
    fn known_crc_of_a_group_removal() {
        // kind 5, group 0: 0xac9e51e1 is the CRC-32 (IEEE) of these nine bytes as Python's
        // zlib.crc32 computes it.
        let out = bytes(&Record { group: 0, op: Op::RemoveGroup });
        assert_eq!(out, [9, 0, 0, 0, 0xe1, 0x51, 0x9e, 0xac, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926, "the standard CRC-32 check value");
    }

    #[test]
    fn every_kind_round_trips() {
        let records = [
            Record { group: u64::MAX, op: Op::Entry { index: 0, payload: Arc::from(&[][..]) } },
            Record { group: 1, op: Op::TruncateFrom { index: 9 } },
            Record { group: 2, op: Op::PurgeUpTo { index: u64::MAX } },
            Record { group: 3, op: Op::Meta { key: b"vote".to_vec(), value: vec![1, 2, 3] } },
            Record { group: 3, op: Op::Meta { key: vec![], value: vec![] } },
            Record { group: 4, op: Op::RemoveGroup },
            Record { group: 0, op: Op::Commit { seq: 42 } },
        ];
        let mut all = Vec::new();
        for record in &records {
            encode(record.group, &record.op, &mut all);
        }
        let mut at = 0;
        for record in &records {
            match decode(&all[at..]) {
                Decoded::Record(found, used) => {
                    assert_eq!(&found, record);
                    at += used;
                }
                other => panic!("{record:?} decoded as {other:?}"),
            }
        }
        assert_eq!(at, all.len());
        assert_eq!(decode(&all[at..]), Decoded::End);
    }

    #[test]
    fn zeroes_are_the_end_and_damage_is_bad() {
        assert_eq!(decode(&[0; 64]), Decoded::End);
        assert_eq!(decode(&[0; 3]), Decoded::End);
        assert_eq!(decode(&[0, 0, 1]), Decoded::Bad("record header cut short"));
        assert_eq!(decode(&[0, 0, 0, 0, 1, 0, 0, 0]), Decoded::Bad("zero length with a checksum"));
        assert_eq!(decode(&[8, 0, 0, 0, 0, 0, 0, 0, 0]), Decoded::Bad("impossible record length"));
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), Decoded::Bad("impossible record length"));
        let good = bytes(&Record { group: 1, op: Op::PurgeUpTo { index: 5 } });
        assert_eq!(decode(&good[..good.len() - 1]), Decoded::Bad("record runs past the end of the file"));
        for at in 4..good.len() {
            let mut flipped = good.clone();
            flipped[at] ^= 0x40;
            assert_eq!(decode(&flipped), Decoded::Bad("checksum mismatch"), "flip at {at}");
        }
    }

    #[test]
    fn a_valid_checksum_over_a_malformed_body_is_bad() {
        // A truncate record whose body is 4 bytes: the CRC matches, the shape does not.
        let checked = [2u8, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0];
        let mut raw = (checked.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(&crc32fast::hash(&checked).to_le_bytes());
        raw.extend_from_slice(&checked);
        assert_eq!(decode(&raw), Decoded::Bad("unknown record kind or malformed body"));
        // A meta record whose key length runs past its body.
        let checked = [4u8, 1, 0, 0, 0, 0, 0, 0, 0, 3, b'a'];
        let mut raw = (checked.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(&crc32fast::hash(&checked).to_le_bytes());
        raw.extend_from_slice(&checked);
        assert_eq!(decode(&raw), Decoded::Bad("unknown record kind or malformed body"));
    }

    #[test]
    fn commit_at_finds_only_whole_commit_records() {
        let commit = bytes(&Record { group: 0, op: Op::Commit { seq: 77 } });
        assert_eq!(commit.len(), FRAME_LEN + COMMIT_LEN);
        assert_eq!(commit_at(&commit), Some(77));
        assert_eq!(commit_at(&commit[..commit.len() - 1]), None);
        let purge = bytes(&Record { group: 0, op: Op::PurgeUpTo { index: 77 } });
        assert_eq!(commit_at(&purge), None, "same length, other kind");
    }
}
