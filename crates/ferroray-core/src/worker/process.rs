//! A worker process's life: recognised before `main`, connected to its
//! node over the Unix-socket link, then serving tasks until the node goes.

use super::*;

/// A worker process's inbox: once the node is gone there is nothing to
/// serve, and the process exits.
struct WorkerInbox(Arc<CoreWorker>);

impl Inbox for WorkerInbox {
    fn deliver(&self, msg: FromNode) {
        self.0.dispatch(msg);
    }

    fn closed(&self, _reason: &str) {
        std::process::exit(0);
    }
}

/// Whether this process was started as a worker.
pub fn is_worker_process() -> bool {
    std::env::var_os(env::WORKER).is_some()
}

/// Whether this process was started as a worker of Rust functions (the
/// node names the kind; a process started before kinds were named is one).
pub fn is_rust_worker_process() -> bool {
    is_worker_process() && std::env::var(env::WORKER_KIND).map_or(true, |k| k == "rust")
}

/// The whole life of a worker process: connect, run tasks until the node
/// closes the connection, exit. Never returns.
pub fn worker_main() -> ! {
    match run_worker() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("ferroray worker: {e}");
            std::process::exit(1)
        }
    }
}

fn env_var<T: std::str::FromStr>(name: &str) -> Result<T> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::InvalidOption(format!("worker environment variable {name} is missing or invalid")))
}

/// The life of a worker process of another language's front: installs its
/// runner of foreign functions, then serves tasks as [`worker_main`] does.
/// Returns only if it cannot start (the process exits when the node goes).
pub fn foreign_worker_main(runner: Box<dyn crate::registry::ForeignFunctions>) -> Result<()> {
    crate::registry::set_foreign(runner)?;
    run_worker()
}

fn run_worker() -> Result<()> {
    let socket: String = env_var(env::WORKER)?;
    if let Some(budget) = ferroray_common::spin::budget_from_env() {
        ferroray_common::spin::set_budget(budget);
    }
    let worker_id = WorkerId(env_var(env::WORKER_ID)?);
    let store_fd: i32 = env_var(env::STORE_FD)?;
    let capacity: u64 = env_var(env::STORE_CAPACITY)?;
    let token = std::env::var(env::TOKEN).ok().and_then(|t| ClusterToken::from_hex(&t)).ok_or_else(|| {
        Error::InvalidOption(format!("worker environment variable {} is missing or invalid", env::TOKEN))
    })?;
    // Nothing the task runs (or the processes it starts) inherits the secret.
    std::env::remove_var(env::TOKEN);
    let hello =
        ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid: std::process::id(), role: Role::Worker, token };
    let ferroray_transport::unix::Connected { link, reader, info, .. } = UnixLink::connect(&socket, hello)?;
    // SAFETY: `store_fd` names the memfd the node left open (not
    // close-on-exec) for this process and nothing else here owns or uses
    // it; the arena takes it over.
    let arena = Arc::new(unsafe { Arena::open(store_fd, capacity) }.map_err(Error::io)?);
    let exec: Box<dyn super::Executor> = Box::<super::executor::QueueExecutor>::default();
    let core = Arc::new(CoreWorker::new(worker_id, info, arena, Some(Box::new(link)), Some(exec)));
    global::set(core.clone())?;
    reader.spawn("ferroray-worker-rx", Arc::new(WorkerInbox(core.clone())))?;
    core.run_queue();
    Ok(())
}
