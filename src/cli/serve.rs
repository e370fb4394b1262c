//! The server commands: `ranged start`, `ranged gateway` and `ranged demo`, and the
//! translation of their flags into library configs.

use std::sync::Arc;
use std::time::Duration;

use super::args::{ApiArgs, DemoArgs, GatewayArgs, SecurityArgs, StartArgs};
use super::parse::{advertised, bind_address, parse_locality};
use super::shutdown_signal;
use crate::gateway::Gateway;
use crate::gateway::cluster::ClusterClient;
use crate::gateway::node_client::GrpcConnector;
use crate::server::{Listeners, Node};
use crate::services::accept::ListenerLimits;
use crate::services::dialer::Dialer;
use crate::services::node::{ConnectionSettings, NodeConfig};
use crate::services::tls::TlsMaterials;

impl ApiArgs {
    /// The gateway settings these flags give (insecure is decided by the caller's TLS).
    pub fn gateway_config(&self) -> crate::gateway::Config {
        crate::gateway::Config {
            fanout_timeout: self.fanout_timeout,
            web_session_timeout: self.web_session_timeout,
            http: crate::gateway::serve::HttpLimits {
                listener: ListenerLimits {
                    max_connections: self.max_http_connections as usize,
                    tls_handshake_timeout: self.tls_handshake_timeout,
                },
                header_timeout: self.http_header_timeout,
                idle_timeout: self.http_idle_timeout,
            },
            ..Default::default()
        }
    }
}

/// Validates the flags of `ranged start` and loads its TLS materials, so that a typo fails
/// before anything binds. Addresses are advertised as the flags give them; a flag asking for
/// port 0 only gets its real port once `start` has bound the listener.
impl TryFrom<&StartArgs> for NodeConfig {
    type Error = String;

    fn try_from(args: &StartArgs) -> Result<Self, String> {
        let locality = parse_locality(&args.locality)?;
        let tls = node_tls(&args.security)?;
        bind_address(&args.listen_addr)?;
        bind_address(&args.sql_addr)?;
        bind_address(&args.http_addr)?;
        Ok(NodeConfig {
            advertise_addr: advertised(args.advertise_addr.as_deref().unwrap_or(&args.listen_addr), 0),
            sql_addr: advertised(&args.sql_addr, 0),
            http_addr: advertised(&args.http_addr, 0),
            join: seeds(&args.join),
            store: args.store.clone(),
            locality,
            cluster_name: args.cluster_name.clone(),
            tls,
            time_until_dead: args.time_until_dead,
            range_max_bytes: args.range_max_bytes,
            cache_bytes: args.cache,
            stats_half_life: args.stats_half_life,
            join_timeout: args.join_timeout,
            closed_session_capacity: args.closed_session_capacity,
            closed_session_ttl: args.closed_session_ttl,
            max_sql_memory_per_statement: args.max_sql_memory_per_statement,
            connections: ConnectionSettings {
                grpc: ListenerLimits {
                    max_connections: args.max_grpc_connections as usize,
                    tls_handshake_timeout: args.api.tls_handshake_timeout,
                },
                grpc_keepalive_interval: args.grpc_keepalive_interval,
                sql: ListenerLimits {
                    max_connections: args.max_sql_connections as usize,
                    tls_handshake_timeout: args.api.tls_handshake_timeout,
                },
                sql_startup_timeout: args.sql_startup_timeout,
            },
            testing_stale_follower_reads: args.testing_stale_follower_reads,
            testing_sequential_raft_appends: args.testing_sequential_raft_appends,
        })
    }
}

/// A server's TLS materials, `None` with `--insecure`.
fn node_tls(security: &SecurityArgs) -> Result<Option<TlsMaterials>, String> {
    if security.insecure {
        return Ok(None);
    }
    TlsMaterials::load_node(&security.certs_dir).map(Some).map_err(|err| format!("{err} (or pass --insecure)"))
}

/// The `--join` list without blanks (`a,,b` and a trailing comma are easy to type).
fn seeds(join: &[String]) -> Vec<String> {
    join.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Binds `flag`'s address; returns the listener and the port it got.
async fn listen(flag: &str) -> Result<(tokio::net::TcpListener, u16), String> {
    let listener = tokio::net::TcpListener::bind(bind_address(flag)?)
        .await
        .map_err(|err| format!("cannot listen on {flag}: {err}"))?;
    let port = listener.local_addr().map_err(|err| err.to_string())?.port();
    Ok((listener, port))
}

/// How many kernel-chosen ports `--listen-addr` with port 0 tries before giving up.
const RPC_PORT_ATTEMPTS: usize = 32;

/// Binds `--listen-addr`. Gossip uses the same port number over UDP, so with port 0 the
/// kernel's TCP port is kept only if that UDP port is free too (checked at once, in this
/// process, so the window before gossip binds it is a few milliseconds).
async fn listen_rpc(flag: &str) -> Result<(tokio::net::TcpListener, u16), String> {
    let addr = bind_address(flag)?;
    if addr.port() != 0 {
        return listen(flag).await;
    }
    for _ in 0..RPC_PORT_ATTEMPTS {
        let (listener, port) = listen(flag).await?;
        if std::net::UdpSocket::bind((addr.ip(), port)).is_ok() {
            return Ok((listener, port));
        }
    }
    Err(format!("cannot listen on {flag}: no port free for both TCP and UDP (gossip) in {RPC_PORT_ATTEMPTS} tries"))
}

/// The advertised addresses of `config` as `--listening-addrs-file` holds them.
fn listening_addrs(config: &NodeConfig) -> String {
    serde_json::json!({
        "rpc_addr": config.advertise_addr,
        "sql_addr": config.sql_addr,
        "http_addr": config.http_addr,
    })
    .to_string()
}

/// Writes `json` to `path` atomically (a reader never sees half a file).
fn write_listening_addrs(path: &std::path::Path, json: &str) -> Result<(), String> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, json)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|err| format!("cannot write --listening-addrs-file {}: {err}", path.display()))
}

/// `ranged start`: runs a node until Ctrl-C or SIGTERM.
pub async fn start(args: StartArgs) -> Result<(), String> {
    let config = NodeConfig::try_from(&args)?;
    let (rpc, rpc_port) = listen_rpc(&args.listen_addr).await?;
    let (sql, sql_port) = listen(&args.sql_addr).await?;
    let (http, http_port) = listen(&args.http_addr).await?;
    let config = NodeConfig {
        advertise_addr: advertised(args.advertise_addr.as_deref().unwrap_or(&args.listen_addr), rpc_port),
        sql_addr: advertised(&args.sql_addr, sql_port),
        http_addr: advertised(&args.http_addr, http_port),
        ..config
    };
    let (bind, advertise_addr, store) =
        (bind_address(&args.listen_addr)?, config.advertise_addr.clone(), config.store.clone());
    let listeners = Listeners { rpc, sql: Some(sql), http: Some(http) };
    let addrs = listening_addrs(&config);
    let node = Node::start(config, args.api.gateway_config(), listeners).await.map_err(|err| err.to_string())?;
    if let Some(path) = &args.listening_addrs_file {
        write_listening_addrs(path, &addrs)?;
    }
    tracing::info!(listen = %bind, advertise = %advertise_addr, store = %store.display(), "node started");
    node.run_until(shutdown_signal()).await.map_err(|err| err.to_string())?;
    tracing::info!("node stopped");
    Ok(())
}

/// `ranged gateway`: serves the HTTP API in front of `--join` nodes until Ctrl-C or SIGTERM.
pub async fn gateway(args: GatewayArgs) -> Result<(), String> {
    let tls = node_tls(&args.security)?;
    let (listener, _) = listen(&args.http_addr).await?;
    let connector = GrpcConnector::new(Arc::new(Dialer::new(tls.as_ref())));
    let cluster = ClusterClient::new(Arc::new(connector), seeds(&args.join), args.api.fanout_timeout);
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

/// `ranged demo`: runs an in-process cluster until Ctrl-C or SIGTERM, then cleans up.
pub async fn demo(args: DemoArgs) -> Result<(), String> {
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
    say(&demo.banner());
    shutdown_signal().await;
    say("stopping the demo cluster\n");
    demo.stop().await;
    Ok(())
}

/// Writes `text` to stdout in one write, ignoring a closed stdout: `println!` panics on a
/// broken pipe, and a reader that stops reading (`ranged demo | head`, a test that read the
/// banner) must not take the cluster down.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    fn start_args(flags: &[&str]) -> StartArgs {
        let cli = Cli::try_parse_from(["ranged", "start"].iter().chain(flags)).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        *args
    }

    #[test]
    fn start_flags_become_a_node_config() {
        let args = start_args(&[
            "--insecure",
            "--listen-addr",
            "127.0.0.1:0",
            "--advertise-addr",
            "node1:26357",
            "--join",
            "a:1,, b:2 ,",
            "--locality",
            "region=r1,zone=z1",
            "--cluster-name",
            "c1",
        ]);
        let config = NodeConfig::try_from(&args).unwrap();
        assert_eq!(config.advertise_addr, "node1:26357");
        assert_eq!(config.join, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(config.locality, vec![("region".into(), "r1".into()), ("zone".into(), "z1".into())]);
        assert_eq!(config.cluster_name, "c1");
        assert!(config.tls.is_none());
    }

    #[test]
    fn bad_start_flags_fail_before_binding() {
        assert!(NodeConfig::try_from(&start_args(&["--insecure", "--locality", "region"])).is_err());
        assert!(NodeConfig::try_from(&start_args(&["--insecure", "--sql-addr", "nonsense"])).is_err());
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_str().unwrap();
        let err = NodeConfig::try_from(&start_args(&["--certs-dir", certs])).unwrap_err();
        assert!(err.contains("--insecure"), "{err}");
    }
}
