//! The bank workload over PostgreSQL wire: a table of accounts, transfers between two
//! random accounts through random nodes, and readers checking that the total never changes.
//!
//! The SQL engine has no transactions across statements and no CASE, so a transfer is one
//! UPDATE of both rows whose arithmetic adds the amount to one and takes it from the other:
//! `balance + amount * (2 * id - a - b) / (b - a)` is `-amount` for `a` and `+amount` for `b`.
//! A single UPDATE is atomic (one batch of compare-and-puts); a conflicting transfer fails
//! with SQLSTATE 40001 and has no effect. Balances may go negative: nothing enforces otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// How long one statement may take before its outcome is called unknown.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One transfer of `amount` from account `from` to account `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub from: i64,
    pub to: i64,
    pub amount: i64,
}

/// What the bank clients saw.
#[derive(Debug, Default)]
pub struct BankReport {
    /// Transfers the server acknowledged.
    pub acked: Vec<Transfer>,
    /// Transfers without an answer: they may or may not have happened.
    pub unknown: Vec<Transfer>,
    /// Transfers refused with no effect (serialization conflicts and other SQL errors).
    pub failed: usize,
    /// Reads of all balances that answered (each checked).
    pub reads: usize,
    /// Reads that broke the invariant.
    pub violations: Vec<String>,
}

/// Bank workload settings.
#[derive(Debug, Clone)]
pub struct Bank {
    pub table: String,
    pub accounts: i64,
    pub initial: i64,
    pub clients: usize,
    pub seed: u64,
}

/// Connects to `url`, bounded by the statement timeout.
async fn connect(url: &str) -> Option<tokio_postgres::Client> {
    let (client, connection) =
        tokio::time::timeout(STATEMENT_TIMEOUT, tokio_postgres::connect(url, NoTls)).await.ok()?.ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// One client's connections, one per node, (re)made on demand.
struct Connections {
    urls: Vec<String>,
    clients: Vec<Option<tokio_postgres::Client>>,
}

impl Connections {
    fn new(urls: &[String]) -> Connections {
        Connections { urls: urls.to_vec(), clients: urls.iter().map(|_| None).collect() }
    }

    /// Runs `sql` through node `i`: `Ok` with the rows, `Err(true)` for an error that proves
    /// no effect (a SQL error such as a serialization conflict), `Err(false)` when unknown.
    /// Rows come back as text (the simple query protocol), whatever the column types.
    async fn query(&mut self, i: usize, sql: &str) -> Result<Vec<Vec<String>>, bool> {
        if self.clients[i].is_none() {
            self.clients[i] = connect(&self.urls[i]).await;
        }
        let client = self.clients[i].as_ref().ok_or(true)?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, client.simple_query(sql)).await {
            Ok(Ok(messages)) => Ok(messages
                .iter()
                .filter_map(|message| match message {
                    SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|c| row.get(c).unwrap_or_default().to_string()).collect())
                    }
                    _ => None,
                })
                .collect()),
            Ok(Err(err)) if err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => Err(true),
            Ok(Err(_)) | Err(_) => {
                self.clients[i] = None;
                Err(false)
            }
        }
    }
}

impl Bank {
    /// The transfer statement.
    fn transfer_sql(&self, t: Transfer) -> String {
        let (a, b, amount, table) = (t.from, t.to, t.amount, &self.table);
        format!(
            "UPDATE {table} SET balance = balance + {amount} * (2 * id - {a} - {b}) / ({b} - {a}) WHERE id IN ({a}, {b})"
        )
    }

    /// Creates the table with every account at `initial`, through `url`.
    pub async fn create(&self, url: &str) {
        let client = connect(url).await.expect("connect for the bank table");
        let table = &self.table;
        client
            .batch_execute(&format!("CREATE TABLE {table} (id INT PRIMARY KEY, balance INT NOT NULL)"))
            .await
            .expect("create the bank table");
        let rows: Vec<String> = (0..self.accounts).map(|id| format!("({id}, {})", self.initial)).collect();
        client.batch_execute(&format!("INSERT INTO {table} VALUES {}", rows.join(", "))).await.expect("fill the bank");
    }

    /// Every balance by account, read through node `i` in one statement.
    async fn balances(&self, connections: &mut Connections, i: usize) -> Option<Vec<(i64, i64)>> {
        let sql = format!("SELECT id, balance FROM {} ORDER BY id", self.table);
        let rows = connections.query(i, &sql).await.ok()?;
        rows.iter().map(|row| Some((row.first()?.parse().ok()?, row.get(1)?.parse().ok()?))).collect()
    }

    /// The invariant on one read: every account present, the total unchanged.
    fn invariant(&self, balances: &[(i64, i64)]) -> Result<(), String> {
        let total: i64 = balances.iter().map(|(_, b)| b).sum();
        if balances.len() as i64 != self.accounts || total != self.accounts * self.initial {
            return Err(format!(
                "read {} accounts totalling {total}, expected {} totalling {}: {balances:?}",
                balances.len(),
                self.accounts,
                self.accounts * self.initial
            ));
        }
        Ok(())
    }

    /// Runs transfer clients and one reader through the nodes at `urls` until `stop` is set.
    pub async fn run(&self, urls: Vec<String>, stop: Arc<AtomicBool>) -> BankReport {
        let report = Arc::new(Mutex::new(BankReport::default()));
        let mut tasks = Vec::new();
        for client in 0..self.clients {
            let (bank, urls, stop, report) = (self.clone(), urls.clone(), stop.clone(), report.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(bank.seed.wrapping_add(1000 + client as u64));
                let mut connections = Connections::new(&urls);
                while !stop.load(Ordering::Relaxed) {
                    let from = rng.random_range(0..bank.accounts);
                    let to = (from + rng.random_range(1..bank.accounts)) % bank.accounts;
                    let transfer = Transfer { from, to, amount: rng.random_range(1..=50) };
                    let node = rng.random_range(0..urls.len());
                    let result = connections.query(node, &bank.transfer_sql(transfer)).await;
                    {
                        let mut report = report.lock().unwrap();
                        match result {
                            Ok(_) => report.acked.push(transfer),
                            Err(true) => report.failed += 1,
                            Err(false) => report.unknown.push(transfer),
                        }
                    }
                    if result.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        let (bank, stop, reader_report) = (self.clone(), stop.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            let mut connections = Connections::new(&urls);
            let mut turn = 0;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let balances = bank.balances(&mut connections, turn % urls.len()).await;
                if let Some(balances) = balances {
                    let mut report = reader_report.lock().unwrap();
                    report.reads += 1;
                    if let Err(violation) = bank.invariant(&balances) {
                        report.violations.push(violation);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
        for task in tasks {
            task.await.expect("bank client panicked");
        }
        std::mem::take(&mut *report.lock().unwrap())
    }

    /// Reads the balances after the run through any node, retrying for `timeout`.
    pub async fn final_balances(&self, urls: &[String], timeout: Duration) -> Vec<(i64, i64)> {
        let mut connections = Connections::new(urls);
        let deadline = std::time::Instant::now() + timeout;
        for turn in 0.. {
            if let Some(balances) = self.balances(&mut connections, turn % urls.len()).await {
                return balances;
            }
            assert!(std::time::Instant::now() < deadline, "no node answered the final balance read");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!()
    }

    /// Checks the final balances: the invariant, and that they are the initial balances
    /// moved by every acknowledged transfer plus some subset of the unknown ones (searched
    /// exactly when there are at most `MAX_UNKNOWN_SEARCHED`, else bounded per account).
    pub fn check_final(&self, report: &BankReport, balances: &[(i64, i64)]) -> Result<String, String> {
        self.invariant(balances)?;
        let n = self.accounts as usize;
        // What the unknown transfers must account for, per account.
        let mut residual: Vec<i64> = balances.iter().map(|(_, b)| b - self.initial).collect();
        for t in &report.acked {
            residual[t.from as usize] += t.amount;
            residual[t.to as usize] -= t.amount;
        }
        let unknown = &report.unknown;
        if unknown.len() <= MAX_UNKNOWN_SEARCHED {
            return match subset_explaining(&residual, unknown) {
                Some(count) => Ok(format!("{count} of {} unknown transfers took effect", unknown.len())),
                None => Err(format!(
                    "final balances {balances:?} are not the acknowledged transfers plus any subset of the \
                     {} unknown ones (left to explain per account: {residual:?})",
                    unknown.len()
                )),
            };
        }
        let mut reach = vec![0i64; n];
        for t in unknown {
            reach[t.from as usize] += t.amount;
            reach[t.to as usize] += t.amount;
        }
        for account in 0..n {
            if residual[account].abs() > reach[account] {
                return Err(format!(
                    "account {account} is off by {} after the acknowledged transfers, more than the \
                     unknown ones touching it could move ({})",
                    residual[account], reach[account]
                ));
            }
        }
        Ok(format!("{} unknown transfers: bounded per account, not searched", unknown.len()))
    }
}

/// The most unknown transfers whose subsets `check_final` searches exhaustively.
pub const MAX_UNKNOWN_SEARCHED: usize = 32;

/// Per account, what the transfers picked by `mask` (bit `i` = `transfers[i]`) move.
fn moved(transfers: &[Transfer], mask: u32, accounts: usize) -> Vec<i64> {
    let mut moved = vec![0i64; accounts];
    for (bit, t) in transfers.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            moved[t.from as usize] -= t.amount;
            moved[t.to as usize] += t.amount;
        }
    }
    moved
}

/// How many of `transfers` make up a subset that moves exactly `residual` per account, if
/// any does: meet in the middle (each half's subset sums, one half's in a map), so up to
/// `MAX_UNKNOWN_SEARCHED` transfers take two searches of 2^16.
pub fn subset_explaining(residual: &[i64], transfers: &[Transfer]) -> Option<usize> {
    assert!(transfers.len() <= MAX_UNKNOWN_SEARCHED, "too many transfers to search");
    let accounts = residual.len();
    let (left, right) = transfers.split_at(transfers.len() / 2);
    let mut sums: std::collections::HashMap<Vec<i64>, u32> = std::collections::HashMap::new();
    for mask in 0u32..(1 << left.len()) {
        sums.entry(moved(left, mask, accounts)).or_insert(mask);
    }
    for mask in 0u32..(1 << right.len()) {
        let rest: Vec<i64> = residual.iter().zip(moved(right, mask, accounts)).map(|(r, m)| r - m).collect();
        if let Some(left_mask) = sums.get(&rest) {
            return Some((left_mask.count_ones() + mask.count_ones()) as usize);
        }
    }
    None
}
