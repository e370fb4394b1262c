//! The REST gateway: CockroachDB's Cluster API (`/api/v2`) over the nodes' StatusService.
//! Every node serves it on `--http-addr`; `ranged gateway` serves it alone in front of a
//! cluster. One module per area:
//! - [`health`] — `GET /health/`;
//! - [`nodes`] — `GET /nodes/`;
//! - [`ranges`] — `GET /nodes/{id}/ranges/`, `GET /ranges/hot/`, `GET /ranges/{id}/`;
//! - [`sessions`] — `GET /sessions/`;
//! - [`auth`] — `POST /login/`, `POST /logout/`, and the session check;
//! - [`fanout`] — the fan-out policy (parallelism, deadlines, per-node errors);
//! - [`merge`], [`pagination`] — pure merging and pagination;
//! - [`json`] — the response types; [`error`] — the one error type;
//! - [`openapi`] — the OpenAPI document generated from the handlers' types.
//!
//! Paths work with and without the trailing slash (CockroachDB 404s without it).

pub mod auth;
pub mod error;
pub mod fanout;
pub mod health;
pub mod json;
pub mod merge;
pub mod nodes;
pub mod openapi;
pub mod pagination;
pub mod ranges;
pub mod serve;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, any, get};

use crate::pb;
use crate::services::dialer::Dialer;
use crate::services::error::{Error, Result};
use crate::services::kv::{Op, OpResult};

/// Default `--web-session-timeout` (CockroachDB's `server.web_session_timeout`: 7 days).
pub const DEFAULT_WEB_SESSION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the gateway serves with.
pub struct Gateway {
    /// Nodes to ask for cluster-wide facts, the gateway's own node first when embedded.
    pub seeds: Vec<String>,
    /// Treat every request as `root`.
    pub insecure: bool,
    /// Lifetime of login sessions.
    pub web_session_timeout: Duration,
    /// The fan-out client.
    pub fanout: fanout::FanOut,
    node_list: std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<pb::NodeEntry>>)>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// How long a fetched node list serves fan-outs as it is: liveness and membership change on a
/// scale of seconds, requests on a scale of milliseconds.
const NODE_LIST_REUSE: Duration = Duration::from_millis(500);
/// Up to this age a list still serves fan-outs while one background task fetches a new one,
/// so that no request waits for the refresh; older lists are fetched inline.
const NODE_LIST_STALE: Duration = Duration::from_secs(3);

impl Gateway {
    /// A gateway asking `seeds`, dialing through `dialer`.
    pub fn new(
        seeds: Vec<String>,
        dialer: Arc<Dialer>,
        insecure: bool,
        fanout_timeout: Duration,
        web_session_timeout: Duration,
    ) -> Self {
        Self {
            seeds,
            insecure,
            web_session_timeout,
            fanout: fanout::FanOut::new(dialer, fanout_timeout),
            node_list: Default::default(),
            refreshing: Default::default(),
        }
    }

    /// Runs a KV batch through the first seed that answers.
    pub async fn kv_raw(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut last = Error::Unavailable("no node address configured".into());
        let deadline = tokio::time::Instant::now() + fanout::SINGLE_CALL_DEADLINE;
        for seed in &self.seeds {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let channel = match self.fanout.channel(seed) {
                Ok(channel) => channel,
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            let mut client = pb::kv_service_client::KvServiceClient::new(channel);
            let mut request = tonic::Request::new(pb::BatchRequest {
                ops: ops.iter().cloned().map(Into::into).collect(),
                forwarded: false,
            });
            request.set_timeout(fanout::SINGLE_CALL_TIMEOUT.min(remaining));
            let reply =
                match tokio::time::timeout(fanout::SINGLE_CALL_TIMEOUT.min(remaining), client.batch(request)).await {
                    Ok(reply) => reply,
                    Err(_) => {
                        last = Error::Unavailable(format!("node {seed} did not answer"));
                        continue;
                    }
                };
            match reply {
                Ok(reply) => return Ok(reply.into_inner().results.into_iter().map(Into::into).collect()),
                Err(status) => {
                    let err = Error::from(status);
                    // Only "this node cannot serve now" moves on to the next seed.
                    if !matches!(err, Error::Unavailable(_) | Error::DeadlineExceeded(_) | Error::FailedPrecondition(_))
                    {
                        return Err(err);
                    }
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// [`Gateway::kv_raw`] with errors as HTTP errors.
    pub async fn kv(&self, ops: Vec<Op>) -> std::result::Result<Vec<OpResult>, error::ApiError> {
        self.kv_raw(ops).await.map_err(Into::into)
    }

    /// Every node with its liveness and last status, from the first seed that answers.
    pub async fn nodes(&self) -> Result<Vec<pb::NodeEntry>> {
        Ok(self.fetch_nodes().await?.as_ref().clone())
    }

    async fn fetch_nodes(&self) -> Result<Arc<Vec<pb::NodeEntry>>> {
        let nodes = Arc::new(
            self.fanout
                .first(&self.seeds, |mut client| async move {
                    client.nodes(pb::NodesRequest {}).await.map(|r| r.into_inner().nodes)
                })
                .await?,
        );
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
                    let gateway = self.clone();
                    tokio::spawn(async move {
                        if let Err(err) = gateway.fetch_nodes().await {
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

    /// The fan-out targets: every node the cluster knows.
    pub async fn targets(self: &Arc<Self>) -> Result<Vec<fanout::Target>> {
        Ok(self
            .recent_nodes()
            .await?
            .iter()
            .filter_map(|n| {
                let d = n.descriptor.as_ref()?;
                Some(fanout::Target { node_id: d.node_id, address: d.address.clone(), liveness: n.liveness })
            })
            .collect())
    }
}

/// Serves `handler` at `path` with and without the trailing slash (never a redirect: a
/// redirected POST would turn into a GET).
fn both(router: Router<Arc<Gateway>>, path: &str, handler: MethodRouter<Arc<Gateway>>) -> Router<Arc<Gateway>> {
    let bare = path.trim_end_matches('/');
    router.route(&format!("{bare}/"), handler.clone()).route(bare, handler)
}

/// Every route of the API, in one place.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut api = Router::new();
    api = both(api, "/health/", get(health::health_get));
    api = both(api, "/nodes/", get(nodes::nodes_list));
    api = both(api, "/nodes/{node_id}/ranges/", get(ranges::node_ranges_list));
    api = both(api, "/ranges/hot/", get(ranges::hot_ranges_list));
    api = both(api, "/ranges/{range_id}/", get(ranges::range_get));
    api = both(api, "/sessions/", get(sessions::sessions_list));
    api = both(api, "/login/", any(auth::login));
    api = both(api, "/logout/", any(auth::logout));
    api = api.route("/openapi.json", get(openapi::openapi_get));
    Router::new()
        .nest("/api/v2", api)
        .fallback(|| async { error::ApiError::not_found("404 page not found") })
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(gateway)
}
