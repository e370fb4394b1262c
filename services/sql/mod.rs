//! SQL over the PostgreSQL wire protocol. One line per module:
//! - [`value`] — SQL types and values, the order-preserving key encoding of rows.
//! - [`catalog`] — databases and tables, stored in range 1.
//! - [`users`] — users and roles with SCRAM-SHA-256 verifiers.
//! - [`session`] — the registry of client sessions on a node.
//! - [`parse`] — statement text to sqlparser's AST, CockroachDB spellings mapped first.
//! - [`limits`] — what one statement may cost: expression depth, memory.
//! - [`stack`] — the large stack deep statements run on, the guard of our recursive walks.
//! - [`expr`] — expression evaluation and the types of expressions and placeholders.
//! - [`plan`] — access planning: point gets or one bounded scan for a WHERE clause.
//! - [`exec`] — statement execution over the KV layer: the engine and statement dispatch.
//! - [`wire`] — pgwire handlers: authentication, simple and extended query protocols.
//! - [`conn`] — one connection's message loop over a socket that coalesces writes.
//! - [`error`] — SQLSTATE errors.
//!
//! [`spawn_server`] accepts connections on `--sql-addr`: TLS with the node certificate in
//! secure mode (SCRAM-SHA-256 password authentication), plaintext and password-less in
//! `--insecure` mode (any existing user with LOGIN, as in CockroachDB).

pub mod catalog;
pub mod conn;
pub mod error;
pub mod exec;
pub mod expr;
pub mod limits;
pub mod parse;
pub mod plan;
pub mod session;
pub mod stack;
pub mod users;
pub mod value;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::services::accept::ListenerLimits;
use crate::services::error::Result;
use crate::services::kv::Kv;
use crate::services::metrics::SqlStats;
use crate::services::scan::{ScanPage, ScanRequest};
use crate::services::status::RangeSummary;
use crate::services::tls::TlsMaterials;

/// The server version clients see (PostgreSQL 13 wire semantics, as CockroachDB reports).
pub const SERVER_VERSION: &str = "13.0.0";

/// What the SQL layer needs from the node it runs on: the KV layer, plus the node's identity,
/// the cluster's ranges (SHOW RANGES, table sizes), its session registry and statement counters. The
/// node implements it; nothing in this module knows the node's type.
#[async_trait::async_trait]
pub trait SqlHost: Kv {
    /// This node's id, `None` until it belongs to a cluster (connections are then refused).
    fn node_id(&self) -> Option<u64>;
    /// Every range of the cluster overlapping `[start, end)`, in key order.
    async fn ranges_in_span(&self, start: &[u8], end: &[u8]) -> Result<Vec<RangeSummary>>;
    /// The SQL sessions of this node.
    fn sessions(&self) -> &session::SessionRegistry;
    /// Statement counters of this node.
    fn sql_stats(&self) -> &SqlStats;
    /// One page of a scan that sees one snapshot from its first page to its last (see
    /// [`crate::services::scan`]).
    async fn scan_page(&self, request: ScanRequest) -> Result<ScanPage>;
}

/// Default `--max-sql-connections` (PostgreSQL's `max_connections` is 100; a pooler in front
/// of several nodes may well hold more).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How the SQL server treats connections and statements.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// Bytes one statement may materialize before it fails with 53200.
    pub statement_memory: u64,
    /// The connection limit and the TLS handshake deadline.
    pub limits: ListenerLimits,
    /// From connecting to authenticated.
    pub startup_timeout: Duration,
}

/// Accepts PostgreSQL connections on `listener` until `shutdown` turns true, running statements
/// on `host` with the node's shared `catalog`, each statement within
/// `settings.statement_memory` bytes. At most `settings.limits.max_connections` are served at
/// once; each must finish its SSL negotiation within `settings.limits.tls_handshake_timeout`
/// and its authentication within `settings.startup_timeout`.
pub fn spawn_server(
    host: Arc<dyn SqlHost>,
    catalog: Arc<catalog::Catalog>,
    listener: TcpListener,
    tls: Option<&TlsMaterials>,
    settings: ServerSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    // PostgreSQL 17 clients negotiating TLS directly offer ALPN "postgresql".
    let acceptor =
        tls.map(|tls| tls.rustls_server(&[b"postgresql"]).map(tokio_rustls::TlsAcceptor::from)).transpose()?;
    let insecure = acceptor.is_none();
    let engine = exec::SqlEngine::new(host.clone(), catalog, settings.statement_memory);
    let shared = Arc::new(wire::Shared { engine, insecure, mock: users::MockVerifiers::new() });
    let handlers = Arc::new(wire::Handlers::new(shared));
    let deadlines =
        conn::Deadlines { tls_handshake: settings.limits.tls_handshake_timeout, startup: settings.startup_timeout };
    let refusal_acceptor = acceptor.clone();
    let serve = move |socket, peer, _slot| {
        let (host, handlers, acceptor) = (host.clone(), handlers.clone(), acceptor.clone());
        async move {
            let node_id = host.node_id().unwrap_or(0);
            host.sessions().open(node_id, peer);
            if let Err(err) = conn::serve(socket, acceptor, handlers, deadlines).await {
                tracing::debug!(error = %err, peer = %peer, "SQL connection ended with an error");
            }
            host.sessions().close(&peer);
        }
    };
    let refuse = move |socket, peer: std::net::SocketAddr| {
        let acceptor = refusal_acceptor.clone();
        async move {
            if let Err(err) = conn::refuse(socket, acceptor, deadlines.tls_handshake).await {
                tracing::debug!(error = %err, peer = %peer, "refusing a SQL connection");
            }
        }
    };
    Ok(crate::services::accept::spawn(listener, shutdown, "sql", settings.limits.max_connections, serve, refuse))
}
