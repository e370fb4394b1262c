//! The HTTP server under the gateway: HTTP/1.1 and HTTP/2 (ALPN over TLS, prior knowledge in
//! plaintext) through hyper's auto builder, HTTPS with the node certificate in secure mode
//! (client certificates never required), and a readable HTTP 400 for a TLS handshake sent to
//! a plaintext port instead of a silent reset.
//!
//! Every connection is bounded in time: the TLS handshake, the request head (HTTP/1), and
//! the time without a request in flight (both versions; HTTP/2 also pings). Connections
//! beyond `--max-http-connections` get `503 Service Unavailable` with `Retry-After: 1`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::services::accept::{self, Lingering, ListenerLimits};

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

const PLAINTEXT_ONLY: &str =
    "This port serves plain HTTP (the node runs with --insecure); use http://, not https://.\n";

const TOO_MANY_CONNECTIONS: &str = "too many connections to this server; retry shortly\n";

/// Default `--max-http-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `--http-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--http-idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection hygiene of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The connection limit and the TLS handshake deadline.
    pub listener: ListenerLimits,
    /// How long an HTTP/1 client may take to send a request's head.
    pub header_timeout: Duration,
    /// How long a connection may stay open without a request in flight.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            listener: ListenerLimits::new(DEFAULT_MAX_CONNECTIONS),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let refusal_acceptor = acceptor.clone();
    accept::spawn(
        listener,
        shutdown,
        "http",
        limits.listener.max_connections,
        move |tcp, peer, _slot| {
            let (router, acceptor) = (router.clone(), acceptor.clone());
            async move {
                if let Err(err) = connection(tcp, router, acceptor, limits).await {
                    tracing::debug!(peer = %peer, error = %err, "HTTP connection ended with an error");
                }
            }
        },
        move |tcp, _peer| {
            let acceptor = refusal_acceptor.clone();
            async move {
                let _ = refuse(tcp, acceptor, limits).await;
            }
        },
    )
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connection(
    tcp: TcpStream,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: HttpLimits,
) -> Result<(), BoxError> {
    let service = TowerToHyperService::new(router);
    match acceptor {
        Some(acceptor) => {
            let tls =
                accept::within(limits.listener.tls_handshake_timeout, acceptor.accept(Lingering::new(tcp))).await?;
            serve(TokioIo::new(tls), service, limits, None).await
        }
        None => {
            let Some(tcp) = plain_http(tcp, limits.header_timeout).await? else { return Ok(()) };
            serve(TokioIo::new(tcp), service, limits, None).await
        }
    }
}

/// `tcp` (on a plaintext port) if it carries plain HTTP; a TLS handshake gets a readable 400
/// instead, and a client that sends nothing within the header timeout is let go.
async fn plain_http(tcp: TcpStream, header_timeout: Duration) -> Result<Option<Lingering>, BoxError> {
    let mut first = [0u8; 1];
    let Ok(peeked) = tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await else { return Ok(None) };
    let mut tcp = Lingering::new(tcp);
    if peeked? == 1 && first[0] == TLS_HANDSHAKE {
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAINTEXT_ONLY}",
            PLAINTEXT_ONLY.len()
        );
        tcp.write_all(response.as_bytes()).await?;
        return Ok(None);
    }
    Ok(Some(tcp))
}

/// Answers every request on a connection beyond the limit with 503, then closes it.
async fn refuse(
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: HttpLimits,
) -> Result<(), BoxError> {
    let done = Arc::new(Notify::new());
    let signal = done.clone();
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
        signal.notify_one();
        let mut response = Response::new(Body::from(TOO_MANY_CONNECTIONS));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    });
    let tcp = Lingering::new(tcp);
    match acceptor {
        Some(acceptor) => {
            let tls = accept::within(limits.listener.tls_handshake_timeout, acceptor.accept(tcp)).await?;
            serve(TokioIo::new(tls), service, limits, Some(done)).await
        }
        None => serve(TokioIo::new(tcp), service, limits, Some(done)).await,
    }
}

/// Serves one connection with hyper until it ends, the client is idle too long, or (when
/// `close_after` is given) the first answer has been sent.
async fn serve<I, S>(io: I, service: S, limits: HttpLimits, close_after: Option<Arc<Notify>>) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let idle = Arc::new(Idle::new());
    let tracked = {
        let idle = idle.clone();
        hyper::service::service_fn(move |request| {
            let busy = idle.busy();
            let answer = service.call(request);
            async move {
                let response = answer.await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // Pings find a peer that vanished; the idle timer below closes one that stays silent.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.idle_timeout / 2);
    let connection = builder.serve_connection(io, tracked);
    tokio::pin!(connection);
    let close_after = async move {
        match close_after {
            Some(done) => done.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        served = connection.as_mut() => return served,
        _ = idle.expired(limits.idle_timeout) => {}
        _ = close_after => {}
    }
    connection.as_mut().graceful_shutdown();
    // Bounded: what is still in flight has had its chance to finish within the idle time.
    tokio::time::timeout(limits.idle_timeout, connection).await.unwrap_or(Ok(()))
}

/// When a connection last had no request in flight, and how many it has now.
struct Idle {
    state: Mutex<(usize, Instant)>,
}

/// A request in flight; its drop marks the connection's activity.
struct Busy(Arc<Idle>);

impl Idle {
    fn new() -> Self {
        Self { state: Mutex::new((0, Instant::now())) }
    }

    fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 += 1;
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn expired(&self, timeout: Duration) {
        loop {
            let (in_flight, since) = *self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if in_flight == 0 && since.elapsed() >= timeout {
                return;
            }
            // A busy connection is looked at again after a full period: the request has
            // all of it to finish before the idle clock even starts.
            let wake = if in_flight == 0 { since + timeout } else { Instant::now() + timeout };
            tokio::time::sleep_until(wake).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 -= 1;
        state.1 = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_expires_a_period_after_the_last_request_and_never_while_one_runs() {
        let idle = Arc::new(Idle::new());
        let period = Duration::from_secs(60);
        let started = Instant::now();
        let busy = idle.busy();
        // A request running for three periods keeps the connection.
        tokio::select! {
            _ = idle.expired(period) => panic!("expired with a request in flight"),
            _ = tokio::time::sleep(period * 3) => {}
        }
        drop(busy);
        let finished = Instant::now();
        idle.expired(period).await;
        assert_eq!(finished - started, period * 3);
        assert_eq!(Instant::now() - finished, period);
    }
}
