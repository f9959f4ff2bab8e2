//! The task running on the current thread.

use ferroray_common::TaskId;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct TaskContext {
    pub task_id: TaskId,
    pub name: String,
    pub cancelled: Arc<AtomicBool>,
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
