//! Coalesced heartbeats. openraft runs one heartbeat worker per group and follower, and each
//! sends its heartbeat on its own; with thousands of groups that is thousands of gRPC calls a
//! second to every peer, and as many failed connection attempts to a peer that is down. Here
//! the heartbeats of every group going to one peer are queued together and sent as one
//! `Heartbeats` call carrying whatever queued meanwhile, at most [`CALLS_IN_FLIGHT`] calls at
//! once, so a peer gets a few messages per round trip however many groups beat, and a dead
//! peer costs one failed call per round, not one per group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::pb;
use crate::pb::raft_service_client::RaftServiceClient;
use crate::services::dialer::Dialer;

/// The most heartbeats one call carries (each is some tens of bytes).
const MAX_BATCH: usize = 20_000;

/// How long one call may take. A heartbeat's sender gives up after its own (shorter)
/// deadline; this only bounds how long a batch to an unresponsive peer holds up the next.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a peer's failing heartbeats are logged (each failure would be a line per group).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How many calls to one peer may be in flight at once: a call waits for its slowest
/// heartbeat, and the heartbeats queued meanwhile (a read renewing its lease among them)
/// should not all wait behind it.
const CALLS_IN_FLIGHT: usize = 4;

/// The answer to one heartbeat: the follower's encoded reply (flagged `error` when its Raft
/// failed), or why the call did not get through.
pub type HeartbeatReply = Result<pb::RaftPayload, String>;

struct Queued {
    heartbeat: pb::RaftPayload,
    reply: oneshot::Sender<HeartbeatReply>,
}

/// The node's heartbeat queues, one per peer address, each drained by its own task.
pub struct Heartbeats {
    dialer: Arc<Dialer>,
    peers: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
}

impl Heartbeats {
    /// Queues that send through `dialer`'s channels.
    pub fn new(dialer: Arc<Dialer>) -> Self {
        Self { dialer, peers: Mutex::default() }
    }

    /// Sends `heartbeat` (a payload naming its group) to the node at `addr` in the next call
    /// to it, and waits for its reply.
    pub async fn send(&self, addr: &str, heartbeat: pb::RaftPayload) -> HeartbeatReply {
        let (reply, answer) = oneshot::channel();
        self.queue(addr)?.send(Queued { heartbeat, reply }).map_err(|_| "heartbeat queue closed".to_string())?;
        answer.await.map_err(|_| "heartbeat dropped".to_string())?
    }

    fn queue(&self, addr: &str) -> Result<mpsc::UnboundedSender<Queued>, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = peers.get(addr).filter(|queue| !queue.is_closed()) {
            return Ok(queue.clone());
        }
        let channel = self.dialer.channel(addr).map_err(|err| err.to_string())?;
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(drain(RaftServiceClient::new(channel), addr.to_string(), queued));
        peers.insert(addr.to_string(), queue.clone());
        Ok(queue)
    }
}

/// Sends a peer's queued heartbeats, as many as have queued, in up to [`CALLS_IN_FLIGHT`]
/// calls at a time. Each heartbeat's sender waits for at most one call: the queue holds one
/// heartbeat per group and peer, since a group's worker sends the next only after the last is
/// answered or given up.
async fn drain(
    client: RaftServiceClient<tonic::transport::Channel>,
    addr: String,
    mut queued: mpsc::UnboundedReceiver<Queued>,
) {
    let last_logged: Arc<Mutex<Option<Instant>>> = Arc::default();
    let calls = Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        let Ok(permit) = calls.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // Those whose sender gave up are not sent.
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (client, addr, last_logged) = (client.clone(), addr.clone(), last_logged.clone());
        tokio::spawn(async move {
            call(client, &addr, batch, &last_logged).await;
            drop(permit);
        });
    }
}

/// One `Heartbeats` call carrying `batch`; each sender gets its own answer.
async fn call(
    mut client: RaftServiceClient<tonic::transport::Channel>,
    addr: &str,
    batch: Vec<Queued>,
    last_logged: &Mutex<Option<Instant>>,
) {
    let (heartbeats, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.heartbeat, q.reply)).unzip();
    let sent = heartbeats.len();
    let mut request = tonic::Request::new(pb::HeartbeatBatch { messages: heartbeats });
    request.set_timeout(CALL_TIMEOUT);
    let answers = match client.heartbeats(request).await {
        Ok(answer) => {
            let answers = answer.into_inner().messages;
            if answers.len() == sent {
                answers.into_iter().map(Ok).collect()
            } else {
                vec![Err(format!("{} replies to {sent} heartbeats", answers.len())); sent]
            }
        }
        Err(status) => vec![Err(status.message().to_string()); sent],
    };
    if let Some(Err(err)) = answers.first() {
        let mut last = last_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= FAILURE_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(peer = %addr, heartbeats = sent, error = %err, "heartbeats to a peer failed");
        }
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}
