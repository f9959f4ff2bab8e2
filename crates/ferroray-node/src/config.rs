//! Node configuration.

use ferroray_common::{resources, ClusterToken, Error, NodeId, ResourceSet, Result};
use ferroray_protocol::WorkerKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    /// The running executable, started again (the only way a Rust program's
    /// functions can be run by name in another process).
    pub fn current_exe() -> Result<Self> {
        Ok(WorkerCommand { program: std::env::current_exe().map_err(Error::io)?, args: vec![], env: vec![] })
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Total resources, including `CPU` and `GPU`.
    pub resources: ResourceSet,
    pub store_capacity: u64,
    pub inline_threshold: u64,
    /// Parent of the spill directory: the store makes a fresh, private
    /// `ferroray-spill-<pid>-<random>` in it at the first spill, and removes
    /// the ones dead processes left there when it starts.
    pub spill_parent: PathBuf,
    pub socket_name: String,
    /// How to start a worker of each kind this node runs; a task whose
    /// function needs a kind not listed fails as infeasible. `new` lists the
    /// Rust kind.
    pub worker_commands: BTreeMap<WorkerKind, WorkerCommand>,
    /// Forward worker stdout/stderr to this process's, prefixed per line.
    pub log_to_driver: bool,
    /// Most worker processes not blocked in `get` (a worker whose task
    /// waits lends its place, so the process count can go above this).
    pub max_workers: usize,
    /// Most worker processes at all, blocked ones included. Past it no
    /// worker starts: ready tasks wait for a worker to finish, so a chain of
    /// nested blocking calls deeper than this waits (the node logs it once).
    pub max_worker_processes: usize,
    /// How long a worker beyond the pool's steady size (the node's CPU
    /// count, at least 1) may stay idle before it is told to exit. Half a
    /// second by default: about ten of a Python worker's start-ups here
    /// (Ray keeps such a worker 1 s, about one start-up of its own), so a
    /// burst's extra processes (20 to 30 MB each) are gone soon after it.
    /// A worker that has run nothing yet (a spare kept for the next actor)
    /// waits [`NodeConfig::unused_worker_timeout`] instead.
    pub idle_worker_timeout: std::time::Duration,
    /// How long a worker beyond the steady size that has run no task yet
    /// may stay idle: a spare started for the next actor (a bare
    /// interpreter, holding nothing a task imported) waits for it this long,
    /// 10 s by default, so actors made a few seconds apart still skip a
    /// process start.
    pub unused_worker_timeout: std::time::Duration,
    /// Freed store pages stay resident for the next objects, and go back
    /// to the system once nothing was allocated for this long, or at once
    /// past [`NodeConfig::store_keep_free`] bytes of them. A quarter second
    /// by default: a process that embeds the node gives dead objects'
    /// memory back soon. A daemon keeps it longer (its store's memory is
    /// what it was given for objects): a large object then lands in pages
    /// already there instead of pages the kernel must zero.
    pub store_trim_after: Duration,
    /// See [`NodeConfig::store_trim_after`]; `None`: a quarter of the store.
    pub store_keep_free: Option<u64>,
    /// Task events kept for `tasks()`; the oldest are dropped past this.
    pub max_task_events: usize,
    /// The secret every connection's hello must carry; handed to the
    /// workers the node starts. `None`: [`crate::Node::start`] makes a fresh
    /// one (see [`crate::Node::token`]).
    pub token: Option<ClusterToken>,
    /// Most socket connections at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A connection that has not sent its hello by then is closed.
    pub handshake_timeout: Duration,
    /// How long the workers this node starts watch for news before they
    /// sleep (`ferroray_common::spin`), passed as `FERRORAY_SPIN_US`. The
    /// embedding process sets its own with `spin::set_budget` (the facade's
    /// `init` sets both from one setting).
    pub spin_budget: Duration,
    /// Tests only: how long a force-cancel's kill waits before it goes to
    /// the spawner (to widen the race between the kill and the task's end).
    #[doc(hidden)]
    pub test_kill_delay: Option<std::time::Duration>,
}

/// Default for [`NodeConfig::max_connections`]: far above the workers a node
/// runs, far below the file descriptors a process may open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Default for [`NodeConfig::max_worker_processes`]: 16 per CPU, at least
/// 64 (a nested call blocked in `get` holds a process each).
pub fn default_max_worker_processes(cpus: usize) -> usize {
    (cpus * 16).max(64)
}

/// Default for [`NodeConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl NodeConfig {
    /// A node on this machine's CPUs that starts Rust workers with
    /// `worker_command`.
    pub fn new(worker_command: WorkerCommand) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let node_id = NodeId::random();
        NodeConfig {
            node_id,
            resources: ResourceSet::new().with(resources::CPU, cpus as f64),
            store_capacity: 2 << 30,
            inline_threshold: 100 * 1024,
            spill_parent: std::env::temp_dir(),
            socket_name: format!("ferroray-node-{}-{node_id}", std::process::id()),
            worker_commands: BTreeMap::from([(WorkerKind::Rust, worker_command)]),
            log_to_driver: true,
            max_workers: (cpus * 4).max(8),
            max_worker_processes: default_max_worker_processes(cpus),
            max_task_events: 100_000,
            store_trim_after: Duration::from_millis(250),
            store_keep_free: None,
            token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_worker_timeout: std::time::Duration::from_millis(500),
            unused_worker_timeout: std::time::Duration::from_secs(10),
            spin_budget: ferroray_common::spin::DEFAULT_BUDGET,
            test_kill_delay: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (name, amount) in self.resources.iter() {
            resources::check_amount(&format!("resource {name}"), amount)?;
        }
        if self.store_capacity < 4096 {
            return Err(Error::InvalidOption(format!("store capacity {} is below 4096 bytes", self.store_capacity)));
        }
        if self.inline_threshold > 16 << 20 {
            return Err(Error::InvalidOption(format!(
                "inline threshold {} is above 16 MiB: values that large belong in shared memory",
                self.inline_threshold
            )));
        }
        if self.max_connections == 0 {
            return Err(Error::InvalidOption("max_connections must be at least 1".into()));
        }
        if self.max_worker_processes < self.max_workers {
            return Err(Error::InvalidOption(format!(
                "max_worker_processes ({}) must be at least max_workers ({})",
                self.max_worker_processes, self.max_workers
            )));
        }
        if self.max_workers == 0 {
            return Err(Error::InvalidOption("max_workers must be at least 1".into()));
        }
        Ok(())
    }
}
