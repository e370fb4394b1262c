//! The peers whose process is known gone: the node's peer watch (`services::node::peer_watch`)
//! marks a peer down when its watch stream ends and a reconnect is refused, and up when a
//! watch of it opens or its port accepts a connection. The quiescence loop starts the
//! elections of the groups a down peer led; the Raft transport sends it no votes (each
//! would be a connection attempt refused, one per election, while the survivors are busiest).

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::services::raft::NodeId;

/// The peers whose process is known gone, and a signal for whoever acts on it.
#[derive(Default)]
pub struct PeerDowns {
    down: Mutex<HashSet<NodeId>>,
    changed: Notify,
}

impl PeerDowns {
    /// The peers whose process is known gone now (read once by a loop that asks per group).
    pub fn down(&self) -> HashSet<NodeId> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `node`'s process is known gone.
    pub fn is_down(&self, node: NodeId) -> bool {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).contains(&node)
    }

    /// Records that `node` refused a connection; the first time, wakes the one waiter (the
    /// quiescence loop), or its next wait if it is busy: a death found mid-pass is acted on
    /// right after the pass, not at the loop's next tick.
    pub fn mark_down(&self, node: NodeId) {
        let first = self.down.lock().unwrap_or_else(|p| p.into_inner()).insert(node);
        if first {
            tracing::info!(node, "a peer's process is gone: its watch ended and a reconnect was refused");
            self.changed.notify_one();
        }
    }

    /// Records that `node` runs: a watch of it opened, or its port accepted a connection.
    /// Whether it was known gone until now.
    pub fn mark_up(&self, node: NodeId) -> bool {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).remove(&node)
    }

    /// Resolves the next time a peer is found down (at once if one was since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_peer_is_down_from_its_first_refusal_until_it_is_seen_running() {
        let downs = PeerDowns::default();
        let woken = downs.changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        assert!(downs.down().is_empty());
        downs.mark_down(3);
        assert_eq!(downs.down(), HashSet::from([3]));
        assert!(downs.is_down(3) && !downs.is_down(2));
        tokio::time::timeout(Duration::from_secs(5), woken).await.expect("a waiter is woken by the first refusal");
        let again = downs.changed.notified();
        tokio::pin!(again);
        again.as_mut().enable();
        downs.mark_down(3);
        let woke = tokio::time::timeout(Duration::from_millis(50), again).await;
        assert!(woke.is_err(), "a peer already down wakes nobody again");
        assert!(downs.mark_up(3), "it was down until now");
        assert!(downs.down().is_empty() && !downs.is_down(3));
        assert!(!downs.mark_up(3), "seen running again: no news");
    }

    #[tokio::test]
    async fn a_refusal_while_nobody_waits_wakes_the_next_wait() {
        let downs = PeerDowns::default();
        downs.mark_down(4);
        let woke = tokio::time::timeout(Duration::from_secs(5), downs.changed()).await;
        assert!(woke.is_ok(), "the loop was busy when node 4 was found down: its next wait returns at once");
        let again = tokio::time::timeout(Duration::from_millis(50), downs.changed()).await;
        assert!(again.is_err(), "one refusal wakes one wait");
    }
}
