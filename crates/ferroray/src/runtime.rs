//! The embedded runtime and the free functions.

use crate::{CancelOptions, Config, TaskEvent};
use ferroray_common::{resources, Error, ObjectId, Result};
use ferroray_core::{global, worker, AsCompleted, Cancellable, CoreWorker, ObjectRef, Waitable};
use ferroray_node::{Node, NodeConfig, WorkerCommand};
use ferroray_protocol::WorkerKind;
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Runtime {
    /// The embedded node; `None` when connected to a daemon's.
    node: Option<Node>,
    core: Arc<CoreWorker>,
    /// Connected to a daemon: its head's address and the cluster's
    /// credentials (for `nodes()` and the resource views).
    head: Option<(String, ferroray_cluster::tls::Credentials)>,
}

/// One node of the cluster, as `nodes()` gives it (Ray's `ray.nodes()`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterNode {
    /// The node's id (hex).
    pub node_id: String,
    /// The address it gives other machines.
    pub address: String,
    pub alive: bool,
    pub is_head: bool,
    /// What it offers: `CPU`, `GPU`, custom resources, and
    /// `object_store_memory` in bytes.
    pub resources: std::collections::BTreeMap<String, f64>,
    /// What of it no task or actor holds (and the store's free bytes).
    pub available: std::collections::BTreeMap<String, f64>,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Starts the embedded cluster with default settings. Optional, as in Ray:
/// without it, the first use of the API (`remote()`, `put`, `wait`, ...)
/// starts the cluster with `Config::default()`; call `init_with` first for
/// other settings.
pub fn init() -> Result<()> {
    init_with(Config::default())
}

/// Starts the embedded cluster: a node daemon in this process and worker
/// processes started on demand. Errors with `AlreadyInitialized` if running.
pub fn init_with(config: Config) -> Result<()> {
    crate::logging::install_default();
    if worker::is_rust_worker_process() {
        // A worker whose before-main hook did not run: be a worker now.
        worker::worker_main();
    }
    let _ = crate::__worker_entry_linked();
    let mut rt = RUNTIME.lock();
    if rt.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    if let Some(address) = &config.address {
        let (core, head) = connect(address, &config)?;
        global::set(core.clone())?;
        *rt = Some(Runtime { node: None, core, head: Some(head) });
        return Ok(());
    }
    let mut nc = NodeConfig::new(WorkerCommand::current_exe()?);
    if let Some((program, args)) = &config.python_workers {
        nc.worker_commands.clear();
        nc.worker_commands
            .insert(WorkerKind::Python, WorkerCommand { program: program.clone(), args: args.clone(), env: vec![] });
    }
    if let Some(n) = config.num_cpus {
        nc.resources.set(resources::CPU, n);
        nc.max_workers = ((n.ceil() as usize) * 4).max(8);
        nc.max_worker_processes = ferroray_node::config::default_max_worker_processes(n.ceil() as usize);
    }
    nc.resources.set(resources::GPU, config.num_gpus);
    for (name, amount) in &config.resources {
        resources::check_amount(&format!("resource {name}"), *amount)?;
        nc.resources.set(name, *amount);
    }
    if let Some(n) = config.num_cpus {
        resources::check_amount("num_cpus", n)?;
    }
    if let Some(b) = config.object_store_memory {
        nc.store_capacity = b;
    }
    if let Some(b) = config.inline_threshold {
        nc.inline_threshold = b;
    }
    if let Some(n) = config.max_workers {
        nc.max_workers = n;
        nc.max_worker_processes = nc.max_worker_processes.max(n);
    }
    if let Some(n) = config.max_worker_processes {
        nc.max_worker_processes = n;
    }
    nc.log_to_driver = config.log_to_driver;
    for command in nc.worker_commands.values_mut() {
        command.env.extend(config.worker_env.iter().cloned());
    }
    nc.test_kill_delay = config.test_kill_delay;
    set_spin_budget(&config);
    nc.spin_budget = ferroray_common::spin::budget();
    if let Some(t) = config.idle_worker_timeout {
        nc.idle_worker_timeout = t;
    }
    let node = Node::start(nc)?;
    let worker_id = ferroray_common::WorkerId::random();
    let core = CoreWorker::driver(worker_id, node.info().clone(), node.arena().clone());
    core.attach(Box::new(node.connect_local(worker_id, core.inbox())?));
    global::set(core.clone())?;
    *rt = Some(Runtime { node: Some(node), core, head: None });
    Ok(())
}

/// Connects this program to the node daemon of the cluster at `address` on
/// this machine (`Config::address`):
/// 1. the daemon's record in the session directory gives its socket, and
///    the head's token file the token (or `FERRORAY_TOKEN`);
/// 2. the hello over the socket, as a driver; the welcome brings the store's
///    descriptor, which is mapped as the workers map it;
/// 3. the worker commands: this executable for Rust functions (the node
///    reads which one from the kernel), the front's for its kind, with the
///    configured worker environment. Then the program's tasks can run.
fn connect(address: &str, config: &Config) -> Result<(Arc<CoreWorker>, (String, ferroray_cluster::tls::Credentials))> {
    use ferroray_protocol::{Role, ToNode, WorkerCommandSpec, PROTOCOL_VERSION};
    let node_settings = config.num_cpus.is_some()
        || config.num_gpus != 0.0
        || !config.resources.is_empty()
        || config.object_store_memory.is_some()
        || config.inline_threshold.is_some()
        || config.max_workers.is_some()
        || config.max_worker_processes.is_some();
    if node_settings {
        return Err(Error::InvalidOption(
            "when connecting to a cluster, what a node offers (num_cpus, num_gpus, resources, object_store_memory, ...) is the daemon's to set: `ferroray start ...`"
                .into(),
        ));
    }
    // Step 1.
    let session = ferroray_cluster::session::Session::open().map_err(|e| Error::InvalidOption(e.to_string()))?;
    let nodes = session.nodes();
    let record = match address {
        "auto" => nodes.iter().find(|n| n.is_head).or_else(|| nodes.first()),
        addr => nodes.iter().filter(|n| n.head == addr).min_by_key(|n| !n.is_head),
    };
    let record = record.filter(|n| !n.socket.is_empty()).ok_or_else(|| {
        Error::NoCluster(format!(
            "no node of the cluster at {address} runs on this machine (looked in {}); start one with `ferroray start --head` or `ferroray start --address HEAD:PORT`",
            session.dir().display()
        ))
    })?;
    let credentials = match std::env::var("FERRORAY_TOKEN") {
        Ok(text) => ferroray_cluster::tls::Credentials::from_env(text.trim())
            .ok_or_else(|| Error::InvalidOption("FERRORAY_TOKEN does not hold cluster credentials".into()))?,
        Err(_) => session.token().map_err(|e| Error::InvalidOption(e.to_string()))?,
    };
    let token = credentials.token.clone();
    // Step 2.
    let worker_id = ferroray_common::WorkerId::random();
    let hello =
        ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid: std::process::id(), role: Role::Driver, token };
    let connected = ferroray_transport::unix::UnixLink::connect(&record.socket, hello)?;
    let fd = connected.store.ok_or_else(|| Error::Protocol("the node's welcome came without its store".into()))?;
    // SAFETY: `fd` is the store's memfd, just received and owned here only;
    // the arena takes it over.
    let arena = Arc::new(
        unsafe { ferroray_store::Arena::open(std::os::fd::IntoRawFd::into_raw_fd(fd), connected.info.store_capacity) }
            .map_err(Error::io)?,
    );
    // Step 3.
    let env = config.worker_env.clone();
    let commands = match &config.python_workers {
        Some((program, args)) => vec![WorkerCommandSpec {
            kind: WorkerKind::Python,
            program: program.to_string_lossy().into_owned(),
            args: args.clone(),
            env,
        }],
        None => vec![WorkerCommandSpec { kind: WorkerKind::Rust, program: String::new(), args: vec![], env }],
    };
    use ferroray_transport::Link;
    connected.link.send(ToNode::WorkerCommands(commands))?;
    let core = CoreWorker::driver(worker_id, connected.info, arena);
    core.attach(Box::new(connected.link));
    connected.reader.spawn("ferroray-driver-rx", core.inbox())?;
    set_spin_budget(config);
    Ok((core, (record.head.clone(), credentials)))
}

/// This process's watching budget: the configured one, else
/// `FERRORAY_SPIN_US`, else the default.
fn set_spin_budget(config: &Config) {
    let spin = config
        .spin_wait
        .or_else(ferroray_common::spin::budget_from_env)
        .unwrap_or(ferroray_common::spin::DEFAULT_BUDGET);
    ferroray_common::spin::set_budget(spin);
}

/// A resource set as `nodes()` gives it.
fn amounts(set: &ferroray_common::ResourceSet) -> std::collections::BTreeMap<String, f64> {
    set.iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The cluster's nodes (Ray's `ray.nodes()`): this process's own node when
/// it embeds one, else every node the head knows, dead ones included.
pub fn nodes() -> Result<Vec<ClusterNode>> {
    // The head is asked without the runtime's lock held.
    let (address, credentials) = {
        let rt = RUNTIME.lock();
        let rt = rt.as_ref().ok_or(Error::NotInitialized)?;
        match &rt.node {
            Some(node) => return Ok(vec![embedded_node(node)]),
            None => rt.head.clone().ok_or(Error::NotInitialized)?,
        }
    };
    let view = ferroray_cluster::client::view_blocking(&address, &credentials)
        .map_err(|e| Error::Disconnected(format!("asking the head at {address}: {e}")))?;
    Ok(view
        .nodes
        .into_iter()
        .map(|n| {
            let desc = n.desc.unwrap_or_default();
            let load = n.load.unwrap_or_default();
            let mut resources = amounts(&ferroray_common::ResourceSet::from_fixed(desc.resources));
            let mut available = amounts(&ferroray_common::ResourceSet::from_fixed(load.available));
            resources.insert(OBJECT_STORE_MEMORY.into(), desc.store_capacity as f64);
            available.insert(OBJECT_STORE_MEMORY.into(), desc.store_capacity.saturating_sub(load.store_used) as f64);
            ClusterNode {
                node_id: format!("{:016x}", desc.node_id),
                address: desc.address,
                alive: n.alive,
                is_head: n.is_head,
                resources,
                available,
            }
        })
        .collect())
}

/// The node this process embeds, as `nodes()` shows it.
fn embedded_node(node: &Node) -> ClusterNode {
    let s = node.stats();
    let mut resources = amounts(&s.total);
    let mut available = amounts(&s.available);
    let capacity = node.info().store_capacity;
    resources.insert(OBJECT_STORE_MEMORY.into(), capacity as f64);
    available.insert(OBJECT_STORE_MEMORY.into(), capacity.saturating_sub(s.store_used) as f64);
    let node_id = node.info().node_id.to_string();
    ClusterNode { node_id, address: "127.0.0.1".into(), alive: true, is_head: true, resources, available }
}

/// The resource a node's store offers in `nodes()` and the views, in bytes.
pub const OBJECT_STORE_MEMORY: &str = "object_store_memory";

/// Everything the alive nodes offer, summed (Ray's `cluster_resources()`).
pub fn cluster_resources() -> Result<std::collections::BTreeMap<String, f64>> {
    Ok(sum(nodes()?.into_iter().filter(|n| n.alive).map(|n| n.resources)))
}

/// What of it no task or actor holds now (Ray's `available_resources()`);
/// a daemon's figures are as of its last heartbeat.
pub fn available_resources() -> Result<std::collections::BTreeMap<String, f64>> {
    Ok(sum(nodes()?.into_iter().filter(|n| n.alive).map(|n| n.available)))
}

fn sum(sets: impl Iterator<Item = std::collections::BTreeMap<String, f64>>) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for set in sets {
        for (k, v) in set {
            *out.entry(k).or_insert(0.0) += v;
        }
    }
    out
}

pub fn is_initialized() -> bool {
    global::is_set()
}

/// Stops the embedded cluster: every worker process is killed and reaped,
/// and the shared-memory store is freed. Does nothing if not running.
pub fn shutdown() {
    let rt = RUNTIME.lock().take();
    if let Some(rt) = rt {
        let _ = global::take();
        rt.core.close();
        if let Some(node) = rt.node {
            node.shutdown();
        }
    }
}

/// The current core worker; in a driver with no cluster yet, starts one
/// with `Config::default()` first (like Ray's first call without `init`).
fn core() -> Result<Arc<CoreWorker>> {
    global::core_or_init()
}

/// What `global::core_or_init` starts in a driver used before `init`.
pub(crate) fn auto_init() -> Result<()> {
    init()
}

/// Blocks until the object is ready and returns its value.
pub fn get<T: DeserializeOwned>(r: &ObjectRef<T>) -> Result<T> {
    r.get()
}

/// Values of several refs, in the order given.
pub fn get_all<T: DeserializeOwned>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    ObjectRef::prefetch_all(refs);
    refs.iter().map(|r| r.get()).collect()
}

/// [`get_all`] that gives up with `Error::GetTimeout` once `timeout` has
/// passed (one deadline for all the refs, not one each).
pub fn get_all_timeout<T: DeserializeOwned>(refs: &[ObjectRef<T>], timeout: Duration) -> Result<Vec<T>> {
    let deadline = Instant::now() + timeout;
    ObjectRef::prefetch_all(refs);
    refs.iter().map(|r| r.get_timeout(deadline.saturating_duration_since(Instant::now()))).collect()
}

/// Stores a value in the object store.
pub fn put<T: Serialize>(value: T) -> Result<ObjectRef<T>> {
    core()?.put(&value)
}

/// Stores bytes as they are ([`Encoding::Raw`](crate::Encoding::Raw)), for
/// data encoded outside serde or by another front; read them back with
/// [`ObjectRef::get_raw`]. `nested` are refs the bytes name, kept alive
/// while the object lives (each must be held by this process).
pub fn put_raw(bytes: &[u8], nested: &[ObjectId]) -> Result<ObjectRef<crate::RawValue>> {
    core()?.put_raw(bytes, nested)
}

/// Ray's `wait(refs, num_returns, timeout)`: waits until `num_returns` of
/// `items` are ready or `timeout` passes (`None`: no limit). Returns (ready,
/// not ready): ready ones in the order they became ready, at most
/// `num_returns`; the rest in the order given.
///
/// `items` are refs, generators (ready when their next item is here or
/// their stream has ended), or references to them; the result holds the
/// same items, so borrowed ones are handed back without cloning anything:
///
/// ```no_run
/// # fn f(a: ferroray::ObjectRef<u64>, b: ferroray::ObjectRef<u64>, g: ferroray::ObjectRefGenerator<u64>) -> ferroray::Result<()> {
/// use ferroray::Waitable;
/// use std::time::Duration;
/// // Refs of one type, borrowed: `ready` is a `Vec<&ObjectRef<u64>>`.
/// let (ready, rest) = ferroray::wait(&[&a, &b], 1, Some(Duration::from_secs(1)))?;
/// // Refs and generators mixed: `&dyn Waitable`; tell them apart by key,
/// // or ask for positions with `wait_indices`.
/// let (ready, rest) = ferroray::wait(&[&a as &dyn Waitable, &g], 1, None)?;
/// let a_is_ready = ready.iter().any(|w| w.wait_key() == a.wait_key());
/// let (ready_at, rest_at) = ferroray::wait_indices(&[&a as &dyn Waitable, &g], 2, None)?;
/// # Ok(()) }
/// ```
///
/// Errors: `InvalidOption` if `num_returns` is more than the items or an
/// item is given twice; `Disconnected` if the node goes away before
/// `num_returns` are ready.
pub fn wait<W: Waitable + Clone>(
    items: &[W],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<W>, Vec<W>)> {
    picked(items, wait_indices(items, num_returns, timeout)?)
}

/// The items at the positions of (ready, not ready).
fn picked<W: Clone>(items: &[W], (ready, rest): (Vec<usize>, Vec<usize>)) -> Result<(Vec<W>, Vec<W>)> {
    Ok((ready.into_iter().map(|i| items[i].clone()).collect(), rest.into_iter().map(|i| items[i].clone()).collect()))
}

/// [`wait`] giving positions in `items` instead of the items: (ready, in
/// the order they became ready; not ready, in the order given).
pub fn wait_indices<W: Waitable>(
    items: &[W],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let keys: Vec<_> = items.iter().map(Waitable::wait_key).collect();
    core()?.wait(&keys, num_returns, timeout, true)
}

/// [`wait`] that fetches nothing (Ray's `wait(..., fetch_local=False)`): a
/// ref is ready once its object is made on any node, and a large value
/// stays on the node that made it until something reads it. Pass the refs
/// on to tasks without bringing their bytes here first.
pub fn wait_made<W: Waitable + Clone>(
    items: &[W],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<W>, Vec<W>)> {
    picked(items, wait_made_indices(items, num_returns, timeout)?)
}

/// [`wait_made`] giving positions in `items`, as [`wait_indices`] does.
pub fn wait_made_indices<W: Waitable>(
    items: &[W],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let keys: Vec<_> = items.iter().map(Waitable::wait_key).collect();
    core()?.wait(&keys, num_returns, timeout, false)
}

/// The async form of [`wait`]: `items` (refs, generators, references to
/// them, `&dyn Waitable`) as a `futures::Stream` that yields each one once,
/// in the order it becomes ready. Runs on any executor and needs no timer:
/// `wait(items, n, timeout)` is `by_ref().take(n)` under your runtime's
/// timeout, then [`into_rest`](AsCompleted::into_rest) for the rest. See [`AsCompleted`](crate::AsCompleted) for what a
/// lost connection does (the remaining items come out, each showing the
/// error).
///
/// ```no_run
/// # async fn f(refs: Vec<ferroray::ObjectRef<u64>>) -> ferroray::Result<()> {
/// use futures::StreamExt;
/// let mut done = ferroray::as_completed(&refs)?;
/// while let Some(r) = done.next().await {
///     println!("{}", r.await?);
/// }
/// // Ray's `ready, rest = await asyncio.wait(refs, num_returns=2)`:
/// let mut done = ferroray::as_completed(&refs)?;
/// let ready: Vec<_> = done.by_ref().take(2).collect().await;
/// let rest = done.into_rest();
/// # Ok(()) }
/// ```
pub fn as_completed<W: Waitable>(items: impl IntoIterator<Item = W>) -> Result<AsCompleted<W>> {
    Ok(AsCompleted::new(core()?, items))
}

/// Cancels the task behind a ref or a generator, and the tasks it submitted:
/// a queued task is dropped; a running one sees `is_cancelled()` turn true
/// (a generator stops at its next yield, even while paused by backpressure).
/// A ref then gives `Error::TaskCancelled`; a generator hands out one ref
/// holding that error after the items it already made, then ends.
pub fn cancel<C: Cancellable>(target: &C) -> Result<()> {
    cancel_with(target, CancelOptions::default())
}

/// [`cancel`], chosen by a [`CancelOptions`]: e.g.
/// `cancel_with(&r, CancelOptions::default().force())` kills the worker
/// running the task (it is replaced); `.recursive(false)` leaves the tasks
/// it submitted alone; `.grace(Duration::from_secs(5))` asks first and
/// kills what still runs 5 s later. [`CancelOptions`] has what each form
/// does to a task that never checks `is_cancelled()`.
pub fn cancel_with<C: Cancellable>(target: &C, options: CancelOptions) -> Result<()> {
    match options.grace {
        Some(grace) if !options.force => core()?.cancel_with_grace(target.task_to_cancel()?, options.recursive, grace),
        _ => core()?.cancel(target.task_to_cancel()?, options.force, options.recursive),
    }
}

/// Every recorded task state change, oldest first.
pub fn tasks() -> Result<Vec<TaskEvent>> {
    Ok(core()?.task_events()?.into_iter().map(TaskEvent::from_wire).collect())
}

/// The id of the node this process runs on (a task's: the node that runs
/// it), as [`ClusterNode::node_id`] spells it. Like Ray's
/// `get_runtime_context().get_node_id()`.
pub fn node_id() -> Result<String> {
    Ok(ferroray_core::global::core()?.info().node_id.to_string())
}

/// The abstract Unix socket name of the embedded node (workers connect to it).
pub fn node_address() -> Result<String> {
    let rt = RUNTIME.lock();
    let rt = rt.as_ref().ok_or(Error::NotInitialized)?;
    Ok(embedded(rt)?.socket_name().to_string())
}

/// The node this process embeds; an error for a program connected to a
/// daemon (whose node is another process's).
fn embedded(rt: &Runtime) -> Result<&Node> {
    rt.node.as_ref().ok_or_else(|| {
        Error::InvalidOption("this program is connected to a node daemon, not running its own node".into())
    })
}

/// Sizes of the runtime's tables, to check that nothing leaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Objects the node still tracks.
    pub node_objects: usize,
    /// Tasks not yet finished.
    pub node_tasks: usize,
    pub workers: usize,
    /// Objects in the shared-memory store (spilled ones included).
    pub store_objects: u64,
    pub store_used_bytes: u64,
    pub store_spilled: u64,
    /// Generator streams the node keeps (running, or with items untaken).
    pub node_streams: usize,
    /// Objects this process holds refs to.
    pub local_refs: usize,
    /// Exported functions (of the Python front) the node keeps.
    pub node_functions: usize,
}

pub fn runtime_stats() -> Result<RuntimeStats> {
    let rt = RUNTIME.lock();
    let rt = rt.as_ref().ok_or(Error::NotInitialized)?;
    let s = embedded(rt)?.stats();
    Ok(RuntimeStats {
        node_objects: s.objects,
        node_tasks: s.tasks,
        workers: s.workers,
        store_objects: s.store_objects,
        store_used_bytes: s.store_used,
        store_spilled: s.store_spilled,
        node_streams: s.streams,
        local_refs: rt.core.local_ref_count(),
        node_functions: s.functions,
    })
}

/// Ends an actor now: calls running on it are interrupted and fail with
/// `Error::ActorDied`, and it does not restart. Ray's
/// `ray.kill(actor, no_restart=True)`.
pub fn kill<A: crate::ActorClass>(actor: &crate::ActorHandle<A>) -> Result<()> {
    actor.kill()
}
