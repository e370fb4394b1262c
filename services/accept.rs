//! The accept loop shared by the node's TCP servers (SQL, HTTP): accept until shutdown, set
//! `TCP_NODELAY`, hand each connection to its own task, and ride out transient accept errors
//! (such as running out of file descriptors) instead of stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Pause after a failed accept, so an exhausted process does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `shutdown` turns true; `what` names the server in
/// logs.
pub fn spawn<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(handle(socket, peer));
                }
                Err(err) => {
                    tracing::warn!(server = what, error = %err, "accepting a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}
