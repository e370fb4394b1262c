//! The connections the gRPC server serves: accepted by the shared accept loop under
//! `--max-grpc-connections` (a connection beyond it is closed at once: gRPC clients reconnect
//! with backoff), given the TLS handshake deadline (mutual TLS in secure mode, run here rather
//! than by tonic, which has no deadline for it), and handed to tonic holding their slot.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::services::accept::{self, ListenerLimits, Slot};

/// Connections handshaken but not yet taken by tonic.
const QUEUE: usize = 64;

/// One served connection: the stream and its place under the limit.
pub struct Connection {
    transport: Transport,
    _slot: Slot,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Accepts on `listener` until `stop` turns true and yields the connections ready for tonic.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    stop: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Connection>> {
    let (ready, queue) = mpsc::channel(QUEUE);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handle = move |tcp: TcpStream, peer, slot| {
        let (ready, acceptor) = (ready.clone(), acceptor.clone());
        async move {
            let transport = match setup(tcp, acceptor, limits).await {
                Ok(Some(transport)) => transport,
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "gRPC connection setup failed");
                    return;
                }
            };
            let _ = ready.send(Ok(Connection { transport, _slot: slot })).await;
        }
    };
    accept::spawn(listener, stop, "grpc", limits.max_connections, handle, |_tcp, _peer| async {});
    ReceiverStream::new(queue)
}

/// The TLS handshake, or in plaintext the client's first bytes, within the handshake
/// deadline: a client that connects and stays silent does not keep its slot. `None`: the
/// client left before saying anything.
async fn setup(
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: ListenerLimits,
) -> io::Result<Option<Transport>> {
    match acceptor {
        Some(acceptor) => {
            let tls = accept::within(limits.tls_handshake_timeout, acceptor.accept(tcp)).await?;
            Ok(Some(Transport::Tls(Box::new(tls))))
        }
        None => {
            let mut first = [0u8; 1];
            let peeked = accept::within(limits.tls_handshake_timeout, tcp.peek(&mut first)).await?;
            Ok((peeked > 0).then_some(Transport::Plain(tcp)))
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.transport {
            Transport::Plain(tcp) => tcp.connect_info(),
            Transport::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(tcp) => tcp.is_write_vectored(),
            Transport::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
