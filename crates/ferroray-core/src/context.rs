//! The task a piece of code runs for.
//!
//! The executor hands each task its [`TaskContext`]. Code that asks
//! (`is_cancelled()`, nested submission, lending the CPU in `get`) finds it
//! through a thread-local, which holds the context of whatever runs on the
//! thread right now: a sync task sets it for its whole run; a task's future
//! carries its own context ([`scope`]) and installs it for each poll only,
//! so futures of several tasks interleaved on one thread (an async actor)
//! each see their own.

use ferroray_common::TaskId;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// One task attempt as the code it runs sees it.
#[derive(Clone)]
pub struct TaskContext {
    pub task_id: TaskId,
    /// The function's short name (logs, error messages).
    pub name: String,
    /// Raised by a cancel: the task should stop.
    pub cancelled: Arc<AtomicBool>,
}

impl TaskContext {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<TaskContext>> = const { RefCell::new(None) };
}

pub fn current() -> Option<TaskContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Whether this thread is running a task (cheaper than `current()`).
pub fn in_task() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

pub(crate) fn set(ctx: Option<TaskContext>) {
    CURRENT.with(|c| *c.borrow_mut() = ctx);
}

/// Whether the task running on this thread was asked to stop. Long loops
/// should check it; outside a task it is always false.
pub fn is_cancelled() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|t| t.cancelled.load(Ordering::Relaxed)))
}

/// The running task's name, or `"driver"`.
pub fn task_name() -> String {
    CURRENT.with(|c| c.borrow().as_ref().map(|t| t.name.clone()).unwrap_or_else(|| "driver".into()))
}

/// `fut`, run with `ctx` as the current task while it is polled (and
/// whatever was current before restored after each poll, also by a panic).
pub fn scope<F: Future>(ctx: TaskContext, fut: F) -> Scoped<F> {
    Scoped { ctx: Some(ctx), fut }
}

/// The future [`scope`] makes.
pub struct Scoped<F> {
    /// The task's context; on the thread-local during a poll, here between.
    ctx: Option<TaskContext>,
    fut: F,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Puts the context back where it came from when the poll ends.
        struct Restore<'a> {
            slot: &'a mut Option<TaskContext>,
            prev: Option<TaskContext>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.slot = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), self.prev.take()));
            }
        }
        // SAFETY: `fut` is pinned structurally: it is never moved out of
        // `Scoped`, which has no `Unpin` impl of its own and no `Drop`.
        let this = unsafe { self.get_unchecked_mut() };
        let prev = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), this.ctx.take()));
        let _restore = Restore { slot: &mut this.ctx, prev };
        // SAFETY: as above.
        unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroray_common::WorkerId;

    fn ctx(seq: u64) -> TaskContext {
        TaskContext {
            task_id: TaskId { submitter: WorkerId(1), seq },
            name: format!("t{seq}"),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Yields once, then reports the task it sees before and after.
    async fn seen() -> (String, bool, String, bool) {
        let before = (task_name(), is_cancelled());
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        (before.0, before.1, task_name(), is_cancelled())
    }

    #[test]
    fn interleaved_futures_each_see_their_own_task() {
        let (a, b) = (ctx(1), ctx(2));
        b.cancelled.store(true, Ordering::Relaxed);
        set(Some(ctx(9)));
        let both = futures::future::join(scope(a, seen()), scope(b, seen()));
        let (ra, rb) = futures::executor::block_on(both);
        assert_eq!(ra, ("t1".to_string(), false, "t1".to_string(), false));
        assert_eq!(rb, ("t2".to_string(), true, "t2".to_string(), true));
        assert_eq!(task_name(), "t9", "the thread's own context is back between polls");
        set(None);
        assert_eq!(task_name(), "driver");
    }
}
