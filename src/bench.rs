//! `ranged bench`: the benchmark tools `bench/run` drives (see BENCHMARKS.md).
//!
//! - [`latency`] is the one closed-loop load client used for both sides of a comparison, so
//!   that the client is never the difference: `--connections` loops, each on its own
//!   connection, for `--duration`, against an HTTP URL (GET, keep-alive HTTP/1.1), a node's
//!   gRPC `StatusService.HotRanges`, a prepared `UPSERT` over PostgreSQL wire, or etcd's gRPC
//!   `KV.Put`. It prints `requests errors p50_ms p99_ms ops_per_s`.
//! - [`fanout`] starts `--nodes` real nodes in this process on loopback and measures the
//!   embedded gateway's cluster-wide fan-out over them (comparison 3).
//! - [`hot_ranges`] starts three real nodes in this process, splits the keyspace into
//!   `--ranges` ranges, loads every one of them, and measures `/ranges/hot/?limit=10`
//!   (comparison 4).

use std::time::{Duration, Instant};

use crate::local_cluster::{Listen, LocalCluster, LocalClusterOptions};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::pb;
use crate::services::dialer::Dialer;

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
        let splits = futures::stream::iter(1..ranges)
            .map(|i| {
                let core = core.clone();
                async move { core.split(hot_key(i), false).await.map_err(|e| format!("split {i}: {e}")) }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        splits.into_iter().collect::<Result<Vec<_>, _>>()?;
        let reads = futures::stream::iter((0..ranges).flat_map(|i| std::iter::repeat_n(i, 1 + i % 10)))
            .map(|i| {
                let core = core.clone();
                async move {
                    let mut key = hot_key(i);
                    key.extend_from_slice(b"/row");
                    core.kv_batch(vec![crate::services::kv::Op::Get { key }], false)
                        .await
                        .map_err(|e| format!("read in range {i}: {e}"))
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        reads.into_iter().collect::<Result<Vec<_>, _>>()?;
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
