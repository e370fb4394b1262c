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

/// Raft messages node `i` has received, of every kind.
async fn messages_received(cluster: &Cluster, i: usize) -> Option<f64> {
    let metrics = own_metrics(cluster, i).await?;
    Some(metrics.iter().filter(|(name, _)| name.starts_with("raft.rcvd.")).map(|(_, count)| count).sum())
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

    let window = Duration::from_secs(5);
    let before: Vec<f64> = each_node(&cluster, messages_received).await;
    tokio::time::sleep(window).await;
    let after: Vec<f64> = each_node(&cluster, messages_received).await;
    for i in 0..3 {
        let rate = (after[i] - before[i]) / window.as_secs_f64();
        eprintln!("node {i}: {rate:.1} Raft messages a second received");
        assert!(
            rate < QUIESCED_RATE_LIMIT,
            "node {i} received {rate:.1} Raft messages a second over {TABLE_RANGES} idle ranges"
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

/// `f` for each of the 3 nodes in turn (0 where it fails).
async fn each_node<'a, F, Fut>(cluster: &'a Cluster, f: F) -> Vec<f64>
where
    F: Fn(&'a Cluster, usize) -> Fut,
    Fut: std::future::Future<Output = Option<f64>>,
{
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(f(cluster, i).await.unwrap_or(0.0));
    }
    out
}
