//! Connection hygiene of a node's listeners, against a real in-process node on loopback with
//! small limits and deadlines: slow or silent clients are closed within their deadline,
//! connections beyond a listener's limit are refused cleanly while the others go on, and
//! request bodies over the limit get 413 on HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ranged::gateway::serve::HttpLimits;
use ranged::local_cluster::{LocalCluster, LocalClusterOptions};
use ranged::services::accept::ListenerLimits;
use ranged::services::node::ConnectionSettings;
use ranged::services::tls::TlsMaterials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadlines the tests set, and the slack allowed beyond them.
const SHORT: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_secs(3);
/// Long enough never to fire during a test.
const LONG: Duration = Duration::from_secs(120);
/// A body five times the limit.
const TEN_MB: usize = 10 * 1024 * 1024;

struct Limits {
    handshake: Duration,
    header: Duration,
    idle: Duration,
    sql_startup: Duration,
    max_http: usize,
    max_sql: usize,
    max_grpc: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { handshake: LONG, header: LONG, idle: LONG, sql_startup: LONG, max_http: 64, max_sql: 64, max_grpc: 64 }
    }
}

/// One initialized node serving SQL and HTTP; secure when `certs` is given.
async fn node(dir: &Path, certs: Option<&Path>, limits: Limits) -> LocalCluster {
    ranged::install_crypto_provider();
    let listener = |max_connections| ListenerLimits { max_connections, tls_handshake_timeout: limits.handshake };
    let api = ranged::gateway::Config {
        http: HttpLimits {
            listener: listener(limits.max_http),
            header_timeout: limits.header,
            idle_timeout: limits.idle,
        },
        ..Default::default()
    };
    let options = LocalClusterOptions {
        tls: certs.map(|certs| TlsMaterials::load_node(certs).unwrap()),
        connections: ConnectionSettings {
            grpc: listener(limits.max_grpc),
            sql: listener(limits.max_sql),
            sql_startup_timeout: limits.sql_startup,
            ..ConnectionSettings::default()
        },
        api,
        ..LocalClusterOptions::new(1, &dir.join("stores"))
    };
    let cluster = LocalCluster::start(&options).await.unwrap();
    cluster.init().await.unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    cluster
}

fn create_certs(dir: &Path) -> std::path::PathBuf {
    use ranged::services::certs;
    let certs_dir = dir.join("certs");
    let ca_key = certs_dir.join(ranged::services::tls::CA_KEY);
    certs::create_ca(&certs_dir, &ca_key, false).unwrap();
    certs::create_node(&certs_dir, &ca_key, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    certs::create_client(&certs_dir, &ca_key, "root", false).unwrap();
    certs_dir
}

fn http_addr(cluster: &LocalCluster) -> SocketAddr {
    cluster.http_addrs[0].unwrap()
}

fn sql_addr(cluster: &LocalCluster) -> SocketAddr {
    cluster.sql_addrs[0].unwrap()
}

/// Sends `bytes` (possibly nothing) and waits for the server to close; returns how long that
/// took, or panics after `within`.
async fn closed_after(addr: SocketAddr, bytes: &[u8], within: Duration) -> Duration {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut sink = [0u8; 1024];
    let drained = tokio::time::timeout(within, async {
        // A reset counts as closed too; the loop ends at the first EOF or error.
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(drained.is_ok(), "{addr}: still open after {within:?} (sent {bytes:?})");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_line_is_closed_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = node(dir.path(), None, Limits { header: SHORT, ..Limits::default() }).await;
    let took = closed_after(http_addr(&cluster), b"GET /api/v2/hea", SHORT + SLACK).await;
    assert!(took >= SHORT - Duration::from_millis(100), "closed before the deadline: {took:?}");
    // A client that sends nothing at all is let go as well.
    closed_after(http_addr(&cluster), b"", SHORT + SLACK).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_requests_is_closed_within_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = node(dir.path(), None, Limits { idle: SHORT, ..Limits::default() }).await;
    // The client preface and an empty SETTINGS frame, then nothing.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    closed_after(http_addr(&cluster), &preface, SHORT + SLACK).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_client_silent_in_the_password_exchange_is_closed_within_the_startup_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let certs = create_certs(dir.path());
    let limits = Limits { sql_startup: SHORT * 2, ..Limits::default() };
    let cluster = node(dir.path(), Some(&certs), limits).await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(sql_addr(&cluster)).await.unwrap();
    // SSLRequest, answered 'S'.
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(certs.join(ranged::services::tls::CA_CERT)).unwrap();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // StartupMessage (protocol 3.0, user root), answered with the SASL request; then silence.
    let mut startup = vec![0, 3, 0, 0];
    for field in ["user", "root", "database", "defaultdb", ""] {
        startup.extend_from_slice(field.as_bytes());
        startup.push(0);
    }
    let mut message = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    tls.write_all(&message).await.unwrap();
    assert_eq!(tls.read_u8().await.unwrap(), b'R', "an authentication request");
    let mut sink = [0u8; 1024];
    let closed =
        tokio::time::timeout(SHORT * 2 + SLACK, async { while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {} })
            .await;
    assert!(closed.is_ok(), "still open {:?} after connecting", started.elapsed());
    assert!(started.elapsed() >= SHORT * 2 - Duration::from_millis(100), "closed early: {:?}", started.elapsed());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_never_started_is_closed_within_the_handshake_timeout_on_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    let certs = create_certs(dir.path());
    let cluster = node(dir.path(), Some(&certs), Limits { handshake: SHORT, ..Limits::default() }).await;
    let grpc = cluster.nodes[0].listen_addr();
    for addr in [http_addr(&cluster), sql_addr(&cluster), grpc] {
        closed_after(addr, b"", SHORT + SLACK).await;
        // Half a ClientHello record header, then silence.
        closed_after(addr, &[0x16, 0x03, 0x01], SHORT + SLACK).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_connection_sending_only_a_length_is_closed_within_the_startup_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { handshake: SHORT, sql_startup: SHORT * 2, ..Limits::default() };
    let cluster = node(dir.path(), None, limits).await;
    closed_after(sql_addr(&cluster), &[0, 0, 0, 8], SHORT * 2 + SLACK).await;
    cluster.stop().await;
}

fn secure_pg_url(addr: SocketAddr, certs: &Path) -> String {
    format!(
        "postgresql://root@{addr}/defaultdb?sslmode=require&sslrootcert={}",
        certs.join(ranged::services::tls::CA_CERT).display()
    )
}

/// Polls `attempt` until it succeeds, or panics with `what` after a deadline.
async fn eventually<T, E: std::fmt::Debug, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(err) => assert!(Instant::now() < deadline, "{what}: still failing: {err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_beyond_the_limit_get_503_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = node(dir.path(), None, Limits { max_http: 2, ..Limits::default() }).await;
    let health = format!("http://{}/api/v2/health/", http_addr(&cluster));
    // Slot 1: a kept-alive client connection; slot 2: a silent raw connection.
    let kept = reqwest::Client::builder().pool_max_idle_per_host(1).http1_only().build().unwrap();
    assert_eq!(kept.get(&health).send().await.unwrap().status(), 200);
    let silent = TcpStream::connect(http_addr(&cluster)).await.unwrap();

    let fresh = || reqwest::Client::builder().http1_only().build().unwrap();
    let refused = fresh().get(&health).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    assert!(refused.text().await.unwrap().contains("too many connections"));
    // Over HTTP/2 too (prior knowledge on the plaintext port).
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let refused = h2.get(&health).send().await.unwrap();
    assert_eq!((refused.status().as_u16(), refused.version()), (503, reqwest::Version::HTTP_2));

    // The connection already served goes on being served.
    assert_eq!(kept.get(&health).send().await.unwrap().status(), 200);
    // Once a connection closes, a new client gets in.
    drop(silent);
    eventually("a new connection after one closed", || async {
        let response = fresh().get(&health).send().await.map_err(|err| err.to_string())?;
        if response.status() == 200 { Ok(()) } else { Err(format!("status {}", response.status())) }
    })
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_connections_beyond_the_limit_get_53300_after_the_tls_negotiation() {
    let dir = tempfile::tempdir().unwrap();
    let certs = create_certs(dir.path());
    let cluster = node(dir.path(), Some(&certs), Limits { max_sql: 1, ..Limits::default() }).await;
    let url = secure_pg_url(sql_addr(&cluster), &certs);
    // The one slot, held by a connection that has not even started TLS.
    let silent = TcpStream::connect(sql_addr(&cluster)).await.unwrap();
    let Err(err) = ranged::workload::connect(&url).await else { panic!("a connection beyond the limit was served") };
    assert_eq!(err, "sorry, too many clients already (53300)");
    // psql (libpq, sslmode=require) shows the same error.
    let psql = std::process::Command::new("psql")
        .args([url.as_str(), "-c", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", "10")
        .output();
    if let Ok(psql) = psql {
        let stderr = String::from_utf8_lossy(&psql.stderr);
        assert!(stderr.contains("sorry, too many clients already"), "psql said: {stderr}");
    }
    drop(silent);
    // The password exchange then fails (root has none), but past the limit: not 53300.
    let err = eventually("a connection once the slot is free", || async {
        match ranged::workload::connect(&url).await {
            Err(err) if err.contains("53300") => Err(err),
            other => Ok(other.err()),
        }
    })
    .await;
    assert!(err.is_none_or(|err| !err.contains("53300")));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_sql_client_over_the_limit_gets_53300_and_the_served_one_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = node(dir.path(), None, Limits { max_sql: 1, ..Limits::default() }).await;
    let url = format!("postgresql://root@{}/defaultdb?sslmode=disable", sql_addr(&cluster));
    let served = ranged::workload::connect(&url).await.unwrap();
    let Err(err) = ranged::workload::connect(&url).await else { panic!("a connection beyond the limit was served") };
    assert_eq!(err, "sorry, too many clients already (53300)");
    let one: i64 = served.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(served);
    eventually("a connection once the slot is free", || ranged::workload::connect(&url)).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_beyond_the_limit_are_closed_and_the_others_go_on() {
    use ranged::pb::status_service_client::StatusServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let cluster = node(dir.path(), None, Limits { max_grpc: 1, ..Limits::default() }).await;
    let endpoint = format!("http://{}", cluster.nodes[0].listen_addr());
    let mut served = StatusServiceClient::connect(endpoint.clone()).await.unwrap();
    served.nodes(ranged::pb::NodesRequest {}).await.unwrap();
    let refused = async {
        let mut client = StatusServiceClient::connect(endpoint.clone()).await?;
        client.nodes(ranged::pb::NodesRequest {}).await.map_err(Box::<dyn std::error::Error>::from)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(refused.await.is_err(), "a second gRPC connection was served");
    served.nodes(ranged::pb::NodesRequest {}).await.unwrap();
    drop(served);
    eventually("a gRPC connection once the slot is free", || async {
        let mut client = StatusServiceClient::connect(endpoint.clone()).await.map_err(|err| err.to_string())?;
        client.nodes(ranged::pb::NodesRequest {}).await.map_err(|err| err.to_string())
    })
    .await;
    cluster.stop().await;
}

/// Reads a response head from `tcp` (up to the blank line).
async fn response_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(SLACK, tcp.read(&mut byte)).await.expect("a response in time").unwrap();
        assert_eq!(read, 1, "closed before a response: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_login_body_gets_413_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = node(dir.path(), None, Limits::default()).await;
    let addr = http_addr(&cluster);
    let login = format!("http://{addr}/api/v2/login/");
    let big = vec![b'a'; TEN_MB];

    // Expect: 100-continue with a large length: 413 at once, never `100 Continue`.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /api/v2/login/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {TEN_MB}\r\nExpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");

    // A client that writes its whole body before it reads still finds the 413: the server
    // drains what comes after its answer instead of resetting the connection.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /api/v2/login/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {TEN_MB}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(&big).await.unwrap();
    let head = response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");

    // The whole body sent at once, HTTP/1.1, with a JSON error for a JSON client.
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let response = http1
        .post(&login)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 413, "{body}");

    // Chunked: no length up front, 413 once the limit is crossed.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /api/v2/login/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let sender = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
        for _ in 0..TEN_MB / (64 * 1024) {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
    });
    let mut head = vec![0u8; 12];
    tokio::time::timeout(SLACK * 2, reader.read_exact(&mut head)).await.expect("a response in time").unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    sender.abort();

    // HTTP/2 (prior knowledge on the plaintext port).
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = http2.post(&login).body(big).send().await.unwrap();
    assert_eq!((response.status().as_u16(), response.version()), (413, reqwest::Version::HTTP_2));

    // A small body still logs in as before (here: no such user).
    let response = http1.post(&login).body("username=nobody&password=x").send().await.unwrap();
    assert_ne!(response.status(), 413);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_refusal_is_a_503_and_an_oversized_body_a_413_on_alpn_h2() {
    let dir = tempfile::tempdir().unwrap();
    let certs = create_certs(dir.path());
    let cluster = node(dir.path(), Some(&certs), Limits { max_http: 1, ..Limits::default() }).await;
    let ca = std::fs::read(certs.join(ranged::services::tls::CA_CERT)).unwrap();
    let client = || {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .pool_max_idle_per_host(1)
            .build()
            .unwrap()
    };
    let base = format!("https://127.0.0.1:{}/api/v2", http_addr(&cluster).port());
    // ALPN picks HTTP/2; the one slot is this client's connection.
    let served = client();
    let response = served.post(format!("{base}/login/")).body(vec![b'a'; TEN_MB]).send().await.unwrap();
    assert_eq!((response.status().as_u16(), response.version()), (413, reqwest::Version::HTTP_2));
    let refused = client().get(format!("{base}/health/")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    assert_eq!(served.get(format!("{base}/health/")).send().await.unwrap().status(), 200);
    cluster.stop().await;
}
