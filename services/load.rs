//! Per-replica load statistics, counted from real requests at the leaseholder.
//!
//! Each metric is a decayed rate with half-life `h` (`--stats-half-life`, default
//! [`DEFAULT_HALF_LIFE`]): an event of size `x` at time `t` contributes `x·e^{-λ(now-t)}` with
//! `λ = ln 2 / h`, and the rate is that decayed sum divided by the decayed length of the
//! tracker's life, `∫ e^{-λs} ds` over its age. For a steady load the rate therefore equals
//! the true rate from the first second (no warm-up bias), and a load that stops halves its
//! rate every `h`. A leaseholder handing its lease over sends the range's rates with it
//! ([`LoadTracker::handoff`]) and the new one goes on from them ([`LoadTracker::take_over`]);
//! a lease taken by election starts counting afresh.

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

    /// A rate that reads `rate` at `now`, as if that rate had been steady for `measured`
    /// (a rate measured elsewhere, going on here).
    fn steady(half_life: Duration, now: Instant, rate: f64, measured: Duration) -> Self {
        let created = now.checked_sub(measured).unwrap_or(now);
        let mut seeded = Self::new(half_life, created);
        seeded.last = now;
        seeded.sum = rate * seeded.weight(now);
        seeded
    }

    /// Adds what `other` counted (its events and its longer life, if longer).
    fn absorb(&mut self, other: &DecayingRate, now: Instant) {
        self.decay_to(now);
        self.sum += other.sum * (-self.lambda * now.saturating_duration_since(other.last).as_secs_f64()).exp();
        self.created = self.created.min(other.created);
    }

    /// The decayed length of the rate's life at `now`: what the decayed sum is divided by.
    fn weight(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.created).max(MIN_AGE).as_secs_f64();
        (1.0 - (-self.lambda * age).exp()) / self.lambda
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
        sum / self.weight(now)
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
    /// Queries per second by the node whose client sent them (this leaseholder's own count:
    /// not handed on with the lease, since the next leaseholder is one of those nodes).
    origins: Vec<(u64, DecayingRate)>,
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
            origins: Vec::new(),
        }
    }

    /// A load reading `rates` at `now`, as if steady over `measured`.
    fn steady(half_life: Duration, now: Instant, rates: &LoadRates, measured: Duration) -> Self {
        let rate = |value: f64| DecayingRate::steady(half_life, now, value, measured);
        Self {
            queries: rate(rates.queries_per_second),
            reads: rate(rates.reads_per_second),
            writes: rate(rates.writes_per_second),
            read_bytes: rate(rates.read_bytes_per_second),
            write_bytes: rate(rates.write_bytes_per_second),
            cpu: rate(rates.cpu_time_per_second),
            origins: Vec::new(),
        }
    }

    fn absorb(&mut self, other: &ReplicaLoad, now: Instant) {
        self.queries.absorb(&other.queries, now);
        self.reads.absorb(&other.reads, now);
        self.writes.absorb(&other.writes, now);
        self.read_bytes.absorb(&other.read_bytes, now);
        self.write_bytes.absorb(&other.write_bytes, now);
        self.cpu.absorb(&other.cpu, now);
        for (node, rate) in &other.origins {
            match self.origins.iter_mut().find(|(id, _)| id == node) {
                Some((_, mine)) => mine.absorb(rate, now),
                None => self.origins.push((*node, rate.clone())),
            }
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

    /// Records one request's work on `range_id`, for a client of node `origin` (0: unknown).
    pub fn record(&self, range_id: u64, sample: LoadSample, origin: u64) {
        let now = Instant::now();
        let mut replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let load = replicas.entry(range_id).or_insert_with(|| ReplicaLoad::new(self.half_life, now));
        if origin != 0 {
            match load.origins.iter_mut().find(|(id, _)| *id == origin) {
                Some((_, rate)) => rate.record(now, 1.0),
                None => {
                    let mut rate = DecayingRate::new(self.half_life, now);
                    rate.record(now, 1.0);
                    load.origins.push((origin, rate));
                }
            }
        }
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

    /// The queries per second of `range_id` by the node whose client sent them (empty if it
    /// saw no traffic here).
    pub fn origins(&self, range_id: u64) -> Vec<(u64, f64)> {
        let now = Instant::now();
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let origins = replicas.get(&range_id).map(|load| load.origins.as_slice()).unwrap_or_default();
        origins.iter().map(|(node, rate)| (*node, rate.rate(now))).collect()
    }

    /// The rates of every range that saw traffic here.
    pub fn all_rates(&self) -> Vec<(u64, LoadRates)> {
        let now = Instant::now();
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        replicas.iter().map(|(id, load)| (*id, load.rates(now))).collect()
    }

    /// The rate of `metric` of every range that saw traffic here.
    pub fn metric_rates(&self, metric: LoadMetric) -> Vec<(u64, f64)> {
        let now = Instant::now();
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        replicas.iter().map(|(id, load)| (*id, load.rate(metric, now))).collect()
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

    /// What to hand the next leaseholder of `range_id` with its lease: the range's rates and
    /// how long they were measured (`None` if it saw no traffic here).
    pub fn handoff(&self, range_id: u64) -> Option<(LoadRates, Duration)> {
        let now = Instant::now();
        let replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let load = replicas.get(&range_id)?;
        Some((load.rates(now), now.saturating_duration_since(load.queries.created)))
    }

    /// Goes on from `rates` measured over `measured` by the previous leaseholder of
    /// `range_id`, adding what was counted here since this node took the lease.
    pub fn take_over(&self, range_id: u64, rates: &LoadRates, measured: Duration) {
        let now = Instant::now();
        // Figures from a peer: a rate that is not a finite, positive number counts as none.
        let clean = |rate: f64| if rate.is_finite() && rate > 0.0 { rate } else { 0.0 };
        let rates = LoadRates {
            queries_per_second: clean(rates.queries_per_second),
            reads_per_second: clean(rates.reads_per_second),
            writes_per_second: clean(rates.writes_per_second),
            read_bytes_per_second: clean(rates.read_bytes_per_second),
            write_bytes_per_second: clean(rates.write_bytes_per_second),
            cpu_time_per_second: clean(rates.cpu_time_per_second),
        };
        let mut seeded = ReplicaLoad::steady(self.half_life, now, &rates, measured);
        let mut replicas = self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(counted) = replicas.get(&range_id) {
            seeded.absorb(counted, now);
        }
        replicas.insert(range_id, seeded);
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
    fn a_load_handed_over_reads_the_same_and_decays_as_before() {
        let tracker = LoadTracker::new(Duration::from_secs(10));
        let rates = LoadRates { queries_per_second: 200.0, writes_per_second: 50.0, ..Default::default() };
        tracker.take_over(7, &rates, Duration::from_secs(30));
        let now = tracker.rates(7);
        assert!((now.queries_per_second - 200.0).abs() < 1.0, "{now:?}");
        assert!((now.writes_per_second - 50.0).abs() < 0.5, "{now:?}");
        assert_eq!(now.reads_per_second, 0.0);
        // Handed on again: the same rates, measured over the same time (and a moment more).
        let (again, measured) = tracker.handoff(7).unwrap();
        assert!((again.queries_per_second - 200.0).abs() < 1.0, "{again:?}");
        assert!(measured >= Duration::from_secs(30) && measured < Duration::from_secs(31), "{measured:?}");
        assert!(tracker.handoff(8).is_none());
        // Nonsense from a peer counts as no load.
        let nonsense = LoadRates { queries_per_second: f64::NAN, reads_per_second: -5.0, ..Default::default() };
        tracker.take_over(9, &nonsense, Duration::from_secs(5));
        assert_eq!(tracker.rates(9), LoadRates::default());
        // A steady rate seeded at 30 s of age, idle for one half-life, reads about half.
        let start = Instant::now();
        let seeded = DecayingRate::steady(Duration::from_secs(10), start, 100.0, Duration::from_secs(30));
        let later = seeded.rate(start + Duration::from_secs(10));
        assert!((later / 100.0 - 0.5).abs() < 0.1, "{later}");
        // What the new leaseholder counted before the handoff arrived is added.
        let mut counted = DecayingRate::new(Duration::from_secs(10), start);
        for i in 1..=100u64 {
            counted.record(start + Duration::from_millis(i * 10), 1.0);
        }
        let end = start + Duration::from_secs(1);
        let mut seeded = DecayingRate::steady(Duration::from_secs(10), end, 100.0, Duration::from_secs(30));
        seeded.absorb(&counted, end);
        let total = seeded.rate(end);
        assert!(total > 100.0 && total < 110.0, "{total}");
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
        tracker.record(7, LoadSample { reads: 2, read_bytes: 10, ..Default::default() }, 1);
        tracker.record(7, LoadSample { writes: 1, write_bytes: 4, ..Default::default() }, 1);
        let rates = tracker.rates(7);
        // Two queries inside the one-second minimum age.
        assert!((rates.queries_per_second - 2.0).abs() < 0.1, "{rates:?}");
        assert!(rates.reads_per_second > 1.9 && rates.write_bytes_per_second > 3.9);
        assert_eq!(tracker.rates(8), LoadRates::default());
    }

    #[test]
    fn tracker_counts_where_each_ranges_queries_come_from_and_keeps_it_through_a_take_over() {
        let tracker = LoadTracker::new(Duration::from_secs(10));
        for origin in [2, 2, 2, 1, 0] {
            tracker.record(7, LoadSample::default(), origin);
        }
        tracker.record(8, LoadSample::default(), 3);
        let rate = |origins: Vec<(u64, f64)>, node: u64| {
            origins.iter().find(|(id, _)| *id == node).map(|(_, rate)| rate.round())
        };
        // Inside the one-second minimum age a count reads as about that many a second.
        let origins = tracker.origins(7);
        assert_eq!(origins.len(), 2, "an unknown origin (0) is not counted: {origins:?}");
        assert_eq!((rate(origins.clone(), 2), rate(origins, 1)), (Some(3.0), Some(1.0)));
        assert_eq!(rate(tracker.origins(8), 3), Some(1.0));
        assert!(tracker.origins(9).is_empty());
        // A lease handed back: what this node counted since it took the lease stays.
        let rates = LoadRates { queries_per_second: 5.0, ..Default::default() };
        tracker.take_over(7, &rates, Duration::from_secs(30));
        assert_eq!(rate(tracker.origins(7), 2), Some(3.0));
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
                    1,
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
