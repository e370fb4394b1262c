//! `ranged bench`: the benchmark tools `bench/run` drives (see BENCHMARKS.md).
//!
//! - [`latency`] is the one closed-loop load client used for both sides of a comparison, so
//!   that the client is never the difference: `--connections` loops, each on its own
//!   connection, for `--duration`, against an HTTP URL (GET, keep-alive HTTP/1.1), a node's
//!   gRPC `StatusService.HotRanges`, a prepared `UPSERT` over PostgreSQL wire, or etcd's gRPC
//!   `KV.Put`. It prints `requests errors p50_ms p99_ms ops_per_s`.
//! - [`fanout`] starts `--nodes` real nodes in this process on loopback and measures the
//!   embedded gateway's cluster-wide fan-out over them (comparison 3).
//! - [`fanout_endpoints`] measures the same fan-out over `--endpoints` StatusService
//!   endpoints in one process: `--nodes` real nodes, the rest empty status servers that are
//!   not nodes (comparison 3 at 1,000 endpoints).
//! - [`hot_ranges`] starts three real nodes in this process, splits the keyspace into
//!   `--ranges` ranges, loads every one of them, and measures `/ranges/hot/?limit=10`
//!   (comparison 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::local_cluster::{Listen, LocalCluster, LocalClusterOptions};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::gateway::cluster::ClusterClient;
use crate::gateway::node_client::{Connector, GrpcConnector, NodeClient};
use crate::pb;
use crate::pb::status_service_server::{StatusService, StatusServiceServer};
use crate::services::dialer::Dialer;
use crate::services::kv::{Op, OpResult};
use crate::services::membership::Liveness;

/// What to load.
#[derive(Debug, Clone)]
pub enum Target {
    /// GET this URL.
    Http(String),
    /// `StatusService.HotRanges(limit)` on this node address.
    GrpcHotRanges { address: String, limit: u32 },
    /// `UPSERT INTO bench_kv (k, v) VALUES ($1, $2)` (prepared) over PostgreSQL wire at this
    /// URL, with uniformly random keys below `keys` and [`VALUE_BYTES`]-byte values.
    PgUpsert { url: String, keys: u64 },
    /// etcd `KV.Put` at this `host:port`, same keys and values as [`Target::PgUpsert`].
    EtcdPut { address: String, keys: u64 },
}

/// Size of the values written by [`Target::PgUpsert`] and [`Target::EtcdPut`].
pub const VALUE_BYTES: usize = 64;

/// The table [`Target::PgUpsert`] writes (created if missing).
pub const UPSERT_TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_kv (k INT PRIMARY KEY, v BYTES)";

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Completed requests per second of the run.
    pub ops_per_s: f64,
}

/// Runs `connections` closed loops against `target` for `duration`.
pub async fn latency(target: Target, connections: usize, duration: Duration) -> Result<Latency, String> {
    if let Target::PgUpsert { url, .. } = &target {
        crate::workload::connect(url).await?.batch_execute(UPSERT_TABLE).await.map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut errors = 0u64;
            match target {
                Target::Http(url) => {
                    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
                    // One client per loop: its pool holds the loop's one keep-alive connection.
                    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let request = hyper::Request::get(uri.clone()).body(Empty::new()).map_err(|e| e.to_string())?;
                        match client.request(request).await {
                            Ok(response) if response.status().is_success() => {
                                let _ = response.into_body().collect().await;
                                micros.push(started.elapsed().as_micros() as u64);
                            }
                            _ => errors += 1,
                        }
                    }
                }
                Target::PgUpsert { url, keys } => {
                    let client = crate::workload::connect(&url).await?;
                    let statement = client
                        .prepare("UPSERT INTO bench_kv (k, v) VALUES ($1, $2)")
                        .await
                        .map_err(|e| format!("preparing the UPSERT: {e}"))?;
                    let value = vec![b'v'; VALUE_BYTES];
                    while Instant::now() < deadline {
                        let key = rand::random_range(0..keys.max(1)) as i64;
                        let started = Instant::now();
                        match client.execute(&statement, &[&key, &value]).await {
                            Ok(_) => micros.push(started.elapsed().as_micros() as u64),
                            Err(err) if client.is_closed() => return Err(format!("connection lost: {err}")),
                            Err(_) => errors += 1,
                        }
                    }
                }
                Target::EtcdPut { address, keys } => {
                    let channel = Dialer::new(None).endpoint(&address).map_err(|e| e.to_string())?.connect_lazy();
                    let mut client = crate::etcdpb::kv_client::KvClient::new(channel);
                    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
                    while Instant::now() < deadline {
                        let key = Bytes::from(format!("bench_kv/{:019}", rand::random_range(0..keys.max(1))));
                        let started = Instant::now();
                        match client.put(crate::etcdpb::PutRequest { key, value: value.clone() }).await {
                            Ok(_) => micros.push(started.elapsed().as_micros() as u64),
                            Err(_) => errors += 1,
                        }
                    }
                }
                Target::GrpcHotRanges { address, limit } => {
                    let channel = Dialer::new(None).endpoint(&address).map_err(|e| e.to_string())?.connect_lazy();
                    let mut client = pb::status_service_client::StatusServiceClient::new(channel);
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        match client.hot_ranges(pb::HotRangesRequest { limit, sort_by: 0 }).await {
                            Ok(_) => micros.push(started.elapsed().as_micros() as u64),
                            Err(_) => errors += 1,
                        }
                    }
                }
            }
            Ok::<_, String>((micros, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (micros, failed) = task.await.map_err(|e| e.to_string())??;
        all.extend(micros);
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = all.len() as u64;
    let p50 = crate::services::metrics::percentile(&mut all, 50.0);
    let p99 = crate::services::metrics::percentile(&mut all, 99.0);
    Ok(Latency {
        requests,
        errors,
        p50_ms: p50 as f64 / 1000.0,
        p99_ms: p99 as f64 / 1000.0,
        ops_per_s: requests as f64 / elapsed.max(f64::EPSILON),
    })
}

/// One measured path of an in-process harness.
#[derive(Debug, Clone, PartialEq)]
pub struct PathLatency {
    /// The path asked, under `/api/v2`.
    pub path: String,
    /// The closed-loop result.
    pub latency: Latency,
}

/// Starts `count` insecure nodes in this process on loopback under `dir` (HTTP API on the
/// first only, every node joining through the first three), initializes the cluster and waits
/// until every node is a Raft member and LIVE. Returns the cluster and the first node's HTTP
/// address.
pub async fn start_in_process(
    count: usize,
    dir: &std::path::Path,
    ready_timeout: Duration,
) -> Result<(LocalCluster, std::net::SocketAddr), String> {
    let options = LocalClusterOptions {
        sql: Listen::Nowhere,
        http: Listen::FirstNodeOnly,
        ..LocalClusterOptions::new(count, dir)
    };
    let cluster = LocalCluster::start(&options).await.map_err(|e| e.to_string())?;
    let http = cluster.http_addrs[0].ok_or("the first node serves no HTTP API")?;
    let ready = async {
        cluster.init().await?;
        cluster.wait_ready(ready_timeout).await
    };
    if let Err(err) = ready.await {
        cluster.stop().await;
        return Err(err.to_string());
    }
    Ok((cluster, http))
}

/// Comparison 3: `nodes` real nodes in this process; closed-loop latency of the embedded
/// gateway's fan-outs (`/sessions/` asks every node for its sessions, `/ranges/hot/` for its
/// hottest ranges) with `connections` requests in flight for `duration` each.
pub async fn fanout(nodes: usize, connections: usize, duration: Duration) -> Result<Vec<PathLatency>, String> {
    let dir = tempfile::Builder::new().prefix("ranged-bench-fanout-").tempdir().map_err(|e| e.to_string())?;
    let ready = Duration::from_secs(60) + Duration::from_millis(500) * nodes as u32;
    let (cluster, http) = start_in_process(nodes, dir.path(), ready).await?;
    let mut out = Vec::new();
    for path in ["/sessions/", "/ranges/hot/?limit=10"] {
        let latency = latency(Target::Http(format!("http://{http}/api/v2{path}")), connections, duration).await;
        match latency {
            Ok(latency) => out.push(PathLatency { path: path.to_string(), latency }),
            Err(err) => {
                cluster.stop().await;
                return Err(err);
            }
        }
    }
    cluster.stop().await;
    Ok(out)
}

/// Comparison 3 at more endpoints than nodes can run in one process: `nodes` real nodes (a
/// [`LocalCluster`]) plus `endpoints - nodes` **empty StatusService servers, which are not
/// nodes**: each is a tonic server on its own loopback port with its own node id that holds
/// no ranges, leases or sessions, so it answers Ranges, HotRanges and Sessions with empty
/// lists (what an endpoint holding nothing answers) and is never asked for Nodes. A thousand
/// real nodes cannot run here: one Raft group would replicate to 999 learners.
///
/// The gateway under test is a real [`ClusterClient`] and [`crate::gateway::router`] served on
/// a loopback port, reaching every endpoint (the real nodes included) over gRPC. Its node
/// list is the first node's real list plus one LIVE entry per empty endpoint. Before
/// measuring, each path is checked to have asked every endpoint and heard from all of them.
pub async fn fanout_endpoints(
    nodes: usize,
    endpoints: usize,
    connections: usize,
    duration: Duration,
) -> Result<Vec<PathLatency>, String> {
    if nodes == 0 || endpoints < nodes {
        return Err(format!(
            "need at least one node and at least as many endpoints as nodes ({nodes} nodes, {endpoints} endpoints)"
        ));
    }
    let dir = tempfile::Builder::new().prefix("ranged-bench-endpoints-").tempdir().map_err(|e| e.to_string())?;
    let options = LocalClusterOptions {
        sql: Listen::Nowhere,
        http: Listen::Nowhere,
        ..LocalClusterOptions::new(nodes, dir.path())
    };
    let cluster = LocalCluster::start(&options).await.map_err(|e| e.to_string())?;
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    let result = async {
        cluster.init().await.map_err(|e| e.to_string())?;
        cluster
            .wait_ready(Duration::from_secs(60) + Duration::from_millis(500) * nodes as u32)
            .await
            .map_err(|e| e.to_string())?;
        let real = cluster.nodes[0].core().nodes().await.map_err(|e| e.to_string())?;
        let first_id = real.iter().map(|n| n.descriptor.node_id).max().unwrap_or(0) + 1;
        let mut extra = Vec::with_capacity(endpoints - nodes);
        for node_id in first_id..first_id + (endpoints - nodes) as u64 {
            let (address, server) = spawn_empty_status(node_id, stopped.clone()).await?;
            servers.push(server);
            extra.push(pb::NodeEntry {
                descriptor: Some(pb::NodeDescriptor { node_id, address, ..Default::default() }),
                liveness: Liveness::Live as i32,
                ..Default::default()
            });
        }
        let seed = cluster.nodes[0].listen_addr().to_string();
        let connector = EndpointsConnector {
            grpc: GrpcConnector::new(Arc::new(Dialer::new(None))),
            seed: seed.clone(),
            extra: Arc::new(extra),
        };
        let client = ClusterClient::new(Arc::new(connector), vec![seed], crate::gateway::cluster::DEFAULT_TIMEOUT);
        let config = crate::gateway::Config { insecure: true, ..Default::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let http = listener.local_addr().map_err(|e| e.to_string())?;
        servers.push(crate::gateway::run(
            listener,
            crate::gateway::Gateway::new(client, config),
            None,
            stopped.clone(),
        ));
        let mut out = Vec::new();
        for path in ["/sessions/", "/ranges/hot/?limit=10"] {
            let url = format!("http://{http}/api/v2{path}");
            // The measured answer must be the real one: every endpoint asked, every one answered.
            let body = get_json(&url).await?;
            let summary = &body["summary"];
            if summary["total"].as_u64() != Some(endpoints as u64)
                || summary["successful"].as_u64() != Some(endpoints as u64)
            {
                return Err(format!("{path} did not hear from all {endpoints} endpoints: {summary}"));
            }
            let latency = latency(Target::Http(url), connections, duration).await?;
            out.push(PathLatency { path: path.to_string(), latency });
        }
        Ok(out)
    }
    .await;
    let _ = stop.send(true);
    for server in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    cluster.stop().await;
    result
}

/// Starts an empty StatusService server (see [`fanout_endpoints`]) for `node_id` on a loopback
/// port; returns its address.
async fn spawn_empty_status(
    node_id: u64,
    mut stopped: watch::Receiver<bool>,
) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    use tokio_stream::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for an empty status endpoint: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    // TCP_NODELAY as the nodes' own gRPC server sets it: the comparison is of the fan-out, not
    // of Nagle's algorithm.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|socket| {
            let _ = socket.set_nodelay(true);
        })
    });
    let server = tonic::transport::Server::builder().add_service(StatusServiceServer::new(EmptyStatus { node_id }));
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(err) = server.serve_with_incoming_shutdown(incoming, shutdown).await {
            tracing::error!(node_id, error = %err, "empty status endpoint failed");
        }
    });
    Ok((address, handle))
}

/// The StatusService of an endpoint that holds no ranges, leases or sessions.
struct EmptyStatus {
    node_id: u64,
}

#[tonic::async_trait]
impl StatusService for EmptyStatus {
    async fn nodes(&self, _: Request<pb::NodesRequest>) -> Result<Response<pb::NodesResponse>, Status> {
        Err(Status::unimplemented("an empty status endpoint keeps no node list"))
    }

    async fn ranges(&self, _: Request<pb::RangesRequest>) -> Result<Response<pb::RangesResponse>, Status> {
        Ok(Response::new(pb::RangesResponse { node_id: self.node_id, ranges: Vec::new(), total: 0 }))
    }

    async fn hot_ranges(&self, _: Request<pb::HotRangesRequest>) -> Result<Response<pb::HotRangesResponse>, Status> {
        Ok(Response::new(pb::HotRangesResponse { node_id: self.node_id, ranges: Vec::new() }))
    }

    async fn sessions(&self, _: Request<pb::SessionsRequest>) -> Result<Response<pb::SessionsResponse>, Status> {
        Ok(Response::new(pb::SessionsResponse { node_id: self.node_id, sessions: Vec::new() }))
    }
}

/// Every endpoint over gRPC; the seed's node list gets one LIVE entry per empty endpoint, so
/// that the gateway fans out over all of them.
struct EndpointsConnector {
    grpc: GrpcConnector,
    seed: String,
    extra: Arc<Vec<pb::NodeEntry>>,
}

impl Connector for EndpointsConnector {
    fn connect(&self, address: &str) -> crate::services::error::Result<Arc<dyn NodeClient>> {
        let client = self.grpc.connect(address)?;
        if address != self.seed {
            return Ok(client);
        }
        Ok(Arc::new(SeedWithEndpoints { inner: client, extra: self.extra.clone() }))
    }
}

/// The seed node, whose node list also names the empty endpoints.
struct SeedWithEndpoints {
    inner: Arc<dyn NodeClient>,
    extra: Arc<Vec<pb::NodeEntry>>,
}

#[async_trait::async_trait]
impl NodeClient for SeedWithEndpoints {
    async fn nodes(&self) -> crate::services::error::Result<Vec<pb::NodeEntry>> {
        let mut nodes = self.inner.nodes().await?;
        nodes.extend(self.extra.iter().cloned());
        Ok(nodes)
    }

    async fn ranges(&self, request: pb::RangesRequest) -> crate::services::error::Result<pb::RangesResponse> {
        self.inner.ranges(request).await
    }

    async fn hot_ranges(&self, request: pb::HotRangesRequest) -> crate::services::error::Result<pb::HotRangesResponse> {
        self.inner.hot_ranges(request).await
    }

    async fn sessions(&self, request: pb::SessionsRequest) -> crate::services::error::Result<pb::SessionsResponse> {
        self.inner.sessions(request).await
    }

    async fn handshake(&self) -> crate::services::error::Result<pb::HandshakeResponse> {
        self.inner.handshake().await
    }

    async fn batch(&self, ops: Vec<Op>) -> crate::services::error::Result<Vec<OpResult>> {
        self.inner.batch(ops).await
    }

    async fn read_applied(&self, ops: Vec<Op>) -> crate::services::error::Result<Vec<OpResult>> {
        self.inner.read_applied(ops).await
    }
}

/// The user key of the `i`th range of [`hot_ranges`].
fn hot_key(i: usize) -> Vec<u8> {
    format!("bench/hot/{i:06}").into_bytes()
}

/// Comparison 4: three real nodes in this process, the user keyspace split into `ranges`
/// ranges, every range read (range `i` gets `1 + i % 10` reads, so the top ten is a real
/// choice among thousands of loaded ranges), then closed-loop latency of
/// `/ranges/hot/?limit=10` with `connections` in flight for `duration`.
pub async fn hot_ranges(ranges: usize, connections: usize, duration: Duration) -> Result<PathLatency, String> {
    use futures::StreamExt;
    let dir = tempfile::Builder::new().prefix("ranged-bench-hot-").tempdir().map_err(|e| e.to_string())?;
    let (cluster, http) = start_in_process(3, dir.path(), Duration::from_secs(60)).await?;
    let core = cluster.nodes[0].core().clone();
    let result = async {
        let started = std::time::Instant::now();
        // Highest key first: each split then leaves the keys still to split in the left-hand
        // range, so the splits in flight all go to one group, and Raft appends and applies
        // them together. In ascending order each split moves the next keys to the new range,
        // and the splits in flight behind it fail with "range key mismatch" and back off.
        let splits = futures::stream::iter((1..ranges).rev())
            .map(|i| {
                let core = core.clone();
                async move { core.split(hot_key(i), false).await.map_err(|e| format!("split {i}: {e}")) }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        splits.into_iter().collect::<Result<Vec<_>, _>>()?;
        eprintln!("{ranges} ranges made in {:.1} s", started.elapsed().as_secs_f64());
        let reading = std::time::Instant::now();
        let reads = futures::stream::iter((0..ranges).flat_map(|i| std::iter::repeat_n(i, 1 + i % 10)))
            .map(|i| {
                let core = core.clone();
                async move {
                    let mut key = hot_key(i);
                    key.extend_from_slice(b"/row");
                    core.kv_batch(vec![crate::services::kv::Op::Get { key }], None)
                        .await
                        .map_err(|e| format!("read in range {i}: {e}"))
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        reads.into_iter().collect::<Result<Vec<_>, _>>()?;
        eprintln!("every range read in {:.1} s", reading.elapsed().as_secs_f64());
        let path = "/ranges/hot/?limit=10";
        let url = format!("http://{http}/api/v2{path}");
        // The measured answer must be the real one: ten ranges, the first of them loaded.
        let body = get_json(&url).await?;
        let listed = body["ranges"].as_array().map(Vec::len).unwrap_or(0);
        let top_qps = body["ranges"][0]["qps"].as_f64().unwrap_or(0.0);
        if listed != 10.min(ranges) || top_qps <= 0.0 {
            return Err(format!("unexpected hot ranges answer ({listed} ranges, top qps {top_qps}): {body}"));
        }
        let latency = latency(Target::Http(url), connections, duration).await?;
        // Said before the nodes stop: stopping a node that holds thousands of leases hands
        // them away one by one and can take minutes.
        eprintln!(
            "{path}: p50 {:.3} ms, p99 {:.3} ms, {:.1} req/s; stopping the nodes",
            latency.p50_ms, latency.p99_ms, latency.ops_per_s
        );
        Ok(PathLatency { path: path.to_string(), latency })
    }
    .await;
    cluster.stop().await;
    result
}

async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let response = client.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
}
