//! ranged: a small distributed SQL key-value database whose every node serves a
//! CockroachDB-compatible Cluster API.
//!
//! Module map:
//! - [`pb`] — the generated gRPC contracts of `proto/ranged/v1` (included once, here).
//! - [`services`] — everything a node runs: storage engine, Raft, ranges, KV, load statistics,
//!   gossip membership, TLS, the gRPC adapters and the node that ties them together.
//! - [`gateway`] — the REST surface (`/api/v2`) that fans out over the nodes' StatusService.
//! - [`bench`] — `ranged bench`: the load clients both sides of a comparison use, and the
//!   in-process fan-out and hot-range harnesses.
//! - [`server`] — server assembly: wires a node's gRPC, SQL and HTTP listeners together.
//! - [`cli`] — the `ranged` command line (flags and subcommands); `main.rs` only calls it.
//! - [`local_cluster`] — in-process clusters on loopback (demo, benchmarks, tests).
//! - [`demo`] — `ranged demo`: an in-process cluster on loopback, the embedded default.
//! - [`workload`] — `ranged workload run kv`: a PostgreSQL-wire load generator.
//! - [`wal_bench`] — `ranged bench wal`: appends per second of the write-ahead log, fsync on.
//! - [`raft_groups_bench`] — `ranged bench raft-groups`: memory, tasks, CPU and RPCs of idle
//!   openraft groups, heartbeats on and off, and re-election after a node stops.
#![forbid(unsafe_code)]

/// Generated protobuf and gRPC code for package `ranged.v1`. Never edited by hand.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ranged.v1");
}

/// The client half of etcd's `KV.Put` (`proto/etcd/kv.proto`), for `ranged bench` only.
pub mod etcdpb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

#[path = "../services/mod.rs"]
pub mod services;

#[path = "../gateway/mod.rs"]
pub mod gateway;

pub mod bench;
pub mod cli;
pub mod demo;
pub mod local_cluster;
pub mod raft_groups_bench;
pub mod server;
pub mod wal_bench;
pub mod workload;

/// The version string every node reports in its descriptor.
pub const BUILD_TAG: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Installs ring as the process-wide rustls crypto provider. Idempotent: a second call is a
/// no-op, so tests and the binary may both call it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
