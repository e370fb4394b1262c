//! Splits that create Raft groups, end to end on `ranged start` processes: the right-hand
//! range of a split is a group of its own (its own leader, term and log), it goes on serving
//! when the left range's leaseholder is killed, and a full cluster restart recovers every
//! range with every acknowledged row; a node that joins after the splits receives replicas of
//! some groups and reaches the others through range 1's routing copy of every range's
//! descriptor and members.

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
async fn a_node_joining_after_splits_receives_replicas_by_snapshot_and_reaches_the_others_through_range_1() {
    let mut cluster = Cluster::start(4, &[]);
    // The fourth node joins only after the table's splits: the ranges' leaseholders move
    // replicas to it (a learner caught up by snapshot, promoted, then a voter on a fuller
    // node removed) until the nodes hold about as many each.
    cluster.kill(3);
    cluster.init().await;
    let url = cluster.pg_url(0, "root");
    let (ok, _, err) = psql(&url, &["CREATE TABLE kv (k INT8 PRIMARY KEY, v STRING)"]);
    assert!(ok, "{err}");
    for k in 0..20 {
        assert!(insert(&url, k * 5).await, "insert {k}");
    }
    let (ok, _, err) = psql(&url, &["ALTER TABLE kv SPLIT AT VALUES (10), (20), (30), (40), (50), (60), (70)"]);
    assert!(ok, "{err}");
    cluster.restart(3);

    let all = [0, 1, 2, 3];
    let balanced = wait_until(Duration::from_secs(90), "replicas spread evenly over the four nodes", || async {
        let ranges = cluster.members_by_leaseholders(&all).await?;
        let mut views = Vec::new();
        for i in all {
            views.push(cluster.ranges(i).await?);
        }
        let key_count = |i: usize, id: u64, leaseholder: bool| {
            let range = views[i].iter().find(|r| r.descriptor.as_ref().is_some_and(|d| d.range_id == id))?;
            (!leaseholder || range.is_leaseholder).then_some(range.key_count)
        };
        let mut per_node = [0usize; 4];
        for (id, (voters, learners)) in ranges.iter().filter(|(id, _)| **id != 1) {
            if voters.len() != 3 || !learners.is_empty() {
                return Err(format!("range {id}: voters {voters:?}, learners {learners:?}"));
            }
            // Each replica node 4 holds has the leaseholder's rows.
            if voters.contains(&4) {
                let expected = all.iter().find_map(|i| key_count(*i, *id, true));
                let held = key_count(3, *id, false);
                if expected.is_none() || held != expected {
                    return Err(format!("range {id}: node 4 holds {held:?} rows, its leaseholder {expected:?}"));
                }
            }
            voters.iter().for_each(|v| per_node[*v as usize - 1] += 1);
        }
        let (min, max) = (per_node.iter().min(), per_node.iter().max());
        match (min, max) {
            (Some(min), Some(max)) if max - min <= 1 => Ok(per_node),
            _ => Err(format!("replicas per node {per_node:?}")),
        }
    })
    .await;
    assert!(balanced[3] >= 5, "node 4 holds {} replicas: {balanced:?}", balanced[3]);

    // Every node holds only replicas its groups count (the others gave theirs up), and node 4
    // reaches the ranges it holds none of through the routing copy in range 1.
    wait_until(Duration::from_secs(30), "no node holding a replica its group left out", || async {
        let ranges = cluster.members_by_leaseholders(&all).await?;
        for (i, node_id) in all.iter().zip(1u64..) {
            for range in cluster.ranges(*i).await? {
                let id = range.descriptor.as_ref().ok_or("a range without a descriptor")?.range_id;
                let (voters, learners) = ranges.get(&id).ok_or(format!("range {id}: no leaseholder"))?;
                if !voters.contains(&node_id) && !learners.contains(&node_id) {
                    return Err(format!(
                        "node {node_id} holds range {id} (there: {:?}, {:?}), whose leaseholder lists \
                         voters {voters:?} and learners {learners:?}",
                        range.descriptor, range.raft
                    ));
                }
            }
        }
        Ok(())
    })
    .await;
    for k in 20..30 {
        assert!(insert(&cluster.pg_url(3, "root"), k * 5).await, "insert {k} through node 4");
    }
    let expected: Vec<(i64, String)> = (0..30).map(|k| (k * 5, format!("v{}", k * 5))).collect();
    assert_eq!(rows(&cluster.pg_url(3, "root")).await, Some(expected.clone()), "read through the new node");
    assert_eq!(rows(&cluster.pg_url(0, "root")).await, Some(expected), "read through node 1");
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
