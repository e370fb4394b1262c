//! Random appends, truncations, purges, metadata and group removals on four groups, with
//! reopenings in between and segments small enough to rotate and be collected every few
//! batches; after every step the log must read exactly like the model.

use proptest::prelude::*;
use ranged::services::wal::{Wal, WalConfig};

use crate::model::{State, Step, apply, concretize, read_state, to_batch};

#[derive(Debug, Clone)]
enum Action {
    /// Write and wait for durability.
    Write(Vec<Step>),
    /// Submit without waiting: reads must see it at once.
    Submit(Vec<Step>),
    /// Close (draining the queue) and open again.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    (0u64..4, 0u8..10, any::<u64>(), any::<u64>()).prop_map(|(group, kind, a, b)| Step { group, kind, a, b })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => proptest::collection::vec(step(), 1..5).prop_map(Action::Write),
        3 => proptest::collection::vec(step(), 1..5).prop_map(Action::Submit),
        1 => Just(Action::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_log_reads_like_the_model(actions in proptest::collection::vec(action(), 1..60), segment_size in 256u64..4096) {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig { segment_size };
        let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
        let mut model = State::new();
        for action in &actions {
            match action {
                Action::Write(steps) | Action::Submit(steps) => {
                    let ops = concretize(&model, steps, 200);
                    let batch = to_batch(&ops);
                    if matches!(action, Action::Write(_)) {
                        wal.write(batch).unwrap();
                    } else {
                        wal.submit(batch, |result| { result.unwrap(); }).unwrap();
                    }
                    for op in &ops {
                        apply(&mut model, op);
                    }
                }
                Action::Reopen => {
                    drop(wal);
                    wal = Wal::open(dir.path(), config.clone()).unwrap();
                }
            }
            prop_assert_eq!(&read_state(&wal), &model);
        }
        drop(wal);
        let wal = Wal::open(dir.path(), config).unwrap();
        prop_assert_eq!(&read_state(&wal), &model);
    }
}
