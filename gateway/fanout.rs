//! The fan-out policy, in one place: which nodes a cluster-wide request asks, how (in parallel,
//! at most [`MAX_CONCURRENCY`] at once, over the pooled channels of the dialer), how long each
//! may take (`--fanout-timeout`, default [`DEFAULT_TIMEOUT`]), and how every node's outcome is
//! reported. Nodes known DEAD are answered at once with an error, without dialing;
//! DECOMMISSIONED nodes are not asked. Nothing else in the gateway dials nodes ad hoc.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use crate::gateway::json::FanOutSummary;
use crate::pb;
use crate::pb::status_service_client::StatusServiceClient;
use crate::services::dialer::Dialer;
use crate::services::error::{Error, Result};

/// Default per-node deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);
/// Most nodes asked at once (CockroachDB: 100 for un-paginated fan-outs).
pub const MAX_CONCURRENCY: usize = 100;
/// How long the gateway waits for one node when it needs a single answer (node list, login).
pub const SINGLE_CALL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long all attempts of a single-answer call may take together, so that every request
/// answers well under 15 s whatever nodes are down.
pub const SINGLE_CALL_DEADLINE: Duration = Duration::from_secs(6);

/// A node to ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Node id.
    pub node_id: u64,
    /// gRPC address.
    pub address: String,
    /// Liveness (`pb::Liveness` as i32).
    pub liveness: i32,
}

/// One node's outcome.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The node.
    pub node_id: u64,
    /// Its answer or CockroachDB-style error text.
    pub result: std::result::Result<T, String>,
}

/// CockroachDB's liveness names, used in error texts.
pub fn liveness_name(liveness: i32) -> &'static str {
    match pb::Liveness::try_from(liveness).unwrap_or(pb::Liveness::Unknown) {
        pb::Liveness::Unknown => "NODE_STATUS_UNKNOWN",
        pb::Liveness::Dead => "NODE_STATUS_DEAD",
        pb::Liveness::Unavailable => "NODE_STATUS_UNAVAILABLE",
        pb::Liveness::Live => "NODE_STATUS_LIVE",
        pb::Liveness::Decommissioning => "NODE_STATUS_DECOMMISSIONING",
        pb::Liveness::Decommissioned => "NODE_STATUS_DECOMMISSIONED",
        pb::Liveness::Draining => "NODE_STATUS_DRAINING",
    }
}

/// Counts outcomes.
pub fn summarize<T>(outcomes: &[Outcome<T>]) -> FanOutSummary {
    let successful = outcomes.iter().filter(|o| o.result.is_ok()).count() as u32;
    FanOutSummary { total: outcomes.len() as u32, successful, failed: outcomes.len() as u32 - successful }
}

/// The fan-out client.
pub struct FanOut {
    dialer: Arc<Dialer>,
    timeout: Duration,
}

impl FanOut {
    /// A fan-out over `dialer` with a per-node deadline of `timeout`.
    pub fn new(dialer: Arc<Dialer>, timeout: Duration) -> Self {
        Self { dialer, timeout }
    }

    /// The per-node deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A StatusService client for `address` (pooled channel).
    pub fn client(&self, address: &str) -> Result<StatusServiceClient<Channel>> {
        Ok(StatusServiceClient::new(self.dialer.channel(address)?))
    }

    /// The pooled channel to `address`.
    pub fn channel(&self, address: &str) -> Result<Channel> {
        self.dialer.channel(address)
    }

    /// Asks every target (but decommissioned ones) with `call`, in parallel; `what` names the
    /// request in error texts ("session list", "hot ranges", ...). Outcomes come back in node
    /// id order.
    pub async fn call<T, F, Fut>(&self, targets: &[Target], what: &str, call: F) -> Vec<Outcome<T>>
    where
        F: Fn(StatusServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let limiter = tokio::sync::Semaphore::new(MAX_CONCURRENCY);
        let asked = targets.iter().filter(|t| t.liveness != pb::Liveness::Decommissioned as i32);
        let mut outcomes = futures::future::join_all(asked.map(|target| self.one(target, what, &call, &limiter))).await;
        outcomes.sort_by_key(|o| o.node_id);
        outcomes
    }

    async fn one<T, F, Fut>(
        &self,
        target: &Target,
        what: &str,
        call: &F,
        limiter: &tokio::sync::Semaphore,
    ) -> Outcome<T>
    where
        F: Fn(StatusServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let node_id = target.node_id;
        let status = liveness_name(target.liveness);
        if target.liveness == pb::Liveness::Dead as i32 {
            return Outcome {
                node_id,
                result: Err(format!("failed to dial into node {node_id} ({status}): node is dead")),
            };
        }
        let _permit = limiter.acquire().await;
        let client = match self.client(&target.address) {
            Ok(client) => client,
            Err(err) => {
                return Outcome {
                    node_id,
                    result: Err(format!("failed to dial into node {node_id} ({status}): {err}")),
                };
            }
        };
        let result = match tokio::time::timeout(self.timeout, call(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(format!("error requesting {what} from node {node_id} ({status}): {}", err.message())),
            Err(_) => Err(format!(
                "error requesting {what} from node {node_id} ({status}): no answer within {:?}",
                self.timeout
            )),
        };
        Outcome { node_id, result }
    }

    /// Calls the first of `addresses` that answers within [`SINGLE_CALL_TIMEOUT`].
    pub async fn first<T, F, Fut>(&self, addresses: &[String], call: F) -> Result<T>
    where
        F: Fn(StatusServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut last = Error::Unavailable("no node address configured".into());
        let deadline = tokio::time::Instant::now() + SINGLE_CALL_DEADLINE;
        for address in addresses {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let client = match self.client(address) {
                Ok(client) => client,
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            match tokio::time::timeout(SINGLE_CALL_TIMEOUT.min(remaining), call(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) => last = Error::from(status),
                Err(_) => last = Error::Unavailable(format!("node {address} did not answer")),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dead_nodes_fail_fast_slow_ones_time_out_decommissioned_are_skipped() {
        crate::install_crypto_provider();
        let fanout = FanOut::new(Arc::new(Dialer::new(None)), Duration::from_secs(4));
        let targets = vec![
            Target { node_id: 2, address: "127.0.0.1:1".into(), liveness: pb::Liveness::Live as i32 },
            Target { node_id: 1, address: "127.0.0.1:1".into(), liveness: pb::Liveness::Dead as i32 },
            Target { node_id: 3, address: "127.0.0.1:1".into(), liveness: pb::Liveness::Decommissioned as i32 },
            Target { node_id: 4, address: "127.0.0.1:1".into(), liveness: pb::Liveness::Live as i32 },
        ];
        let started = tokio::time::Instant::now();
        let outcomes = fanout
            .call(&targets, "test", |_client| async {
                // No live node ever answers: each must be cut off at the per-node deadline.
                std::future::pending::<std::result::Result<u8, tonic::Status>>().await
            })
            .await;
        assert_eq!(outcomes.iter().map(|o| o.node_id).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert!(outcomes[0].result.as_ref().unwrap_err().contains("NODE_STATUS_DEAD"));
        assert!(outcomes[1].result.as_ref().unwrap_err().contains("no answer within"));
        assert!(started.elapsed() <= Duration::from_secs(4) + Duration::from_millis(10));
        assert_eq!(summarize(&outcomes), FanOutSummary { total: 3, successful: 0, failed: 3 });
    }
}
