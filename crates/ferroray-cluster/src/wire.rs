//! The control protocol: what nodes and clients say to the head.
//!
//! The same frames as the node protocol (`ferroray_protocol::frame`: a 4-byte
//! length, then one protobuf body, written as prost structs with explicit
//! tags and evolved by the same rules as `ferroray_protocol::wire`). The
//! head's side of each exchange is in `crate::head`.
//!
//! 1. A connection opens with [`Register`]: the protocol version, the
//!    cluster token, and who is calling. A node also describes itself
//!    ([`NodeDesc`]). Nothing else is read before it, and it must fit in
//!    [`MAX_REGISTER_FRAME`] bytes: a stranger costs one small read.
//! 2. The head answers [`Registered`] (how often to send a heartbeat) or
//!    [`Rejection`] (why), then closes on a rejection.
//! 3. A node sends a [`ToHeadKind::Heartbeat`] with its load ([`NodeLoad`])
//!    every interval; a node the head has not heard from for the node
//!    timeout is declared dead.
//! 4. Anyone registered may ask for the cluster's view ([`ToHeadKind::View`]).
//! 5. A node that stops on purpose says [`ToHeadKind::Leave`] first, so it
//!    is dead at once rather than after the timeout.
//! 6. A client's [`ToHeadKind::List`] (tasks' events, actors or objects):
//!    the head asks every alive node on its connection
//!    ([`FromHeadKind::List`], numbered by `req`), each answers
//!    [`ToHeadKind::Listed`] with at most [`MAX_ROWS`] rows, and the head
//!    answers the client with all of them, naming the nodes that did not
//!    answer within `crate::head::LIST_TIMEOUT`.
//!
//! 7. Named actors are unique across the cluster, and found from any node
//!    (`crate::control::ActorNames`): before a node creates an actor with
//!    a name it claims the name ([`ToHeadKind::Claim`], answered
//!    [`FromHeadKind::Claimed`], refused while another node's actor holds
//!    it), it releases the name when the actor dies
//!    ([`ToHeadKind::Release`]), and a node that does not know a name asks
//!    where it lives ([`ToHeadKind::Find`], answered [`FromHeadKind::Found`]).
//!    Requests carry a number the answer repeats. Only a node sends them,
//!    and only for itself: the head takes the node from the connection,
//!    never from the message.
//! 8. A node tells the head of its jobs (`crate::control::JobTable`): a
//!    program's driver connected ([`ToHeadKind::JobStarted`]) and left
//!    ([`ToHeadKind::JobEnded`]), each acknowledged ([`FromHeadKind::Noted`])
//!    so that the node sends again what a broken link lost. A client's
//!    `List` of jobs is answered from the head's table.
//! 9. Python functions are exported once per cluster
//!    (`crate::control::FunctionTable`): a node sends a function its
//!    program's driver exported ([`ToHeadKind::Export`], answered
//!    [`FromHeadKind::Noted`], with a refusal if the table will not keep
//!    it), and only once the head has it does the node send calls of it to
//!    other nodes without its bytes; a node that meets a call of a
//!    function it lacks asks for it ([`ToHeadKind::Fetch`], answered
//!    [`FromHeadKind::Function`]). Both are numbered as in step 7.
//!
//! Every count and size is checked on arrival ([`check_desc`],
//! [`check_load`], [`check_named`]), before the head takes its lock.

use ferroray_common::ResourceSet;
use ferroray_protocol::limits;
use ferroray_protocol::{FrameError, WireMessage};
use prost::{Message, Oneof};
use std::collections::BTreeMap;

/// Bumped on any incompatible change to these messages. 2: the function
/// table (step 9), which peers of version 2 rely on.
pub const CONTROL_PROTOCOL_VERSION: u32 = 2;

/// The largest first frame the head reads from a connection.
pub const MAX_REGISTER_FRAME: u32 = 64 << 10;

/// The largest frame after it (a view of many nodes).
pub const MAX_CONTROL_FRAME: u32 = 16 << 20;

/// Most nodes a cluster holds (and a view lists).
pub const MAX_NODES: usize = 10_000;

/// Longest address or death cause.
pub const MAX_TEXT: usize = 1024;

/// Most rows a node sends for one listing (its newest task events, or its
/// first actors or objects); the listing says when it cut.
pub const MAX_ROWS: usize = 50_000;

#[derive(Clone, PartialEq, Message)]
pub struct ToHead {
    #[prost(oneof = "ToHeadKind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub kind: Option<ToHeadKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ToHeadKind {
    #[prost(message, tag = "1")]
    Register(Register),
    #[prost(message, tag = "2")]
    Heartbeat(NodeLoad),
    #[prost(message, tag = "3")]
    View(Empty),
    #[prost(message, tag = "4")]
    Leave(Empty),
    /// A client asks what every node has (step 6).
    #[prost(message, tag = "5")]
    List(ListRequest),
    /// A node answers the head's [`FromHeadKind::List`].
    #[prost(message, tag = "6")]
    Listed(Listing),
    /// A node claims an actor's name before it creates the actor (step 7).
    #[prost(message, tag = "7")]
    Claim(NameClaim),
    /// A node's named actor died: its name is free again (answered
    /// [`FromHeadKind::Noted`], so that the node knows it arrived).
    #[prost(message, tag = "8")]
    Release(NameClaim),
    /// Which node has the live actor of this name.
    #[prost(message, tag = "9")]
    Find(FindActor),
    /// A driver connected to the node (step 8).
    #[prost(message, tag = "10")]
    JobStarted(JobEvent),
    /// A driver left (its row: the job id and the end time).
    #[prost(message, tag = "11")]
    JobEnded(JobEvent),
    /// A driver's exported function, for the cluster's table (step 9).
    #[prost(message, tag = "12")]
    Export(FunctionExport),
    /// The bytes of an exported function (step 9).
    #[prost(message, tag = "13")]
    Fetch(FetchFunction),
}

/// An exported function as the control store keeps it (step 9), named by
/// its `FunctionId` (the exporting process and its number for it).
#[derive(Clone, PartialEq, Message)]
pub struct FunctionRow {
    #[prost(fixed64, tag = "1")]
    pub exporter: u64,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// The job (its driver's id) it lives with: dropped a while after the
    /// job ends.
    #[prost(fixed64, tag = "3")]
    pub job_id: u64,
    /// The node that exported it (set by the head, from the connection).
    #[prost(fixed64, tag = "4")]
    pub node_id: u64,
    /// The pickled function, at most [`MAX_TABLE_FUNCTION`] bytes.
    #[prost(bytes = "vec", tag = "5")]
    pub pickled: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FunctionExport {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub function: Option<FunctionRow>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FetchFunction {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(fixed64, tag = "2")]
    pub exporter: u64,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
}

/// The answer to a fetch: the row, if the table has it.
#[derive(Clone, PartialEq, Message)]
pub struct FoundFunction {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub function: Option<FunctionRow>,
}

/// The largest function the cluster's table keeps (a larger one goes with
/// the calls of it, once per link, as without a table); it fits in a
/// control frame.
pub const MAX_TABLE_FUNCTION: usize = 8 << 20;

/// A job: a program's driver connected to a node (Ray's driver job).
#[derive(Clone, PartialEq, Message)]
pub struct JobRow {
    /// The driver's id (`WorkerId`), which the node gave it.
    #[prost(fixed64, tag = "1")]
    pub job_id: u64,
    /// The node it connected to (set by the head, from the connection).
    #[prost(fixed64, tag = "2")]
    pub node_id: u64,
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    /// The driver's command line, as its node read it (at most
    /// [`MAX_TEXT`] bytes).
    #[prost(string, tag = "4")]
    pub entrypoint: String,
    /// Unix time in milliseconds; `end_ms` 0 while it runs.
    #[prost(uint64, tag = "5")]
    pub start_ms: u64,
    #[prost(uint64, tag = "6")]
    pub end_ms: u64,
    /// `RUNNING`, `FINISHED` (its driver left) or `FAILED` (its node died).
    #[prost(string, tag = "7")]
    pub state: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct JobEvent {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub job: Option<JobRow>,
}

/// An acknowledgement of request `req`.
#[derive(Clone, PartialEq, Message)]
pub struct Ack {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    /// Why the head did not take it (an `Export`); empty if it did.
    #[prost(string, tag = "2")]
    pub refusal: String,
}

/// A named actor as the control store keeps it (step 7).
#[derive(Clone, PartialEq, Message)]
pub struct NamedActor {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its id (`ActorId`'s bytes: the creation task's submitter and
    /// sequence number).
    #[prost(bytes = "vec", tag = "2")]
    pub actor_id: Vec<u8>,
    /// The node that owns it (set by the head, from the connection).
    #[prost(fixed64, tag = "3")]
    pub node_id: u64,
    #[prost(bool, tag = "4")]
    pub detached: bool,
    /// What a handle needs: the class name and what the front keeps with
    /// it (`ActorSpec::class`, `ActorSpec::front`).
    #[prost(string, tag = "5")]
    pub class: String,
    #[prost(bytes = "vec", tag = "6")]
    pub front: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NameClaim {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub actor: Option<NamedActor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FindActor {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// The answer to a claim: empty `refusal` if the name is the claimer's.
#[derive(Clone, PartialEq, Message)]
pub struct ClaimAnswer {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(string, tag = "2")]
    pub refusal: String,
}

/// The answer to a find: the actor, if a live node owns one of that name.
#[derive(Clone, PartialEq, Message)]
pub struct FoundActor {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub actor: Option<NamedActor>,
}

/// What `ferroray list` and `timeline` ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ListWhat {
    /// Task state changes (`list tasks` keeps each task's last).
    Events = 0,
    Actors = 1,
    Objects = 2,
    /// The head's job table (step 8).
    Jobs = 3,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListRequest {
    /// Matches a node's answer to the head's request (0 from a client).
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(enumeration = "ListWhat", tag = "2")]
    pub what: i32,
}

/// Rows of one node (from a node), or of every node (to a client).
#[derive(Clone, PartialEq, Message)]
pub struct Listing {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<EventRow>,
    #[prost(message, repeated, tag = "3")]
    pub actors: Vec<ActorRow>,
    #[prost(message, repeated, tag = "4")]
    pub objects: Vec<ObjectRow>,
    /// Some node had more rows than it sends ([`MAX_ROWS`]).
    #[prost(bool, tag = "5")]
    pub truncated: bool,
    /// Alive nodes that did not answer in time (to a client).
    #[prost(string, repeated, tag = "6")]
    pub missing: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    pub jobs: Vec<JobRow>,
}

#[derive(Clone, PartialEq, Message)]
pub struct EventRow {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub task_id: String,
    #[prost(string, tag = "3")]
    pub name: String,
    /// `SUBMITTED`, `PENDING_SCHEDULE`, `RUNNING`, `FINISHED`, `FAILED`,
    /// `RETRYING` or `CANCELLED`.
    #[prost(string, tag = "4")]
    pub state: String,
    #[prost(uint32, tag = "5")]
    pub attempt: u32,
    /// Unix time in microseconds.
    #[prost(uint64, tag = "6")]
    pub time_us: u64,
    /// 0: no worker yet.
    #[prost(uint32, tag = "7")]
    pub worker_pid: u32,
    #[prost(string, tag = "8")]
    pub error: String,
    #[prost(string, tag = "9")]
    pub actor_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ActorRow {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub actor_id: String,
    #[prost(string, tag = "3")]
    pub class: String,
    #[prost(string, tag = "4")]
    pub name: String,
    /// `STARTING`, `ALIVE` or `DEAD`.
    #[prost(string, tag = "5")]
    pub state: String,
    #[prost(uint32, tag = "6")]
    pub pid: u32,
    #[prost(bool, tag = "7")]
    pub detached: bool,
    #[prost(string, tag = "8")]
    pub death: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ObjectRow {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub object_id: String,
    /// `PENDING`, `INLINE`, `SHARED_MEMORY`, `SPILLED` or `ERROR`.
    #[prost(string, tag = "3")]
    pub location: String,
    #[prost(uint64, tag = "4")]
    pub size: u64,
    #[prost(uint32, tag = "5")]
    pub holders: u32,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Empty {}

/// Who registers: a node daemon, or a client that only asks (`status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum PeerRole {
    Client = 0,
    Node = 1,
}

#[derive(Clone, PartialEq, Message)]
pub struct Register {
    /// Always tag 1, so a peer of another version learns why it is refused.
    #[prost(uint32, tag = "1")]
    pub protocol: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub token: Vec<u8>,
    #[prost(enumeration = "PeerRole", tag = "3")]
    pub role: i32,
    /// A node's description; absent for a client.
    #[prost(message, optional, tag = "4")]
    pub node: Option<NodeDesc>,
}

/// What a node is: fixed for its life.
#[derive(Clone, PartialEq, Message)]
pub struct NodeDesc {
    #[prost(fixed64, tag = "1")]
    pub node_id: u64,
    /// The address other machines reach it at (an IP, for now).
    #[prost(string, tag = "2")]
    pub address: String,
    /// Total resources, fixed point (1/10,000 of a unit).
    #[prost(btree_map = "string, sint64", tag = "3")]
    pub resources: BTreeMap<String, i64>,
    #[prost(uint64, tag = "4")]
    pub store_capacity: u64,
    /// The daemon's process id on its machine (for `status`; never trusted
    /// for anything else).
    #[prost(uint32, tag = "5")]
    pub pid: u32,
    /// The port its peer links listen on (`crate::peer`; 0: none).
    #[prost(uint32, tag = "6")]
    pub peer_port: u32,
    /// The SHA-256 of that port's certificate, which peers pin.
    #[prost(bytes = "vec", tag = "7")]
    pub peer_fingerprint: Vec<u8>,
    /// It takes plain peer links from loopback addresses (`crate::loopback`);
    /// false: TLS only (`start --tls-on-loopback`, or a node from before).
    #[prost(bool, tag = "8")]
    pub plain_loopback_links: bool,
}

/// What a node is doing: sent with every heartbeat.
#[derive(Clone, PartialEq, Message)]
pub struct NodeLoad {
    /// Resources not leased to a worker, fixed point.
    #[prost(btree_map = "string, sint64", tag = "1")]
    pub available: BTreeMap<String, i64>,
    #[prost(uint64, tag = "2")]
    pub store_used: u64,
    #[prost(uint64, tag = "3")]
    pub objects: u64,
    #[prost(uint64, tag = "4")]
    pub tasks: u64,
    #[prost(uint64, tag = "5")]
    pub workers: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct FromHead {
    #[prost(oneof = "FromHeadKind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub kind: Option<FromHeadKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum FromHeadKind {
    #[prost(message, tag = "1")]
    Registered(Registered),
    /// Always tag 2 (see [`Register::protocol`]).
    #[prost(message, tag = "2")]
    Rejected(Rejection),
    #[prost(message, tag = "3")]
    View(ClusterView),
    /// The head asks a node for its rows (step 6).
    #[prost(message, tag = "4")]
    List(ListRequest),
    /// Every node's rows, to the client that asked.
    #[prost(message, tag = "5")]
    Listed(Listing),
    #[prost(message, tag = "6")]
    Claimed(ClaimAnswer),
    #[prost(message, tag = "7")]
    Found(FoundActor),
    /// A `Release`, `JobStarted`, `JobEnded` or `Export` arrived.
    #[prost(message, tag = "8")]
    Noted(Ack),
    #[prost(message, tag = "9")]
    Function(FoundFunction),
}

/// Why the head refused a request; the connection closes after it.
#[derive(Clone, PartialEq, Message)]
pub struct Rejection {
    #[prost(enumeration = "RejectKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// The refusals a caller acts on differently; any other is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum RejectKind {
    Other = 0,
    WrongToken = 1,
    /// The node was declared dead: it must not come back under its id.
    NodeDead = 2,
    /// Its id is bound to a connection the head has not seen close yet:
    /// worth registering again in a moment.
    NodeIdInUse = 3,
}

#[derive(Clone, PartialEq, Message)]
pub struct Registered {
    /// The head's own node.
    #[prost(fixed64, tag = "1")]
    pub head_node_id: u64,
    #[prost(uint64, tag = "2")]
    pub heartbeat_interval_ms: u64,
    #[prost(uint64, tag = "3")]
    pub node_timeout_ms: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ClusterView {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<NodeEntry>,
    /// Jobs running, and actors with a name, across the cluster (for
    /// `status`; 0 from a head that keeps no such table).
    #[prost(uint64, tag = "2")]
    pub jobs_running: u64,
    #[prost(uint64, tag = "3")]
    pub named_actors: u64,
    /// Functions in the cluster's table (step 9).
    #[prost(uint64, tag = "4")]
    pub functions: u64,
}

/// One node as the head sees it.
#[derive(Clone, PartialEq, Message)]
pub struct NodeEntry {
    #[prost(message, optional, tag = "1")]
    pub desc: Option<NodeDesc>,
    #[prost(message, optional, tag = "2")]
    pub load: Option<NodeLoad>,
    #[prost(bool, tag = "3")]
    pub alive: bool,
    /// Why it is dead; empty while alive.
    #[prost(string, tag = "4")]
    pub death_cause: String,
    /// Milliseconds since the head last heard from it.
    #[prost(uint64, tag = "5")]
    pub last_heard_ms: u64,
    #[prost(bool, tag = "6")]
    pub is_head: bool,
}

fn malformed(msg: String) -> FrameError {
    FrameError::Malformed(msg)
}

fn check_resources(what: &str, fixed: &BTreeMap<String, i64>, allow_zero: bool) -> Result<(), FrameError> {
    let set = ResourceSet::from_fixed(fixed.clone());
    if !allow_zero && set.fixed().len() != fixed.len() {
        return Err(malformed(format!("{what}: a resource amount of zero")));
    }
    set.check_bounds(limits::MAX_RESOURCES, limits::MAX_RESOURCE_NAME, limits::MAX_RESOURCE_AMOUNT)
        .map_err(|e| malformed(format!("{what}: {e}")))
}

/// Checks a node's description from a peer.
pub fn check_desc(d: &NodeDesc) -> Result<(), FrameError> {
    if d.address.len() > MAX_TEXT {
        return Err(malformed(format!("a node address of {} bytes", d.address.len())));
    }
    if d.peer_port > u32::from(u16::MAX) || !matches!(d.peer_fingerprint.len(), 0 | 32) {
        return Err(malformed("a malformed peer port or certificate fingerprint".into()));
    }
    check_resources("node resources", &d.resources, false)
}

/// Checks a node's listing: at most [`MAX_ROWS`] rows.
pub fn check_listing(l: &Listing) -> Result<(), FrameError> {
    let rows = l.events.len() + l.actors.len() + l.objects.len() + l.jobs.len();
    if rows > MAX_ROWS {
        return Err(malformed(format!("a listing of {rows} rows")));
    }
    Ok(())
}

/// Checks a named actor from a peer: a name, an id of the right length,
/// and bounded class and front.
pub fn check_named(a: &NamedActor) -> Result<(), FrameError> {
    if a.name.is_empty() {
        return Err(malformed("an actor name of 0 bytes".into()));
    }
    check_actor_row(a)
}

/// Checks an actor's row from a peer, named or not (a handle's, `crate::peer`
/// step 3): an id of the right length, bounded name, class and front.
pub fn check_actor_row(a: &NamedActor) -> Result<(), FrameError> {
    if a.name.len() > limits::MAX_NAME || a.class.len() > limits::MAX_NAME {
        return Err(malformed(format!("an actor name of {} bytes or class of {}", a.name.len(), a.class.len())));
    }
    if a.actor_id.len() != ACTOR_ID_LEN {
        return Err(malformed(format!("an actor id of {} bytes", a.actor_id.len())));
    }
    if a.front.len() > limits::MAX_ACTOR_FRONT {
        return Err(malformed(format!("an actor front of {} bytes", a.front.len())));
    }
    Ok(())
}

/// A node's actor as a row (`node_id` its owner's: 0 for a claim, where
/// the head sets it).
pub fn actor_row(node: ferroray_common::NodeId, e: &ferroray_node::DirectoryEntry) -> NamedActor {
    NamedActor {
        name: e.name.clone(),
        actor_id: actor_id_bytes(e.actor),
        node_id: node.0,
        detached: e.detached,
        class: e.class.clone(),
        front: e.front.clone(),
    }
}

/// A row as the node takes it (`None` if its id is malformed).
pub fn found_actor(row: NamedActor) -> Option<ferroray_node::FoundActor> {
    let actor = actor_id_from(&row.actor_id)?;
    let entry = ferroray_node::DirectoryEntry {
        name: row.name,
        actor,
        detached: row.detached,
        class: row.class,
        front: row.front,
    };
    Some(ferroray_node::FoundActor { node: ferroray_common::NodeId(row.node_id), entry })
}

/// Bytes of an actor id on the wire ([`actor_id_bytes`]).
pub const ACTOR_ID_LEN: usize = 16;

/// An actor id as [`NamedActor::actor_id`] carries it.
pub fn actor_id_bytes(id: ferroray_common::ActorId) -> Vec<u8> {
    let mut out = Vec::with_capacity(ACTOR_ID_LEN);
    out.extend_from_slice(&id.0.submitter.0.to_le_bytes());
    out.extend_from_slice(&id.0.seq.to_le_bytes());
    out
}

/// The actor id [`actor_id_bytes`] made; `None` for another length.
pub fn actor_id_from(bytes: &[u8]) -> Option<ferroray_common::ActorId> {
    let bytes: &[u8; ACTOR_ID_LEN] = bytes.try_into().ok()?;
    let submitter = u64::from_le_bytes(bytes[..8].try_into().expect("sized"));
    let seq = u64::from_le_bytes(bytes[8..].try_into().expect("sized"));
    Some(ferroray_common::ActorId(ferroray_common::TaskId { submitter: ferroray_common::WorkerId(submitter), seq }))
}

/// Checks an exported function from a peer: an exporter, a job, and at
/// most [`MAX_TABLE_FUNCTION`] bytes.
pub fn check_function(f: &FunctionRow) -> Result<(), FrameError> {
    if f.exporter == 0 || f.job_id == 0 {
        return Err(malformed("a function of no exporter or job".into()));
    }
    if f.pickled.len() > MAX_TABLE_FUNCTION {
        return Err(malformed(format!("an exported function of {} bytes", f.pickled.len())));
    }
    Ok(())
}

/// Checks a node's load from a peer (an available amount may be zero).
pub fn check_load(l: &NodeLoad) -> Result<(), FrameError> {
    check_resources("available resources", &l.available, true)
}

macro_rules! identity_wire {
    ($t:ty, $check:expr) => {
        impl WireMessage for $t {
            type Wire = $t;

            fn into_wire(self) -> Self::Wire {
                self
            }

            fn from_wire(wire: Self::Wire) -> Result<Self, FrameError> {
                let check: fn(&$t) -> Result<(), FrameError> = $check;
                check(&wire)?;
                Ok(wire)
            }
        }
    };
}

identity_wire!(ToHead, |m| match &m.kind {
    None => Err(malformed("an empty or unknown request".into())),
    Some(ToHeadKind::Register(r)) => r.node.as_ref().map_or(Ok(()), check_desc),
    Some(ToHeadKind::Heartbeat(l)) => check_load(l),
    Some(ToHeadKind::Listed(l)) => check_listing(l),
    Some(ToHeadKind::Claim(c) | ToHeadKind::Release(c)) => {
        c.actor.as_ref().map_or(Err(malformed("a claim of no actor".into())), check_named)
    }
    Some(ToHeadKind::Find(f)) if f.name.len() > limits::MAX_NAME => {
        Err(malformed(format!("an actor name of {} bytes", f.name.len())))
    }
    Some(ToHeadKind::JobStarted(e) | ToHeadKind::JobEnded(e)) => match &e.job {
        None => Err(malformed("a job event of no job".into())),
        Some(j) if j.entrypoint.len() > MAX_TEXT || j.state.len() > MAX_TEXT => {
            Err(malformed(format!("a job entrypoint of {} bytes", j.entrypoint.len())))
        }
        Some(_) => Ok(()),
    },
    Some(ToHeadKind::Export(e)) =>
        e.function.as_ref().map_or(Err(malformed("an export of no function".into())), check_function),
    Some(_) => Ok(()),
});

identity_wire!(FromHead, |m| match &m.kind {
    None => Err(malformed("an empty or unknown answer".into())),
    Some(FromHeadKind::View(v)) if v.nodes.len() > MAX_NODES => {
        Err(malformed(format!("a view of {} nodes", v.nodes.len())))
    }
    Some(FromHeadKind::Found(FoundActor { actor: Some(a), .. })) => check_named(a),
    Some(FromHeadKind::Function(FoundFunction { function: Some(f), .. })) => check_function(f),
    Some(_) => Ok(()),
});

impl ToHead {
    pub fn new(kind: ToHeadKind) -> Self {
        ToHead { kind: Some(kind) }
    }
}

impl FromHead {
    pub fn new(kind: FromHeadKind) -> Self {
        FromHead { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: WireMessage<Wire = M>>(m: M) -> M {
        let mut buf = Vec::new();
        ferroray_protocol::frame::encode_into(&mut buf, m).unwrap();
        ferroray_protocol::frame::read_frame(&mut &buf[..]).unwrap().unwrap()
    }

    fn desc() -> NodeDesc {
        NodeDesc {
            node_id: 7,
            address: "127.0.0.1".into(),
            resources: ResourceSet::new().with("CPU", 2.0).with("a", 1.5).into_fixed(),
            store_capacity: 1 << 30,
            pid: 42,
            peer_port: 7000,
            peer_fingerprint: vec![9; 32],
            plain_loopback_links: true,
        }
    }

    #[test]
    fn messages_round_trip() {
        let reg = ToHead::new(ToHeadKind::Register(Register {
            protocol: CONTROL_PROTOCOL_VERSION,
            token: vec![1; 32],
            role: PeerRole::Node as i32,
            node: Some(desc()),
        }));
        assert_eq!(round_trip(reg.clone()), reg);
        let view = FromHead::new(FromHeadKind::View(ClusterView {
            nodes: vec![NodeEntry {
                desc: Some(desc()),
                load: Some(NodeLoad::default()),
                alive: false,
                death_cause: "stopped".into(),
                last_heard_ms: 3,
                is_head: true,
            }],
            jobs_running: 2,
            named_actors: 1,
            functions: 3,
        }));
        assert_eq!(round_trip(view.clone()), view);
    }

    #[test]
    fn bad_input_is_malformed() {
        let mut bad = desc();
        bad.resources.insert("CPU".into(), -5);
        let reg = ToHead::new(ToHeadKind::Register(Register { node: Some(bad), ..Default::default() }));
        let mut buf = Vec::new();
        ferroray_protocol::frame::encode_into(&mut buf, reg).unwrap();
        let err = ferroray_protocol::frame::read_frame::<_, ToHead>(&mut &buf[..]).unwrap_err();
        assert!(err.to_string().contains("node resources"), "{err}");

        let mut buf = Vec::new();
        ferroray_protocol::frame::encode_into(&mut buf, ToHead { kind: None }).unwrap();
        assert!(ferroray_protocol::frame::read_frame::<_, ToHead>(&mut &buf[..]).is_err());
    }

    #[test]
    fn actor_names_round_trip_and_bad_ones_are_malformed() {
        let id = ferroray_common::ActorId(ferroray_common::TaskId { submitter: ferroray_common::WorkerId(7), seq: 9 });
        assert_eq!(actor_id_from(&actor_id_bytes(id)), Some(id));
        assert_eq!(actor_id_from(&[1, 2, 3]), None);
        let named = NamedActor {
            name: "svc".into(),
            actor_id: actor_id_bytes(id),
            node_id: 3,
            detached: true,
            class: "C".into(),
            front: vec![1, 2],
        };
        let claim = ToHead::new(ToHeadKind::Claim(NameClaim { req: 4, actor: Some(named.clone()) }));
        assert_eq!(round_trip(claim.clone()), claim);
        let found = FromHead::new(FromHeadKind::Found(FoundActor { req: 4, actor: Some(named.clone()) }));
        assert_eq!(round_trip(found.clone()), found);
        let bad = |a: NamedActor| {
            let m = ToHead::new(ToHeadKind::Release(NameClaim { req: 1, actor: Some(a) }));
            let mut buf = Vec::new();
            ferroray_protocol::frame::encode_into(&mut buf, m).unwrap();
            ferroray_protocol::frame::read_frame::<_, ToHead>(&mut &buf[..]).unwrap_err().to_string()
        };
        assert!(bad(NamedActor { name: String::new(), ..named.clone() }).contains("actor name"));
        assert!(bad(NamedActor { actor_id: vec![1], ..named.clone() }).contains("actor id of 1 bytes"));
        let front = vec![0; limits::MAX_ACTOR_FRONT + 1];
        assert!(bad(NamedActor { front, ..named.clone() }).contains("actor front"));
        let empty = ToHead::new(ToHeadKind::Claim(NameClaim { req: 1, actor: None }));
        let mut buf = Vec::new();
        ferroray_protocol::frame::encode_into(&mut buf, empty).unwrap();
        assert!(ferroray_protocol::frame::read_frame::<_, ToHead>(&mut &buf[..]).is_err());
    }

    #[test]
    fn functions_round_trip_and_bad_ones_are_malformed() {
        let row = FunctionRow { exporter: 7, seq: 1, job_id: 7, node_id: 0, pickled: vec![3; 100] };
        let export = ToHead::new(ToHeadKind::Export(FunctionExport { req: 2, function: Some(row.clone()) }));
        assert_eq!(round_trip(export.clone()), export);
        let fetch = ToHead::new(ToHeadKind::Fetch(FetchFunction { req: 3, exporter: 7, seq: 1 }));
        assert_eq!(round_trip(fetch.clone()), fetch);
        let found = FromHead::new(FromHeadKind::Function(FoundFunction { req: 3, function: Some(row.clone()) }));
        assert_eq!(round_trip(found.clone()), found);
        let noted = FromHead::new(FromHeadKind::Noted(Ack { req: 2, refusal: "full".into() }));
        assert_eq!(round_trip(noted.clone()), noted);
        let bad = |m: ToHead| {
            let mut buf = Vec::new();
            ferroray_protocol::frame::encode_into(&mut buf, m).unwrap();
            ferroray_protocol::frame::read_frame::<_, ToHead>(&mut &buf[..]).unwrap_err().to_string()
        };
        let export = |f: FunctionRow| ToHead::new(ToHeadKind::Export(FunctionExport { req: 1, function: Some(f) }));
        assert!(bad(export(FunctionRow { job_id: 0, ..row.clone() })).contains("no exporter or job"));
        let pickled = vec![0; MAX_TABLE_FUNCTION + 1];
        assert!(bad(export(FunctionRow { pickled, ..row.clone() })).contains("exported function of"));
        assert!(bad(ToHead::new(ToHeadKind::Export(FunctionExport { req: 1, function: None }))).contains("no function"));
    }
}
