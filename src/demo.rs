//! `ranged demo`: the embedded default. Starts a cluster of in-process nodes on loopback with
//! temporary stores and freshly generated certificates, initializes it, creates an admin user
//! and the `kv.kv` table, runs a light workload against it, prints how to reach it, and on
//! Ctrl-C stops every node and removes what it created.

use std::path::PathBuf;
use std::time::Duration;

use crate::local_cluster::{Listen, LocalCluster, LocalClusterOptions};
use crate::services::certs;
use crate::services::error::{Error, Result};
use crate::services::sql::users::{self, ScramVerifier, UserRecord, Users};
use crate::services::tls::{CA_CERT, CA_KEY, TlsMaterials};

/// What `ranged demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Skip TLS.
    pub insecure: bool,
    /// Where certificates go (default: inside the temporary directory).
    pub certs_dir: Option<PathBuf>,
    /// The admin user to create.
    pub user: String,
    /// Its password (default: random).
    pub password: Option<String>,
    /// SQL port of node 1; node N listens on this + N - 1 (0: any free port).
    pub sql_port: u16,
    /// HTTP port of node 1; node N listens on this + N - 1 (0: any free port).
    pub http_port: u16,
    /// Skip the background workload.
    pub no_workload: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            insecure: false,
            certs_dir: None,
            user: "demo".into(),
            password: None,
            sql_port: 26257,
            http_port: 8080,
            no_workload: false,
        }
    }
}

/// A running demo cluster.
pub struct Demo {
    /// The nodes, in start order, and their addresses.
    pub cluster: LocalCluster,
    /// The directory holding stores (and certificates unless `--certs-dir` was given).
    pub dir: tempfile::TempDir,
    /// The certificates directory, if secure.
    pub certs_dir: Option<PathBuf>,
    /// The cluster id.
    pub cluster_id: String,
    /// One SQL URL per node.
    pub sql_urls: Vec<String>,
    /// One HTTP API base URL per node.
    pub http_urls: Vec<String>,
    /// The admin user.
    pub user: String,
    /// Its password (empty in insecure mode).
    pub password: String,
    workload_stop: Option<tokio::sync::oneshot::Sender<()>>,
    workload: Option<tokio::task::JoinHandle<()>>,
}

/// Operations per second of the demo's background workload.
const DEMO_WORKLOAD_RATE: f64 = 20.0;

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
        let base_port = |port: u16| if port == 0 { Listen::AnyPort } else { Listen::FromPort(port) };
        let cluster_options = LocalClusterOptions {
            tls,
            sql: base_port(options.sql_port),
            http: base_port(options.http_port),
            zones: true,
            ..LocalClusterOptions::new(options.nodes, dir.path())
        };
        let cluster = LocalCluster::start(&cluster_options).await.map_err(|err| match err {
            Error::FailedPrecondition(m) if m.contains(" for SQL: ") => {
                Error::FailedPrecondition(format!("{m} (try --sql-port)"))
            }
            Error::FailedPrecondition(m) if m.contains(" for HTTP: ") => {
                Error::FailedPrecondition(format!("{m} (try --http-port)"))
            }
            other => other,
        })?;
        let cluster_id = cluster.init().await?;
        let sql_addrs: Vec<std::net::SocketAddr> = cluster.sql_addrs.iter().flatten().copied().collect();
        let http_addrs: Vec<std::net::SocketAddr> = cluster.http_addrs.iter().flatten().copied().collect();
        let password = match (&options.password, options.insecure) {
            (_, true) => String::new(),
            (Some(password), false) => password.clone(),
            (None, false) => {
                let bytes: [u8; 9] = rand::random();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        let user = users::normalize(&options.user);
        let record = UserRecord {
            username: user.clone(),
            is_admin: true,
            can_login: true,
            scram: (!password.is_empty()).then(|| ScramVerifier::new(&password)),
        };
        Users::new(cluster.nodes[0].core().as_ref())
            .create(record, true)
            .await
            .map_err(|err| Error::FailedPrecondition(err.message))?;
        let sql_urls = sql_addrs
            .iter()
            .map(|addr| match &certs_dir {
                Some(dir) => format!(
                    "postgresql://{user}:{password}@{addr}/defaultdb?sslmode=verify-full&sslrootcert={}",
                    dir.join(CA_CERT).display()
                ),
                None => format!("postgresql://{user}@{addr}/defaultdb?sslmode=disable"),
            })
            .collect::<Vec<_>>();
        let scheme = if certs_dir.is_some() { "https" } else { "http" };
        // Certificates name localhost, so the printed URLs use it (curl checks the name).
        let http_urls = http_addrs.iter().map(|a| format!("{scheme}://localhost:{}/api/v2", a.port())).collect();
        let mut demo = Demo {
            cluster,
            dir,
            certs_dir,
            cluster_id,
            sql_urls,
            http_urls,
            user,
            password,
            workload_stop: None,
            workload: None,
        };
        demo.wait_ready().await?;
        crate::workload::init(&demo.sql_urls[0]).await.map_err(Error::FailedPrecondition)?;
        if !options.no_workload {
            demo.start_workload();
        }
        Ok(demo)
    }

    /// A light, rate-limited kv workload so the cluster has real traffic to show.
    fn start_workload(&mut self) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let options = crate::workload::KvOptions {
            url: self.sql_urls[0].clone(),
            concurrency: 2,
            duration: None,
            read_percent: 90,
            distribution: crate::workload::KeyDistribution::Zipf,
            max_rate: DEMO_WORKLOAD_RATE,
            keys: 1000,
            value_bytes: 64,
            display_every: Duration::from_secs(10),
            print: false,
        };
        self.workload_stop = Some(stop_tx);
        self.workload = Some(tokio::spawn(async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            if let Err(err) = crate::workload::run_kv(options, stop).await {
                tracing::warn!(error = %err, "demo workload stopped");
            }
        }));
    }

    async fn wait_ready(&self) -> Result<()> {
        self.cluster
            .wait_ready(READY_TIMEOUT)
            .await
            .map_err(|_| Error::Unavailable("demo nodes did not form a cluster in time".into()))
    }

    /// The text printed once the cluster is up.
    pub fn banner(&self) -> String {
        let security = match &self.certs_dir {
            Some(dir) => format!("--certs-dir {}", dir.display()),
            None => "--insecure".to_string(),
        };
        let first = self.cluster.nodes[0].listen_addr();
        let mut text =
            format!("ranged demo: {} nodes on loopback, cluster {}\n", self.cluster.nodes.len(), self.cluster_id);
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            text.push_str(&format!("  node {}: rpc {}\n", i + 1, node.listen_addr()));
            text.push_str(&format!("    sql: {}\n", self.sql_urls[i]));
        }
        if let Some(dir) = &self.certs_dir {
            text.push_str(&format!("CA certificate: {}\n", dir.join(CA_CERT).display()));
            text.push_str(&format!("Admin user: {} password: {}\n", self.user, self.password));
        }
        text.push_str(&format!("Connect: psql \"{}\"\n", self.sql_urls[0]));
        text.push_str(&format!("HTTP API: {}/\n", self.http_urls[0]));
        match &self.certs_dir {
            Some(dir) => {
                let ca = dir.join(CA_CERT);
                text.push_str(&format!(
                    "Log in: curl -d \"username={}&password={}\" -H 'Content-Type: application/x-www-form-urlencoded' --cacert {} {}/login/\n",
                    self.user,
                    self.password,
                    ca.display(),
                    self.http_urls[0]
                ));
                text.push_str(&format!(
                    "Then:   curl -H \"X-Cockroach-API-Session: <session>\" --cacert {} {}/nodes/\n",
                    ca.display(),
                    self.http_urls[0]
                ));
            }
            None => text.push_str(&format!("Try:    curl {}/nodes/\n", self.http_urls[0])),
        }
        text.push_str(&format!(
            "Try:\n  ranged node status --host {first} {security}\n  ranged kv put hello world --host {first} {security}\n  ranged node ranges --host {first} {security}\n"
        ));
        text.push_str("Press Ctrl-C to stop; the demo removes its temporary stores.\n");
        text
    }

    /// Stops every node and removes the temporary directory.
    pub async fn stop(mut self) {
        if let Some(stop) = self.workload_stop.take() {
            let _ = stop.send(());
        }
        if let Some(workload) = self.workload.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), workload).await;
        }
        self.cluster.stop().await;
        drop(self.dir);
    }
}
