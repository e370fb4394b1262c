//! SQL over the PostgreSQL wire protocol. One line per module:
//! - [`value`] — SQL types and values, the order-preserving key encoding of rows.
//! - [`catalog`] — databases and tables, stored in range 1.
//! - [`users`] — users and roles with SCRAM-SHA-256 verifiers.
//! - [`session`] — the registry of client sessions on a node.
//! - [`exec`] — statement execution over the KV layer.
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
pub mod session;
pub mod users;
pub mod value;
pub mod wire;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::services::error::Result;
use crate::services::node::NodeCore;
use crate::services::tls::TlsMaterials;

/// Accepts PostgreSQL connections on `listener` until `shutdown` turns true.
pub fn spawn_server(
    core: Arc<NodeCore>,
    listener: TcpListener,
    tls: Option<&TlsMaterials>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    // PostgreSQL 17 clients negotiating TLS directly offer ALPN "postgresql".
    let acceptor =
        tls.map(|tls| tls.rustls_server(&[b"postgresql"]).map(tokio_rustls::TlsAcceptor::from)).transpose()?;
    let insecure = acceptor.is_none();
    let shared = Arc::new(wire::Shared { engine: exec::SqlEngine::new(core.clone()), insecure });
    let handlers = Arc::new(wire::Handlers::new(shared));
    Ok(crate::services::accept::spawn(listener, shutdown, "sql", move |socket, peer| {
        let (core, handlers, acceptor) = (core.clone(), handlers.clone(), acceptor.clone());
        async move {
            let node_id = core.active().map(|a| a.node_id).unwrap_or(0);
            core.sessions().open(node_id, peer);
            if let Err(err) = conn::serve(socket, acceptor, handlers).await {
                tracing::debug!(error = %err, peer = %peer, "SQL connection ended with an error");
            }
            core.sessions().close(&peer);
        }
    }))
}
