//! openraft's own storage conformance suite (`openraft::testing::Suite`) run against the
//! node's Raft log (with its group-commit writer) and state machine, each test on a fresh
//! store directory.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use ranged::services::engine::Engine;
use ranged::services::raft::TypeConfig;
use ranged::services::raft::log_store::LogStore;
use ranged::services::raft::state_machine::StateMachine;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::open(&dir.path().join("store"), ranged::services::engine::DEFAULT_CACHE_BYTES)
            .expect("opening a fresh store");
        let log = LogStore::new(engine.log.clone(), ranged::services::raft::GROUP);
        let state = StateMachine::open(engine.state.clone()).expect("opening the state machine");
        Ok((dir, log, state))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(Builder).await.unwrap();
}
