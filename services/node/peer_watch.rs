//! A faster word that a peer's process is gone. Gossip's failure detector needs about a
//! second without heartbeats before it stops hearing from a node; a node killed outright
//! says so at once: its kernel closes its connections, and a new connection to its port is
//! refused. Every node holds a `Watch` stream open to each peer; when one ends and a
//! reconnect is refused, the peer is down (in [`PeerDowns`]) until a watch of it opens again.
//! The quiescence loop uses this to start the elections of the groups the peer led without
//! waiting for gossip, and the Raft transport to send it no votes; a frozen or cut-off node
//! refuses nothing and is left to gossip.
//!
//! [`PeerDowns`]: crate::services::raft::peer_downs::PeerDowns

use std::collections::HashMap;

use super::*;
use crate::pb::raft_service_client::RaftServiceClient;
use crate::services::dialer::CONNECT_TIMEOUT;

/// How often the watched node sends an event on the stream (so that no idle deadline on the
/// way ends it), and how often the watches are matched to the peers gossip knows.
pub const WATCH_EVENT_EVERY: Duration = Duration::from_secs(2);
/// How long a watcher waits before trying again after a reconnect failed or a stream ended
/// as soon as it opened.
const RETRY: Duration = Duration::from_millis(200);

/// What a TCP connect to a peer's port says of its process.
enum Probe {
    /// Something listens: the process runs.
    Listening,
    /// Nothing listens: the process is gone.
    Refused,
    /// No answer in time, or another failure: for gossip to judge.
    Unknown,
}

/// Asks the kernel directly whether anything listens at `addr`: a failed gRPC call's error
/// says less plainly why it failed.
async fn probe(addr: &str) -> Probe {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Listening,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        Ok(Err(_)) | Err(_) => Probe::Unknown,
    }
}

impl NodeCore {
    /// Keeps one watcher per peer gossip knows an address of, until the node drains.
    pub(super) async fn peer_watch_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut watchers: HashMap<NodeId, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
        let mut ticker = tokio::time::interval(WATCH_EVENT_EVERY);
        loop {
            ticker.tick().await;
            if self.is_draining() {
                watchers.values().for_each(|(_, task)| task.abort());
                return;
            }
            for (id, peer) in active.gossip.peers().await {
                let Some(addr) = peer.descriptor.map(|descriptor| descriptor.address) else { continue };
                if id == active.node_id || watchers.get(&id).is_some_and(|(known, _)| *known == addr) {
                    continue;
                }
                let task = tokio::spawn(self.clone().watch_peer(active.node_id, id, addr.clone()));
                if let Some((_, old)) = watchers.insert(id, (addr, task)) {
                    old.abort();
                }
            }
        }
    }

    /// Holds a watch of `peer` at `addr` open, marking it down when a reconnect is refused
    /// and up when a watch opens.
    async fn watch_peer(self: Arc<Self>, me: NodeId, peer: NodeId, addr: String) {
        loop {
            let Ok(channel) = self.dialer.channel(&addr) else { return };
            let opened = Instant::now();
            if let Ok(response) = RaftServiceClient::new(channel).watch(pb::WatchRequest { node_id: me }).await {
                self.mark_up(peer);
                let mut events = response.into_inner();
                while let Ok(Some(_)) = events.message().await {}
            }
            // Ended, or could not open: a refused connection says the process is gone, and
            // one accepted that it runs (a restarted node may not serve the watch yet).
            match probe(&addr).await {
                Probe::Refused => self.peer_downs.mark_down(peer),
                Probe::Listening => self.mark_up(peer),
                Probe::Unknown => {}
            }
            if opened.elapsed() < RETRY {
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    /// Records that `peer` runs; if it was known gone, the groups this node leads stop
    /// waiting out their back-off before replicating to it (it may have missed seconds of
    /// entries, and a follower that lags can hold back a quorum).
    fn mark_up(&self, peer: NodeId) {
        if !self.peer_downs.mark_up(peer) {
            return;
        }
        let Ok(active) = self.active() else { return };
        let led: Vec<_> = (active.replicas.all().into_iter())
            .filter(|replica| replica.raft.metrics().borrow_watched().state == ServerState::Leader)
            .collect();
        tokio::spawn(async move {
            for replica in led {
                // A group whose Raft stopped meanwhile has nothing to reset.
                let _ = replica.raft.trigger().reset_backoff([peer]).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_with_a_listener_is_listening_and_without_one_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(matches!(probe(&addr).await, Probe::Listening));
        drop(listener);
        assert!(matches!(probe(&addr).await, Probe::Refused));
    }
}
