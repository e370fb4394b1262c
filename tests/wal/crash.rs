//! SIGKILL in the middle of appending: a child process (this test binary, re-run with an
//! environment variable) writes random batches, pipelined, and prints each batch's ordinal
//! once the log reports it durable; the parent kills it at a random moment, reopens the log
//! and checks that it holds every acknowledged batch, intact, and nothing but whole batches.
//! Three rounds on one directory, each child continuing the log the previous one left.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use ranged::services::wal::{Wal, WalConfig};

use crate::model::{State, apply, concretize, random_steps, read_state, to_batch};

const CHILD_DIR: &str = "RANGED_WAL_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "RANGED_WAL_CRASH_CHILD_SEED";
const TEST_NAME: &str = "crash::kill_nine_mid_append_keeps_every_acknowledged_batch";
const GROUPS: u64 = 4;
/// Batches submitted before waiting for one: keeps several in flight when the kill lands.
const PIPELINE: u64 = 8;

fn config() -> WalConfig {
    WalConfig { segment_size: 32 << 10 }
}

/// The batches a child with `seed` writes, from `state` on.
fn next_batch(rng: &mut rand::rngs::StdRng, state: &State) -> Vec<crate::model::ModelOp> {
    concretize(state, &random_steps(rng, GROUPS), 300)
}

/// The child's side: append until killed (or, bounded, until 20,000 batches or a minute).
fn child(dir: &str, seed: u64) {
    let wal = Wal::open(dir, config()).unwrap();
    let mut state = read_state(&wal);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(60);
    for ordinal in 0..20_000u64 {
        if Instant::now() > deadline {
            break;
        }
        let ops = next_batch(&mut rng, &state);
        for op in &ops {
            apply(&mut state, op);
        }
        let report = move |result: ranged::services::error::Result<u64>| {
            let seq = result.unwrap();
            let mut out = std::io::stdout().lock();
            writeln!(out, "ack {ordinal} {seq}").unwrap();
            out.flush().unwrap();
        };
        if ordinal % PIPELINE == PIPELINE - 1 {
            let seq = wal.write(to_batch(&ops)).unwrap();
            report(Ok(seq));
        } else {
            wal.submit(to_batch(&ops), report).unwrap();
        }
    }
}

#[test]
fn kill_nine_mid_append_keeps_every_acknowledged_batch() {
    if let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) {
        child(&dir, seed.parse().unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut state = State::new();
    for round in 0..3u64 {
        let seed = 1000 + round;
        let kill_after = rng.random_range(20..300u64);
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_SEED, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (lines, received) = mpsc::channel();
        let stdout = process.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                if words.next() == Some("ack")
                    && let Some(ordinal) = words.next().and_then(|w| w.parse::<u64>().ok())
                {
                    let _ = lines.send(ordinal);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acknowledged = 0u64;
        while acknowledged < kill_after {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(ordinal) => acknowledged = acknowledged.max(ordinal + 1),
                Err(e) => panic!("round {round}: the child stopped acknowledging after {acknowledged}: {e}"),
            }
        }
        process.kill().unwrap();
        process.wait().unwrap();
        reader.join().unwrap();
        // Acknowledgements printed before the kill and still in the pipe count too.
        acknowledged = received.try_iter().fold(acknowledged, |most, ordinal| most.max(ordinal + 1));

        let wal = Wal::open(dir.path(), config()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let recovered = read_state(&wal);
        drop(wal);
        // Replay the child's batches: the log must equal the state after some whole number of
        // them, at least every acknowledged one, at most those that could have been in flight.
        let mut child_rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut expected = state.clone();
        let mut matched = None;
        for written in 0..=acknowledged + PIPELINE {
            if written >= acknowledged && expected == recovered {
                matched = Some(written);
                break;
            }
            let ops = next_batch(&mut child_rng, &expected);
            for op in &ops {
                apply(&mut expected, op);
            }
        }
        let written = matched.unwrap_or_else(|| {
            panic!("round {round}: the recovered log is not the state after {acknowledged} or more whole batches")
        });
        eprintln!("round {round}: killed after {acknowledged} acknowledged batches, recovered {written}");
        state = recovered;
    }
}
