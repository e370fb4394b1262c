//! Streamed SELECT results on a real three-node cluster in this process, with a statement
//! memory budget far smaller than the table: a plain SELECT reads its scan in pages from one
//! snapshot and sends rows as they come (simple and extended protocol, through every node, so
//! through the leaseholder and through forwarding), while a SELECT that must sort still fails
//! with 53200; and concurrent atomic multi-row writes are never seen half-applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ranged::local_cluster::{LocalCluster, LocalClusterOptions};
use tokio_postgres::SimpleQueryMessage;

/// The statement budget of every node: the tables below are several times larger.
const BUDGET: u64 = 256 * 1024;
/// Padding that makes each stored row about 100 bytes.
const PAD: &str = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefgh";

async fn cluster(dir: &std::path::Path) -> LocalCluster {
    ranged::install_crypto_provider();
    let options = LocalClusterOptions { statement_memory: BUDGET, ..LocalClusterOptions::new(3, dir) };
    let cluster = LocalCluster::start(&options).await.unwrap();
    cluster.init().await.unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    cluster
}

async fn connect(cluster: &LocalCluster, node: usize) -> tokio_postgres::Client {
    let sql = cluster.sql_addrs[node].expect("every node serves SQL");
    let url = format!("postgresql://root@{sql}/defaultdb?sslmode=disable");
    // Logging in reads the user record at the leaseholder; on a loaded machine a lease may be
    // moving: poll until the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ranged::workload::connect(&url).await {
            Ok(client) => return client,
            Err(err) if Instant::now() < deadline => {
                eprintln!("connect {url}: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("connect {url}: {err}"),
        }
    }
}

/// Inserts rows `0..n` as `(k, balance, PAD)`, a few hundred per statement (each a write batch).
async fn fill(client: &tokio_postgres::Client, table: &str, n: i64, balance: i64) {
    client.batch_execute(&format!("CREATE TABLE {table} (k INT PRIMARY KEY, v INT, pad STRING)")).await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk.iter().map(|k| format!("({k}, {balance}, '{PAD}')")).collect();
        client.batch_execute(&format!("INSERT INTO {table} VALUES {}", rows.join(", "))).await.unwrap();
    }
}

fn simple_rows(messages: Vec<SimpleQueryMessage>) -> Vec<(i64, i64)> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                Some((row.get(0).unwrap().parse().unwrap(), row.get(1).unwrap().parse().unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// `(k, v)` of every row of `SELECT * FROM table` in the extended protocol, read as a stream.
async fn extended_rows(client: &tokio_postgres::Client, table: &str) -> Vec<(i64, i64)> {
    let rows = client.query_raw(&format!("SELECT * FROM {table}"), std::iter::empty::<i64>()).await.unwrap();
    rows.map_ok(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1))).try_collect().await.unwrap()
}

fn code(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// One cluster for both checks: two three-node clusters at once starve each other's Raft
/// timers on a small machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_selects_through_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let running = cluster(dir.path()).await;
    a_table_larger_than_the_budget_streams_in_order_and_a_sort_of_it_fails_53200(&running).await;
    streamed_reads_never_see_half_of_a_concurrent_multi_row_write(&running).await;
    running.stop().await;
}

async fn a_table_larger_than_the_budget_streams_in_order_and_a_sort_of_it_fails_53200(cluster: &LocalCluster) {
    const N: i64 = 6000;
    fill(&connect(cluster, 0).await, "big", N, 7).await;
    let expected: Vec<(i64, i64)> = (0..N).map(|k| (k, 7)).collect();

    for node in 0..3 {
        let client = connect(cluster, node).await;
        let simple = simple_rows(client.simple_query("SELECT * FROM big").await.unwrap());
        assert_eq!(simple.len(), expected.len(), "simple protocol through node {}", node + 1);
        assert!(simple == expected, "simple protocol through node {}: rows out of order or wrong", node + 1);
        let extended = extended_rows(&client, "big").await;
        assert!(extended == expected, "extended protocol through node {}: {} rows", node + 1, extended.len());

        // Key order asked for is the order rows are stored in: no sort, still streamed.
        let ordered = simple_rows(client.simple_query("SELECT k, v FROM big ORDER BY k").await.unwrap());
        assert!(ordered == expected, "ORDER BY the key through node {}", node + 1);
        let count = client.query_one("SELECT count(*) FROM big", &[]).await.unwrap();
        assert_eq!(count.get::<_, i64>(0), N);
        let filtered = client.query("SELECT k FROM big WHERE k >= $1 AND v = 7", &[&(N - 3)]).await.unwrap();
        assert_eq!(filtered.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![N - 3, N - 2, N - 1]);
        let limited = simple_rows(client.simple_query("SELECT * FROM big LIMIT 3 OFFSET 2000").await.unwrap());
        assert_eq!(limited, vec![(2000, 7), (2001, 7), (2002, 7)]);

        // A sort holds every row at once: past the budget, as before.
        let err = client.simple_query("SELECT * FROM big ORDER BY v, k DESC").await.unwrap_err();
        assert_eq!(code(&err), "53200", "{err}");
        let err = client.query("SELECT k FROM big ORDER BY k DESC", &[]).await.unwrap_err();
        assert_eq!(code(&err), "53200", "{err}");
        // An error at row 3,000, after pages of rows went out: the statement ends with it.
        let err = client.simple_query("SELECT k / (k - 3000) FROM big").await.unwrap_err();
        assert_eq!(code(&err), "22012", "{err}");
        let err = client.query("SELECT k / (k - 3000) FROM big", &[]).await.unwrap_err();
        assert_eq!(code(&err), "22012", "{err}");
        // The session goes on.
        assert_eq!(client.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0), 1);
        assert_eq!(client.query("SELECT k FROM big WHERE k < 2", &[]).await.unwrap().len(), 2);
    }

    // A client that stops reading half way: the connection closes, the scan with it, and the
    // node serves the next client.
    let client = connect(cluster, 1).await;
    let mut rows = Box::pin(client.query_raw("SELECT * FROM big", std::iter::empty::<i64>()).await.unwrap());
    for _ in 0..10 {
        rows.next().await.unwrap().unwrap();
    }
    drop(rows);
    drop(client);
    let client = connect(cluster, 1).await;
    assert_eq!(client.query_one("SELECT count(*) FROM big", &[]).await.unwrap().get::<_, i64>(0), N);

    portal_suspension(cluster, N as usize).await;
}

/// What a raw extended-protocol client reads.
#[derive(Debug, PartialEq)]
enum Reply {
    DataRow,
    Suspended,
    Complete(String),
    Ready,
    Error,
    Other,
}

/// A PostgreSQL client at the message level, for what drivers do not expose outside a
/// transaction: Execute with a row limit, then Execute again on the suspended portal.
struct RawClient {
    socket: tokio::net::TcpStream,
    input: bytes::BytesMut,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut client = RawClient { socket, input: bytes::BytesMut::new() };
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::startup_message([("user", "root"), ("database", "defaultdb")], &mut out)
            .unwrap();
        client.send(out).await;
        client.until(|r| *r == Reply::Ready).await;
        client
    }

    async fn send(&mut self, out: bytes::BytesMut) {
        use tokio::io::AsyncWriteExt;
        self.socket.write_all(&out).await.unwrap();
    }

    async fn next(&mut self) -> Reply {
        use postgres_protocol::message::backend::Message;
        use tokio::io::AsyncReadExt;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(message) = Message::parse(&mut self.input).unwrap() {
                return match message {
                    Message::DataRow(_) => Reply::DataRow,
                    Message::PortalSuspended => Reply::Suspended,
                    Message::CommandComplete(body) => Reply::Complete(body.tag().unwrap().to_string()),
                    Message::ReadyForQuery(_) => Reply::Ready,
                    // The fields are behind a fallible iterator this test has no crate for.
                    Message::ErrorResponse(_) => Reply::Error,
                    _ => Reply::Other,
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, self.socket.read_buf(&mut self.input)).await;
            let n = read.expect("the server answered in time").unwrap();
            assert!(n > 0, "the server closed the connection");
        }
    }

    /// Reads up to and including the first reply `stop` accepts; counts the data rows before it.
    async fn until(&mut self, stop: impl Fn(&Reply) -> bool) -> (usize, Reply) {
        let mut rows = 0;
        loop {
            match self.next().await {
                Reply::DataRow => rows += 1,
                Reply::Error => panic!("the server answered an error"),
                reply if stop(&reply) => return (rows, reply),
                _ => {}
            }
        }
    }
}

/// Execute with a row limit suspends the portal after that many rows (pgwire holds at most
/// that many at once); a later Execute without one streams the rest.
async fn portal_suspension(cluster: &LocalCluster, total: usize) {
    use postgres_protocol::message::frontend;
    let mut client = RawClient::connect(cluster.sql_addrs[2].unwrap()).await;
    let mut out = bytes::BytesMut::new();
    frontend::parse("", "SELECT k FROM big", std::iter::empty(), &mut out).unwrap();
    frontend::bind(
        "",
        "",
        std::iter::empty(),
        Vec::<Option<Vec<u8>>>::new(),
        |_, _| Ok(postgres_protocol::IsNull::Yes),
        std::iter::empty(),
        &mut out,
    )
    .map_err(|_| "bind")
    .unwrap();
    frontend::execute("", 1000, &mut out).unwrap();
    frontend::flush(&mut out);
    client.send(out).await;
    let suspended = |r: &Reply| *r == Reply::Suspended;
    assert_eq!(client.until(suspended).await, (1000, Reply::Suspended));
    let mut out = bytes::BytesMut::new();
    frontend::execute("", 1000, &mut out).unwrap();
    frontend::flush(&mut out);
    client.send(out).await;
    assert_eq!(client.until(suspended).await, (1000, Reply::Suspended));
    let mut out = bytes::BytesMut::new();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    client.send(out).await;
    let rest = total - 2000;
    assert_eq!(
        client.until(|r| matches!(r, Reply::Complete(_))).await,
        (rest, Reply::Complete(format!("SELECT {rest}")))
    );
    assert_eq!(client.until(|r| *r == Reply::Ready).await, (0, Reply::Ready));
}

async fn streamed_reads_never_see_half_of_a_concurrent_multi_row_write(cluster: &LocalCluster) {
    const ACCOUNTS: i64 = 3000;
    const START: i64 = 100;
    let writer_client = connect(cluster, 0).await;
    fill(&writer_client, "acct", ACCOUNTS, START).await;

    // One writer moves value between two accounts per statement (one atomic batch), so the
    // total never changes; it tracks the balances itself.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        tokio::spawn(async move {
            let mut balances = vec![START; ACCOUNTS as usize];
            let mut state = 0x2545_f491_4f6c_dd1d_u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let a = (state % ACCOUNTS as u64) as usize;
                let b = ((state >> 20) % ACCOUNTS as u64) as usize;
                if a == b {
                    continue;
                }
                let amount = (state >> 40) as i64 % 50 + 1;
                let sql = format!(
                    "UPSERT INTO acct VALUES ({a}, {}, '{PAD}'), ({b}, {}, '{PAD}')",
                    balances[a] - amount,
                    balances[b] + amount
                );
                writer_client.batch_execute(&sql).await.unwrap();
                balances[a] -= amount;
                balances[b] += amount;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let total = ACCOUNTS * START;
    let mut reads_overlapping_writes = 0;
    for round in 0..6 {
        for node in 0..3 {
            let client = connect(cluster, node).await;
            let before = writes.load(Ordering::Relaxed);
            let simple = simple_rows(client.simple_query("SELECT k, v FROM acct").await.unwrap());
            let extended = extended_rows(&client, "acct").await;
            let count = client.query_one("SELECT count(*) FROM acct WHERE v > -1000000", &[]).await.unwrap();
            if writes.load(Ordering::Relaxed) > before {
                reads_overlapping_writes += 1;
            }
            for (protocol, rows) in [("simple", &simple), ("extended", &extended)] {
                assert_eq!(rows.len() as i64, ACCOUNTS, "{protocol} read {round} through node {}", node + 1);
                let sum: i64 = rows.iter().map(|(_, v)| v).sum();
                assert_eq!(sum, total, "{protocol} read {round} through node {} saw a half-applied write", node + 1);
            }
            assert_eq!(count.get::<_, i64>(0), ACCOUNTS);
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    // The check bites only if writes landed while scans were being read.
    assert!(reads_overlapping_writes > 0, "no read overlapped a write");
    assert!(writes.load(Ordering::Relaxed) > 0);
}

/// This process's resident set and its peak since the last reset, in KiB (Linux).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in /proc"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident set (`VmHWM`) to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// How much this process's resident set peaks above where it was while `rows` is read.
async fn peak_growth_kib(client: &tokio_postgres::Client, sql: &str) -> (u64, i64) {
    reset_peak();
    let (before, _) = rss_kib();
    let rows = client.query_raw(sql, std::iter::empty::<i64>()).await.unwrap();
    let count = rows.try_fold(0i64, |n, _| async move { Ok(n + 1) }).await.unwrap();
    let (_, peak) = rss_kib();
    (peak.saturating_sub(before), count)
}

/// Memory of a SELECT of a table of about 20 MB stored, on one node whose statement budget
/// (the default 64 MiB) lets a sort of it run: the streamed SELECT's peak stays a small part
/// of what the same rows cost when the statement holds them (ORDER BY a non-key column). The
/// client counts rows without keeping them, and runs in this process too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_select_holds_a_small_part_of_what_a_materialized_one_holds() {
    ranged::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&LocalClusterOptions::new(1, dir.path())).await.unwrap();
    cluster.init().await.unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    let client = connect(&cluster, 0).await;
    const N: i64 = 20_000;
    let pad = PAD.repeat(16);
    client.batch_execute("CREATE TABLE wide (k INT PRIMARY KEY, v INT, pad STRING)").await.unwrap();
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<String> = chunk.iter().map(|k| format!("({k}, {}, '{pad}')", N - k)).collect();
        client.batch_execute(&format!("INSERT INTO wide VALUES {}", rows.join(", "))).await.unwrap();
    }
    let (streamed, count) = peak_growth_kib(&client, "SELECT * FROM wide").await;
    assert_eq!(count, N);
    let (materialized, count) = peak_growth_kib(&client, "SELECT * FROM wide ORDER BY v").await;
    assert_eq!(count, N);
    println!("peak RSS growth: streamed SELECT {streamed} KiB, materialized (ORDER BY v) {materialized} KiB");
    assert!(
        streamed * 4 < materialized,
        "streamed SELECT peaked {streamed} KiB above its start, materialized {materialized} KiB"
    );
    cluster.stop().await;
}
