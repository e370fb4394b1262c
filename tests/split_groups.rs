//! Splits that create Raft groups, end to end on `ranged start` processes: the right-hand
//! range of a split is a group of its own (its own leader, term and log), it goes on serving
//! when the left range's leaseholder is killed, and a full cluster restart recovers every
//! range with every acknowledged row; a node that joins after the split becomes a replica of
//! the new group too; range 1 keeps a routing copy of every range's descriptor and members.

mod common;

use std::time::Duration;

use common::*;
use ranged::pb;
use ranged::services::keys;
use ranged::services::ranges::MetaRecord;
use tonic::transport::Channel;

/// (range id, lease holder) of each range of table `kv`, through SQL on `url`.
async fn table_ranges(url: &str) -> Option<Vec<(i64, i64)>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let rows = client.query("SHOW RANGES FROM TABLE kv", &[]).await.ok()?;
    Some(rows.iter().map(|row| (row.get("range_id"), row.get("lease_holder"))).collect())
}

/// The rows of `kv` through SQL on `url`, or `None` while the query fails.
async fn rows(url: &str) -> Option<Vec<(i64, String)>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let rows = client.query("SELECT k, v FROM kv ORDER BY k", &[]).await.ok()?;
    Some(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Inserts row `k` through `url`; whether it was acknowledged.
async fn insert(url: &str, k: i64) -> bool {
    let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else { return false };
    tokio::spawn(connection);
    client.execute("INSERT INTO kv VALUES ($1, $2)", &[&k, &format!("v{k}")]).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_off_range_is_a_raft_group_that_outlives_its_neighbours_leaseholder_and_a_full_restart() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let url = |cluster: &Cluster, i: usize| cluster.pg_url(i, "root");
    let (ok, _, err) = psql(&url(&cluster, 0), &["CREATE TABLE kv (k INT8 PRIMARY KEY, v STRING)"]);
    assert!(ok, "{err}");
    let mut acked: Vec<i64> = Vec::new();
    for k in (0..100).step_by(10) {
        assert!(insert(&url(&cluster, 0), k).await, "insert {k}");
        acked.push(k);
    }
    let (ok, _, err) = psql(&url(&cluster, 0), &["ALTER TABLE kv SPLIT AT VALUES (50)"]);
    assert!(ok, "{err}");

    // Two ranges, each its own Raft group: the new one has a term and log of its own.
    let ranges = wait_for(Duration::from_secs(10), "the table's two ranges with leaseholders", || async {
        let ranges = table_ranges(&url(&cluster, 0)).await?;
        (ranges.len() == 2 && ranges.iter().all(|(_, holder)| *holder != 0)).then_some(ranges)
    })
    .await;
    let (left, right) = (ranges[0].0 as u64, ranges[1].0 as u64);
    let status = cluster.ranges(0).await.unwrap();
    let raft_of = |id: u64| {
        status.iter().find(|r| r.descriptor.as_ref().is_some_and(|d| d.range_id == id)).and_then(|r| r.raft.clone())
    };
    let (left_raft, right_raft) = (raft_of(left).expect("left range"), raft_of(right).expect("right range"));
    assert!(
        right_raft.last_log_index < left_raft.last_log_index || right_raft.term != left_raft.term,
        "the right range has a log of its own: left {left_raft:?}, right {right_raft:?}"
    );
    assert_eq!(rows(&url(&cluster, 1)).await.map(|r| r.len()), Some(acked.len()), "a scan across both groups");
    // A statement writing both ranges is refused whole (there is no cross-range commit yet).
    let (client, connection) = tokio_postgres::connect(&url(&cluster, 0), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let refused = client.execute("INSERT INTO kv VALUES (1, 'v1'), (51, 'v51')", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED), "{refused:?}");
    assert_eq!(rows(&url(&cluster, 0)).await.map(|r| r.len()), Some(acked.len()), "nothing of it was written");

    // Kill the left range's leaseholder: both ranges elect leaders among the other two
    // nodes, and writes to both go on.
    let holder = wait_for(Duration::from_secs(10), "the left range's leaseholder", || async {
        cluster.range_leader(0, left).await
    })
    .await;
    let victim = cluster.index_of(holder).await;
    cluster.kill(victim);
    let survivor = (0..3).find(|i| *i != victim).unwrap();
    for k in [5, 55, 15, 65] {
        wait_for(Duration::from_secs(20), "a write after the leaseholder was killed", || async {
            insert(&url(&cluster, survivor), k).await.then_some(())
        })
        .await;
        acked.push(k);
    }
    cluster.restart(victim);

    // Stop every node, start them again: every range comes back with every row.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    acked.sort_unstable();
    let expected: Vec<(i64, String)> = acked.iter().map(|k| (*k, format!("v{k}"))).collect();
    for i in 0..3 {
        let found = wait_for(Duration::from_secs(30), "every row after a full restart", || async {
            rows(&url(&cluster, i)).await.filter(|found| *found == expected)
        })
        .await;
        assert_eq!(found, expected);
    }
    let ranges = table_ranges(&url(&cluster, 0)).await.expect("ranges after the restart");
    assert_eq!(ranges.iter().map(|(id, _)| *id as u64).collect::<Vec<_>>(), vec![left, right]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joining_after_splits_gets_every_ranges_group_and_rows() {
    let mut cluster = Cluster::start(4, &[]);
    // The fourth node joins only after the table's splits, so it learns of their groups by
    // replaying the left groups' logs, not from the bootstrap.
    cluster.kill(3);
    cluster.init().await;
    let url = cluster.pg_url(0, "root");
    let (ok, _, err) = psql(&url, &["CREATE TABLE kv (k INT8 PRIMARY KEY, v STRING)"]);
    assert!(ok, "{err}");
    for k in 0..20 {
        assert!(insert(&url, k * 5).await, "insert {k}");
    }
    let (ok, _, err) = psql(&url, &["ALTER TABLE kv SPLIT AT VALUES (50)"]);
    assert!(ok, "{err}");
    cluster.restart(3);

    // Every range node 1 holds, node 4 comes to hold too, with the same rows.
    let counts = |ranges: Vec<ranged::pb::RangeInfo>| {
        ranges.iter().map(|r| (r.descriptor.as_ref().map_or(0, |d| d.range_id), r.key_count)).collect::<Vec<_>>()
    };
    wait_for(Duration::from_secs(60), "node 4 holding every range with its rows", || async {
        let expected = counts(cluster.ranges(0).await.ok()?);
        let held = counts(cluster.ranges(3).await.ok()?);
        (expected.len() >= 5 && held == expected).then_some(())
    })
    .await;

    // Node 4 holds the split-off range's rows from replaying the left group's log, split
    // included; it receives the right group's later writes only once it has asked that group
    // to add it (its membership loop does, for every group it holds).
    for k in 20..30 {
        assert!(insert(&url, k * 5).await, "insert {k} after the join");
    }
    wait_for(Duration::from_secs(30), "node 4 holding the rows written after it joined", || async {
        let expected = counts(cluster.ranges(0).await.ok()?);
        let held = counts(cluster.ranges(3).await.ok()?);
        (held == expected).then_some(())
    })
    .await;
    let expected: Vec<(i64, String)> = (0..30).map(|k| (k * 5, format!("v{}", k * 5))).collect();
    assert_eq!(rows(&cluster.pg_url(3, "root")).await, Some(expected), "read through the new node");
}

/// Range 1's routing copy of the range descriptors, as read through a KV client on `kv`
/// (`None` while a record is unreadable).
async fn meta_records(kv: &mut pb::kv_service_client::KvServiceClient<Channel>) -> Option<Vec<MetaRecord>> {
    let scan = pb::KvOp {
        op: Some(pb::kv_op::Op::Scan(pb::ScanRequest {
            start: keys::META_PREFIX.to_vec().into(),
            end: keys::prefix_end(keys::META_PREFIX).into(),
            limit: 0,
        })),
    };
    let reply = kv.batch(pb::BatchRequest { ops: vec![scan], ..Default::default() }).await.ok()?.into_inner();
    reply.results[0].rows.iter().map(|row| serde_json::from_slice(&row.value).ok()).collect()
}

/// Whether `records` hold exactly one record per range of `ranges`, each with the range's
/// span, generation and voters.
fn records_match(records: &[MetaRecord], ranges: &[pb::RangeInfo]) -> bool {
    records.len() == ranges.len()
        && ranges.iter().all(|range| {
            let Some(desc) = range.descriptor.as_ref() else { return false };
            let mut voters: Vec<u64> = desc.replicas.iter().filter(|r| r.voter).map(|r| r.node_id).collect();
            voters.sort_unstable();
            records.iter().any(|record| {
                let mut recorded = record.voters.clone();
                recorded.sort_unstable();
                record.descriptor.range_id == desc.range_id
                    && record.descriptor.start_key == desc.start_key.as_ref()
                    && record.descriptor.end_key == desc.end_key.as_ref()
                    && record.descriptor.generation == desc.generation
                    && recorded == voters
            })
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn range_1_keeps_a_routing_record_of_every_range_that_comes_back_when_damaged() {
    let cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let url = cluster.pg_url(0, "root");
    let (ok, _, err) = psql(
        &url,
        &[
            "CREATE TABLE kv (k INT8 PRIMARY KEY, v STRING)",
            "ALTER TABLE kv SPLIT AT VALUES (10), (20), (30), (40), (50), (60), (70)",
        ],
    );
    assert!(ok, "{err}");
    let mut kv = cluster.kv(1).await;
    // Each range's leaseholder writes its record after the splits.
    let records = wait_for(Duration::from_secs(30), "a routing record per range, equal to the range", || async {
        let ranges = cluster.ranges(0).await.ok()?;
        let records = meta_records(&mut kv.clone()).await?;
        (ranges.len() >= 10 && records_match(&records, &ranges)).then_some(records)
    })
    .await;

    // Damage three records as a crash between a split and its record, or an operator, could:
    // one gone, one unreadable, one older than its range.
    let key = |record: &MetaRecord| keys::range_descriptor_key(record.descriptor.range_id);
    let mut older = records[4].clone();
    older.descriptor.generation = 0;
    older.descriptor.end_key = b"elsewhere".to_vec();
    let damage = vec![
        pb::KvOp { op: Some(pb::kv_op::Op::Delete(pb::DeleteRequest { key: key(&records[2]).into() })) },
        pb::KvOp {
            op: Some(pb::kv_op::Op::Put(pb::PutRequest {
                key: key(&records[3]).into(),
                value: b"{not json".to_vec().into(),
            })),
        },
        pb::KvOp {
            op: Some(pb::kv_op::Op::Put(pb::PutRequest {
                key: key(&older).into(),
                value: serde_json::to_vec(&older).unwrap().into(),
            })),
        },
    ];
    kv.batch(pb::BatchRequest { ops: damage, ..Default::default() }).await.unwrap();
    assert!(meta_records(&mut kv).await.is_none(), "an unreadable record is visible");
    wait_for(Duration::from_secs(60), "the damaged records rewritten by their leaseholders", || async {
        let ranges = cluster.ranges(0).await.ok()?;
        records_match(&meta_records(&mut kv.clone()).await?, &ranges).then_some(())
    })
    .await;
}
