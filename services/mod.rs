//! Everything a node runs. One line per module:
//! - [`accept`] — the accept loop shared by the SQL, HTTP and gRPC servers: connection limits,
//!   setup deadlines, lingering close.
//! - [`clock`] — wall-clock time as nanoseconds since the epoch.
//! - [`error`] — the one error vocabulary, mapped to gRPC codes in one table.
//! - [`keys`] — the layout of the ordered keyspace (system keys, range boundaries) and key printing.
//! - [`engine`] — the embedded crash-safe storage (redb): Raft log, state machine, store identity.
//! - [`ranges`] — range descriptors, the in-memory range index and split arithmetic.
//! - [`wal`] — the write-ahead log for Raft logs: many groups in one log, group commit,
//!   recovery that cuts a torn tail and refuses damage elsewhere.
//! - [`raft`] — openraft wiring: type config, log storage, state machine, network.
//! - [`load`] — per-replica decayed load rates and top-k ranking.
//! - [`kv`] — KV batches: evaluation at the leaseholder, forwarding, retries.
//! - [`scan`] — paged scans from one snapshot: paging, the cursors a node keeps open.
//! - [`membership`] — gossip (chitchat) membership and liveness classification.
//! - [`allocator`] — where a Raft group's replicas should be: the next membership change.
//! - [`metrics`] — measured node and store metrics, persisted in range 1.
//! - [`tls`] — loading certificates and building rustls/tonic TLS configurations.
//! - [`certs`] — creating CA, node and client certificates (rcgen).
//! - [`dialer`] — pooled gRPC channels to other nodes.
//! - [`grpc`] — tonic service adapters and the pb ⇄ domain conversions.
//! - [`status`] — node and replica status as the StatusService reports them.
//! - [`node`] — a running node: start, init, join, drain.
//! - [`web_sessions`] — the HTTP API's login sessions, stored in range 1.
//! - [`sql`] — SQL over the PostgreSQL wire protocol: catalog, users, sessions, execution.

pub mod accept;
pub mod allocator;
pub mod certs;
pub mod clock;
pub mod dialer;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod keys;
pub mod kv;
pub mod load;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod ranges;
pub mod scan;
pub mod sql;
pub mod status;
pub mod tls;
pub mod wal;
pub mod web_sessions;
