//! `ranged workload run kv`: a PostgreSQL-wire load generator in the spirit of CockroachDB's
//! `workload run kv`. Each worker holds its own connection and runs prepared point reads
//! (`SELECT ... WHERE k = $1`) and upserts on `kv.kv`, with uniform or Zipf-distributed keys,
//! optionally rate-limited. It prints throughput and latency percentiles every few seconds and
//! a summary at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_distr::Distribution;
use tokio_postgres::config::SslMode;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent 1.1: a few keys take most of the traffic.
    Zipf,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct KvOptions {
    /// `postgres://` URL; `sslrootcert=` names the CA file when TLS is used.
    pub url: String,
    /// Concurrent connections.
    pub concurrency: usize,
    /// How long to run (`None`: until stopped).
    pub duration: Option<Duration>,
    /// Percent of operations that are reads.
    pub read_percent: u8,
    /// Key distribution.
    pub distribution: KeyDistribution,
    /// Total operations per second across workers (0: unlimited).
    pub max_rate: f64,
    /// Number of distinct keys.
    pub keys: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Seconds between progress lines.
    pub display_every: Duration,
    /// Whether to print progress and the summary (the demo runs it quietly).
    pub print: bool,
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl Summary {
    /// Successful operations per second.
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Percentile (0..=100) of sorted latencies in microseconds, in milliseconds.
pub fn percentile_ms(sorted_micros: &[u32], percent: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let rank = ((percent / 100.0) * (sorted_micros.len() as f64 - 1.0)).round() as usize;
    sorted_micros[rank.min(sorted_micros.len() - 1)] as f64 / 1000.0
}

/// Splits `sslrootcert` out of a URL (tokio-postgres does not read it) and returns it. libpq's
/// `verify-full`/`verify-ca` become `require`, which tokio-postgres knows: the certificate is
/// verified anyway, against `sslrootcert`, host name included.
pub fn split_root_cert(url: &str) -> (String, Option<PathBuf>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter_map(|pair| match pair.split_once('=') {
            Some(("sslrootcert", path)) => {
                root = Some(PathBuf::from(path));
                None
            }
            Some(("sslmode", "verify-full" | "verify-ca")) => Some("sslmode=require"),
            _ => Some(pair),
        })
        .collect();
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, root)
}

/// A PostgreSQL error with its SQLSTATE and message (tokio-postgres prints only "db error").
pub fn describe_error(err: &tokio_postgres::Error) -> String {
    match (err.as_db_error(), std::error::Error::source(err)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        // "error communicating with the server" alone does not say what went wrong.
        (None, Some(cause)) => format!("{err}: {cause}"),
        (None, None) => err.to_string(),
    }
}

/// Connects to `url` (TLS when its sslmode asks for it, verified against `sslrootcert`).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (url, root_cert) = split_root_cert(url);
    let config: tokio_postgres::Config = url.parse().map_err(|err| format!("invalid URL: {err}"))?;
    if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|err| describe_error(&err))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        return Ok(client);
    }
    let Some(root_cert) = root_cert else {
        return Err("TLS needs sslrootcert=<CA file> in the URL (or sslmode=disable for --insecure clusters)".into());
    };
    let pem = std::fs::read(&root_cert).map_err(|err| format!("cannot read {}: {err}", root_cert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| format!("invalid certificate in {}: {err}", root_cert.display()))?;
        roots.add(cert).map_err(|err| format!("invalid CA certificate: {err}"))?;
    }
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
    let (client, connection) = config.connect(tls).await.map_err(|err| describe_error(&err))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates `kv.kv` if needed.
pub async fn init(url: &str) -> Result<(), String> {
    let client = connect(url).await?;
    client
        .batch_execute("CREATE DATABASE IF NOT EXISTS kv")
        .await
        .map_err(|err| format!("creating database kv: {}", describe_error(&err)))?;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS kv.kv (k INT8 PRIMARY KEY, v BYTES NOT NULL)")
        .await
        .map_err(|err| format!("creating table kv.kv: {}", describe_error(&err)))?;
    Ok(())
}

struct Shared {
    ops: AtomicU64,
    errors: AtomicU64,
    interval: Mutex<Vec<u32>>,
    all: Mutex<Vec<u32>>,
    stop: AtomicBool,
    last_error: Mutex<Option<String>>,
}

enum Keys {
    Uniform(u64),
    Zipf(rand_distr::Zipf<f64>),
}

impl Keys {
    fn sample(&self, rng: &mut impl Rng) -> i64 {
        match self {
            Keys::Uniform(n) => rng.random_range(0..*n) as i64,
            // Zipf samples 1..=n; keys are 0-based.
            Keys::Zipf(zipf) => zipf.sample(rng) as i64 - 1,
        }
    }
}

async fn worker(options: Arc<KvOptions>, shared: Arc<Shared>, worker_rate: f64) -> Result<(), String> {
    let client = connect(&options.url).await?;
    let read = client.prepare("SELECT k, v FROM kv.kv WHERE k = $1").await.map_err(|err| describe_error(&err))?;
    let write = client.prepare("UPSERT INTO kv.kv (k, v) VALUES ($1, $2)").await.map_err(|err| describe_error(&err))?;
    let keys = match options.distribution {
        KeyDistribution::Uniform => Keys::Uniform(options.keys.max(1)),
        KeyDistribution::Zipf => {
            Keys::Zipf(rand_distr::Zipf::new(options.keys.max(1) as f64, 1.1).map_err(|err| err.to_string())?)
        }
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
    let start = Instant::now();
    let mut done = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if worker_rate > 0.0 {
            let due = start + Duration::from_secs_f64(done as f64 / worker_rate);
            tokio::time::sleep_until(due.into()).await;
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let key = keys.sample(&mut rng);
        let began = Instant::now();
        let result = if rng.random_range(0..100u8) < options.read_percent {
            client.query(&read, &[&key]).await.map(drop)
        } else {
            let value: Vec<u8> = (0..options.value_bytes).map(|_| rng.random()).collect();
            client.execute(&write, &[&key, &value]).await.map(drop)
        };
        done += 1;
        match result {
            Ok(()) => {
                let micros = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
                shared.ops.fetch_add(1, Ordering::Relaxed);
                shared.interval.lock().unwrap_or_else(|p| p.into_inner()).push(micros);
            }
            Err(err) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(describe_error(&err));
                if client.is_closed() {
                    return Err(format!("connection lost: {err}"));
                }
            }
        }
    }
    Ok(())
}

/// How long the workload waits, once it is over, for statements still running.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the kv workload; prints progress to stdout. `stop` ends it early.
pub async fn run_kv(options: KvOptions, stop: impl std::future::Future<Output = ()>) -> Result<Summary, String> {
    if options.concurrency == 0 || options.read_percent > 100 {
        return Err("--concurrency must be at least 1 and --read-percent at most 100".into());
    }
    init(&options.url).await?;
    let shared = Arc::new(Shared {
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        interval: Mutex::default(),
        all: Mutex::default(),
        stop: AtomicBool::new(false),
        last_error: Mutex::default(),
    });
    let options = Arc::new(options);
    let worker_rate = options.max_rate / options.concurrency as f64;
    let mut workers = Vec::new();
    for _ in 0..options.concurrency {
        workers.push(tokio::spawn(worker(options.clone(), shared.clone(), worker_rate)));
    }
    let started = Instant::now();
    if options.print {
        println!("_elapsed___errors__ops/sec(inst)___ops/sec(cum)__p50(ms)__p99(ms)");
    }
    let deadline = options.duration.map(|d| started + d);
    let mut ticker = tokio::time::interval_at((started + options.display_every).into(), options.display_every);
    let mut last_ops = 0;
    tokio::pin!(stop);
    loop {
        let finished = tokio::select! {
            _ = ticker.tick() => false,
            _ = &mut stop => true,
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let mut interval = std::mem::take(&mut *shared.interval.lock().unwrap_or_else(|p| p.into_inner()));
        interval.sort_unstable();
        let ops = shared.ops.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let last_error = shared.last_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        if options.print {
            println!(
                "{:>7.1}s {:>8} {:>15.1} {:>14.1} {:>8.1} {:>8.1}",
                elapsed,
                shared.errors.load(Ordering::Relaxed),
                (ops - last_ops) as f64 / options.display_every.as_secs_f64(),
                ops as f64 / elapsed.max(1e-9),
                percentile_ms(&interval, 50.0),
                percentile_ms(&interval, 99.0)
            );
            if let Some(err) = last_error {
                eprintln!("last error: {err}");
            }
        }
        last_ops = ops;
        shared.all.lock().unwrap_or_else(|p| p.into_inner()).extend(interval);
        if finished || workers.iter().all(|w| w.is_finished()) {
            break;
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    // A worker whose statement never gets an answer would hold the run open forever (and a
    // SIGTERM with it): after the grace period it is abandoned and reported.
    let grace = tokio::time::Instant::now() + STOP_GRACE;
    for mut worker in workers {
        match tokio::time::timeout_at(grace, &mut worker).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => failures.push(err),
            Ok(Err(err)) => failures.push(err.to_string()),
            Err(_) => {
                worker.abort();
                failures.push(format!("a statement got no answer within {}s of the end", STOP_GRACE.as_secs()));
            }
        }
    }
    let mut all = std::mem::take(&mut *shared.all.lock().unwrap_or_else(|p| p.into_inner()));
    all.extend(std::mem::take(&mut *shared.interval.lock().unwrap_or_else(|p| p.into_inner())));
    all.sort_unstable();
    let summary = Summary {
        ops: shared.ops.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed,
        p50_ms: percentile_ms(&all, 50.0),
        p99_ms: percentile_ms(&all, 99.0),
    };
    if options.print {
        println!("\n_elapsed___errors_____ops(total)___ops/sec(cum)__p50(ms)__p99(ms)");
        println!(
            "{:>7.1}s {:>8} {:>14} {:>14.1} {:>8.1} {:>8.1}",
            elapsed.as_secs_f64(),
            summary.errors,
            summary.ops,
            summary.ops_per_second(),
            summary.p50_ms,
            summary.p99_ms
        );
    }
    if let Some(err) = failures.first() {
        return Err(format!("{} of {} workers failed: {err}", failures.len(), options.concurrency));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_latencies() {
        let micros: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&micros, 50.0), 51.0);
        assert_eq!(percentile_ms(&micros, 99.0), 99.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn root_cert_is_split_out_of_the_url() {
        let (url, root) =
            split_root_cert("postgresql://u:p@h:1/db?sslmode=verify-full&sslrootcert=/c/ca.crt&application_name=x");
        assert_eq!(url, "postgresql://u:p@h:1/db?sslmode=require&application_name=x");
        assert_eq!(root, Some(PathBuf::from("/c/ca.crt")));
        assert_eq!(split_root_cert("postgresql://h/db"), ("postgresql://h/db".to_string(), None));
    }

    #[test]
    fn zipf_keys_stay_in_range_and_skew() {
        let keys = Keys::Zipf(rand_distr::Zipf::new(1000.0, 1.1).unwrap());
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
        let samples: Vec<i64> = (0..10_000).map(|_| keys.sample(&mut rng)).collect();
        assert!(samples.iter().all(|k| (0..1000).contains(k)));
        let zeros = samples.iter().filter(|k| **k == 0).count();
        assert!(zeros > 1000, "key 0 should be hot, got {zeros}");
    }
}
