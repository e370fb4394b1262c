//! The flags of `ranged bench` (kept apart from [`super::args`], which holds every other
//! command): the load generators and measurements `bench/run` drives.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::parse::parse_duration;

/// `ranged bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Closed-loop load from one client against an HTTP URL, a node's gRPC HotRanges, a
    /// prepared UPSERT over PostgreSQL wire, or etcd's gRPC Put; prints
    /// `requests errors p50_ms p99_ms ops_per_s`.
    Latency {
        /// An http:// URL to GET.
        #[arg(long, group = "target")]
        url: Option<String>,
        /// A node's --listen-addr: call StatusService.HotRanges there (insecure clusters).
        #[arg(long, group = "target")]
        grpc_hot_ranges: Option<String>,
        /// A postgresql:// URL: run `UPSERT INTO bench_kv` (created if missing) there.
        #[arg(long, group = "target")]
        pg_upsert: Option<String>,
        /// An etcd member's client `host:port`: call KV.Put there.
        #[arg(long, group = "target")]
        etcd_put: Option<String>,
        /// HotRanges limit.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Distinct keys written by --pg-upsert and --etcd-put.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Requests in flight, one connection each.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// How long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Comparison 3: start --nodes real nodes in this process and measure the gateway's
    /// fan-out; prints `path requests errors p50_ms p99_ms ops_per_s` per path.
    Fanout {
        /// Nodes to start.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Fan out over this many StatusService endpoints instead: --nodes real nodes plus
        /// empty status servers (not nodes: they hold no ranges, leases or sessions), asked by
        /// a gateway that dials every endpoint over gRPC.
        #[arg(long)]
        endpoints: Option<usize>,
        /// Requests in flight.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// How long per path.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Comparison 4: start three real nodes in this process, split into --ranges ranges, read
    /// every range, and measure `/ranges/hot/?limit=10`; prints
    /// `path requests errors p50_ms p99_ms ops_per_s`.
    HotRanges {
        /// Ranges to create.
        #[arg(long, default_value_t = 10_000)]
        ranges: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// How long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// The write-ahead log alone, fsync on: closed-loop writers appending batches of records
    /// to a fresh log; prints `batch writers records_per_s mb_per_s writes_per_s p50_ms p99_ms`
    /// per batch size.
    Wal {
        /// Directory to create the logs in (each run in a new subdirectory, removed after).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Records per batch; one run per value.
        #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
        batch: Vec<usize>,
        /// Concurrent writers (each its own group), each waiting for its batch.
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// Bytes per record.
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// How long per batch size.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// What idle openraft groups cost: --groups groups over --nodes simulated nodes in this
    /// process (real log store and config, in-process network); prints memory, tasks, CPU and
    /// RPCs per second with heartbeats on and off, and the re-election time after a node stops.
    RaftGroups {
        /// Raft groups, each with every node a voter.
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        /// Simulated nodes, each with its own write-ahead log.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Seconds of each idle measurement window.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Directory to create the nodes' logs in (removed after); the system's temporary
        /// directory if not given.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}
