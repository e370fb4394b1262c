//! The register workload: clients read, write unique values and compare-and-set a few keys
//! over KV gRPC (`KvService.batch`), each operation sent through the next node in turn, so
//! reads reach followers that must forward them or answer from a valid lease. Every
//! operation is recorded in a `History` for the linearizability checker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use ranged::pb;
use tonic::transport::{Channel, Endpoint};

use super::history::{History, Outcome};
use super::linearizability::{Call, Value};

/// How long a client waits for one operation before calling its outcome unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Lazily connected channels to every node's gRPC address, in node order; a channel
/// reconnects by itself after its node restarts.
pub fn channels(addrs: &[String]) -> Vec<Channel> {
    addrs
        .iter()
        .map(|addr| {
            Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(1))
                .timeout(OP_TIMEOUT)
                .connect_lazy()
        })
        .collect()
}

/// The register's value as stored: its decimal text.
fn decode(bytes: Option<&[u8]>) -> Result<Value, String> {
    bytes
        .map(|b| String::from_utf8_lossy(b).parse::<u64>().map_err(|e| format!("register holds {b:?}: {e}")))
        .transpose()
}

fn kv_op(op: pb::kv_op::Op) -> pb::KvOp {
    pb::KvOp { op: Some(op) }
}

/// Runs one operation and classifies its outcome.
async fn run_op(channel: Channel, key: &str, call: Call) -> Outcome {
    let mut client = pb::kv_service_client::KvServiceClient::new(channel);
    let key_bytes = key.as_bytes().to_vec();
    let op = match call {
        Call::Read(_) => kv_op(pb::kv_op::Op::Get(pb::GetRequest { key: key_bytes.into() })),
        Call::Write(value) => kv_op(pb::kv_op::Op::Put(pb::PutRequest {
            key: key_bytes.into(),
            value: value.to_string().into_bytes().into(),
        })),
        Call::Cas { expected, new, .. } => kv_op(pb::kv_op::Op::ConditionalPut(pb::ConditionalPutRequest {
            key: key_bytes.into(),
            value: new.to_string().into_bytes().into(),
            expected: expected.map(|v| v.to_string().into_bytes().into()),
        })),
    };
    let request = pb::BatchRequest { ops: vec![op], ..Default::default() };
    let reply = tokio::time::timeout(OP_TIMEOUT + Duration::from_secs(1), client.batch(request)).await;
    match (call, reply) {
        (Call::Read(_), Ok(Ok(reply))) => {
            let reply = reply.into_inner();
            let value = decode(reply.results.first().and_then(|r| r.value.as_deref()));
            match value {
                Ok(value) => Outcome::Ok(Call::Read(value)),
                // A value no client wrote: keep it as a read of an impossible value, which
                // the checker rejects, rather than hiding it.
                Err(_) => Outcome::Ok(Call::Read(Some(u64::MAX))),
            }
        }
        (Call::Cas { expected, new, .. }, Ok(Ok(_))) => Outcome::Ok(Call::Cas { expected, new, swapped: true }),
        // Only the condition's own failure says "not swapped" (a node still starting answers
        // FailedPrecondition too, for another reason).
        (Call::Cas { expected, new, .. }, Ok(Err(status)))
            if matches!(
                ranged::services::error::Error::from(status.clone()),
                ranged::services::error::Error::ConditionFailed { .. }
            ) =>
        {
            Outcome::Ok(Call::Cas { expected, new, swapped: false })
        }
        (_, Ok(Ok(_))) => Outcome::Ok(call),
        // Errors are treated as unknown outcomes: a server may have applied a write whose
        // answer was lost, and the checker only gets more permissive by assuming so (a read
        // without an answer constrains nothing).
        _ => Outcome::Unknown(call),
    }
}

/// Register workload settings.
///
/// The clients move to fresh keys every `epoch` (`PREFIX/eN/rK`), so each key's history stays
/// short however long the run: the checker's search grows with the operations of one key,
/// and steeply with those whose outcome is unknown.
#[derive(Debug, Clone)]
pub struct Registers {
    pub prefix: String,
    /// Keys per epoch.
    pub count: usize,
    pub clients: usize,
    pub epoch: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
}

/// How long the clients stay on one set of keys.
pub const EPOCH: Duration = Duration::from_secs(30);

impl Registers {
    /// `count` keys per epoch under `prefix` and `clients` clients.
    pub fn new(prefix: &str, count: usize, clients: usize, seed: u64) -> Registers {
        Registers { prefix: prefix.to_string(), count, clients, epoch: EPOCH, seed }
    }

    /// Key `k` of epoch `epoch`.
    pub fn key(&self, epoch: u64, k: usize) -> String {
        format!("{}/e{epoch}/r{k}", self.prefix)
    }

    /// The epoch at `nanos` on the history's clock.
    fn epoch_at(&self, nanos: u64) -> u64 {
        nanos / self.epoch.as_nanos() as u64
    }

    /// Runs the clients until `stop` is set; every operation lands in `history`.
    pub async fn run(&self, channels: Vec<Channel>, history: Arc<History>, stop: Arc<AtomicBool>) {
        let mut tasks = Vec::new();
        for client in 0..self.clients {
            let (registers, channels, history, stop) = (self.clone(), channels.clone(), history.clone(), stop.clone());
            let seed = self.seed.wrapping_add(client as u64);
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                // Unique values: the client in the high bits, a counter below.
                let mut counter = (client as u64 + 1) << 32;
                let mut last_read: Vec<Value> = vec![None; registers.count];
                let mut epoch = 0;
                let mut turn = client;
                while !stop.load(Ordering::Relaxed) {
                    let now = registers.epoch_at(history.now());
                    if now != epoch {
                        (epoch, last_read) = (now, vec![None; registers.count]);
                    }
                    let k = rng.random_range(0..registers.count);
                    let key = registers.key(epoch, k);
                    let call = match rng.random_range(0..100) {
                        0..50 => Call::Read(None),
                        50..85 => {
                            counter += 1;
                            Call::Write(counter)
                        }
                        _ => {
                            counter += 1;
                            Call::Cas { expected: last_read[k], new: counter, swapped: false }
                        }
                    };
                    turn += 1;
                    let node = turn % channels.len();
                    let channel = channels[node].clone();
                    let invoke = history.now();
                    let outcome = run_op(channel, &key, call).await;
                    if let Outcome::Ok(Call::Read(value)) = outcome {
                        last_read[k] = value;
                    }
                    history.record(&key, client, node, invoke, outcome);
                    if !matches!(outcome, Outcome::Ok(_)) {
                        // Do not spin against a node that is down.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("register client panicked");
        }
    }

    /// Reads every key of every epoch so far once through every node (recorded like any
    /// read); returns how many reads answered. Run after healing: the history's last word on
    /// each key.
    pub async fn final_reads(&self, channels: &[Channel], history: &History) -> usize {
        let mut answered = 0;
        for epoch in 0..=self.epoch_at(history.now()) {
            for k in 0..self.count {
                let key = self.key(epoch, k);
                for (node, channel) in channels.iter().enumerate() {
                    let invoke = history.now();
                    let outcome = run_op(channel.clone(), &key, Call::Read(None)).await;
                    answered += usize::from(matches!(outcome, Outcome::Ok(_)));
                    history.record(&key, usize::MAX, node, invoke, outcome);
                }
            }
        }
        answered
    }
}
