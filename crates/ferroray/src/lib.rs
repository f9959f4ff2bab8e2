//! ferroray: Ray Core's tasks and objects, in Rust.
//!
//! ```no_run
//! #[ferroray::remote]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! fn main() -> ferroray::Result<()> {
//!     ferroray::init()?;
//!     let r = add::remote(1, 2);        // returns at once; runs on a worker
//!     let s = add::remote(&r, 10);      // a ref as an argument: its value arrives
//!     assert_eq!(s.get()?, 13);
//!     ferroray::shutdown();
//!     Ok(())
//! }
//! ```
//!
//! Map of this crate:
//! - [`remote`]: the attribute that makes a function remote.
//! - [`init`] / [`init_with`] / [`shutdown`]: start and stop the embedded
//!   cluster (a node daemon in this process, worker processes beside it).
//! - [`get`], [`get_all`], [`put`], [`wait`], [`cancel`], [`tasks`]: the
//!   free functions of Ray's API; [`ObjectRef`] has `get` and `get_timeout`.
//! - [`Config`]: resources, store size, output forwarding.
//! - [`ObjectRefGenerator`]: what a generator function's `remote()` gives:
//!   its items' refs as they are yielded (an `Iterator` and a `Stream`);
//!   [`DynamicObjectRefGenerator`]: the list a dynamic-returns task gives.
//! - [`Buffer`]: bytes that read as a zero-copy view of shared memory.
//!
//! Workers are this same executable started again: a constructor that runs
//! before `main` recognises a worker process and runs the worker loop
//! instead, so binaries, examples and test binaries all work as they are.

pub use ferroray_common::{Error, ObjectId, Result, RetryExceptions, TaskError, TaskId};
pub use ferroray_core::{
    is_cancelled, Arg, Buffer, Cancellable, DynamicObjectRefGenerator, IntoArg, ObjectRef, ObjectRefGenerator,
    TaskOptions, WaitItem, Waitable,
};
pub use ferroray_macros::remote;
pub use ferroray_protocol::{TaskEvent, TaskState};

mod config;
mod runtime;

pub use config::Config;
pub use runtime::{
    cancel, cancel_with, get, get_all, init, init_with, is_initialized, node_address, put, runtime_stats, shutdown,
    tasks, wait, RuntimeStats,
};

/// Used by `#[remote]` expansions; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use ferroray_common::{RetryExceptions, WorkerId};
    pub use ferroray_core::__task_options_methods as task_options_methods;
    pub use ferroray_core::codec::ReturnValue;
    pub use ferroray_core::registry::{Invoke, ItemSink, RemoteFunction, REMOTE_FUNCTIONS};
    pub use ferroray_core::task::{app_error, encode_item, encode_return, typed_ref, ArgReader, TaskCall};
    pub use futures::executor::block_on;
    pub use futures::StreamExt;
    pub use linkme;
}

/// Runs before `main`: a worker process never reaches the user's `main`.
#[ctor::ctor]
fn ferroray_worker_entry() {
    if ferroray_core::worker::is_worker_process() {
        ferroray_core::worker::worker_main();
    }
}

#[doc(hidden)]
pub fn __worker_entry_linked() -> fn() {
    ferroray_worker_entry
}
