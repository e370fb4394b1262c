//! In-process clusters on loopback: `n` real nodes in this process, each listener bound here
//! (port 0 unless a base port is asked for) and the bound addresses reported back, stores
//! under one directory. `ranged demo`, the benchmark harnesses and the in-process tests start
//! their clusters with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::server::{Listeners, Node};
use crate::services::error::{Error, Result};
use crate::services::membership::Liveness;
use crate::services::node::{ConnectionSettings, NodeConfig};
use crate::services::tls::TlsMaterials;

/// Where a kind of listener (SQL or HTTP) is bound on each node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Not served.
    Nowhere,
    /// Any free port on every node.
    AnyPort,
    /// Any free port, on the first node only.
    FirstNodeOnly,
    /// Node `i` (from 0) on this port + `i`.
    FromPort(u16),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Stores go to `<dir>/node<i>`.
    pub dir: PathBuf,
    /// TLS materials for every node; `None` runs insecure.
    pub tls: Option<TlsMaterials>,
    /// SQL listeners.
    pub sql: Listen,
    /// HTTP API listeners.
    pub http: Listen,
    /// Each node's join list is the first this many nodes (short lists at 100+ nodes).
    pub join_first: usize,
    /// Give node `i` the locality `region=local,zone=zone-<i>`.
    pub zones: bool,
    /// Connection limits and deadlines of the gRPC and SQL listeners.
    pub connections: ConnectionSettings,
    /// The HTTP API's settings (`insecure` is decided by `tls`).
    pub api: crate::gateway::Config,
    /// `--max-sql-memory-per-statement` of every node.
    pub statement_memory: u64,
}

impl LocalClusterOptions {
    /// `nodes` insecure nodes under `dir` with SQL and HTTP on any free port.
    pub fn new(nodes: usize, dir: &Path) -> Self {
        Self {
            nodes,
            dir: dir.to_path_buf(),
            tls: None,
            sql: Listen::AnyPort,
            http: Listen::AnyPort,
            join_first: 3,
            zones: false,
            connections: ConnectionSettings::default(),
            api: crate::gateway::Config::default(),
            statement_memory: crate::services::sql::limits::DEFAULT_MAX_STATEMENT_MEMORY,
        }
    }
}

/// A running in-process cluster.
pub struct LocalCluster {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    /// Each node's SQL address, if it serves SQL.
    pub sql_addrs: Vec<Option<SocketAddr>>,
    /// Each node's HTTP API address, if it serves it.
    pub http_addrs: Vec<Option<SocketAddr>>,
}

async fn bind(listen: Listen, node: usize, what: &str) -> Result<Option<TcpListener>> {
    let port = match listen {
        Listen::Nowhere => return Ok(None),
        Listen::FirstNodeOnly if node > 0 => return Ok(None),
        Listen::AnyPort | Listen::FirstNodeOnly => 0,
        Listen::FromPort(base) => base
            .checked_add(node as u16)
            .ok_or_else(|| Error::InvalidArgument(format!("{what} port {base} + {node} is out of range")))?,
    };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|err| Error::FailedPrecondition(format!("cannot listen on 127.0.0.1:{port} for {what}: {err}")))?;
    Ok(Some(listener))
}

fn local_addr(listener: &Option<TcpListener>) -> Result<Option<SocketAddr>> {
    listener.as_ref().map(|l| l.local_addr().map_err(Error::internal)).transpose()
}

impl LocalCluster {
    /// Binds every listener, then starts every node (none initialized yet: see
    /// [`LocalCluster::init`]).
    pub async fn start(options: &LocalClusterOptions) -> Result<LocalCluster> {
        if options.nodes == 0 {
            return Err(Error::InvalidArgument("at least one node is needed".into()));
        }
        let mut bound = Vec::with_capacity(options.nodes);
        for i in 0..options.nodes {
            let rpc = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|err| Error::FailedPrecondition(format!("cannot listen on 127.0.0.1:0 for gRPC: {err}")))?;
            let sql = bind(options.sql, i, "SQL").await?;
            let http = bind(options.http, i, "HTTP").await?;
            bound.push((rpc, sql, http));
        }
        let rpc_addrs: Vec<String> = bound
            .iter()
            .map(|(rpc, _, _)| rpc.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::internal)?;
        let join: Vec<String> = rpc_addrs.iter().take(options.join_first.max(1)).cloned().collect();
        let mut cluster = LocalCluster { nodes: Vec::new(), sql_addrs: Vec::new(), http_addrs: Vec::new() };
        for (i, (rpc, sql, http)) in bound.into_iter().enumerate() {
            let (sql_addr, http_addr) = (local_addr(&sql)?, local_addr(&http)?);
            let config = NodeConfig {
                sql_addr: sql_addr.map(|a| a.to_string()).unwrap_or_default(),
                http_addr: http_addr.map(|a| a.to_string()).unwrap_or_default(),
                locality: if options.zones {
                    vec![("region".into(), "local".into()), ("zone".into(), format!("zone-{}", i + 1))]
                } else {
                    Vec::new()
                },
                tls: options.tls.clone(),
                connections: options.connections,
                max_sql_memory_per_statement: options.statement_memory,
                ..NodeConfig::with_defaults(
                    rpc_addrs[i].clone(),
                    join.clone(),
                    options.dir.join(format!("node{}", i + 1)),
                )
            };
            let listeners = Listeners { rpc, sql, http };
            let node = match Node::start(config, options.api.clone(), listeners).await {
                Ok(node) => node,
                Err(err) => {
                    cluster.stop().await;
                    return Err(Error::FailedPrecondition(format!("starting node {}: {err}", i + 1)));
                }
            };
            cluster.nodes.push(node);
            cluster.sql_addrs.push(sql_addr);
            cluster.http_addrs.push(http_addr);
        }
        Ok(cluster)
    }

    /// Initializes the cluster through the first node; returns the cluster id.
    pub async fn init(&self) -> Result<String> {
        Ok(self.nodes[0].core().init(None).await?.0)
    }

    /// Waits until every node is a Raft member and LIVE as the first node sees it.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let count = self.nodes.len();
        let deadline = Instant::now() + timeout;
        loop {
            let core = self.nodes[0].core();
            let members = core.ranges(&[1]).await.ok().and_then(|r| r.first().map(|r| r.replicas.len()));
            let live = core
                .nodes()
                .await
                .map(|nodes| nodes.iter().filter(|n| n.liveness == Liveness::Live).count())
                .unwrap_or(0);
            if members == Some(count) && live == count {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "{count} nodes did not form a cluster within {timeout:?} ({} members, {live} live)",
                    members.unwrap_or(0)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shuts every node down (without draining).
    pub async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}
