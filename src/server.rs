//! Server assembly: the one place that wires a node's listeners together — internal gRPC
//! (with the StatusService), PostgreSQL and the HTTP API — around its [`NodeCore`]. It
//! imports the node, the SQL layer and the gateway; nothing in them imports it. The node's
//! embedded API reaches its own node in-process ([`LocalNode`]) and dials only the others.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Request;

use crate::gateway::cluster::ClusterClient;
use crate::gateway::node_client::{GrpcConnector, NodeClient};
use crate::gateway::{self, Gateway};
use crate::pb;
use crate::pb::status_service_server::StatusService;
use crate::services::error::{Error, Result};
use crate::services::grpc::{self, StatusApi};
use crate::services::kv::{Op, OpResult};
use crate::services::metrics::SqlStats;
use crate::services::node::{NodeConfig, NodeCore};
use crate::services::scan::{ScanPage, ScanRequest};
use crate::services::sql::catalog::Catalog;
use crate::services::sql::session::SessionRegistry;
use crate::services::sql::{self, SqlHost};
use crate::services::status::RangeSummary;

/// How long the SQL and HTTP servers get to finish their connections at shutdown.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the gRPC server gets to finish its calls at shutdown (after Raft stopped).
const GRPC_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The listeners a node serves on, bound by the caller (port 0 in tests).
pub struct Listeners {
    /// Internal gRPC (and, by port number, gossip).
    pub rpc: TcpListener,
    /// PostgreSQL.
    pub sql: Option<TcpListener>,
    /// The HTTP API.
    pub http: Option<TcpListener>,
}

/// A started node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    core: Arc<NodeCore>,
    grpc: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    grpc_stop: Option<tokio::sync::oneshot::Sender<()>>,
    fatal: watch::Receiver<Option<String>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Node {
    /// Starts a node serving gRPC, and SQL and HTTP when given those listeners; its HTTP API
    /// runs with `api` (insecure exactly when the node is).
    pub async fn start(config: NodeConfig, api: gateway::Config, listeners: Listeners) -> Result<Node> {
        let Listeners { rpc, sql: sql_listener, http: http_listener } = listeners;
        let listen_addr = rpc.local_addr().map_err(Error::internal)?;
        let (core, fatal) = NodeCore::open(config, listen_addr).await?;
        let catalog = Arc::new(Catalog::new(core.clone()));
        let status = StatusApi::new(core.clone(), catalog.clone());
        let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel();
        let grpc = grpc::spawn_server(core.clone(), status.clone(), rpc, async {
            let _ = grpc_stopped.await;
        })?;
        let (stop, stopped) = watch::channel(false);
        let mut servers = Vec::new();
        let tls = core.config().tls.clone();
        if let Some(listener) = sql_listener {
            let connections = core.config().connections;
            let settings = sql::ServerSettings {
                statement_memory: core.config().max_sql_memory_per_statement,
                limits: connections.sql,
                startup_timeout: connections.sql_startup_timeout,
            };
            servers.push(sql::spawn_server(core.clone(), catalog, listener, tls.as_ref(), settings, stopped.clone())?);
        }
        if let Some(listener) = http_listener {
            let own_address = core.config().advertise_addr.clone();
            let local = Arc::new(LocalNode { core: core.clone(), status });
            let connector = GrpcConnector::new(core.dialer().clone()).with_local(own_address.clone(), local);
            // The node's own gateway asks itself first, then the --join nodes.
            let mut seeds = vec![own_address];
            seeds.extend(core.peers());
            let cluster = ClusterClient::new(Arc::new(connector), seeds, api.fanout_timeout);
            let api = gateway::Config { insecure: tls.is_none(), ..api };
            let server_tls = tls.as_ref().map(|tls| tls.rustls_server(&[b"h2", b"http/1.1"])).transpose()?;
            servers.push(gateway::run(listener, Gateway::new(cluster, api), server_tls, stopped.clone()));
        }
        core.resume().await?;
        Ok(Node { core, grpc, grpc_stop: Some(grpc_stop), fatal, servers, stop })
    }

    /// The shared core (for in-process tests and harnesses).
    pub fn core(&self) -> &Arc<NodeCore> {
        &self.core
    }

    /// The address the gRPC listener is bound to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.core.listen_addr()
    }

    /// Resolves when the node hits an error it cannot run past (e.g. no `--join` node reachable).
    pub async fn fatal_error(&mut self) -> String {
        loop {
            if let Some(message) = self.fatal.borrow().clone() {
                return message;
            }
            if self.fatal.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Runs until `shutdown` resolves (then drains and stops) or a fatal error occurs.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let outcome = tokio::select! {
            _ = shutdown => Ok(()),
            message = self.fatal_error() => Err(Error::FailedPrecondition(message)),
        };
        if outcome.is_ok() {
            tracing::info!("draining");
            self.core.drain().await;
        }
        self.shutdown().await;
        outcome
    }

    /// Stops serving and shuts Raft and gossip down (without draining first).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.grpc_stop.take() {
            let _ = stop.send(());
        }
        let _ = self.stop.send(true);
        for server in self.servers.drain(..) {
            let _ = tokio::time::timeout(SERVER_STOP_TIMEOUT, server).await;
        }
        self.core.stop().await;
        let _ = tokio::time::timeout(GRPC_STOP_TIMEOUT, &mut self.grpc).await;
    }
}

#[async_trait::async_trait]
impl SqlHost for NodeCore {
    fn node_id(&self) -> Option<u64> {
        self.active().ok().map(|active| active.node_id)
    }

    async fn scan_page(&self, request: ScanRequest) -> Result<ScanPage> {
        NodeCore::scan_page(self, request, None).await
    }

    async fn ranges_in_span(&self, start: &[u8], end: &[u8]) -> Result<Vec<RangeSummary>> {
        NodeCore::ranges_in_span(self, start, end).await
    }

    fn sessions(&self) -> &SessionRegistry {
        NodeCore::sessions(self)
    }

    fn sql_stats(&self) -> &SqlStats {
        NodeCore::sql_stats(self)
    }
}

/// The gateway's client of its own node: the StatusService and KV calls made in-process,
/// without a socket, TLS or protobuf encoding.
struct LocalNode {
    core: Arc<NodeCore>,
    status: StatusApi,
}

#[async_trait::async_trait]
impl NodeClient for LocalNode {
    async fn nodes(&self) -> Result<Vec<pb::NodeEntry>> {
        Ok(self.status.nodes(Request::new(pb::NodesRequest {})).await?.into_inner().nodes)
    }

    async fn ranges(&self, request: pb::RangesRequest) -> Result<pb::RangesResponse> {
        Ok(self.status.ranges(Request::new(request)).await?.into_inner())
    }

    async fn hot_ranges(&self, request: pb::HotRangesRequest) -> Result<pb::HotRangesResponse> {
        Ok(self.status.hot_ranges(Request::new(request)).await?.into_inner())
    }

    async fn sessions(&self, request: pb::SessionsRequest) -> Result<pb::SessionsResponse> {
        Ok(self.status.sessions(Request::new(request)).await?.into_inner())
    }

    async fn handshake(&self) -> Result<pb::HandshakeResponse> {
        Ok(self.core.handshake())
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.core.kv_batch(ops, None).await
    }

    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.core.read_applied(ops).await
    }
}
