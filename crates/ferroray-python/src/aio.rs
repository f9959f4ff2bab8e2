//! `await ref` and `async for ref in gen` without a thread per wait: the
//! core's own futures (an `ObjectRef`'s, a generator's `next_async`) run on
//! one background thread of this module, and each tells its asyncio loop
//! when it is done through a callback (`ferroray._async`), which hops back
//! onto the loop with `call_soon_threadsafe`.
//!
//! The waits:
//! 1. Python makes a future on its running loop and passes a callback to
//!    `ObjectRef._when_ready` (or `ObjectRefGenerator._when_ready`: the
//!    next item or the end is here).
//! 2. Here the core's future is spawned on the await thread; it holds a
//!    clone of the ref (or generator), so what it waits for stays alive.
//! 3. When it resolves, the callback runs on the await thread with the
//!    GIL; it only schedules the loop's side (settling the future, if its
//!    awaiter has not gone: a cancelled `await` leaves a settled-or-not
//!    future nobody reads).
//! 4. The loop reads the value with an ordinary `get`, which is ready (or
//!    takes the generator's next item without waiting; if another awaiter
//!    of the same generator took it first, it waits again).
//!
//! A lost connection resolves every wait (the core wakes its waiters with
//! the error), so none is left pending when the cluster goes.

use std::sync::OnceLock;
use std::task::Poll;

use pyo3::prelude::*;

use ferroray::{RawValue, WaitKey};

/// The await thread's runtime: a current-thread runtime driven by its own
/// thread for the process's life (the core's futures need no I/O or
/// timers from it; it only polls them when their wakers fire).
fn runtime() -> PyResult<&'static tokio::runtime::Handle> {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the await thread: {e}")))?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("ferroray-await".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the await thread: {e}")))?;
    // Two threads racing here each start one; the loser's thread idles.
    Ok(HANDLE.get_or_init(|| handle))
}

/// Calls `callback()` (on the await thread) once `key` is ready: an
/// object whose value or error is here, or a stream whose next item or end
/// is here; also when the connection is lost (what the loop reads next then
/// says why). `keep` (the ref or generator waited for) stays alive until
/// then; an exception the callback raises is reported as unraisable (there
/// is no caller to raise it to).
fn when_key_ready(key: WaitKey, keep: impl Send + 'static, callback: Py<PyAny>) -> PyResult<()> {
    let core = ferroray_core::global::core().map_err(crate::core_err)?;
    runtime()?.spawn(async move {
        let key = [key];
        std::future::poll_fn(|cx| match core.poll_ready(&key, cx.waker()) {
            Ok(ready) if ready.is_empty() => Poll::Pending,
            _ => Poll::Ready(()),
        })
        .await;
        drop(keep);
        Python::attach(|py| {
            if let Err(e) = callback.call0(py) {
                e.write_unraisable(py, None);
            }
        });
    });
    Ok(())
}

/// Calls `callback()` (on the await thread) once the value of `r` is here
/// or known to have failed (`ObjectRef._when_ready`).
pub(crate) fn when_ready(r: ferroray::ObjectRef<RawValue>, callback: Py<PyAny>) -> PyResult<()> {
    when_key_ready(WaitKey::Object(r.id()), r, callback)
}

/// Calls `callback()` (on the await thread) once `generator` has its next
/// item or its end here (`ObjectRefGenerator._when_ready`). Nothing is
/// taken: the loop takes the item itself, so an awaiter that gives up
/// leaves it for the next one.
pub(crate) fn when_next_ready(generator: ferroray::ObjectRefGenerator<RawValue>, callback: Py<PyAny>) -> PyResult<()> {
    when_key_ready(WaitKey::Stream(generator.task_id()), generator, callback)
}
