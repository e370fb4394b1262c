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
use ranged::services::ranges::{self, RangeDescriptor};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::open(&dir.path().join("store"), ranged::services::engine::DEFAULT_CACHE_BYTES)
            .expect("opening a fresh store");
        let log = LogStore::new(engine.log.clone(), ranged::services::raft::SYSTEM_GROUP);
        let state = StateStore::open(engine.state.clone())
            .and_then(|store| store.group(1, Some(Span::all()), &ranges::bootstrap_descriptors()))
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

fn split_entry(index: u64, key: &str, right_range_id: u64) -> ranged::services::raft::Entry {
    use openraft::entry::RaftEntry;
    ranged::services::raft::Entry::new_normal(
        openraft::testing::log_id::<TypeConfig>(1, 1, index),
        Command::Split { split_key: key.as_bytes().to_vec(), right_range_id },
    )
}

fn desc(range_id: u64, start: &str, end: &str) -> RangeDescriptor {
    RangeDescriptor { range_id, start_key: start.into(), end_key: end.into(), generation: 0 }
}

/// The store's range index as (id, start, end).
fn index(store: &StateStore) -> Vec<(u64, String, String)> {
    let as_text = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
    store.ranges().iter().map(|d| (d.range_id, as_text(&d.start_key), as_text(&d.end_key))).collect()
}

fn ids(store: &StateStore) -> Vec<u64> {
    index(store).into_iter().map(|(id, ..)| id).collect()
}

async fn value(store: &StateStore, key: &str) -> Option<Vec<u8>> {
    store.read(vec![Op::Get { key: key.as_bytes().to_vec() }]).await.unwrap().0.remove(0).value
}

/// Two groups over one store (as per-range groups will be): each keeps its own applied log
/// id and range descriptors across a reopen, a snapshot carries its own span's rows and
/// descriptors only, and installing one into another store replaces those and leaves the
/// other groups' rows, descriptors and applied state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_over_one_store_keep_their_applied_state_and_snapshots_apart() {
    let (left, right, far) = (
        Span { start: Vec::new(), end: b"m".to_vec() },
        Span { start: b"m".to_vec(), end: b"x".to_vec() },
        Span { start: b"x".to_vec(), end: Vec::new() },
    );
    let (left_desc, right_desc, far_desc) = (desc(1, "", "m"), desc(2, "m", "x"), desc(20, "x", ""));
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("a"), ranged::services::engine::DEFAULT_CACHE_BYTES).unwrap();
    let store = StateStore::open(engine.state.clone()).unwrap();
    let mut one = store.group(1, Some(left.clone()), std::slice::from_ref(&left_desc)).unwrap();
    let mut two = store.group(2, Some(right.clone()), std::slice::from_ref(&right_desc)).unwrap();
    apply(&mut one, vec![put_entry(1, "apple"), put_entry(2, "banana")]).await;
    apply(&mut two, vec![put_entry(1, "melon"), put_entry(2, "pear"), split_entry(3, "p", 3)]).await;
    assert_eq!(one.applied_state().await.unwrap().0.map(|id| id.index), Some(2));
    assert_eq!(two.applied_state().await.unwrap().0.map(|id| id.index), Some(3));
    let split_index = vec![(1, "".into(), "m".into()), (2, "m".into(), "p".into()), (3, "p".into(), "x".into())];
    assert_eq!(index(&store), split_index);
    assert_eq!(
        store.with_shared(|shared| shared.sizes.get(&3).map(|size| size.keys)),
        Some(1),
        "pear moved to range 3"
    );
    // A split outside the group's span, or onto an id in use, changes nothing.
    apply(&mut two, vec![split_entry(4, "c", 9), split_entry(5, "q", 1)]).await;
    assert_eq!(index(&store), split_index);
    // A reopened store finds each group where it was, with the split's descriptors; the
    // initial descriptors of a group it already holds are not applied again.
    let reopened = StateStore::open(engine.state.clone()).unwrap();
    assert_eq!(index(&reopened), split_index);
    let applied = reopened.group(1, Some(left.clone()), &[]).unwrap().applied_state().await.unwrap().0;
    assert_eq!(applied.map(|id| id.index), Some(2));
    let applied =
        reopened.group(2, Some(right.clone()), &[desc(7, "m", "x")]).unwrap().applied_state().await.unwrap().0;
    assert_eq!(applied.map(|id| id.index), Some(5));
    assert_eq!(ids(&reopened), vec![1, 2, 3]);
    let unused = Span { start: b"z".to_vec(), end: Vec::new() };
    assert_eq!(reopened.group(4, Some(unused), &[]).unwrap().applied_state().await.unwrap().0, None);
    // The split made range 3 a group of its own: it owns [p, x), starts at the split's
    // initial log id with group 2's members, and group 2 now owns [m, p).
    assert_eq!(reopened.stored_groups(), vec![1, 2, 3, 4]);
    let three = reopened.group(3, None, &[]).unwrap();
    assert_eq!(three.span(), Some(Span { start: b"p".to_vec(), end: b"x".to_vec() }));
    assert_eq!(two.span(), Some(Span { start: b"m".to_vec(), end: b"p".to_vec() }));
    let (applied, members) = three.clone().applied_state().await.unwrap();
    assert_eq!(applied, Some(ranged::services::raft::state_machine::split_initial_log_id()));
    assert_eq!(members.membership(), two.clone().applied_state().await.unwrap().1.membership());
    // Group 2 no longer takes writes to range 3's keys.
    apply(&mut two, vec![put_entry(6, "plum")]).await;
    assert_eq!(value(&store, "plum").await, None, "a write outside the group's span is refused");

    // Group 2's snapshot holds melon (pear went with range 3), range 2 and its span.
    let snapshot = two.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(6));

    // Another store whose group 1 has applied its own rows, a stray row in group 2's span
    // that the install must replace, and a group 20 whose descriptor sorts right after
    // group 2's (`desc/2…` < `desc/20…`) and must stay.
    let other = Engine::open(&dir.path().join("b"), ranged::services::engine::DEFAULT_CACHE_BYTES).unwrap();
    let other_store = StateStore::open(other.state.clone()).unwrap();
    let mut other_one = other_store.group(1, Some(left.clone()), std::slice::from_ref(&left_desc)).unwrap();
    apply(&mut other_one, vec![put_entry(1, "cherry")]).await;
    let mut other_two = other_store.group(2, Some(right.clone()), std::slice::from_ref(&right_desc)).unwrap();
    apply(&mut other_two, vec![put_entry(1, "nectarine"), put_entry(2, "pear")]).await;
    other_store.group(20, Some(far), std::slice::from_ref(&far_desc)).unwrap();
    assert_eq!(ids(&other_store), vec![1, 2, 20]);
    // The snapshot's span, [m, p), overlaps no other group of that store: it may install.
    assert_eq!(other_store.overlapping_group(2, &two.span().unwrap()), None);
    assert_eq!(other_store.overlapping_group(2, &Span { start: b"m".to_vec(), end: b"y".to_vec() }), Some(20));
    other_two.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(ids(&other_store), vec![1, 2, 20], "the snapshot's descriptors replaced group 2's");
    assert_eq!(ids(&StateStore::open(other.state.clone()).unwrap()), vec![1, 2, 20], "and were stored");
    assert_eq!(other_two.span(), Some(Span { start: b"m".to_vec(), end: b"p".to_vec() }), "and its span");
    assert_eq!(other_store.with_shared(|shared| shared.sizes.get(&2).map(|size| size.keys)), Some(1));
    assert_eq!(value(&other_store, "melon").await.as_deref(), Some(&b"melon"[..]));
    assert_eq!(value(&other_store, "nectarine").await, None, "the span was replaced");
    assert_eq!(value(&other_store, "pear").await.as_deref(), Some(&b"pear"[..]), "keys past the span stay");
    assert_eq!(value(&other_store, "cherry").await.as_deref(), Some(&b"cherry"[..]), "group 1's rows stay");
    assert_eq!(value(&other_store, "apple").await, None, "group 1's span was not in the snapshot");
    assert_eq!(other_one.applied_state().await.unwrap().0.map(|id| id.index), Some(1));
    assert_eq!(other_two.applied_state().await.unwrap().0.map(|id| id.index), Some(6));
    // A snapshot of group 1 sent to group 2 would own group 1's keys: refused.
    let wrong = one.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert!(other_two.install_snapshot(&wrong.meta, wrong.snapshot).await.is_err());
    assert_eq!(value(&other_store, "melon").await.as_deref(), Some(&b"melon"[..]), "a refused install changes nothing");
}

/// The catalog version (what cached table descriptors are keyed on) is range 1's log index of
/// its last catalog write: other writes, and other groups' snapshots and removals, leave it, so
/// a node whose replicas move keeps its cache; range 1's own snapshot and a restart move it to
/// range 1's applied index, and losing range 1 turns the cache off (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_version_moves_only_with_range_1s_catalog_writes() {
    let system = Span { start: Vec::new(), end: b"\x05".to_vec() };
    let user = Span { start: b"\x05".to_vec(), end: Vec::new() };
    let (system_desc, user_desc) = (desc(1, "", "\x05"), desc(2, "\x05", ""));
    let version = |store: &StateStore| store.with_shared(|shared| shared.catalog_version);
    let dir = tempfile::tempdir().unwrap();
    let open =
        |name: &str| Engine::open(&dir.path().join(name), ranged::services::engine::DEFAULT_CACHE_BYTES).unwrap();
    let engine = open("a");
    let store = StateStore::open(engine.state.clone()).unwrap();
    let mut one = store.group(1, Some(system.clone()), std::slice::from_ref(&system_desc)).unwrap();
    let mut two = store.group(2, Some(user.clone()), std::slice::from_ref(&user_desc)).unwrap();
    assert_eq!(version(&store), 0, "no catalog yet");
    apply(&mut one, vec![put_entry(1, "\x04node/1"), put_entry(2, "\x04desc/50"), put_entry(3, "\x04status/1")]).await;
    assert_eq!(version(&store), 2, "the descriptor's write");
    apply(&mut two, vec![put_entry(1, "\x05a"), put_entry(9, "\x05b")]).await;
    assert_eq!(version(&store), 2, "another group's writes");

    // Group 2's snapshot installed over another store's group 2, and group 2 dropped there.
    let snapshot = two.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let other = open("b");
    let other_store = StateStore::open(other.state.clone()).unwrap();
    let mut other_one = other_store.group(1, Some(system.clone()), std::slice::from_ref(&system_desc)).unwrap();
    apply(&mut other_one, vec![put_entry(1, "\x04ns/t"), put_entry(2, "\x04node/2")]).await;
    let mut other_two = other_store.group(2, Some(user.clone()), std::slice::from_ref(&user_desc)).unwrap();
    other_two.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(version(&other_store), 1, "another group's snapshot");
    other_store.drop_group(2).unwrap();
    assert_eq!(version(&other_store), 1, "another group's removal");

    // Range 1's snapshot: its last index; a restart: range 1's applied index.
    let snapshot = one.get_snapshot_builder().await.build_snapshot().await.unwrap();
    other_one.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(version(&other_store), 3, "range 1's snapshot, at index 3");
    apply(&mut one, vec![put_entry(4, "\x04gc/1")]).await;
    drop((one, two, store));
    let reopened = StateStore::open(engine.state.clone()).unwrap();
    assert_eq!(version(&reopened), 4, "a restart: range 1's applied index");
    other_store.drop_group(1).unwrap();
    assert_eq!(version(&other_store), 0, "without range 1, nothing to key the cache on");
}

/// A replica that needs a snapshot is sent one of everything its leader has applied, never
/// an older stored one: replaying the splits since on a node that already holds the groups
/// they created would leave it a span too wide, and the next split there would stop its Raft
/// (load_leases saw this when a lease moved just after a replica was added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sent_to_a_replica_is_of_everything_applied_with_its_span_as_now() {
    let user = Span { start: b"\x05".to_vec(), end: Vec::new() };
    let dir = tempfile::tempdir().unwrap();
    let open =
        |name: &str| Engine::open(&dir.path().join(name), ranged::services::engine::DEFAULT_CACHE_BYTES).unwrap();
    let engine = open("leader");
    let store = StateStore::open(engine.state.clone()).unwrap();
    let mut two = store.group(2, Some(user.clone()), &[desc(2, "\x05", "")]).unwrap();
    apply(&mut two, vec![put_entry(1, "\x05a"), put_entry(2, "\x05x")]).await;
    let old = two.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(old.meta.last_log_id.map(|id| id.index), Some(2));

    // At startup the stored snapshot, older than what was applied since, is not offered.
    apply(&mut two, vec![split_entry(3, "\x05m", 3), put_entry(4, "\x05b")]).await;
    let offered = two.get_current_snapshot().await.unwrap();
    assert!(offered.is_none(), "at startup: {:?}", offered.map(|s| s.meta));

    // Once started, what is sent is a snapshot of index 4, the group's span cut at the split.
    two.started();
    let sent = two.get_current_snapshot().await.unwrap().expect("a snapshot to send");
    assert_eq!(sent.meta.last_log_id.map(|id| id.index), Some(4));
    let receiver = open("new replica");
    let receiver_store = StateStore::open(receiver.state.clone()).unwrap();
    let mut replica = receiver_store.group(2, None, &[]).unwrap();
    replica.install_snapshot(&sent.meta, sent.snapshot).await.unwrap();
    assert_eq!(index(&receiver_store), vec![(2, "\x05".to_string(), "\x05m".to_string())]);
    assert_eq!(replica.span(), Some(Span { start: b"\x05".to_vec(), end: b"\x05m".to_vec() }));
    assert_eq!(value(&receiver_store, "\x05b").await.as_deref(), Some(&b"\x05b"[..]));
    assert_eq!(value(&receiver_store, "\x05x").await, None, "a row of the group split off");

    // Asked again with nothing applied since, the stored snapshot is sent as it is.
    let again = two.get_current_snapshot().await.unwrap().expect("a snapshot to send");
    assert_eq!(again.meta, sent.meta);
}
