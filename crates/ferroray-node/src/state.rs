//! The node's tables and protocol handlers.
//!
//! Reference counting (the owner's tables, kept by the node for every process
//! on it). An object stays alive while either
//! 1. some connection holds it: a process reports its 0→1 and 1→0
//!    transitions with `AddRef`/`RemoveRef` (`Submit` and `Put` imply an
//!    `AddRef` for the sender), or
//! 2. something pins it: a task that takes it as an argument (until the task
//!    is finished for good, retries included), or a live object whose value
//!    has it nested inside.
//!
//! Each process sends its messages on one connection, in order, so a worker's
//! `AddRef` for a ref it found inside an argument always arrives before the
//! `TaskDone` that unpins the argument: no borrow can be lost in between.
//!
//! Streams (generator tasks). The node keeps each stream's table for its
//! owner, the process that submitted the task:
//! 1. Item `i` is object `(task, 2 + i)`. A report creates it, held by the
//!    owner (so an item nobody took yet stays alive), and tells the owner.
//! 2. Reports of one attempt arrive in order on the executor's connection,
//!    so by the time `TaskDone` arrives every report was handled: the
//!    executor needs no acknowledgements for that. With backpressure `n`,
//!    the acknowledgement of a report is held while the owner has `n` or more
//!    unconsumed items, and the executor waits for it before going on.
//! 3. A retried attempt reports again from index 0: indices already known are
//!    compared by digest and not handed out twice; a different value, fewer
//!    items at the end, or an application error before the index an earlier
//!    attempt reached fails the stream with `ReplayMismatch`. Dynamic returns
//!    keep the same record (`Task::dynamic_digests`) but hand nothing out:
//!    the node makes their list when the task ends.
//! 4. When the task ends the owner learns the item count and the error, if
//!    any. When the owner drops the stream, the items it never took are
//!    released, held acknowledgements are answered `gone`, and later
//!    reports are refused, so a paused executor is never stuck.
//!
//! Task lifecycle: `Submit` → waits for `Ref` arguments (`Submitted`) →
//! ready queue (`PendingSchedule`) → a worker and its resources
//! (`Running`) → `TaskDone` or the worker's death → finished, failed, or
//! queued again for a retry.

use crate::local::LocalLink;
use crate::pool::PoolCmd;
use crate::server::SocketOutbox;
use crate::NodeConfig;
use ferroray_common::{resources, ClusterToken, Error, ObjectId, ResourceSet, Result, TaskId, WorkerId};
use ferroray_protocol::{
    FromNode, ObjectValue, Payload, ReturnKind, Role, TaskArg, TaskEvent, TaskOutcome, TaskSpec, TaskState, ToNode,
    PROTOCOL_VERSION,
};
use ferroray_store::Store;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

pub type ConnId = u64;

/// Names of the task each worker pid runs (or ran last), for output prefixes.
pub type TaskNames = Arc<parking_lot::Mutex<HashMap<u32, String>>>;

/// Where a connection's messages go. Both kinds only queue under the state
/// lock; they go out once it is released (see `crate::local`).
#[derive(Clone)]
pub(crate) enum Outbox {
    /// A worker's socket (`crate::server`).
    Socket(Arc<SocketOutbox>),
    /// The in-process driver.
    Local(Arc<LocalLink>),
}

impl Outbox {
    fn send(&self, msg: FromNode) {
        match self {
            Outbox::Socket(out) => out.send(&msg),
            Outbox::Local(link) => link.send(msg),
        }
    }

    fn has_pending(&self) -> bool {
        match self {
            Outbox::Socket(out) => out.has_pending(),
            Outbox::Local(link) => link.has_pending(),
        }
    }

    fn same(&self, other: &Outbox) -> bool {
        match (self, other) {
            (Outbox::Socket(a), Outbox::Socket(b)) => Arc::ptr_eq(a, b),
            (Outbox::Local(a), Outbox::Local(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

struct Conn {
    outbox: Outbox,
    /// Set once its hello is accepted; nothing else is handled before.
    role: Option<Role>,
    /// The peer's process, from the socket's credentials (never from what
    /// the peer says): the pid a force-cancel kills, and a worker's identity.
    pid: u32,
    /// Who the peer is: for a worker, the id the spawner gave its process.
    /// Task and object ids it makes must carry it as their submitter.
    worker_id: WorkerId,
    held: FxHashSet<ObjectId>,
    /// Objects this connection was shown without holding them: refs nested
    /// in values sent to it and ref arguments of its tasks. It may take a
    /// reference (`AddRef`) or read (`Subscribe`) only what it holds, owns,
    /// or was shown.
    granted: FxHashSet<ObjectId>,
    /// Shared-memory pins handed to this connection, by object.
    pins: FxHashMap<ObjectId, u32>,
    /// Allocations made by this connection and not yet sealed.
    unsealed: FxHashSet<u64>,
    /// Tasks sent to this worker: the first runs, the rest wait behind it
    /// (pipelining) under the same lease.
    assigned: VecDeque<TaskId>,
    /// What the worker's lease takes from the node, and its full shape (the
    /// two differ while the running task lends its CPU back).
    lease: ResourceSet,
    lease_shape: ResourceSet,
    /// Its task waits in `get`: it does not count toward `max_workers`.
    blocked: bool,
    /// It became blocked while its generator was paused by backpressure
    /// (its acknowledgement held here): it lent its CPU, but it still
    /// counts toward `max_workers`, so paused generators cannot multiply
    /// processes. Cleared with `blocked`.
    paused: bool,
    /// A `Revoke` is on its way: do not send another until the answer.
    revoking: bool,
    /// A force-cancel sent this worker's kill: it takes no task any more,
    /// and its death is charged to the cancelled task only (`disconnect`).
    doomed: bool,
    /// Since when it is in `State::idle` (for `exit_idle_workers`).
    idle_since: std::time::Instant,
}

impl Conn {
    fn running(&self) -> Option<TaskId> {
        self.assigned.front().copied()
    }
}

/// Tasks a busy worker may hold beyond the one it runs (8 measured best:
/// ~40k tasks/s at 2, ~52k at 4, ~60k at 8 on the async benchmark). Pipelining hides the
/// round trip between two tasks; it applies only to tasks that could not
/// start anyway (no free resources), and is undone if the worker blocks.
const PIPELINE_DEPTH: usize = 8;

/// Bytes of argument values sent inline with one task, at most.
const ARG_INLINE_BUDGET: usize = 16 << 20;

/// A stored value as the node keeps it. Shared-memory objects keep no
/// offset here: the store knows it, and it can change across a spill.
enum Stored {
    Inline { bytes: Vec<u8>, contained: Vec<ObjectId> },
    Shm { contained: Vec<ObjectId> },
    Error(Error),
}

impl Stored {
    fn contained(&self) -> &[ObjectId] {
        match self {
            Stored::Inline { contained, .. } | Stored::Shm { contained } => contained,
            Stored::Error(_) => &[],
        }
    }
}

#[derive(Default)]
struct Obj {
    value: Option<Stored>,
    holders: u32,
    pins: u32,
    subscribers: Vec<ConnId>,
    waiting: Vec<TaskId>,
    /// Connections it was shown to (their `Conn::granted`), cleared when
    /// it is freed.
    granted_to: Vec<ConnId>,
}

struct Task {
    spec: TaskSpec,
    pending_deps: usize,
    worker: Option<ConnId>,
    retries_left: u32,
    cancelled: bool,
    /// Fingerprints of a dynamic-returns task's items (item `i` is object
    /// `(task, 2 + i)`), pinned until the task ends.
    dynamic_digests: Vec<u64>,
    /// Items the current attempt reported (a retry starts again from 0).
    attempt_items: u32,
    /// Sent to a worker at least once.
    started: bool,
    /// Set when a retry of a generator disagrees with what it reported before.
    replay_error: Option<Error>,
    /// When it was last put in a ready queue (a counter): a task taken back
    /// from a worker goes back to its place by it (`requeue`).
    order: u64,
}

/// A generator task's stream, kept for its owner.
struct Stream {
    owner: ConnId,
    backpressure: Option<u32>,
    /// Fingerprint of each item reported so far (its length is the number of items).
    digests: Vec<u64>,
    consumed: u32,
    /// Acknowledgements held back by backpressure: (executor, index).
    held: VecDeque<(ConnId, u32)>,
    /// The owner dropped the stream.
    dropped: bool,
}

impl Stream {
    fn generated(&self) -> u32 {
        self.digests.len() as u32
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    pub objects: usize,
    pub tasks: usize,
    pub workers: usize,
    pub store_objects: u64,
    pub store_used: u64,
    pub store_spilled: u64,
    /// Generator streams the node keeps (running, or with items untaken).
    pub streams: usize,
}

pub struct State {
    conns: FxHashMap<ConnId, Conn>,
    next_conn: ConnId,
    objects: FxHashMap<ObjectId, Obj>,
    tasks: FxHashMap<TaskId, Task>,
    streams: FxHashMap<TaskId, Stream>,
    children: FxHashMap<TaskId, Vec<TaskId>>,
    /// Tasks whose arguments are ready, one FIFO per resource shape (so a
    /// scheduling pass looks at the head of each queue, not at every task).
    /// Entries of tasks that ended meanwhile are skipped when reached.
    ready: Vec<(ResourceSet, VecDeque<TaskId>)>,
    idle: Vec<ConnId>,
    starting: usize,
    total: ResourceSet,
    available: ResourceSet,
    store: Store<ObjectId>,
    events: VecDeque<TaskEvent>,
    max_events: usize,
    max_workers: usize,
    /// The hard cap on worker processes, blocked ones included.
    max_processes: usize,
    /// The cap was reached with every worker blocked and logged; cleared
    /// once a worker can start again.
    cap_logged: bool,
    /// Started worker processes that have not said hello yet.
    starting_pids: HashSet<u32>,
    /// Every live worker process the spawner started, with the worker id it
    /// gave it: the only processes accepted as workers.
    worker_pids: FxHashMap<u32, WorkerId>,
    /// Worker hellos that arrived before the spawner registered their pid
    /// (it registers right after the fork returns): pid -> (conn, claimed id).
    awaiting_spawn: FxHashMap<u32, (ConnId, WorkerId)>,
    /// The secret every hello must carry.
    token: ClusterToken,
    /// Workers that died before saying hello, since the last one that did.
    early_deaths: u32,
    spawn: std::sync::mpsc::Sender<PoolCmd>,
    pub(crate) names: TaskNames,
    info: ferroray_protocol::NodeInfo,
    shutting_down: bool,
    /// Every connection's outbox, and those of local connections that went
    /// away with messages (their `closed`) still to deliver.
    outboxes: Vec<Outbox>,
    closed_links: Vec<Outbox>,
    test_kill_delay: Option<std::time::Duration>,
    /// Workers kept when idle (the CPU count, at least 1); idle ones beyond
    /// it exit after `idle_timeout`.
    steady_workers: usize,
    idle_timeout: std::time::Duration,
    /// Counter behind `Task::order`.
    next_order: u64,
    /// Tasks failed for good by their worker's death, whose error waits
    /// (until the deadline) for how the process died: pid -> (deadline,
    /// [(task, the error's text without the status)]). See `disconnect`.
    crashed: FxHashMap<u32, (std::time::Instant, Vec<(TaskId, String)>)>,
    /// Tasks cancelled with a grace period: force-cancel each that still
    /// runs at its deadline (`force_overdue_cancels`).
    force_at: Vec<(std::time::Instant, TaskId)>,
    /// How worker processes reaped before their connection's end was seen
    /// died (pid -> (status, when)), kept for `CRASH_STATUS_WAIT`.
    exits: FxHashMap<u32, (String, std::time::Instant)>,
}

/// How long a task failed by its worker's death waits for the worker's exit
/// status (the spawner reaps every 200 ms, usually after the connection's
/// end is seen) before its error is completed without it.
pub const CRASH_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn push_event(
    events: &mut VecDeque<TaskEvent>,
    max: usize,
    spec: &TaskSpec,
    state: TaskState,
    worker_pid: Option<u32>,
    error: Option<String>,
) {
    if events.len() >= max {
        events.pop_front();
    }
    events.push_back(TaskEvent {
        task_id: spec.task_id,
        name: spec.name().to_string(),
        state,
        attempt: spec.attempt,
        time_us: now_us(),
        worker_pid,
        error,
    });
}

/// The final error of a task whose worker died: `status` says how
/// (`pool::describe_exit`: "was killed by signal 9 (SIGKILL)", "exited with
/// code 3").
fn crash_error(task: String, pid: u32, status: &str) -> Error {
    Error::WorkerCrashed { task, detail: format!("worker pid={pid} {status}") }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl State {
    pub(crate) fn new(
        config: &NodeConfig,
        info: ferroray_protocol::NodeInfo,
        store: Store<ObjectId>,
        spawn: std::sync::mpsc::Sender<PoolCmd>,
    ) -> Self {
        State {
            conns: FxHashMap::default(),
            next_conn: 1,
            objects: FxHashMap::default(),
            tasks: FxHashMap::default(),
            streams: FxHashMap::default(),
            children: FxHashMap::default(),
            ready: Vec::new(),
            idle: Vec::new(),
            starting: 0,
            total: config.resources.clone(),
            available: config.resources.clone(),
            store,
            events: VecDeque::new(),
            max_events: config.max_task_events,
            max_workers: config.max_workers,
            max_processes: config.max_worker_processes,
            cap_logged: false,
            starting_pids: HashSet::new(),
            worker_pids: FxHashMap::default(),
            awaiting_spawn: FxHashMap::default(),
            token: config.token.clone().expect("Node::start sets the token"),
            early_deaths: 0,
            spawn,
            names: TaskNames::default(),
            info,
            shutting_down: false,
            outboxes: Vec::new(),
            closed_links: Vec::new(),
            test_kill_delay: config.test_kill_delay,
            steady_workers: (config.resources.get(resources::CPU).ceil() as usize).max(1),
            idle_timeout: config.idle_worker_timeout,
            next_order: 0,
            crashed: FxHashMap::default(),
            force_at: Vec::new(),
            exits: FxHashMap::default(),
        }
    }

    /// A new connection from process `pid` (the socket's credentials).
    pub(crate) fn add_connection(&mut self, outbox: Outbox, pid: u32) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.outboxes.push(outbox.clone());
        self.conns.insert(
            id,
            Conn {
                outbox,
                role: None,
                pid,
                worker_id: WorkerId(0),
                held: FxHashSet::default(),
                granted: FxHashSet::default(),
                pins: FxHashMap::default(),
                unsealed: FxHashSet::default(),
                assigned: VecDeque::new(),
                lease: ResourceSet::new(),
                lease_shape: ResourceSet::new(),
                blocked: false,
                paused: false,
                revoking: false,
                doomed: false,
                idle_since: std::time::Instant::now(),
            },
        );
        id
    }

    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    fn send(&self, conn: ConnId, msg: FromNode) {
        if let Some(c) = self.conns.get(&conn) {
            c.outbox.send(msg);
        }
    }

    /// Outboxes with messages waiting (sent when the lock is released).
    pub(crate) fn outboxes_to_flush(&mut self) -> Vec<Outbox> {
        let mut out = std::mem::take(&mut self.closed_links);
        out.extend(self.outboxes.iter().filter(|o| o.has_pending()).cloned());
        out
    }

    /// A connection leaves: a socket's writer ends once its queue is out; a
    /// local client learns it after its last message.
    fn forget_outbox(&mut self, outbox: Outbox) {
        self.outboxes.retain(|o| !o.same(&outbox));
        match outbox {
            Outbox::Socket(out) => out.close(),
            Outbox::Local(link) => {
                link.close();
                self.closed_links.push(Outbox::Local(link));
            }
        }
    }

    /// Closes `conn` with a reason the peer can read.
    pub fn reject(&mut self, conn: ConnId, err: Error) {
        // A peer not yet accepted is logged by the server, once per peer.
        if let Some(c) = self.conns.get(&conn).filter(|c| c.role.is_some()) {
            eprintln!("ferroray node: closing connection {conn} (pid {}): {err}", c.pid);
        }
        self.send(conn, FromNode::Rejected(err));
        self.disconnect(conn, "rejected");
    }

    /// One message from `conn`.
    pub fn handle(&mut self, conn: ConnId, msg: ToNode) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.role.is_none() && !matches!(msg, ToNode::Hello { .. }) {
            return self.reject(conn, Error::Protocol("the first message must be hello".into()));
        }
        match msg {
            ToNode::Hello { protocol, worker_id, pid: _, role, token } => {
                self.hello(conn, protocol, worker_id, role, &token)
            }
            ToNode::Submit(spec) => self.submit(conn, *spec),
            ToNode::Put { id, value } => {
                if let Err(e) = self.check_new_object(conn, id) {
                    return self.reject(conn, e);
                }
                self.objects.entry(id).or_default();
                self.hold(conn, id);
                if let Some(stored) = self.accept_value(conn, id, value) {
                    self.set_value(id, stored);
                }
            }
            ToNode::AddRef(ids) => {
                for id in ids {
                    if self.objects.contains_key(&id) && self.may_see(conn, id, true) {
                        self.hold(conn, id);
                    }
                }
            }
            ToNode::RemoveRef(ids) => {
                for id in ids {
                    self.unhold(conn, id);
                }
            }
            ToNode::Subscribe(ids) => {
                for id in ids {
                    if !self.may_see(conn, id, false) {
                        let e = Error::PermissionDenied(format!("object {id} was not given to this process"));
                        self.send(conn, FromNode::ObjectReady { id, value: ObjectValue::Error(e) });
                        continue;
                    }
                    match self.objects.get_mut(&id) {
                        None => self.send(
                            conn,
                            FromNode::ObjectReady { id, value: ObjectValue::Error(Error::ObjectLost(id.to_string())) },
                        ),
                        Some(o) if o.value.is_none() => o.subscribers.push(conn),
                        Some(_) => self.send_ready(conn, id),
                    }
                }
            }
            ToNode::Unpin(ids) => {
                for id in ids {
                    self.unpin_shm(conn, id);
                }
            }
            ToNode::TaskDone { task_id, attempt, outcome } => self.task_done(conn, task_id, attempt, outcome),
            ToNode::Allocate { req, size } => {
                let result = self.allocate(conn, size);
                self.send(conn, FromNode::Allocated { req, result });
            }
            ToNode::Deallocate { offset } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.unsealed.remove(&offset) {
                        self.store.abort(offset);
                    }
                }
            }
            ToNode::Cancel { task_id, force, recursive, force_after_ms } => {
                if self.may_cancel(conn, task_id) {
                    // Those to force after the grace: found before the cancel
                    // (a task it completes leaves the `children` table).
                    let graced = match force_after_ms {
                        Some(ms) if !force => self.cancel_targets(task_id, recursive).map(|t| (ms, t)),
                        _ => None,
                    };
                    self.cancel(task_id, force, recursive);
                    // A grace too long to have a deadline: never forced.
                    let graced = graced.and_then(|(ms, targets)| {
                        Some((std::time::Instant::now().checked_add(std::time::Duration::from_millis(ms))?, targets))
                    });
                    if let Some((at, targets)) = graced {
                        for t in targets {
                            if self.tasks.get(&t).is_some_and(|task| task.worker.is_some()) {
                                self.force_at.push((at, t));
                            }
                        }
                    }
                    self.schedule();
                }
            }
            ToNode::Blocked => self.set_blocked(conn, true),
            ToNode::Revoked { task_ids } => self.revoked(conn, task_ids),
            ToNode::Unblocked => self.set_blocked(conn, false),
            ToNode::ReportItem { task_id, attempt, index, value, digest } => {
                self.report_item(conn, task_id, attempt, index, value, digest)
            }
            ToNode::StreamConsumed { task_id, consumed } => {
                if let Some(st) = self.streams.get_mut(&task_id) {
                    if st.owner == conn {
                        st.consumed = st.consumed.max(consumed);
                        self.release_acks(task_id);
                    }
                }
            }
            ToNode::StreamDrop { task_id, consumed } => self.drop_stream(conn, task_id, consumed),
            ToNode::ListTasks { req } => {
                let events = self.events.iter().cloned().collect();
                self.send(conn, FromNode::Tasks { req, events });
            }
        }
    }

    /// Accepts a connection, in this order:
    /// 1. the protocol version, so an old peer learns why it is refused;
    /// 2. the cluster token (constant-time), so nothing below is reachable
    ///    without it;
    /// 3. one hello per connection;
    /// 4. the claimed identity: a worker must be a process the spawner
    ///    started (its pid, from the socket, is one of `worker_pids`) and claim
    ///    the worker id the spawner gave it; a hello that beats the
    ///    spawner's registration of its pid waits for it (`awaiting_spawn`).
    ///    A driver's worker id must not be in use.
    fn hello(&mut self, conn: ConnId, protocol: u32, worker_id: WorkerId, role: Role, token: &ClusterToken) {
        if protocol != PROTOCOL_VERSION {
            return self
                .reject(conn, Error::Protocol(format!("protocol version {protocol} is not {PROTOCOL_VERSION}")));
        }
        if !self.token.matches(token) {
            return self.reject(conn, Error::PermissionDenied("wrong cluster token".into()));
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let pid = c.pid;
        if c.role.is_some() || self.awaiting_spawn.values().any(|(w, _)| *w == conn) {
            return self.reject(conn, Error::Protocol("hello sent twice".into()));
        }
        match role {
            Role::Worker => match self.worker_pids.get(&pid) {
                Some(id) if *id == worker_id => self.accept(conn, role, worker_id),
                Some(_) => self.reject(
                    conn,
                    Error::PermissionDenied(format!("process {pid} claims a worker id the node did not give it")),
                ),
                None if self.starting > 0 => {
                    match self.awaiting_spawn.entry(pid) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            self.reject(conn, Error::Protocol("two hellos from one process".into()))
                        }
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert((conn, worker_id));
                        }
                    }
                }
                None => self.reject(
                    conn,
                    Error::PermissionDenied(format!("process {pid} is not a worker this node started")),
                ),
            },
            Role::Driver => {
                if self.conns.values().any(|c| c.role.is_some() && c.worker_id == worker_id) {
                    return self.reject(conn, Error::PermissionDenied(format!("worker id {worker_id} is in use")));
                }
                self.accept(conn, role, worker_id)
            }
        }
    }

    fn accept(&mut self, conn: ConnId, role: Role, worker_id: WorkerId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.role = Some(role);
        c.worker_id = worker_id;
        let pid = c.pid;
        self.send(conn, FromNode::Welcome(self.info.clone()));
        if role == Role::Worker {
            // Counted as starting since it was asked for.
            self.starting = self.starting.saturating_sub(1);
            self.starting_pids.remove(&pid);
            self.early_deaths = 0;
            self.idle.push(conn);
        }
        self.schedule();
    }

    /// Reserves shared memory for a value `conn` is about to write.
    pub fn allocate(&mut self, conn: ConnId, size: u64) -> Result<u64> {
        let offset = self.store.allocate(size).map_err(|e| Error::StoreFull(e.to_string()))?;
        match self.conns.get_mut(&conn) {
            Some(c) => {
                c.unsealed.insert(offset);
                Ok(offset)
            }
            None => {
                self.store.abort(offset);
                Err(Error::Disconnected("connection closed".into()))
            }
        }
    }

    /// Turns a value sent by `conn` into a stored one (sealing shared memory),
    /// or drops it if nobody wants object `id` any more.
    fn accept_value(&mut self, conn: ConnId, id: ObjectId, value: ObjectValue) -> Option<Stored> {
        let wanted = self.objects.contains_key(&id);
        match value {
            ObjectValue::Error(e) => wanted.then_some(Stored::Error(e)),
            ObjectValue::Data { payload: Payload::Inline(bytes), contained } => {
                wanted.then_some(Stored::Inline { bytes, contained })
            }
            ObjectValue::Data { payload: Payload::Shm { offset, len }, contained } => {
                let owned = self.conns.get_mut(&conn).is_some_and(|c| c.unsealed.remove(&offset));
                if !owned {
                    return wanted.then(|| {
                        Stored::Error(Error::Protocol(format!("object {id} names shared memory it did not allocate")))
                    });
                }
                if !wanted {
                    self.store.abort(offset);
                    return None;
                }
                match self.store.seal(id, offset, len) {
                    Ok(()) => Some(Stored::Shm { contained }),
                    Err(e) => {
                        self.store.abort(offset);
                        Some(Stored::Error(Error::Protocol(e.to_string())))
                    }
                }
            }
        }
    }

    /// Whether `conn` may read `id` (or, with `take`, take a reference to
    /// it): it holds it, was shown it, or (to take one) made it.
    fn may_see(&self, conn: ConnId, id: ObjectId, take: bool) -> bool {
        let Some(c) = self.conns.get(&conn) else { return false };
        c.held.contains(&id) || c.granted.contains(&id) || (take && id.task.submitter == c.worker_id)
    }

    /// Shows `ids` to `conn` (see [`Conn::granted`]).
    fn grant(&mut self, conn: ConnId, ids: &[ObjectId]) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        for id in ids {
            if !c.held.contains(id) && c.granted.insert(*id) {
                if let Some(o) = self.objects.get_mut(id) {
                    o.granted_to.push(conn);
                }
            }
        }
    }

    /// A task may be cancelled by its submitter and by whoever holds one of
    /// its return objects.
    fn may_cancel(&self, conn: ConnId, tid: TaskId) -> bool {
        let Some(c) = self.conns.get(&conn) else { return false };
        if tid.submitter == c.worker_id {
            return true;
        }
        let allowed = self.tasks.get(&tid).is_some_and(|t| t.spec.return_ids().any(|id| c.held.contains(&id)));
        if !allowed {
            eprintln!("ferroray node: connection {conn} (pid {}) may not cancel task {tid}", c.pid);
        }
        allowed
    }

    /// A `Put` or a task's returns: the ids must be the sender's own and new.
    fn check_new_object(&self, conn: ConnId, id: ObjectId) -> Result<()> {
        let Some(c) = self.conns.get(&conn) else { return Ok(()) };
        if id.task.submitter != c.worker_id {
            return Err(Error::PermissionDenied(format!("object {id} belongs to another process")));
        }
        if self.objects.get(&id).is_some_and(|o| o.value.is_some()) {
            return Err(Error::Protocol(format!("object {id} already has a value")));
        }
        Ok(())
    }

    fn send_ready(&mut self, conn: ConnId, id: ObjectId) {
        let (value, contained) = match self.objects.get(&id).and_then(|o| o.value.as_ref()) {
            None => return,
            Some(Stored::Error(e)) => (Some(ObjectValue::Error(e.clone())), Vec::new()),
            Some(Stored::Inline { bytes, contained }) => (
                Some(ObjectValue::Data { payload: Payload::Inline(bytes.clone()), contained: contained.clone() }),
                contained.clone(),
            ),
            Some(Stored::Shm { contained }) => (None, contained.clone()),
        };
        if !contained.is_empty() {
            self.grant(conn, &contained);
        }
        let value = match value {
            Some(v) => v,
            None => match self.pin_shm(conn, id) {
                Ok(payload) => ObjectValue::Data { payload, contained },
                Err(e) => ObjectValue::Error(e),
            },
        };
        self.send(conn, FromNode::ObjectReady { id, value });
    }

    fn pin_shm(&mut self, conn: ConnId, id: ObjectId) -> Result<Payload> {
        let (offset, len) = self.store.pin(id).map_err(|e| Error::ObjectLost(format!("{id}: {e}")))?;
        match self.conns.get_mut(&conn) {
            Some(c) => *c.pins.entry(id).or_insert(0) += 1,
            None => self.store.unpin(id),
        }
        Ok(Payload::Shm { offset, len })
    }

    fn unpin_shm(&mut self, conn: ConnId, id: ObjectId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(n) = c.pins.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                c.pins.remove(&id);
            }
            self.store.unpin(id);
        }
    }

    fn hold(&mut self, conn: ConnId, id: ObjectId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.held.insert(id) {
            if let Some(o) = self.objects.get_mut(&id) {
                o.holders += 1;
            }
        }
    }

    fn unhold(&mut self, conn: ConnId, id: ObjectId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.held.remove(&id) {
            if let Some(o) = self.objects.get_mut(&id) {
                o.holders -= 1;
            }
            self.maybe_free(id);
        }
    }

    fn pin(&mut self, id: ObjectId) -> bool {
        match self.objects.get_mut(&id) {
            Some(o) => {
                o.pins += 1;
                true
            }
            None => false,
        }
    }

    fn unpin(&mut self, id: ObjectId) {
        if let Some(o) = self.objects.get_mut(&id) {
            o.pins = o.pins.saturating_sub(1);
            self.maybe_free(id);
        }
    }

    /// Frees `id` once nothing holds or pins it, and releases what it contained.
    fn maybe_free(&mut self, id: ObjectId) {
        let Some(o) = self.objects.get(&id) else {
            return;
        };
        if o.holders > 0 || o.pins > 0 {
            return;
        }
        let o = self.objects.remove(&id).expect("checked above");
        for conn in &o.granted_to {
            if let Some(c) = self.conns.get_mut(conn) {
                c.granted.remove(&id);
            }
        }
        if let Some(value) = o.value {
            if matches!(value, Stored::Shm { .. }) {
                self.store.delete(id);
            }
            for c in value.contained() {
                self.unpin(*c);
            }
        }
    }

    /// Stores the value of a pending object and wakes what waits for it.
    fn set_value(&mut self, id: ObjectId, value: Stored) {
        if !self.objects.contains_key(&id) {
            // Nobody wants it any more: whatever it contained is not kept
            // alive by it (an item nobody pins goes now).
            for c in value.contained() {
                self.maybe_free(*c);
            }
            return;
        }
        for c in value.contained() {
            self.pin(*c);
        }
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        let failed = match &value {
            Stored::Error(e) => Some(e.clone()),
            _ => None,
        };
        o.value = Some(value);
        let subscribers = std::mem::take(&mut o.subscribers);
        let waiting = std::mem::take(&mut o.waiting);
        for s in subscribers {
            self.send_ready(s, id);
        }
        for t in waiting {
            let Some(task) = self.tasks.get_mut(&t) else {
                continue;
            };
            task.pending_deps -= 1;
            if let Some(e) = &failed {
                // A failed argument fails the task without running it.
                self.complete_task(t, Err(e.clone()));
            } else if task.pending_deps == 0 {
                self.record(t, TaskState::PendingSchedule, None, None);
                self.enqueue(t);
            }
        }
    }

    fn validate(&self, spec: &TaskSpec) -> Result<()> {
        if let ReturnKind::Streaming { backpressure: Some(0) } = spec.returns {
            return Err(Error::InvalidOption("generator backpressure must not be 0".into()));
        }
        if let Some((name, want, have)) = spec.resources.first_missing(&self.total) {
            return Err(Error::Infeasible(format!(
                "task {} needs {want} {name} but this node has {have} in total",
                spec.name()
            )));
        }
        Ok(())
    }

    fn submit(&mut self, conn: ConnId, spec: TaskSpec) {
        let id = spec.task_id;
        if self.tasks.contains_key(&id) {
            return self.reject(conn, Error::Protocol(format!("task {id} is already submitted")));
        }
        for rid in spec.return_ids() {
            if let Err(e) = self.check_new_object(conn, rid) {
                return self.reject(conn, e);
            }
        }
        for rid in spec.return_ids() {
            self.objects.entry(rid).or_default();
            self.hold(conn, rid);
        }
        if let Some(parent) = spec.parent {
            self.children.entry(parent).or_default().push(id);
        }
        let mut pending = 0;
        let mut failed = None;
        for arg in &spec.args {
            if let TaskArg::Ref(oid) = arg {
                match self.objects.get_mut(oid) {
                    None => failed = Some(Error::ObjectLost(oid.to_string())),
                    Some(o) => {
                        o.pins += 1;
                        match &o.value {
                            None => {
                                o.waiting.push(id);
                                pending += 1;
                            }
                            Some(Stored::Error(e)) => failed = Some(e.clone()),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        for c in &spec.contained {
            self.pin(*c);
        }
        let retries_left = spec.max_retries;
        let invalid = self.validate(&spec).err();
        if let ReturnKind::Streaming { backpressure } = spec.returns {
            self.streams.insert(
                id,
                Stream {
                    owner: conn,
                    backpressure,
                    digests: Vec::new(),
                    consumed: 0,
                    held: VecDeque::new(),
                    dropped: false,
                },
            );
        }
        self.tasks.insert(
            id,
            Task {
                spec,
                pending_deps: pending,
                worker: None,
                retries_left,
                cancelled: false,
                dynamic_digests: Vec::new(),
                attempt_items: 0,
                started: false,
                replay_error: None,
                order: 0,
            },
        );
        self.record(id, TaskState::Submitted, None, None);
        if let Some(e) = invalid.or(failed) {
            self.complete_task(id, Err(e));
        } else if pending == 0 {
            self.record(id, TaskState::PendingSchedule, None, None);
            self.enqueue(id);
            self.schedule();
        }
    }

    fn enqueue(&mut self, tid: TaskId) {
        let Some(task) = self.tasks.get_mut(&tid) else { return };
        self.next_order += 1;
        task.order = self.next_order;
        match self.ready.iter_mut().find(|(shape, _)| *shape == task.spec.resources) {
            Some((_, q)) => q.push_back(tid),
            None => self.ready.push((task.spec.resources.clone(), VecDeque::from([tid]))),
        }
    }

    /// Puts back a task taken back without running (revoked, or queued on a
    /// worker that died) at its place in its queue, by `Task::order`: tasks
    /// start in the order they were queued, whichever worker held them.
    fn requeue(&mut self, tid: TaskId) {
        let Some(task) = self.tasks.get(&tid) else { return };
        let (order, shape) = (task.order, &task.spec.resources);
        let tasks = &self.tasks;
        match self.ready.iter_mut().find(|(s, _)| s == shape) {
            Some((_, q)) => {
                let at = q.partition_point(|t| tasks.get(t).is_none_or(|t| t.order < order));
                q.insert(at, tid);
            }
            None => self.ready.push((shape.clone(), VecDeque::from([tid]))),
        }
    }

    /// Starts every ready task that has resources and a worker; asks for more
    /// workers when tasks could run but no worker is idle.
    pub fn schedule(&mut self) {
        if self.shutting_down {
            return;
        }
        let mut tentative = self.available.clone();
        let mut want_workers = 0usize;
        let mut dispatches = Vec::new();
        let mut pipelined = Vec::new();
        // Busy workers that could take a task behind the one they run.
        let mut busy: Vec<(ConnId, &ResourceSet, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.blocked && !c.doomed && (1..=PIPELINE_DEPTH).contains(&c.assigned.len()))
            .map(|(id, c)| (*id, &c.lease_shape, c.assigned.len()))
            .collect();
        for (shape, queue) in self.ready.iter_mut() {
            let mut i = 0;
            while i < queue.len() && want_workers < self.max_workers {
                if !self.tasks.contains_key(&queue[i]) {
                    queue.remove(i);
                    continue;
                }
                if !shape.fits_in(&tentative) {
                    // No room to start it: queue it behind a busy worker
                    // holding a lease of the same shape, least loaded first.
                    while i < queue.len() {
                        let Some(slot) = busy
                            .iter_mut()
                            .filter(|(_, s, n)| *s == shape && *n <= PIPELINE_DEPTH)
                            .min_by_key(|(_, _, n)| *n)
                        else {
                            break;
                        };
                        let tid = queue.remove(i).expect("index checked");
                        slot.2 += 1;
                        pipelined.push((tid, slot.0));
                    }
                    break;
                }
                tentative.subtract(shape);
                match self.idle.pop() {
                    Some(w) => {
                        let tid = queue.remove(i).expect("index checked");
                        dispatches.push((tid, w));
                    }
                    None => {
                        want_workers += 1;
                        i += 1;
                    }
                }
            }
        }
        self.ready.retain(|(_, q)| !q.is_empty());
        for (tid, w) in dispatches {
            self.assign(tid, w, true);
        }
        for (tid, w) in pipelined {
            if self.tasks.contains_key(&tid) {
                self.assign(tid, w, false);
            }
        }
        if !self.idle.is_empty() && self.ready.is_empty() {
            // A worker is free while tasks wait behind busy ones: take them
            // back so they can start now (they return through `Revoked`).
            // Only tasks that could start with what is free now (the others
            // would just queue behind a busy worker again).
            for c in self.conns.values_mut() {
                if c.assigned.len() < 2 || c.revoking {
                    continue;
                }
                let movable: Vec<TaskId> = c
                    .assigned
                    .iter()
                    .skip(1)
                    .copied()
                    .filter(|t| self.tasks.get(t).is_some_and(|t| t.spec.resources.fits_in(&self.available)))
                    .collect();
                if !movable.is_empty() {
                    c.revoking = true;
                    c.outbox.send(FromNode::Revoke { task_ids: movable });
                }
            }
        }
        let mut to_start = want_workers.saturating_sub(self.starting);
        if to_start == 0 {
            return;
        }
        // Workers in the count: all but the dying, and those whose task
        // waits in `get` (they lend their place, so nested tasks cannot
        // deadlock). A generator that blocked paused by backpressure lends
        // its CPU but keeps its place: paused generators never make more
        // than `max_workers` processes.
        let active = self
            .conns
            .values()
            .filter(|c| c.role == Some(Role::Worker) && !c.doomed && (!c.blocked || c.paused))
            .count();
        let mut room = self.max_workers.saturating_sub(active + self.starting);
        // Blocked workers lend their place in `max_workers`, but every
        // process counts here: nested blocking calls cannot start
        // processes without bound.
        let processes = self.conns.values().filter(|c| c.role == Some(Role::Worker) && !c.doomed).count();
        let below_cap = self.max_processes.saturating_sub(processes + self.starting);
        if room > below_cap {
            room = below_cap;
            if room == 0 && !self.cap_logged {
                self.cap_logged = true;
                eprintln!(
                    "ferroray node: {processes} worker processes, the limit (max_worker_processes), and tasks \
                     are waiting: they start when a worker finishes; nested blocking calls deeper than the \
                     limit wait"
                );
            }
        } else {
            self.cap_logged = false;
        }
        while to_start > 0 && room > 0 {
            if self.spawn.send(PoolCmd::Spawn).is_err() {
                break;
            }
            self.starting += 1;
            to_start -= 1;
            room -= 1;
        }
    }

    /// Sends a task to a worker: an idle one (taking a new lease on the
    /// task's resources) or a busy one, behind the task it runs.
    fn assign(&mut self, tid: TaskId, worker: ConnId, new_lease: bool) {
        let mut spec = {
            let task = self.tasks.get_mut(&tid).expect("assigning a known task");
            task.worker = Some(worker);
            task.started = true;
            task.spec.clone()
        };
        if let Some(c) = self.conns.get_mut(&worker) {
            if new_lease {
                c.lease = spec.resources.clone();
                c.lease_shape = spec.resources.clone();
                self.available.subtract(&spec.resources);
            }
            c.assigned.push_back(tid);
        }
        let mut pinned = Vec::new();
        let mut failed = None;
        // Ref arguments travel inline up to a budget; past it they stay refs
        // and the worker fetches them, so the task fits in one message.
        let mut inline_budget = ARG_INLINE_BUDGET;
        for arg in spec.args.iter_mut() {
            if let TaskArg::Value(Payload::Inline(b)) = arg {
                inline_budget = inline_budget.saturating_sub(b.len());
            }
            if let TaskArg::Ref(id) = *arg {
                let payload = match self.objects.get(&id).and_then(|o| o.value.as_ref()) {
                    Some(Stored::Inline { bytes, .. }) if bytes.len() > inline_budget => continue,
                    Some(Stored::Inline { bytes, .. }) => {
                        inline_budget -= bytes.len();
                        Ok(Payload::Inline(bytes.clone()))
                    }
                    Some(Stored::Shm { .. }) => self.pin_shm(worker, id).inspect(|_| pinned.push(id)),
                    _ => Err(Error::ObjectLost(id.to_string())),
                };
                match payload {
                    Ok(payload) => *arg = TaskArg::Object { id, payload },
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if failed.is_none() {
            // Inline arguments must fit in one message to the worker.
            // (the enum tag of `Execute` adds a few bytes to the spec's size)
            let size = ferroray_protocol::frame::encoded_size(&spec) + 16;
            if size > ferroray_protocol::MAX_FRAME as u64 {
                failed = Some(Error::InvalidOption(format!(
                    "the arguments of {} take {size} bytes inline, over the {}-byte message limit: \
                     pass large values with put() or as refs",
                    spec.name(),
                    ferroray_protocol::MAX_FRAME
                )));
            }
        }
        if let Some(e) = failed {
            for id in pinned {
                self.unpin_shm(worker, id);
            }
            self.release_worker(tid);
            return self.complete_task(tid, Err(e));
        }
        // The worker may read its ref arguments and take references to the
        // refs nested in them.
        let mut shown = spec.contained.clone();
        for arg in &spec.args {
            if let TaskArg::Ref(id) | TaskArg::Object { id, .. } = arg {
                shown.push(*id);
                if let Some(v) = self.objects.get(id).and_then(|o| o.value.as_ref()) {
                    shown.extend_from_slice(v.contained());
                }
            }
        }
        if !shown.is_empty() {
            self.grant(worker, &shown);
        }
        let (pid, first) = self.conns.get(&worker).map_or((0, false), |c| (c.pid, c.assigned.len() == 1));
        if first {
            // Queued ones are recorded as running when they reach the front.
            self.names.lock().insert(pid, spec.name().to_string());
            self.record(tid, TaskState::Running, Some(pid), None);
        }
        self.send(worker, FromNode::Execute(Box::new(spec)));
    }

    /// Takes the task off its worker. The next task queued there runs under
    /// the same lease; with none, the lease goes back and the worker is idle.
    fn release_worker(&mut self, tid: TaskId) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(w) = task.worker.take() else {
            return;
        };
        let Some(c) = self.conns.get_mut(&w) else {
            return;
        };
        let was_running = c.running() == Some(tid);
        c.assigned.retain(|t| *t != tid);
        if !was_running {
            // A queued task ended (cancelled) while another runs: the lease
            // and the blocked state belong to the running one.
            return self.free_lease_if_empty(w);
        }
        if c.blocked {
            // The blocked task is over: its lease takes back the CPU it lent
            // out (available may go below zero while a borrower still runs).
            let mut lent = c.lease_shape.clone();
            lent.subtract(&c.lease);
            self.available.subtract(&lent);
            c.lease = c.lease_shape.clone();
            c.blocked = false;
            c.paused = false;
        }
        if let Some(next) = c.running().filter(|_| !c.doomed) {
            let pid = c.pid;
            if let Some(t) = self.tasks.get(&next) {
                self.names.lock().insert(pid, t.spec.name().to_string());
            }
            self.record(next, TaskState::Running, Some(pid), None);
        }
        self.free_lease_if_empty(w);
    }

    /// A worker with nothing assigned gives its lease back and is idle.
    fn free_lease_if_empty(&mut self, w: ConnId) {
        let Some(c) = self.conns.get_mut(&w) else {
            return;
        };
        if !c.assigned.is_empty() || c.lease_shape.is_empty() && c.lease.is_empty() && self.idle.contains(&w) {
            return;
        }
        let mut lease = std::mem::take(&mut c.lease);
        if c.blocked {
            // The CPU it lent out is already in `available`.
            lease.set(resources::CPU, 0.0);
            c.blocked = false;
            c.paused = false;
        }
        c.lease_shape = ResourceSet::new();
        self.available.add(&lease);
        if !self.shutting_down && !c.doomed && !self.idle.contains(&w) {
            c.idle_since = std::time::Instant::now();
            self.idle.push(w);
        }
    }

    /// The worker gave back tasks queued behind its blocked task.
    fn revoked(&mut self, conn: ConnId, task_ids: Vec<TaskId>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.revoking = false;
        }
        for tid in task_ids.into_iter().rev() {
            let Some(task) = self.tasks.get_mut(&tid) else { continue };
            if task.worker != Some(conn) {
                continue;
            }
            task.worker = None;
            let cancelled = task.cancelled;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.assigned.retain(|t| *t != tid);
            }
            if cancelled {
                // Cancelled while it was being taken back: it never runs.
                self.complete_task(tid, Err(Error::TaskCancelled));
                continue;
            }
            self.requeue(tid);
        }
        // The worker may have finished its own task meanwhile: with nothing
        // left assigned it must not keep its lease.
        self.free_lease_if_empty(conn);
        self.schedule();
    }

    fn set_blocked(&mut self, conn: ConnId, blocked: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !blocked || c.blocked || c.running().is_none() {
            // On unblock the task goes on without taking the CPU back: a
            // brief oversubscription, as in Ray, instead of a deadlock.
            return;
        }
        c.blocked = true;
        // Paused by backpressure rather than waiting for a result?
        c.paused = c
            .running()
            .and_then(|t| self.streams.get(&t))
            .is_some_and(|s| s.held.iter().any(|(held_by, _)| *held_by == conn));
        // Lend the CPU back so that the tasks this one waits for can run.
        let cpu = ResourceSet::new().with(resources::CPU, c.lease.get(resources::CPU));
        c.lease.subtract(&cpu);
        self.available.add(&cpu);
        // Tasks queued behind it could be the very ones it waits for.
        let queued: Vec<TaskId> = c.assigned.iter().skip(1).copied().collect();
        if !queued.is_empty() {
            self.send(conn, FromNode::Revoke { task_ids: queued });
        }
        self.schedule();
    }

    fn task_done(&mut self, conn: ConnId, tid: TaskId, attempt: u32, outcome: TaskOutcome) {
        let current = self.tasks.get(&tid).is_some_and(|t| t.worker == Some(conn) && t.spec.attempt == attempt);
        if !current {
            // A stale attempt: drop whatever it stored.
            if let TaskOutcome::Returned(values) = outcome {
                for v in values {
                    if let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = v {
                        self.handle(conn, ToNode::Deallocate { offset });
                    }
                }
            }
            return;
        }
        self.release_worker(tid);
        let task = &self.tasks[&tid];
        if task.cancelled {
            self.discard_outcome(conn, outcome);
            self.complete_task(tid, Err(Error::TaskCancelled));
        } else {
            match outcome {
                TaskOutcome::Returned(values) => {
                    let ids: Vec<ObjectId> = task.spec.return_ids().collect();
                    if values.len() != ids.len() {
                        let e = Error::Protocol(format!(
                            "task {} returned {} values for {} return objects",
                            task.spec.name(),
                            values.len(),
                            ids.len()
                        ));
                        self.discard_outcome(conn, TaskOutcome::Returned(values));
                        self.complete_task(tid, Err(e));
                    } else {
                        let stored =
                            ids.iter().zip(values).map(|(id, v)| self.accept_value(conn, *id, v)).collect::<Vec<_>>();
                        self.complete_task(tid, Ok(stored));
                    }
                }
                TaskOutcome::Streamed { items } => {
                    let generated = self.reported(tid).unwrap_or(items);
                    let replay = self.tasks.get_mut(&tid).and_then(|t| t.replay_error.take());
                    if let Some(e) = replay {
                        self.complete_task(tid, Err(e));
                    } else if items < generated {
                        let name = self.tasks[&tid].spec.name().to_string();
                        self.complete_task(
                            tid,
                            Err(Error::ReplayMismatch(format!(
                                "a retry of {name} yielded {items} items, but {generated} were already reported"
                            ))),
                        );
                    } else {
                        // A streaming generator's own object holds `()` once it
                        // ends well (a dynamic one's list is made by `complete_task`).
                        let unit = Stored::Inline { bytes: Vec::new(), contained: Vec::new() };
                        self.complete_task(tid, Ok(vec![Some(unit)]));
                    }
                }
                TaskOutcome::Failed(e) => {
                    let (name, failed_at) = (task.spec.name().to_string(), task.attempt_items);
                    let replay = self.tasks.get_mut(&tid).and_then(|t| t.replay_error.take());
                    if let Some(r) = replay {
                        self.complete_task(tid, Err(r));
                    } else if !self.retry(tid, &e) {
                        // An attempt that fails at item k when an earlier one got
                        // further disagrees with what the owner already has.
                        let e = match self.reported(tid) {
                            Some(known) if failed_at < known => Error::ReplayMismatch(format!(
                                "a retry of {name} failed after {failed_at} items, but {known} were already reported: {e}"
                            )),
                            _ => e,
                        };
                        self.complete_task(tid, Err(e));
                    }
                }
            }
        }
        self.schedule();
    }

    /// One yielded item from the executor of `tid` (steps 1 to 3 above).
    fn report_item(&mut self, conn: ConnId, tid: TaskId, attempt: u32, index: u32, value: ObjectValue, digest: u64) {
        let current = self.tasks.get(&tid).is_some_and(|t| t.worker == Some(conn) && t.spec.attempt == attempt);
        if !current {
            return self.refuse_item(conn, tid, index, value);
        }
        let task = self.tasks.get_mut(&tid).expect("checked");
        // Reports of one attempt arrive in order, from 0: anything else is a
        // broken executor, and fails the task rather than guess.
        if index != task.attempt_items {
            let e = Error::Protocol(format!("item {index} reported after {} items", task.attempt_items));
            task.replay_error.get_or_insert(e);
            return self.refuse_item(conn, tid, index, value);
        }
        task.attempt_items += 1;
        if task.replay_error.is_some() || task.cancelled {
            // The task already failed, or was cancelled: nothing more reaches
            // the owner, and a paused executor is let go (`gone`).
            return self.refuse_item(conn, tid, index, value);
        }
        let dynamic = task.spec.returns == ReturnKind::Dynamic;
        let known = if dynamic {
            task.dynamic_digests.get(index as usize).copied()
        } else {
            match self.streams.get(&tid) {
                Some(stream) if !stream.dropped => stream.digests.get(index as usize).copied(),
                _ => return self.refuse_item(conn, tid, index, value),
            }
        };
        if let Some(known) = known {
            // A retry replays what an earlier attempt reported: hand nothing
            // out twice, but notice if it differs (and then stop the attempt).
            if known != digest {
                let task = self.tasks.get_mut(&tid).expect("checked");
                let name = task.spec.name().to_string();
                task.replay_error.get_or_insert(Error::ReplayMismatch(format!(
                    "a retry of {name} yielded a different value at index {index}"
                )));
                self.send(conn, FromNode::CancelRunning { task_id: tid });
            }
            return self.refuse_item(conn, tid, index, value);
        }
        let id = ObjectId { task: tid, index: index + 2 };
        if dynamic {
            // The item is pinned by its task until the final list (which
            // contains it) is stored.
            self.tasks.get_mut(&tid).expect("checked").dynamic_digests.push(digest);
            self.objects.entry(id).or_default().pins += 1;
            if let Some(stored) = self.accept_value(conn, id, value) {
                self.set_value(id, stored);
            }
            return;
        }
        let stream = self.streams.get_mut(&tid).expect("checked");
        stream.digests.push(digest);
        let owner = stream.owner;
        let backpressure = stream.backpressure;
        let unconsumed = stream.generated().saturating_sub(stream.consumed);
        self.objects.entry(id).or_default();
        self.hold(owner, id);
        let Some(stored) = self.accept_value(conn, id, value) else { return };
        self.grant(owner, stored.contained());
        let inline = match &stored {
            Stored::Inline { bytes, contained } => {
                Some(ObjectValue::Data { payload: Payload::Inline(bytes.clone()), contained: contained.clone() })
            }
            Stored::Error(e) => Some(ObjectValue::Error(e.clone())),
            Stored::Shm { .. } => None,
        };
        self.set_value(id, stored);
        self.send(owner, FromNode::StreamItem { task_id: tid, index, value: inline });
        if let Some(n) = backpressure {
            if unconsumed >= n {
                if let Some(st) = self.streams.get_mut(&tid) {
                    st.held.push_back((conn, index));
                }
            } else {
                self.send(conn, FromNode::ItemAck { task_id: tid, index, gone: false });
            }
        }
    }

    /// How many items the attempts of generator task `tid` reported between them.
    fn reported(&self, tid: TaskId) -> Option<u32> {
        let task = self.tasks.get(&tid)?;
        match task.spec.returns {
            ReturnKind::Dynamic => Some(task.dynamic_digests.len() as u32),
            ReturnKind::Streaming { .. } => self.streams.get(&tid).map(Stream::generated),
            ReturnKind::Fixed(_) => None,
        }
    }

    /// Drops a report nobody will take, and unblocks its executor.
    fn refuse_item(&mut self, conn: ConnId, tid: TaskId, index: u32, value: ObjectValue) {
        if let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = value {
            self.handle(conn, ToNode::Deallocate { offset });
        }
        let gone = self.streams.get(&tid).is_none_or(|s| s.dropped) || self.tasks.get(&tid).is_none_or(|t| t.cancelled);
        self.send(conn, FromNode::ItemAck { task_id: tid, index, gone });
    }

    /// Answers held acknowledgements while the owner is below its limit (or
    /// all of them once the stream is dropped or over).
    fn release_acks(&mut self, tid: TaskId) {
        let Some(st) = self.streams.get_mut(&tid) else { return };
        let mut out = Vec::new();
        while let Some(&(conn, index)) = st.held.front() {
            let unconsumed_then = (index + 1).saturating_sub(st.consumed);
            let limit = st.backpressure.unwrap_or(u32::MAX);
            if !st.dropped && unconsumed_then >= limit {
                break;
            }
            st.held.pop_front();
            out.push((conn, index, st.dropped));
        }
        for (conn, index, gone) in out {
            self.send(conn, FromNode::ItemAck { task_id: tid, index, gone });
        }
    }

    /// The owner dropped its generator: items it never took go, the executor
    /// is released, later reports are refused. The task itself runs on.
    fn drop_stream(&mut self, conn: ConnId, tid: TaskId, consumed: u32) {
        let Some(st) = self.streams.get_mut(&tid) else { return };
        if st.owner != conn {
            return;
        }
        st.dropped = true;
        let generated = st.generated();
        self.release_acks(tid);
        let finished = !self.tasks.contains_key(&tid);
        if finished {
            self.streams.remove(&tid);
        }
        for index in consumed..generated {
            self.unhold(conn, ObjectId { task: tid, index: index + 2 });
        }
    }

    fn discard_outcome(&mut self, conn: ConnId, outcome: TaskOutcome) {
        if let TaskOutcome::Returned(values) = outcome {
            for v in values {
                if let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = v {
                    self.handle(conn, ToNode::Deallocate { offset });
                }
            }
        }
    }

    /// Queues another attempt if the policy allows; true if it did.
    fn retry(&mut self, tid: TaskId, err: &Error) -> bool {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return false;
        };
        if task.cancelled || task.retries_left == 0 || !err.is_retryable(&task.spec.retry_exceptions) {
            return false;
        }
        if task.retries_left != u32::MAX {
            task.retries_left -= 1;
        }
        task.spec.attempt += 1;
        task.attempt_items = 0;
        self.record(tid, TaskState::Retrying, None, Some(err.to_string()));
        self.enqueue(tid);
        true
    }

    /// Ends a task for good: stores its return values (or its error in each
    /// return object) and releases its arguments.
    fn complete_task(&mut self, tid: TaskId, result: Result<Vec<Option<Stored>>>) {
        let Some(task) = self.tasks.remove(&tid) else {
            return;
        };
        self.children.remove(&tid);
        let (state, error) = match &result {
            Ok(_) => (TaskState::Finished, None),
            Err(Error::TaskCancelled) => (TaskState::Cancelled, None),
            Err(e) => (TaskState::Failed, Some(e.to_string())),
        };
        if task.spec.enable_events {
            push_event(&mut self.events, self.max_events, &task.spec, state, None, error);
        }
        // The stream's end goes out before the generator's own object is
        // ready, so whoever sees `completed()` ready also sees the end.
        if let Some(st) = self.streams.get_mut(&tid) {
            let error = result.as_ref().err().cloned();
            let (owner, items, dropped) = (st.owner, st.generated(), st.dropped);
            // Nothing will be reported any more: let a waiting executor go.
            st.dropped = true;
            self.release_acks(tid);
            if dropped {
                self.streams.remove(&tid);
            } else {
                if let Some(st) = self.streams.get_mut(&tid) {
                    st.dropped = false;
                }
                self.send(owner, FromNode::StreamEnd { task_id: tid, items, error });
            }
        }
        let result = if task.spec.returns == ReturnKind::Dynamic { self.dynamic_list(&task, result) } else { result };
        let ids: Vec<ObjectId> = task.spec.return_ids().collect();
        match result {
            Ok(values) => {
                for (id, v) in ids.into_iter().zip(values) {
                    if let Some(v) = v {
                        self.set_value(id, v);
                    }
                }
            }
            Err(e) => {
                for id in ids {
                    if self.objects.contains_key(&id) {
                        self.set_value(id, Stored::Error(e.clone()));
                    }
                }
            }
        }
        for arg in &task.spec.args {
            if let TaskArg::Ref(id) | TaskArg::Object { id, .. } = arg {
                self.unpin(*id);
            }
        }
        for c in &task.spec.contained {
            self.unpin(*c);
        }
        for index in 0..task.dynamic_digests.len() as u32 {
            self.unpin(ObjectId { task: tid, index: index + 2 });
        }
    }

    /// The value of a dynamic-returns task: the list of its item refs. A
    /// failure of a task that ran becomes one more, final item holding the
    /// error, so the items before it stay readable; a cancelled task, or one
    /// that never ran (a failed argument), holds the error in the list's place.
    fn dynamic_list(&mut self, task: &Task, result: Result<Vec<Option<Stored>>>) -> Result<Vec<Option<Stored>>> {
        let tid = task.spec.task_id;
        let n = task.dynamic_digests.len() as u32;
        let mut items: Vec<ObjectId> = (0..n).map(|i| ObjectId { task: tid, index: i + 2 }).collect();
        match result {
            Err(e) if matches!(e, Error::TaskCancelled) || !task.started => return Err(e),
            Err(e) => {
                // Pinned by the list, like the other items.
                let id = ObjectId { task: tid, index: n + 2 };
                self.objects.entry(id).or_default().value = Some(Stored::Error(e));
                items.push(id);
            }
            Ok(_) => {}
        }
        let bytes = ferroray_protocol::encode_ref_list(&items);
        Ok(vec![Some(Stored::Inline { bytes, contained: items })])
    }

    /// Cancels a task: a queued one is removed, a running one is asked to stop
    /// (or its worker killed, with `force`). `recursive` reaches the tasks it
    /// submitted.
    pub fn cancel(&mut self, tid: TaskId, force: bool, recursive: bool) {
        if recursive {
            for child in self.children.get(&tid).cloned().unwrap_or_default() {
                self.cancel(child, force, true);
            }
        }
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        task.cancelled = true;
        match task.worker {
            Some(w) => {
                let running = self.conns.get(&w).and_then(Conn::running) == Some(tid);
                // A task only queued on the worker is dropped there, never by
                // killing the worker (which runs somebody else's task).
                if force && running {
                    self.doom(w);
                } else {
                    self.send(w, FromNode::CancelRunning { task_id: tid });
                }
                // A cancelled generator reports nothing more: acknowledgements
                // held by backpressure are answered `gone` (after the cancel,
                // so the executor, let go, sees its flag first), and later
                // reports are refused (`report_item`).
                if let Some(st) = self.streams.get_mut(&tid) {
                    let held: Vec<(ConnId, u32)> = st.held.drain(..).collect();
                    for (c, index) in held {
                        self.send(c, FromNode::ItemAck { task_id: tid, index, gone: true });
                    }
                }
            }
            None => self.complete_task(tid, Err(Error::TaskCancelled)),
        }
    }

    /// The task and, with `recursive`, every descendant it has now (what a
    /// `cancel` reaches), or `None` for an unknown task.
    fn cancel_targets(&self, tid: TaskId, recursive: bool) -> Option<Vec<TaskId>> {
        self.tasks.get(&tid)?;
        let mut out = vec![tid];
        let mut i = 0;
        while recursive && i < out.len() {
            out.extend(self.children.get(&out[i]).into_iter().flatten().copied());
            i += 1;
        }
        Some(out)
    }

    /// Force-cancels the grace-period cancels whose deadline passed and
    /// whose task still runs (called by the spawner's 200 ms loop, so a
    /// grace ends up to 200 ms late). A task only queued on a worker was
    /// already dropped there by the cooperative cancel; one that ended is
    /// gone from `tasks`.
    pub fn force_overdue_cancels(&mut self) {
        if self.force_at.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let due: Vec<TaskId> = self.force_at.iter().filter(|(at, _)| *at <= now).map(|(_, t)| *t).collect();
        // Tasks that ended are forgotten before their deadline.
        let tasks = &self.tasks;
        self.force_at.retain(|(at, t)| *at > now && tasks.contains_key(t));
        for tid in due {
            let Some(w) = self.tasks.get(&tid).and_then(|t| t.worker) else { continue };
            if self.conns.get(&w).and_then(Conn::running) == Some(tid) {
                self.doom(w);
            }
        }
    }

    /// A force-cancel kills worker `w`. From now on nothing is assigned to
    /// it (it is not idle and takes no pipelined task), the tasks queued
    /// behind its running one are taken back (`Revoke`), and when it dies
    /// only a cancelled task is charged: the others go back to their queue
    /// without spending a retry (`disconnect`).
    fn doom(&mut self, w: ConnId) {
        let Some(c) = self.conns.get_mut(&w) else { return };
        let pid = c.pid;
        if !c.doomed {
            c.doomed = true;
            let queued: Vec<TaskId> = c.assigned.iter().skip(1).copied().collect();
            if !queued.is_empty() {
                c.revoking = true;
                c.outbox.send(FromNode::Revoke { task_ids: queued });
            }
            self.idle.retain(|i| *i != w);
        }
        if pid == 0 {
            return;
        }
        match self.test_kill_delay {
            None => {
                let _ = self.spawn.send(PoolCmd::Kill(pid));
            }
            Some(delay) => {
                let spawn = self.spawn.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = spawn.send(PoolCmd::Kill(pid));
                });
            }
        }
    }

    /// Forgets a connection: its references, pins and allocations go; a task
    /// it was running is retried or failed.
    pub fn disconnect(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if c.role.is_none() {
            self.awaiting_spawn.retain(|_, (w, _)| *w != conn);
        }
        self.idle.retain(|w| *w != conn);
        self.forget_outbox(c.outbox);
        for id in c.held {
            if let Some(o) = self.objects.get_mut(&id) {
                o.holders -= 1;
            }
            self.maybe_free(id);
        }
        for (id, n) in c.pins {
            for _ in 0..n {
                self.store.unpin(id);
            }
        }
        for offset in c.unsealed {
            self.store.abort(offset);
        }
        if c.role == Some(Role::Worker) {
            self.names.lock().remove(&c.pid);
        }
        let owned: Vec<TaskId> = self.streams.iter().filter(|(_, s)| s.owner == conn).map(|(t, _)| *t).collect();
        for tid in owned {
            if let Some(st) = self.streams.get_mut(&tid) {
                st.dropped = true;
            }
            self.release_acks(tid);
            if !self.tasks.contains_key(&tid) {
                self.streams.remove(&tid);
            }
        }
        let mut lease = c.lease;
        if c.blocked {
            // The CPU it lent out is already back in `available`.
            lease.set(resources::CPU, 0.0);
        }
        self.available.add(&lease);
        let running = c.assigned.front().copied();
        for tid in c.assigned {
            if running != Some(tid) {
                // Never started: back to the front of the queue, no retry spent.
                if let Some(task) = self.tasks.get_mut(&tid) {
                    task.worker = None;
                    if task.cancelled {
                        self.complete_task(tid, Err(Error::TaskCancelled));
                    } else {
                        self.requeue(tid);
                    }
                }
                continue;
            }
            if let Some(task) = self.tasks.get_mut(&tid) {
                task.worker = None;
                let name = task.spec.name().to_string();
                if task.cancelled {
                    self.complete_task(tid, Err(Error::TaskCancelled));
                } else if c.doomed {
                    // Killed for another task's force-cancel (which ended
                    // first): not this task's failure, no retry spent.
                    self.requeue(tid);
                    self.record(tid, TaskState::PendingSchedule, None, None);
                } else {
                    let err = Error::WorkerCrashed {
                        task: name.clone(),
                        detail: format!("worker pid={} exited unexpectedly ({reason})", c.pid),
                    };
                    // A retry does not wait for the exit status; the final
                    // error says how the worker died (`worker_exited`), or
                    // what is known after `CRASH_STATUS_WAIT`.
                    if !self.retry(tid, &err) {
                        match self.exits.remove(&c.pid) {
                            Some((status, _)) => self.complete_task(tid, Err(crash_error(name, c.pid, &status))),
                            None if self.worker_pids.contains_key(&c.pid) => {
                                let deadline = std::time::Instant::now() + CRASH_STATUS_WAIT;
                                self.crashed.entry(c.pid).or_insert((deadline, Vec::new())).1.push((tid, name));
                            }
                            None => self.complete_task(tid, Err(err)),
                        }
                    }
                }
            }
        }
        self.schedule();
    }

    /// The spawner started worker process `pid` and gave it `worker_id`. A
    /// hello that came first is answered now.
    pub fn spawned(&mut self, pid: u32, worker_id: WorkerId) {
        self.worker_pids.insert(pid, worker_id);
        match self.awaiting_spawn.remove(&pid) {
            Some((conn, claimed)) if claimed == worker_id => self.accept(conn, Role::Worker, worker_id),
            Some((conn, _)) => self.reject(
                conn,
                Error::PermissionDenied(format!("process {pid} claims a worker id the node did not give it")),
            ),
            None => {
                self.starting_pids.insert(pid);
            }
        }
    }

    /// Worker process `pid` exited. If it never said hello it is no longer
    /// starting; after several such deaths in a row, nothing can run, so the
    /// waiting tasks fail instead of hanging.
    pub fn worker_exited(&mut self, pid: u32, status: String) {
        self.worker_pids.remove(&pid);
        match self.crashed.remove(&pid) {
            Some((_, failed)) => {
                for (tid, name) in failed {
                    self.complete_task(tid, Err(crash_error(name, pid, &status)));
                }
            }
            // Reaped before its connection's end was seen: `disconnect` reads it.
            None if self.conns.values().any(|c| c.pid == pid) => {
                self.exits.insert(pid, (status.clone(), std::time::Instant::now()));
            }
            None => {}
        }
        if let Some((conn, _)) = self.awaiting_spawn.remove(&pid) {
            self.disconnect(conn, "the process exited");
        }
        if !self.starting_pids.remove(&pid) {
            return;
        }
        self.starting = self.starting.saturating_sub(1);
        self.early_deaths += 1;
        if self.early_deaths >= 3 {
            self.spawn_failed(format!("worker processes exit before connecting (last: pid {pid}, {status})"));
        } else {
            self.schedule();
        }
    }

    /// Completes the failures whose worker's exit status did not come in
    /// time (called by the spawner's 200 ms loop), and forgets statuses
    /// nobody asked for.
    pub fn expire_crashes(&mut self) {
        let now = std::time::Instant::now();
        self.exits.retain(|_, (_, at)| now.duration_since(*at) < CRASH_STATUS_WAIT);
        let late: Vec<u32> = self.crashed.iter().filter(|(_, (d, _))| *d <= now).map(|(p, _)| *p).collect();
        for pid in late {
            let Some((_, failed)) = self.crashed.remove(&pid) else { continue };
            for (tid, name) in failed {
                let detail = format!("worker pid={pid} exited unexpectedly (its exit status is not known)");
                self.complete_task(tid, Err(Error::WorkerCrashed { task: name, detail }));
            }
        }
    }

    /// A worker process could not be started.
    pub fn spawn_failed(&mut self, error: String) {
        self.starting = self.starting.saturating_sub(1);
        let live = self.conns.values().any(|c| c.role == Some(Role::Worker));
        if !live && self.starting == 0 {
            // Nothing can ever run: fail what waits instead of hanging.
            let waiting: Vec<TaskId> = self.ready.drain(..).flat_map(|(_, q)| q).collect();
            for t in waiting {
                self.complete_task(
                    t,
                    Err(Error::WorkerCrashed {
                        task: String::new(),
                        detail: format!("worker could not start: {error}"),
                    }),
                );
            }
        }
    }

    fn record(&mut self, tid: TaskId, state: TaskState, pid: Option<u32>, error: Option<String>) {
        let Some(task) = self.tasks.get(&tid) else {
            return;
        };
        if task.spec.enable_events {
            push_event(&mut self.events, self.max_events, &task.spec, state, pid, error);
        }
    }

    pub fn stats(&self) -> NodeStats {
        let s = self.store.stats();
        NodeStats {
            objects: self.objects.len(),
            tasks: self.tasks.len(),
            workers: self.conns.values().filter(|c| c.role == Some(Role::Worker)).count(),
            store_objects: s.objects as u64,
            store_used: s.used,
            store_spilled: s.spilled as u64,
            streams: self.streams.len(),
        }
    }

    /// Idle workers beyond the steady size exit once idle for `idle_timeout`
    /// (longest idle first): their connection is closed, and a worker exits
    /// when it reads the end of its socket. Called by the node's tick.
    pub fn exit_idle_workers(&mut self) {
        if self.shutting_down {
            return;
        }
        let now = std::time::Instant::now();
        let mut workers = self.conns.values().filter(|c| c.role == Some(Role::Worker) && !c.doomed).count();
        // `idle` is a stack: the front has been idle longest.
        let idle: Vec<ConnId> = self.idle.clone();
        for w in idle {
            if workers <= self.steady_workers {
                break;
            }
            let expired = self.conns.get(&w).is_some_and(|c| now.duration_since(c.idle_since) >= self.idle_timeout);
            if expired {
                self.disconnect(w, "idle");
                workers -= 1;
            }
        }
    }

    /// Returns the pages of freed store space to the system.
    pub fn trim_store(&mut self) {
        self.store.trim_if_quiet(std::time::Duration::from_secs(1));
    }

    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for (_, c) in std::mem::take(&mut self.conns) {
            self.forget_outbox(c.outbox);
        }
        self.idle.clear();
    }
}
