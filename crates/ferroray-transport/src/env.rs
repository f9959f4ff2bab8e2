//! Environment variables a node starts its worker processes with.

/// Set (to the node's socket name) in every worker process.
pub const WORKER: &str = "FERRORAY_WORKER";
/// The kind of worker the process is to be: `rust` or `python`.
pub const WORKER_KIND: &str = "FERRORAY_WORKER_KIND";
/// The worker id the node gave the process; its hello must claim it.
pub const WORKER_ID: &str = "FERRORAY_WORKER_ID";
/// The inherited file descriptor of the node's shared-memory store.
pub const STORE_FD: &str = "FERRORAY_STORE_FD";
pub const STORE_CAPACITY: &str = "FERRORAY_STORE_CAPACITY";
/// The cluster token, in hex; the worker removes it from its environment
/// at start-up. Only the same user and root can read another process's
/// environment.
pub const TOKEN: &str = "FERRORAY_TOKEN";
