//! `as_completed`: refs and generators in the order they become ready, as
//! a `futures::Stream`.

use crate::generator::{WaitKey, Waitable};
use crate::worker::CoreWorker;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The stream `ferroray::as_completed` returns: each item once, in the order
/// it became ready (a ref: its value or error is here; a generator: its next
/// item, or its end, is here). Wakers are registered where arrivals are
/// dispatched, so it runs on any executor; a task polling it lends its CPU
/// while nothing is ready, as a blocking `wait` does.
///
/// If the connection to the node is lost (or the task polling it is
/// cancelled), the items not yet ready are handed out in the order given:
/// each one then shows the error itself (a ref's `get`/`await` gives it, a
/// generator's next item holds it). The stream never ends early.
pub struct AsCompleted<W> {
    core: Arc<CoreWorker>,
    items: Vec<Option<W>>,
    keys: Vec<WaitKey>,
    /// Positions of the items not handed out yet, in the order given.
    left: Vec<usize>,
    failed: bool,
}

impl<W: Waitable> AsCompleted<W> {
    pub fn new(core: Arc<CoreWorker>, items: impl IntoIterator<Item = W>) -> Self {
        let items: Vec<Option<W>> = items.into_iter().map(Some).collect();
        let keys = items.iter().flatten().map(Waitable::wait_key).collect();
        let left = (0..items.len()).collect();
        AsCompleted { core, items, keys, left, failed: false }
    }

    /// How many items have not been handed out yet.
    pub fn remaining(&self) -> usize {
        self.left.len()
    }

    /// The items not handed out yet, in the order given: with
    /// `by_ref().take(n)`, Ray's `wait` split into (ready, not ready).
    pub fn into_rest(self) -> Vec<W> {
        let AsCompleted { mut items, left, .. } = self;
        left.into_iter().filter_map(|i| items[i].take()).collect()
    }

    fn take(&mut self, at: usize) -> Option<W> {
        let i = self.left.remove(at);
        self.items[i].take()
    }
}

// The items are never pinned: they are moved out as they are handed out.
impl<W> Unpin for AsCompleted<W> {}

impl<W: Waitable> futures::Stream for AsCompleted<W> {
    type Item = W;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<W>> {
        let this = self.get_mut();
        if this.left.is_empty() {
            return Poll::Ready(None);
        }
        if this.failed {
            return Poll::Ready(this.take(0));
        }
        let keys: Vec<WaitKey> = this.left.iter().map(|i| this.keys[*i]).collect();
        match this.core.poll_ready(&keys, cx.waker()) {
            Ok(ready) => match ready.into_iter().min() {
                Some((_, at)) => Poll::Ready(this.take(at)),
                None => Poll::Pending,
            },
            Err(_) => {
                this.failed = true;
                Poll::Ready(this.take(0))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left.len(), Some(self.left.len()))
    }
}

impl<W> std::fmt::Debug for AsCompleted<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsCompleted({} left)", self.left.len())
    }
}
