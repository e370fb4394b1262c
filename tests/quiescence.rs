//! Quiescence end to end on `ranged start` processes: the Raft groups of idle ranges stop
//! their heartbeats (a node then receives few Raft messages however many ranges it holds),
//! they serve reads and writes as before, and a killed leader's quiesced ranges get new
//! leaders through gossip's failure detection.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// How many ranges the table is split into: enough that their heartbeats, were they running
/// (about 6.7 a second per range a node follows: node 1 received 396 a second with the clock
/// left running), stand far above what quiesced ranges leave ([`QUIESCED_RATE_LIMIT`]).
const TABLE_RANGES: usize = 64;

/// The most Raft messages a second a node may receive once the table's ranges are quiesced:
/// what remains is range 1's traffic (every node's status write every 10 s wakes it), the
/// leaders' quiesce messages, and lease moves; measured at 4-28 a second over 16 ranges and 16-25 over 64.
const QUIESCED_RATE_LIMIT: f64 = 100.0;

/// Node `i`'s own store metrics as it reports them now (its own entry is measured, not
/// persisted).
async fn own_metrics(cluster: &Cluster, i: usize) -> Option<std::collections::HashMap<String, f64>> {
    let node_id = cluster.ranges(i).await.ok()?.first()?.node_id;
    let nodes = cluster.status_nodes(i).await.ok()?;
    let own = nodes.into_iter().find(|n| n.descriptor.as_ref().is_some_and(|d| d.node_id == node_id))?;
    Some(own.store_metrics.into_values().next()?.metrics)
}

/// The range ids of table `kv`, through SQL on `url`.
async fn table_range_ids(url: &str) -> Option<Vec<u64>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    let rows = client.query("SHOW RANGES FROM TABLE kv", &[]).await.ok()?;
    Some(rows.iter().map(|row| row.get::<_, i64>("range_id") as u64).collect())
}

/// The leader (0: none) of each of `ids` as node `i` sees it.
async fn leaders(cluster: &Cluster, i: usize, ids: &[u64]) -> Option<Vec<u64>> {
    let ranges = cluster.ranges(i).await.ok()?;
    let leader_of = |id: u64| {
        let range = ranges.iter().find(|r| r.descriptor.as_ref().is_some_and(|d| d.range_id == id))?;
        Some(range.raft.as_ref().map_or(0, |raft| raft.leader_id))
    };
    ids.iter().map(|id| leader_of(*id)).collect()
}

async fn count_rows(url: &str) -> Option<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(connection);
    client.query_one("SELECT count(*) FROM kv", &[]).await.ok().map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_ranges_stop_heartbeating_and_wake_on_writes_and_on_their_leaders_death() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let url = cluster.pg_url(0, "root");
    let splits: Vec<String> = (1..TABLE_RANGES).map(|i| format!("({})", i * 10)).collect();
    let values: Vec<String> = (0..TABLE_RANGES * 10).step_by(5).map(|k| format!("({k}, 'v{k}')")).collect();
    let (ok, _, err) = psql(
        &url,
        &[
            "CREATE TABLE kv (k INT8 PRIMARY KEY, v STRING)",
            &format!("INSERT INTO kv VALUES {}", values.join(", ")),
            &format!("ALTER TABLE kv SPLIT AT VALUES {}", splits.join(", ")),
        ],
    );
    assert!(ok, "{err}");
    let rows = values.len() as i64;
    let table = table_range_ids(&url).await.expect("the table's ranges");
    assert_eq!(table.len(), TABLE_RANGES, "{table:?}");

    // Every node's replicas of the table's ranges go quiet once idle.
    wait_for(Duration::from_secs(60), "every node's table ranges quiescent", || async {
        for i in 0..3 {
            let quiescent = own_metrics(&cluster, i).await?.get("replicas.quiescent").copied()?;
            if quiescent < TABLE_RANGES as f64 {
                return None;
            }
        }
        Some(())
    })
    .await;

    // Then every node receives few Raft messages: over 5 s windows, looked at until one is
    // quiet on all three (the allocator may still be moving a few leases when the ranges
    // first quiesce; each move wakes its group), within a deadline.
    let window = Duration::from_secs(5);
    let mut looks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut before = Vec::new();
        for i in 0..3 {
            before.push(own_metrics(&cluster, i).await.unwrap_or_default());
        }
        tokio::time::sleep(window).await;
        let mut loud = Vec::new();
        for (i, before) in before.iter().enumerate() {
            let after = own_metrics(&cluster, i).await.unwrap_or_default();
            // Per kind, so that a failure says which messages kept coming.
            let mut kinds: Vec<(String, f64)> = (after.iter())
                .filter(|(name, _)| name.starts_with("raft.rcvd."))
                .map(|(name, count)| (name.clone(), (count - before.get(name).unwrap_or(&0.0)) / window.as_secs_f64()))
                .filter(|(_, rate)| *rate > 0.0)
                .collect();
            kinds.sort_by(|a, b| a.0.cmp(&b.0));
            let rate: f64 = kinds.iter().map(|(_, rate)| rate).sum();
            eprintln!("node {i}: {rate:.1} Raft messages a second received ({kinds:?})");
            if rate >= QUIESCED_RATE_LIMIT {
                loud.push(format!("node {i}: {rate:.1}/s {kinds:?}"));
            }
        }
        if loud.is_empty() {
            break;
        }
        looks.push(loud.join("; "));
        assert!(
            Instant::now() < deadline,
            "{TABLE_RANGES} idle ranges: a node received {QUIESCED_RATE_LIMIT} or more Raft messages a second \
             in every 5 s window for 60 s: {looks:#?}"
        );
    }

    // Quiesced ranges serve reads and writes through any node.
    assert_eq!(count_rows(&cluster.pg_url(1, "root")).await, Some(rows));
    let (ok, _, err) =
        psql(&cluster.pg_url(2, "root"), &["INSERT INTO kv VALUES (1, 'one')", "INSERT INTO kv VALUES (151, 'x')"]);
    assert!(ok, "{err}");
    let rows = rows + 2;

    // Let them quiesce again, then kill the node leading the most table ranges: gossip says
    // it is gone, its followers start their clocks and elect new leaders.
    wait_for(Duration::from_secs(30), "node 1's table ranges quiescent again", || async {
        let quiescent = own_metrics(&cluster, 0).await?.get("replicas.quiescent").copied()?;
        (quiescent >= TABLE_RANGES as f64).then_some(())
    })
    .await;
    let led_by = leaders(&cluster, 0, &table).await.expect("leaders");
    let victim_id = {
        let mut counts = std::collections::BTreeMap::<u64, usize>::new();
        led_by.iter().for_each(|leader| *counts.entry(*leader).or_default() += 1);
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id).unwrap()
    };
    let victim = cluster.index_of(victim_id).await;
    let survivor = (0..3).find(|i| *i != victim).unwrap();
    let killed = Instant::now();
    cluster.kill(victim);
    wait_for(Duration::from_secs(30), "every table range led by a live node", || async {
        let led_by = leaders(&cluster, survivor, &table).await?;
        led_by.iter().all(|leader| *leader != 0 && *leader != victim_id).then_some(())
    })
    .await;
    eprintln!("new leaders for the killed node's quiesced ranges after {:?}", killed.elapsed());
    let url = cluster.pg_url(survivor, "root");
    let counted =
        wait_for(Duration::from_secs(20), "the rows read through a survivor", || async { count_rows(&url).await })
            .await;
    assert_eq!(counted, rows, "every acknowledged row after the leader's death");
}
