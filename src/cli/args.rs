//! The `ranged` flags as clap types: every command, subcommand and flag, with their defaults
//! and `RANGED_*` environment twins. No behaviour beyond parsing lives here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::bench_args::BenchCommand;
use super::parse::{self, parse_duration, parse_size, parse_timeout};
use crate::services::load::LoadMetric;

/// Default internal gRPC (and gossip) port.
pub const DEFAULT_LISTEN_ADDR: &str = ":26357";
/// Default SQL port.
pub const DEFAULT_SQL_ADDR: &str = ":26257";
/// Default HTTP port.
pub const DEFAULT_HTTP_ADDR: &str = ":8080";
/// Default store directory.
pub const DEFAULT_STORE: &str = "ranged-data";
/// Default certificates directory.
pub const DEFAULT_CERTS_DIR: &str = "certs";
/// Default node address for client commands.
pub const DEFAULT_HOST: &str = "localhost:26357";

/// ranged: a distributed SQL key-value database with a CockroachDB-compatible Cluster API.
#[derive(Debug, Parser)]
#[command(name = "ranged", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (the program name first). Clap checks `conflicts_with` within one
    /// command level, before global flags are shared between levels, so `--insecure` and
    /// `--certs-dir` on opposite sides of a subcommand are refused here instead.
    pub fn parse_command_line<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Self::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut leaf = &matches;
        while let Some((_, sub)) = leaf.subcommand() {
            leaf = sub;
        }
        let given = |id: &str| {
            leaf.ids().any(|known| known == id)
                && leaf.value_source(id).is_some_and(|source| source != ValueSource::DefaultValue)
        };
        if given("insecure") && given("certs_dir") {
            let message = "the argument '--certs-dir <CERTS_DIR>' cannot be used with '--insecure'";
            return Err(command.error(clap::error::ErrorKind::ArgumentConflict, message));
        }
        Self::from_arg_matches(&matches).map_err(|err| err.format(&mut command))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node.
    Start(Box<StartArgs>),
    /// Run a local in-process cluster with generated certificates (Ctrl-C stops and cleans up).
    Demo(DemoArgs),
    /// Serve the HTTP API alone, in front of a cluster.
    Gateway(GatewayArgs),
    /// Bootstrap a new cluster through one of its nodes (once).
    Init(InitArgs),
    /// Debug access to the key-value layer.
    Kv {
        #[command(flatten)]
        client: ClientArgs,
        /// The KV operation.
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Node information.
    Node {
        #[command(flatten)]
        client: ClientArgs,
        /// The node operation.
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Load generators over the PostgreSQL wire protocol.
    Workload {
        /// The workload operation.
        #[command(subcommand)]
        command: WorkloadCommand,
    },
    /// Benchmark tools (see bench/run).
    Bench {
        /// The benchmark tool.
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Create certificates for TLS and mutual TLS.
    Cert {
        #[command(flatten)]
        cert: CertArgs,
        /// The certificate operation.
        #[command(subcommand)]
        command: CertCommand,
    },
}

/// Flags of `ranged start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Other nodes' --listen-addr, comma separated (this node's own address may be listed).
    #[arg(long, env = "RANGED_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Address for internal gRPC and gossip (UDP, same port); ":PORT" listens on all interfaces.
    #[arg(long, env = "RANGED_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: String,
    /// Address other nodes use to reach this one (default: the listen address, or this host's name).
    #[arg(long, env = "RANGED_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Address for PostgreSQL clients (":PORT" listens on all interfaces).
    #[arg(long, env = "RANGED_SQL_ADDR", default_value = DEFAULT_SQL_ADDR)]
    pub sql_addr: String,
    /// Address for the HTTP API (`/api/v2`; ":PORT" listens on all interfaces).
    #[arg(long, env = "RANGED_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,
    /// Directory of the node's store.
    #[arg(long, env = "RANGED_STORE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
    /// Locality tiers, most general first, e.g. region=us-east1,zone=us-east1-b.
    #[arg(long, env = "RANGED_LOCALITY", default_value = "")]
    pub locality: String,
    /// Name that every node of the cluster must share; nodes with another name are refused.
    #[arg(long, env = "RANGED_CLUSTER_NAME", default_value = "")]
    pub cluster_name: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// After how long without news a node counts as DEAD (e.g. 5m, 30s).
    #[arg(long, env = "RANGED_TIME_UNTIL_DEAD", default_value = "5m", value_parser = parse_duration)]
    pub time_until_dead: Duration,
    /// A range larger than this splits in two (bytes; KiB/MiB/GiB suffixes accepted).
    #[arg(long, env = "RANGED_RANGE_MAX_BYTES", default_value = "512MiB", value_parser = parse_size)]
    pub range_max_bytes: u64,
    /// The store's page cache: pages read or written are kept in memory up to this size
    /// (bytes; KiB/MiB/GiB suffixes accepted).
    #[arg(long, env = "RANGED_CACHE", default_value = "128MiB", value_parser = parse_size)]
    pub cache: u64,
    /// Half-life of the per-range load rates (queries/s, bytes/s, CPU/s).
    #[arg(long, env = "RANGED_STATS_HALF_LIFE", default_value = "10s", value_parser = parse_duration)]
    pub stats_half_life: Duration,
    /// How long a new node waits for any --join node to answer before it gives up.
    #[arg(long, env = "RANGED_JOIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub join_timeout: Duration,
    /// How many closed SQL sessions a node keeps for the Cluster API.
    #[arg(long, env = "RANGED_CLOSED_SESSION_CACHE_CAPACITY", default_value_t = crate::services::sql::session::DEFAULT_CLOSED_CAPACITY)]
    pub closed_session_capacity: usize,
    /// How long a node keeps closed SQL sessions.
    #[arg(long, env = "RANGED_CLOSED_SESSION_CACHE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub closed_session_ttl: Duration,
    /// Bytes one SQL statement may hold (rows read, sorted, built or written) before it fails
    /// with SQLSTATE 53200 (KiB/MiB/GiB suffixes accepted).
    #[arg(long, env = "RANGED_MAX_SQL_MEMORY_PER_STATEMENT", default_value = "64MiB", value_parser = parse_size)]
    pub max_sql_memory_per_statement: u64,
    /// Once serving, write the advertised addresses here as JSON (`rpc_addr`, `sql_addr`,
    /// `http_addr`): with port 0 in the address flags, this is how a supervisor or a test
    /// learns which ports the node got.
    #[arg(long, env = "RANGED_LISTENING_ADDRS_FILE")]
    pub listening_addrs_file: Option<PathBuf>,
    /// PostgreSQL connections served at once; beyond it a client gets FATAL 53300 "sorry, too
    /// many clients already".
    #[arg(long, env = "RANGED_MAX_SQL_CONNECTIONS", default_value_t = crate::services::sql::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sql_connections: u32,
    /// How long a PostgreSQL client may take from connecting to being authenticated (SSL
    /// request, startup packet and the whole password exchange).
    #[arg(long, env = "RANGED_SQL_STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub sql_startup_timeout: Duration,
    /// gRPC connections (other nodes, gateways, CLI clients) served at once; beyond it new
    /// ones are closed.
    #[arg(long, env = "RANGED_MAX_GRPC_CONNECTIONS", default_value_t = crate::services::node::DEFAULT_MAX_GRPC_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_grpc_connections: u32,
    /// How often an idle gRPC connection is pinged (unanswered for 20s, it is closed).
    #[arg(long, env = "RANGED_GRPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_timeout)]
    pub grpc_keepalive_interval: Duration,
    /// Testing only, unsafe: answer read-only KV batches from this node's own applied state,
    /// without the read lease or forwarding to the leaseholder, so reads may be stale. The
    /// nemesis test turns it on to show that its linearizability checker catches stale reads.
    #[arg(long, env = "RANGED_TESTING_STALE_FOLLOWER_READS", hide = true)]
    pub testing_stale_follower_reads: bool,
    /// Benchmarking only: replicate with one AppendEntries in flight per follower instead of
    /// the pipelined stream, to measure what pipelining gives (BENCHMARKS.md).
    #[arg(long, env = "RANGED_TESTING_SEQUENTIAL_RAFT_APPENDS", hide = true)]
    pub testing_sequential_raft_appends: bool,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Runtime flags shared by `ranged start` and `ranged gateway`.
#[derive(Debug, Args, Clone)]
pub struct RuntimeArgs {
    /// Threads running requests (default: one per CPU). Where several nodes share a few cores,
    /// one each avoids handing work between threads (see BENCHMARKS.md).
    #[arg(long, env = "RANGED_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

/// HTTP API flags shared by `ranged start` and `ranged gateway`.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Per-node deadline of the HTTP API's fan-outs.
    #[arg(long, env = "RANGED_FANOUT_TIMEOUT", default_value = "4s", value_parser = parse_duration)]
    pub fanout_timeout: Duration,
    /// Lifetime of HTTP API login sessions.
    #[arg(long, env = "RANGED_WEB_SESSION_TIMEOUT", default_value = "168h", value_parser = parse_duration)]
    pub web_session_timeout: Duration,
    /// How long a client may take to complete a TLS handshake (HTTP, and for `start` also SQL
    /// and gRPC).
    #[arg(long, env = "RANGED_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub tls_handshake_timeout: Duration,
    /// HTTP connections served at once; beyond it a client gets 503 with `Retry-After: 1`.
    #[arg(long, env = "RANGED_MAX_HTTP_CONNECTIONS", default_value_t = crate::gateway::serve::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_connections: u32,
    /// How long an HTTP/1 client may take to send a request's head (counted from when the
    /// server waits for one, so it also bounds an idle kept-alive HTTP/1 connection).
    #[arg(long, env = "RANGED_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub http_header_timeout: Duration,
    /// How long an HTTP connection may stay open with no request in flight.
    #[arg(long, env = "RANGED_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub http_idle_timeout: Duration,
}

/// Flags of `ranged gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Nodes to front (their --listen-addr), comma separated.
    #[arg(long, env = "RANGED_JOIN", value_delimiter = ',', required = true)]
    pub join: Vec<String>,
    /// Address for the HTTP API.
    #[arg(long, env = "RANGED_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Flags of `ranged demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, env = "RANGED_DEMO_NODES", default_value_t = 3)]
    pub nodes: usize,
    /// Run without TLS.
    #[arg(long, env = "RANGED_INSECURE")]
    pub insecure: bool,
    /// Where to write the demo's certificates (default: a temporary directory).
    #[arg(long, env = "RANGED_CERTS_DIR", conflicts_with = "insecure")]
    pub certs_dir: Option<PathBuf>,
    /// The admin user the demo creates.
    #[arg(long, env = "RANGED_DEMO_USER", default_value = "demo")]
    pub user: String,
    /// Its password (default: random, printed).
    #[arg(long, env = "RANGED_DEMO_PASSWORD")]
    pub password: Option<String>,
    /// SQL port of node 1; node N uses this + N - 1 (0: any free port).
    #[arg(long, env = "RANGED_DEMO_SQL_PORT", default_value_t = 26257)]
    pub sql_port: u16,
    /// HTTP port of node 1; node N uses this + N - 1.
    #[arg(long, env = "RANGED_DEMO_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Do not run the background workload.
    #[arg(long)]
    pub no_workload: bool,
}

/// TLS flags shared by every command that talks to nodes. Global, so that where a parent
/// command carries them (`kv`, `node`) they are accepted before or after its subcommand, as
/// CockroachDB accepts them.
#[derive(Debug, Args, Clone)]
pub struct SecurityArgs {
    /// Run without TLS or authentication (only for local testing).
    #[arg(long, env = "RANGED_INSECURE", global = true)]
    pub insecure: bool,
    /// Directory with ca.crt and node.crt/node.key (and client.<user>.crt/.key).
    #[arg(long, env = "RANGED_CERTS_DIR", default_value = DEFAULT_CERTS_DIR, conflicts_with = "insecure", global = true)]
    pub certs_dir: PathBuf,
}

/// Flags of client commands; global for the same reason as [`SecurityArgs`].
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The node to talk to (its --listen-addr / --advertise-addr).
    #[arg(long, env = "RANGED_HOST", default_value = DEFAULT_HOST, global = true)]
    pub host: String,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Flags of `ranged init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// File whose first line becomes root's password (stored only as a SCRAM verifier).
    #[arg(long, env = "RANGED_ROOT_PASSWORD_FILE")]
    pub root_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `ranged kv` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write KEY = VALUE.
    Put {
        /// The key (`\xNN` escapes allowed).
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value of KEY.
    Get {
        /// The key.
        key: String,
    },
    /// Print the keys in [START, END).
    Scan {
        /// First key.
        start: String,
        /// End key (exclusive); empty for the end of the keyspace.
        #[arg(default_value = "")]
        end: String,
        /// Print at most this many rows (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Split the range containing KEY so that KEY starts a new range.
    Split {
        /// The split key.
        key: String,
    },
}

/// `ranged workload` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Run a workload.
    Run {
        /// Which workload.
        #[command(subcommand)]
        workload: Workload,
    },
}

/// The workloads.
#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Point reads and upserts on kv.kv (created if missing).
    Kv(KvArgs),
}

/// Flags of `ranged workload run kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// postgres:// URL of any node (add sslrootcert=CA for TLS).
    #[arg(long, env = "RANGED_WORKLOAD_URL")]
    pub url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long to run (e.g. 30s, 5m); runs until Ctrl-C when absent.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Percent of operations that are reads.
    #[arg(long, default_value_t = 95)]
    pub read_percent: u8,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = crate::workload::KeyDistribution::Uniform)]
    pub distribution: crate::workload::KeyDistribution,
    /// Total operations per second (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    pub max_rate: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Seconds between progress lines.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub display_every: Duration,
}

/// `ranged node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List every node with its liveness.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also each node's replicas, leaseholders, unavailable and underreplicated ranges
        /// (its last reported store metrics).
        #[arg(long)]
        ranges: bool,
    },
    /// List the ranges a node holds, with Raft state and load.
    Ranges {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only the hottest ranges by this metric (leaseholder ranges of this node): qps, cpu,
        /// reads, writes, read-bytes, write-bytes.
        #[arg(long, value_parser = parse::parse_hot_metric)]
        hot: Option<LoadMetric>,
        /// With --hot: how many.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Move every replica off the given nodes, then mark them decommissioned (the API and
    /// the fan-out skip them from then on).
    Decommission {
        /// The node ids.
        #[arg(required = true, num_args = 1..)]
        node_ids: Vec<u64>,
        /// `all`: wait until the nodes hold no replica and mark them decommissioned; `none`:
        /// only start moving replicas off.
        #[arg(long, value_enum, default_value_t = Wait::All)]
        wait: Wait,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Make decommissioning nodes full members again (not once decommissioned).
    Recommission {
        /// The node ids.
        #[arg(required = true, num_args = 1..)]
        node_ids: Vec<u64>,
    },
}

/// What `ranged node decommission` waits for.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Wait {
    /// Until the nodes hold no replica, then mark them decommissioned.
    All,
    /// Return once the nodes are marked decommissioning.
    None,
}

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// `ranged cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create the cluster CA (ca.crt, and the key at --ca-key).
    CreateCa,
    /// Create node.crt/node.key valid for the given host names and IPs.
    CreateNode {
        /// Host names and IP addresses the node is reached by.
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Create client.USER.crt/.key.
    CreateClient {
        /// The user name (certificate CN).
        user: String,
    },
}

/// Flags shared by `ranged cert` subcommands; global, so they go before or after the subcommand.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory the certificates are written to.
    #[arg(long, env = "RANGED_CERTS_DIR", default_value = DEFAULT_CERTS_DIR, global = true)]
    pub certs_dir: PathBuf,
    /// The CA key file (default: ca.key in --certs-dir).
    #[arg(long, env = "RANGED_CA_KEY", global = true)]
    pub ca_key: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long, global = true)]
    pub overwrite: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_match_the_library_constants() {
        use crate::services::node::{DEFAULT_JOIN_TIMEOUT, DEFAULT_RANGE_MAX_BYTES};
        let cli = Cli::try_parse_from(["ranged", "start", "--insecure"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        let args = *args;
        assert_eq!(args.range_max_bytes, DEFAULT_RANGE_MAX_BYTES);
        assert_eq!(args.max_sql_memory_per_statement, crate::services::sql::limits::DEFAULT_MAX_STATEMENT_MEMORY);
        assert_eq!(args.cache, crate::services::engine::DEFAULT_CACHE_BYTES);
        assert_eq!(args.join_timeout, DEFAULT_JOIN_TIMEOUT);
        assert_eq!(args.time_until_dead, crate::services::membership::DEFAULT_TIME_UNTIL_DEAD);
        assert_eq!(args.stats_half_life, crate::services::load::DEFAULT_HALF_LIFE);
    }

    #[test]
    fn api_flag_defaults_match_the_library_constants() {
        let cli = Cli::try_parse_from(["ranged", "start", "--insecure"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        assert_eq!(args.api.fanout_timeout, crate::gateway::cluster::DEFAULT_TIMEOUT);
        assert_eq!(args.api.web_session_timeout, crate::gateway::DEFAULT_WEB_SESSION_TIMEOUT);
        let http = crate::gateway::serve::HttpLimits::default();
        assert_eq!(args.api.tls_handshake_timeout, crate::services::accept::DEFAULT_TLS_HANDSHAKE_TIMEOUT);
        assert_eq!(args.api.max_http_connections as usize, http.listener.max_connections);
        assert_eq!(args.api.http_header_timeout, http.header_timeout);
        assert_eq!(args.api.http_idle_timeout, http.idle_timeout);
    }

    #[test]
    fn connection_flag_defaults_match_the_library_constants() {
        let cli = Cli::try_parse_from(["ranged", "start", "--insecure"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        let defaults = crate::services::node::ConnectionSettings::default();
        assert_eq!(args.max_sql_connections as usize, defaults.sql.max_connections);
        assert_eq!(args.sql_startup_timeout, defaults.sql_startup_timeout);
        assert_eq!(args.max_grpc_connections as usize, defaults.grpc.max_connections);
        assert_eq!(args.grpc_keepalive_interval, defaults.grpc_keepalive_interval);
        assert!(Cli::try_parse_from(["ranged", "start", "--insecure", "--max-sql-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["ranged", "start", "--insecure", "--http-idle-timeout", "0s"]).is_err());
    }

    #[test]
    fn every_start_flag_has_an_environment_twin() {
        use clap::CommandFactory;
        let command = Cli::command();
        let start = command.find_subcommand("start").unwrap();
        for arg in start.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().to_string());
            assert!(env.as_deref().is_some_and(|e| e.starts_with("RANGED_")), "--{} has no env twin", arg.get_id());
        }
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }

    #[test]
    fn kv_flags_go_before_or_after_the_subcommand() {
        let before = parse(&["ranged", "kv", "--insecure", "put", "k", "v"]);
        let after = parse(&["ranged", "kv", "put", "k", "v", "--insecure"]);
        assert_eq!(format!("{before:?}"), format!("{after:?}"));
        let Command::Kv { client, command: KvCommand::Put { key, value } } = before.command else {
            panic!("not kv put")
        };
        assert!(client.security.insecure);
        assert_eq!((key.as_str(), value.as_str()), ("k", "v"));
    }

    #[test]
    fn node_status_takes_host_before_or_after() {
        let before = parse(&["ranged", "node", "--host", "n2:1", "status", "--format", "json"]);
        let after = parse(&["ranged", "node", "status", "--format", "json", "--host", "n2:1"]);
        assert_eq!(format!("{before:?}"), format!("{after:?}"));
        let Command::Node { client, command: NodeCommand::Status { format, .. } } = before.command else {
            panic!("not node status")
        };
        assert_eq!(client.host, "n2:1");
        assert_eq!(format, Format::Json);
    }

    #[test]
    fn certs_dir_still_conflicts_with_insecure_on_either_side() {
        for args in [
            ["ranged", "kv", "--insecure", "get", "k", "--certs-dir", "x"],
            ["ranged", "kv", "--certs-dir", "x", "get", "k", "--insecure"],
            ["ranged", "kv", "get", "k", "--certs-dir", "x", "--insecure"],
        ] {
            let err = Cli::parse_command_line(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict, "{args:?}");
        }
    }

    #[test]
    fn cert_flags_go_before_or_after_the_subcommand() {
        let before = parse(&["ranged", "cert", "--certs-dir", "d", "--overwrite", "create-client", "alice"]);
        let after = parse(&["ranged", "cert", "create-client", "alice", "--certs-dir", "d", "--overwrite"]);
        assert_eq!(format!("{before:?}"), format!("{after:?}"));
        let Command::Cert { cert, .. } = before.command else { panic!("not cert") };
        assert_eq!(cert.certs_dir, PathBuf::from("d"));
        assert!(cert.overwrite);
    }

    #[test]
    fn client_flags_keep_their_environment_twins() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        command.build();
        for path in [&["kv", "put"][..], &["node", "status"], &["init"]] {
            let mut sub = &command;
            for name in path {
                sub = sub.find_subcommand(name).unwrap();
            }
            for (flag, env) in
                [("host", "RANGED_HOST"), ("insecure", "RANGED_INSECURE"), ("certs_dir", "RANGED_CERTS_DIR")]
            {
                let arg = sub
                    .get_arguments()
                    .find(|a| a.get_id() == flag)
                    .unwrap_or_else(|| panic!("{path:?} lacks --{flag}"));
                assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{path:?} --{flag}");
            }
        }
    }
}
