//! Coalesced Raft messages. openraft runs one heartbeat worker per group and follower, and
//! each sends its heartbeat on its own; with thousands of groups that is thousands of gRPC
//! calls a second to every peer, and as many failed connection attempts to a peer that is
//! down. After a node dies, each survivor runs an election for hundreds of groups at once,
//! each sending its own vote request. Here the messages of one kind ([`Batched`]) that every
//! group sends to one peer are queued together and sent as one call carrying whatever queued
//! meanwhile, at most [`CALLS_IN_FLIGHT`] calls at once, so a peer gets a few messages per
//! round trip however many groups send, and a dead peer costs one failed call per round, not
//! one per group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::pb;
use crate::pb::raft_service_client::RaftServiceClient;
use crate::services::dialer::Dialer;

/// The most messages one call carries (a heartbeat or a vote is some tens of bytes).
const MAX_BATCH: usize = 20_000;

/// How long one call may take. A message's sender gives up after its own (shorter) deadline;
/// this only bounds how long a batch to an unresponsive peer holds up the next.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a peer's failing calls are logged (each failure would be a line per group).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How many calls of one kind to one peer may be in flight at once: a call waits for its
/// slowest message, and those queued meanwhile (a read renewing its lease among them) should
/// not all wait behind it.
const CALLS_IN_FLIGHT: usize = 4;

/// The kinds of messages coalesced, each sent in calls of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Batched {
    /// AppendEntries without entries, from a group's heartbeat worker (`Heartbeats`).
    Heartbeat,
    /// Vote requests of groups campaigning (`Votes`).
    Vote,
}

/// The answer to one message: the peer's encoded reply (flagged `error` when its Raft
/// failed), or why the call did not get through.
pub type BatchedReply = Result<pb::RaftPayload, String>;

struct Queued {
    message: pb::RaftPayload,
    reply: oneshot::Sender<BatchedReply>,
}

/// The node's queues of coalesced messages, one per peer address and kind, each drained by
/// its own task.
pub struct Batches {
    dialer: Arc<Dialer>,
    peers: Mutex<HashMap<(String, Batched), mpsc::UnboundedSender<Queued>>>,
}

impl Batches {
    /// Queues that send through `dialer`'s channels.
    pub fn new(dialer: Arc<Dialer>) -> Self {
        Self { dialer, peers: Mutex::default() }
    }

    /// Sends `message` (a payload naming its group) of kind `kind` to the node at `addr` in
    /// the next call to it, and waits for its reply.
    pub async fn send(&self, addr: &str, kind: Batched, message: pb::RaftPayload) -> BatchedReply {
        let (reply, answer) = oneshot::channel();
        let closed = |_| format!("{kind:?} queue closed");
        self.queue(addr, kind)?.send(Queued { message, reply }).map_err(closed)?;
        answer.await.map_err(|_| format!("{kind:?} dropped"))?
    }

    fn queue(&self, addr: &str, kind: Batched) -> Result<mpsc::UnboundedSender<Queued>, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (addr.to_string(), kind);
        if let Some(queue) = peers.get(&key).filter(|queue| !queue.is_closed()) {
            return Ok(queue.clone());
        }
        let channel = self.dialer.channel(addr).map_err(|err| err.to_string())?;
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(drain(RaftServiceClient::new(channel), addr.to_string(), kind, queued));
        peers.insert(key, queue.clone());
        Ok(queue)
    }
}

/// Sends a peer's queued messages of kind `kind`, as many as have queued, in up to
/// [`CALLS_IN_FLIGHT`] calls at a time. Each message's sender waits for at most one call: the
/// queue holds at most one heartbeat or vote per group and peer, since a group sends the next
/// only after the last is answered or given up.
async fn drain(
    client: RaftServiceClient<tonic::transport::Channel>,
    addr: String,
    kind: Batched,
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
            call(client, &addr, kind, batch, &last_logged).await;
            drop(permit);
        });
    }
}

/// One `Heartbeats` or `Votes` call carrying `batch`; each sender gets its own answer.
async fn call(
    mut client: RaftServiceClient<tonic::transport::Channel>,
    addr: &str,
    kind: Batched,
    batch: Vec<Queued>,
    last_logged: &Mutex<Option<Instant>>,
) {
    let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.message, q.reply)).unzip();
    let sent = messages.len();
    let mut request = tonic::Request::new(pb::RaftBatch { messages });
    request.set_timeout(CALL_TIMEOUT);
    let answered = match kind {
        Batched::Heartbeat => client.heartbeats(request).await,
        Batched::Vote => client.votes(request).await,
    };
    let answers = match answered {
        Ok(answer) => {
            let answers = answer.into_inner().messages;
            if answers.len() == sent {
                answers.into_iter().map(Ok).collect()
            } else {
                vec![Err(format!("{} replies to {sent} messages", answers.len())); sent]
            }
        }
        Err(status) => vec![Err(status.message().to_string()); sent],
    };
    if let Some(Err(err)) = answers.first() {
        let mut last = last_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= FAILURE_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(peer = %addr, ?kind, messages = sent, error = %err, "coalesced Raft messages to a peer failed");
        }
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}
