//! Node and store metrics, measured, with CockroachDB's names and units. Each node persists
//! its metrics in range 1 (`/System/status/<node id>`) every [`STATUS_INTERVAL`], so the
//! Cluster API lists every node — dead ones with their last values — from one scan.
//!
//! | metric | unit | source |
//! |---|---|---|
//! | `sql.conns` | count | live sessions in the registry |
//! | `sql.query.count` | count (cumulative) | statements executed |
//! | `sql.service.latency-p99` | ns | 99th percentile of the last [`LATENCY_WINDOW`] statements |
//! | `sys.cpu.user.percent`, `sys.cpu.sys.percent` | fraction of one core (1 = 100%) | `/proc/self/stat` utime/stime over the last interval |
//! | `sys.cpu.combined.percent-normalized` | 0..1 | (user+sys) / CPUs |
//! | `sys.rss` | bytes | `/proc/self/statm` resident pages |
//! | `sys.uptime` | s | since the process started |
//! | `sys.goroutines` | count | tokio tasks alive (the Go runtime's goroutines have no closer twin) |
//! | `capacity`, `capacity.available` | bytes | the file system holding the store |
//! | `capacity.used`, `totalbytes` | bytes | files of the store directory |
//! | `livebytes` | bytes | keys + values of the ranges this store holds |
//! | `replicas`, `replicas.leaseholders`, `ranges.*` | count | the range index and Raft state |
//! | `raft.rcvd.app`, `raft.rcvd.heartbeat`, `raft.rcvd.vote`, `raft.rcvd.snap`, `raft.rcvd.transferleader`, `raft.rcvd.quiesce` | count (cumulative) | Raft messages this node's transport received, by kind ([`RaftMessages`]) |
//! | `replicas.quiescent` | count | ranges whose replica here has its Raft clock stopped (idle) |

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often a node persists its status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// How many recent statement latencies the p99 is computed over.
pub const LATENCY_WINDOW: usize = 4096;

/// What a node persists about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The node.
    pub node_id: u64,
    /// Node metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Store metrics by store id.
    pub store_metrics: BTreeMap<u64, BTreeMap<String, f64>>,
    /// When it was written, nanoseconds since the epoch.
    pub updated_at: i64,
}

/// Statement counters of the SQL layer.
#[derive(Debug, Default)]
pub struct SqlStats {
    queries: AtomicU64,
    latencies: Mutex<VecDeque<u64>>,
}

impl SqlStats {
    /// Records one statement that took `latency`.
    pub fn record(&self, latency: Duration) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if latencies.len() == LATENCY_WINDOW {
            latencies.pop_front();
        }
        latencies.push_back(latency.as_nanos() as u64);
    }

    /// Statements executed since start.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The 99th percentile of recent latencies, nanoseconds (0 with no statements).
    pub fn p99_nanos(&self) -> u64 {
        let mut sorted: Vec<u64> = self.latencies.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        percentile(&mut sorted, 99.0)
    }
}

/// Raft messages received by this node's transport, by kind, since start. An AppendEntries
/// without entries is a heartbeat (openraft has no separate message): idle groups cost
/// heartbeats, so this is what shows whether they have gone quiet.
#[derive(Debug, Default)]
pub struct RaftMessages {
    app: AtomicU64,
    heartbeat: AtomicU64,
    vote: AtomicU64,
    snap: AtomicU64,
    transfer_leader: AtomicU64,
    quiesce: AtomicU64,
}

/// A kind of Raft message, as [`RaftMessages`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftMessage {
    /// AppendEntries carrying `n` entries (0: a heartbeat).
    Append(usize),
    /// RequestVote.
    Vote,
    /// One snapshot chunk.
    SnapshotChunk,
    /// A leader handing over leadership.
    TransferLeader,
    /// A leader asking to stop the clocks of its idle groups (one message for all of them).
    Quiesce,
}

impl RaftMessages {
    /// Counts one received message.
    pub fn record(&self, message: RaftMessage) {
        let counter = match message {
            RaftMessage::Append(0) => &self.heartbeat,
            RaftMessage::Append(_) => &self.app,
            RaftMessage::Vote => &self.vote,
            RaftMessage::SnapshotChunk => &self.snap,
            RaftMessage::TransferLeader => &self.transfer_leader,
            RaftMessage::Quiesce => &self.quiesce,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts under CockroachDB's metric names.
    pub fn metrics(&self) -> [(&'static str, f64); 6] {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        [
            ("raft.rcvd.app", get(&self.app)),
            ("raft.rcvd.heartbeat", get(&self.heartbeat)),
            ("raft.rcvd.vote", get(&self.vote)),
            ("raft.rcvd.snap", get(&self.snap)),
            ("raft.rcvd.transferleader", get(&self.transfer_leader)),
            ("raft.rcvd.quiesce", get(&self.quiesce)),
        ]
    }
}

/// The `percent` percentile of `values` (sorted in place); 0 when empty.
pub fn percentile(values: &mut [u64], percent: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((percent / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// CPU time of this process in clock ticks (user, system), from `/proc/self/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu(&stat)
}

/// Parses utime and stime (fields 14 and 15) out of a `/proc/<pid>/stat` line; the command
/// name (field 2) may contain spaces, so fields are counted after its closing parenthesis.
pub fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every architecture it runs.
const TICKS_PER_SECOND: f64 = 100.0;

/// Measures process CPU between calls.
#[derive(Debug)]
pub struct CpuSampler {
    last: Mutex<Option<(Instant, u64, u64)>>,
}

impl Default for CpuSampler {
    fn default() -> Self {
        let sampler = Self { last: Mutex::new(None) };
        sampler.sample();
        sampler
    }
}

impl CpuSampler {
    /// (user, system) CPU as a fraction of one core since the previous call.
    pub fn sample(&self) -> (f64, f64) {
        let Some((user, system)) = cpu_ticks() else { return (0.0, 0.0) };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let result = match *last {
            Some((then, u0, s0)) => {
                let secs = now.duration_since(then).as_secs_f64().max(1e-3);
                (
                    user.saturating_sub(u0) as f64 / TICKS_PER_SECOND / secs,
                    system.saturating_sub(s0) as f64 / TICKS_PER_SECOND / secs,
                )
            }
            None => (0.0, 0.0),
        };
        *last = Some((now, user, system));
        result
    }
}

/// Process-level metrics.
pub fn process_metrics(
    cpu: (f64, f64),
    num_cpus: u32,
    uptime: Duration,
    sql: &SqlStats,
    sql_conns: usize,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("sql.conns".into(), sql_conns as f64);
    m.insert("sql.query.count".into(), sql.queries() as f64);
    m.insert("sql.service.latency-p99".into(), sql.p99_nanos() as f64);
    m.insert("sys.cpu.user.percent".into(), cpu.0);
    m.insert("sys.cpu.sys.percent".into(), cpu.1);
    m.insert("sys.cpu.combined.percent-normalized".into(), ((cpu.0 + cpu.1) / num_cpus.max(1) as f64).clamp(0.0, 1.0));
    m.insert("sys.rss".into(), rss_bytes().unwrap_or(0) as f64);
    m.insert("sys.uptime".into(), uptime.as_secs() as f64);
    let tasks = tokio::runtime::Handle::try_current().map(|h| h.metrics().num_alive_tasks()).unwrap_or(0);
    m.insert("sys.goroutines".into(), tasks as f64);
    m
}

/// Size of every file under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// (total, available) bytes of the file system holding `path`: the disk whose mount point is
/// the longest prefix of it.
pub fn disk_space(path: &Path) -> (u64, u64) {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else { return (0, 0) };
    (&disks)
        .into_iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.total_space(), d.available_space()))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1000 1 1";
        assert_eq!(parse_stat_cpu(line), Some((250, 75)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut values, 99.0), 99);
        assert_eq!(percentile(&mut values, 50.0), 50);
        assert_eq!(percentile(&mut [7], 99.0), 7);
        assert_eq!(percentile(&mut [], 99.0), 0);
    }

    #[test]
    fn raft_messages_count_an_empty_append_as_a_heartbeat() {
        let counts = RaftMessages::default();
        for message in [
            RaftMessage::Append(0),
            RaftMessage::Append(0),
            RaftMessage::Append(3),
            RaftMessage::Vote,
            RaftMessage::SnapshotChunk,
            RaftMessage::SnapshotChunk,
            RaftMessage::TransferLeader,
            RaftMessage::Quiesce,
        ] {
            counts.record(message);
        }
        assert_eq!(
            counts.metrics(),
            [
                ("raft.rcvd.app", 1.0),
                ("raft.rcvd.heartbeat", 2.0),
                ("raft.rcvd.vote", 1.0),
                ("raft.rcvd.snap", 2.0),
                ("raft.rcvd.transferleader", 1.0),
                ("raft.rcvd.quiesce", 1.0)
            ]
        );
    }

    #[test]
    fn sql_stats_count_and_rank() {
        let stats = SqlStats::default();
        for ms in 1..=100 {
            stats.record(Duration::from_millis(ms));
        }
        assert_eq!(stats.queries(), 100);
        assert_eq!(stats.p99_nanos(), 99_000_000);
    }

    #[test]
    fn this_process_is_measured() {
        assert!(cpu_ticks().is_some());
        assert!(rss_bytes().unwrap() > 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![0u8; 1000]).unwrap();
        assert_eq!(dir_size(dir.path()), 1000);
        let (total, available) = disk_space(dir.path());
        assert!(total > 0 && available <= total);
    }
}
