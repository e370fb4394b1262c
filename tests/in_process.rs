//! The in-process tier: a real three-node cluster in this test process (the same builder the
//! demo and the benchmarks use), every listener on a port the node bound itself, reached over
//! HTTP. Node 1's embedded API answers for node 1 in-process and dials nodes 2 and 3.

use std::time::Duration;

use ranged::local_cluster::{LocalCluster, LocalClusterOptions};
use serde_json::Value;

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|err| panic!("GET {url}: not JSON ({err}): {body}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_api_answers_for_its_own_node_in_process_and_dials_the_others() {
    ranged::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&LocalClusterOptions::new(3, dir.path())).await.unwrap();
    cluster.init().await.unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    let api = format!("http://{}/api/v2", cluster.http_addrs[0].expect("node 1 serves HTTP"));

    let (status, body) = get(&format!("{api}/health/?ready=true")).await;
    assert_eq!((status, body), (200, serde_json::json!({})));

    let (status, nodes) = get(&format!("{api}/nodes/")).await;
    assert_eq!(status, 200);
    let nodes = nodes["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["liveness_status"] == 3), "every node LIVE: {nodes:?}");
    // Each node reports the SQL address it bound itself. Nodes that join at the same time
    // may get their ids in either order, so the addresses are compared as sets.
    let mut reported: Vec<String> =
        nodes.iter().map(|n| n["sql_address"]["address_field"].as_str().unwrap().to_string()).collect();
    let mut bound: Vec<String> = cluster.sql_addrs.iter().map(|a| a.unwrap().to_string()).collect();
    reported.sort();
    bound.sort();
    assert_eq!(reported, bound);

    // Every node answers the range fan-out: node 1 in-process, 2 and 3 over gRPC.
    let (status, range) = get(&format!("{api}/ranges/1/")).await;
    assert_eq!(status, 200);
    assert_eq!(range["summary"], serde_json::json!({"total": 3, "successful": 3, "failed": 0}));
    let (status, local) = get(&format!("{api}/nodes/local/ranges/")).await;
    assert_eq!(status, 200);
    assert_eq!(local["ranges"][0]["source_node_id"], 1);
    let (status, hot) = get(&format!("{api}/ranges/hot/?node_id=local")).await;
    assert_eq!(status, 200);
    assert_eq!(hot["summary"]["total"], 1);

    // The Raft transport delivers by group: a message for a group the node holds no replica
    // of is refused as NotFound (the sender backs off), one for its group that does not
    // decode as InvalidArgument; neither disturbs the cluster.
    let rpc = format!("http://{}", cluster.nodes[1].listen_addr());
    let mut raft = ranged::pb::raft_service_client::RaftServiceClient::connect(rpc).await.unwrap();
    let payload =
        |group| ranged::pb::RaftPayload { data: b"not a vote".to_vec().into(), error: false, group, load: None };
    let refused = raft.vote(payload(7)).await.expect_err("no replica of group 7");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(refused.message().contains("Raft group 7"), "{refused:?}");
    let refused = raft.vote(payload(ranged::services::raft::SYSTEM_GROUP)).await.expect_err("undecodable vote");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(get(&format!("{api}/health/?ready=true")).await.0, 200);

    // Each node counts the Raft messages it receives: the followers of the idle cluster see
    // heartbeats (empty appends) and the bootstrap's entries, reported with the store metrics.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, nodes) = get(&format!("{api}/nodes/")).await;
        let received = |name: &str| -> f64 {
            nodes["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["store_metrics"].as_object())
                .flat_map(|stores| stores.values())
                .filter_map(|store| store[name].as_f64())
                .sum()
        };
        if received("raft.rcvd.heartbeat") > 0.0 && received("raft.rcvd.app") > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no Raft messages counted: {nodes}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A stopped node is reported, not waited for.
    let mut nodes = cluster.nodes;
    nodes.pop().unwrap().shutdown().await;
    let (status, range) = get(&format!("{api}/ranges/1/")).await;
    assert_eq!(status, 200);
    assert_eq!(range["summary"]["failed"], 1, "{range}");
    for node in nodes {
        node.shutdown().await;
    }
}
