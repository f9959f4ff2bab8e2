//! Messages: the Rust types the node and the core worker match on. They
//! travel as the protobuf messages of [`crate::wire`], which converts them.

use ferroray_common::{
    ActorId, ClusterToken, Error, FunctionId, NodeId, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId,
};
use serde::{Deserialize, Serialize};

/// Which function a task runs. A Rust function is named by its registered
/// path. A Python function or class is exported once
/// ([`ToNode::ExportFunction`]) and named by `function`; its `pickled`
/// bytes are empty in calls, and the node puts them in the first
/// `Execute` of that function it sends each worker (which keeps them). An
/// actor's method has no `function`: `qualname` names it on the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FunctionDescriptor {
    Rust { name: String },
    Python { module: String, qualname: String, function: Option<FunctionId>, pickled: Vec<u8> },
}

/// The kind of worker process that runs a function: the node keeps one
/// pool of processes per kind, each started by its own command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkerKind {
    /// The driver's executable, started again in worker mode.
    Rust,
    /// A Python interpreter running the Python worker.
    Python,
}

impl WorkerKind {
    pub const ALL: [WorkerKind; 2] = [WorkerKind::Rust, WorkerKind::Python];

    /// The kind's name in a worker's environment.
    pub const fn env_name(self) -> &'static str {
        match self {
            WorkerKind::Rust => "rust",
            WorkerKind::Python => "python",
        }
    }

    /// Position in [`ALL`](Self::ALL), for tables indexed by kind.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl FunctionDescriptor {
    /// The kind of worker that runs this function.
    pub fn worker_kind(&self) -> WorkerKind {
        match self {
            FunctionDescriptor::Rust { .. } => WorkerKind::Rust,
            FunctionDescriptor::Python { .. } => WorkerKind::Python,
        }
    }

    /// The short name used in logs and task listings (`add`, not `crate::m::add`).
    pub fn display_name(&self) -> &str {
        match self {
            FunctionDescriptor::Rust { name } => name.rsplit("::").next().unwrap_or(name),
            FunctionDescriptor::Python { qualname, .. } => qualname,
        }
    }
}

/// Where an object's bytes are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Small values travel in the message itself.
    Inline(Vec<u8>),
    /// Large values live in the node's shared-memory arena.
    Shm { offset: u64, len: u64 },
}

impl Payload {
    /// The offset of a `Shm` payload a peer node's link sends for a result
    /// it left in its own node's store (pulled from there when read, the
    /// cluster's `remote` step 8). No arena has an allocation there; only a
    /// peer's connection may send it (the node takes it from no other).
    pub const LEFT_ON_PEER: u64 = u64::MAX - 1;

    /// A result of `len` bytes left on the peer that sends this.
    pub fn left_on_peer(len: u64) -> Payload {
        Payload::Shm { offset: Payload::LEFT_ON_PEER, len }
    }

    /// Whether this is a result left on the peer that sent it.
    pub fn is_left_on_peer(&self) -> bool {
        matches!(self, Payload::Shm { offset: Payload::LEFT_ON_PEER, .. })
    }

    /// The offset of a `Shm` payload in a task's argument on its way to a
    /// peer for an object left on another peer (`left` step 14): the task
    /// reads it from there. No arena has an allocation there; the node
    /// sends it only to a peer's link, with [`FromNode::Elsewhere`] naming
    /// the node that keeps it.
    pub const LEFT_ELSEWHERE: u64 = u64::MAX - 2;

    /// An object of `len` bytes left on another peer than the one a task
    /// naming it goes to.
    pub fn left_elsewhere(len: u64) -> Payload {
        Payload::Shm { offset: Payload::LEFT_ELSEWHERE, len }
    }

    /// Whether this names an object left on another peer.
    pub fn is_left_elsewhere(&self) -> bool {
        matches!(self, Payload::Shm { offset: Payload::LEFT_ELSEWHERE, .. })
    }

    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::Shm { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a value's bytes are to be read. The node never encodes or decodes a
/// value: it stores bytes with their encoding, and only makes the two
/// values that have no bytes ([`Encoding::Unit`], [`Encoding::RefList`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// A Rust value in the core's value format (serde), written by a Rust
    /// core worker.
    Rust,
    /// No bytes and no value: a streaming generator's completion object
    /// once it ends well. Read as `()`.
    Unit,
    /// No bytes: the value is the list of refs in `contained`, in order. A
    /// dynamic-returns task's result, made by the node; read as
    /// `Vec<ObjectRef<T>>`.
    RefList,
    /// Bytes a front that encodes values itself put as they are (the core's
    /// raw put); read back as bytes.
    Raw,
}

/// A stored object: a value (and the refs nested in it), or the error that
/// took the value's place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ObjectValue {
    /// `contained`: the refs nested in the value, which the node keeps
    /// alive while the value lives (for [`Encoding::RefList`], the value).
    Data {
        payload: Payload,
        encoding: Encoding,
        contained: Vec<ObjectId>,
    },
    Error(Error),
}

impl ObjectValue {
    /// A fingerprint of the value, to tell whether a retried generator
    /// yielded the same thing (`ToNode::ReportItem::digest`), the same
    /// whichever process or node computes it. A shared-memory value is
    /// sampled rather than read whole: its length, and `sample`'s first and
    /// last [`DIGEST_SAMPLE`] bytes (or fewer, for a shorter value), which
    /// the caller reads from its store.
    pub fn digest(&self, sample: Option<(&[u8], &[u8])>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            ObjectValue::Data { payload: Payload::Inline(b), .. } => b.hash(&mut h),
            ObjectValue::Data { payload: Payload::Shm { len, .. }, .. } => {
                len.hash(&mut h);
                if let Some((head, tail)) = sample {
                    head.hash(&mut h);
                    tail.hash(&mut h);
                }
            }
            ObjectValue::Error(e) => e.to_string().hash(&mut h),
        }
        h.finish()
    }
}

/// Bytes sampled at each end of a shared-memory value for its digest.
pub const DIGEST_SAMPLE: u64 = 4096;

/// One argument of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskArg {
    /// A value given by the caller.
    Value { payload: Payload, encoding: Encoding },
    /// An object ref: the node waits for it and replaces it with
    /// [`TaskArg::Object`] before the task is sent to a worker.
    Ref(ObjectId),
    /// A resolved ref: the object's value (a shared-memory payload is pinned
    /// for the worker; it sends [`ToNode::Unpin`] with `id` when done). A
    /// [`Encoding::RefList`] object is never resolved this way: it stays a
    /// `Ref`, which the worker fetches with its `contained`.
    Object { id: ObjectId, payload: Payload, encoding: Encoding },
}

/// What a task hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReturnKind {
    /// `n` ordinary return objects.
    Fixed(u32),
    /// A streaming generator: index 1 is the completion object, items from 2.
    /// `backpressure`: at most this many unconsumed items (`None`: unbounded).
    Streaming { backpressure: Option<u32> },
    /// One object that resolves, at the end, to the list of item refs.
    Dynamic,
}

impl ReturnKind {
    /// How many return objects exist from submission on.
    pub fn static_count(&self) -> u32 {
        match self {
            ReturnKind::Fixed(n) => *n,
            ReturnKind::Streaming { .. } | ReturnKind::Dynamic => 1,
        }
    }
}

/// How an actor's process runs its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorExecutor {
    /// One call at a time, on one thread.
    Serial,
    /// Up to `max_concurrency` calls at once on a pool of threads: `&self`
    /// methods together, a `&mut self` method alone.
    Threaded,
    /// Calls interleave at `.await` on one async runtime, up to
    /// `max_concurrency` at once.
    Async,
}

/// An actor's creation options: kept by the node for its life (a restart
/// runs the creation task again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorSpec {
    /// The type's registered name (for `get_actor`'s type check and logs).
    pub class: String,
    /// Found by `get_actor(name)`; unique among live actors.
    pub name: Option<String>,
    /// Lives until killed, not until its last handle is dropped.
    pub detached: bool,
    /// Times the process is started again after it dies; `u32::MAX`: forever.
    pub max_restarts: u32,
    /// Times a call is run again after the process died under it;
    /// `u32::MAX`: forever.
    pub max_task_retries: u32,
    pub max_concurrency: u32,
    pub executor: ActorExecutor,
    /// What the front that made the actor keeps with it, given back by
    /// `get_actor` (Python: the class's method table); opaque here.
    pub front: Vec<u8>,
}

/// What an actor task is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActorTask {
    /// Runs the constructor on a process of the actor's own; the task's id
    /// is the actor's id, its return object the actor's handle object.
    Create(Box<ActorSpec>),
    /// A method call on actor `actor`.
    Call { actor: ActorId },
}

/// Everything the node needs to schedule a task and a worker needs to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub function: FunctionDescriptor,
    pub args: Vec<TaskArg>,
    /// Refs nested inside argument values: kept alive while the task may run.
    pub contained: Vec<ObjectId>,
    pub returns: ReturnKind,
    pub resources: ResourceSet,
    /// Retries after a system failure; `u32::MAX` means forever.
    pub max_retries: u32,
    pub retry_exceptions: RetryExceptions,
    /// The task that submitted this one, for recursive cancellation.
    pub parent: Option<TaskId>,
    pub enable_events: bool,
    /// 0 for the first attempt; set by the node.
    pub attempt: u32,
    /// An actor's creation or method call; `None` for a task.
    pub actor: Option<ActorTask>,
}

impl TaskSpec {
    pub fn name(&self) -> &str {
        self.function.display_name()
    }

    /// The actor this task creates or calls.
    pub fn actor_id(&self) -> Option<ActorId> {
        match &self.actor {
            Some(ActorTask::Create(_)) => Some(ActorId(self.task_id)),
            Some(ActorTask::Call { actor }) => Some(*actor),
            None => None,
        }
    }

    pub fn return_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        (0..self.returns.static_count()).map(|i| ObjectId::for_return(self.task_id, i))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Driver,
    Worker,
    /// Another node running this node's tasks (attached in-process by the
    /// node's daemon, never over the socket).
    Peer,
}

/// Settings the node hands to each client when it connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: NodeId,
    /// Values at least this large go to shared memory.
    pub inline_threshold: u64,
    pub store_capacity: u64,
}

/// How a task attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// One value per return object, in order.
    Returned(Vec<ObjectValue>),
    /// A generator (streaming or dynamic returns) ended after reporting `items` items.
    Streamed { items: u32 },
    /// The attempt failed; the node decides whether to retry.
    Failed(Error),
}

/// Lifecycle states of a task, as recorded in task events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// The node has the task; its arguments may not be ready.
    Submitted,
    /// Arguments ready, waiting for resources and a worker.
    PendingSchedule,
    /// Sent to a worker.
    Running,
    Finished,
    Failed,
    /// A failed attempt that will be tried again.
    Retrying,
    Cancelled,
}

impl TaskState {
    /// Every state, in declaration order (a node packs an event's state as
    /// its index here).
    pub const ALL: [TaskState; 7] = [
        TaskState::Submitted,
        TaskState::PendingSchedule,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Retrying,
        TaskState::Cancelled,
    ];
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task_id: TaskId,
    pub name: String,
    pub state: TaskState,
    pub attempt: u32,
    /// Unix time in microseconds.
    pub time_us: u64,
    /// The worker's pid once the task runs.
    pub worker_pid: Option<u32>,
    pub error: Option<String>,
    /// An actor's creation or method call: the actor.
    pub actor_id: Option<ActorId>,
}

/// Client to node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToNode {
    /// First message on every connection. `token` proves the sender belongs
    /// to the cluster. The node does not take `pid` on trust: it reads the
    /// peer's pid from the socket, and a worker's `worker_id` must be the one
    /// the spawner gave that process.
    Hello {
        protocol: u32,
        worker_id: WorkerId,
        pid: u32,
        role: Role,
        token: ClusterToken,
    },
    /// Submit a task; the sender holds one reference to each return object.
    Submit(Box<TaskSpec>),
    /// Store an object; the sender holds one reference to it.
    Put {
        id: ObjectId,
        value: ObjectValue,
    },
    /// The sender now holds references to these objects.
    AddRef(Vec<ObjectId>),
    /// The sender dropped its last reference to these objects.
    RemoveRef(Vec<ObjectId>),
    /// Send [`FromNode::ObjectReady`] for each object once it is ready. A
    /// shared-memory payload in that reply is pinned for the sender until it
    /// sends [`ToNode::Unpin`].
    Subscribe(Vec<ObjectId>),
    /// Send [`FromNode::Made`] for each object once it is made: it has its
    /// value here, or its value was left on the peer node that made it
    /// (`wait` with `fetch_local` off). Nothing is read or pulled. An
    /// object the sender may not read, or that is gone, is answered as
    /// `Subscribe` answers it (`ObjectReady` with the error).
    Locate(Vec<ObjectId>),
    /// Release one pin on each of these shared-memory objects.
    Unpin(Vec<ObjectId>),
    /// A task attempt ended.
    TaskDone {
        task_id: TaskId,
        attempt: u32,
        outcome: TaskOutcome,
    },
    /// Reserve `size` bytes in the shared-memory arena.
    Allocate {
        req: u64,
        size: u64,
    },
    /// Give back an allocation that was never stored (the writer failed).
    Deallocate {
        offset: u64,
    },
    Cancel {
        task_id: TaskId,
        force: bool,
        recursive: bool,
        /// Not forced: force it (and, if recursive, its descendants) if it
        /// still runs this many milliseconds later (a grace period).
        force_after_ms: Option<u64>,
    },
    /// The sender's running task waits in `get`: lend its CPU back.
    Blocked,
    Unblocked,
    /// These tasks, queued behind a blocked one, were taken off the worker's
    /// queue unstarted (the answer to [`FromNode::Revoke`]).
    Revoked {
        task_ids: Vec<TaskId>,
    },
    ListTasks {
        req: u64,
    },
    /// A generator task yielded item `index` (executor to node). `digest`
    /// fingerprints the value, so a retry that yields something else at an
    /// index already handed out is caught.
    ReportItem {
        task_id: TaskId,
        attempt: u32,
        index: u32,
        value: ObjectValue,
        digest: u64,
    },
    /// The owner has taken `consumed` items from the stream (backpressure).
    StreamConsumed {
        task_id: TaskId,
        consumed: u32,
    },
    /// The owner dropped the generator after taking `consumed` items: the
    /// rest are released and later reports are refused.
    StreamDrop {
        task_id: TaskId,
        consumed: u32,
    },
    /// The owner passed the generator on (serialized it into a value) after
    /// taking `consumed` items: the node keeps the rest for whoever claims
    /// the stream, and sends nothing more to the sender.
    StreamHandOff {
        task_id: TaskId,
        consumed: u32,
    },
    /// Take over a stream passed on at item `from` (the sender holds a ref
    /// to its generator's object); answered by [`FromNode::StreamClaimed`],
    /// after the items not yet consumed (and the end, if it came) are sent.
    /// Refused, with nothing changed, if the stream is not in transit at
    /// `from` (a stale copy of the value that carried it).
    StreamClaim {
        req: u64,
        task_id: TaskId,
        from: u32,
    },
    /// Create an actor (`spec.actor` is `Create`): the node registers it
    /// (and its name) at once and answers [`FromNode::ActorCreated`]; the
    /// sender holds one reference to its handle object.
    CreateActor {
        req: u64,
        spec: Box<TaskSpec>,
    },
    /// A function (or class) of another language's front, named by
    /// `function` in the calls that follow (its exporter is the sender).
    ExportFunction {
        function: FunctionId,
        pickled: Vec<u8>,
    },
    /// Look up a named actor; answered by [`FromNode::ActorFound`], which
    /// lets the sender take a reference to its handle object.
    GetActor {
        req: u64,
        name: String,
    },
    /// End an actor now: running calls are interrupted; with
    /// `no_restart: false` it may restart (as if its process died).
    KillActor {
        actor: ActorId,
        no_restart: bool,
    },
    /// End an actor once the calls already sent to it are done.
    TerminateActor {
        actor: ActorId,
    },
    /// A driver connected over the socket says how to start the workers
    /// that run its functions, one command per kind (a node started on its
    /// own has none). Sent once, right after the welcome. For the Rust kind
    /// the node ignores `program` and runs the sender's own executable.
    WorkerCommands(Vec<WorkerCommandSpec>),
    /// A copy of another node's object, under that node's id, so that refs
    /// to it work here (a value is never changed, so a copy is as good as
    /// the original). The sender holds one reference to it; if the object
    /// is here already, the copy is dropped and the reference taken. Only
    /// from in-process connections (a node's peer links); refused on a
    /// socket. Any encoding, as the other node stored it.
    Import {
        id: ObjectId,
        value: ObjectValue,
    },
    /// An object of another node's owner kept on peer node `node` (`len`
    /// bytes, as `encoding`), which a task the link submits next reads
    /// from there (`left` step 14): the node pulls it over its own link to
    /// `node` when read. The sender holds one reference to it; an object
    /// here already is held as it is. Only from a peer node's link (the
    /// executing side); refused from any other connection.
    Borrow {
        id: ObjectId,
        node: NodeId,
        len: u64,
        encoding: Encoding,
    },
}

/// How to start a worker process of one kind ([`ToNode::WorkerCommands`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCommandSpec {
    pub kind: WorkerKind,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Node to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromNode {
    Welcome(NodeInfo),
    /// Run this task. Its `Ref` arguments are already replaced by values; each
    /// shared-memory argument is pinned for the worker once per `Ref` and is
    /// released with [`ToNode::Unpin`].
    Execute(Box<TaskSpec>),
    ObjectReady {
        id: ObjectId,
        value: ObjectValue,
    },
    Allocated {
        req: u64,
        result: Result<u64, Error>,
    },
    /// Ask the running task to stop (`ferroray::is_cancelled()` turns true).
    /// `force` is for a peer node, which forwards the cancel: a worker's
    /// force-cancel is its process killed.
    CancelRunning {
        task_id: TaskId,
        force: bool,
    },
    /// Give back these tasks if they have not started (the worker blocked
    /// while they were queued behind its task).
    Revoke {
        task_ids: Vec<TaskId>,
    },
    Tasks {
        req: u64,
        events: Vec<TaskEvent>,
    },
    /// Item `index` of a stream this client owns is ready; an inline value
    /// (or an error) comes along, a shared-memory one is fetched on `get`.
    StreamItem {
        task_id: TaskId,
        index: u32,
        value: Option<ObjectValue>,
    },
    /// The stream has `items` items; `error` (if any) is handed out after them.
    StreamEnd {
        task_id: TaskId,
        items: u32,
        error: Option<Error>,
    },
    /// Report `index` was taken; `gone` means the owner dropped the stream.
    /// Sent only to generators with backpressure, and held back while the
    /// owner has `backpressure` unconsumed items.
    ItemAck {
        task_id: TaskId,
        index: u32,
        gone: bool,
    },
    /// The answer to [`ToNode::CreateActor`] (an error if, say, the name is
    /// taken; nothing was registered then).
    ActorCreated {
        req: u64,
        result: Result<(), Error>,
    },
    /// The answer to [`ToNode::GetActor`]: the actor's id, class and the
    /// front's data ([`ActorSpec::front`]).
    ActorFound {
        req: u64,
        result: Result<(ActorId, String, Vec<u8>), Error>,
    },
    /// The answer to [`ToNode::StreamClaim`]: the index of the first item
    /// the claimer gets, or why it gets none (another consumer took the
    /// stream, or it is gone).
    StreamClaimed {
        req: u64,
        result: Result<u32, Error>,
    },
    /// Lines a worker printed, for a driver connected to a daemon (whose
    /// workers' output would otherwise stay in the daemon's log): whole
    /// lines, each already prefixed with the task's name and the pid.
    Output {
        to_stderr: bool,
        text: String,
        /// The task the worker was running, when known: a peer's link
        /// names its owner's task, whose driver the owner's node finds.
        task: Option<TaskId>,
    },
    /// End actor `actor` now, which runs on the node this peer connection
    /// stands for (a worker's process is killed instead).
    KillActor {
        actor: ActorId,
        no_restart: bool,
    },
    /// To a peer node's link (the executing side): this node's proxy of
    /// `actor`, made by the handles that link brought, is gone after
    /// `reaches` of them; the owner lets go of the hold it took for them
    /// unless it sent more since.
    HandleReleased {
        actor: ActorId,
        reaches: u64,
    },
    /// To a peer node's link (the owner's side): results it left on its
    /// node, now read here: send their bytes (`remote` step 8).
    Pull(Vec<ObjectId>),
    /// To a peer node's link (the owner's side): results it left on its
    /// node that nothing here refers to any more: let them go there.
    Forget(Vec<ObjectId>),
    /// The objects of a `Locate` that are made now.
    Made(Vec<ObjectId>),
    /// To a peer node's link (the owner's side), just before the
    /// `Execute` it is for: the arguments of that task named by
    /// [`Payload::LEFT_ELSEWHERE`] are kept on node `node` (`left` step 14).
    Elsewhere {
        ids: Vec<ObjectId>,
        node: NodeId,
    },
    /// The connection is being closed for this reason.
    Rejected(Error),
}
