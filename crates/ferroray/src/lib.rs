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
//!   As in Ray, `init` is optional: the first `remote()`, `put`, `wait`,
//!   ... without it starts the cluster with `Config::default()` (an `init`
//!   after that fails with `AlreadyInitialized`).
//! - [`get`], [`get_all`], [`get_all_timeout`], [`put`], [`wait`] (and
//!   [`wait_indices`]; [`wait_made`] for Ray's `fetch_local=False`),
//!   [`cancel`], [`tasks`]: the free functions of Ray's
//!   API; [`ObjectRef`] has `get` and `get_timeout`, and can be awaited
//!   (`r.await`, on any executor); [`as_completed`] is the async `wait`.
//! - [`Config`]: resources, store size, output forwarding.
//! - [`ObjectRefGenerator`]: what a generator function's `remote()` gives:
//!   its items' refs as they are yielded: `gen.next()` (or `for r in gen`)
//!   blocks, `gen.next_async().await` does not; a failure comes as an error
//!   ref, never as a silent end;
//!   [`DynamicObjectRefGenerator`]: the list a dynamic-returns task gives.
//! - [`Buffer`]: bytes that read as a zero-copy view of shared memory;
//!   [`TypedBuffer<T>`](TypedBuffer): the same for an array of numbers
//!   (`f32`, `u64`, ...), built from a `Vec<T>` and read as `&[T]`.
//! - [`Error`]: every failure; a task's own `Err(e)` is [`Error::Task`], and
//!   [`Error::downcast_task_error`] gives `e` back as itself when its type
//!   is serializable. [`TaskEvent`] / [`TaskState`]: what [`tasks`] records.
//!
//! `async fn` tasks and async generators run on a tokio current-thread
//! runtime of the worker's task thread: tokio's timers and I/O work in them.
//!
//! Workers are this same executable started again: a constructor that runs
//! before `main` recognises a worker process and runs the worker loop
//! instead, so binaries, examples and test binaries all work as they are.

pub use ferroray_common::{ActorDeathCause, ActorId, Error, ObjectId, Result, RetryExceptions, TaskError, TaskId};
pub use ferroray_core::worker::exit_actor;
pub use ferroray_core::{
    get_actor, is_cancelled, ActorClass, ActorHandle, ActorOptions, Arg, AsCompleted, Backpressure, Buffer,
    Cancellable, DynamicObjectRefGenerator, Encoding, IntoArg, NextItem, ObjectRef, ObjectRefFuture,
    ObjectRefGenerator, Pod, RawValue, Retries, TaskOptions, TypedBuffer, WaitItem, WaitKey, Waitable,
};
/// Makes a function remote; see below for everything it generates and every
/// key it accepts.
///
/// Declaring remote functions, with keys, and what is generated beside them
/// (this example runs nothing remotely, so it needs no cluster; a doc test
/// with a remote function must write its own `fn main`, as remote functions
/// cannot be declared inside a function body):
///
/// ```
/// #[ferroray::remote]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// // Integers and floats both work for amounts.
/// #[ferroray::remote(num_cpus = 2, num_gpus = 0.5, resources = [("disk", 1)], max_retries = 0)]
/// fn heavy(x: u64) -> Result<u64, std::num::TryFromIntError> {
///     u32::try_from(x).map(u64::from)
/// }
///
/// #[ferroray::remote(num_returns = 2)]
/// fn split(s: String) -> (String, usize) {
///     let n = s.len();
///     (s, n)
/// }
///
/// #[ferroray::remote(generator_backpressure = 4)]
/// fn count(n: u64) -> impl Iterator<Item = u64> {
///     0..n
/// }
///
/// fn main() {
///     assert_eq!(add(1, 2), 3); // still an ordinary function
///     assert!(add::NAME.ends_with("::add"));
///     // A builder starting from the attribute's options (submitting is `.remote(..)`).
///     let _options: heavy::Options = heavy::options().num_cpus(1).max_retries(2);
///     let _dynamic: count::DynamicOptions = count::options().num_returns_dynamic();
/// }
/// ```
///
/// Submitting tasks, with per-call options (`no_run`: it starts a cluster):
///
/// ```no_run
/// #[ferroray::remote]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[ferroray::remote(num_returns = 2)]
/// fn split(s: String) -> (String, usize) {
///     let n = s.len();
///     (s, n)
/// }
///
/// #[ferroray::remote]
/// fn count(n: u64) -> impl Iterator<Item = u64> {
///     0..n
/// }
///
/// fn main() -> ferroray::Result<()> {
///     ferroray::init_with(ferroray::Config::default().num_cpus(4).resource("disk", 2))?;
///     let r = add::remote(1, 2); // an ObjectRef<i64>, at once
///     let s = add::options().num_cpus(0.5).resource("disk", 1).max_retries(0).remote(&r, 10);
///     assert_eq!(s.get()?, 13);
///     let (text, len) = split::remote("abc".to_string());
///     assert_eq!((text.get()?, len.get()?), ("abc".to_string(), 3));
///     for item in count::options().generator_backpressure(ferroray::Backpressure::items::<2>()).remote(3) {
///         println!("{}", item.get()?);
///     }
///     let all = count::options().num_returns_dynamic().remote(3).get()?;
///     assert_eq!(ferroray::get_all(&all.into_iter().collect::<Vec<_>>())?, [0, 1, 2]);
///     ferroray::shutdown();
///     Ok(())
/// }
/// ```
pub use ferroray_macros::{actor, remote};

mod cancel;
mod config;
mod events;
pub mod logging;
mod runtime;

pub use cancel::CancelOptions;
pub use config::Config;
pub use events::{TaskEvent, TaskState};
pub use runtime::{
    as_completed, available_resources, cancel, cancel_with, cluster_resources, get, get_all, get_all_timeout, init,
    init_with, is_initialized, kill, node_address, node_id, nodes, put, put_raw, runtime_stats, shutdown, tasks, wait,
    wait_indices, wait_made, wait_made_indices, ClusterNode, RuntimeStats, OBJECT_STORE_MEMORY,
};

/// Used by `#[remote]` expansions; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use ferroray_common::{RetryExceptions, WorkerId};
    pub use ferroray_core::__actor_options_methods as actor_options_methods;
    pub use ferroray_core::__task_options_methods as task_options_methods;
    pub use ferroray_core::actor::{failed_handle, ActorKind, RawActorHandle};
    pub use ferroray_core::actor_state::{ActorState, StateGuard, StateProbe, StateRef, ViaLocal, ViaShared};
    pub use ferroray_core::async_rt::block_on_in;
    pub use ferroray_core::codec::ReturnValue;
    pub use ferroray_core::registry::{
        local_items, local_values, Invoke, ItemSink, LocalFuture, MethodRun, RemoteFunction, REMOTE_FUNCTIONS,
    };
    pub use ferroray_core::task::{
        app_error, encode_item, encode_return, typed_ref, ArgReader, ErrorProbe, TaskCall, ViaDisplay,
        ViaFerrorayError, ViaSerialize,
    };
    pub use ferroray_core::worker::AsyncItemSink;
    pub use futures::StreamExt;
    pub use linkme;

    /// What `#[remote]`'s position check finds for a function declared at
    /// module level.
    pub struct AtModuleLevel;
    /// What it finds for one declared inside a function body (whose
    /// generated module cannot reach it by `super::`, and whose name would
    /// not be unique among the remote functions).
    pub struct InsideFunctionBody;

    #[diagnostic::on_unimplemented(
        message = "a `#[remote]` function must be declared at module level, not inside a function body",
        label = "this remote function is declared inside a function body",
        note = "workers find a remote function by its module path and name, which a function body does not have: \
                move it out of the enclosing function (to the module, or to a `mod` of its own)"
    )]
    pub trait RemoteAtModuleLevel {}
    impl RemoteAtModuleLevel for AtModuleLevel {}

    /// Compiles only for [`AtModuleLevel`].
    pub fn check_at_module_level<T: RemoteAtModuleLevel>(_: T) {}
}

/// Runs before `main`: a worker process never reaches the user's `main`.
#[ctor::ctor]
fn ferroray_worker_entry() {
    if ferroray_core::worker::is_worker_process() {
        if !ferroray_core::worker::is_rust_worker_process() {
            // A worker of another front (a Python interpreter that loaded
            // ferroray): that front runs its worker loop itself.
            return;
        }
        logging::install_default();
        ferroray_core::worker::worker_main();
    }
    // A driver: its first use of the API without `init` starts the
    // embedded cluster with default settings.
    ferroray_core::global::set_auto_init(runtime::auto_init);
}

#[doc(hidden)]
pub fn __worker_entry_linked() -> fn() {
    ferroray_worker_entry
}
