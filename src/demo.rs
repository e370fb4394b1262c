//! `ranged demo`: the embedded default. Starts a cluster of in-process nodes on loopback with
//! temporary stores and freshly generated certificates, initializes it, prints how to reach
//! it, and on Ctrl-C stops every node and removes what it created.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::services::error::{Error, Result};
use crate::services::node::{Node, NodeConfig};
use crate::services::tls::{CA_CERT, CA_KEY, TlsMaterials};
use crate::services::{certs, load, membership, node};

/// What `ranged demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Skip TLS.
    pub insecure: bool,
    /// Where certificates go (default: inside the temporary directory).
    pub certs_dir: Option<PathBuf>,
}

/// A running demo cluster.
pub struct Demo {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    /// The directory holding stores (and certificates unless `--certs-dir` was given).
    pub dir: tempfile::TempDir,
    /// The certificates directory, if secure.
    pub certs_dir: Option<PathBuf>,
    /// The cluster id.
    pub cluster_id: String,
}

/// How long the demo waits for its nodes to form one Raft group.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Demo {
    /// Starts and initializes the demo cluster.
    pub async fn start(options: &DemoOptions) -> Result<Demo> {
        if options.nodes == 0 || options.nodes > 9 {
            return Err(Error::InvalidArgument("--nodes must be between 1 and 9".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("ranged-demo-")
            .tempdir()
            .map_err(|err| Error::FailedPrecondition(format!("cannot create a temporary directory: {err}")))?;
        let certs_dir = if options.insecure {
            None
        } else {
            let certs_dir = options.certs_dir.clone().unwrap_or_else(|| dir.path().join("certs"));
            if !certs_dir.join(CA_CERT).exists() {
                let ca_key = certs_dir.join(CA_KEY);
                certs::create_ca(&certs_dir, &ca_key, false)?;
                certs::create_node(&certs_dir, &ca_key, &["localhost".into(), "127.0.0.1".into()], false)?;
                certs::create_client(&certs_dir, &ca_key, "root", false)?;
            }
            Some(certs_dir)
        };
        let tls = certs_dir.as_deref().map(TlsMaterials::load_node).transpose()?;
        let mut listeners = Vec::new();
        for _ in 0..options.nodes {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|err| Error::FailedPrecondition(format!("cannot listen on loopback: {err}")))?;
            listeners.push(listener);
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::internal)?;
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = NodeConfig {
                advertise_addr: addrs[i].clone(),
                sql_addr: format!("127.0.0.1:{}", 26257 + i),
                http_addr: format!("127.0.0.1:{}", 8080 + i),
                join: addrs.clone(),
                store: dir.path().join(format!("node{}", i + 1)),
                locality: vec![("region".into(), "local".into()), ("zone".into(), format!("zone-{}", i + 1))],
                cluster_name: String::new(),
                tls: tls.clone(),
                time_until_dead: membership::DEFAULT_TIME_UNTIL_DEAD,
                range_max_bytes: node::DEFAULT_RANGE_MAX_BYTES,
                stats_half_life: load::DEFAULT_HALF_LIFE,
                join_timeout: node::DEFAULT_JOIN_TIMEOUT,
                closed_session_capacity: crate::services::sql::session::DEFAULT_CLOSED_CAPACITY,
                closed_session_ttl: crate::services::sql::session::DEFAULT_CLOSED_TTL,
            };
            nodes.push(Node::start(config, listener, None).await?);
        }
        let (cluster_id, _) = nodes[0].core().init(None).await?;
        let demo = Demo { nodes, dir, certs_dir, cluster_id };
        demo.wait_ready().await?;
        Ok(demo)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let core = self.nodes[0].core();
            let members = core.ranges(&[1]).await.map(|r| r.first().map(|r| r.replicas.len()));
            let live = core
                .nodes()
                .await
                .map(|nodes| nodes.iter().filter(|n| n.liveness == membership::Liveness::Live).count());
            if matches!(members, Ok(Some(n)) if n == self.nodes.len()) && matches!(live, Ok(n) if n == self.nodes.len())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable("demo nodes did not form a cluster in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text printed once the cluster is up.
    pub fn banner(&self) -> String {
        let security = match &self.certs_dir {
            Some(dir) => format!("--certs-dir {}", dir.display()),
            None => "--insecure".to_string(),
        };
        let first = self.nodes[0].listen_addr();
        let mut text = format!("ranged demo: {} nodes on loopback, cluster {}\n", self.nodes.len(), self.cluster_id);
        for (i, node) in self.nodes.iter().enumerate() {
            text.push_str(&format!("  node {}: rpc {}\n", i + 1, node.listen_addr()));
        }
        if let Some(dir) = &self.certs_dir {
            text.push_str(&format!("CA certificate: {}\n", dir.join(CA_CERT).display()));
        }
        text.push_str(&format!(
            "Try:\n  ranged node status --host {first} {security}\n  ranged kv put hello world --host {first} {security}\n  ranged node ranges --host {first} {security}\n"
        ));
        text.push_str("The SQL listener (issue #3) and the HTTP API (issue #4) are not served yet.\n");
        text.push_str("Press Ctrl-C to stop; the demo removes its temporary stores.\n");
        text
    }

    /// Stops every node and removes the temporary directory.
    pub async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
        drop(self.dir);
    }
}
