//! Stack for deep expressions: a large stack for the whole life of a statement whose
//! expressions may nest deeply, and a guard for our own recursive walks over expressions.
//!
//! Why both, and the numbers, are in [`crate::services::sql::limits`]. The stacks are
//! `mmap`ed by `stacker` (the crate sqlparser's own stack protection uses): reserved address
//! space, of which only the pages a statement touches become memory, unmapped when it ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Below this much stack left, a guarded step continues on a new segment ...
const RED_ZONE: usize = 128 * 1024;

/// ... of this size (sqlparser's protection of its parser and `Display` uses the same two).
const SEGMENT: usize = 2 * 1024 * 1024;

/// Runs `step` of a recursive walk over an expression with at least [`RED_ZONE`] bytes of
/// stack, growing it onto the heap when less is left: checking costs a thread-local read and
/// a comparison, growing one `mmap` per [`SEGMENT`].
pub(super) fn guarded<R>(step: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, step)
}

/// A future whose every poll, and whose drop, run with at least `size` bytes of stack: on a
/// stack of that size when the polling thread has less left (a tokio worker has 2 MiB).
/// Dropping it while pending (a client that went away) drops what it holds there too.
pub(super) struct OnLargeStack<F> {
    future: Option<Pin<Box<F>>>,
    size: usize,
}

impl<F: Future> OnLargeStack<F> {
    /// `future`, to be polled and dropped with `size` bytes of stack.
    pub(super) fn new(future: F, size: usize) -> Self {
        Self { future: Some(Box::pin(future)), size }
    }
}

impl<F: Future> Future for OnLargeStack<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let size = this.size;
        let future = this.future.as_mut().expect("OnLargeStack polled after it completed");
        let poll = stacker::maybe_grow(size, size, || future.as_mut().poll(cx));
        if poll.is_ready() {
            let done = this.future.take();
            stacker::maybe_grow(size, size, move || drop(done));
        }
        poll
    }
}

impl<F> Drop for OnLargeStack<F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            stacker::maybe_grow(self.size, self.size, move || drop(future));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recurses `levels` times with a 1 KiB frame each, kept alive across the call.
    fn recurse(levels: usize) -> usize {
        let frame = [1u8; 1024];
        if levels == 0 {
            return 0;
        }
        let below = recurse(levels - 1);
        usize::from(std::hint::black_box(&frame)[levels % 1024]) + below
    }

    #[test]
    fn a_future_on_a_large_stack_recurses_past_its_threads_stack() {
        // 8 MiB of frames from a thread of 256 KiB: only the large stack makes it fit.
        let thread = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(OnLargeStack::new(
                    async {
                        tokio::task::yield_now().await;
                        recurse(8 * 1024)
                    },
                    32 << 20,
                ))
            })
            .unwrap();
        assert_eq!(thread.join().unwrap(), 8 * 1024);
    }

    #[test]
    fn a_guarded_walk_grows_its_stack() {
        fn walk(levels: usize) -> usize {
            guarded(|| if levels == 0 { 0 } else { walk(levels - 1) + std::hint::black_box(1) })
        }
        let thread = std::thread::Builder::new().stack_size(256 * 1024).spawn(|| walk(100_000)).unwrap();
        assert_eq!(thread.join().unwrap(), 100_000);
    }
}
