//! `ranged demo` as a newcomer runs it: it prints how to reach the cluster, the printed
//! commands work over TLS, and SIGTERM stops it and removes its temporary directory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn demo_starts_a_secure_cluster_and_cleans_up() {
    setup();
    let mut child = Command::new(RANGED)
        .args(["demo", "--sql-port", "0", "--http-port", "0", "--password", "demo-pass-1", "--no-workload"])
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Press Ctrl-C");
        banner.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let text = banner.join("\n");
    let status_line = banner.iter().find(|l| l.trim_start().starts_with("ranged node status")).expect(&text);
    let args: Vec<&str> = status_line.split_whitespace().skip(1).collect();
    let out = ranged_ok(&args);
    assert_eq!(out.lines().filter(|l| l.contains(" LIVE ")).count(), 3, "{out}");
    let certs = args.iter().position(|a| *a == "--certs-dir").map(|i| args[i + 1]).expect(&text);
    assert!(std::path::Path::new(certs).join("ca.crt").exists());
    let put_line = banner.iter().find(|l| l.trim_start().starts_with("ranged kv put")).expect(&text);
    ranged_ok(&put_line.split_whitespace().skip(1).collect::<Vec<_>>());

    // psql with the printed URL (TLS, verified against the printed CA) and password.
    let connect = banner.iter().find_map(|l| l.strip_prefix("Connect: psql ")).expect(&text);
    let url = connect.trim().trim_matches('"');
    assert!(url.contains("sslmode=verify-full") && url.contains("demo-pass-1"), "{url}");
    let (ok, out, err) = psql(url, &["SELECT current_user", "SELECT count(*) FROM kv.kv"]);
    assert!(ok, "psql over TLS failed: {err}");
    assert!(out.starts_with("demo\n"), "{out}");

    // The documented API commands, verbatim (CockroachDB's curl lines): log in, list nodes.
    let login = banner.iter().find_map(|l| l.strip_prefix("Log in: ")).expect(&text);
    assert!(login.contains("--cacert") && login.contains("application/x-www-form-urlencoded"), "{login}");
    let out = Command::new("sh").args(["-c", login]).output().expect("curl is installed");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && body.starts_with("{\"session\":\""), "{login}: {body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["session"].as_str().unwrap().to_string();
    let then = banner.iter().find_map(|l| l.strip_prefix("Then:   ")).expect(&text).replace("<session>", &token);
    let out = Command::new("sh").args(["-c", &then]).output().unwrap();
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from /nodes/");
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(3), "{nodes}");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let temp_root = std::path::Path::new(certs).parent().unwrap();
    assert!(!temp_root.exists(), "demo left {} behind", temp_root.display());
}
