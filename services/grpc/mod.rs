//! The gRPC edge of a node: [`spawn_server`] serves the tonic service adapters — each method
//! takes the prost request, converts it to domain types, calls [`NodeCore`], and converts
//! back; errors become `tonic::Status` through the one table in [`crate::services::error`].
//! `convert` holds every pb ⇄ domain conversion (the gateway and the CLI use them too),
//! `status` the StatusService, `internal` the node-to-node services, `incoming` the accepted
//! connections (limit, TLS handshake deadline).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::pb::kv_service_server::KvServiceServer;
use crate::pb::node_service_server::NodeServiceServer;
use crate::pb::raft_service_server::RaftServiceServer;
use crate::pb::status_service_server::StatusServiceServer;
use crate::services::error::Result;
use crate::services::node::NodeCore;
use crate::services::raft::network::MAX_MESSAGE_BYTES;

mod convert;
mod incoming;
mod internal;
mod status;

use internal::{KvApi, NodeApi, RaftApi};
pub use status::StatusApi;

/// How many streams a peer may reset before this server has taken them up, on one
/// connection, before the server ends the connection (GOAWAY). h2's default, 20, guards
/// against the "rapid reset" flood, but one node's Raft groups share one connection to each
/// peer, and a busy node sees many of its peers' heartbeats and votes given up (their
/// deadline is 150–600 ms) before it takes them: at 10,000 ranges the GOAWAY then failed every
/// group's streams at once, and a split in flight with them ("transport error"). Connections
/// are bounded and, with certificates, only nodes of the cluster open them.
const MAX_PENDING_ACCEPT_RESETS: usize = 4096;

/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves every gRPC service of `core` (its StatusService being `status`) on `listener` until
/// `shutdown` resolves; mutual TLS when the node has certificates. The node's
/// `connections` settings give the connection limit, the handshake deadline and the pings.
pub fn spawn_server(
    core: Arc<NodeCore>,
    status: StatusApi,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    let settings = core.config().connections;
    let tls = core.config().tls.as_ref().map(|tls| tls.grpc_server()).transpose()?;
    // A span per call (the method's path), so that what a call logs says which call it was.
    let mut builder = tonic::transport::Server::builder()
        .trace_fn(|request| tracing::debug_span!("grpc", method = %request.uri().path()))
        .http2_keepalive_interval(Some(settings.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS));
    let router = builder
        // Forwarded batches are as large as the writes they carry (up to kv::MAX_BATCH_BYTES).
        .add_service(
            KvServiceServer::new(KvApi(core.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            RaftServiceServer::new(RaftApi(core.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(NodeServiceServer::new(NodeApi(core.clone())))
        .add_service(StatusServiceServer::new(status));
    // The accept loop sets TCP_NODELAY on every connection: an HTTP/2 response is several
    // small writes (headers, data, trailers), and with Nagle's algorithm the later ones wait
    // for the peer's delayed ACK (40 ms), which is what Raft, forwarding and fan-out calls
    // then take.
    let (stop_accepting, accepting) = watch::channel(false);
    let incoming = incoming::incoming(listener, tls, settings.grpc, accepting);
    Ok(tokio::spawn(async move {
        let served = router.serve_with_incoming_shutdown(incoming, shutdown).await;
        let _ = stop_accepting.send(true);
        served
    }))
}
