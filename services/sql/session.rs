//! The registry of SQL sessions on one node: every client connection is a session from accept
//! to close, with what it is running now. Closed sessions stay in a bounded cache (capacity
//! and time-to-live flags) so that the Cluster API can still show them.
//!
//! Memory held by a session is an estimate: the fixed size of the session record plus the
//! bytes of its strings (SQL texts, names) plus the bytes of the rows its current statement
//! holds in memory. It is recomputed as statements start and finish.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Default number of closed sessions kept.
pub const DEFAULT_CLOSED_CAPACITY: usize = 1000;
/// Default time a closed session is kept.
pub const DEFAULT_CLOSED_TTL: Duration = Duration::from_secs(3600);

/// The most bytes of a statement's text a session keeps for `/sessions/`: up to
/// [`DEFAULT_CLOSED_CAPACITY`] closed sessions each keep their last statement, and a bulk
/// UPSERT or a long IN list is hundreds of kilobytes that nobody reads whole in a session list.
pub const MAX_RECORDED_QUERY_BYTES: usize = 4096;

/// `sql` as a session records it: whole up to [`MAX_RECORDED_QUERY_BYTES`], else cut at a
/// character boundary and marked with `…`.
pub fn recorded_text(sql: &str) -> String {
    if sql.len() <= MAX_RECORDED_QUERY_BYTES {
        return sql.to_string();
    }
    let mut end = MAX_RECORDED_QUERY_BYTES;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &sql[..end])
}

/// Whether a session is running a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Running a statement.
    Active,
    /// Connected, waiting for the client.
    Idle,
    /// Disconnected.
    Closed,
}

/// A statement being executed.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveQuery {
    /// 16-byte query id.
    pub id: [u8; 16],
    /// The SQL text as received.
    pub sql: String,
    /// When it started.
    pub start: SystemTime,
    /// `preparing` while parsed and planned, `executing` afterwards.
    pub phase: QueryPhase,
}

/// The phase of an active query (CockroachDB's `ActiveQuery.Phase`: PREPARING=0, EXECUTING=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryPhase {
    /// Being parsed and planned.
    Preparing = 0,
    /// Running.
    Executing = 1,
}

/// The implicit transaction of a running statement.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnInfo {
    /// 16-byte transaction id.
    pub id: [u8; 16],
    /// When it started.
    pub start: SystemTime,
    /// Statements it has run (always 1: transactions are implicit).
    pub num_statements: u32,
}

/// Everything the registry knows of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// 16-byte session id.
    pub id: [u8; 16],
    /// Node that serves it.
    pub node_id: u64,
    /// Authenticated user.
    pub username: String,
    /// Client address.
    pub client_address: SocketAddr,
    /// `application_name` (startup parameter or SET).
    pub application_name: String,
    /// Current database.
    pub database: String,
    /// When it connected.
    pub start: SystemTime,
    /// When it disconnected.
    pub end: Option<SystemTime>,
    /// ACTIVE, IDLE or CLOSED.
    pub status: SessionStatus,
    /// Statements running now.
    pub active_queries: Vec<ActiveQuery>,
    /// The last statement that ran, if any.
    pub last_active_query: String,
    /// Transactions (implicit, one per statement) completed.
    pub num_txns_executed: u64,
    /// The implicit transaction of the running statement.
    pub active_txn: Option<TxnInfo>,
    /// Estimated memory held, bytes (see the module documentation).
    pub alloc_bytes: u64,
    /// High-water mark of `alloc_bytes`.
    pub max_alloc_bytes: u64,
}

impl SessionInfo {
    fn recompute_memory(&mut self, statement_bytes: u64) {
        let strings = self.username.len()
            + self.application_name.len()
            + self.database.len()
            + self.last_active_query.len()
            + self.active_queries.iter().map(|q| q.sql.len()).sum::<usize>();
        self.alloc_bytes = (std::mem::size_of::<SessionInfo>() + strings) as u64 + statement_bytes;
        self.max_alloc_bytes = self.max_alloc_bytes.max(self.alloc_bytes);
    }
}

/// A handle to one live session, held by its connection.
#[derive(Clone)]
pub struct SessionHandle {
    info: Arc<Mutex<SessionInfo>>,
}

impl SessionHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionInfo> {
        self.info.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the session's state.
    pub fn snapshot(&self) -> SessionInfo {
        self.lock().clone()
    }

    /// Sets the user once authenticated.
    pub fn set_user(&self, username: &str, database: &str, application_name: &str) {
        let mut info = self.lock();
        info.username = username.to_string();
        info.database = database.to_string();
        info.application_name = application_name.to_string();
        info.recompute_memory(0);
    }

    /// Sets `application_name`.
    pub fn set_application_name(&self, name: &str) {
        let mut info = self.lock();
        info.application_name = name.to_string();
        info.recompute_memory(0);
    }

    /// Sets the current database.
    pub fn set_database(&self, name: &str) {
        self.lock().database = name.to_string();
    }

    /// The current database.
    pub fn database(&self) -> String {
        self.lock().database.clone()
    }

    /// The session user.
    pub fn username(&self) -> String {
        self.lock().username.clone()
    }

    /// The application name.
    pub fn application_name(&self) -> String {
        self.lock().application_name.clone()
    }

    /// Marks a statement started; returns its query id.
    pub fn begin_statement(&self, sql: &str) -> [u8; 16] {
        let id: [u8; 16] = rand::random();
        let now = SystemTime::now();
        let mut info = self.lock();
        info.status = SessionStatus::Active;
        info.active_queries.push(ActiveQuery { id, sql: recorded_text(sql), start: now, phase: QueryPhase::Preparing });
        info.active_txn = Some(TxnInfo { id: rand::random(), start: now, num_statements: 1 });
        info.recompute_memory(0);
        id
    }

    /// Marks a statement as executing, holding about `bytes` of rows.
    pub fn executing(&self, query_id: [u8; 16], bytes: u64) {
        let mut info = self.lock();
        if let Some(query) = info.active_queries.iter_mut().find(|q| q.id == query_id) {
            query.phase = QueryPhase::Executing;
        }
        info.recompute_memory(bytes);
    }

    /// Marks a statement finished.
    pub fn end_statement(&self, query_id: [u8; 16]) {
        let mut info = self.lock();
        if let Some(pos) = info.active_queries.iter().position(|q| q.id == query_id) {
            let query = info.active_queries.remove(pos);
            info.last_active_query = query.sql;
        }
        info.num_txns_executed += 1;
        info.active_txn = None;
        if info.active_queries.is_empty() {
            info.status = SessionStatus::Idle;
        }
        info.recompute_memory(0);
    }
}

struct Closed {
    info: SessionInfo,
    closed_at: Instant,
}

/// All sessions of one node.
pub struct SessionRegistry {
    closed_capacity: usize,
    closed_ttl: Duration,
    live: Mutex<HashMap<SocketAddr, SessionHandle>>,
    closed: Mutex<VecDeque<Closed>>,
}

impl SessionRegistry {
    /// A registry keeping at most `closed_capacity` closed sessions for `closed_ttl`.
    pub fn new(closed_capacity: usize, closed_ttl: Duration) -> Self {
        Self { closed_capacity, closed_ttl, live: Mutex::default(), closed: Mutex::default() }
    }

    /// Registers a new connection from `client_address` to node `node_id`.
    pub fn open(&self, node_id: u64, client_address: SocketAddr) -> SessionHandle {
        let mut info = SessionInfo {
            id: rand::random(),
            node_id,
            username: String::new(),
            client_address,
            application_name: String::new(),
            database: String::new(),
            start: SystemTime::now(),
            end: None,
            status: SessionStatus::Idle,
            active_queries: Vec::new(),
            last_active_query: String::new(),
            num_txns_executed: 0,
            active_txn: None,
            alloc_bytes: 0,
            max_alloc_bytes: 0,
        };
        info.recompute_memory(0);
        let handle = SessionHandle { info: Arc::new(Mutex::new(info)) };
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(client_address, handle.clone());
        handle
    }

    /// The live session of the connection from `client_address`.
    pub fn get(&self, client_address: &SocketAddr) -> Option<SessionHandle> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(client_address).cloned()
    }

    /// Marks the connection from `client_address` closed and moves it to the closed cache.
    pub fn close(&self, client_address: &SocketAddr) {
        let Some(handle) = self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(client_address) else {
            return;
        };
        let mut info = handle.snapshot();
        info.status = SessionStatus::Closed;
        info.end = Some(SystemTime::now());
        info.active_queries.clear();
        info.active_txn = None;
        // A connection that never authenticated was not a session a user would recognise.
        if info.username.is_empty() {
            return;
        }
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        closed.push_back(Closed { info, closed_at: Instant::now() });
        self.prune(&mut closed);
    }

    fn prune(&self, closed: &mut VecDeque<Closed>) {
        while closed.len() > self.closed_capacity {
            closed.pop_front();
        }
        while closed.front().is_some_and(|c| c.closed_at.elapsed() > self.closed_ttl) {
            closed.pop_front();
        }
    }

    /// Every session: live ones (authenticated) and, if `include_closed`, cached closed ones,
    /// optionally only those of `username`; ordered by start time.
    pub fn list(&self, username: Option<&str>, include_closed: bool) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(SessionHandle::snapshot)
            .filter(|s| !s.username.is_empty())
            .collect();
        if include_closed {
            let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            self.prune(&mut closed);
            sessions.extend(closed.iter().map(|c| c.info.clone()));
        }
        if let Some(user) = username {
            sessions.retain(|s| s.username == user);
        }
        sessions.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
        sessions
    }

    /// Live sessions (authenticated), for the `sql.conns` metric.
    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|s| !s.username().is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn sessions_track_statements_and_close() {
        let registry = SessionRegistry::new(10, Duration::from_secs(60));
        let session = registry.open(1, addr(5000));
        assert!(registry.list(None, true).is_empty(), "unauthenticated connections are not listed");
        session.set_user("alice", "defaultdb", "app");
        let query = session.begin_statement("SELECT pg_sleep(3)");
        let live = registry.list(None, false);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].status, SessionStatus::Active);
        assert_eq!(live[0].active_queries[0].sql, "SELECT pg_sleep(3)");
        assert!(live[0].active_txn.is_some());
        session.executing(query, 1000);
        assert!(registry.list(None, false)[0].alloc_bytes >= 1000);
        session.end_statement(query);
        let idle = &registry.list(None, false)[0];
        assert_eq!((idle.status, idle.num_txns_executed), (SessionStatus::Idle, 1));
        assert_eq!(idle.last_active_query, "SELECT pg_sleep(3)");
        registry.close(&addr(5000));
        assert!(registry.list(None, false).is_empty());
        let closed = registry.list(Some("alice"), true);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].status, SessionStatus::Closed);
        assert!(closed[0].end.is_some());
        assert!(registry.list(Some("bob"), true).is_empty());
    }

    #[test]
    fn closed_cache_is_bounded() {
        let registry = SessionRegistry::new(2, Duration::from_secs(60));
        for port in 1..=5 {
            registry.open(1, addr(port)).set_user("u", "d", "");
            registry.close(&addr(port));
        }
        let closed = registry.list(None, true);
        assert_eq!(closed.len(), 2);
        assert_eq!(closed[1].client_address.port(), 5);
        let expiring = SessionRegistry::new(10, Duration::ZERO);
        expiring.open(1, addr(9)).set_user("u", "d", "");
        expiring.close(&addr(9));
        std::thread::sleep(Duration::from_millis(2));
        assert!(expiring.list(None, true).is_empty());
    }

    #[test]
    fn long_statements_are_recorded_cut() {
        assert_eq!(recorded_text("SELECT 1"), "SELECT 1");
        let long = format!("SELECT '{}'", "é".repeat(MAX_RECORDED_QUERY_BYTES));
        let recorded = recorded_text(&long);
        assert!(recorded.len() <= MAX_RECORDED_QUERY_BYTES + '…'.len_utf8());
        assert!(recorded.ends_with('…') && long.starts_with(recorded.trim_end_matches('…')));
    }
}
