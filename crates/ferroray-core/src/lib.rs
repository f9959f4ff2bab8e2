//! The core worker: the library every driver and worker process links.
//!
//! - [`worker`]: [`CoreWorker`], one per process: its connection to the node,
//!   the local object cache and reference counts, `get`/`wait`/`put`, task
//!   submission, and (in a worker process) the loop that runs tasks.
//! - [`object_ref`]: [`ObjectRef<T>`], a counted handle. Creating the first
//!   handle for an object in a process tells the node (`AddRef`), dropping the
//!   last one tells it again (`RemoveRef`); a handle serialized inside a value
//!   travels with the value and is counted where it lands.
//! - [`codec`]: values to bytes and back: inline below the node's threshold,
//!   written straight into shared memory above it; [`Buffer`] reads a large
//!   byte buffer as a zero-copy view of shared memory.
//! - [`actor`]: actor handles ([`ActorHandle`], counted like refs),
//!   creation options, `get_actor`, and what `#[actor]` expands to.
//! - [`actor_state`]: an actor's state as its methods reach it on the serial,
//!   threaded and async executors.
//! - [`generator`]: [`ObjectRefGenerator`] (the caller's end of a streaming
//!   generator), [`DynamicObjectRefGenerator`], and what `wait`/`cancel` take.
//! - [`completion`]: [`AsCompleted`], refs and generators as a stream in
//!   the order they become ready.
//! - [`task`]: [`TaskOptions`], [`IntoArg`] and the submission builder the
//!   `#[remote]` macro expands to.
//! - [`registry`]: the table of remote functions, filled at link time, by
//!   which a worker finds a function from its name.
//! - [`context`]: the task running on this thread (for nested submission,
//!   `is_cancelled` and lending the CPU back while blocked in `get`).
//! - [`global`]: the process's current core worker.
//! - [`async_rt`]: the tokio current-thread runtime `async fn` tasks run on.

pub mod actor;
pub mod actor_state;
pub mod async_rt;
pub mod codec;
pub mod completion;
pub mod context;
pub mod generator;
pub mod global;
pub mod object_ref;
pub mod registry;
pub mod task;
pub mod worker;

pub use actor::{get_actor, get_actor_raw, ActorClass, ActorHandle, ActorKind, ActorOptions, RawActorHandle};
pub use codec::{Buffer, Pod, TypedBuffer};
pub use completion::AsCompleted;
pub use context::is_cancelled;
pub use ferroray_common::{Error, Result, RetryExceptions};
pub use ferroray_protocol::Encoding;
pub use generator::{
    Cancellable, DynamicObjectRefGenerator, NextItem, ObjectRefGenerator, WaitItem, WaitKey, Waitable,
};
pub use object_ref::{ObjectRef, ObjectRefFuture};
pub use task::{Arg, Backpressure, IntoArg, Retries, TaskOptions};
pub use worker::{CoreWorker, RawValue};
