//! Vocabulary shared by every ferroray process.
//!
//! - [`id`]: node, worker, task and object ids. Ids are made by the process
//!   that needs them (no round trip): a task id is its submitter's worker id
//!   plus a counter, and an object id is its task id plus a return index.
//! - [`error`]: the one public [`Error`] enum, and [`Error::is_retryable`],
//!   the single place that decides whether a failure is worth another attempt.
//! - [`resources`]: resource sets in fixed point, so that adding and
//!   subtracting fractional CPUs never drifts.
//! - [`auth`]: the cluster token every connection must present.
//! - [`value`]: the format of user values, named in this one place.
//! - [`spin`]: spin, then sleep: how a waiter that expects news soon avoids
//!   the cost of a wake-up.

pub mod auth;
pub mod error;
pub mod id;
pub mod resources;
pub mod spin;
pub mod value;

pub use auth::ClusterToken;
pub use error::{ActorDeathCause, Error, FailureKind, Result, RetryExceptions, TaskError};
pub use id::{ActorId, FunctionId, NodeId, ObjectId, TaskId, WorkerId};
pub use resources::ResourceSet;
