//! Segment files: `{first_seq:020}.wal` in the log's directory, each preallocated to the
//! configured size and starting with a header (magic, format version, first batch sequence).
//! Records follow the header; the zeroed rest of the file is free space.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::services::error::{Error, Result};

/// Identifies a ranged write-ahead log segment.
pub const MAGIC: [u8; 8] = *b"RNGDWAL\0";
/// The record and header format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the header; records start here.
pub const HEADER_LEN: u64 = 32;

const SUFFIX: &str = ".wal";

/// The header bytes: magic, version u32, reserved u32, first sequence u64, CRC-32 of the
/// preceding 24 bytes, 4 bytes of padding.
pub fn encode_header(first_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0; HEADER_LEN as usize];
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The first sequence a header names, or why the bytes are not a header of this format.
pub fn decode_header(bytes: &[u8]) -> std::result::Result<u64, String> {
    let Some(header) = bytes.get(..HEADER_LEN as usize) else {
        return Err("segment header cut short".into());
    };
    if header[..8] != MAGIC {
        return Err("not a ranged WAL segment (bad magic)".into());
    }
    let stored_crc = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
    if crc32fast::hash(&header[..24]) != stored_crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(format!("segment format version {version}, this build reads version {FORMAT_VERSION}"));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&header[16..24]);
    Ok(u64::from_le_bytes(seq))
}

/// The file name of the segment whose first batch is `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The segment files in `dir`, oldest first. Other files are ignored; a `.wal` file whose
/// name is not a sequence number is refused, since it could hold records.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, "list", e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error(dir, "list", e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(SUFFIX) else { continue };
        match stem.parse::<u64>() {
            Ok(seq) if stem.len() == 20 => found.push((seq, path)),
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "wal: {}: segment file name is not a 20-digit sequence number",
                    path.display()
                )));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Creates a segment: header written, space reserved, file and directory entry synced, so
/// that a batch written into it later needs only a data sync.
pub fn create(dir: &Path, first_seq: u64, size: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(file_name(first_seq));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error(&path, "create", e))?;
    file.write_all(&encode_header(first_seq)).map_err(|e| io_error(&path, "write header", e))?;
    preallocate(&file, size.max(HEADER_LEN)).map_err(|e| io_error(&path, "preallocate", e))?;
    file.sync_all().map_err(|e| io_error(&path, "sync", e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Reserves blocks up to `size` with fallocate, so that later writes do not allocate (and a
/// data sync has no allocation metadata to flush); file systems without it get a sparse
/// `set_len`, which reads back as the same zeroes.
pub fn preallocate(file: &File, size: u64) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len >= size {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(_) => file.set_len(size),
    }
}

/// Syncs a directory, so that file creations and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, "sync directory", e))
}

/// An I/O failure on a log file, as the one error vocabulary reports storage failures.
pub fn io_error(path: &Path, what: &str, error: std::io::Error) -> Error {
    Error::Internal(format!("wal: {}: {what}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_names_sort_by_sequence() {
        let header = encode_header(12345);
        assert_eq!(&header[..8], b"RNGDWAL\0");
        assert_eq!(decode_header(&header), Ok(12345));
        assert_eq!(file_name(7), "00000000000000000007.wal");
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn damaged_headers_say_why() {
        let header = encode_header(1);
        assert_eq!(decode_header(&header[..31]), Err("segment header cut short".into()));
        let mut bad = header;
        bad[0] = b'X';
        assert_eq!(decode_header(&bad), Err("not a ranged WAL segment (bad magic)".into()));
        let mut bad = header;
        bad[17] ^= 1;
        assert_eq!(decode_header(&bad), Err("segment header checksum mismatch".into()));
        let mut bad = header;
        bad[8] = 2;
        let crc = crc32fast::hash(&bad[..24]);
        bad[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_header(&bad), Err("segment format version 2, this build reads version 1".into()));
    }
}
