//! The node core end to end: real `ranged start` processes on loopback, driven through the
//! CLI and the gRPC clients a user or another node has.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ranged::pb;

fn liveness_of(nodes: &[pb::NodeEntry], node_id: u64) -> Option<pb::Liveness> {
    nodes
        .iter()
        .find(|n| n.descriptor.as_ref().is_some_and(|d| d.node_id == node_id))
        .and_then(|n| pb::Liveness::try_from(n.liveness).ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_replicate_and_split_by_size() {
    let cluster = Cluster::start(3, &["--range-max-bytes", "16KiB"]);
    cluster.init().await;
    cluster.wait_ready().await;

    cluster.cli_ok(0, &["kv", "put", "greeting", "hello"]);
    assert_eq!(cluster.cli_ok(1, &["kv", "get", "greeting"]).trim(), "hello");
    assert_eq!(cluster.cli_ok(2, &["kv", "get", "greeting"]).trim(), "hello");

    // node status: every node LIVE, as table and as JSON. wait_ready saw it from node 0;
    // node 2's gossip may hear from the others a moment later.
    wait_for(Duration::from_secs(20), "node 2 hears every node", || async {
        let table = cluster.cli_ok(2, &["node", "status"]);
        (table.lines().filter(|l| l.contains(" LIVE ")).count() == 3).then_some(())
    })
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&cluster.cli_ok(1, &["node", "status", "--format", "json"])).unwrap();
    let ids: Vec<u64> = json.as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3]);

    // Writing well past --range-max-bytes makes the user range split by itself.
    let mut kv = cluster.kv(0).await;
    let value = "v".repeat(200);
    for i in 0..200 {
        put(&mut kv, &format!("bulk/{i:04}"), &value).await.unwrap();
    }
    // Node 1 may be a follower that has not applied the last writes yet: wait until it has
    // split and holds every key (the count is asserted below all the same).
    let user_keys = |ranges: &[ranged::pb::RangeInfo]| ranges.iter().skip(1).map(|r| r.key_count).sum::<u64>();
    let ranges = wait_for(Duration::from_secs(20), "size-based splits", || async {
        let ranges = cluster.ranges(1).await.ok()?;
        (ranges.len() >= 4 && user_keys(&ranges) >= 201).then_some(ranges)
    })
    .await;
    // Every replica set is the group's membership, and the spans tile the keyspace.
    for pair in ranges.windows(2) {
        let (a, b) = (pair[0].descriptor.as_ref().unwrap(), pair[1].descriptor.as_ref().unwrap());
        assert_eq!(a.end_key, b.start_key, "ranges must be adjacent");
        assert_eq!(a.replicas.len(), 3);
    }
    assert!(ranges.last().unwrap().descriptor.as_ref().unwrap().end_key.is_empty());
    assert_eq!(user_keys(&ranges), 201, "every user key counted once across the split ranges");
    // And every key still reads back through another node.
    let mut kv2 = cluster.kv(2).await;
    for i in (0..200).step_by(37) {
        assert_eq!(get(&mut kv2, &format!("bulk/{i:04}")).await.unwrap().as_deref(), Some(value.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_killing_a_follower_and_the_leader() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let leader_id = wait_for(Duration::from_secs(10), "a leader", || cluster.leader(0)).await;
    let leader = cluster.index_of(leader_id).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (writer_node, follower) = (others[0], others[1]);

    // A writer loop through a node that is never killed.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut kv = cluster.kv(writer_node).await;
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 100_000 {
                let key = format!("w/{i:06}");
                if put(&mut kv, &key, &key).await.is_ok() {
                    acked.lock().unwrap().push(key);
                }
                i += 1;
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    let wait_progress = |from: usize, what: &'static str| {
        let acked = acked.clone();
        async move {
            wait_for(Duration::from_secs(20), what, || async {
                (acked.lock().unwrap().len() >= from + 20).then_some(())
            })
            .await
        }
    };

    wait_progress(0, "writes before any kill").await;
    cluster.kill(follower);
    wait_progress(acked_count(), "writes with a follower down").await;

    // The follower restarts on its store with the same id and catches up.
    cluster.restart(follower);
    wait_for(Duration::from_secs(30), "restarted follower catches up", || async {
        let theirs = cluster.ranges(follower).await.ok()?.first()?.raft.clone()?;
        let leaders = cluster.ranges(leader).await.ok()?.first()?.raft.clone()?;
        (theirs.applied_index >= leaders.commit_index.saturating_sub(5) && theirs.applied_index > 0).then_some(())
    })
    .await;

    // Kill the leader: a new one within a few seconds, and the writer goes on.
    let before = acked_count();
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = wait_for(Duration::from_secs(10), "a new leader", || async {
        cluster.leader(writer_node).await.filter(|id| *id != leader_id)
    })
    .await;
    let election = killed_at.elapsed();
    assert!(election < Duration::from_secs(10), "election took {election:?}");
    wait_progress(before, "writes after the leader was killed").await;
    cluster.restart(leader);
    wait_progress(acked_count(), "writes after the old leader rejoined").await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();

    // Every acknowledged write reads back, through every node (the restarted ones included).
    let keys = acked.lock().unwrap().clone();
    assert!(keys.len() >= 80, "only {} writes acknowledged", keys.len());
    for node in 0..3 {
        // A restarted node may not be listening yet: a refused connection is polled again.
        let mut kv = wait_for(Duration::from_secs(20), "node serving reads", || async {
            let mut kv = pb::kv_service_client::KvServiceClient::new(cluster.channel(node).await.ok()?);
            get(&mut kv, &keys[0]).await.ok().map(|_| kv)
        })
        .await;
        let scan = pb::KvOp {
            op: Some(pb::kv_op::Op::Scan(pb::ScanRequest {
                start: b"w/".to_vec().into(),
                end: b"w0".to_vec().into(),
                limit: 0,
            })),
        };
        let reply = kv.batch(pb::BatchRequest { ops: vec![scan], ..Default::default() }).await.unwrap().into_inner();
        let found: std::collections::BTreeSet<Vec<u8>> = reply.results[0].rows.iter().map(|r| r.key.to_vec()).collect();
        for key in &keys {
            assert!(found.contains(key.as_bytes()), "acknowledged {key} lost (read via node {node})");
        }
    }
    // The restarted nodes kept their ids: still three nodes, all LIVE, leader is the new one.
    let nodes = wait_for(Duration::from_secs(20), "all three LIVE again", || async {
        let nodes = cluster.status_nodes(writer_node).await.ok()?;
        (nodes.len() == 3 && nodes.iter().all(|n| n.liveness == pb::Liveness::Live as i32)).then_some(nodes)
    })
    .await;
    assert_eq!(nodes.len(), 3);
    assert_ne!(new_leader, leader_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_node_turns_unavailable_then_dead() {
    let mut cluster = Cluster::start(3, &["--time-until-dead", "6s"]);
    cluster.init().await;
    cluster.wait_ready().await;
    let nodes = cluster.status_nodes(0).await.unwrap();
    let victim_id = nodes
        .iter()
        .filter_map(|n| n.descriptor.as_ref())
        .find(|d| d.address == cluster.nodes[2].addr)
        .unwrap()
        .node_id;

    cluster.kill(2);
    let killed = Instant::now();
    wait_for(Duration::from_secs(15), "UNAVAILABLE", || async {
        let nodes = cluster.status_nodes(0).await.ok()?;
        (liveness_of(&nodes, victim_id) == Some(pb::Liveness::Unavailable)).then_some(())
    })
    .await;
    let unavailable_after = killed.elapsed();
    assert!(unavailable_after < Duration::from_secs(10), "took {unavailable_after:?}");
    // Both survivors also knew from their watch of it: its connection closed and a new one
    // was refused (what starts the elections of the groups it led before gossip gives up).
    let gone = format!("a reconnect was refused node={victim_id}");
    wait_for(Duration::from_secs(10), "both survivors' word that the victim's process is gone", || async {
        (cluster.log_lines_containing(&gone) == 2).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(20), "DEAD", || async {
        let nodes = cluster.status_nodes(1).await.ok()?;
        (liveness_of(&nodes, victim_id) == Some(pb::Liveness::Dead)).then_some(())
    })
    .await;
    assert!(killed.elapsed() >= Duration::from_secs(6), "DEAD before --time-until-dead");
    // Its last known descriptor is still listed. Each node judges liveness from when it last
    // heard from the victim itself, so ask the node that already reported it DEAD.
    let out = cluster.cli_ok(1, &["node", "status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dead = json.as_array().unwrap().iter().find(|n| n["id"] == victim_id).unwrap();
    assert_eq!(dead["liveness"], "DEAD");
    assert_eq!(dead["address"], cluster.nodes[2].addr.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_reads_makes_its_range_the_top_replica() {
    let cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    cluster.cli_ok(0, &["kv", "split", "hot/"]);
    let split = cluster.cli_ok(0, &["kv", "split", "hot0"]);
    let mut kv = cluster.kv(1).await;
    for i in 0..10 {
        put(&mut kv, &format!("hot/{i}"), "x").await.unwrap();
        put(&mut kv, &format!("cold/{i}"), "y").await.unwrap();
    }
    // The hot range is the one starting at "hot/".
    let ranges = cluster.ranges(0).await.unwrap();
    let hot_range = ranges
        .iter()
        .find(|r| r.descriptor.as_ref().unwrap().start_key.as_ref() == b"hot/")
        .unwrap()
        .descriptor
        .as_ref()
        .unwrap()
        .range_id;
    assert!(split.contains(&format!("r{hot_range}")), "{split}");

    // Paced reads for 5 s through a node that may or may not hold the lease.
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        get(&mut kv, &format!("hot/{}", sent % 10)).await.unwrap();
        sent += 1;
        let due = started + Duration::from_millis(sent * 5);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let rate_sent = sent as f64 / started.elapsed().as_secs_f64();

    let leader_id = cluster.range_leader(0, hot_range).await.unwrap();
    let leader = cluster.index_of(leader_id).await;
    let channel = cluster.channel(leader).await.unwrap();
    let mut status = pb::status_service_client::StatusServiceClient::new(channel);
    let reply = status
        .hot_ranges(pb::HotRangesRequest { limit: 3, sort_by: pb::HotRangesSort::Qps as i32 })
        .await
        .unwrap()
        .into_inner();
    let top = &reply.ranges[0];
    assert_eq!(top.descriptor.as_ref().unwrap().range_id, hot_range, "{reply:?}");
    let qps = top.load.unwrap().queries_per_second;
    assert!((qps - rate_sent).abs() <= 0.2 * rate_sent, "qps {qps:.1} vs {rate_sent:.1} sent");
    assert!(top.load.unwrap().read_bytes_per_second > 0.0);
    assert!(top.load.unwrap().cpu_time_per_second > 0.0);
    // Another node, not the range's leaseholder, does not report it; what it does report
    // (range 1, whose group's lease may be there) it holds the lease of.
    let other = (0..3).find(|i| *i != leader).unwrap();
    let mut status = pb::status_service_client::StatusServiceClient::new(cluster.channel(other).await.unwrap());
    let reply = status.hot_ranges(pb::HotRangesRequest { limit: 3, sort_by: 0 }).await.unwrap().into_inner();
    assert!(reply.ranges.iter().all(|r| r.is_leaseholder && r.descriptor.as_ref().unwrap().range_id != hot_range));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_hands_leadership_away_and_exits_zero() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let leader_id = wait_for(Duration::from_secs(10), "a leader", || cluster.leader(0)).await;
    let leader = cluster.index_of(leader_id).await;
    let mut kv = cluster.kv(leader).await;
    for i in 0..20 {
        put(&mut kv, &format!("before-drain/{i}"), &format!("v{i}")).await.expect("acknowledged write");
    }
    let other = (0..3).find(|i| *i != leader).unwrap();
    // The leader hands leadership over at once: another node sees a new leader well inside an
    // election timeout plus a heartbeat-silence fallback.
    let sent = Instant::now();
    cluster.send_sigterm(leader);
    let deadline = sent + Duration::from_secs(5);
    let new_leader = loop {
        if let Some(id) = cluster.leader(other).await.filter(|id| *id != leader_id) {
            break id;
        }
        assert!(Instant::now() < deadline, "no new leader within 5 s of SIGTERM\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = sent.elapsed();
    println!("SIGTERM to a new leader ({new_leader}) seen by another node: {} ms", took.as_millis());
    let status = cluster.wait_exit(leader, Duration::from_secs(20));
    assert!(status.success(), "drained node exited with {status}");
    let mut kv = cluster.kv(other).await;
    for i in 0..20 {
        let value = get(&mut kv, &format!("before-drain/{i}")).await.unwrap();
        assert_eq!(value, Some(format!("v{i}")), "an acknowledged write was lost");
    }
    put(&mut kv, "after-drain", "ok").await.unwrap();
    let log = std::fs::read_to_string(&cluster.nodes[leader].log).unwrap();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("handed leadership away"), "{log}");
    assert!(!log.contains("leadership transfer timed out"), "the transfer fell back to an election\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_one_clear_line_and_corrupts_nothing() {
    setup();
    // Unknown flag.
    let out = ranged(&["start", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");

    // Bad values.
    for args in [
        vec!["start", "--insecure", "--locality", "region"],
        vec!["start", "--insecure", "--time-until-dead", "soon"],
        vec!["start", "--insecure", "--listen-addr", "nonsense"],
    ] {
        let out = ranged(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }

    // Secure mode without certificates says so.
    let dir = tempfile::tempdir().unwrap();
    let out = ranged(&[
        "start",
        "--certs-dir",
        &dir.path().join("none").display().to_string(),
        "--store",
        &dir.path().join("s").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure"));

    // Unreachable --join: gives up after --join-timeout.
    let closed = format!("127.0.0.1:{}", free_port());
    let listen = "127.0.0.1:0".to_string();
    let store = dir.path().join("lonely").display().to_string();
    let out = ranged(&[
        "start",
        "--insecure",
        "--listen-addr",
        &listen,
        "--join",
        &closed,
        "--join-timeout",
        "2s",
        "--store",
        &store,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("ERROR: could not reach any --join node"), "{stderr}");

    // Cluster A: one node, initialized, with a key.
    let mut a = Cluster::start(1, &[]);
    a.init().await;
    a.cli_ok(0, &["kv", "put", "owner", "cluster-a"]);
    // A second init fails clearly and changes nothing.
    let out = a.cli(0, &["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "ERROR: cluster has already been initialized");
    // A port in use.
    let store = dir.path().join("other").display().to_string();
    let out = ranged(&["start", "--insecure", "--listen-addr", &a.nodes[0].addr, "--store", &store]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().starts_with("ERROR: cannot listen on") && stderr.trim().lines().count() == 1, "{stderr}");
    // The store in use by a running node.
    let listen = "127.0.0.1:0".to_string();
    let a_store = a.store(0).display().to_string();
    let out = ranged(&["start", "--insecure", "--listen-addr", &listen, "--store", &a_store]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another ranged process"));
    a.kill(0);

    // Cluster B; A's store may not join it.
    let b = Cluster::start(1, &[]);
    b.init().await;
    let listen = "127.0.0.1:0".to_string();
    let out =
        ranged(&["start", "--insecure", "--listen-addr", &listen, "--join", &b.nodes[0].addr, "--store", &a_store]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("belongs to cluster") && stderr.trim().lines().count() == 1, "{stderr}");

    // Nothing was corrupted: A restarts on its store and still has its data and identity.
    a.restart(0);
    let value = wait_for(Duration::from_secs(20), "cluster A back", || async {
        let out = a.cli(0, &["kv", "get", "owner"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .await;
    assert_eq!(value, "cluster-a");
    let ids: BTreeMap<u64, String> = a
        .status_nodes(0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.descriptor.map(|d| (d.node_id, d.address)))
        .collect();
    assert_eq!(ids.keys().copied().collect::<Vec<_>>(), vec![1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_cluster_uses_mutual_tls() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let certs = create_certs(dir.path()).display().to_string();
    let out = ranged(&["cert", "create-ca", "--certs-dir", &certs]);
    assert_eq!(out.status.code(), Some(1), "create-ca must not overwrite");

    let cluster = Cluster::start_in(dir, 3, &[], vec!["--certs-dir".into(), certs.clone()]);
    cluster.init().await;
    cluster.cli_ok(0, &["kv", "put", "secret-key", "tls-value"]);
    let value = wait_for(Duration::from_secs(20), "read over TLS", || async {
        let out = cluster.cli(2, &["kv", "get", "secret-key"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .await;
    assert_eq!(value, "tls-value");

    // Plaintext is refused.
    let out = ranged(&["kv", "get", "secret-key", "--insecure", "--host", &cluster.nodes[1].addr]);
    assert!(!out.status.success());
    // A client certificate from another CA is refused.
    let rogue = tempfile::tempdir().unwrap();
    let rogue_certs = rogue.path().display().to_string();
    ranged_ok(&["cert", "create-ca", "--certs-dir", &rogue_certs]);
    ranged_ok(&["cert", "create-client", "root", "--certs-dir", &rogue_certs]);
    let ca = std::fs::read(std::path::Path::new(&certs).join("ca.crt")).unwrap();
    std::fs::write(rogue.path().join("ca.crt"), ca).unwrap();
    let out = ranged(&["kv", "get", "secret-key", "--certs-dir", &rogue_certs, "--host", &cluster.nodes[1].addr]);
    assert!(!out.status.success(), "a certificate from another CA was accepted");
}

/// A node asking to join while `ranged init` is still writing the bootstrap records is told
/// to retry: it never gets node 1's own id or an id another node got (the docker-compose
/// cluster, whose nodes poll the init node every 500 ms, once got node 1 twice).
#[tokio::test(flavor = "multi_thread")]
async fn joins_during_init_get_fresh_distinct_node_ids() {
    let cluster = Cluster::start(1, &[]);
    let channel = cluster.channel(0).await.expect("connect");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let joiner = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = pb::node_service_client::NodeServiceClient::new(channel);
            let (mut ids, mut refused) = (Vec::new(), 0u32);
            // Bounded: init takes well under the 60,000 rounds of at least 1 ms this allows.
            for _ in 0..60_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) && !ids.is_empty() {
                    break;
                }
                let request = pb::JoinRequest { advertise_addr: "127.0.0.1:1".into(), cluster_name: String::new() };
                match client.join(request).await {
                    Ok(reply) => ids.push(reply.into_inner().node_id),
                    Err(status) if status.code() == tonic::Code::Unavailable => refused += 1,
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (ids, refused)
        })
    };
    cluster.init().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ids, refused) = joiner.await.unwrap();
    println!("node ids handed out during and after init: {ids:?}; {refused} joins told to retry");
    assert!(!ids.is_empty(), "no join answered\n{}", cluster.logs());
    assert!(ids.iter().all(|id| *id >= 2), "a joining node got node 1's id: {ids:?}");
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a node id was handed out twice: {ids:?}");
}

/// The rows of a dropped table go after its catalog change, in a batch of their own; a record
/// left behind (the statement's process died in between) is deleted by the leaseholder's
/// maintenance pass, with exactly the rows of its span.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_deletion_left_behind_is_carried_out() {
    use ranged::services::keys;
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let mut kv = cluster.kv(0).await;
    for key in ["gcx/1", "gcx/2", "gcx/3", "gcy/1"] {
        put(&mut kv, key, "v").await.unwrap();
    }
    let record = pb::KvOp {
        op: Some(pb::kv_op::Op::Put(pb::PutRequest {
            key: keys::gc_key(999_999).into(),
            value: keys::encode_span(b"gcx/", b"gcx0").into(),
        })),
    };
    kv.batch(pb::BatchRequest { ops: vec![record], ..Default::default() }).await.unwrap();
    let scan = |start: Vec<u8>, end: Vec<u8>| pb::KvOp {
        op: Some(pb::kv_op::Op::Scan(pb::ScanRequest { start: start.into(), end: end.into(), limit: 0 })),
    };
    // The rows and the record are in different Raft groups: a batch reads one group.
    wait_for(Duration::from_secs(20), "the pending deletion carried out", || {
        let mut kv = kv.clone();
        let rows = vec![scan(b"gcx/".to_vec(), b"gcx0".to_vec())];
        let records = vec![scan(keys::GC_PREFIX.to_vec(), keys::prefix_end(keys::GC_PREFIX))];
        async move {
            for ops in [rows, records] {
                let reply = kv.batch(pb::BatchRequest { ops, ..Default::default() }).await.ok()?.into_inner();
                reply.results.iter().all(|r| r.rows.is_empty()).then_some(())?;
            }
            Some(())
        }
    })
    .await;
    assert_eq!(get(&mut kv, "gcy/1").await.unwrap().as_deref(), Some("v"), "a key outside the span stays");
}

/// Range 1 and user space are separate Raft groups: a batch writing both is refused as
/// unsupported and writes neither; a batch within either runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_across_the_two_raft_groups_is_refused_and_reads_across_them_are_split() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let mut kv = cluster.kv(0).await;
    let put_op = |key: &[u8]| pb::KvOp {
        op: Some(pb::kv_op::Op::Put(pb::PutRequest { key: key.to_vec().into(), value: b"v".to_vec().into() })),
    };
    let both = pb::BatchRequest { ops: vec![put_op(b"user-key"), put_op(b"\x04test/both")], ..Default::default() };
    let refused = kv.batch(both).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    assert!(refused.message().contains("not supported"), "{refused:?}");
    assert_eq!(get(&mut kv, "user-key").await.unwrap(), None, "nothing of the refused batch was written");
    put(&mut kv, "user-key", "v").await.unwrap();
    assert_eq!(get(&mut kv, "user-key").await.unwrap().as_deref(), Some("v"));
    put(&mut kv, "\x04zz/sys", "s").await.unwrap();

    // Reads are split by group: a scan across the boundary sees both groups' rows, in order.
    let scan_op = |limit| pb::KvOp {
        op: Some(pb::kv_op::Op::Scan(pb::ScanRequest {
            start: b"\x04zz/".to_vec().into(),
            end: b"user-kez".to_vec().into(),
            limit,
        })),
    };
    for (limit, expected) in [(0, vec!["\x04zz/sys", "user-key"]), (1, vec!["\x04zz/sys"])] {
        let read = pb::BatchRequest { ops: vec![scan_op(limit)], ..Default::default() };
        let reply = kv.batch(read).await.unwrap().into_inner();
        let rows: Vec<String> =
            (reply.results[0].rows.iter()).map(|row| String::from_utf8_lossy(&row.key).into_owned()).collect();
        assert_eq!(rows, expected, "limit {limit}");
    }
    // So are paged scans: a page ends where the group does, and the next opens in the next one.
    let mut request = pb::ScanPageRequest {
        start: b"\x04zz/".to_vec().into(),
        end: b"user-kez".to_vec().into(),
        max_rows: 10,
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let mut pages = Vec::new();
    for _ in 0..10 {
        let page = kv.scan_page(request.clone()).await.unwrap().into_inner();
        pages.push(page.rows.iter().map(|row| String::from_utf8_lossy(&row.key).into_owned()).collect::<Vec<_>>());
        if page.resume_key.is_empty() {
            break;
        }
        assert_eq!(page.cursor_id, 0, "the first group's part fits one page: no cursor is left open");
        request.start = page.resume_key;
    }
    assert_eq!(pages, vec![vec!["\x04zz/sys".to_string()], vec!["user-key".to_string()]]);
}
