//! A writer that puts `<prefix>NNNNNN` keys through one node until stopped, recording each
//! write the node acknowledged: what fault tests check is never lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Cluster, put};

/// One writer task and what it has had acknowledged.
pub struct Writer {
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts writing `prefix` keys through node `node`.
    pub async fn start(cluster: &Cluster, node: usize, prefix: &'static str) -> Writer {
        let mut kv = cluster.kv(node).await;
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0..200_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("{prefix}{i:06}");
                    if put(&mut kv, &key, &key).await.is_ok() {
                        acked.lock().unwrap().push(key);
                    }
                }
            })
        };
        Writer { acked, stop, task }
    }

    /// The keys acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.acked.lock().unwrap().clone()
    }

    /// Waits (30 s at most) for `more` acknowledged writes; `what` names them in the failure.
    pub async fn wait_more(&self, cluster: &Cluster, more: usize, what: &str) {
        let from = self.acked.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.lock().unwrap().len() < from + more {
            assert!(Instant::now() < deadline, "no {what} within 30 s\n{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the writer and returns every acknowledged key.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.acked.lock().unwrap().clone()
    }
}
