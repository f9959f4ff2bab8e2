//! `ferroray._ferroray`: the Python front's extension module, a thin layer
//! over the Rust core. All PyO3 code of the project is here; the Python
//! package (`python/ferroray`) builds Ray's API on these functions.
//!
//! - [`objects`]: the `ObjectRef` class, `put`, `get`, `wait`, refs nested
//!   inside values.
//! - [`tasks`]: `submit` of a Python function's call, the
//!   `ObjectRefGenerator` class, `cancel`.
//! - [`actors`]: `create_actor`, the `ActorHandle` class, `get_actor`.
//! - [`aio`]: `await ref` and `async for` on one background thread, which
//!   tells each asyncio loop when its wait is over.
//! - [`worker`]: `worker_main`, the core's runner of Python tasks and actors
//!   in a worker process.
//! - Here: `init`/`shutdown`/`is_initialized` of the embedded cluster (whose
//!   workers for Python tasks are this interpreter running
//!   `ferroray._worker`), and errors: every core error is raised as Ray's
//!   exception class for it (`ferroray.exceptions._from_core`, given a
//!   [`CoreError`] with the variant's name, its text, and for a task's error
//!   the exception's class name and pickled exception).
//!
//! Values cross as bytes the Python side pickled (`Encoding::Raw`); this
//! module never looks inside them. Every call that waits releases the GIL.

mod actors;
mod aio;
mod objects;
mod tasks;
mod worker;

pub(crate) use objects::ObjectRef;

use ferroray::{Config, Error};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use std::time::Duration;

/// The Rust side's allocator (the embedded node's tables, task specs, the
/// core's messages): a small-object allocator with per-thread caches, in
/// place of glibc's, whose arenas the interpreter's own allocations
/// fragment. Python objects keep the interpreter's allocators. The package
/// sets `MIMALLOC_ARENA_EAGER_COMMIT=0` before loading this module, so a
/// process holds the memory it uses rather than whole arenas. (Purging freed
/// pages at once, `MIMALLOC_PURGE_DELAY=0`, saved 3 to 5 MB over a driver
/// and its workers at rest but slowed batches of actor calls by a quarter.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A `get` of at least this many refs ends a burst (a batch of calls just
/// submitted from this thread): [`collect_heap`] after it.
pub(crate) const COLLECT_AFTER: usize = 1024;

/// Gives back the pages of this thread's allocator heap that a burst left
/// free. The node's threads free what a submitting thread allocated (task
/// specs, messages); mimalloc returns such pages only when their owning
/// thread allocates again, which a driver that goes quiet after a batch
/// does not: a batch of 5,000 calls left 13-18 MB resident in the driver.
/// Called by an embedded node's server thread after a burst
/// (`ferroray_node::set_heap_trim`), and through
/// [`collect_heap_now_and_then`] by a `get` of many refs.
pub(crate) fn collect_heap() {
    // SAFETY: takes no pointer; collects the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// [`collect_heap`], at most once a second per process: a loop of batch
/// `get`s would otherwise give pages back and fault them in again each time
/// (what purging at once cost, `MIMALLOC_PURGE_DELAY=0`, above).
pub(crate) fn collect_heap_now_and_then() {
    static LAST: parking_lot::Mutex<Option<std::time::Instant>> = parking_lot::Mutex::new(None);
    let mut last = LAST.lock();
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last = Some(std::time::Instant::now());
        drop(last);
        collect_heap();
    }
}

create_exception!(
    _ferroray,
    CoreError,
    PyException,
    "an error of the ferroray core: (kind, message, exception class name or None, pickled exception or None)"
);

/// The name of an error's variant (`GetTimeout`, `Task`, ...): what the
/// Python side dispatches on.
fn kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("Other").to_string()
}

/// The Python exception for a core error: Ray's class for it, made by
/// `ferroray.exceptions._from_core` (a plain [`CoreError`] if that module
/// cannot be imported).
fn core_err(e: Error) -> PyErr {
    let (type_name, value) = match &e {
        Error::Task(t) => (Some(t.type_name.clone()), t.value.clone()),
        _ => (None, None),
    };
    let raw = CoreError::new_err((kind(&e), e.to_string(), type_name, value));
    Python::attach(|py| {
        let converted = py
            .import("ferroray.exceptions")
            .and_then(|m| m.getattr("_from_core"))
            .and_then(|f| f.call1((raw.value(py),)));
        match converted {
            Ok(exc) => PyErr::from_value(exc),
            Err(_) => raw,
        }
    })
}

/// Starts the embedded cluster, or connects to a daemon's node (`address`);
/// Python tasks run in `python worker_args..`.
#[pyfunction]
#[pyo3(signature = (python, worker_args, worker_env=Vec::new(), num_cpus=None, num_gpus=None, resources=Vec::new(), object_store_memory=None, address=None))]
#[allow(clippy::too_many_arguments)]
fn init(
    py: Python<'_>,
    python: std::path::PathBuf,
    worker_args: Vec<String>,
    worker_env: Vec<(String, String)>,
    num_cpus: Option<f64>,
    num_gpus: Option<f64>,
    resources: Vec<(String, f64)>,
    object_store_memory: Option<u64>,
    address: Option<String>,
) -> PyResult<()> {
    let mut config = Config::default().python_workers(python, worker_args);
    if let Some(a) = &address {
        config = config.address(a);
    }
    for (name, value) in &worker_env {
        config = config.worker_env(name, value);
    }
    if let Some(n) = num_cpus {
        config = config.num_cpus(n);
    }
    if let Some(n) = num_gpus {
        config = config.num_gpus(n);
    }
    for (name, amount) in &resources {
        config = config.resource(name, *amount);
    }
    if let Some(b) = object_store_memory {
        config = config.object_store_memory(b);
    }
    py.detach(|| ferroray::init_with(config)).map_err(core_err)
}

#[pyfunction]
fn shutdown(py: Python<'_>) {
    py.detach(ferroray::shutdown);
}

/// True in a driver after `init`, and always in a worker process (its core
/// is connected before any task runs), so a task never starts a cluster.
#[pyfunction]
fn is_initialized() -> bool {
    ferroray::is_initialized() || ferroray_core::global::core().is_ok()
}

/// Counts of what the runtime keeps (for leak checks in tests): objects
/// and streams of the node, refs of this process.
#[pyfunction]
fn _runtime_stats() -> PyResult<std::collections::HashMap<&'static str, u64>> {
    let s = ferroray::runtime_stats().map_err(core_err)?;
    Ok(std::collections::HashMap::from([
        ("node_objects", s.node_objects as u64),
        ("node_tasks", s.node_tasks as u64),
        ("node_streams", s.node_streams as u64),
        ("store_objects", s.store_objects),
        ("local_refs", s.local_refs as u64),
        ("workers", s.workers as u64),
        ("node_functions", s.node_functions as u64),
    ]))
}

fn seconds(t: f64) -> PyResult<Duration> {
    if t >= 0.0 && t.is_finite() {
        Ok(Duration::from_secs_f64(t))
    } else {
        Err(PyValueError::new_err(format!("timeout must be a non-negative number of seconds, not {t}")))
    }
}

/// Ray's runtime context, as a dict: the running task's id (`None` in a
/// driver), the actor this process runs (if any), the node's id, and the
/// job's, which is the node's too (one driver per embedded node).
#[pyfunction]
fn _runtime_context() -> PyResult<std::collections::HashMap<&'static str, Option<String>>> {
    let core = ferroray_core::global::core().map_err(core_err)?;
    let node = core.info().node_id.to_string();
    Ok(std::collections::HashMap::from([
        ("task_id", ferroray_core::context::current().map(|c| c.task_id.to_string())),
        ("actor_id", ferroray_core::worker::current_actor().map(|a| a.to_string())),
        ("node_id", Some(node.clone())),
        ("job_id", Some(node)),
    ]))
}

/// The `ferroray` command's cluster subcommands (`start`, `stop`, `status`,
/// `list`): `argv` without the program's name; `relaunch` runs this
/// program again (for a daemon started in the background). The exit code.
#[pyfunction]
fn _cluster_main(py: Python<'_>, argv: Vec<String>, relaunch: Vec<String>) -> i32 {
    let mut args: Vec<std::ffi::OsString> = vec!["ferroray".into()];
    args.extend(argv.into_iter().map(Into::into));
    let relaunch = relaunch.into_iter().map(Into::into).collect();
    ferroray_cluster::logging();
    py.detach(|| ferroray_cluster::cli::main(args, relaunch))
}

/// The cluster's nodes: (node id, address, alive, is head, resources,
/// available), as `ferroray::nodes` gives them.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn _nodes(
    py: Python<'_>,
) -> PyResult<
    Vec<(String, String, bool, bool, std::collections::BTreeMap<String, f64>, std::collections::BTreeMap<String, f64>)>,
> {
    let nodes = py.detach(ferroray::nodes).map_err(core_err)?;
    Ok(nodes.into_iter().map(|n| (n.node_id, n.address, n.alive, n.is_head, n.resources, n.available)).collect())
}

#[pymodule]
fn _ferroray(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // An embedded node's server thread collects its heap after a burst too.
    ferroray_node::set_heap_trim(collect_heap);
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_class::<objects::ObjectRef>()?;
    m.add_class::<tasks::ObjectRefGenerator>()?;
    m.add_class::<actors::ActorHandle>()?;
    m.add_class::<objects::StoreSlot>()?;
    m.add_class::<objects::StoreView>()?;
    m.add_function(wrap_pyfunction!(objects::_reserve, m)?)?;
    m.add_function(wrap_pyfunction!(tasks::_claim_generator, m)?)?;
    m.add_function(wrap_pyfunction!(tasks::_export_function, m)?)?;
    m.add_function(wrap_pyfunction!(tasks::_session, m)?)?;
    m.add_function(wrap_pyfunction!(objects::_inline_threshold, m)?)?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(_runtime_stats, m)?)?;
    m.add_function(wrap_pyfunction!(_runtime_context, m)?)?;
    m.add_function(wrap_pyfunction!(objects::put, m)?)?;
    m.add_function(wrap_pyfunction!(objects::get, m)?)?;
    m.add_function(wrap_pyfunction!(objects::wait, m)?)?;
    m.add_function(wrap_pyfunction!(objects::_nested_ref, m)?)?;
    m.add_function(wrap_pyfunction!(objects::_collect_begin, m)?)?;
    m.add_function(wrap_pyfunction!(objects::_collect_end, m)?)?;
    m.add_function(wrap_pyfunction!(tasks::submit, m)?)?;
    m.add_function(wrap_pyfunction!(tasks::cancel, m)?)?;
    m.add_function(wrap_pyfunction!(actors::create_actor, m)?)?;
    m.add_function(wrap_pyfunction!(actors::get_actor, m)?)?;
    m.add_function(wrap_pyfunction!(actors::_actor_from_handle, m)?)?;
    m.add_function(wrap_pyfunction!(worker::worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(_cluster_main, m)?)?;
    m.add_function(wrap_pyfunction!(_nodes, m)?)?;
    Ok(())
}
