//! SQL over the PostgreSQL wire protocol, end to end: psql, pgbench and tokio-postgres against
//! real `ranged start` processes.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use ranged::pb;
use tokio_postgres::error::SqlState;

async fn connect(url: &str) -> tokio_postgres::Client {
    ranged::workload::connect(url).await.unwrap_or_else(|err| panic!("connect {url}: {err}"))
}

fn code(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_on_every_node_and_pgbench_without_errors() {
    let cluster = Cluster::start(3, &[]);
    cluster.init().await;
    cluster.wait_ready().await;

    let (ok, _, err) = psql(
        &cluster.pg_url(0, "root"),
        &[
            "CREATE TABLE kv (k INT PRIMARY KEY, v STRING)",
            "INSERT INTO kv VALUES (1, 'one'), (2, 'two'), (3, 'three')",
        ],
    );
    assert!(ok, "{err}");
    for node in 1..3 {
        let (ok, out, err) = psql(&cluster.pg_url(node, "root"), &["SELECT k, v FROM kv ORDER BY k"]);
        assert!(ok, "node {node}: {err}");
        assert_eq!(out.trim(), "1|one\n2|two\n3|three", "node {node}");
    }
    let (ok, out, _) = psql(&cluster.pg_url(2, "root"), &["SELECT count(*) FROM kv WHERE k IN (1, 3)"]);
    assert!(ok);
    assert_eq!(out.trim(), "2");

    // pgbench: point SELECT and UPSERT for 30 s, four clients spread over the nodes' URLs.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "\\set k random(1, 1000)\nSELECT v FROM kv WHERE k = :k;\nUPSERT INTO kv (k, v) VALUES (:k, 'pgbench');\n",
    )
    .unwrap();
    let sql_addr = &cluster.nodes[1].sql_addr;
    let (host, port) = sql_addr.split_once(':').unwrap();
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-f", &script.display().to_string(), "-T", "30", "-c", "4", "-j", "2"])
        .args(["-h", host, "-p", port, "-U", "root", "defaultdb"])
        .env("PGSSLMODE", "disable")
        .output()
        .expect("pgbench is installed (apt-get install postgresql-contrib or postgresql)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("number of failed transactions: 0"), "{stdout}");
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(processed > 30, "pgbench processed only {processed} transactions:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn extended_protocol_with_typed_parameters() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let client = connect(&cluster.pg_url(0, "root")).await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT8 PRIMARY KEY, f FLOAT8, s STRING, b BYTES, ok BOOL, ts TIMESTAMP); \
             CREATE TABLE c (a INT, b STRING, v INT, PRIMARY KEY (a, b))",
        )
        .await
        .unwrap();
    let insert = client.prepare("INSERT INTO t (id, f, s, b, ok, ts) VALUES ($1, $2, $3, $4, $5, $6)").await.unwrap();
    assert_eq!(insert.params().len(), 6);
    let when = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    for id in 0..5i64 {
        let n = client
            .execute(
                &insert,
                &[&id, &(id as f64 * 1.5), &format!("row-{id}"), &vec![id as u8, 0u8, 255u8], &(id % 2 == 0), &when],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let row = client.query_one("SELECT id, f, s, b, ok, ts FROM t WHERE id = $1", &[&3i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, f64>(1), 4.5);
    assert_eq!(row.get::<_, String>(2), "row-3");
    assert_eq!(row.get::<_, Vec<u8>>(3), vec![3, 0, 255]);
    assert!(!row.get::<_, bool>(4));
    assert_eq!(row.get::<_, SystemTime>(5), when);

    let rows = client
        .query("SELECT id FROM t WHERE id >= $1 AND ok = $2 ORDER BY id DESC LIMIT $3", &[&1i64, &true, &5i64])
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![4, 2]);
    let updated = client.execute("UPDATE t SET s = $1 WHERE id IN (1, 2)", &[&"changed"]).await.unwrap();
    assert_eq!(updated, 2);
    let deleted = client.execute("DELETE FROM t WHERE id = $1", &[&0i64]).await.unwrap();
    assert_eq!(deleted, 1);
    let count: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(count, 4);

    // Composite keys, UPSERT and ON CONFLICT DO NOTHING.
    client.execute("INSERT INTO c VALUES ($1, $2, $3), (1, 'b', 2)", &[&1i64, &"a", &1i64]).await.unwrap();
    client.execute("UPSERT INTO c VALUES (1, 'a', 10)", &[]).await.unwrap();
    let skipped =
        client.execute("INSERT INTO c VALUES (1, 'b', 99), (2, 'a', 3) ON CONFLICT DO NOTHING", &[]).await.unwrap();
    assert_eq!(skipped, 1);
    let rows = client.query("SELECT a, b, v FROM c WHERE a = 1 ORDER BY b", &[]).await.unwrap();
    let got: Vec<(i64, String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got, vec![(1, "a".into(), 10), (1, "b".into(), 2)]);
    // SPLIT AT and SHOW RANGES: the table's keyspace gets another range.
    client.batch_execute("ALTER TABLE c SPLIT AT VALUES (2)").await.unwrap();
    let ranges = client.query("SHOW RANGES FROM TABLE c", &[]).await.unwrap();
    assert_eq!(ranges.len(), 2, "one range per side of the split");
    let start: String = ranges[1].get("start_key");
    assert!(start.ends_with("/1/2"), "{start}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_registry_shows_connections_and_running_queries() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let url = cluster.pg_url(0, "root");
    let mut clients = Vec::new();
    for app in ["app-one", "app-two", "app-three"] {
        clients.push(connect(&format!("{url}&application_name={app}")).await);
    }
    let sleeper = {
        let client = connect(&format!("{url}&application_name=app-sleep")).await;
        tokio::spawn(async move {
            client.simple_query("SELECT pg_sleep(3)").await.unwrap();
            client
        })
    };
    let channel = cluster.channel(0).await.unwrap();
    let mut status = pb::status_service_client::StatusServiceClient::new(channel);
    let sessions = wait_for(Duration::from_secs(10), "four sessions, one running pg_sleep", || {
        let mut status = status.clone();
        async move {
            let reply =
                status.sessions(pb::SessionsRequest { username: "root".into(), exclude_closed: true }).await.ok()?;
            let sessions = reply.into_inner().sessions;
            let sleeping = sessions.iter().any(|s| s.active_queries.iter().any(|q| q.sql == "SELECT pg_sleep(3)"));
            (sessions.len() == 4 && sleeping).then_some(sessions)
        }
    })
    .await;
    let mut apps: Vec<&str> = sessions.iter().map(|s| s.application_name.as_str()).collect();
    apps.sort();
    assert_eq!(apps, vec!["app-one", "app-sleep", "app-three", "app-two"]);
    for session in &sessions {
        assert_eq!(session.username, "root");
        assert!(session.client_address.starts_with("127.0.0.1:"), "{}", session.client_address);
        assert_eq!(session.id.len(), 16);
        assert!(session.start > 0 && session.end == 0);
        assert!(session.alloc_bytes > 0);
    }
    let sleeping = sessions.iter().find(|s| s.application_name == "app-sleep").unwrap();
    assert_eq!(sleeping.status, pb::SessionStatus::Active as i32);
    assert!(sleeping.active_txn.is_some());
    assert_eq!(sleeping.active_queries[0].phase, 1, "executing");
    let idle = sessions.iter().find(|s| s.application_name == "app-one").unwrap();
    assert_eq!(idle.status, pb::SessionStatus::Idle as i32);
    // Filters apply on the node.
    let none = status.sessions(pb::SessionsRequest { username: "nobody".into(), exclude_closed: false }).await.unwrap();
    assert!(none.into_inner().sessions.is_empty());

    let sleeper = sleeper.await.unwrap();
    drop(sleeper);
    drop(clients);
    let closed = wait_for(Duration::from_secs(10), "closed sessions", || {
        let mut status = status.clone();
        async move {
            let reply =
                status.sessions(pb::SessionsRequest { username: String::new(), exclude_closed: false }).await.ok()?;
            let sessions = reply.into_inner().sessions;
            let closed: Vec<_> =
                sessions.into_iter().filter(|s| s.status == pb::SessionStatus::Closed as i32).collect();
            (closed.len() >= 4).then_some(closed)
        }
    })
    .await;
    assert!(closed.iter().all(|s| s.end >= s.start && s.end > 0));
    let slept = closed.iter().find(|s| s.application_name == "app-sleep").unwrap();
    assert_eq!(slept.last_active_query, "SELECT pg_sleep(3)");
    assert!(slept.num_txns_executed >= 1);
    let open = status.sessions(pb::SessionsRequest { username: String::new(), exclude_closed: true }).await.unwrap();
    assert!(open.into_inner().sessions.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failures_and_statement_errors_have_sqlstates() {
    let root_password = "correct horse battery staple";
    let (cluster, certs) = Cluster::start_secure(1, &[], root_password).await;
    let url = |user: &str, password: &str| {
        format!(
            "postgresql://{user}:{}@localhost:{}/defaultdb?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
            password.replace(' ', "%20"),
            cluster.nodes[0].sql_addr.split(':').nth(1).unwrap(),
            certs.join("ca.crt").display()
        )
    };
    let root = wait_for(Duration::from_secs(20), "root login", || async {
        ranged::workload::connect(&url("root", root_password)).await.ok()
    })
    .await;
    let user_password = "tr0ub4dor&3";
    root.batch_execute(&format!(
        "CREATE USER alice WITH PASSWORD '{user_password}'; CREATE ROLE bob WITH NOLOGIN PASSWORD 'x'; CREATE TABLE t (k INT PRIMARY KEY)"
    ))
    .await
    .unwrap();

    // Authentication: wrong password, unknown user, NOLOGIN role — 28P01 (or 28000) and nothing else.
    for (user, password) in [("root", "wrong"), ("nobody", "x"), ("bob", "x")] {
        let err = match ranged::workload::connect(&url(user, password)).await {
            Ok(_) => panic!("{user} logged in with a bad password"),
            Err(err) => err,
        };
        assert!(err.contains("28P01") || err.contains("28000"), "{user}: {err}");
    }
    let alice = connect(&url("alice", user_password)).await;
    assert_eq!(alice.query_one("SELECT current_user", &[]).await.unwrap().get::<_, String>(0), "alice");
    // Plaintext is refused in secure mode.
    let plain = format!("postgresql://root@{}/defaultdb?sslmode=disable", cluster.nodes[0].sql_addr);
    assert!(ranged::workload::connect(&plain).await.is_err());

    // Statement errors: the right SQLSTATE, and the session answers the next query.
    let cases: [(&str, &SqlState); 6] = [
        ("SELECT * FROM missing", &SqlState::UNDEFINED_TABLE),
        ("SELEC 1", &SqlState::SYNTAX_ERROR),
        ("BEGIN", &SqlState::FEATURE_NOT_SUPPORTED),
        ("CREATE INDEX i ON t (k)", &SqlState::FEATURE_NOT_SUPPORTED),
        ("INSERT INTO t VALUES (1), (1)", &SqlState::UNIQUE_VIOLATION),
        ("SELECT nope FROM t", &SqlState::UNDEFINED_COLUMN),
    ];
    for (sql, expected) in cases {
        let err = alice.batch_execute(sql).await.expect_err(sql);
        assert_eq!(code(&err), expected.code(), "{sql}: {err:?}");
        let one: i64 = alice.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "session unusable after {sql}");
    }
    // Non-admins cannot manage users.
    let err = alice.batch_execute("CREATE USER mallory").await.unwrap_err();
    assert_eq!(code(&err), "42501");

    // No password or secret in plain text anywhere in the store.
    let mut files = vec![cluster.store(0).to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for secret in [root_password, user_password] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} found in {}",
                path.display()
            );
        }
    }
    assert!(scanned > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_databases_and_drop_table() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let url = cluster.pg_url(0, "root");
    let out = ranged(&[
        "workload",
        "run",
        "kv",
        "--url",
        &url,
        "--duration",
        "3s",
        "--concurrency",
        "2",
        "--read-percent",
        "50",
        "--display-every",
        "1s",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ops/sec(cum)") && stdout.lines().count() >= 4, "{stdout}");
    let client = connect(&url).await;
    let rows: i64 = client.query_one("SELECT count(*) FROM kv.kv", &[]).await.unwrap().get(0);
    assert!(rows > 0, "the workload wrote no rows");

    // Databases: CREATE, USE, SHOW; a connection may name a database that does not exist yet.
    let lost = connect(&cluster.pg_url(0, "root").replace("/defaultdb", "/later")).await;
    let err = lost.batch_execute("CREATE TABLE t (k INT PRIMARY KEY)").await.unwrap_err();
    assert_eq!(code(&err), "3D000");
    client.batch_execute("CREATE DATABASE later; CREATE DATABASE IF NOT EXISTS later").await.unwrap();
    lost.batch_execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();
    let dbs: Vec<String> = client
        .simple_query("SHOW DATABASES")
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(dbs.contains(&"later".to_string()) && dbs.contains(&"kv".to_string()), "{dbs:?}");
    client.batch_execute("USE later").await.unwrap();
    assert_eq!(client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0), 1);
    // DROP TABLE removes the table and its rows; a new table of the same name starts empty.
    client.batch_execute("DROP TABLE t; CREATE TABLE t (k INT PRIMARY KEY)").await.unwrap();
    assert_eq!(client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0), 0);
    // The statement deleted the old rows itself: no deletion is left pending.
    let gc = ranged::pb::KvOp {
        op: Some(ranged::pb::kv_op::Op::Scan(ranged::pb::ScanRequest {
            start: ranged::services::keys::GC_PREFIX.to_vec().into(),
            end: ranged::services::keys::prefix_end(ranged::services::keys::GC_PREFIX).into(),
            limit: 0,
        })),
    };
    let pending = cluster.kv(0).await.batch(ranged::pb::BatchRequest { ops: vec![gc], ..Default::default() }).await;
    assert!(pending.unwrap().into_inner().results[0].rows.is_empty());
    let err = client.batch_execute("DROP TABLE nope").await.unwrap_err();
    assert_eq!(code(&err), "42P01");
    client.batch_execute("DROP TABLE IF EXISTS nope; SET application_name = 'renamed'").await.unwrap();
    let app = client.simple_query("SHOW application_name").await.unwrap();
    let value = app.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("renamed"));
}

/// A workload whose node stops answering mid-statement (SIGSTOP) still ends when its time is
/// up: it abandons the unanswered statements after a grace period, says so, and exits
/// non-zero, rather than hanging (and ignoring SIGTERM) as it did.
#[tokio::test(flavor = "multi_thread")]
async fn a_workload_whose_node_freezes_ends_and_says_why() {
    use std::process::{Command, Stdio};
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    let url = cluster.pg_url(0, "root");
    let args = ["workload", "run", "kv", "--url", &url, "--duration", "4s", "--concurrency", "2"];
    let mut workload = Command::new(RANGED).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let client = connect(&url).await;
    wait_for(Duration::from_secs(15), "the workload writing", || async {
        let rows: i64 = client.query_one("SELECT count(*) FROM kv.kv", &[]).await.ok()?.get(0);
        (rows > 0).then_some(())
    })
    .await;
    let pid = cluster.nodes[0].child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let exited = wait_for(Duration::from_secs(30), "the workload to exit", || {
        let status = workload.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut workload.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!exited.success(), "{stderr}");
    assert!(stderr.contains("got no answer within 5s of the end"), "{stderr}");
}
