//! The gRPC edge of a node: [`spawn_server`] serves the tonic service adapters — each method
//! takes the prost request, converts it to domain types, calls [`NodeCore`], and converts
//! back; errors become `tonic::Status` through the one table in [`crate::services::error`].
//! `convert` holds every pb ⇄ domain conversion (the gateway and the CLI use them too),
//! `status` the StatusService, `internal` the node-to-node services.

use std::future::Future;
use std::sync::Arc;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::pb::kv_service_server::KvServiceServer;
use crate::pb::node_service_server::NodeServiceServer;
use crate::pb::raft_service_server::RaftServiceServer;
use crate::pb::status_service_server::StatusServiceServer;
use crate::services::error::{Error, Result};
use crate::services::node::NodeCore;
use crate::services::raft::network::MAX_MESSAGE_BYTES;

mod convert;
mod internal;
mod status;

use internal::{KvApi, NodeApi, RaftApi};
pub use status::StatusApi;

/// Serves every gRPC service of `core` (its StatusService being `status`) on `listener` until `shutdown` resolves; mutual TLS
/// when the node has certificates.
pub fn spawn_server(
    core: Arc<NodeCore>,
    status: StatusApi,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    // A span per call (the method's path), so that what a call logs says which call it was.
    let mut builder = tonic::transport::Server::builder()
        .trace_fn(|request| tracing::debug_span!("grpc", method = %request.uri().path()));
    if let Some(tls) = &core.config().tls {
        builder = builder
            .tls_config(tls.grpc_server())
            .map_err(|err| Error::FailedPrecondition(format!("TLS configuration: {err}")))?;
    }
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
    // TCP_NODELAY on every accepted connection: an HTTP/2 response is several small writes
    // (headers, data, trailers), and with Nagle's algorithm the later ones wait for the
    // peer's delayed ACK (40 ms), which is what Raft, forwarding and fan-out calls then take.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|socket| {
            let _ = socket.set_nodelay(true);
        })
    });
    Ok(tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown)))
}
