//! Damage on disk: the last segment cut at every byte offset, and bytes flipped at random
//! offsets of every segment. Recovery must give exactly the batches written whole before the
//! damage, or refuse with one line naming the file and the byte offset; never other data.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use ranged::services::error::Error;
use ranged::services::wal::record::{self, Decoded, Op};
use ranged::services::wal::{Wal, WalConfig, segment};

use crate::model::{State, apply, concretize, random_steps, read_state, to_batch};

const SEGMENT_SIZE: u64 = 2048;

/// Writes `batches` random batches on three groups; `states[k]` is the model after batch k
/// (batch k has sequence number k).
pub fn build(dir: &Path, batches: usize, seed: u64) -> Vec<State> {
    let wal = Wal::open(dir, WalConfig { segment_size: SEGMENT_SIZE }).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut states = vec![State::new()];
    for _ in 0..batches {
        let mut state = states.last().unwrap().clone();
        let ops = concretize(&state, &random_steps(&mut rng, 3), 120);
        wal.write(to_batch(&ops)).unwrap();
        for op in &ops {
            apply(&mut state, op);
        }
        states.push(state);
    }
    states
}

fn copy_segments(from: &Path, to: &Path) {
    for (_, path) in segment::list(from).unwrap() {
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// The commit records of a segment file: (start, end) byte offsets.
fn commits(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let mut at = segment::HEADER_LEN as usize;
    let mut found = Vec::new();
    while let Decoded::Record(record, used) = record::decode(&data[at..]) {
        if let Op::Commit { .. } = record.op {
            found.push((at, at + used));
        }
        at += used;
    }
    found
}

fn config() -> WalConfig {
    WalConfig { segment_size: SEGMENT_SIZE }
}

#[test]
fn cutting_the_last_segment_at_every_byte_recovers_exactly_the_batches_before_the_cut() {
    let source = tempfile::tempdir().unwrap();
    let states = build(source.path(), 60, 7);
    let segments = segment::list(source.path()).unwrap();
    let (last_seq, last_path) = segments.last().unwrap().clone();
    assert!(last_seq > 1, "the source rotated: {segments:?}");
    let name = last_path.file_name().unwrap().to_owned();
    let commits = commits(&last_path);
    let data_end = commits.last().unwrap().1;
    for cut in 0..=data_end + 2 {
        let dir = tempfile::tempdir().unwrap();
        copy_segments(source.path(), dir.path());
        let file = std::fs::OpenOptions::new().write(true).open(dir.path().join(&name)).unwrap();
        file.set_len(cut as u64).unwrap();
        drop(file);
        let wal = Wal::open(dir.path(), config()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole = (last_seq - 1) as usize + commits.iter().filter(|(_, end)| *end <= cut).count();
        assert_eq!(read_state(&wal), states[whole], "cut at {cut}: batches 1..={whole} expected");
        if cut % 13 == 0 {
            // The cut tail was cleaned: a new batch lands after the recovered ones and survives.
            let mut expected = states[whole].clone();
            let ops = concretize(&expected, &random_steps(&mut rand::rngs::StdRng::seed_from_u64(cut as u64), 3), 120);
            wal.write(to_batch(&ops)).unwrap();
            for op in &ops {
                apply(&mut expected, op);
            }
            drop(wal);
            let wal = Wal::open(dir.path(), config()).unwrap();
            assert_eq!(read_state(&wal), expected, "cut at {cut}, then one more batch");
        }
    }
}

#[test]
fn a_flipped_byte_is_refused_with_file_and_offset_or_loses_at_most_the_last_batch_commit() {
    let source = tempfile::tempdir().unwrap();
    let batches = 60;
    let states = build(source.path(), batches, 11);
    let segments: Vec<PathBuf> = segment::list(source.path()).unwrap().into_iter().map(|(_, p)| p).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let (mut refused, mut recovered) = (0, 0);
    for trial in 0..400 {
        let which = rng.random_range(0..segments.len());
        let last = which + 1 == segments.len();
        let name = segments[which].file_name().unwrap().to_owned();
        let commits = commits(&segments[which]);
        let data_end = commits.last().map_or(segment::HEADER_LEN as usize, |c| c.1);
        let offset = rng.random_range(0..data_end + 64);
        let flip: u8 = rng.random_range(1..=255);
        let dir = tempfile::tempdir().unwrap();
        copy_segments(source.path(), dir.path());
        let path = dir.path().join(&name);
        let mut data = std::fs::read(&path).unwrap();
        data[offset] ^= flip;
        std::fs::write(&path, &data).unwrap();
        let context = format!("trial {trial}: {} byte {offset} ^ {flip:#x}", name.to_string_lossy());
        match Wal::open(dir.path(), config()) {
            Err(error) => {
                let message = error.to_string();
                assert!(matches!(error, Error::FailedPrecondition(_)), "{context}: {message}");
                assert!(message.contains(&*name.to_string_lossy()), "{context}: {message}");
                assert!(message.contains("byte offset"), "{context}: {message}");
                assert!(!message.contains('\n'), "{context}: one line: {message}");
                refused += 1;
            }
            Ok(wal) => {
                let state = read_state(&wal);
                let in_last_commit = last && offset >= commits.last().unwrap().0;
                assert!(
                    state == states[batches] || (in_last_commit && state == states[batches - 1]),
                    "{context}: recovered a state that is neither everything nor all but the last batch"
                );
                recovered += 1;
            }
        }
    }
    assert!(refused > 0 && recovered > 0, "both outcomes were exercised: {refused} refused, {recovered} recovered");
}
