//! The accept loop shared by the node's TCP servers (SQL, HTTP, gRPC): accept until shutdown,
//! set `TCP_NODELAY`, hand each connection to its own task holding a [`Slot`] under the
//! listener's connection limit, refuse connections beyond it with the listener's own answer
//! (HTTP 503, PostgreSQL 53300, a plain close), and ride out transient accept errors (such as
//! running out of file descriptors) instead of stopping the server. Also the TLS handshake
//! deadline every listener applies, and the lingering close that lets a client read an early
//! answer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Pause after a failed accept, so an exhausted process does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Default `--tls-handshake-timeout`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many refusals (each a short answer on a connection beyond the limit) run at once;
/// beyond that a connection is closed without an answer, so that refusing costs little too.
const MAX_REFUSALS: usize = 64;

/// The longest a refusal may take (reading what the protocol needs, writing the answer).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a closed connection keeps reading (and discarding) what the client still sends,
/// so that an answer given before the request was read whole (413) is not lost to the reset
/// the kernel sends when a socket closes with unread data.
const LINGER: Duration = Duration::from_secs(2);

/// The connection hygiene of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections served at once; beyond that new ones are refused.
    pub max_connections: usize,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl ListenerLimits {
    /// `max_connections` with the default handshake timeout.
    pub const fn new(max_connections: usize) -> Self {
        Self { max_connections, tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT }
    }
}

/// A connection's place under its listener's limit, given back once every clone is dropped.
/// The accept loop holds one while the connection's task runs; a task that hands its
/// connection on (to tonic) hands its clone on with it.
#[derive(Debug, Clone)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Accepts connections on `listener` until `shutdown` turns true; `what` names the server in
/// logs. Each connection runs `handle` while it holds a [`Slot`]; once `limit` connections
/// hold one, the next ones run `refuse` instead (bounded in number and time).
pub fn spawn<F, Fut, R, RFut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    limit: usize,
    handle: F,
    refuse: R,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream, SocketAddr, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream, SocketAddr) -> RFut + Send + Sync + 'static,
    RFut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limit));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    if let Ok(permit) = slots.clone().try_acquire_owned() {
                        let slot = Slot(Arc::new(permit));
                        let held = slot.clone();
                        let served = handle(socket, peer, slot);
                        tokio::spawn(async move {
                            served.await;
                            drop(held);
                        });
                    } else if let Ok(permit) = refusals.clone().try_acquire_owned() {
                        tracing::debug!(server = what, peer = %peer, limit, "connection limit reached: refusing");
                        let refusal = refuse(socket, peer);
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refusal).await;
                            drop(permit);
                        });
                    } else {
                        tracing::debug!(server = what, peer = %peer, limit, "connection limit reached: closing");
                    }
                }
                Err(err) => {
                    tracing::warn!(server = what, error = %err, "accepting a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

/// Runs a TLS handshake (or any connection setup) within `timeout`; a client that has not
/// finished by then gets a `TimedOut` error and its connection is dropped.
pub async fn within<T>(timeout: Duration, handshake: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection setup timed out"))?
}

/// A TCP stream that, when dropped, half-closes and drains what the client still sends for a
/// moment (at most [`LINGER`]) before it really closes: see [`LINGER`].
pub struct Lingering {
    tcp: Option<TcpStream>,
}

impl Lingering {
    /// Wraps `tcp`.
    pub fn new(tcp: TcpStream) -> Self {
        Self { tcp: Some(tcp) }
    }

    fn tcp(&mut self) -> &mut TcpStream {
        // Only `Drop` takes the stream out.
        self.tcp.as_mut().expect("stream taken before drop")
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut tcp) = self.tcp.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = tcp.shutdown().await;
            let mut sink = [0u8; 8192];
            let _ =
                tokio::time::timeout(LINGER, async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} })
                    .await;
        });
    }
}

impl AsyncRead for Lingering {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().tcp()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().tcp()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().tcp()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|tcp| tcp.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().tcp()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().tcp()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused_until_a_slot_frees() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = spawn(
            listener,
            stopped,
            "test",
            1,
            |mut tcp, _, _slot| async move {
                // Serve until the client leaves, holding the slot.
                let _ = tcp.write_all(b"ok").await;
                let mut sink = [0u8; 16];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            },
            |mut tcp, _| async move {
                let _ = tcp.write_all(b"no").await;
            },
        );
        let answer = |mut tcp: TcpStream| async move {
            let mut got = [0u8; 2];
            tcp.read_exact(&mut got).await.unwrap();
            (tcp, got)
        };
        let (first, got) = answer(TcpStream::connect(addr).await.unwrap()).await;
        assert_eq!(&got, b"ok");
        let (_, got) = answer(TcpStream::connect(addr).await.unwrap()).await;
        assert_eq!(&got, b"no");
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, got) = answer(TcpStream::connect(addr).await.unwrap()).await;
            if &got == b"ok" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the slot never came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
