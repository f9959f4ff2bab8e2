//! Settings of the embedded cluster.

/// What `init_with` starts. Unset fields take the machine's values.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) num_cpus: Option<f64>,
    pub(crate) num_gpus: f64,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) object_store_memory: Option<u64>,
    pub(crate) inline_threshold: Option<u64>,
    pub(crate) log_to_driver: bool,
    pub(crate) max_workers: Option<usize>,
    pub(crate) max_worker_processes: Option<usize>,
    pub(crate) worker_env: Vec<(String, String)>,
    pub(crate) test_kill_delay: Option<std::time::Duration>,
    pub(crate) idle_worker_timeout: Option<std::time::Duration>,
    pub(crate) spin_wait: Option<std::time::Duration>,
    pub(crate) python_workers: Option<(std::path::PathBuf, Vec<String>)>,
    pub(crate) address: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            num_cpus: None,
            num_gpus: 0.0,
            resources: Vec::new(),
            object_store_memory: None,
            inline_threshold: None,
            log_to_driver: true,
            max_workers: None,
            max_worker_processes: None,
            worker_env: Vec::new(),
            test_kill_delay: None,
            idle_worker_timeout: None,
            spin_wait: None,
            python_workers: None,
            address: None,
        }
    }
}

impl Config {
    /// CPUs the node offers (default: the machine's cores).
    pub fn num_cpus(mut self, n: impl Into<f64>) -> Self {
        self.num_cpus = Some(n.into());
        self
    }

    /// GPUs the node offers (a countable resource; default 0).
    pub fn num_gpus(mut self, n: impl Into<f64>) -> Self {
        self.num_gpus = n.into();
        self
    }

    /// A custom resource the node offers (an integer or a float amount).
    pub fn resource(mut self, name: &str, amount: impl Into<f64>) -> Self {
        self.resources.push((name.to_string(), amount.into()));
        self
    }

    /// Size of the shared-memory store; past it, objects spill to disk.
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    /// Values at least this large go to shared memory (default 100 KiB).
    pub fn inline_threshold(mut self, bytes: u64) -> Self {
        self.inline_threshold = Some(bytes);
        self
    }

    /// Print workers' output in the driver, prefixed per line (default true).
    pub fn log_to_driver(mut self, on: bool) -> Self {
        self.log_to_driver = on;
        self
    }

    /// Most worker processes at once, not counting those whose task waits
    /// in `get` (they lend their place, so nested tasks cannot deadlock).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Most worker processes at all, including those whose task waits in
    /// `get` (default 16 per CPU, at least 64). Past it no worker starts:
    /// ready tasks wait until a worker finishes, so a chain of nested
    /// blocking calls deeper than this waits (the node logs it once).
    pub fn max_worker_processes(mut self, n: usize) -> Self {
        self.max_worker_processes = Some(n);
        self
    }

    /// How long a worker beyond the steady pool (one per CPU) may stay idle
    /// before it exits (default 500 ms).
    pub fn idle_worker_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.idle_worker_timeout = Some(timeout);
        self
    }

    /// How long a thread that waits for news expected soon (a `get`, an idle
    /// worker, the node between messages) watches for it before it sleeps,
    /// in this process and its workers (default 100 µs, or
    /// `FERRORAY_SPIN_US` microseconds; at most 10 ms; zero: never watch).
    /// Waking a sleeping thread costs tens of microseconds on a virtual
    /// machine, more than a small call; watching spends CPU time that is
    /// otherwise idle, yielding to any thread that can run.
    pub fn spin_wait(mut self, budget: std::time::Duration) -> Self {
        self.spin_wait = Some(budget);
        self
    }

    /// Connect to a cluster instead of starting one in this process:
    /// `"HOST:PORT"`, the head's address, or `"auto"`, the cluster started on
    /// this machine (`ferroray start`). The program connects to the node
    /// daemon of that cluster on this machine, whose workers then run its
    /// tasks, and whose store holds its objects. The settings of what a node
    /// offers (`num_cpus`, `num_gpus`, `resource`, `object_store_memory`,
    /// `inline_threshold`, `max_workers`, `max_worker_processes`) belong to
    /// the daemon and are refused here.
    pub fn address(mut self, address: &str) -> Self {
        self.address = Some(address.to_string());
        self
    }

    /// The Python front: Python tasks run in processes started as
    /// `program args..`, and there are no Rust workers (the driver's
    /// executable is the Python interpreter).
    #[doc(hidden)]
    pub fn python_workers(mut self, program: std::path::PathBuf, args: Vec<String>) -> Self {
        self.python_workers = Some((program, args));
        self
    }

    /// An environment variable set in every worker process (tests use it
    /// for the hooks that widen race windows).
    #[doc(hidden)]
    pub fn worker_env(mut self, name: &str, value: &str) -> Self {
        self.worker_env.push((name.to_string(), value.to_string()));
        self
    }

    /// Tests only: delays the kill of a force-cancel (see `NodeConfig`).
    #[doc(hidden)]
    pub fn test_kill_delay(mut self, delay: std::time::Duration) -> Self {
        self.test_kill_delay = Some(delay);
        self
    }
}
