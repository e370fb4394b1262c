//! What one SQL statement or login may cost, end to end over the PostgreSQL wire protocol:
//! over-deep expressions are refused (54001) without taking the process down, a statement
//! past its memory budget fails (53200) and the session goes on, and every failed login
//! answers the same message in about the same time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The deepest expression the server accepts, in operators (`MAX_EXPRESSION_DEPTH`).
const MAX_DEPTH: usize = ranged::services::sql::limits::MAX_EXPRESSION_DEPTH;

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
                // tokio-postgres-rustls checks the certificate by host name, not by IP address.
                sql_urls.push(url.trim().replace("@127.0.0.1:", "@localhost:"));
            }
            if line.starts_with("Press Ctrl-C") || Instant::now() > deadline {
                break;
            }
        }
        let logged = || std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(sql_urls.len(), 3, "the demo printed no SQL URL per node: {sql_urls:?}\n{}", logged());
        Demo { child, sql_urls, _log_dir: log_dir }
    }

    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
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
    for terms in [5_000, 50_000, 500_000] {
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
    // A long IN list of negative numbers is not a deep expression.
    let items: Vec<String> = (0..100_000).map(|i| format!("-{i}")).collect();
    let found: bool = client.query_one(&format!("SELECT -99999 IN ({})", items.join(",")), &[]).await.unwrap().get(0);
    assert!(found);
    // At the limit the statement runs.
    let at_limit: i64 = client.query_one(&chain(MAX_DEPTH + 1), &[]).await.unwrap().get(0);
    assert_eq!(at_limit, MAX_DEPTH as i64 + 1);
    // The process never aborted: every node still answers SQL.
    assert!(demo.child.try_wait().unwrap().is_none(), "the demo process exited");
    for url in &demo.sql_urls {
        let one: i64 = connect(url).await.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{url}");
    }
    demo.stop();
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
            "postgresql://{user}:{password}@localhost:{port}/defaultdb?sslmode=verify-full&sslrootcert={}",
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
