//! Per-replica load statistics, counted from real requests at the leaseholder.
//!
//! Each metric is a decayed rate with half-life `h` (`--stats-half-life`, default
//! [`DEFAULT_HALF_LIFE`]): an event of size `x` at time `t` contributes `x·e^{-λ(now-t)}` with
//! `λ = ln 2 / h`, and the rate is that decayed sum divided by the decayed length of the
//! tracker's life, `∫ e^{-λs} ds` over its age. For a steady load the rate therefore equals
//! the true rate from the first second (no warm-up bias), and a load that stops halves its
//! rate every `h`. A new leaseholder starts counting afresh.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Default half-life of every rate.
pub const DEFAULT_HALF_LIFE: Duration = Duration::from_secs(10);

/// The shortest age used as the rate's denominator, so a tracker's first event does not read
/// as an enormous rate.
const MIN_AGE: Duration = Duration::from_secs(1);

/// One decayed rate.
#[derive(Debug, Clone)]
pub struct DecayingRate {
    lambda: f64,
    sum: f64,
    last: Instant,
    created: Instant,
}

impl DecayingRate {
    /// A rate with no events, starting at `now`.
    pub fn new(half_life: Duration, now: Instant) -> Self {
        Self { lambda: std::f64::consts::LN_2 / half_life.as_secs_f64().max(1e-3), sum: 0.0, last: now, created: now }
    }

    fn decay_to(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if elapsed > 0.0 {
            self.sum *= (-self.lambda * elapsed).exp();
            self.last = now;
        }
    }

    /// Records an event of size `amount` at `now`.
    pub fn record(&mut self, now: Instant, amount: f64) {
        self.decay_to(now);
        self.sum += amount;
    }

    /// The rate per second at `now`.
    pub fn rate(&self, now: Instant) -> f64 {
        let since_last = now.saturating_duration_since(self.last).as_secs_f64();
        let sum = self.sum * (-self.lambda * since_last).exp();
        let age = now.saturating_duration_since(self.created).max(MIN_AGE).as_secs_f64();
        let weight = (1.0 - (-self.lambda * age).exp()) / self.lambda;
        sum / weight
    }
}

/// The metrics a replica's load is ranked by (the gateway's `sort_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum LoadMetric {
    /// Batch requests per second touching the range.
    #[default]
    Queries,
    /// CPU time spent evaluating requests, nanoseconds per second.
    Cpu,
    /// Keys read per second.
    Reads,
    /// Keys written per second.
    Writes,
    /// Bytes read per second.
    ReadBytes,
    /// Bytes written per second.
    WriteBytes,
}

impl LoadMetric {
    /// Every metric with its name (the API's `sort_by` values and the CLI's `--hot` values).
    pub const ALL: [(LoadMetric, &'static str); 6] = [
        (LoadMetric::Queries, "qps"),
        (LoadMetric::Cpu, "cpu"),
        (LoadMetric::Reads, "reads"),
        (LoadMetric::Writes, "writes"),
        (LoadMetric::ReadBytes, "read_bytes"),
        (LoadMetric::WriteBytes, "write_bytes"),
    ];

    /// The metric's name (`qps`, `cpu`, ...).
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(metric, _)| *metric == self).map(|(_, name)| *name).unwrap_or("qps")
    }
}

impl std::str::FromStr for LoadMetric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.iter().find(|(_, name)| *name == text).map(|(metric, _)| *metric).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(_, name)| *name).collect();
            format!("unknown metric {text:?} (one of {})", names.join(", "))
        })
    }
}

/// One request's contribution to a range's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSample {
    /// Keys read.
    pub reads: u64,
    /// Keys written.
    pub writes: u64,
    /// Bytes of keys and values read.
    pub read_bytes: u64,
    /// Bytes of keys and values written.
    pub write_bytes: u64,
    /// CPU time spent on the request for this range, in nanoseconds.
    pub cpu_nanos: u64,
}

/// The current rates of one replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadRates {
    /// Queries per second.
    pub queries_per_second: f64,
    /// Reads per second.
    pub reads_per_second: f64,
    /// Writes per second.
    pub writes_per_second: f64,
    /// Read bytes per second.
    pub read_bytes_per_second: f64,
    /// Write bytes per second.
    pub write_bytes_per_second: f64,
    /// CPU nanoseconds per second.
    pub cpu_time_per_second: f64,
}

impl LoadRates {
    /// The value of one metric.
    pub fn get(&self, metric: LoadMetric) -> f64 {
        match metric {
            LoadMetric::Queries => self.queries_per_second,
            LoadMetric::Cpu => self.cpu_time_per_second,
            LoadMetric::Reads => self.reads_per_second,
            LoadMetric::Writes => self.writes_per_second,
            LoadMetric::ReadBytes => self.read_bytes_per_second,
            LoadMetric::WriteBytes => self.write_bytes_per_second,
        }
    }
}

#[derive(Debug, Clone)]
struct ReplicaLoad {
    queries: DecayingRate,
    reads: DecayingRate,
    writes: DecayingRate,
    read_bytes: DecayingRate,
    write_bytes: DecayingRate,
    cpu: DecayingRate,
}

impl ReplicaLoad {
    fn new(half_life: Duration, now: Instant) -> Self {
        let rate = DecayingRate::new(half_life, now);
        Self {
            queries: rate.clone(),
            reads: rate.clone(),
            writes: rate.clone(),
            read_bytes: rate.clone(),
            write_bytes: rate.clone(),
            cpu: rate,
        }
    }

    fn rate(&self, metric: LoadMetric, now: Instant) -> f64 {
        match metric {
            LoadMetric::Queries => self.queries.rate(now),
            LoadMetric::Cpu => self.cpu.rate(now),
            LoadMetric::Reads => self.reads.rate(now),
            LoadMetric::Writes => self.writes.rate(now),
            LoadMetric::ReadBytes => self.read_bytes.rate(now),
            LoadMetric::WriteBytes => self.write_bytes.rate(now),
        }
    }

    fn rates(&self, now: Instant) -> LoadRates {
        LoadRates {
            queries_per_second: self.queries.rate(now),
            reads_per_second: self.reads.rate(now),
            writes_per_second: self.writes.rate(now),
            read_bytes_per_second: self.read_bytes.rate(now),
            write_bytes_per_second: self.write_bytes.rate(now),
            cpu_time_per_second: self.cpu.rate(now),
        }
    }
}

/// The load of every range this node holds the lease for.
#[derive(Debug)]
pub struct LoadTracker {
    half_life: Duration,
    replicas: std::sync::Mutex<HashMap<u64, ReplicaLoad>>,
}

impl LoadTracker {
    /// A tracker whose rates use `half_life`.
    pub fn new(half_life: Duration) -> Self {
        Self { half_life, replicas: Default::default() }
    }

    /// Records one request's work on `range_id`.
    pub fn record(&self, range_id: u64, sample: LoadSample) {
        let now = Instant::now();
        let mut replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let load = replicas.entry(range_id).or_insert_with(|| ReplicaLoad::new(self.half_life, now));
        load.queries.record(now, 1.0);
        load.reads.record(now, sample.reads as f64);
        load.writes.record(now, sample.writes as f64);
        load.read_bytes.record(now, sample.read_bytes as f64);
        load.write_bytes.record(now, sample.write_bytes as f64);
        load.cpu.record(now, sample.cpu_nanos as f64);
    }

    /// The rates of `range_id` (zero if it saw no traffic here).
    pub fn rates(&self, range_id: u64) -> LoadRates {
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        replicas.get(&range_id).map(|load| load.rates(Instant::now())).unwrap_or_default()
    }

    /// The rates of every range that saw traffic here.
    pub fn all_rates(&self) -> Vec<(u64, LoadRates)> {
        let now = Instant::now();
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        replicas.iter().map(|(id, load)| (*id, load.rates(now))).collect()
    }

    /// The `k` ranges with the highest `metric`, as [`top_k`] orders them. Only the ranked
    /// metric is evaluated for every range and only the winners' rates in full: with
    /// thousands of loaded ranges, evaluating all six decayed rates of each dominated the
    /// hot-ranges call (BENCHMARKS.md, comparison 4).
    pub fn top(&self, metric: LoadMetric, k: usize) -> Vec<(u64, LoadRates)> {
        let now = Instant::now();
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ranked: Vec<(u64, f64)> = replicas.iter().map(|(id, load)| (*id, load.rate(metric, now))).collect();
        let order = |(a_id, a): &(u64, f64), (b_id, b): &(u64, f64)| b.total_cmp(a).then(a_id.cmp(b_id));
        if k == 0 {
            return Vec::new();
        }
        if ranked.len() > k {
            ranked.select_nth_unstable_by(k - 1, order);
            ranked.truncate(k);
        }
        ranked.sort_unstable_by(order);
        ranked.into_iter().filter_map(|(id, _)| replicas.get(&id).map(|load| (id, load.rates(now)))).collect()
    }

    /// Forgets the counts of the ranges `forget` picks: called for the ranges whose lease this
    /// node loses or gains.
    pub fn forget(&self, forget: impl Fn(u64) -> bool) {
        self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|id, _| !forget(*id));
    }
}

/// The `k` entries with the highest `metric`, highest first; ties go to the lower range id so
/// the order is stable across calls and nodes.
pub fn top_k(mut entries: Vec<(u64, LoadRates)>, metric: LoadMetric, k: usize) -> Vec<(u64, LoadRates)> {
    entries.sort_by(|(a_id, a), (b_id, b)| b.get(metric).total_cmp(&a.get(metric)).then(a_id.cmp(b_id)));
    entries.truncate(k);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_reads_true_from_the_start() {
        let start = Instant::now();
        let mut rate = DecayingRate::new(Duration::from_secs(10), start);
        // 100 events per second for 3 seconds.
        for i in 1..=300u64 {
            rate.record(start + Duration::from_millis(i * 10), 1.0);
        }
        let measured = rate.rate(start + Duration::from_secs(3));
        assert!((measured - 100.0).abs() < 3.0, "{measured}");
    }

    #[test]
    fn idle_rate_halves_every_half_life() {
        let start = Instant::now();
        let mut rate = DecayingRate::new(Duration::from_secs(2), start);
        for i in 1..=2000u64 {
            rate.record(start + Duration::from_millis(i * 10), 1.0);
        }
        let end = start + Duration::from_secs(20);
        let before = rate.rate(end);
        let after = rate.rate(end + Duration::from_secs(2));
        assert!((after / before - 0.5).abs() < 0.02, "{before} -> {after}");
    }

    #[test]
    fn top_k_orders_by_metric_then_id() {
        let rates = |q: f64, w: f64| LoadRates { queries_per_second: q, writes_per_second: w, ..Default::default() };
        let entries = vec![(1, rates(5.0, 1.0)), (2, rates(9.0, 0.0)), (3, rates(5.0, 7.0)), (4, rates(0.0, 2.0))];
        let ids = |v: Vec<(u64, LoadRates)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(top_k(entries.clone(), LoadMetric::Queries, 3)), vec![2, 1, 3]);
        assert_eq!(ids(top_k(entries, LoadMetric::Writes, 2)), vec![3, 4]);
    }

    #[test]
    fn tracker_counts_per_range() {
        let tracker = LoadTracker::new(Duration::from_secs(10));
        tracker.record(7, LoadSample { reads: 2, read_bytes: 10, ..Default::default() });
        tracker.record(7, LoadSample { writes: 1, write_bytes: 4, ..Default::default() });
        let rates = tracker.rates(7);
        // Two queries inside the one-second minimum age.
        assert!((rates.queries_per_second - 2.0).abs() < 0.1, "{rates:?}");
        assert!(rates.reads_per_second > 1.9 && rates.write_bytes_per_second > 3.9);
        assert_eq!(tracker.rates(8), LoadRates::default());
    }

    #[test]
    fn tracker_top_matches_top_k_over_all_rates() {
        let tracker = LoadTracker::new(Duration::from_secs(10));
        // Range i sees i queries of (i * 7) % 41 written keys each: two different orders.
        for i in 1..=40u64 {
            for _ in 0..i {
                tracker.record(
                    i,
                    LoadSample { reads: 0, writes: (i * 7) % 41, read_bytes: 0, write_bytes: 0, cpu_nanos: 0 },
                );
            }
        }
        let ids = |v: Vec<(u64, LoadRates)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        for metric in [LoadMetric::Queries, LoadMetric::Writes] {
            for k in [0, 1, 5, 40, 100] {
                assert_eq!(ids(tracker.top(metric, k)), ids(top_k(tracker.all_rates(), metric, k)), "{metric:?} {k}");
            }
        }
    }
}
