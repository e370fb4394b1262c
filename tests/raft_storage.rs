//! openraft's own storage conformance suite (`openraft::testing::Suite`) run against the
//! node's Raft log (with its group-commit writer) and state machine, each test on a fresh
//! store directory; and two groups' state machines over one store kept apart.

use openraft::StorageError;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use ranged::services::engine::Engine;
use ranged::services::kv::Op;
use ranged::services::raft::log_store::LogStore;
use ranged::services::raft::state_machine::{Span, StateMachine, StateStore};
use ranged::services::raft::{Command, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::open(&dir.path().join("store"), ranged::services::engine::DEFAULT_CACHE_BYTES)
            .expect("opening a fresh store");
        let log = LogStore::new(engine.log.clone(), ranged::services::raft::GROUP);
        let state = StateStore::open(engine.state.clone())
            .and_then(|store| store.group(1, Span::all()))
            .expect("opening the state machine");
        Ok((dir, log, state))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(Builder).await.unwrap();
}

/// A put of `key` at log index `index` (term 1, node 1).
fn put_entry(index: u64, key: &str) -> ranged::services::raft::Entry {
    use openraft::entry::RaftEntry;
    let op = Op::Put { key: key.as_bytes().to_vec(), value: key.as_bytes().to_vec() };
    ranged::services::raft::Entry::new_normal(
        openraft::testing::log_id::<TypeConfig>(1, 1, index),
        Command::Batch(vec![op]),
    )
}

async fn apply(state: &mut StateMachine, entries: Vec<ranged::services::raft::Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
    state.apply(stream).await.expect("apply");
}

async fn value(store: &StateStore, key: &str) -> Option<Vec<u8>> {
    store.read(vec![Op::Get { key: key.as_bytes().to_vec() }]).await.unwrap().0.remove(0).value
}

/// Two groups over one store (as per-range groups will be): each keeps its own applied log
/// id across a reopen, a snapshot carries its own span's rows only, and installing one into
/// another store replaces that span and leaves the other group's rows and applied state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_over_one_store_keep_their_applied_state_and_snapshots_apart() {
    let (left, right) =
        (Span { start: Vec::new(), end: b"m".to_vec() }, Span { start: b"m".to_vec(), end: Vec::new() });
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("a"), ranged::services::engine::DEFAULT_CACHE_BYTES).unwrap();
    let store = StateStore::open(engine.state.clone()).unwrap();
    let mut one = store.group(1, left.clone()).unwrap();
    let mut two = store.group(2, right.clone()).unwrap();
    apply(&mut one, vec![put_entry(1, "apple"), put_entry(2, "banana")]).await;
    apply(&mut two, vec![put_entry(1, "melon")]).await;
    assert_eq!(one.applied_state().await.unwrap().0.map(|id| id.index), Some(2));
    assert_eq!(two.applied_state().await.unwrap().0.map(|id| id.index), Some(1));
    // A reopened store finds each group where it was.
    let reopened = StateStore::open(engine.state.clone()).unwrap();
    assert_eq!(reopened.group(1, left.clone()).unwrap().applied_state().await.unwrap().0.map(|id| id.index), Some(2));
    assert_eq!(reopened.group(2, right.clone()).unwrap().applied_state().await.unwrap().0.map(|id| id.index), Some(1));
    assert_eq!(reopened.group(3, Span::all()).unwrap().applied_state().await.unwrap().0, None);

    // Group 2's snapshot holds melon only.
    let snapshot = two.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(1));

    // Another store whose group 1 has applied its own rows, and a stray row in group 2's span
    // that the install must replace.
    let other = Engine::open(&dir.path().join("b"), ranged::services::engine::DEFAULT_CACHE_BYTES).unwrap();
    let other_store = StateStore::open(other.state.clone()).unwrap();
    let mut other_one = other_store.group(1, left.clone()).unwrap();
    apply(&mut other_one, vec![put_entry(1, "cherry")]).await;
    let mut other_two = other_store.group(2, right.clone()).unwrap();
    apply(&mut other_two, vec![put_entry(1, "stray")]).await;
    other_two.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(value(&other_store, "melon").await.as_deref(), Some(&b"melon"[..]));
    assert_eq!(value(&other_store, "stray").await, None, "the span was replaced");
    assert_eq!(value(&other_store, "cherry").await.as_deref(), Some(&b"cherry"[..]), "group 1's rows stay");
    assert_eq!(value(&other_store, "apple").await, None, "group 1's span was not in the snapshot");
    assert_eq!(other_one.applied_state().await.unwrap().0.map(|id| id.index), Some(1));
    assert_eq!(other_two.applied_state().await.unwrap().0.map(|id| id.index), Some(1));
    // A snapshot of group 1 sent to group 2 holds rows outside its span: refused.
    let wrong = one.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert!(other_two.install_snapshot(&wrong.meta, wrong.snapshot).await.is_err());
    assert_eq!(value(&other_store, "melon").await.as_deref(), Some(&b"melon"[..]), "a refused install changes nothing");
}
