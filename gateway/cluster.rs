//! The cluster client: the only way the gateway reaches nodes, with the fan-out policy in one
//! place. It knows which nodes exist (a node list fetched from the first seed that answers,
//! reused briefly and refreshed in the background), asks them in parallel (at most
//! [`MAX_CONCURRENCY`] at once), bounds each node by the per-node deadline
//! (`--fanout-timeout`, default [`DEFAULT_TIMEOUT`]) and every request by
//! [`REQUEST_DEADLINE`], answers for DEAD nodes at once without dialing, skips DECOMMISSIONED
//! ones, and reports every node's outcome. Single-answer calls (the node list, KV batches for
//! login and the session check) go to the first seed that answers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::gateway::node_client::{Connector, NodeClient};
use crate::pb;
use crate::services::error::{Error, Result};
use crate::services::kv::{Kv, Op, OpResult};
use crate::services::membership::Liveness;

/// Default per-node deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);
/// Most nodes asked at once (CockroachDB: 100 for un-paginated fan-outs).
pub const MAX_CONCURRENCY: usize = 100;
/// How long the gateway waits for one node when it needs a single answer (node list, login).
pub const SINGLE_CALL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long all attempts of a single-answer call may take together.
pub const SINGLE_CALL_DEADLINE: Duration = Duration::from_secs(6);
/// How long a whole request may spend reaching nodes (the node list, then the fan-out), so
/// that every request answers well under 15 s whatever nodes are down.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a fetched node list serves fan-outs as it is: liveness and membership change on a
/// scale of seconds, requests on a scale of milliseconds.
const NODE_LIST_REUSE: Duration = Duration::from_millis(500);
/// Up to this age a list still serves fan-outs while one background task fetches a new one,
/// so that no request waits for the refresh; older lists are fetched inline.
const NODE_LIST_STALE: Duration = Duration::from_secs(3);

/// A node to ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Node id.
    pub node_id: u64,
    /// gRPC address.
    pub address: String,
    /// Liveness as the node list reported it.
    pub liveness: Liveness,
}

/// One node's outcome.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The node.
    pub node_id: u64,
    /// Its answer or CockroachDB-style error text.
    pub result: std::result::Result<T, String>,
}

/// How many of `outcomes` succeeded: (total, successful).
pub fn count_successes<T>(outcomes: &[Outcome<T>]) -> (usize, usize) {
    (outcomes.len(), outcomes.iter().filter(|o| o.result.is_ok()).count())
}

/// A node named in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// The gateway's own node (its first seed).
    Local,
    /// A node id.
    Id(u64),
}

/// The gateway's client of the cluster.
pub struct ClusterClient {
    connector: Arc<dyn Connector>,
    seeds: Vec<String>,
    timeout: Duration,
    node_list: Mutex<Option<(std::time::Instant, Arc<Vec<pb::NodeEntry>>)>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl ClusterClient {
    /// A client asking `seeds` (the gateway's own node first when embedded) for the node list,
    /// reaching nodes through `connector`, giving each node `timeout` per call.
    pub fn new(connector: Arc<dyn Connector>, seeds: Vec<String>, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { connector, seeds, timeout, node_list: Default::default(), refreshing: Default::default() })
    }

    /// The per-node deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls the first seed that answers within [`SINGLE_CALL_TIMEOUT`]; moves on to the next
    /// only when a node cannot serve now (unreachable, not initialized, no leaseholder).
    async fn first_answer<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<dyn NodeClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut last = Error::Unavailable("no node address configured".into());
        let deadline = Instant::now() + SINGLE_CALL_DEADLINE;
        for seed in &self.seeds {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let client = match self.connector.connect(seed) {
                Ok(client) => client,
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            match tokio::time::timeout(SINGLE_CALL_TIMEOUT.min(remaining), call(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err @ (Error::Unavailable(_) | Error::DeadlineExceeded(_) | Error::FailedPrecondition(_)))) => {
                    last = err
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => last = Error::Unavailable(format!("node {seed} did not answer")),
            }
        }
        Err(last)
    }

    /// Every node with its liveness and last status, fetched now from the first seed that
    /// answers.
    pub async fn nodes(&self) -> Result<Vec<pb::NodeEntry>> {
        Ok(self.fetch_nodes().await?.as_ref().clone())
    }

    async fn fetch_nodes(&self) -> Result<Arc<Vec<pb::NodeEntry>>> {
        let nodes = Arc::new(self.first_answer(|client| async move { client.nodes().await }).await?);
        *self.node_list.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// The node list for fan-outs: as it is for [`NODE_LIST_REUSE`], then while one
    /// background task refreshes it until [`NODE_LIST_STALE`], else fetched inline.
    async fn recent_nodes(self: &Arc<Self>) -> Result<Arc<Vec<pb::NodeEntry>>> {
        let cached = self.node_list.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match cached {
            Some((at, nodes)) if at.elapsed() < NODE_LIST_REUSE => Ok(nodes),
            Some((at, nodes)) if at.elapsed() < NODE_LIST_STALE => {
                // One refresh at a time; requests meanwhile keep using the list they have.
                if let Ok(guard) = self.refreshing.clone().try_lock_owned() {
                    let client = self.clone();
                    tokio::spawn(async move {
                        if let Err(err) = client.fetch_nodes().await {
                            tracing::debug!(error = %err, "refreshing the node list");
                        }
                        drop(guard);
                    });
                }
                Ok(nodes)
            }
            _ => self.fetch_nodes().await,
        }
    }

    /// Every node the cluster knows, as fan-out targets.
    pub async fn targets(self: &Arc<Self>) -> Result<Vec<Target>> {
        Ok(self
            .recent_nodes()
            .await?
            .iter()
            .filter_map(|n| {
                let d = n.descriptor.as_ref()?;
                Some(Target {
                    node_id: d.node_id,
                    address: d.address.clone(),
                    liveness: Liveness::from_wire(n.liveness),
                })
            })
            .collect())
    }

    /// The gateway's own node's id (its first seed's).
    pub async fn local_node_id(&self) -> Result<u64> {
        Ok(self.local_handshake().await?.node_id)
    }

    /// Asks the gateway's own node (its first seed) who it is and whether it can serve.
    pub async fn local_handshake(&self) -> Result<pb::HandshakeResponse> {
        let seed = self.seeds.first().ok_or_else(|| Error::Unavailable("no local node".into()))?;
        let client = self.connector.connect(seed)?;
        tokio::time::timeout(self.timeout, client.handshake())
            .await
            .map_err(|_| Error::Unavailable("the local node did not answer".into()))?
    }

    /// The target for `node`, `None` if the cluster does not know it.
    pub async fn target(self: &Arc<Self>, node: NodeRef) -> Result<Option<Target>> {
        let id = match node {
            NodeRef::Id(id) => id,
            NodeRef::Local => self.local_node_id().await?,
        };
        Ok(self.targets().await?.into_iter().find(|t| t.node_id == id))
    }

    /// Asks one node with `call` within the per-node deadline.
    pub async fn call_node<T, F, Fut>(&self, target: &Target, call: F) -> Result<T>
    where
        F: FnOnce(Arc<dyn NodeClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let client = self.connector.connect(&target.address)?;
        tokio::time::timeout(self.timeout, call(client)).await.map_err(|_| {
            Error::Unavailable(format!("node {} did not answer within {:?}", target.node_id, self.timeout))
        })?
    }

    /// Asks every node the cluster knows (but decommissioned ones) with `call`, in parallel;
    /// `what` names the request in error texts ("session list", "hot ranges", ...). Outcomes
    /// come back in node id order. Only `only`, when given, is asked.
    pub async fn fan_out<T, F, Fut>(self: &Arc<Self>, what: &str, only: Option<u64>, call: F) -> Result<Vec<Outcome<T>>>
    where
        F: Fn(Arc<dyn NodeClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut targets = self.targets().await?;
        if let Some(node_id) = only {
            targets.retain(|t| t.node_id == node_id);
        }
        Ok(self.call_all(&targets, what, deadline, call).await)
    }

    /// [`ClusterClient::fan_out`] over given `targets`, all finished by `deadline`.
    pub async fn call_all<T, F, Fut>(
        &self,
        targets: &[Target],
        what: &str,
        deadline: Instant,
        call: F,
    ) -> Vec<Outcome<T>>
    where
        F: Fn(Arc<dyn NodeClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let limiter = tokio::sync::Semaphore::new(MAX_CONCURRENCY);
        let asked = targets.iter().filter(|t| t.liveness != Liveness::Decommissioned);
        let mut outcomes =
            futures::future::join_all(asked.map(|target| self.ask(target, what, deadline, &call, &limiter))).await;
        outcomes.sort_by_key(|o| o.node_id);
        outcomes
    }

    async fn ask<T, F, Fut>(
        &self,
        target: &Target,
        what: &str,
        deadline: Instant,
        call: &F,
        limiter: &tokio::sync::Semaphore,
    ) -> Outcome<T>
    where
        F: Fn(Arc<dyn NodeClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let node_id = target.node_id;
        let status = target.liveness.api_name();
        if target.liveness == Liveness::Dead {
            return Outcome {
                node_id,
                result: Err(format!("failed to dial into node {node_id} ({status}): node is dead")),
            };
        }
        let _permit = limiter.acquire().await;
        let client = match self.connector.connect(&target.address) {
            Ok(client) => client,
            Err(err) => {
                return Outcome {
                    node_id,
                    result: Err(format!("failed to dial into node {node_id} ({status}): {}", err.public_message())),
                };
            }
        };
        let budget = self.timeout.min(deadline.saturating_duration_since(Instant::now()));
        let span = tracing::debug_span!("node", node_id, what);
        let result = match tokio::time::timeout(budget, call(client)).instrument(span).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                Err(format!("error requesting {what} from node {node_id} ({status}): {}", err.public_message()))
            }
            Err(_) => {
                Err(format!("error requesting {what} from node {node_id} ({status}): no answer within {budget:?}"))
            }
        };
        Outcome { node_id, result }
    }
}

/// KV batches through the first seed that answers (login, the session check, logout).
#[async_trait::async_trait]
impl Kv for ClusterClient {
    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.first_answer(|client| {
            let ops = ops.clone();
            async move { client.batch(ops).await }
        })
        .await
    }

    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.first_answer(|client| {
            let ops = ops.clone();
            async move { client.read_applied(ops).await }
        })
        .await
    }

    async fn split(&self, _key: Vec<u8>) -> Result<(u64, u64)> {
        Err(Error::Unsupported("the gateway does not split ranges".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::node_client::GrpcConnector;
    use crate::services::dialer::Dialer;

    #[tokio::test(start_paused = true)]
    async fn dead_nodes_fail_fast_slow_ones_time_out_decommissioned_are_skipped() {
        crate::install_crypto_provider();
        let connector = Arc::new(GrpcConnector::new(Arc::new(Dialer::new(None))));
        let client = ClusterClient::new(connector, Vec::new(), Duration::from_secs(4));
        let target = |node_id, liveness| Target { node_id, address: "127.0.0.1:1".into(), liveness };
        let targets = vec![
            target(2, Liveness::Live),
            target(1, Liveness::Dead),
            target(3, Liveness::Decommissioned),
            target(4, Liveness::Live),
        ];
        let started = Instant::now();
        let outcomes = client
            .call_all(&targets, "test", started + REQUEST_DEADLINE, |_client| async {
                // No live node ever answers: each must be cut off at the per-node deadline.
                std::future::pending::<Result<u8>>().await
            })
            .await;
        assert_eq!(outcomes.iter().map(|o| o.node_id).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert!(outcomes[0].result.as_ref().unwrap_err().contains("NODE_STATUS_DEAD"));
        assert!(outcomes[1].result.as_ref().unwrap_err().contains("no answer within"));
        assert!(started.elapsed() <= Duration::from_secs(4) + Duration::from_millis(10));
        assert_eq!(count_successes(&outcomes), (3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_cuts_the_per_node_deadline_short() {
        crate::install_crypto_provider();
        let connector = Arc::new(GrpcConnector::new(Arc::new(Dialer::new(None))));
        let client = ClusterClient::new(connector, Vec::new(), Duration::from_secs(4));
        let targets = vec![Target { node_id: 1, address: "127.0.0.1:1".into(), liveness: Liveness::Live }];
        let started = Instant::now();
        let outcomes = client
            .call_all(&targets, "test", started + Duration::from_secs(1), |_client| async {
                std::future::pending::<Result<u8>>().await
            })
            .await;
        assert!(outcomes[0].result.as_ref().unwrap_err().contains("no answer within 1s"));
        assert!(started.elapsed() <= Duration::from_secs(1) + Duration::from_millis(10));
    }
}
