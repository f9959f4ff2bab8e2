//! The runtime `async fn` tasks and async generators run on.
//!
//! Each thread that runs tasks (a worker process's task thread) has one
//! tokio current-thread runtime with every driver enabled (timers, I/O),
//! made the first time an async task runs there and kept for the next ones:
//! `tokio::time::sleep`, `tokio::net`, `tokio::spawn` (onto the same thread)
//! work inside a `#[remote] async fn`. Awaiting ferroray's own futures
//! (`ObjectRef`, `ObjectRefGenerator::next_async`) needs no runtime at all.
//!
//! Spawned tokio tasks run only while the task's future is being driven: a
//! task that returns leaves them behind, paused until the next async task on
//! that worker. Starting another runtime inside a task (tokio's
//! `Runtime::block_on`) panics, as it does inside any tokio runtime.

use crate::context::TaskContext;
use std::cell::OnceCell;
use std::future::Future;

thread_local! {
    static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
}

/// Runs a task's future to completion on this thread's runtime, with the
/// task's context installed for each poll (see [`crate::context::scope`]).
pub fn block_on_in<F: Future>(ctx: &TaskContext, f: F) -> F::Output {
    block_on(crate::context::scope(ctx.clone(), f))
}

/// Runs `f` to completion on this thread's runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| {
        let rt = rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("ferroray: cannot start the async runtime of this task thread")
        });
        rt.block_on(f)
    })
}
