//! The `ranged` command line: flag definitions (every flag has a `RANGED_*` environment twin),
//! their validation into library configs, and the client subcommands. `main.rs` calls
//! [`main`] and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tonic::transport::Channel;

use crate::gateway::Gateway;
use crate::gateway::cluster::ClusterClient;
use crate::gateway::node_client::GrpcConnector;
use crate::pb;
use crate::server::{Listeners, Node};
use crate::services::dialer::Dialer;
use crate::services::error::Error;
use crate::services::kv::{Op, OpResult};
use crate::services::load::LoadMetric;
use crate::services::node::NodeConfig;
use crate::services::tls::{CA_KEY, TlsMaterials};
use crate::services::{certs, keys, membership};

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
/// Default log filter of `ranged start` (override with RANGED_LOG). openraft logs every failed
/// attempt to reach a down peer at ERROR, twice a second; liveness already reports that.
const DEFAULT_NODE_LOG: &str = "info,openraft=off,chitchat=warn";
/// How long a client command waits for its node.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// ranged: a distributed SQL key-value database with a CockroachDB-compatible Cluster API.
#[derive(Debug, Parser)]
#[command(name = "ranged", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
        /// The KV operation.
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Node information.
    Node {
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
}

impl ApiArgs {
    /// The gateway settings these flags give (insecure is decided by the caller's TLS).
    pub fn gateway_config(&self) -> crate::gateway::Config {
        crate::gateway::Config {
            fanout_timeout: self.fanout_timeout,
            web_session_timeout: self.web_session_timeout,
            ..Default::default()
        }
    }
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

/// TLS flags shared by every command that talks to nodes.
#[derive(Debug, Args, Clone)]
pub struct SecurityArgs {
    /// Run without TLS or authentication (only for local testing).
    #[arg(long, env = "RANGED_INSECURE")]
    pub insecure: bool,
    /// Directory with ca.crt and node.crt/node.key (and client.<user>.crt/.key).
    #[arg(long, env = "RANGED_CERTS_DIR", default_value = DEFAULT_CERTS_DIR, conflicts_with = "insecure")]
    pub certs_dir: PathBuf,
}

/// Flags of client commands.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The node to talk to (its --listen-addr / --advertise-addr).
    #[arg(long, env = "RANGED_HOST", default_value = DEFAULT_HOST)]
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
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the value of KEY.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
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
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Split the range containing KEY so that KEY starts a new range.
    Split {
        /// The split key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
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

fn print_path_latency(p: &crate::bench::PathLatency) {
    let l = &p.latency;
    println!("{} {} {} {:.3} {:.3} {:.1}", p.path, l.requests, l.errors, l.p50_ms, l.p99_ms, l.ops_per_s);
}

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
}

/// `ranged node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List every node with its liveness.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the ranges a node holds, with Raft state and load.
    Ranges {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only the hottest ranges by this metric (leaseholder ranges of this node): qps, cpu,
        /// reads, writes, read-bytes, write-bytes.
        #[arg(long, value_parser = parse_hot_metric)]
        hot: Option<LoadMetric>,
        /// With --hot: how many.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Parses `--hot`: the API's `sort_by` names, with `-` or `_` between words.
fn parse_hot_metric(text: &str) -> Result<LoadMetric, String> {
    text.replace('-', "_").parse()
}

/// `ranged cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create the cluster CA (ca.crt, and the key at --ca-key).
    CreateCa(CertArgs),
    /// Create node.crt/node.key valid for the given host names and IPs.
    CreateNode {
        /// Host names and IP addresses the node is reached by.
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        cert: CertArgs,
    },
    /// Create client.USER.crt/.key.
    CreateClient {
        /// The user name (certificate CN).
        user: String,
        #[command(flatten)]
        cert: CertArgs,
    },
}

/// Flags shared by `ranged cert` subcommands.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory the certificates are written to.
    #[arg(long, env = "RANGED_CERTS_DIR", default_value = DEFAULT_CERTS_DIR)]
    pub certs_dir: PathBuf,
    /// The CA key file (default: ca.key in --certs-dir).
    #[arg(long, env = "RANGED_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    pub overwrite: bool,
}

/// Parses `300ms`, `30s`, `5m`, `2h`, `7d` (and plain seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("invalid duration {text:?} (examples: 500ms, 30s, 5m, 168h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {text:?} (use ms, s, m, h or d)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a byte size: `65536`, `64KiB`, `512MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("invalid size {text:?} (examples: 65536, 64KiB, 512MiB)"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("invalid size unit {unit:?} in {text:?}")),
    };
    value.checked_mul(factor).filter(|v| *v > 0).ok_or_else(|| format!("invalid size {text:?}"))
}

/// Parses `k=v,k2=v2` locality tiers.
pub fn parse_locality(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|tier| {
            let (key, value) =
                tier.split_once('=').ok_or_else(|| format!("invalid locality tier {tier:?}: expected key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(format!("invalid locality tier {tier:?}: expected key=value"));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Turns `:PORT` into `0.0.0.0:PORT` and resolves the address to bind.
pub fn bind_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') { format!("0.0.0.0{text}") } else { text.to_string() };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|err| format!("invalid address {text:?}: {err}"))?
        .next()
        .ok_or_else(|| format!("address {text:?} resolves to nothing"))
}

/// The address to advertise for a listener given as `flag` and bound to `bound`: an explicit
/// host is kept; an unspecified one (`:PORT`, `0.0.0.0`) becomes this machine's host name.
/// Port 0 becomes the port actually bound.
pub fn advertised(flag: &str, bound_port: u16) -> String {
    let (host, port) = match flag.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.to_string()),
        None => (flag.to_string(), bound_port.to_string()),
    };
    let port = if port == "0" || port.is_empty() { bound_port.to_string() } else { port };
    let host = if host.is_empty() || host == "0.0.0.0" || host == "[::]" {
        sysinfo::System::host_name().unwrap_or_else(|_| "localhost".to_string())
    } else {
        host
    };
    format!("{host}:{port}")
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ERROR: {message}");
    ExitCode::FAILURE
}

fn install_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RANGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = err.print();
                return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's first line, without its usage block.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("ERROR: {first} (see 'ranged --help')");
            return ExitCode::from(2);
        }
    };
    crate::install_crypto_provider();
    let workers = match &cli.command {
        Command::Start(args) => args.runtime.worker_threads,
        Command::Gateway(args) => args.runtime.worker_threads,
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers as usize);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start the runtime: {err}")),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Start(args) => {
            install_tracing(DEFAULT_NODE_LOG);
            match start(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => fail(message),
            }
        }
        Command::Workload { command: WorkloadCommand::Run { workload: Workload::Kv(args) } } => {
            install_tracing("warn");
            let options = crate::workload::KvOptions {
                url: args.url,
                concurrency: args.concurrency,
                duration: args.duration,
                read_percent: args.read_percent,
                distribution: args.distribution,
                max_rate: args.max_rate,
                keys: args.keys,
                value_bytes: args.value_bytes,
                display_every: args.display_every,
                print: true,
            };
            match crate::workload::run_kv(options, shutdown_signal()).await {
                Ok(summary) if summary.errors == 0 => ExitCode::SUCCESS,
                Ok(summary) => fail(format!("{} operations failed", summary.errors)),
                Err(message) => fail(message),
            }
        }
        Command::Gateway(args) => {
            install_tracing("info");
            match gateway(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => fail(message),
            }
        }
        Command::Bench {
            command:
                BenchCommand::Latency { url, grpc_hot_ranges, pg_upsert, etcd_put, limit, keys, connections, duration },
        } => {
            install_tracing("warn");
            let target = match (url, grpc_hot_ranges, pg_upsert, etcd_put) {
                (Some(url), None, None, None) => crate::bench::Target::Http(url),
                (None, Some(address), None, None) => crate::bench::Target::GrpcHotRanges { address, limit },
                (None, None, Some(url), None) => crate::bench::Target::PgUpsert { url, keys },
                (None, None, None, Some(address)) => crate::bench::Target::EtcdPut { address, keys },
                _ => return fail("give one of --url, --grpc-hot-ranges, --pg-upsert or --etcd-put"),
            };
            match crate::bench::latency(target, connections, duration).await {
                Ok(l) => {
                    println!("{} {} {:.3} {:.3} {:.1}", l.requests, l.errors, l.p50_ms, l.p99_ms, l.ops_per_s);
                    ExitCode::SUCCESS
                }
                Err(message) => fail(message),
            }
        }
        Command::Bench { command: BenchCommand::Fanout { nodes, connections, duration } } => {
            // A leader replicating to 99 learners on two cores misses some 150 ms heartbeat
            // deadlines; openraft logs each as an error, which would drown the result.
            install_tracing("error,openraft=off");
            match crate::bench::fanout(nodes, connections, duration).await {
                Ok(paths) => {
                    for p in paths {
                        print_path_latency(&p);
                    }
                    ExitCode::SUCCESS
                }
                Err(message) => fail(message),
            }
        }
        Command::Bench { command: BenchCommand::HotRanges { ranges, connections, duration } } => {
            install_tracing("error");
            match crate::bench::hot_ranges(ranges, connections, duration).await {
                Ok(p) => {
                    print_path_latency(&p);
                    ExitCode::SUCCESS
                }
                Err(message) => fail(message),
            }
        }
        Command::Demo(args) => {
            install_tracing("warn,openraft=error");
            match demo(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => fail(message),
            }
        }
        other => {
            install_tracing("warn");
            match client_command(other).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(err),
            }
        }
    }
}

async fn start(args: StartArgs) -> Result<(), String> {
    let locality = parse_locality(&args.locality)?;
    let tls = if args.security.insecure {
        None
    } else {
        Some(TlsMaterials::load_node(&args.security.certs_dir).map_err(|err| format!("{err} (or pass --insecure)"))?)
    };
    let bind = bind_address(&args.listen_addr)?;
    // Validate the advertised SQL and HTTP addresses now, so a typo fails at start.
    bind_address(&args.sql_addr)?;
    bind_address(&args.http_addr)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen_addr))?;
    let port = listener.local_addr().map_err(|err| err.to_string())?.port();
    let advertise_addr = advertised(args.advertise_addr.as_deref().unwrap_or(&args.listen_addr), port);
    let config = NodeConfig {
        advertise_addr: advertise_addr.clone(),
        sql_addr: advertised(&args.sql_addr, 0),
        http_addr: advertised(&args.http_addr, 0),
        join: args.join.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        store: args.store,
        locality,
        cluster_name: args.cluster_name,
        tls,
        time_until_dead: args.time_until_dead,
        range_max_bytes: args.range_max_bytes,
        stats_half_life: args.stats_half_life,
        join_timeout: args.join_timeout,
        closed_session_capacity: args.closed_session_capacity,
        closed_session_ttl: args.closed_session_ttl,
    };
    let store = config.store.clone();
    let sql_listener = tokio::net::TcpListener::bind(bind_address(&args.sql_addr)?)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.sql_addr))?;
    let sql_port = sql_listener.local_addr().map_err(|err| err.to_string())?.port();
    let http_listener = tokio::net::TcpListener::bind(bind_address(&args.http_addr)?)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.http_addr))?;
    let http_port = http_listener.local_addr().map_err(|err| err.to_string())?.port();
    let config = NodeConfig {
        sql_addr: advertised(&args.sql_addr, sql_port),
        http_addr: advertised(&args.http_addr, http_port),
        ..config
    };
    let listeners = Listeners { rpc: listener, sql: Some(sql_listener), http: Some(http_listener) };
    let node = Node::start(config, args.api.gateway_config(), listeners).await.map_err(|err| err.to_string())?;
    tracing::info!(listen = %bind, advertise = %advertise_addr, store = %store.display(), "node started");
    node.run_until(shutdown_signal()).await.map_err(|err| err.to_string())?;
    tracing::info!("node stopped");
    Ok(())
}

async fn gateway(args: GatewayArgs) -> Result<(), String> {
    let tls = if args.security.insecure {
        None
    } else {
        Some(TlsMaterials::load_node(&args.security.certs_dir).map_err(|err| format!("{err} (or pass --insecure)"))?)
    };
    let listener = tokio::net::TcpListener::bind(bind_address(&args.http_addr)?)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.http_addr))?;
    let seeds: Vec<String> = args.join.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let connector = GrpcConnector::new(std::sync::Arc::new(Dialer::new(tls.as_ref())));
    let cluster = ClusterClient::new(std::sync::Arc::new(connector), seeds, args.api.fanout_timeout);
    let config = crate::gateway::Config { insecure: tls.is_none(), ..args.api.gateway_config() };
    let server_tls =
        tls.as_ref().map(|t| t.rustls_server(&[b"h2", b"http/1.1"])).transpose().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let server = crate::gateway::run(listener, Gateway::new(cluster, config), server_tls, stop_rx);
    tracing::info!(http = %local, "gateway serving /api/v2");
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let options = crate::demo::DemoOptions {
        nodes: args.nodes,
        insecure: args.insecure,
        certs_dir: args.certs_dir,
        user: args.user,
        password: args.password,
        sql_port: args.sql_port,
        http_port: args.http_port,
        no_workload: args.no_workload,
    };
    let demo = crate::demo::Demo::start(&options).await.map_err(|err| err.to_string())?;
    println!("{}", demo.banner());
    shutdown_signal().await;
    println!("stopping the demo cluster");
    demo.stop().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM: the one shutdown signal of every server.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// A channel to the node a client command names.
pub async fn connect(client: &ClientArgs) -> Result<Channel, Error> {
    let tls = if client.security.insecure {
        None
    } else {
        Some(TlsMaterials::load_client(&client.security.certs_dir, "root")?)
    };
    let dialer = Dialer::new(tls.as_ref());
    let endpoint = dialer.endpoint(&client.host)?.timeout(CLIENT_TIMEOUT);
    endpoint
        .connect()
        .await
        .map_err(|err| Error::Unavailable(format!("cannot reach node at {}: {}", client.host, error_chain(&err))))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn kv(client: &ClientArgs, ops: Vec<Op>) -> Result<Vec<OpResult>, Error> {
    let channel = connect(client).await?;
    let mut kv = pb::kv_service_client::KvServiceClient::new(channel);
    let reply = kv.batch(pb::BatchRequest { ops: ops.into_iter().map(Into::into).collect(), forwarded: false }).await?;
    Ok(reply.into_inner().results.into_iter().map(Into::into).collect())
}

fn user_key(text: &str) -> Result<Vec<u8>, Error> {
    keys::parse_user_key(text).map_err(Error::InvalidArgument)
}

async fn client_command(command: Command) -> Result<(), Error> {
    match command {
        Command::Start(_)
        | Command::Demo(_)
        | Command::Gateway(_)
        | Command::Workload { .. }
        | Command::Bench { .. } => {
            unreachable!("handled by run")
        }
        Command::Init(args) => {
            let root_password = match &args.root_password_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|err| Error::InvalidArgument(format!("cannot read {}: {err}", path.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            };
            if args.root_password_file.is_some() && root_password.is_empty() {
                return Err(Error::InvalidArgument("the root password file is empty".into()));
            }
            let mut client = pb::node_service_client::NodeServiceClient::new(connect(&args.client).await?);
            let reply = client.init(pb::InitRequest { root_password }).await?.into_inner();
            println!("Cluster successfully initialized (cluster id {})", reply.cluster_id);
        }
        Command::Kv { command } => match command {
            KvCommand::Put { key, value, client } => {
                kv(&client, vec![Op::Put { key: user_key(&key)?, value: value.into_bytes() }]).await?;
            }
            KvCommand::Get { key, client } => {
                let key = user_key(&key)?;
                let mut results = kv(&client, vec![Op::Get { key: key.clone() }]).await?;
                match results.pop().and_then(|r| r.value) {
                    Some(value) => println!("{}", String::from_utf8_lossy(&value)),
                    None => return Err(Error::NotFound(format!("key {} not found", keys::pretty(&key)))),
                }
            }
            KvCommand::Scan { start, end, limit, client } => {
                let op = Op::Scan { start: user_key(&start)?, end: user_key(&end)?, limit };
                for (key, value) in kv(&client, vec![op]).await?.remove(0).rows {
                    println!("{}\t{}", keys::pretty(&key), String::from_utf8_lossy(&value));
                }
            }
            KvCommand::Split { key, client } => {
                let mut kv = pb::kv_service_client::KvServiceClient::new(connect(&client).await?);
                let reply = kv
                    .admin_split(pb::AdminSplitRequest { split_key: user_key(&key)?.into(), forwarded: false })
                    .await?
                    .into_inner();
                println!("split: r{} | r{}", reply.left_range_id, reply.right_range_id);
            }
        },
        Command::Node { command } => match command {
            NodeCommand::Status { format, client } => {
                let mut status = pb::status_service_client::StatusServiceClient::new(connect(&client).await?);
                let nodes = status.nodes(pb::NodesRequest {}).await?.into_inner().nodes;
                print_nodes(&nodes, format);
            }
            NodeCommand::Ranges { format, hot, limit, client } => {
                let mut status = pb::status_service_client::StatusServiceClient::new(connect(&client).await?);
                let ranges = match hot {
                    Some(metric) => {
                        let request = pb::HotRangesRequest { limit, sort_by: pb::HotRangesSort::from(metric) as i32 };
                        status.hot_ranges(request).await?.into_inner().ranges
                    }
                    None => {
                        status
                            .ranges(pb::RangesRequest { range_ids: Vec::new(), ..Default::default() })
                            .await?
                            .into_inner()
                            .ranges
                    }
                };
                print_ranges(&ranges, format);
            }
        },
        Command::Cert { command } => {
            let ca_key = |args: &CertArgs| args.ca_key.clone().unwrap_or_else(|| args.certs_dir.join(CA_KEY));
            match command {
                CertCommand::CreateCa(args) => certs::create_ca(&args.certs_dir, &ca_key(&args), args.overwrite)?,
                CertCommand::CreateNode { hosts, cert } => {
                    certs::create_node(&cert.certs_dir, &ca_key(&cert), &hosts, cert.overwrite)?
                }
                CertCommand::CreateClient { user, cert } => {
                    certs::create_client(&cert.certs_dir, &ca_key(&cert), &user, cert.overwrite)?
                }
            }
        }
    }
    Ok(())
}

fn print_nodes(nodes: &[pb::NodeEntry], format: Format) {
    let rows: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| {
            let d = node.descriptor.clone().unwrap_or_default();
            let locality: Vec<String> = d
                .locality
                .map(|l| l.tiers.into_iter().map(|t| format!("{}={}", t.key, t.value)).collect())
                .unwrap_or_default();
            serde_json::json!({
                "id": d.node_id,
                "address": d.address,
                "sql_address": d.sql_address,
                "build": d.build_tag,
                "started_at": d.started_at,
                "locality": locality.join(","),
                "liveness": membership::Liveness::from_wire(node.liveness).name(),
                "is_live": node.liveness == membership::Liveness::Live as i32,
            })
        })
        .collect();
    match format {
        Format::Json => println!("{}", serde_json::Value::Array(rows)),
        Format::Table => {
            println!("{:<4} {:<24} {:<24} {:<10} {:<12} locality", "id", "address", "sql_address", "build", "liveness");
            for row in rows {
                println!(
                    "{:<4} {:<24} {:<24} {:<10} {:<12} {}",
                    row["id"].to_string(),
                    row["address"].as_str().unwrap_or_default(),
                    row["sql_address"].as_str().unwrap_or_default(),
                    row["build"].as_str().unwrap_or_default(),
                    row["liveness"].as_str().unwrap_or_default(),
                    row["locality"].as_str().unwrap_or_default()
                );
            }
        }
    }
}

fn print_ranges(ranges: &[pb::RangeInfo], format: Format) {
    let rows: Vec<serde_json::Value> = ranges
        .iter()
        .map(|info| {
            let d = info.descriptor.clone().unwrap_or_default();
            let raft = info.raft.clone().unwrap_or_default();
            let load = info.load.unwrap_or_default();
            serde_json::json!({
                "range_id": d.range_id,
                "start_key": crate::services::sql::value::pretty_any(&d.start_key),
                "end_key": crate::services::sql::value::pretty_any_end(&d.end_key),
                "replicas": d.replicas.iter().map(|r| r.node_id).collect::<Vec<_>>(),
                "leaseholder": raft.leader_id,
                "term": raft.term,
                "applied_index": raft.applied_index,
                "commit_index": raft.commit_index,
                "keys": info.key_count,
                "bytes": info.live_bytes,
                "qps": load.queries_per_second,
                "reads_per_second": load.reads_per_second,
                "writes_per_second": load.writes_per_second,
                "read_bytes_per_second": load.read_bytes_per_second,
                "write_bytes_per_second": load.write_bytes_per_second,
                "cpu_time_per_second": load.cpu_time_per_second,
            })
        })
        .collect();
    match format {
        Format::Json => println!("{}", serde_json::Value::Array(rows)),
        Format::Table => {
            println!(
                "{:<6} {:<24} {:<24} {:<10} {:<6} {:>8} {:>10} {:>10}",
                "range", "start", "end", "replicas", "lease", "keys", "bytes", "qps"
            );
            for row in rows {
                println!(
                    "{:<6} {:<24} {:<24} {:<10} {:<6} {:>8} {:>10} {:>10.1}",
                    row["range_id"].to_string(),
                    row["start_key"].as_str().unwrap_or_default(),
                    row["end_key"].as_str().unwrap_or_default(),
                    row["replicas"].to_string(),
                    row["leaseholder"].to_string(),
                    row["keys"].to_string(),
                    row["bytes"].to_string(),
                    row["qps"].as_f64().unwrap_or_default()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("168h").unwrap(), Duration::from_secs(168 * 3600));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flag_defaults_match_the_library_constants() {
        use crate::services::node::{DEFAULT_JOIN_TIMEOUT, DEFAULT_RANGE_MAX_BYTES};
        let cli = Cli::try_parse_from(["ranged", "start", "--insecure"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        let args = *args;
        assert_eq!(args.range_max_bytes, DEFAULT_RANGE_MAX_BYTES);
        assert_eq!(args.join_timeout, DEFAULT_JOIN_TIMEOUT);
        assert_eq!(args.time_until_dead, membership::DEFAULT_TIME_UNTIL_DEAD);
        assert_eq!(args.stats_half_life, crate::services::load::DEFAULT_HALF_LIFE);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12XB").is_err());
    }

    #[test]
    fn locality_parses_tiers_in_order() {
        assert_eq!(
            parse_locality("region=us-east1,zone=b").unwrap(),
            vec![("region".into(), "us-east1".into()), ("zone".into(), "b".into())]
        );
        assert!(parse_locality("").unwrap().is_empty());
        assert!(parse_locality("region").is_err());
        assert!(parse_locality("=x").is_err());
    }

    #[test]
    fn addresses_bind_and_advertise() {
        assert_eq!(bind_address(":26357").unwrap().to_string(), "0.0.0.0:26357");
        assert_eq!(bind_address("127.0.0.1:0").unwrap().port(), 0);
        assert!(bind_address("nonsense").is_err());
        assert_eq!(advertised("127.0.0.1:0", 4567), "127.0.0.1:4567");
        assert_eq!(advertised("node1:26357", 1), "node1:26357");
        assert!(advertised(":26357", 26357).ends_with(":26357"));
        assert!(!advertised(":26357", 26357).starts_with(':'));
    }

    #[test]
    fn api_flag_defaults_match_the_library_constants() {
        let cli = Cli::try_parse_from(["ranged", "start", "--insecure"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        assert_eq!(args.api.fanout_timeout, crate::gateway::cluster::DEFAULT_TIMEOUT);
        assert_eq!(args.api.web_session_timeout, crate::gateway::DEFAULT_WEB_SESSION_TIMEOUT);
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
}
