//! The node's tables and protocol handlers, behind one lock (`crate::Shared`).
//! `State::handle` takes one message from a connection and calls the part
//! that owns it:
//!
//! - [`peers`]: connections, the hello and who a peer is, what it may see,
//!   cancel or make; worker processes starting, exiting, idling out.
//! - [`objects`]: the object directory and reference counting (below).
//! - [`left`]: results left on the peer that made them: pulled when read,
//!   made again from their task when that peer is lost (its own numbered
//!   protocol, after `remote`'s).
//! - [`tasks`]: the task lifecycle: submit, complete, retry, cancel.
//! - [`scheduling`]: ready queues, leases, pipelining, blocked workers.
//! - [`streams`]: generator streams (the protocol below).
//! - [`actors`]: the actor table: placement, call order, death, restarts
//!   (its own numbered protocol).
//! - [`inspect`]: summaries of tasks, actors and objects for `ferroray
//!   list` and `timeline`.
//! - [`jobs`]: the programs connected to a node started on its own: their
//!   worker commands, and what their end takes with it.
//! - [`remote`]: other nodes that run this node's tasks (placement on
//!   them, what they may do, their loss), its own numbered protocol.
//! - [`directory`]: actor names across a cluster: claimed before a named
//!   actor is made, looked up when `get_actor` does not know a name, and
//!   proxies for the actors of other nodes (its own numbered protocol).
//!
//! The types here are shared by all of them: a connection (`Conn`), an
//! object (`Obj`, `Stored`), a task (`Task`), a stream (`Stream`).
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

use crate::local::LocalOutbox;
use crate::pool::PoolCmd;
use crate::server::SocketOutbox;
use crate::NodeConfig;
use ferroray_common::{
    resources, ActorId, ClusterToken, Error, FunctionId, ObjectId, ResourceSet, Result, TaskId, WorkerId,
};
use ferroray_protocol::{
    Encoding, FromNode, FunctionDescriptor, ObjectValue, Payload, ReturnKind, Role, TaskArg, TaskEvent, TaskOutcome,
    TaskSpec, TaskState, ToNode, WorkerKind, PROTOCOL_VERSION,
};
use ferroray_store::Store;
pub use inspect::{ActorSummary, ObjectSummary};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

mod actors;
mod directory;
mod inspect;
mod jobs;
mod left;
mod objects;
mod peers;
mod remote;
mod scheduling;
pub use directory::DIRECTORY_TIMEOUT;
pub use left::BORROW_LINK_WAIT;
#[cfg(test)]
pub(crate) use remote::{MAX_PEER_DEPTH, WAIT_WARNING_AFTER};
#[cfg(test)]
pub(crate) use scheduling::PIPELINE_DEPTH;
mod streams;
mod tasks;

pub type ConnId = u64;

/// What each worker pid runs (or ran last), for its output lines.
pub(crate) type TaskNames = Arc<parking_lot::Mutex<HashMap<u32, WorkerLabel>>>;

/// What a worker's output lines go with: the name of its task (Ray's
/// prefix), and the driver that task is for, when the job has more than
/// one (its output then goes to that driver alone).
#[derive(Clone)]
pub(crate) struct WorkerLabel {
    pub(crate) name: String,
    pub(crate) driver: Option<Outbox>,
    /// The task it runs (for a peer's link: its lines are its owner's).
    pub(crate) task: Option<TaskId>,
    /// The worker's program: lines of no known driver go to its drivers.
    pub(crate) program: ProgramId,
}

/// Where workers' output goes besides this process's own: the drivers of
/// the node's programs (`jobs`), each with its program, over the socket or
/// in-process (a peer node's link). Shared with the output forwarder, which
/// sends to them without the state lock ([`Outbox::send_now`]).
pub(crate) type OutputSinks = Arc<parking_lot::Mutex<Vec<(ProgramId, Outbox)>>>;

/// Where a connection's messages go. Both kinds only queue under the state
/// lock; they go out once it is released (see `crate::local`).
#[derive(Clone)]
pub(crate) enum Outbox {
    /// A worker's socket (`crate::server`).
    Socket(Arc<SocketOutbox>),
    /// The in-process driver.
    Local(Arc<LocalOutbox>),
}

impl Outbox {
    fn send(&self, msg: FromNode) {
        match self {
            Outbox::Socket(out) => out.send(msg),
            Outbox::Local(link) => link.send(msg),
        }
    }

    /// Sends `msg` and has it go out now, from a thread that holds neither
    /// the state lock nor a client's locks (the output forwarder).
    pub(crate) fn send_now(&self, msg: FromNode) {
        match self {
            Outbox::Socket(out) => {
                out.send(msg);
                out.flush_here();
            }
            Outbox::Local(link) => {
                link.send(msg);
                link.deliver();
            }
        }
    }

    /// Whether messages wait to go out, claimed by the caller for a local
    /// client: the thread that sees them first delivers them (or hands
    /// them to the delivery thread), and one that locks the state after it
    /// does not wake the delivery thread again for them (`local` step 2).
    fn take_pending(&self) -> bool {
        match self {
            Outbox::Socket(out) => out.has_pending(),
            Outbox::Local(link) => link.take_pending(),
        }
    }

    pub(crate) fn same(&self, other: &Outbox) -> bool {
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
    /// For a worker, the kind of process the spawner started (never what
    /// the peer says): only tasks of that kind go to it.
    kind: WorkerKind,
    /// The program whose tasks it submits and runs: a driver's from the
    /// commands it brought (`jobs`), a worker's from the pool the spawner
    /// started it for, a peer link's from its hello. Its tasks go to
    /// workers of that program only.
    program: ProgramId,
    /// For an actor's process, the actor (from the spawner's record): it
    /// takes that actor's calls only, and is never idle or revoked.
    actor: Option<ActorId>,
    /// Objects it holds references to (its 0→1 `AddRef`s).
    held: FxHashSet<ObjectId>,
    /// Objects this connection was shown without holding them: refs nested
    /// in values sent to it and ref arguments of its tasks. It may take a
    /// reference (`AddRef`) or read (`Subscribe`) only what it holds, owns,
    /// or was shown.
    granted: FxHashSet<ObjectId>,
    /// Store pins handed to this connection (shared-memory bytes it reads
    /// stay in place), by object.
    store_pins: FxHashMap<ObjectId, u32>,
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
    /// Tasks a `Revoke` on its way asks back (empty: none on its way; do
    /// not send another until the answer). While they are out, later tasks
    /// of their queues wait, so none starts before them (`schedule`).
    revoking: Vec<TaskId>,
    /// Exported functions whose bytes were sent to this worker (in an
    /// `Execute`): later calls of them go without.
    functions_sent: FxHashSet<FunctionId>,
    /// A force-cancel sent this worker's kill: it takes no task any more,
    /// and its death is charged to the cancelled task only (`disconnect`).
    doomed: bool,
    /// Since when it is in `State::idle` (for `exit_idle_workers`).
    idle_since: std::time::Instant,
    /// It ran a task (went idle after a lease): beyond the steady size it
    /// goes after `idle_timeout`; a worker that never ran one (a spare)
    /// after `unused_timeout`.
    used: bool,
    /// For a peer node (`Role::Peer`): what it has and what this node sent
    /// it (`remote`). It runs every task in `assigned` at once.
    remote: Option<Box<remote::Remote>>,
    /// The other end is a peer node's link (`Node::connect_program`): the
    /// tasks it submits were placed here by their owner and stay here
    /// (`remote` step 1).
    from_peer: bool,
}

impl Conn {
    fn running(&self) -> Option<TaskId> {
        self.assigned.front().copied()
    }

    /// A worker's pool.
    fn pool(&self) -> Pool {
        Pool { kind: self.kind, program: self.program }
    }
}

/// A program a node runs workers for ([`jobs`]): the node's own commands
/// (`NodeConfig::worker_commands`, program 0, for an embedded node's
/// driver), or those a connected driver brought. Numbers are never reused
/// over the node's life, so a link or a worker of a program that ended
/// never passes for one of the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(pub u32);

impl std::fmt::Display for ProgramId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "program {}", self.0)
    }
}

/// Workers of one kind started for one program: a worker runs the functions
/// of the program it was started from, so each pool's workers take only its
/// tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pool {
    pub kind: WorkerKind,
    pub program: ProgramId,
}

impl Pool {
    /// A pool of the node's own program.
    pub fn own(kind: WorkerKind) -> Self {
        Pool { kind, program: ProgramId(0) }
    }
}

/// One `T` per pool: the pool's tables are kept per pool (a pool never
/// named reads as `T::default()`).
#[derive(Default)]
pub(crate) struct PerPool<T> {
    items: Vec<(Pool, T)>,
    empty: T,
}

impl<T> std::ops::Index<Pool> for PerPool<T> {
    type Output = T;
    fn index(&self, pool: Pool) -> &T {
        self.items.iter().find(|(p, _)| *p == pool).map_or(&self.empty, |(_, t)| t)
    }
}

impl<T: Default> std::ops::IndexMut<Pool> for PerPool<T> {
    fn index_mut(&mut self, pool: Pool) -> &mut T {
        let at = match self.items.iter().position(|(p, _)| *p == pool) {
            Some(i) => i,
            None => {
                self.items.push((pool, T::default()));
                self.items.len() - 1
            }
        };
        &mut self.items[at].1
    }
}

impl<T> PerPool<T> {
    /// The pools named so far, with their values.
    fn iter(&self) -> impl Iterator<Item = &(Pool, T)> {
        self.items.iter()
    }

    /// Forgets the pools of `program` (it ended).
    fn forget(&mut self, program: ProgramId) {
        self.items.retain(|(p, _)| p.program != program);
    }
}

impl PerPool<usize> {
    fn total(&self) -> usize {
        self.items.iter().map(|(_, n)| n).sum()
    }
}

impl PerPool<Vec<ConnId>> {
    fn contains(&self, w: ConnId) -> bool {
        self.items.iter().any(|(_, v)| v.contains(&w))
    }

    fn remove(&mut self, w: ConnId) {
        self.items.iter_mut().for_each(|(_, v)| v.retain(|i| *i != w));
    }

    fn is_empty(&self) -> bool {
        self.items.iter().all(|(_, v)| v.is_empty())
    }

    fn clear(&mut self) {
        self.items.iter_mut().for_each(|(_, v)| v.clear());
    }
}

/// A stored value as the node keeps it. Shared-memory objects keep no
/// offset here: the store knows it, and it can change across a spill.
enum Stored {
    Inline { bytes: Vec<u8>, encoding: Encoding, contained: Vec<ObjectId> },
    Shm { encoding: Encoding, contained: Vec<ObjectId> },
    Error(Error),
}

impl Stored {
    fn contained(&self) -> &[ObjectId] {
        match self {
            Stored::Inline { contained, .. } | Stored::Shm { contained, .. } => contained,
            Stored::Error(_) => &[],
        }
    }
}

#[derive(Default)]
struct Obj {
    value: Option<Stored>,
    /// Connections holding it (each once, see `Conn::held`).
    holders: u32,
    /// Liveness pins: tasks taking it as an argument, values it is nested
    /// in. (Not store pins: those keep shared-memory bytes in place.)
    liveness_pins: u32,
    subscribers: Vec<ConnId>,
    waiting: Vec<TaskId>,
    /// Connections it was shown to (their `Conn::granted`), cleared when
    /// it is freed.
    granted_to: Vec<ConnId>,
    /// Its bytes are on a peer that made it, not here (`left` step 8):
    /// `value` stays `None` until they are pulled.
    left: Option<left::Left>,
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
    /// What its events share (each event points to it).
    events: Arc<EventTask>,
    /// Sent here by another node's owner over a peer link: it runs here,
    /// never on this node's peers (`remote` step 1).
    from_peer: bool,
    /// The workers it runs on: its function's kind, its submitter's program.
    pool: Pool,
    /// It did not wait for its arguments left on peers (`left` step 14):
    /// it runs on a peer, which reads them where they are, or waits for
    /// them here before it runs here.
    left_args: bool,
    /// The peer that keeps all of those arguments (`left` step 13): it
    /// runs there if that peer has room.
    at_peer: Option<ConnId>,
    /// Arguments it was sent to a peer with that another peer keeps (by
    /// that peer's connection), until it ends there (`left` step 14).
    borrowed: Vec<(ObjectId, ConnId)>,
    /// Run again for results lost with a peer after it ended (`left` step
    /// 12): a generator's digests of the items it reported then, against
    /// which it replays (its stream is its consumer's, not touched again).
    remaking: Option<Vec<u64>>,
}

impl Task {
    /// A task entering the table, waiting for `pending_deps` arguments.
    fn new(spec: TaskSpec, pending_deps: usize, retries_left: u32) -> Self {
        Task {
            events: Arc::new(EventTask { task_id: spec.task_id, name: spec.name().into(), actor_id: spec.actor_id() }),
            spec,
            pending_deps,
            worker: None,
            retries_left,
            cancelled: false,
            dynamic_digests: Vec::new(),
            attempt_items: 0,
            started: false,
            replay_error: None,
            order: 0,
            from_peer: false,
            pool: Pool::own(WorkerKind::Rust),
            left_args: false,
            at_peer: None,
            borrowed: Vec::new(),
            remaking: None,
        }
    }
}

/// A generator task's stream, kept for its owner.
struct Stream {
    owner: ConnId,
    backpressure: Option<u32>,
    /// Fingerprint of each item reported so far (its length is the number of items).
    digests: Vec<u64>,
    consumed: u32,
    /// Acknowledgements held back by backpressure: (executor, index).
    held_acks: VecDeque<(ConnId, u32)>,
    /// The owner dropped the stream.
    dropped: bool,
    /// Passed on by its owner and not claimed yet: the items it has not
    /// consumed are pinned for the claimer and nothing is sent to anyone.
    in_transit: bool,
    /// The task's end (items, error) once it came: sent again to a claimer.
    end: Option<(u32, Option<Error>)>,
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
    /// Exported functions of other languages' fronts the node keeps.
    pub functions: usize,
    /// What the node offers, and what of it no worker holds (the cluster's
    /// resource view is made of these).
    pub total: ResourceSet,
    pub available: ResourceSet,
}

pub struct State {
    conns: FxHashMap<ConnId, Conn>,
    next_conn: ConnId,
    objects: FxHashMap<ObjectId, Obj>,
    tasks: FxHashMap<TaskId, Task>,
    streams: FxHashMap<TaskId, Stream>,
    children: FxHashMap<TaskId, Vec<TaskId>>,
    /// Tasks whose arguments are ready, one FIFO per pool and resource
    /// shape (so a scheduling pass looks at the head of each
    /// queue, not at every task). Entries of tasks that ended meanwhile are
    /// skipped when reached.
    ready: Vec<((Pool, ResourceSet), VecDeque<TaskId>)>,
    /// Workers with nothing assigned, a stack per pool (the last to go idle
    /// is reused first, so the ones idle longest can time out).
    idle: PerPool<Vec<ConnId>>,
    /// Spawns asked for whose process has not said hello, per pool.
    starting: PerPool<usize>,
    /// The pools this node has a command for: its own program's and its
    /// connected programs'.
    pools: Vec<Pool>,
    /// The kinds of `NodeConfig::worker_commands` (program 0, for the
    /// node's life).
    own_kinds: Vec<WorkerKind>,
    /// The programs of the connected drivers that brought worker commands
    /// ([`jobs`]).
    job: jobs::Job,
    total: ResourceSet,
    available: ResourceSet,
    store: Store<ObjectId>,
    events: VecDeque<Event>,
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
    /// gave it, its kind and the actor it was started for: the only
    /// processes accepted as workers.
    worker_pids: FxHashMap<u32, (WorkerId, Pool, Option<ActorId>)>,
    /// Worker hellos that arrived before the spawner registered their pid
    /// (it registers right after the fork returns): pid -> (conn, claimed id).
    awaiting_spawn: FxHashMap<u32, (ConnId, WorkerId)>,
    /// The secret every hello must carry.
    token: ClusterToken,
    /// Workers that died before saying hello, since the last one of their
    /// pool that did.
    early_deaths: PerPool<u32>,
    spawn: std::sync::mpsc::Sender<PoolCmd>,
    pub(crate) names: TaskNames,
    pub(crate) output: OutputSinks,
    info: ferroray_protocol::NodeInfo,
    shutting_down: bool,
    /// Messages are being handled as one batch (`handle_all`): a
    /// `schedule` waits for its end, and runs once for all of them.
    batching: bool,
    /// A `schedule` was asked for during the batch.
    schedule_due: bool,
    /// Tests: the time peers' paces are read and kept at, when set, so that
    /// a slow test run does not change where tasks go (`remote::Pace`).
    #[cfg(test)]
    pub(crate) pace_clock: Option<std::time::Instant>,
    /// Every connection's outbox, and those of local connections that went
    /// away with messages (their `closed`) still to deliver.
    outboxes: Vec<Outbox>,
    closed_links: Vec<Outbox>,
    test_kill_delay: Option<std::time::Duration>,
    /// Workers of each kind kept when idle (the CPU count, at least 1); idle ones beyond
    /// it exit after `idle_timeout`, or `unused_timeout` if they never ran a task.
    steady_workers: usize,
    idle_timeout: std::time::Duration,
    unused_timeout: std::time::Duration,
    /// How long the store must be quiet before its freed pages go back
    /// (`NodeConfig::store_trim_after`).
    store_trim_after: std::time::Duration,
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
    /// Every actor not yet forgotten (dead ones stay while a handle can
    /// still call them, so those calls fail at once).
    actors: FxHashMap<ActorId, actors::Actor>,
    /// Live actors by name.
    actor_names: FxHashMap<String, ActorId>,
    /// Names across the cluster: the daemon's directory and the requests
    /// in flight to it (`directory`).
    directory: directory::Directory,
    /// Actors waiting for their resources, in creation order.
    unplaced: VecDeque<ActorId>,
    /// Actor processes asked for that the spawner has not registered yet
    /// (their hello may come first, and must wait, as for the pool's).
    actor_spawns: usize,
    /// Functions and classes of another language's front, exported once
    /// (`ExportFunction`) and named by calls; a worker gets a function's
    /// bytes with its first call of it (`Conn::functions_sent`).
    functions: FxHashMap<FunctionId, Arc<Vec<u8>>>,
    /// Bytes in `functions`, bounded by `MAX_FUNCTION_TABLE`.
    function_bytes: usize,
    /// Functions the cluster's function table keeps (`tasks`, the function
    /// table): calls of them go to peers without their bytes.
    published: FxHashSet<FunctionId>,
    /// The daemon has lost its head (the function table, step 5): published
    /// functions go with their bytes meanwhile.
    head_away: bool,
    /// What runs again a task whose results are left on a peer (`left`
    /// step 11), by task.
    lineage: FxHashMap<TaskId, left::Lineage>,
    /// How many results and items of each task are left on peers (`left`
    /// step 11: the last one pulled or freed drops the lineage).
    left_count: FxHashMap<TaskId, u32>,
    /// Results and items lost with a peer, by the task making them again,
    /// and the node they were lost with (`left` step 12).
    lost: FxHashMap<TaskId, Vec<(ObjectId, ferroray_common::NodeId)>>,
    /// Objects pulled here or freed while tasks sent to other peers read
    /// them from the peer keeping them: that peer's connection and how
    /// many such tasks, whose end sends the `Forget` (`left` step 14).
    lent_out: FxHashMap<ObjectId, (ConnId, u32)>,
    /// Objects borrowed from nodes this node has no link to yet, for a
    /// peer's link (`left` step 15): left on the link once it is attached.
    unlinked: Vec<left::Unlinked>,
    /// Connections waiting for objects to be made (`ToNode::Locate`), by
    /// object: told with `FromNode::Made`, nothing read or pulled.
    locating: FxHashMap<ObjectId, Vec<ConnId>>,
    /// Part of a cluster (`Node::enable_peers`): a task no node has the
    /// resources for yet waits for one to join rather than fail.
    peers_enabled: bool,
    /// Tasks that no node could run when they were scheduled, and since
    /// when (`remote` step 1): warned about once they have waited
    /// `WAIT_WARNING_AFTER` (a node's view of its peers lags the head's by
    /// up to a heartbeat, so a task sent right after a node joined would
    /// be warned about for nothing).
    waiting_since: FxHashMap<TaskId, std::time::Instant>,
    /// Tasks already warned about waiting for such a node (`remote`).
    warned_waiting: FxHashSet<TaskId>,
}

/// The bytes of exported functions a node keeps: a peer that exports more
/// gets `UnknownFunction` for calls of the ones over the bound.
pub const MAX_FUNCTION_TABLE: usize = 256 << 20;

/// How long a task failed by its worker's death waits for the worker's exit
/// status (the spawner reaps every 200 ms, usually after the connection's
/// end is seen) before its error is completed without it.
/// How often the node looks whether its store has been quiet for
/// `NodeConfig::store_trim_after` (a quarter second by default: a stream of
/// objects keeps its pages, an idle embedded node gives them back at once;
/// a second held hundreds of MB of freed pages in every process that had
/// touched them, after a burst of large values).
pub const STORE_QUIET: std::time::Duration = std::time::Duration::from_millis(250);

pub const CRASH_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What all events of one task share, made once per task.
struct EventTask {
    task_id: TaskId,
    /// The function's short name.
    name: Box<str>,
    actor_id: Option<ActorId>,
}

/// A task event as the node keeps it (a [`TaskEvent`] is made only when
/// someone lists them): 32 bytes, what its task's events share behind one
/// pointer and the rare error behind another. The ring holds up to
/// `max_task_events` of them: 100,000 take 3.2 MB, plus the tasks' shared
/// parts.
struct Event {
    task: Arc<EventTask>,
    /// The time in microseconds since the Unix epoch above the low 8 bits,
    /// the state's index (`TaskState::ALL`) in them: one word for both (56 bits of
    /// microseconds last two thousand years).
    stamp: u64,
    /// Boxed for a thin pointer (8 bytes, against 16 for a `Box<str>`): the
    /// rare error pays one more allocation, every event is smaller.
    #[allow(clippy::box_collection)]
    error: Option<Box<String>>,
    attempt: u32,
    worker_pid: Option<std::num::NonZeroU32>,
}

const _: () = assert!(std::mem::size_of::<Event>() <= 32);

impl Event {
    fn stamp(time_us: u64, state: TaskState) -> u64 {
        // A fieldless enum's value is its index in `TaskState::ALL`
        // (declaration order; `event_tests` checks it).
        (time_us << 8) | state as u64
    }

    fn state(&self) -> TaskState {
        TaskState::ALL[(self.stamp & 0xff) as usize]
    }

    fn to_task_event(&self) -> TaskEvent {
        TaskEvent {
            task_id: self.task.task_id,
            name: self.task.name.to_string(),
            state: self.state(),
            attempt: self.attempt,
            time_us: self.stamp >> 8,
            worker_pid: self.worker_pid.map(std::num::NonZeroU32::get),
            error: self.error.as_deref().cloned(),
            actor_id: self.task.actor_id,
        }
    }
}

fn push_event(
    events: &mut VecDeque<Event>,
    max: usize,
    task: &Task,
    state: TaskState,
    worker_pid: Option<u32>,
    error: Option<String>,
) {
    if events.len() >= max {
        events.pop_front();
    } else if events.len() == events.capacity() {
        // Doubling, but never past `max`: as the full ring turns, every
        // slot of it becomes resident.
        events.reserve_exact(events.len().max(64).min(max - events.len()));
    }
    events.push_back(Event {
        task: task.events.clone(),
        stamp: Event::stamp(now_us(), state),
        attempt: task.spec.attempt,
        worker_pid: worker_pid.and_then(std::num::NonZeroU32::new),
        error: error.map(Box::new),
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
            idle: PerPool::default(),
            starting: PerPool::default(),
            pools: config.worker_commands.keys().map(|k| Pool::own(*k)).collect(),
            own_kinds: config.worker_commands.keys().copied().collect(),
            job: jobs::Job::default(),
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
            early_deaths: PerPool::default(),
            spawn,
            names: TaskNames::default(),
            output: OutputSinks::default(),
            info,
            shutting_down: false,
            batching: false,
            schedule_due: false,
            #[cfg(test)]
            pace_clock: None,
            outboxes: Vec::new(),
            closed_links: Vec::new(),
            test_kill_delay: config.test_kill_delay,
            steady_workers: (config.resources.get(resources::CPU).ceil() as usize).max(1),
            idle_timeout: config.idle_worker_timeout,
            unused_timeout: config.unused_worker_timeout,
            store_trim_after: config.store_trim_after,
            next_order: 0,
            crashed: FxHashMap::default(),
            force_at: Vec::new(),
            exits: FxHashMap::default(),
            actors: FxHashMap::default(),
            actor_names: FxHashMap::default(),
            directory: directory::Directory::default(),
            unplaced: VecDeque::new(),
            actor_spawns: 0,
            functions: FxHashMap::default(),
            published: FxHashSet::default(),
            head_away: false,
            lineage: FxHashMap::default(),
            left_count: FxHashMap::default(),
            lost: FxHashMap::default(),
            lent_out: FxHashMap::default(),
            unlinked: Vec::new(),
            locating: FxHashMap::default(),
            function_bytes: 0,
            peers_enabled: false,
            waiting_since: FxHashMap::default(),
            warned_waiting: FxHashSet::default(),
        }
    }

    /// Handles `msgs` from `conn` in order, as one batch: placement runs
    /// once at the end rather than after each (a batch of ten `TaskDone`s
    /// is one pass over the queues, not ten). Nothing outside sees the
    /// state between them (the caller holds the node's lock throughout),
    /// so the order is the one `handle` would give with the passes late.
    /// Stops at a message that ends the connection. Batches do not nest; a
    /// batch cut short by a panic leaves `batching` set, which the next
    /// batch sets right (its deferred pass runs at its end).
    pub fn handle_all(&mut self, conn: ConnId, msgs: impl IntoIterator<Item = ToNode>) {
        self.batching = true;
        for msg in msgs {
            self.handle(conn, msg);
            if !self.is_connected(conn) {
                break;
            }
        }
        self.batching = false;
        if std::mem::take(&mut self.schedule_due) {
            self.schedule();
        }
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
                    if self.refuse_unreadable(conn, id) {
                        continue;
                    }
                    match self.objects.get_mut(&id) {
                        None => {}
                        Some(o) if o.value.is_none() => {
                            o.subscribers.push(conn);
                            self.pull(id);
                        }
                        Some(_) => self.send_ready(conn, id),
                    }
                }
            }
            ToNode::Locate(ids) => self.locate(conn, ids),
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
                    if st.owner == conn && !st.in_transit {
                        st.consumed = st.consumed.max(consumed);
                        self.release_acks(task_id);
                    }
                }
            }
            ToNode::StreamDrop { task_id, consumed } => self.drop_stream(conn, task_id, consumed),
            ToNode::StreamHandOff { task_id, consumed } => self.hand_off_stream(conn, task_id, consumed),
            ToNode::StreamClaim { req, task_id, from } => {
                let result = self.claim_stream(conn, task_id, from);
                self.send(conn, FromNode::StreamClaimed { req, result });
            }
            ToNode::CreateActor { req, spec } => self.create_actor(conn, req, *spec),
            ToNode::GetActor { req, name } => self.get_actor(conn, req, &name),
            ToNode::ExportFunction { function, pickled } => self.export_function(conn, function, pickled),
            ToNode::WorkerCommands(commands) => self.worker_commands(conn, commands),
            ToNode::Import { id, value } => self.import(conn, id, value),
            ToNode::Borrow { id, node, len, encoding } => self.borrow(conn, id, node, len, encoding),
            ToNode::KillActor { actor, no_restart } => {
                // A peer node's link may end a named actor of this node's
                // (its caller found it by name: `directory` step 3).
                let by_name = self.conns.get(&conn).is_some_and(|c| c.from_peer)
                    && self.actors.get(&actor).is_some_and(|a| a.name().is_some() && a.reached.is_none());
                if by_name || self.may_see(conn, actor.handle_object(), false) {
                    self.kill_actor(actor, no_restart);
                }
            }
            ToNode::TerminateActor { actor } => {
                if self.conns.get(&conn).is_some_and(|c| c.actor == Some(actor)) {
                    // From the actor's own process: `exit_actor`, now.
                    self.exit_actor(actor);
                } else if self.may_see(conn, actor.handle_object(), false) {
                    self.terminate_actor(actor);
                }
            }
            ToNode::ListTasks { req } => {
                let events = self.task_events();
                self.send(conn, FromNode::Tasks { req, events });
            }
        }
    }

    fn record(&mut self, tid: TaskId, state: TaskState, pid: Option<u32>, error: Option<String>) {
        let Some(task) = self.tasks.get(&tid) else {
            return;
        };
        if task.spec.enable_events {
            push_event(&mut self.events, self.max_events, task, state, pid, error);
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
            functions: self.functions.len(),
            total: self.total.clone(),
            available: self.available.clone(),
        }
    }

    /// Returns the pages of freed store space to the system.
    pub fn trim_store(&mut self) {
        self.store.trim_if_quiet(self.store_trim_after);
    }

    /// Shrinks the tables a burst left far larger than what they hold
    /// (a hash table never shrinks by itself: 5,000 tasks in flight left
    /// 3.5 MB of empty task table). True if one was shrunk, so that the
    /// freed memory can go back to the system. Called by the node's tick.
    pub fn shrink_tables(&mut self) -> bool {
        fn shrink<K: std::hash::Hash + Eq, V>(map: &mut FxHashMap<K, V>) -> bool {
            let oversized = map.capacity() > 4 * map.len() + 1024;
            if oversized {
                map.shrink_to(2 * map.len());
            }
            oversized
        }
        // Not `||`: each table is looked at.
        shrink(&mut self.tasks) | shrink(&mut self.objects) | shrink(&mut self.streams) | shrink(&mut self.children)
    }

    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for (_, c) in std::mem::take(&mut self.conns) {
            self.forget_outbox(c.outbox);
        }
        self.idle.clear();
    }
}

#[cfg(test)]
mod event_tests {
    use super::Event;
    use ferroray_protocol::TaskState;

    #[test]
    fn a_stamp_keeps_every_state_and_the_time() {
        for state in TaskState::ALL {
            // Naming every state: a new one fails to compile here until it
            // is in `TaskState::ALL`.
            match state {
                TaskState::Submitted
                | TaskState::PendingSchedule
                | TaskState::Running
                | TaskState::Finished
                | TaskState::Failed
                | TaskState::Retrying
                | TaskState::Cancelled => {}
            }
            assert_eq!(TaskState::ALL[state as usize], state, "ALL is in declaration order");
            let time_us = 1_764_000_000_000_123;
            let stamp = Event::stamp(time_us, state);
            assert_eq!(TaskState::ALL[(stamp & 0xff) as usize], state);
            assert_eq!(stamp >> 8, time_us);
        }
    }
}
