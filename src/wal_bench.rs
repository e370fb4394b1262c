//! `ranged bench wal`: appends and bytes per second of the write-ahead log
//! (`services/wal`) with fsync on: `--writers` threads each write batches of `--batch`
//! records of `--record-size` bytes, closed loop (each waits for its batch to be durable),
//! into a fresh log under `--dir`, for `--duration`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::services::wal::{Wal, WalConfig, WriteBatch};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct WalBenchResult {
    /// Records per batch.
    pub batch: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// Records made durable.
    pub records: u64,
    /// Payload bytes made durable.
    pub bytes: u64,
    /// Writes (one `write` + one `fdatasync` each) the log issued.
    pub writes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Median and 99th percentile of a batch's wait for durability.
    pub p50: Duration,
    /// See `p50`.
    pub p99: Duration,
}

/// Runs one measurement in a new directory under `dir` (removed afterwards).
pub fn run(
    dir: &Path,
    batch: usize,
    writers: usize,
    record_size: usize,
    duration: Duration,
) -> Result<WalBenchResult, String> {
    let root = tempfile::tempdir_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let wal = Arc::new(Wal::open(root.path(), WalConfig::default()).map_err(|e| e.to_string())?);
    let payload: Arc<[u8]> = (0..record_size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into();
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..writers as u64)
        .map(|group| {
            let (wal, payload) = (wal.clone(), payload.clone());
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut waits = Vec::new();
                let mut index = 0;
                while Instant::now() < deadline {
                    let mut write = WriteBatch::new();
                    for _ in 0..batch {
                        write.append(group, index, payload.clone());
                        index += 1;
                    }
                    let sent = Instant::now();
                    wal.write(write).map_err(|e| e.to_string())?;
                    waits.push(sent.elapsed());
                }
                Ok(waits)
            })
        })
        .collect();
    let mut waits = Vec::new();
    for thread in threads {
        waits.extend(thread.join().map_err(|_| "a writer panicked".to_string())??);
    }
    let elapsed = started.elapsed();
    waits.sort();
    let at = |q: f64| waits.get(((waits.len() as f64 * q) as usize).min(waits.len().saturating_sub(1))).copied();
    let records = (waits.len() * batch) as u64;
    Ok(WalBenchResult {
        batch,
        writers,
        records,
        bytes: records * record_size as u64,
        writes: wal.stats().writes,
        elapsed,
        p50: at(0.5).unwrap_or_default(),
        p99: at(0.99).unwrap_or_default(),
    })
}
