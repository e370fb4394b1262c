//! `ranged bench latency`: the one load client used for both sides of a latency comparison
//! (issue #6), so that the client is never the difference. It keeps `--connections` requests
//! in flight for `--duration` against either an HTTP URL (GET, keep-alive HTTP/1.1) or a
//! node's gRPC `StatusService.HotRanges`, and prints `requests p50_ms p99_ms`.

use std::time::{Duration, Instant};

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
}

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
}

/// Runs `connections` closed loops against `target` for `duration`.
pub async fn latency(target: Target, connections: usize, duration: Duration) -> Result<Latency, String> {
    let deadline = Instant::now() + duration;
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
    let requests = all.len() as u64;
    let p50 = crate::services::metrics::percentile(&mut all, 50.0);
    let p99 = crate::services::metrics::percentile(&mut all, 99.0);
    Ok(Latency { requests, errors, p50_ms: p50 as f64 / 1000.0, p99_ms: p99 as f64 / 1000.0 })
}
