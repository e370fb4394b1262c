//! The HTTP server under the gateway: HTTP/1.1 and HTTP/2 (ALPN over TLS, prior knowledge in
//! plaintext) through hyper's auto builder, HTTPS with the node certificate in secure mode
//! (client certificates never required), and a readable HTTP 400 for a TLS handshake sent to
//! a plaintext port instead of a silent reset.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

const PLAINTEXT_ONLY: &str =
    "This port serves plain HTTP (the node runs with --insecure); use http://, not https://.\n";

/// Serves `router` on `listener` until `shutdown` turns true.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    crate::services::accept::spawn(listener, shutdown, "http", move |tcp, peer| {
        let (router, acceptor) = (router.clone(), acceptor.clone());
        async move {
            if let Err(err) = connection(tcp, router, acceptor).await {
                tracing::debug!(peer = %peer, error = %err, "HTTP connection ended with an error");
            }
        }
    })
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let service = TowerToHyperService::new(router);
    let builder = Builder::new(TokioExecutor::new());
    match acceptor {
        Some(acceptor) => {
            let tls = acceptor.accept(tcp).await?;
            builder.serve_connection(TokioIo::new(tls), service).await
        }
        None => {
            let mut first = [0u8; 1];
            let mut tcp = tcp;
            if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAINTEXT_ONLY}",
                    PLAINTEXT_ONLY.len()
                );
                tcp.write_all(response.as_bytes()).await?;
                tcp.shutdown().await?;
                return Ok(());
            }
            builder.serve_connection(TokioIo::new(tcp), service).await
        }
    }
}
