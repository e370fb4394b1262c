//! One PostgreSQL connection: pgwire's TLS negotiation and message handling, over a socket
//! that coalesces the server's writes.
//!
//! pgwire flushes after several messages of one exchange (BindComplete, CommandComplete,
//! ReadyForQuery), so a point query cost three `send` calls where PostgreSQL makes one; on
//! loopback each send also runs the receiver's wake-up, and together they were most of a
//! node's CPU time under pgbench (BENCHMARKS.md). [`Coalesce`] keeps what the server
//! writes until the server next waits for the client (a read), has a lot to send, or closes
//! the connection: a server only ever waits on its client after answering it, so nothing
//! the client waits for is held back.
//!
//! The message loop follows `pgwire::tokio::process_socket`, which only accepts a bare
//! `TcpStream`; the TLS negotiation and every message's handling are pgwire's own functions.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::StreamExt;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

/// Default `--sql-startup-timeout`: how long a client may take from connecting to being
/// authenticated (PostgreSQL's `authentication_timeout`).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The deadlines of a connection's start.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the SSL negotiation: the SSLRequest (or direct TLS) and the TLS handshake.
    pub tls_handshake: Duration,
    /// For the whole start: negotiation, startup packet and authentication.
    pub startup: Duration,
}

/// Most bytes held before they are written anyway.
const HOLD_LIMIT: usize = 64 * 1024;

/// A socket whose writes are held until the next read, [`HOLD_LIMIT`] bytes, or shutdown.
pub struct Coalesce<S> {
    inner: S,
    held: Vec<u8>,
    written: usize,
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner, held: Vec::new(), written: 0 }
    }

    /// Writes out everything held and flushes `inner` (TLS streams buffer records too).
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.held.clear();
        self.written = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            ready!(this.poll_release(cx))?;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() >= HOLD_LIMIT {
            ready!(this.poll_release(cx))?;
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Held until the server reads: see the module comment.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until the client leaves, a fatal error, or a startup deadline.
pub async fn serve<H: PgWireServerHandlers>(
    socket: TcpStream,
    acceptor: Option<pgwire::tokio::TlsAcceptor>,
    handlers: Arc<H>,
    deadlines: Deadlines,
) -> io::Result<()> {
    let handlers = Handlers {
        startup: handlers.startup_handler(),
        simple: handlers.simple_query_handler(),
        extended: handlers.extended_query_handler(),
        copy: handlers.copy_handler(),
        cancel: handlers.cancel_handler(),
        errors: handlers.error_handler(),
    };
    serve_with(socket, acceptor, handlers, deadlines).await
}

/// Answers a connection beyond the limit as PostgreSQL does: the SSL negotiation first (so a
/// client that requires TLS reads the error too), then, once the startup packet is in, a FATAL
/// `53300 sorry, too many clients already`.
pub async fn refuse(
    socket: TcpStream,
    acceptor: Option<pgwire::tokio::TlsAcceptor>,
    tls_handshake: Duration,
) -> io::Result<()> {
    use futures::SinkExt;
    use pgwire::error::ErrorInfo;
    use pgwire::messages::PgWireBackendMessage;
    let negotiated = crate::services::accept::within(tls_handshake, negotiate_tls::<()>(socket, acceptor)).await?;
    let Some(mut socket) = negotiated else { return Ok(()) };
    // Read the startup packet before answering: closing with it unread would reset the
    // connection and could lose the error on its way.
    let _ = socket.next().await;
    let error = ErrorInfo::new("FATAL".into(), "53300".into(), "sorry, too many clients already".into());
    socket.send(PgWireBackendMessage::ErrorResponse(error.into())).await?;
    socket.close().await
}

/// The handlers of one connection, named by type so that the codec can be typed by the
/// extended-query handler's statement type.
struct Handlers<A, Q, EQ, C, CR, E> {
    startup: Arc<A>,
    simple: Arc<Q>,
    extended: Arc<EQ>,
    copy: Arc<C>,
    cancel: Arc<CR>,
    errors: Arc<E>,
}

async fn serve_with<A, Q, EQ, C, CR, E>(
    socket: TcpStream,
    acceptor: Option<pgwire::tokio::TlsAcceptor>,
    handlers: Handlers<A, Q, EQ, C, CR, E>,
    deadlines: Deadlines,
) -> io::Result<()>
where
    A: StartupHandler,
    Q: SimpleQueryHandler,
    EQ: ExtendedQueryHandler,
    C: CopyHandler,
    CR: CancelHandler,
    E: ErrorHandler,
{
    let startup_timeout = tokio::time::sleep(deadlines.startup);
    tokio::pin!(startup_timeout);
    let negotiation =
        crate::services::accept::within(deadlines.tls_handshake, negotiate_tls::<EQ::Statement>(socket, acceptor));
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        negotiated = negotiation => negotiated?,
    };
    // None: a direct TLS handshake on a server without TLS.
    let Some(framed) = negotiated else { return Ok(()) };
    let parts = framed.into_parts();
    let mut coalesced = FramedParts::new(Coalesce::new(parts.io), parts.codec);
    coalesced.read_buf = parts.read_buf;
    coalesced.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(coalesced);

    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let message = if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                message = socket.next() => message,
            }
        } else {
            socket.next().await
        };
        let Some(Ok(message)) = message else { break };
        // Terminate: the client is leaving and some clients wait for the server to close.
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(is_extended) => is_extended,
            _ => message.is_extended_query(),
        };
        // A CancelRequest arrives on a connection of its own, closed once handled.
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut err) = process_message(
            message,
            &mut socket,
            handlers.startup.clone(),
            handlers.simple.clone(),
            handlers.extended.clone(),
            handlers.copy.clone(),
            handlers.cancel.clone(),
        )
        .await
        {
            handlers.errors.on_error(&socket, &mut err);
            let fatal = err.is_fatal();
            process_error(&mut socket, err, is_extended).await?;
            if fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    // Whatever is still held (a final error, say) goes out before the socket closes.
    futures::SinkExt::close(&mut socket).await.or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_held_until_the_next_read_then_sent_at_once() {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut server = Coalesce::new(server);
        server.write_all(b"one").await.unwrap();
        server.flush().await.unwrap();
        server.write_all(b"two").await.unwrap();
        server.flush().await.unwrap();
        // Nothing has reached the client yet.
        let mut probe = [0u8; 16];
        let early = tokio::time::timeout(Duration::from_millis(50), client.read(&mut probe)).await;
        assert!(early.is_err(), "held bytes leaked: {early:?}");
        // The server starts waiting for the client: both writes arrive together.
        client.write_all(b"next").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"next");
        let mut sent = [0u8; 6];
        client.read_exact(&mut sent).await.unwrap();
        assert_eq!(&sent, b"onetwo");
    }

    #[tokio::test]
    async fn large_output_and_shutdown_release_what_is_held() {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut server = Coalesce::new(server);
        let chunk = vec![7u8; 1000];
        for _ in 0..(HOLD_LIMIT / chunk.len() + 2) {
            server.write_all(&chunk).await.unwrap();
        }
        // Past the limit, earlier bytes were written without waiting for a read.
        let mut first = vec![0u8; HOLD_LIMIT];
        client.read_exact(&mut first).await.unwrap();
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(first.len() + rest.len(), chunk.len() * (HOLD_LIMIT / chunk.len() + 2));
    }
}
