//! Router-level tests: the gateway's `router()` driven with `tower::ServiceExt::oneshot`
//! against a faked cluster (no process, no socket). The fakes answer the StatusService calls
//! with literal data, fail with a chosen error, or never answer; KV batches run against an
//! in-memory map with the real batch evaluation, so login and the session check are real.
//! Every endpoint's error paths: bad limits, bad tokens, unknown nodes, node failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use ranged::gateway::cluster::ClusterClient;
use ranged::gateway::node_client::{Connector, NodeClient};
use ranged::gateway::{self, Gateway};
use ranged::pb;
use ranged::services::error::{Error, Result};
use ranged::services::kv::{self, Op, OpResult};
use ranged::services::sql::users::{self, ScramVerifier, UserRecord};
use serde_json::Value as Json;
use tower::ServiceExt;

/// How a fake node behaves.
#[derive(Clone)]
enum Behaviour {
    /// Answers.
    Up,
    /// Fails every call with this error.
    Fails(Error),
    /// Never answers.
    Hangs,
}

/// One fake node: its id, its behaviour, and the cluster's shared KV map.
struct FakeNode {
    node_id: u64,
    behaviour: Behaviour,
    ready: bool,
    cluster: Arc<FakeCluster>,
}

/// The faked cluster: its nodes' behaviours and the contents of its keyspace.
struct FakeCluster {
    nodes: Vec<(u64, Behaviour)>,
    data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl FakeNode {
    async fn behave(&self) -> Result<()> {
        match &self.behaviour {
            Behaviour::Up => Ok(()),
            Behaviour::Fails(err) => Err(err.clone()),
            Behaviour::Hangs => std::future::pending().await,
        }
    }

    fn range(&self, range_id: u64) -> pb::RangeInfo {
        pb::RangeInfo {
            descriptor: Some(pb::RangeDescriptor {
                range_id,
                start_key: vec![range_id as u8].into(),
                end_key: vec![range_id as u8 + 1].into(),
                replicas: vec![pb::ReplicaDescriptor {
                    node_id: self.node_id,
                    store_id: 1,
                    replica_id: 1,
                    voter: true,
                }],
                generation: 1,
            }),
            raft: Some(pb::RaftState { leader_id: self.node_id, term: 1, ..Default::default() }),
            load: Some(pb::LoadStats {
                queries_per_second: (self.node_id * 10 + range_id) as f64,
                ..Default::default()
            }),
            node_id: self.node_id,
            ..Default::default()
        }
    }
}

#[async_trait::async_trait]
impl NodeClient for FakeNode {
    async fn nodes(&self) -> Result<Vec<pb::NodeEntry>> {
        self.behave().await?;
        Ok(self
            .cluster
            .nodes
            .iter()
            .map(|(node_id, behaviour)| pb::NodeEntry {
                descriptor: Some(pb::NodeDescriptor {
                    node_id: *node_id,
                    address: format!("node{node_id}"),
                    build_tag: "v0.1.0".into(),
                    ..Default::default()
                }),
                liveness: match behaviour {
                    Behaviour::Fails(Error::Unavailable(_)) => pb::Liveness::Dead,
                    _ => pb::Liveness::Live,
                } as i32,
                ..Default::default()
            })
            .collect())
    }

    async fn ranges(&self, request: pb::RangesRequest) -> Result<pb::RangesResponse> {
        self.behave().await?;
        let all = [1, 2, 3];
        let wanted: Vec<u64> =
            all.into_iter().filter(|id| request.range_ids.is_empty() || request.range_ids.contains(id)).collect();
        let limit = if request.limit == 0 { usize::MAX } else { request.limit as usize };
        let page = wanted.iter().skip(request.offset as usize).take(limit).map(|id| self.range(*id)).collect();
        Ok(pb::RangesResponse { node_id: self.node_id, ranges: page, total: wanted.len() as u64 })
    }

    async fn hot_ranges(&self, _request: pb::HotRangesRequest) -> Result<pb::HotRangesResponse> {
        self.behave().await?;
        Ok(pb::HotRangesResponse { node_id: self.node_id, ranges: vec![self.range(self.node_id)] })
    }

    async fn sessions(&self, _request: pb::SessionsRequest) -> Result<pb::SessionsResponse> {
        self.behave().await?;
        Ok(pb::SessionsResponse { node_id: self.node_id, sessions: Vec::new() })
    }

    async fn handshake(&self) -> Result<pb::HandshakeResponse> {
        self.behave().await?;
        Ok(pb::HandshakeResponse {
            node_id: self.node_id,
            ready: self.ready,
            not_ready_reason: if self.ready { String::new() } else { "node is shutting down".into() },
            ..Default::default()
        })
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.behave().await?;
        kv::validate(&ops)?;
        let mut data = self.cluster.data.lock().unwrap();
        let (results, writes) = kv::evaluate(&*data, &ops)?;
        for (key, value) in writes {
            match value {
                Some(value) => data.insert(key, value),
                None => data.remove(&key),
            };
        }
        Ok(results)
    }

    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        // The fake nodes share one copy of the data, so their applied copy is never behind.
        self.behave().await?;
        kv::validate_read_only(&ops)?;
        Ok(kv::evaluate(&*self.cluster.data.lock().unwrap(), &ops)?.0)
    }
}

struct FakeConnector {
    nodes: HashMap<String, Arc<FakeNode>>,
}

impl Connector for FakeConnector {
    fn connect(&self, address: &str) -> Result<Arc<dyn NodeClient>> {
        let node = self.nodes.get(address).ok_or_else(|| Error::Unavailable(format!("cannot dial {address}")))?;
        Ok(node.clone())
    }
}

/// A gateway over fake nodes 1..=n with `behaviours` (node 1 is the local seed).
fn gateway(behaviours: &[Behaviour], insecure: bool, ready: bool) -> axum::Router {
    let cluster = Arc::new(FakeCluster {
        nodes: behaviours.iter().enumerate().map(|(i, b)| (i as u64 + 1, b.clone())).collect(),
        data: Mutex::new(BTreeMap::new()),
    });
    let admin = UserRecord {
        username: "admin".into(),
        is_admin: true,
        can_login: true,
        scram: Some(ScramVerifier::new("secret")),
    };
    let plain = UserRecord { username: "plain".into(), is_admin: false, ..admin.clone() };
    let (_, writes) =
        kv::evaluate(&BTreeMap::new(), &[users::put_op(&admin), users::put_op(&plain)]).expect("user records");
    cluster.data.lock().unwrap().extend(writes.into_iter().filter_map(|(k, v)| Some((k, v?))));
    let nodes = cluster
        .nodes
        .iter()
        .map(|(node_id, behaviour)| {
            let node = FakeNode { node_id: *node_id, behaviour: behaviour.clone(), ready, cluster: cluster.clone() };
            (format!("node{node_id}"), Arc::new(node))
        })
        .collect();
    let seeds = (1..=behaviours.len()).map(|i| format!("node{i}")).collect();
    let client = ClusterClient::new(Arc::new(FakeConnector { nodes }), seeds, Duration::from_secs(2));
    let config = gateway::Config { insecure, ..Default::default() };
    gateway::router(Gateway::new(client, config))
}

async fn call(router: &axum::Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, String) {
    call(router, Method::GET, uri, &[]).await
}

fn json(body: &str) -> Json {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
}

#[tokio::test]
async fn health_answers_200_or_500_and_rejects_bad_ready_values() {
    ranged::install_crypto_provider();
    let up = gateway(&[Behaviour::Up], true, true);
    assert_eq!(get(&up, "/api/v2/health/").await, (StatusCode::OK, "{}".into()));
    assert_eq!(get(&up, "/api/v2/health?ready=true").await.0, StatusCode::OK);
    let (status, body) = get(&up, "/api/v2/health/?ready=maybe").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid ready value\n"));
    let draining = gateway(&[Behaviour::Up], true, false);
    assert_eq!(get(&draining, "/api/v2/health/?ready=1").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let down = gateway(&[Behaviour::Fails(Error::Unavailable("down".into()))], true, true);
    let (status, body) = get(&down, "/api/v2/health/?ready=true").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.starts_with("An internal server error has occurred"), "{body}");
    // Liveness without `ready` needs no node.
    assert_eq!(get(&down, "/api/v2/health/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn nodes_paginate_and_map_node_failures_to_503() {
    let router = gateway(&[Behaviour::Up, Behaviour::Up, Behaviour::Up], true, true);
    let (status, body) = get(&router, "/api/v2/nodes/?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let page = json(&body);
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 2);
    let (_, body) = get(&router, "/api/v2/nodes/?limit=2&offset=2").await;
    let last = json(&body);
    assert_eq!(last["nodes"][0]["node_id"], 3);
    assert!(last.get("next").is_none(), "{body}");
    // Every seed failing "not initialized": the node list cannot be had (503, not 500).
    let uninitialized =
        gateway(&[Behaviour::Fails(Error::FailedPrecondition("node is not initialized".into()))], true, true);
    let (status, body) = get(&uninitialized, "/api/v2/nodes/").await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "node is not initialized\n"));
    // The first seed down, the second answers.
    let first_down = gateway(&[Behaviour::Fails(Error::Unavailable("down".into())), Behaviour::Up], true, true);
    assert_eq!(get(&first_down, "/api/v2/nodes/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn node_ranges_reject_bad_ids_and_report_unknown_or_failed_nodes() {
    let router = gateway(&[Behaviour::Up, Behaviour::Fails(Error::Internal("disk on fire".into()))], true, true);
    let (status, body) = get(&router, "/api/v2/nodes/abc/ranges/").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid node ID\n"));
    let (status, body) = get(&router, "/api/v2/nodes/1/ranges/?ranges=1,x").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid range ID\n"));
    let (status, body) = get(&router, "/api/v2/nodes/9/ranges/").await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "node 9 not found\n"));
    let (status, body) = get(&router, "/api/v2/nodes/2/ranges/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("node 2 is unavailable"), "{body}");
    assert!(!body.contains("disk on fire"), "internals leak: {body}");
    let (status, body) = get(&router, "/api/v2/nodes/local/ranges/?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let page = json(&body);
    assert_eq!(page["ranges"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 2);
}

#[tokio::test(start_paused = true)]
async fn hot_ranges_reject_bad_input_and_report_failed_and_silent_nodes() {
    let router = gateway(
        &[Behaviour::Up, Behaviour::Fails(Error::Unavailable("gone".into())), Behaviour::Hangs, Behaviour::Up],
        true,
        true,
    );
    let (status, body) = get(&router, "/api/v2/ranges/hot/?sort_by=bogus").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid sort_by\n"));
    let (status, body) = get(&router, "/api/v2/ranges/hot/?start=garbage").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid pagination token\n"));
    let (status, body) = get(&router, "/api/v2/ranges/hot/?node_id=x").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid node ID\n"));
    let (status, body) = get(&router, "/api/v2/ranges/hot/").await;
    assert_eq!(status, StatusCode::OK);
    let hot = json(&body);
    // Node 2 is DEAD (answered without dialing), node 3 never answers (cut at the deadline).
    assert_eq!(hot["summary"], serde_json::json!({"total": 4, "successful": 2, "failed": 2}));
    let errors = hot["response_error"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["node_id"] == 2 && e["error_message"].as_str().unwrap().contains("node is dead")));
    assert!(
        errors.iter().any(|e| e["node_id"] == 3 && e["error_message"].as_str().unwrap().contains("no answer within"))
    );
    // Ranked cluster-wide: node 4's range (qps 44) before node 1's (qps 11).
    let ids: Vec<i64> = hot["ranges"].as_array().unwrap().iter().map(|r| r["node_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![4, 1]);
    let (_, body) = get(&router, "/api/v2/ranges/hot/?limit=1").await;
    let first = json(&body);
    let next = first["next"].as_str().expect("a next token while more remain").to_string();
    let (status, body) = get(&router, &format!("/api/v2/ranges/hot/?limit=1&start={next}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["ranges"][0]["node_id"], 1);
    let (_, body) = get(&router, "/api/v2/ranges/hot/?node_id=local").await;
    assert_eq!(json(&body)["summary"]["total"], 1);
}

#[tokio::test]
async fn range_and_sessions_reject_bad_paths_and_tokens() {
    let router = gateway(&[Behaviour::Up, Behaviour::Fails(Error::Unavailable("gone".into()))], true, true);
    assert_eq!(get(&router, "/api/v2/ranges/abc/").await.0, StatusCode::NOT_FOUND);
    let (status, body) = get(&router, "/api/v2/ranges/99999999999999999999/").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid range ID\n"));
    let (status, body) = get(&router, "/api/v2/ranges/2").await;
    assert_eq!(status, StatusCode::OK);
    let range = json(&body);
    assert_eq!(range["summary"]["failed"], 1);
    assert!(range["responses_by_node_id"]["1"]["range_info"].is_object());
    let (status, body) = get(&router, "/api/v2/sessions/?start=bad").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid pagination token\n"));
    let (status, body) = get(&router, "/api/v2/sessions/?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["summary"]["successful"], 1);
}

#[tokio::test]
async fn bad_limits_offsets_flags_ids_and_unknown_keys_are_400s_naming_the_parameter() {
    let router = gateway(&[Behaviour::Up, Behaviour::Up], true, true);
    let limit = "invalid limit: must be an integer from 0 to 2147483647\n";
    let offset = "invalid offset: must be an integer from 0 to 2147483647\n";
    for path in ["/api/v2/nodes/", "/api/v2/nodes/1/ranges/", "/api/v2/ranges/hot/", "/api/v2/sessions/"] {
        for garbage in ["abc", "-1", "100000000000000000000000", "", "2147483648", "1.5"] {
            let (status, body) = get(&router, &format!("{path}?limit={garbage}")).await;
            assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, limit), "{path} limit={garbage}");
        }
        let (status, body) = get(&router, &format!("{path}?limit=0")).await;
        assert_eq!(status, StatusCode::OK, "{path} limit=0 means all: {body}");
        let (status, body) = get(&router, &format!("{path}?limt=1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("unknown field `limt`"), "{path}: {body}");
    }
    for path in ["/api/v2/nodes/", "/api/v2/nodes/1/ranges/"] {
        let (status, body) = get(&router, &format!("{path}?limit=1&offset=-1")).await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, offset), "{path}");
        // Ignored without a limit, as in CockroachDB, but still checked.
        let (status, body) = get(&router, &format!("{path}?offset=x")).await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, offset), "{path}");
        assert_eq!(get(&router, &format!("{path}?offset=1")).await.0, StatusCode::OK, "{path}");
    }
    assert_eq!(get(&router, "/api/v2/health/?ready=").await.0, StatusCode::OK);
    assert_eq!(get(&router, "/api/v2/health/?readyy=1").await.0, StatusCode::BAD_REQUEST);
    let (status, body) = get(&router, "/api/v2/sessions/?exclude_closed_sessions=yes").await;
    let invalid_flag = "invalid exclude_closed_sessions: must be true or false\n";
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, invalid_flag));
    assert_eq!(get(&router, "/api/v2/sessions/?exclude_closed_sessions=false").await.0, StatusCode::OK);
    for node in ["LOCAL", "+1", "0", "%201"] {
        let (status, body) = get(&router, &format!("/api/v2/nodes/{node}/ranges/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid node ID\n"), "{node}");
    }
    // An id too long for any node is a node that does not exist.
    assert_eq!(get(&router, "/api/v2/nodes/18446744073709551615/ranges/").await.0, StatusCode::NOT_FOUND);
    for ranges in ["0", "1,", "1,%202", "%2B1"] {
        let (status, body) = get(&router, &format!("/api/v2/nodes/1/ranges/?ranges={ranges}")).await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid range ID\n"), "{ranges}");
    }
    for token in ["v1.hot.01", "v1.hot.-1", "djE6aG90OjE="] {
        let (status, body) = get(&router, &format!("/api/v2/ranges/hot/?start={token}")).await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "invalid pagination token\n"), "{token}");
    }
    assert_eq!(get(&router, "/api/v2/ranges/hot/?start=v1.hot.1").await.0, StatusCode::OK);
    assert_eq!(get(&router, "/api/v2/ranges/1/?x=1").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(call(&router, Method::POST, "/api/v2/logout/?x=1", &[]).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_missing_range_is_an_empty_map_and_a_path_that_is_no_range_id_404s() {
    let router = gateway(&[Behaviour::Up, Behaviour::Up], true, true);
    let (status, body) = get(&router, "/api/v2/ranges/42/").await;
    assert_eq!(status, StatusCode::OK);
    let range = json(&body);
    assert_eq!(range["responses_by_node_id"], serde_json::json!({}), "as CockroachDB answers: {body}");
    assert_eq!(range["summary"]["successful"], 2);
    assert_eq!(get(&router, "/api/v2/ranges/0/").await.0, StatusCode::OK);
    for path in ["/api/v2/ranges/-1/", "/api/v2/ranges/1x/"] {
        let (status, body) = get(&router, path).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "404 page not found\n"), "{path}");
    }
}

#[tokio::test]
async fn other_methods_on_known_paths_are_405s_with_allow() {
    let router = gateway(&[Behaviour::Up], true, true);
    let answer = |method: Method, uri: &'static str, json: bool| {
        let router = router.clone();
        async move {
            let mut request = Request::builder().method(method).uri(uri);
            if json {
                request = request.header(header::ACCEPT, "application/json");
            }
            let response = router.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            let allow = response.headers().get(header::ALLOW).map(|v| v.to_str().unwrap().to_string());
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, allow, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, allow, body) = answer(Method::POST, "/api/v2/nodes/", false).await;
    assert_eq!((status, body.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    assert_eq!(allow.as_deref(), Some("GET,HEAD"));
    for uri in ["/api/v2/login/", "/api/v2/logout", "/api/v2/login"] {
        let (status, allow, _) = answer(Method::GET, uri, false).await;
        assert_eq!((status, allow.as_deref()), (StatusCode::METHOD_NOT_ALLOWED, Some("POST")), "{uri}");
    }
    let (status, allow, body) = answer(Method::DELETE, "/api/v2/ranges/1/", true).await;
    assert_eq!((status, allow.as_deref()), (StatusCode::METHOD_NOT_ALLOWED, Some("GET,HEAD")));
    assert_eq!(json(&body), serde_json::json!({"error": "method not allowed", "code": 405}));
}

#[tokio::test]
async fn errors_are_plain_text_or_json_on_request_and_unknown_paths_404() {
    let router = gateway(&[Behaviour::Up], true, true);
    let (status, body) = get(&router, "/api/v2/nope").await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "404 page not found\n"));
    let (status, body) =
        call(&router, Method::GET, "/api/v2/ranges/hot/?sort_by=x", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body), serde_json::json!({"error": "invalid sort_by", "code": 400}));
}

#[tokio::test]
async fn login_session_check_admin_check_and_logout() {
    let router = gateway(&[Behaviour::Up], false, true);
    let (status, body) = get(&router, "/api/v2/nodes/").await;
    assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, "invalid session header\n"));
    // A token that does not decode is a failed authentication like any other (CockroachDB: 400).
    let (status, body) = call(&router, Method::GET, "/api/v2/nodes/", &[("x-cockroach-api-session", "!!")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, "invalid session header\n"));
    let (status, body) = call(&router, Method::POST, "/api/v2/logout/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, "invalid or unspecified session\n"));
    let garbage = [("x-cockroach-api-session", "!!")];
    assert_eq!(call(&router, Method::POST, "/api/v2/logout/", &garbage).await.0, StatusCode::UNAUTHORIZED);
    let unknown = ranged::gateway::auth::encode_token(12345, &[1u8; 16]);
    let unknown_header = [("x-cockroach-api-session", unknown.as_str())];
    assert_eq!(call(&router, Method::POST, "/api/v2/logout/", &unknown_header).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&router, "/api/v2/login/").await.0, StatusCode::METHOD_NOT_ALLOWED);
    let form = [(header::CONTENT_TYPE.as_str(), "application/x-www-form-urlencoded")];
    let login = |user: &'static str, password: &'static str| {
        let router = router.clone();
        async move {
            let request = Request::builder()
                .method(Method::POST)
                .uri("/api/v2/login/")
                .header(form[0].0, form[0].1)
                .body(Body::from(format!("username={user}&password={password}")))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let wrong = login("admin", "wrong").await;
    let unknown = login("nobody", "secret").await;
    assert_eq!(wrong, unknown, "no oracle for which users exist");
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    let (status, body) = login("admin", "secret").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("{\"session\":\""), "{body}");
    let token = json(&body)["session"].as_str().unwrap().to_string();
    let header = [("x-cockroach-api-session", token.as_str())];
    assert_eq!(call(&router, Method::GET, "/api/v2/nodes/", &header).await.0, StatusCode::OK);
    let (id, _) = ranged::gateway::auth::decode_token(&token).unwrap();
    let forged = ranged::gateway::auth::encode_token(id, &[7u8; 16]);
    let forged_header = [("x-cockroach-api-session", forged.as_str())];
    assert_eq!(call(&router, Method::GET, "/api/v2/nodes/", &forged_header).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&router, Method::POST, "/api/v2/logout/", &forged_header).await.0, StatusCode::UNAUTHORIZED);
    let (_, plain_body) = login("plain", "secret").await;
    let plain_token = json(&plain_body)["session"].as_str().unwrap().to_string();
    let plain_header = [("x-cockroach-api-session", plain_token.as_str())];
    assert_eq!(call(&router, Method::GET, "/api/v2/nodes/", &plain_header).await.0, StatusCode::FORBIDDEN);
    let (status, body) = call(&router, Method::POST, "/api/v2/logout/", &header).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"logged_out\":true}"));
    assert_eq!(call(&router, Method::GET, "/api/v2/nodes/", &header).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_login_body_over_the_limit_is_413_from_its_length_or_once_read_past_it() {
    let router = gateway(&[Behaviour::Up], false, true);
    let limit = ranged::gateway::MAX_REQUEST_BODY_BYTES;
    // Declared too long: answered without reading the (here empty) body.
    let too_long = (limit + 1).to_string();
    let headers = [("content-length", too_long.as_str()), ("accept", "application/json")];
    let (status, body) = call(&router, Method::POST, "/api/v2/login/", &headers).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["code"], 413, "{body}");
    // No length: the body is read until it crosses the limit.
    let chunks = (0..limit / 65536 + 1).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'a'; 65536])));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v2/login/")
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&String::from_utf8_lossy(&body))["code"], 413);
    // At the limit, the login is judged on its credentials.
    let at_limit = limit.to_string();
    let (status, _) = call(&router, Method::POST, "/api/v2/login/", &[("content-length", at_limit.as_str())]).await;
    assert_ne!(status, StatusCode::PAYLOAD_TOO_LARGE);
}
