//! Pooled gRPC channels to other nodes, one per address, created lazily and reused by every
//! caller (Raft transport, KV forwarding, status fan-out). A channel reconnects by itself
//! after its peer restarts; a dead peer costs at most [`CONNECT_TIMEOUT`] per call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::services::error::{Error, Result};
use crate::services::tls::TlsMaterials;

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How many streams this side gave up (reset) HTTP/2 remembers, and for how long, so that an
/// answer already on its way when its call was given up is dropped quietly. h2 remembers 50
/// for 1 s; a node gives up hundreds of Raft calls a second on one connection while its CPU
/// is short (every group's votes and heartbeats time out together).
const REMEMBERED_RESETS: usize = 4096;
const RESET_MEMORY: Duration = Duration::from_secs(10);

/// Hands out shared channels by address.
pub struct Dialer {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Dialer {
    /// A dialer using TLS with `tls`, or plaintext when `None` (`--insecure`).
    pub fn new(tls: Option<&TlsMaterials>) -> Self {
        Self { tls: tls.map(TlsMaterials::grpc_client), channels: Mutex::default() }
    }

    /// The endpoint for `addr` (`host:port`), with this dialer's transport settings.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|err| Error::InvalidArgument(format!("invalid address {addr:?}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .http2_max_concurrent_reset_streams(REMEMBERED_RESETS)
            .http2_reset_stream_duration(RESET_MEMORY)
            // A frame for a given-up stream h2 has forgotten counts against a limit (1,024 by
            // default) that never decays over the connection's life; at the limit h2 ends the
            // connection (GOAWAY, ENHANCE_YOUR_CALM), failing every call on it, every Raft
            // group's at once. The limit guards against a misbehaving server; the servers dialled
            // here are the cluster's own nodes, and late answers are what a slow one sends.
            .http2_max_local_error_reset_streams(None);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|err| Error::FailedPrecondition(format!("TLS configuration: {err}")))?;
        }
        Ok(endpoint)
    }

    /// The shared channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.endpoint(addr)?.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::Instant;

    use super::*;
    use crate::pb::NodesRequest;
    use crate::pb::status_service_client::StatusServiceClient;

    /// A gRPC server that serves no service (every call answers "unimplemented" at once).
    async fn empty_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = tonic::transport::Server::builder().add_routes(tonic::service::Routes::default());
        tokio::spawn(router.serve_with_incoming(incoming));
        addr
    }

    /// A proxy to `server` that holds what clients send for `lag` and passes answers on at
    /// once: a call given up within `lag` has its answer on the way before the server hears
    /// that it was given up, as a slow peer's answers are. Counts the connections it took.
    async fn lagging_proxy(server: String, lag: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(&server).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                let (held, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        if held.send((Instant::now() + lag, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((at, bytes)) = due.recv().await {
                        tokio::time::sleep_until(at).await;
                        if upstream_write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move { tokio::io::copy(&mut upstream_read, &mut client_write).await });
            }
        });
        (addr, connections)
    }

    #[tokio::test]
    async fn a_peer_connection_outlives_any_number_of_answers_to_calls_given_up() {
        let (addr, connections) = lagging_proxy(empty_server().await, Duration::from_millis(100)).await;
        let dialer = Dialer::new(None);
        let client = StatusServiceClient::new(dialer.channel(&addr).unwrap());
        // Waves of calls given up after 20 ms, their answers arriving 80 ms later (2,000 in all:
        // h2's default limit is 1,024), each wave with one call that waits for its answer.
        let mut waves = Vec::new();
        for wave in 0..20u64 {
            let client = client.clone();
            waves.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * wave)).await;
                let given_up: Vec<_> = (0..100)
                    .map(|_| {
                        let mut client = client.clone();
                        tokio::spawn(async move {
                            tokio::time::timeout(Duration::from_millis(20), client.nodes(NodesRequest {})).await
                        })
                    })
                    .collect();
                let answer = client.clone().nodes(NodesRequest {}).await;
                for call in given_up {
                    let _ = call.await;
                }
                answer.map(|_| ()).map_err(|status| (status.code(), status.message().to_string()))
            }));
        }
        for (wave, answered) in waves.into_iter().enumerate() {
            let answered = answered.await.unwrap();
            assert!(
                matches!(&answered, Err((tonic::Code::Unimplemented, _))),
                "wave {wave}'s waiting call got {answered:?}, not the server's answer"
            );
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1, "the channel had to connect again");
    }
}
