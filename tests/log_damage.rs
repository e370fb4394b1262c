//! The write-ahead log under a running cluster: a follower killed in the middle of appends,
//! whose last log segment is then cut at a random byte or has a byte flipped, either restarts
//! on a consistent prefix and catches up, or refuses to start with one line naming the file
//! and byte offset (and starts once the damage is undone). No write acknowledged to a client is
//! lost, and the follower's own applied copy ends up holding every one.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::writer::Writer;
use common::*;
use rand::{Rng, SeedableRng};
use ranged::pb;
use ranged::services::wal::segment::HEADER_LEN;

/// The keys under `w/` in node `i`'s own applied copy (no leaseholder involved).
async fn applied_keys(cluster: &Cluster, i: usize) -> Option<BTreeSet<Vec<u8>>> {
    let channel = tokio::time::timeout(Duration::from_secs(2), cluster.channel(i)).await.ok()?.ok()?;
    let mut kv = pb::kv_service_client::KvServiceClient::new(channel);
    let scan = pb::KvOp {
        op: Some(pb::kv_op::Op::Scan(pb::ScanRequest {
            start: b"w/".to_vec().into(),
            end: b"w0".to_vec().into(),
            limit: 0,
        })),
    };
    let request = pb::BatchRequest { ops: vec![scan], applied_copy: true, ..Default::default() };
    let reply = kv.batch(request).await.ok()?.into_inner();
    Some(reply.results.first()?.rows.iter().map(|r| r.key.to_vec()).collect())
}

/// Waits until node `i` runs and its applied copy holds every key of `keys`.
async fn wait_holds(cluster: &mut Cluster, i: usize, keys: &[String], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = cluster.nodes[i].child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("node {i} exited ({status}) while {what}\n{}", cluster.logs());
        }
        if let Some(found) = applied_keys(cluster, i).await {
            let missing: Vec<&String> = keys.iter().filter(|k| !found.contains(k.as_bytes())).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: node {i} lacks {} keys, first {}", missing.len(), missing[0]);
        } else {
            assert!(Instant::now() < deadline, "{what}: node {i} does not answer\n{}", cluster.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest segment of the log in store `store`.
fn last_segment(store: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(store.join("raft-log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a log segment")
}

/// Bytes of `segment` up to its last non-zero byte: what was written into the preallocation.
fn written_len(segment: &Path) -> u64 {
    let bytes = std::fs::read(segment).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at as u64 + 1)
}

fn flip_byte(segment: &Path, offset: u64) {
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(segment, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_with_a_cut_or_damaged_log_recovers_or_refuses_and_no_acknowledged_write_is_lost() {
    let seed = std::env::var("RANGED_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (replay with RANGED_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let leader_id = wait_for(Duration::from_secs(10), "a leader", || cluster.leader(0)).await;
    let leader = cluster.index_of(leader_id).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let writer = Writer::start(&cluster, leader, "w/").await;
    writer.wait_more(&cluster, 50, "writes before any damage").await;

    // 1. Killed mid-append, its last segment cut at a random byte: it restarts on what is
    //    left (openraft then takes the rest from the leader).
    cluster.kill(follower);
    let segment = last_segment(cluster.store(follower));
    let cut = rng.random_range(HEADER_LEN..=written_len(&segment));
    println!("cutting {} at byte {cut} of {}", segment.display(), written_len(&segment));
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
    writer.wait_more(&cluster, 20, "writes while the follower is down").await;
    cluster.restart(follower);
    wait_holds(&mut cluster, follower, &writer.acked(), "catching up after a cut log").await;
    writer.wait_more(&cluster, 20, "writes after the follower came back").await;

    // 2. Killed mid-append, the last byte written flipped: that record belongs to the last
    //    batch, which is then a torn write, cut off at start.
    cluster.kill(follower);
    let segment = last_segment(cluster.store(follower));
    let last = written_len(&segment) - 1;
    println!("flipping the last written byte {last} of {}", segment.display());
    flip_byte(&segment, last);
    cluster.restart(follower);
    wait_holds(&mut cluster, follower, &writer.acked(), "catching up after a torn tail").await;
    writer.wait_more(&cluster, 20, "writes after the second restart").await;

    // 3. A byte flipped well before the end (records and commits follow it): not a torn write,
    //    so the node refuses to start, in one line naming the file and the offset.
    cluster.kill(follower);
    let segment = last_segment(cluster.store(follower));
    let written = written_len(&segment);
    let flipped = rng.random_range(HEADER_LEN..HEADER_LEN + (written - HEADER_LEN) / 2);
    println!("flipping byte {flipped} of {} ({written} written)", segment.display());
    flip_byte(&segment, flipped);
    let log_before = std::fs::metadata(&cluster.nodes[follower].log).unwrap().len() as usize;
    cluster.restart(follower);
    let status = cluster.wait_exit(follower, Duration::from_secs(20));
    assert!(!status.success(), "a node with a damaged log started");
    let log = std::fs::read_to_string(&cluster.nodes[follower].log).unwrap();
    let said: Vec<&str> = log[log_before..].lines().filter(|l| l.contains("corrupt")).collect();
    assert_eq!(said.len(), 1, "one line about the damage, got:\n{}", &log[log_before..]);
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(said[0].contains(name) && said[0].contains("byte offset"), "names file and offset: {}", said[0]);
    // The refusal changed nothing: with the byte restored the node starts and catches up.
    flip_byte(&segment, flipped);
    cluster.restart(follower);
    wait_holds(&mut cluster, follower, &writer.acked(), "catching up after the damage was undone").await;

    // Every acknowledged write is in every node's applied copy and reads back linearizably.
    let acked = writer.finish().await;
    assert!(acked.len() >= 110, "only {} writes acknowledged", acked.len());
    for node in 0..3 {
        wait_holds(&mut cluster, node, &acked, "final check").await;
    }
    let mut kv = cluster.kv(follower).await;
    for key in acked.iter().step_by(97) {
        assert_eq!(get(&mut kv, key).await.unwrap().as_deref(), Some(key.as_str()));
    }
}
