//! Replica placement end to end on `ranged start` processes: `ranged node decommission`
//! moves a node's replicas off while writes go on and leaves it DECOMMISSIONED; a voter on a
//! node that turns DEAD is replaced by a live learner; no acknowledged write is lost.

mod common;

use std::time::Duration;

use common::writer::Writer;
use common::*;

/// (voters, learners) of the one group as node `i` sees it.
async fn members(cluster: &Cluster, i: usize) -> Option<(Vec<u64>, Vec<u64>)> {
    let ranges = cluster.ranges(i).await.ok()?;
    let replicas = &ranges.first()?.descriptor.as_ref()?.replicas;
    let of = |voter: bool| replicas.iter().filter(|r| r.voter == voter).map(|r| r.node_id).collect::<Vec<_>>();
    Some((of(true), of(false)))
}

/// Stops `writer` and checks that every acknowledged key reads back through node `i`.
async fn stop_and_check(writer: Writer, cluster: &Cluster, i: usize) {
    let keys = writer.finish().await;
    assert!(keys.len() >= 20, "only {} writes acknowledged", keys.len());
    let kv = cluster.kv(i).await;
    for key in &keys {
        let value = wait_for(Duration::from_secs(10), "an acknowledged write reads back", || async {
            get(&mut kv.clone(), key).await.ok()
        })
        .await;
        assert_eq!(value.as_deref(), Some(key.as_str()), "acknowledged write {key} lost");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decommissioning_a_voter_moves_its_replicas_off_while_writes_continue() {
    let cluster = Cluster::start(5, &[]);
    cluster.init().await;
    cluster.wait_ready().await;
    let leader = wait_for(Duration::from_secs(10), "a leader", || cluster.leader(0)).await;
    let (voters, learners) = members(&cluster, 0).await.expect("members");
    assert_eq!((voters.len(), learners.len()), (3, 2), "voters {voters:?} learners {learners:?}");
    // A voter that is not the leader, and a writer through a node that stays.
    let target = *voters.iter().find(|id| **id != leader).unwrap();
    let writer_node = cluster.index_of(leader).await;
    let writer = Writer::start(&cluster, writer_node, "d/").await;
    writer.wait_more(&cluster, 10, "writes before decommissioning").await;

    let out = cluster.cli_ok(writer_node, &["node", "decommission", &target.to_string()]);
    println!("ranged node decommission {target}:\n{out}");
    assert!(out.contains("No more data reported on target nodes"), "{out}");
    let last_row = out.lines().rfind(|l| l.trim_start().starts_with(&format!("{target} |"))).unwrap();
    assert!(last_row.contains("decommissioned"), "{out}");
    assert!(last_row.split('|').nth(2).unwrap().trim() == "0", "replicas left: {out}");

    // The group has three voters again, none of them the decommissioned node, and a learner
    // took its place.
    let (voters, learners) = wait_for(Duration::from_secs(10), "three voters without the node", || async {
        let (voters, learners) = members(&cluster, writer_node).await?;
        (voters.len() == 3 && !voters.contains(&target)).then_some((voters, learners))
    })
    .await;
    assert!(!learners.contains(&target), "voters {voters:?} learners {learners:?}");
    writer.wait_more(&cluster, 10, "writes after decommissioning").await;
    // The node itself learns it was removed (it hears nothing more from the group): it lists
    // no replica, and its persisted metrics, as another node shows them, say 0.
    let target_index = cluster.index_of(target).await;
    wait_for(Duration::from_secs(30), "the decommissioned node lists no replica", || async {
        cluster.ranges(target_index).await.ok()?.is_empty().then_some(())
    })
    .await;
    wait_for(Duration::from_secs(30), "its persisted replica count 0", || async {
        let nodes = cluster.status_nodes(writer_node).await.ok()?;
        let entry = nodes.iter().find(|n| n.descriptor.as_ref().is_some_and(|d| d.node_id == target))?;
        let replicas = entry.store_metrics.values().find_map(|m| m.metrics.get("replicas").copied())?;
        (replicas == 0.0).then_some(())
    })
    .await;

    // The node list shows it DECOMMISSIONED; the JSON report says so too; recommissioning
    // a decommissioned node is refused.
    let table = cluster.cli_ok(writer_node, &["node", "status"]);
    assert!(table.lines().any(|l| l.starts_with(&format!("{target} ")) && l.contains("DECOMMISSIONED")), "{table}");
    let again = cluster.cli(writer_node, &["node", "recommission", &target.to_string()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot be recommissioned"));
    // An unknown node is a clear error.
    let unknown = cluster.cli(writer_node, &["node", "decommission", "42", "--wait", "none"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("node 42 does not exist"), "{unknown:?}");
    stop_and_check(writer, &cluster, writer_node).await;
}

/// The largest `ranges_underreplicated` of the LIVE nodes in `ranged node status --ranges`
/// through node `i`.
fn underreplicated(cluster: &Cluster, i: usize) -> Option<u64> {
    let out = cluster.cli(i, &["node", "status", "--ranges", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let live = rows.as_array()?.iter().filter(|row| row["liveness"] == "LIVE");
    live.map(|row| row["ranges_underreplicated"].as_u64()).collect::<Option<Vec<u64>>>()?.into_iter().max()
}

/// Every range healed after the kills of `killed` (node ids): as its leaseholder among `live`
/// reports it, three voters and no replica on a killed node; and no LIVE node reports a range
/// underreplicated. Otherwise what was seen.
async fn healed(cluster: &Cluster, live: &[usize], killed: &[u64]) -> Result<(), String> {
    let ranges = cluster.members_by_leaseholders(live).await?;
    let unhealed: Vec<_> = (ranges.iter())
        .filter(|(_, (voters, learners))| {
            voters.len() != 3 || killed.iter().any(|id| voters.contains(id) || learners.contains(id))
        })
        .collect();
    if !unhealed.is_empty() {
        return Err(format!("ranges (voters, learners) not healed: {unhealed:?}"));
    }
    for i in live {
        match underreplicated(cluster, *i) {
            Some(0) => {}
            seen => return Err(format!("node index {i} reports {seen:?} ranges underreplicated")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn voters_on_dead_nodes_are_replaced_one_kill_after_another_and_a_revived_node_rejoins() {
    let mut cluster = Cluster::start(5, &["--time-until-dead", "10s"]);
    cluster.init().await;
    cluster.wait_ready().await;
    let leader = wait_for(Duration::from_secs(10), "a leader", || cluster.leader(0)).await;
    let writer_node = cluster.index_of(leader).await;
    // The writer's keys span several ranges, placed on 3 of the 5 nodes each.
    for at in (100..=700).step_by(100) {
        cluster.cli_ok(writer_node, &["kv", "split", &format!("k/{at:06}")]);
    }
    let writer = Writer::start(&cluster, writer_node, "k/").await;
    writer.wait_more(&cluster, 10, "writes before the kills").await;
    let mut killed = Vec::new();
    for round in 0..2 {
        let (voters, learners) = members(&cluster, writer_node).await.expect("members");
        assert_eq!((voters.len(), learners.len()), (3, 2 - round), "voters {voters:?} learners {learners:?}");
        let victim = *voters.iter().find(|id| **id != leader).unwrap();
        let victim_index = cluster.index_of(victim).await;
        cluster.kill(victim_index);
        killed.push((victim, victim_index));
        // After --time-until-dead (10 s) each range's leader promotes a live learner, or adds
        // one, then removes the dead voter, all within 30 s more; the live nodes then report
        // nothing underreplicated. Every range: killing the next node before all of them
        // healed could take two voters of one.
        let live: Vec<usize> = (0..5).filter(|i| !killed.iter().any(|(_, k)| k == i)).collect();
        let dead: Vec<u64> = killed.iter().map(|(id, _)| *id).collect();
        wait_until(Duration::from_secs(10 + 30), "every range healed of the dead voter", || {
            healed(&cluster, &live, &dead)
        })
        .await;
        writer.wait_more(&cluster, 10, "writes after the replacement").await;
    }
    // The first node killed comes back on its store: it still believes it is a voter of the
    // groups it held. It asks range 1's leader and joins range 1 again as a learner (every
    // node holds range 1); the replicas of the other ranges, whose groups replaced it while it
    // was dead, it gives up (replica GC), and the allocator may place new ones on it.
    let (revived, revived_index) = killed[0];
    cluster.restart(revived_index);
    let live: Vec<usize> = (0..5).filter(|i| *i != killed[1].1).collect();
    wait_until(Duration::from_secs(40), "the revived node in range 1 and only in groups that count it", || {
        revived_state(&cluster, &live, revived, revived_index)
    })
    .await;
    writer.wait_more(&cluster, 10, "writes after the node came back").await;
    stop_and_check(writer, &cluster, writer_node).await;
}

/// `Ok` once node `revived` (index `revived_index`) is a learner of range 1, every range has
/// three voters as its leaseholder among `live` reports, and every replica the revived node
/// holds is counted by its group; otherwise which of these failed, with the views involved.
async fn revived_state(cluster: &Cluster, live: &[usize], revived: u64, revived_index: usize) -> Result<(), String> {
    let ranges = cluster.members_by_leaseholders(live).await?;
    let (_, system_learners) = ranges.get(&1).ok_or("no leaseholder view of range 1")?;
    if !system_learners.contains(&revived) {
        return Err(format!("range 1's learners {system_learners:?}"));
    }
    let short: Vec<_> = ranges.iter().filter(|(_, (voters, _))| voters.len() != 3).collect();
    if !short.is_empty() {
        return Err(format!("ranges without three voters: {short:?}"));
    }
    let held = cluster.ranges(revived_index).await?;
    let uncounted: Vec<String> = held
        .iter()
        .filter_map(|range| {
            let desc = range.descriptor.as_ref()?;
            let counted = ranges
                .get(&desc.range_id)
                .is_some_and(|(voters, learners)| voters.contains(&revived) || learners.contains(&revived));
            (!counted).then(|| {
                let raft = range.raft.as_ref().map(|r| (r.state.clone(), r.leader_id, r.term));
                let group = ranges.get(&desc.range_id);
                format!(
                    "r{} (leaseholder here: {}, raft {raft:?}, group {group:?})",
                    desc.range_id, range.is_leaseholder
                )
            })
        })
        .collect();
    if uncounted.is_empty() {
        Ok(())
    } else {
        Err(format!("replicas the revived node holds but its group does not count: {uncounted:?}"))
    }
}
