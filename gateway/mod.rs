//! The REST gateway: CockroachDB's Cluster API (`/api/v2`) over the nodes' StatusService.
//! Every node serves it on `--http-addr`; `ranged gateway` serves it alone in front of a
//! cluster. One module per area:
//! - [`health`] — `GET /health/`;
//! - [`nodes`] — `GET /nodes/`;
//! - [`ranges`] — `GET /nodes/{id}/ranges/`, `GET /ranges/hot/`, `GET /ranges/{id}/`;
//! - [`sessions`] — `GET /sessions/`;
//! - [`auth`] — `POST /login/`, `POST /logout/`, and the session check;
//! - [`cluster`] — the cluster client, the only way to reach nodes, with the fan-out policy
//!   (parallelism, deadlines, per-node errors); [`node_client`] — one node's calls, remote or
//!   in-process;
//! - [`merge`], [`pagination`] — pure merging and pagination (the [`pagination::Limit`] of a
//!   page); [`query`] — the extractor of the handlers' typed queries;
//! - [`dto`] — the response bodies, one module per area, with the conversions from the nodes'
//!   protobuf answers; [`go_json`] — Go `encoding/json` compatibility (floats, base64, times);
//! - [`error`] — the one error type;
//! - [`serve`] — the HTTP server under the router: HTTP/1.1 and HTTP/2, TLS, connection limit
//!   and deadlines;
//! - [`openapi`] — the OpenAPI document generated from the handlers' types.
//!
//! Paths work with and without the trailing slash (CockroachDB 404s without it).

pub mod auth;
pub mod cluster;
pub mod dto;
pub mod error;
pub mod go_json;
pub mod health;
pub mod merge;
pub mod node_client;
pub mod nodes;
pub mod openapi;
pub mod pagination;
pub mod query;
pub mod ranges;
pub mod serve;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::cluster::ClusterClient;

/// The largest request body the API reads (a login form is a few dozen bytes); a larger one
/// is answered 413 before it is read, or as soon as a chunked body crosses it.
pub const MAX_REQUEST_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Default `--web-session-timeout` (CockroachDB's `server.web_session_timeout`: 7 days).
pub const DEFAULT_WEB_SESSION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The gateway's settings (the `--fanout-timeout`, `--web-session-timeout`, `--insecure` and
/// HTTP connection flags of `ranged start` and `ranged gateway`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Treat every request as `root` (the cluster runs with `--insecure`).
    pub insecure: bool,
    /// Per-node deadline of fan-outs.
    pub fanout_timeout: Duration,
    /// Lifetime of login sessions.
    pub web_session_timeout: Duration,
    /// Connection limit and timeouts of the HTTP listener.
    pub http: serve::HttpLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            insecure: false,
            fanout_timeout: cluster::DEFAULT_TIMEOUT,
            web_session_timeout: DEFAULT_WEB_SESSION_TIMEOUT,
            http: serve::HttpLimits::default(),
        }
    }
}

/// What the handlers share: the cluster client and the settings.
pub struct Gateway {
    cluster: Arc<ClusterClient>,
    config: Config,
}

impl Gateway {
    /// A gateway reaching the cluster through `cluster`.
    pub fn new(cluster: Arc<ClusterClient>, config: Config) -> Arc<Self> {
        Arc::new(Self { cluster, config })
    }

    /// The cluster client.
    pub fn cluster(&self) -> &Arc<ClusterClient> {
        &self.cluster
    }
}

/// Serves `handler` at `path` with and without the trailing slash (never a redirect: a
/// redirected POST would turn into a GET).
fn route_with_and_without_slash(
    router: Router<Arc<Gateway>>,
    path: &str,
    handler: MethodRouter<Arc<Gateway>>,
) -> Router<Arc<Gateway>> {
    let bare = path.trim_end_matches('/');
    router.route(&format!("{bare}/"), handler.clone()).route(bare, handler)
}

/// Every route of the API, in one place.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let both = route_with_and_without_slash;
    let mut api = Router::new();
    api = both(api, "/health/", get(health::health_get));
    api = both(api, "/nodes/", get(nodes::nodes_list));
    api = both(api, "/nodes/{node_id}/ranges/", get(ranges::node_ranges_list));
    api = both(api, "/ranges/hot/", get(ranges::hot_ranges_list));
    api = both(api, "/ranges/{range_id}/", get(ranges::range_get));
    api = both(api, "/sessions/", get(sessions::sessions_list));
    api = both(api, "/login/", post(auth::login));
    api = both(api, "/logout/", post(auth::logout));
    api = api.route("/openapi.json", get(openapi::openapi_get));
    Router::new()
        .nest("/api/v2", api)
        .fallback(|| async { error::ApiError::not_found("404 page not found") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        // Inside the JSON-errors layer, so a 405 gets a JSON body too when one is asked for.
        .layer(axum::middleware::from_fn(error::method_not_allowed))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(gateway)
}

/// Answers 413 to a request whose `Content-Length` is over [`MAX_REQUEST_BODY_BYTES`] without
/// touching its body, so a client that sent `Expect: 100-continue` is never told to go on.
async fn refuse_large_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REQUEST_BODY_BYTES as u64) {
        return error::ApiError::payload_too_large().into_response();
    }
    next.run(request).await
}

/// Runs each request in a span (method and path) and logs its status, so that everything
/// logged while serving it says which request it belongs to.
async fn trace_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::debug_span!("http", method = %request.method(), path = %request.uri().path());
    async move {
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await
}

/// Serves the API of `gateway` on `listener` (HTTPS when `tls` is given) until `shutdown`
/// turns true: the node's embedded API and `ranged gateway` both run this.
pub fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let limits = gateway.config.http;
    serve::spawn(listener, router(gateway), tls, limits, shutdown)
}
