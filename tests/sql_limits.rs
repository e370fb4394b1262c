//! What one SQL statement or login may cost, end to end over the PostgreSQL wire protocol:
//! long chains up to the limit run, over-deep expressions are refused (54001) without
//! taking the process down, a statement
//! past its memory budget fails (53200) and the session goes on, and every failed login
//! answers the same message in about the same time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::SimpleQueryMessage;

/// The deepest expression the server accepts, in operators (`MAX_EXPRESSION_DEPTH`).
const MAX_DEPTH: usize = ranged::services::sql::limits::MAX_EXPRESSION_DEPTH;

/// The deepest nesting the server accepts (`MAX_EXPRESSION_NESTING`).
const MAX_NESTING: usize = ranged::services::sql::limits::MAX_EXPRESSION_NESTING;

async fn connect(url: &str) -> tokio_postgres::Client {
    ranged::workload::connect(url).await.unwrap_or_else(|err| panic!("connect {url}: {err}"))
}

fn code(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// `SELECT 1+1+…+1` with `terms` terms.
fn chain(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

/// A `ranged demo` process, killed when dropped if the test did not stop it.
struct Demo {
    child: std::process::Child,
    sql_urls: Vec<String>,
    _log_dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        setup();
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("demo.log");
        let mut child = Command::new(RANGED)
            .args(["demo", "--sql-port", "0", "--http-port", "0", "--password", "limits-pass-1", "--no-workload"])
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut sql_urls = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(url) = line.trim_start().strip_prefix("sql: ") {
                // The certificate names localhost; hostaddr keeps the connection on 127.0.0.1
                // (localhost also resolves to ::1, where another process may listen).
                sql_urls.push(
                    url.trim()
                        .replace("@127.0.0.1:", "@localhost:")
                        .replace("?sslmode=", "?hostaddr=127.0.0.1&sslmode="),
                );
            }
            if line.starts_with("Press Ctrl-C") || Instant::now() > deadline {
                break;
            }
        }
        let logged = || std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(sql_urls.len(), 3, "the demo printed no SQL URL per node: {sql_urls:?}\n{}", logged());
        Demo { child, sql_urls, _log_dir: log_dir }
    }

    /// Stops the demo with SIGTERM; it must exit 0 although nobody reads its stdout any more
    /// (it says it is stopping there: a broken pipe must not make it fail).
    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "demo exited with {status}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn long_expressions_are_refused_and_the_demo_process_lives_on() {
    let mut demo = Demo::start();
    let client = connect(&demo.sql_urls[0]).await;
    // Under the limit: what used to overflow a worker's stack runs, in both protocols.
    let sum: i64 = client.query_one(&chain(5_000), &[]).await.unwrap().get(0);
    assert_eq!(sum, 5_000);
    let rows = client.simple_query(&chain(5_000)).await.unwrap();
    assert!(
        rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("5000"))),
        "{} messages",
        rows.len()
    );
    const { assert!(MAX_DEPTH < 50_000, "the over-limit chains below must be over the limit") };
    for terms in [50_000, 500_000] {
        let sql = chain(terms);
        let err = client.simple_query(&sql).await.expect_err("a chain past the limit is refused");
        assert_eq!(code(&err), "54001", "{terms} terms: {err:?}");
        let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
        assert!(message.contains("statement too complex") && message.contains(&MAX_DEPTH.to_string()), "{message}");
        // The extended protocol refuses it too (Parse/Describe).
        let err = client.prepare(&sql).await.expect_err("prepared too");
        assert_eq!(code(&err), "54001", "{terms} terms, extended protocol: {err:?}");
        // The session serves the next statement.
        let two: i64 = client.query_one("SELECT 1+1", &[]).await.unwrap().get(0);
        assert_eq!(two, 2);
    }
    // Nesting: at the limit it runs, one deeper is refused, in both protocols.
    let nested = |levels: usize| format!("SELECT {}7{}", "(".repeat(levels), ")".repeat(levels));
    let seven: i64 = client.query_one(&nested(MAX_NESTING), &[]).await.unwrap().get(0);
    assert_eq!(seven, 7);
    // The parser counts a few levels of its own for the statement around the expression.
    let too_deep = nested(MAX_NESTING + 10);
    let err = client.simple_query(&too_deep).await.expect_err("nested too deep");
    assert_eq!(code(&err), "54001", "{err:?}");
    let err = client.prepare(&too_deep).await.expect_err("nested too deep, prepared");
    assert_eq!(code(&err), "54001", "{err:?}");
    // A long IN list of negative numbers is not a deep expression.
    let items: Vec<String> = (0..100_000).map(|i| format!("-{i}")).collect();
    let found: bool = client.query_one(&format!("SELECT -99999 IN ({})", items.join(",")), &[]).await.unwrap().get(0);
    assert!(found);
    // At the limit the statement runs; one more term is refused.
    let at_limit: i64 = client.query_one(&chain(MAX_DEPTH + 1), &[]).await.unwrap().get(0);
    assert_eq!(at_limit, MAX_DEPTH as i64 + 1);
    let err = client.simple_query(&chain(MAX_DEPTH + 2)).await.expect_err("one past the limit");
    assert_eq!(code(&err), "54001", "{err:?}");
    // Deep statements from many sessions at once: they wait for one of the node's places for
    // deep statements and all answer.
    let concurrent: Vec<_> = (0..8)
        .map(|i| {
            let url = demo.sql_urls[0].clone();
            tokio::spawn(async move {
                let client = connect(&url).await;
                let sum: i64 = client.query_one(&chain(10_000 + i), &[]).await.unwrap().get(0);
                assert_eq!(sum, 10_000 + i as i64);
            })
        })
        .collect();
    for task in concurrent {
        task.await.unwrap();
    }
    // The process never aborted: every node still answers SQL.
    assert!(demo.child.try_wait().unwrap().is_none(), "the demo process exited");
    for url in &demo.sql_urls {
        let one: i64 = connect(url).await.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{url}");
    }
    demo.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_thousand_term_or_chain_finds_its_rows() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let client = connect(&cluster.pg_url(0, "root")).await;
    client.batch_execute("CREATE TABLE t (k INT PRIMARY KEY, v STRING)").await.unwrap();
    let rows: Vec<String> = (0..500).map(|k| format!("({}, 'v{k}')", k * 41)).collect();
    client.batch_execute(&format!("INSERT INTO t VALUES {}", rows.join(", "))).await.unwrap();
    // k = 1 OR k = 3 OR … OR k = 19999: the odd multiples of 41 below 20,000.
    let terms: Vec<String> = (0..10_000).map(|i| format!("k = {}", 2 * i + 1)).collect();
    let sql = format!("SELECT k, v FROM t WHERE {} ORDER BY k", terms.join(" OR "));
    let expected: Vec<(i64, String)> =
        (0..500).map(|k| k * 41).filter(|k| k % 2 == 1 && *k < 20_000).map(|k| (k, format!("v{}", k / 41))).collect();
    assert_eq!(expected.len(), 244, "the data holds matching and non-matching rows");
    // Extended protocol.
    let found: Vec<(i64, String)> =
        client.query(&sql, &[]).await.unwrap().iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(found, expected);
    // Simple protocol.
    let found: Vec<i64> = client
        .simple_query(&sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(|k| k.parse().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(found, expected.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    // With a placeholder in the chain, typed from the column it meets.
    let with_param = sql.replacen("k = 1 ", "k = $1 ", 1);
    let statement = client.prepare(&with_param).await.unwrap();
    assert_eq!(statement.params(), &[tokio_postgres::types::Type::INT8]);
    // `k = 0` in place of `k = 1` (which matched nothing) adds the row k = 0.
    let found = client.query(&statement, &[&0i64]).await.unwrap();
    assert_eq!(found.len(), 245);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_over_its_memory_budget_fails_alone() {
    let cluster = Cluster::start(1, &["--max-sql-memory-per-statement", "256KiB"]);
    cluster.init().await;
    let client = connect(&cluster.pg_url(0, "root")).await;
    client.batch_execute("CREATE TABLE t (k INT PRIMARY KEY, v STRING)").await.unwrap();
    // Many rows, negative numbers: fine within the budget.
    let pad = "x".repeat(100);
    for batch in 0..15 {
        let rows: Vec<String> = (0..200).map(|i| format!("({}, '{pad}')", -(batch * 200 + i))).collect();
        client.batch_execute(&format!("INSERT INTO t VALUES {}", rows.join(", "))).await.unwrap();
    }
    let keys: Vec<String> = (0..300).map(|i| format!("-{i}")).collect();
    let found: i64 =
        client.query_one(&format!("SELECT count(*) FROM t WHERE k IN ({})", keys.join(",")), &[]).await.unwrap().get(0);
    assert_eq!(found, 300);

    // Reading all 3,000 rows back (~1 MB) is over 256 KiB: 53200, and the session goes on.
    let err = client.simple_query("SELECT * FROM t ORDER BY v").await.expect_err("over budget");
    assert_eq!(code(&err), "53200", "{err:?}");
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert_eq!(message, "statement exceeded its memory budget of 256 KiB");
    // So is one INSERT of 3,000 rows.
    let rows: Vec<String> = (0..3_000).map(|i| format!("({}, '{pad}')", 10_000 + i)).collect();
    let err = client.batch_execute(&format!("INSERT INTO t VALUES {}", rows.join(", "))).await.unwrap_err();
    assert_eq!(code(&err), "53200", "{err:?}");
    let count: i64 = client.query_one("SELECT count(*) FROM t WHERE k >= 10000", &[]).await.unwrap().get(0);
    assert_eq!(count, 0, "a statement that failed wrote nothing");
    let v: String = client.query_one("SELECT v FROM t WHERE k = -7", &[]).await.unwrap().get(0);
    assert_eq!(v, pad);
}

/// The median of `samples`.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failed_login_answers_alike() {
    let (cluster, certs) = Cluster::start_secure(1, &[], "rootpw").await;
    let port = cluster.nodes[0].sql_addr.split(':').nth(1).unwrap().to_string();
    let url = |user: &str, password: &str| {
        format!(
            "postgresql://{user}:{password}@localhost:{port}/defaultdb?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
            certs.join("ca.crt").display()
        )
    };
    let root = wait_for(Duration::from_secs(20), "root login", || async {
        ranged::workload::connect(&url("root", "rootpw")).await.ok()
    })
    .await;
    root.batch_execute(
        "CREATE USER alice WITH PASSWORD 'alicepw'; CREATE ROLE bob WITH NOLOGIN PASSWORD 'bobpw'; CREATE USER carol",
    )
    .await
    .unwrap();

    // Unknown user, NOLOGIN, no password, wrong password: the same answer, with the name.
    let attempts = [("nobody", "nobodypw"), ("bob", "bobpw"), ("carol", "carolpw"), ("alice", "wrongpw")];
    for (user, password) in attempts {
        let Err(err) = ranged::workload::connect(&url(user, password)).await else { panic!("{user} logged in") };
        assert_eq!(err, format!("password authentication failed for user \"{user}\" (28P01)"));
    }
    // And the right password still works.
    connect(&url("alice", "alicepw")).await;

    // Timing: interleaved rounds, so that load on the machine hits every kind alike.
    const ROUNDS: usize = 50;
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); attempts.len()];
    for _ in 0..ROUNDS {
        for (i, (user, password)) in attempts.iter().enumerate() {
            let started = Instant::now();
            let refused = ranged::workload::connect(&url(user, password)).await.is_err();
            times[i].push(started.elapsed());
            assert!(refused, "{user} logged in");
        }
    }
    let mut all: Vec<Duration> = times.iter().flatten().copied().collect();
    let overall = median(&mut all);
    for ((user, _), samples) in attempts.iter().zip(&mut times) {
        let m = median(samples);
        let difference = m.abs_diff(overall).as_secs_f64() / overall.as_secs_f64();
        assert!(difference < 0.2, "{user}: median {m:?} vs overall {overall:?} ({:.0}% apart)", difference * 100.0);
    }
}
