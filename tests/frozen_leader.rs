//! The Cluster API through a frozen range-1 leader: with the Raft leader stopped (SIGSTOP), a
//! healthy node still answers `/nodes/`, `/sessions/` and `/ranges/hot/` with 200 within the
//! fan-out deadline, names the frozen node, and still checks sessions (secure cluster).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FANOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// Resumes a stopped process when the test ends, however it ends.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// The first non-zero `leader_id` anywhere in `value`.
fn leader_id(value: &Value) -> Option<u64> {
    match value {
        Value::Object(map) => map
            .get("leader_id")
            .and_then(Value::as_u64)
            .filter(|id| *id != 0)
            .or_else(|| map.values().find_map(leader_id)),
        Value::Array(items) => items.iter().find_map(leader_id),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_through_a_frozen_range_1_leader() {
    let timeout = format!("{}s", FANOUT_TIMEOUT.as_secs());
    let (cluster, certs) = Cluster::start_secure(3, &["--fanout-timeout", &timeout], "rootpw").await;
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let api = |i: usize| cluster.api(i, "https");
    let login = |i: usize| {
        let (client, url) = (client.clone(), format!("{}/login/", api(i)));
        async move {
            let response = client
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("username=root&password=rootpw")
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            body["session"].as_str().map(str::to_string)
        }
    };
    let get = |i: usize, path: &str, token: &str| {
        let request = client.get(format!("{}{path}", api(i))).header("X-Cockroach-API-Session", token);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    // Everyone LIVE and range 1 replicated to every node, as seen through the API.
    let token0 = wait_for(Duration::from_secs(30), "login on node 0", || login(0)).await;
    let nodes: Value = wait_for(Duration::from_secs(60), "three LIVE nodes", || async {
        let (status, text) = get(0, "/nodes/", &token0).await;
        let body: Value = serde_json::from_str(&text).ok()?;
        let live = body["nodes"].as_array()?.iter().filter(|n| n["liveness_status"] == 3).count();
        (status == 200 && live == 3).then_some(body)
    })
    .await;
    let leader = wait_for(Duration::from_secs(30), "range 1's leader", || async {
        let (_, text) = get(0, "/ranges/1/", &token0).await;
        leader_id(&serde_json::from_str(&text).ok()?)
    })
    .await;
    let index_of = |node_id: u64| {
        let address = nodes["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == node_id).unwrap()["address"]
            ["address_field"]
            .as_str()
            .unwrap()
            .to_string();
        cluster.nodes.iter().position(|n| n.addr == address).unwrap()
    };
    let frozen = index_of(leader);
    let healthy = (0..3).find(|i| *i != frozen).unwrap();
    let token = wait_for(Duration::from_secs(30), "login on a healthy node", || login(healthy)).await;
    // A session minted by the node that is about to freeze is valid elsewhere too.
    let token_from_frozen = wait_for(Duration::from_secs(30), "login on the leader", || login(frozen)).await;
    // Let the sessions reach every replica's applied copy.
    wait_for(Duration::from_secs(10), "the leader's session seen by the healthy node", || async {
        (get(healthy, "/nodes/", &token_from_frozen).await.0 == 200).then_some(())
    })
    .await;

    let pid = cluster.nodes[frozen].child.as_ref().unwrap().id();
    let _frozen = Frozen::freeze(pid);
    let bound = FANOUT_TIMEOUT + Duration::from_millis(100);
    // Right after the freeze (the others still follow the frozen leader) and again once they
    // have had time to elect a new one.
    for round in ["just frozen", "after a new leader took over"] {
        for session in [&token, &token_from_frozen] {
            for path in ["/nodes/", "/sessions/", "/ranges/hot/"] {
                let started = Instant::now();
                let (status, text) = get(healthy, path, session).await;
                let took = started.elapsed();
                assert_eq!(status, 200, "{round}: {path}: {text}");
                assert!(took <= bound, "{round}: {path} took {took:?} (bound {bound:?})");
                let body: Value = serde_json::from_str(&text).unwrap();
                if path == "/nodes/" {
                    assert!(
                        body["nodes"].as_array().unwrap().iter().any(|n| n["node_id"] == leader),
                        "{round}: the frozen node is not listed: {text}"
                    );
                } else {
                    assert!(
                        text.contains(&format!("node {leader}")),
                        "{round}: {path} does not name the frozen node {leader}: {text}"
                    );
                }
            }
        }
        // The session check still refuses what it must.
        let (status, _) = get(healthy, "/nodes/", "AQID").await;
        assert_eq!(status, 401, "{round}: a forged session got {status}");
        if round == "just frozen" {
            wait_for(Duration::from_secs(30), "a new range-1 leader", || async {
                let (_, text) = get(healthy, "/ranges/1/", &token).await;
                leader_id(&serde_json::from_str(&text).ok()?).filter(|id| *id != leader)
            })
            .await;
        }
    }
}
