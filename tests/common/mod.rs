//! Shared helpers for integration tests: real `ranged` processes on loopback ports, the CLI
//! as a user runs it, gRPC clients, and polling with a deadline (never a bare sleep to wait
//! for readiness).
#![allow(dead_code)]

pub mod bank;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod netns;
pub mod registers;
pub mod swagger;
pub mod writer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ranged::pb;
use tonic::transport::Channel;

/// The `ranged` binary under test.
pub const RANGED: &str = env!("CARGO_BIN_EXE_ranged");

/// Installs the crypto provider once per test process.
pub fn setup() {
    ranged::install_crypto_provider();
}

/// A loopback port free for both TCP and UDP (gossip shares the gRPC port number).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with `what` and the last
/// `Err` it gave (what was seen instead), so a timeout says which part of a condition failed.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; last seen: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the CLI with `args` and returns its output.
pub fn ranged(args: &[&str]) -> Output {
    Command::new(RANGED).args(args).env_remove("RUST_BACKTRACE").output().expect("run ranged")
}

/// Runs the CLI and asserts success; returns stdout.
pub fn ranged_ok(args: &[&str]) -> String {
    let out = ranged(args);
    assert!(
        out.status.success(),
        "ranged {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One node process and how to restart it.
pub struct NodeProc {
    pub child: Option<Child>,
    pub addr: String,
    /// The PostgreSQL address.
    pub sql_addr: String,
    /// The HTTP API address.
    pub http_addr: String,
    pub store: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Where the node reports the addresses it bound.
    pub addrs_file: PathBuf,
    /// The test's extra flags.
    pub extra: Vec<String>,
    /// The network namespace the node runs in, if the cluster has its own network.
    pub netns: Option<String>,
}

impl NodeProc {
    /// `ranged start` flags: this node's addresses (port 0 until it has reported its ports),
    /// `join`, the security flags and the test's extra flags.
    fn start_args(&self, join: &str, security: &[String]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "start".into(),
            "--listen-addr".into(),
            self.addr.clone(),
            "--sql-addr".into(),
            self.sql_addr.clone(),
            "--http-addr".into(),
            self.http_addr.clone(),
            "--store".into(),
            self.store.display().to_string(),
            "--listening-addrs-file".into(),
            self.addrs_file.display().to_string(),
        ];
        if !join.is_empty() {
            args.extend(["--join".to_string(), join.to_string()]);
        }
        args.extend(security.iter().cloned());
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// A cluster of `ranged start` processes on loopback.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// Flags for client commands (`--insecure` or `--certs-dir D`).
    pub security: Vec<String>,
    /// The cluster's own network, when its nodes run in namespaces (dropped after the nodes).
    pub network: Option<netns::Network>,
}

impl Cluster {
    /// Starts `n` insecure nodes that join each other, with `extra` flags on each.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_with(n, extra, vec!["--insecure".into()])
    }

    /// Starts `n` nodes with the given security flags (also used by client commands).
    pub fn start_with(n: usize, extra: &[&str], security: Vec<String>) -> Cluster {
        setup();
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, n, extra, security)
    }

    /// Starts and initializes `n` secure nodes (certificates made here) whose `root` has
    /// `root_password`; returns the cluster and its certificates directory.
    pub async fn start_secure(n: usize, extra: &[&str], root_password: &str) -> (Cluster, PathBuf) {
        setup();
        let dir = tempfile::tempdir().unwrap();
        let certs = create_certs(dir.path());
        let password_file = dir.path().join("root-password");
        std::fs::write(&password_file, format!("{root_password}\n")).unwrap();
        let cluster = Cluster::start_in(dir, n, extra, vec!["--certs-dir".into(), certs.display().to_string()]);
        cluster.init_with(&["--root-password-file", &password_file.display().to_string()]).await;
        (cluster, certs)
    }

    /// Starts `n` nodes whose stores live in `dir`. Each node binds port 0 itself and reports
    /// the ports it got (`--listening-addrs-file`); node `i` joins the nodes started before it,
    /// and once all run, every node's join list (for restarts) names them all. A restart keeps
    /// the node's ports.
    pub fn start_in(dir: tempfile::TempDir, n: usize, extra: &[&str], security: Vec<String>) -> Cluster {
        Self::start_on(dir, n, extra, security, None)
    }

    /// Starts `n` insecure nodes each in its own network namespace on a private bridge, so
    /// links between two nodes can be cut (`netns::Network`); `Err` says why that is not
    /// possible here (not root, no `ip`).
    pub fn start_isolated(n: usize, extra: &[&str]) -> Result<Cluster, String> {
        setup();
        let network = netns::Network::create(n)?;
        Ok(Self::start_on(tempfile::tempdir().unwrap(), n, extra, vec!["--insecure".into()], Some(network)))
    }

    fn start_on(
        dir: tempfile::TempDir,
        n: usize,
        extra: &[&str],
        security: Vec<String>,
        network: Option<netns::Network>,
    ) -> Cluster {
        let hosts: Vec<(Option<String>, String)> = match &network {
            Some(network) => network.nodes.iter().map(|(ns, addr)| (Some(ns.clone()), addr.clone())).collect(),
            None => vec![(None, "127.0.0.1".to_string()); n],
        };
        let mut cluster = Cluster { dir, nodes: Vec::new(), security, network };
        for (i, (netns, host)) in hosts.into_iter().enumerate() {
            let store = cluster.dir.path().join(format!("n{}", i + 1));
            let join: Vec<String> = cluster.nodes.iter().map(|node| node.addr.clone()).collect();
            let log = cluster.dir.path().join(format!("n{}.log", i + 1));
            let addrs_file = cluster.dir.path().join(format!("n{}.addrs", i + 1));
            let mut node = NodeProc {
                child: None,
                addr: format!("{host}:0"),
                sql_addr: format!("{host}:0"),
                http_addr: format!("{host}:0"),
                store,
                args: Vec::new(),
                log,
                addrs_file,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                netns,
            };
            node.args = node.start_args(&join.join(","), &cluster.security);
            cluster.nodes.push(node);
            cluster.restart(i);
            let addrs = cluster.wait_listening(i);
            let node = &mut cluster.nodes[i];
            node.addr = addrs["rpc_addr"].as_str().unwrap().to_string();
            node.sql_addr = addrs["sql_addr"].as_str().unwrap().to_string();
            node.http_addr = addrs["http_addr"].as_str().unwrap().to_string();
        }
        let join = cluster.nodes.iter().map(|node| node.addr.clone()).collect::<Vec<_>>().join(",");
        let security = cluster.security.clone();
        for node in &mut cluster.nodes {
            node.args = node.start_args(&join, &security);
        }
        cluster
    }

    /// Waits until node `i` has written the addresses it listens on; returns them.
    fn wait_listening(&mut self, i: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.nodes[i].addrs_file) {
                return serde_json::from_str(&text).expect("listening addresses are JSON");
            }
            if let Some(status) = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("node {i} exited ({status}) before listening\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "node {i} did not report its addresses\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (Re)starts node `i` on its store.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is running");
        let _ = std::fs::remove_file(&node.addrs_file);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let mut command = match &node.netns {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, RANGED]);
                command
            }
            None => Command::new(RANGED),
        };
        let child = command
            .args(&node.args)
            .env("RANGED_LOG", "info,openraft=warn")
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ranged start");
        node.child = Some(child);
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to node `i` and waits for it to exit; returns its exit status.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        self.send_sigterm(i);
        self.wait_exit(i, timeout)
    }

    /// Sends SIGTERM to node `i` without waiting.
    pub fn send_sigterm(&self, i: usize) {
        let pid = self.nodes[i].child.as_ref().expect("node running").id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    }

    /// Waits for node `i` to exit; returns its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.nodes[i].child.take().expect("node running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {i} did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Client flags for node `i`: `--host ADDR` plus the security flags.
    pub fn client_args(&self, i: usize) -> Vec<String> {
        let mut args = vec!["--host".to_string(), self.nodes[i].addr.clone()];
        args.extend(self.security.iter().cloned());
        args
    }

    /// Runs a client command against node `i`.
    pub fn cli(&self, i: usize, command: &[&str]) -> Output {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(self.client_args(i));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ranged(&refs)
    }

    /// Runs a client command against node `i` and asserts success.
    pub fn cli_ok(&self, i: usize, command: &[&str]) -> String {
        let out = self.cli(i, command);
        assert!(
            out.status.success(),
            "{command:?} on node {i} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs `ranged init` through node 0, retrying while the nodes come up.
    pub async fn init(&self) {
        self.init_with(&[]).await
    }

    /// Runs `ranged init` with extra flags.
    pub async fn init_with(&self, extra: &[&str]) {
        let mut command = vec!["init"];
        command.extend_from_slice(extra);
        let out = wait_for(Duration::from_secs(20), "init to succeed", || async {
            let out = self.cli(0, &command);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                Some(Ok(out))
            } else if stderr.contains("cannot reach") {
                None
            } else {
                Some(Err(stderr))
            }
        })
        .await;
        if let Err(stderr) = out {
            panic!("init failed: {stderr}\n{}", self.logs());
        }
    }

    /// Waits until every node of the cluster is a member of the Raft group and all are LIVE
    /// as seen from node 0.
    pub async fn wait_ready(&self) {
        let n = self.nodes.len();
        // Range 1 is on every node; every other range gets three voters (fewer while fewer
        // nodes exist), added one at a time by its leaseholder.
        wait_for(Duration::from_secs(60), "all nodes LIVE and every range fully replicated", || async {
            let nodes = self.status_nodes(0).await.ok()?;
            let live = nodes.iter().filter(|n| n.liveness == pb::Liveness::Live as i32).count();
            let ranges = self.ranges(0).await.ok()?;
            let replicas = ranges.first()?.descriptor.as_ref()?.replicas.len();
            let voters = |range: &pb::RangeInfo| {
                range.descriptor.as_ref().map_or(0, |d| d.replicas.iter().filter(|r| r.voter).count())
            };
            let replicated = ranges.iter().all(|range| voters(range) >= n.min(3));
            (live == n && replicas == n && replicated).then_some(())
        })
        .await;
    }

    /// (voters, learners) of every range by range id, as its leaseholder among nodes `live`
    /// reports it: each node reports only the ranges it holds a replica of. While a range some
    /// node reports has no leaseholder among them, how each node holding such a range sees it
    /// (what a wait on this reports when it times out).
    pub async fn members_by_leaseholders(
        &self,
        live: &[usize],
    ) -> Result<std::collections::BTreeMap<u64, (Vec<u64>, Vec<u64>)>, String> {
        let mut views = Vec::new();
        for i in live {
            let ranges = self.ranges(*i).await.map_err(|err| format!("node {}'s ranges: {err}", i + 1))?;
            views.push((*i + 1, ranges));
        }
        let mut out = std::collections::BTreeMap::new();
        for range in views.iter().flat_map(|(_, ranges)| ranges).filter(|range| range.is_leaseholder) {
            let Some(desc) = &range.descriptor else { continue };
            let of = |voter: bool| desc.replicas.iter().filter(|r| r.voter == voter).map(|r| r.node_id).collect();
            out.insert(desc.range_id, (of(true), of(false)));
        }
        let unled: Vec<String> = (views.iter())
            .flat_map(|(node, ranges)| ranges.iter().map(move |range| (node, range)))
            .filter_map(|(node, range)| {
                let desc = range.descriptor.as_ref()?;
                let raft = range.raft.as_ref().map(|raft| (raft.state.as_str(), raft.leader_id, raft.term));
                (!out.contains_key(&desc.range_id)).then(|| {
                    let voters: Vec<_> = desc.replicas.iter().map(|r| (r.node_id, r.voter)).collect();
                    format!("n{node}: range {} (state, leader, term) {raft:?} (node, voter) {voters:?}", desc.range_id)
                })
            })
            .collect();
        if unled.is_empty() {
            return Ok(out);
        }
        // The first few say enough; a range list can be thousands long.
        const SHOWN: usize = 20;
        let more = unled.len().saturating_sub(SHOWN);
        Err(format!(
            "ranges no node leads, as their holders see them: {}; {more} more",
            unled[..unled.len().min(SHOWN)].join("; ")
        ))
    }

    /// A gRPC channel to node `i` (insecure clusters only).
    pub async fn channel(&self, i: usize) -> Result<Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.nodes[i].addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(15))
            .connect()
            .await
    }

    /// A KV client to node `i`.
    pub async fn kv(&self, i: usize) -> pb::kv_service_client::KvServiceClient<Channel> {
        pb::kv_service_client::KvServiceClient::new(self.channel(i).await.expect("connect"))
    }

    /// Node `i`'s view of every node.
    pub async fn status_nodes(&self, i: usize) -> Result<Vec<pb::NodeEntry>, String> {
        let channel = self.channel(i).await.map_err(|e| e.to_string())?;
        let mut client = pb::status_service_client::StatusServiceClient::new(channel);
        Ok(client.nodes(pb::NodesRequest {}).await.map_err(|e| e.to_string())?.into_inner().nodes)
    }

    /// Node `i`'s replicas.
    pub async fn ranges(&self, i: usize) -> Result<Vec<pb::RangeInfo>, String> {
        let channel = self.channel(i).await.map_err(|e| e.to_string())?;
        let mut client = pb::status_service_client::StatusServiceClient::new(channel);
        let reply = client
            .ranges(pb::RangesRequest { range_ids: vec![], ..Default::default() })
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply.into_inner().ranges)
    }

    /// The leaseholder (Raft leader) of range 1 as node `i` sees it, if any.
    pub async fn leader(&self, i: usize) -> Option<u64> {
        let ranges = self.ranges(i).await.ok()?;
        let leader = ranges.first()?.raft.as_ref()?.leader_id;
        (leader != 0).then_some(leader)
    }

    /// The leader of range `range_id` as node `i` sees it.
    pub async fn range_leader(&self, i: usize, range_id: u64) -> Option<u64> {
        let ranges = self.ranges(i).await.ok()?;
        let range = ranges.iter().find(|r| r.descriptor.as_ref().is_some_and(|d| d.range_id == range_id))?;
        let leader = range.raft.as_ref()?.leader_id;
        (leader != 0).then_some(leader)
    }

    /// The index (0-based) of the node with id `node_id`, by address.
    pub async fn index_of(&self, node_id: u64) -> usize {
        let nodes = wait_for(Duration::from_secs(10), "node list", || async { self.status_nodes_any().await }).await;
        let addr = nodes
            .iter()
            .find_map(|n| n.descriptor.as_ref().filter(|d| d.node_id == node_id).map(|d| d.address.clone()))
            .expect("node id known");
        self.nodes.iter().position(|n| n.addr == addr).expect("address known")
    }

    /// Any running node's node list.
    pub async fn status_nodes_any(&self) -> Option<Vec<pb::NodeEntry>> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some()
                && let Ok(nodes) = self.status_nodes(i).await
            {
                return Some(nodes);
            }
        }
        None
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            // A panic's message and place come first: the tail alone often shows only what
            // followed it (every later request failing).
            let lines: Vec<&str> = text.lines().collect();
            for at in (0..lines.len()).filter(|at| lines[*at].contains("panicked at")).take(3) {
                out.push_str(&format!("--- node {i} panic ---\n{}\n", lines[at..lines.len().min(at + 3)].join("\n")));
            }
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- node {i} log (last lines) ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// How many lines of the nodes' current logs contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        let read = |node: &NodeProc| std::fs::read_to_string(&node.log).unwrap_or_default();
        self.nodes.iter().map(|node| read(node).lines().filter(|line| line.contains(needle)).count()).sum()
    }

    /// An insecure PostgreSQL URL for node `i` as `user`.
    pub fn pg_url(&self, i: usize, user: &str) -> String {
        format!("postgresql://{user}@{}/defaultdb?sslmode=disable", self.nodes[i].sql_addr)
    }

    /// The HTTP API base URL of node `i` (`http://` unless `scheme` says otherwise).
    pub fn api(&self, i: usize, scheme: &str) -> String {
        let port = self.nodes[i].http_addr.split(':').nth(1).unwrap_or_default();
        format!("{scheme}://localhost:{port}/api/v2")
    }

    /// The store path of node `i`.
    pub fn store(&self, i: usize) -> &Path {
        &self.nodes[i].store
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // A failure that shows up once in many runs is diagnosed from the nodes' logs, which
        // the temporary directory would take with it.
        if std::thread::panicking()
            && let Some(keep) = std::env::var_os("RANGED_TEST_KEEP_FAILED")
        {
            let to = Path::new(&keep).join(format!("cluster-{}", std::process::id()));
            match std::fs::create_dir_all(&to) {
                Ok(()) => {
                    for node in &self.nodes {
                        let _ = std::fs::copy(&node.log, to.join(node.log.file_name().unwrap_or_default()));
                    }
                    eprintln!("the nodes' logs are kept in {}", to.display());
                }
                Err(err) => eprintln!("could not keep the nodes' logs in {}: {err}", to.display()),
            }
        }
    }
}

/// One put through a KV client.
pub async fn put(
    client: &mut pb::kv_service_client::KvServiceClient<Channel>,
    key: &str,
    value: &str,
) -> Result<(), tonic::Status> {
    let op = pb::KvOp {
        op: Some(pb::kv_op::Op::Put(pb::PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
        })),
    };
    client.batch(pb::BatchRequest { ops: vec![op], ..Default::default() }).await.map(drop)
}

/// One get through a KV client.
pub async fn get(
    client: &mut pb::kv_service_client::KvServiceClient<Channel>,
    key: &str,
) -> Result<Option<String>, tonic::Status> {
    let op = pb::KvOp { op: Some(pb::kv_op::Op::Get(pb::GetRequest { key: key.as_bytes().to_vec().into() })) };
    let reply = client.batch(pb::BatchRequest { ops: vec![op], ..Default::default() }).await?.into_inner();
    Ok(reply.results[0].value.as_ref().map(|v| String::from_utf8_lossy(v).to_string()))
}

/// Runs `psql` with `args` and returns (success, stdout, stderr).
pub fn psql(url: &str, commands: &[&str]) -> (bool, String, String) {
    let mut command = Command::new("psql");
    command.arg(url).args(["-X", "-v", "ON_ERROR_STOP=1", "-At"]);
    for c in commands {
        command.args(["-c", c]);
    }
    let out =
        command.env("PGCONNECT_TIMEOUT", "10").output().expect("psql is installed (apt-get install postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Creates a CA, a node certificate for localhost/127.0.0.1 and root's client certificate in
/// `dir/certs` with the CLI; returns that directory.
pub fn create_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let text = certs.display().to_string();
    ranged_ok(&["cert", "create-ca", "--certs-dir", &text]);
    ranged_ok(&["cert", "create-node", "localhost", "127.0.0.1", "--certs-dir", &text]);
    ranged_ok(&["cert", "create-client", "root", "--certs-dir", &text]);
    certs
}
