//! Peer links: one node's tasks run on another node.
//!
//! Every daemon listens on a second TCP port for peers (TLS with a
//! certificate of its own, whose SHA-256 it registers with the head in its
//! `NodeDesc`, so a caller pins it as it pins the head's; between loopback
//! addresses plain TCP after [`crate::loopback`]'s handshake). The node that
//! owns a task (the one its driver is connected to) places it
//! (`ferroray_node::state::remote`); this module carries it:
//!
//! 1. The owner's daemon learns the other nodes from the head's view
//!    ([`Peers::update`], every heartbeat) and attaches each alive one to
//!    its node as a peer (`Node::attach_peer`); the link itself is opened
//!    when the node first sends the peer something, so idle pairs of nodes
//!    cost nothing.
//! 2. The link opens with [`PeerHello`]: the cluster token (inside TLS, as
//!    to the head; none on a plain link, whose handshake proved it), the
//!    owner's node id, and the commands its job's
//!    workers start with. A Rust program is its own executable: the hello
//!    names its SHA-256 and length, and the executing node asks for it
//!    ([`FromPeerKind::NeedExe`]) unless it has that file already; it keeps
//!    it by hash in the session directory (`exe/`), checked before use.
//!    The executing node connects the program to its node as a driver
//!    (`Node::connect_program`) and answers [`Welcome`], or refuses.
//! 3. Then both sides send node-protocol messages ([`ToPeerKind::Node`],
//!    a `ToNode` frame each): the owner `Submit`, `Cancel`,
//!    `StreamConsumed`, `StreamDrop`; the executor `TaskDone` and
//!    `ReportItem`, named by the owner's task ids. A value over the
//!    node's inline threshold goes first as a blob in chunks of [`CHUNK`]
//!    bytes ([`Blob`]), written straight into the receiving node's store,
//!    and the message that follows names it by a `Shm` payload whose offset
//!    is the blob's id on this link.
//!    Refs cross with copies of what they name (`ToNode::Import`, under the
//!    same ids): before a task, every object its arguments name, at any
//!    depth, deepest first (`Gathering`); before a result or a generator's
//!    item, every object its values name (`Export`, `Running::item_named`),
//!    then a `RemoveRef` of those copies after the `TaskDone` or the
//!    `ReportItem` (which holds them by then). Each side holds
//!    an import from its arrival until the task or result that follows it
//!    does, in the order of one connection, so nothing frees it between.
//!    An actor's handle goes as a `Reach` ahead of the task; the owner's
//!    side holds the handle object from the first (of its node's actor, or
//!    of its node's proxy of a third node's), counting `Reach`es (`Lent`),
//!    until the executing side says its proxy is gone after as many
//!    ([`FromPeerKind::Released`]).
//!    An import of shared memory to the executing node is kept in the
//!    link's `Cache` (under its own id, `Kept::AsItself`) as arguments
//!    are, so later tasks naming it get it without a transfer.
//! 4. On the executing node the task gets an id of the link's own (its
//!    driver's), no retries (the owner retries, with its replay checks), and
//!    a streaming generator's items are relayed as they come; under
//!    backpressure an item counts as consumed there only once the owner's
//!    consumer took it, so the generator pauses where it runs.
//!    What the program's workers print there comes back as [`OutputLines`],
//!    to the owner's drivers as their own workers' output.
//!    A link serves the program it was opened for: the owner's node has one
//!    per program and peer (`Peers`, keyed by both), and the executing
//!    node runs its tasks in workers of the program its hello's commands
//!    name (`Node::connect_program`). The owner's node closes a program's
//!    links once the program ended and nothing of it runs there (the
//!    link flushes, then shuts its stream, so the other side sees the
//!    end).
//! 5. A link that breaks takes its tasks with it on both sides: the owner
//!    retries them (on another node, or here), the executing node cancels
//!    them as for any driver that left. The peer is attached again at a
//!    later view, a second after its link ended.
//! 6. A task's result in shared memory of at least [`LEAVE_FROM`] bytes
//!    that names no objects stays in the executing node's store, held by
//!    the link (`Executing::left`): the `TaskDone` names it by a `Shm`
//!    payload at `Payload::LEFT_ON_PEER`, and the owner's node keeps it as
//!    left there (`ferroray_node::state::left`, whose steps 8 to 13 go on
//!    from `remote`'s). When something on the owner's node reads it, the
//!    node's `FromNode::Pull` goes over as a `Subscribe` of it; the link
//!    answers with a copy (`Import` and its `RemoveRef`, as a result's
//!    named objects go). The owner's `FromNode::Forget` (once the copy is
//!    there, or the object freed) goes over as a `RemoveRef`, and the link
//!    lets its own go. A link that
//!    breaks loses what it kept: the owner runs the tasks that made it
//!    again (lineage).
//! 7. A task the owner sends to one peer may read a result left on another
//!    (`left` steps 14 to 16): the owner's node names the keeping node
//!    (`FromNode::Elsewhere`) before the `Execute`, and the link sends a
//!    `Borrow` of each such argument just before the `Submit`, whose
//!    argument keeps its `Payload::LEFT_ELSEWHERE` payload. The executing
//!    link hands the `Borrow`s to its node (held by the link until the
//!    task holds them) and turns those arguments into refs; the node pulls
//!    each over its own link to the keeping node, for the same program
//!    (opened as any, at the first message). There the `Subscribe` finds
//!    the object in what the daemon's links keep (`LeftHere`, filled from
//!    each link's `left`), takes a hold of its own on it from the keeping
//!    link (`LocalConnection::hold_as`: both links of one program) and
//!    sends a copy as in step 6, letting its hold go once sent. The owner
//!    forgets the keeping node's copy only once the reading task ended,
//!    so it is there while read; a keeping node that is gone or no longer
//!    has it fails the read, and the owner then reads it itself.
//!
//! Actors placed on a peer (`remote` step 6) are created there by the link
//! (no name, no restarts: the owner keeps both) and live while the link
//! holds their handle; the owner's `KillActor` ends them.
//!
//! An actor of the executing node reached by its name from the owner's
//! (`ferroray_node::state::directory`) is called the same way: its calls
//! name it by its own id, which the link passes on (its handle object
//! comes first as an import, as refs' objects do), and the owner's kill
//! of it is passed on too (the node takes both from a peer's link for a
//! named actor).
//!
//! An actor handle in a task's arguments goes with a [`ToPeerKind::Reach`]
//! ahead of the task (the node that owns the actor, its class and front):
//! the executing node makes a proxy for it, whose calls go to that node.
//!
//! What does not cross nodes yet: `get` of an object on another node that
//! no argument, result or item carried here, and a streaming generator in
//! arguments (a task naming one stays on its owner's node). A ref to a
//! left result nested in a value goes through the owner's store (pulled
//! there, then sent as a copy with what names it).

use crate::error::{ClusterError, Result};
use crate::loopback;
use crate::tls::{self, Fingerprint, HeadIdentity};
use crate::wire::{ClusterView, Empty};
use ferroray_common::{
    ActorId, ClusterToken, Error, FunctionId, NodeId, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId,
};
use ferroray_node::{Inbox, LocalConnection, Node, ProgramId, WorkerCommand};
use ferroray_protocol::{
    frame, ActorTask, FromNode, FunctionDescriptor, ObjectValue, Payload, ReturnKind, TaskArg, TaskOutcome, TaskSpec,
    ToNode, WireMessage, WorkerKind, DIGEST_SAMPLE,
};
use ferroray_store::Arena;
use parking_lot::Mutex;
use prost::{Message, Oneof};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Bumped on any incompatible change to these messages. 2: calls of
/// functions the cluster's table has go without their bytes; `Released`.
/// 3: large results stay where they were made (step 6).
pub const PEER_PROTOCOL_VERSION: u32 = 3;

/// A task's result of at least this many bytes in shared memory stays in
/// the executing node's store until the owner reads it (step 6): smaller
/// ones go back at once, where a pull's round trip would cost more than
/// their bytes.
pub const LEAVE_FROM: u64 = 1 << 20;

/// Bytes of a value per [`Blob`] frame.
pub const CHUNK: usize = 4 << 20;

/// The largest frame on a peer link: a node message with its wrapping.
pub const MAX_PEER_FRAME: u32 = frame::MAX_FRAME + (64 << 10);

/// The largest first frame (the hello).
pub const MAX_PEER_HELLO: u32 = 256 << 10;

/// Blobs a link may have half received at once.
pub const MAX_BLOBS: usize = 1024;

/// The largest executable a node takes from a peer.
pub const MAX_EXE: u64 = 4 << 30;

/// How long opening a link (connect, TLS, hello, the executable) may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one write may wait for the other side to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A peer whose link ended is attached again no sooner than this.
const REATTACH_AFTER: Duration = Duration::from_secs(1);

// ---- messages ----

#[derive(Clone, PartialEq, Message)]
pub struct ToPeer {
    #[prost(oneof = "ToPeerKind", tags = "1, 2, 3, 4, 5")]
    pub kind: Option<ToPeerKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ToPeerKind {
    #[prost(message, tag = "1")]
    Hello(PeerHello),
    /// A piece of the executable, after [`FromPeerKind::NeedExe`].
    #[prost(message, tag = "2")]
    Exe(Blob),
    #[prost(message, tag = "3")]
    Blob(Blob),
    /// A `ToNode` frame (step 3).
    #[prost(bytes = "vec", tag = "4")]
    Node(Vec<u8>),
    /// An actor whose handle the next task carries, and the node that owns
    /// it (step 3): the peer makes a proxy for it first.
    #[prost(message, tag = "5")]
    Reach(crate::wire::NamedActor),
}

#[derive(Clone, PartialEq, Message)]
pub struct FromPeer {
    #[prost(oneof = "FromPeerKind", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub kind: Option<FromPeerKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum FromPeerKind {
    #[prost(message, tag = "1")]
    Welcome(Welcome),
    /// Why the link is refused; it closes after this.
    #[prost(string, tag = "2")]
    Rejected(String),
    #[prost(message, tag = "3")]
    NeedExe(Empty),
    #[prost(message, tag = "4")]
    Blob(Blob),
    #[prost(bytes = "vec", tag = "5")]
    Node(Vec<u8>),
    /// Lines the program's workers printed there (step 3).
    #[prost(message, tag = "6")]
    Output(OutputLines),
    /// The proxy made by the handles of an actor this link brought is gone
    /// (step 3, `FromNode::HandleReleased`).
    #[prost(message, tag = "7")]
    Released(HandleRelease),
}

#[derive(Clone, PartialEq, Message)]
pub struct HandleRelease {
    /// The actor's id (`wire::actor_id_bytes`).
    #[prost(bytes = "vec", tag = "1")]
    pub actor_id: Vec<u8>,
    /// How many `Reach`es of it the link brought so far.
    #[prost(uint64, tag = "2")]
    pub reaches: u64,
}

/// The owner's side of step 3's hold on the actors a link lends: how many
/// `Reach`es of each actor it sent (over the link's life), and which it
/// holds the handle of here (for the peer's proxy).
#[derive(Default)]
struct Lent {
    sent: HashMap<ActorId, u64>,
    held: HashSet<ActorId>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OutputLines {
    #[prost(bool, tag = "1")]
    pub to_stderr: bool,
    #[prost(string, tag = "2")]
    pub text: String,
    /// The owner's task the worker ran (0 and 0: not known).
    #[prost(fixed64, tag = "3")]
    pub task_submitter: u64,
    #[prost(uint64, tag = "4")]
    pub task_seq: u64,
}

/// The most output text one message carries (a few whole lines).
pub const MAX_OUTPUT: usize = 256 << 10;

#[derive(Clone, PartialEq, Message)]
pub struct PeerHello {
    /// Always tag 1.
    #[prost(uint32, tag = "1")]
    pub protocol: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub token: Vec<u8>,
    #[prost(fixed64, tag = "3")]
    pub from_node: u64,
    #[prost(message, repeated, tag = "4")]
    pub commands: Vec<Command>,
    /// The Rust executable's SHA-256 (empty: no Rust command).
    #[prost(bytes = "vec", tag = "5")]
    pub exe_sha256: Vec<u8>,
    #[prost(uint64, tag = "6")]
    pub exe_len: u64,
}

/// How the owner's job starts a worker of one kind.
#[derive(Clone, PartialEq, Message)]
pub struct Command {
    /// `WorkerKind::index`.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// Ignored for the Rust kind (the shipped executable runs).
    #[prost(string, tag = "2")]
    pub program: String,
    #[prost(string, repeated, tag = "3")]
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    #[prost(string, repeated, tag = "4")]
    pub env: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Welcome {
    #[prost(fixed64, tag = "1")]
    pub node_id: u64,
    /// Bytes of the owner's objects this node keeps for later tasks
    /// (`Cache`); both ends apply the same rule to the same sequence.
    #[prost(uint64, tag = "2")]
    pub cache_bytes: u64,
}

/// In a submitted task's `TaskArg::Object` on the link, a `Shm` offset that
/// names no blob: the object was sent before and the other end kept it.
pub const CACHED: u64 = u64::MAX;

/// How the executing node keeps an object of the owner's, in the owner's
/// copy of its [`Cache`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kept {
    /// A task's argument: a value under an id of the link's.
    AsArgument,
    /// A copy that refs name (`ToNode::Import`): under its own id.
    AsItself,
}

/// The owner's objects an executing node keeps for later tasks (so several
/// tasks reading one object on that node share one transfer), and the
/// owner's copy of the same table: least recently used first out, within a
/// byte budget. Both ends change it only as the link's messages go, in the
/// same order, so they agree on what is kept without saying so.
struct Cache<V> {
    budget: u64,
    used: u64,
    /// Least recently used first.
    order: VecDeque<ObjectId>,
    entries: HashMap<ObjectId, (u64, V)>,
}

impl<V> Cache<V> {
    fn new(budget: u64) -> Self {
        Cache { budget, used: 0, order: VecDeque::new(), entries: HashMap::new() }
    }

    /// Whether an object of `len` bytes is kept when sent.
    fn admits(&self, len: u64) -> bool {
        len <= self.budget
    }

    /// The entry for `id`, now the most recently used.
    fn get(&mut self, id: ObjectId) -> Option<&V> {
        if self.entries.contains_key(&id) {
            if let Some(at) = self.order.iter().position(|o| *o == id) {
                self.order.remove(at);
            }
            self.order.push_back(id);
        }
        self.entries.get(&id).map(|(_, v)| v)
    }

    /// Keeps `id` (`admits(len)` must hold); what it pushed out.
    fn insert(&mut self, id: ObjectId, len: u64, v: V) -> Vec<V> {
        let mut out = Vec::new();
        while self.used + len > self.budget {
            let Some(old) = self.order.pop_front() else { break };
            if let Some((n, v)) = self.entries.remove(&old) {
                self.used -= n;
                out.push(v);
            }
        }
        self.used += len;
        self.order.push_back(id);
        self.entries.insert(id, (len, v));
        out
    }
}

/// `bytes` at `offset` of blob `id`, which is `total` bytes long. A blob's
/// chunks come in order, from offset 0.
#[derive(Clone, PartialEq, Message)]
pub struct Blob {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub total: u64,
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub bytes: Vec<u8>,
}

fn malformed(msg: String) -> ferroray_protocol::FrameError {
    ferroray_protocol::FrameError::Malformed(msg)
}

fn check_blob(b: &Blob) -> Result<(), ferroray_protocol::FrameError> {
    if b.bytes.len() > CHUNK || b.offset.checked_add(b.bytes.len() as u64).is_none_or(|end| end > b.total) {
        return Err(malformed(format!("a chunk of {} bytes at {} of {}", b.bytes.len(), b.offset, b.total)));
    }
    Ok(())
}

fn check_hello(h: &PeerHello) -> Result<(), ferroray_protocol::FrameError> {
    if h.commands.len() > WorkerKind::ALL.len() {
        return Err(malformed(format!("{} worker commands", h.commands.len())));
    }
    if h.commands.iter().any(|c| c.kind as usize >= WorkerKind::ALL.len()) {
        return Err(malformed("an unknown worker kind".into()));
    }
    if !h.exe_sha256.is_empty() && h.exe_sha256.len() != 32 || h.exe_len > MAX_EXE {
        return Err(malformed("a malformed executable hash or length".into()));
    }
    Ok(())
}

macro_rules! checked_wire {
    ($t:ty, $check:expr) => {
        impl WireMessage for $t {
            type Wire = $t;

            fn into_wire(self) -> Self::Wire {
                self
            }

            fn from_wire(wire: Self::Wire) -> Result<Self, ferroray_protocol::FrameError> {
                let check: fn(&$t) -> Result<(), ferroray_protocol::FrameError> = $check;
                check(&wire)?;
                Ok(wire)
            }
        }
    };
}

checked_wire!(ToPeer, |m| match &m.kind {
    None => Err(malformed("an empty or unknown peer message".into())),
    Some(ToPeerKind::Hello(h)) => check_hello(h),
    Some(ToPeerKind::Exe(b) | ToPeerKind::Blob(b)) => check_blob(b),
    Some(ToPeerKind::Node(_)) => Ok(()),
    // An unnamed actor's row has no name.
    Some(ToPeerKind::Reach(a)) => crate::wire::check_actor_row(a),
});

checked_wire!(FromPeer, |m| match &m.kind {
    None => Err(malformed("an empty or unknown peer message".into())),
    Some(FromPeerKind::Blob(b)) => check_blob(b),
    Some(FromPeerKind::Output(o)) if o.text.len() > MAX_OUTPUT => {
        Err(malformed(format!("{} bytes of output in one message", o.text.len())))
    }
    Some(_) => Ok(()),
});

/// The two directions' messages, for the code both sides share.
trait PeerMessage: WireMessage<Wire = Self> + Send + 'static {
    /// The oneof field number of [`Blob`] (written and read by hand, so
    /// that a value's bytes go from store to socket and socket to store).
    const BLOB_TAG: u32;
    fn node(bytes: Vec<u8>) -> Self;
}

impl PeerMessage for ToPeer {
    const BLOB_TAG: u32 = 3;
    fn node(bytes: Vec<u8>) -> Self {
        ToPeer { kind: Some(ToPeerKind::Node(bytes)) }
    }
}

impl PeerMessage for FromPeer {
    const BLOB_TAG: u32 = 4;
    fn node(bytes: Vec<u8>) -> Self {
        FromPeer { kind: Some(FromPeerKind::Node(bytes)) }
    }
}

fn peer_error(what: &str) -> impl FnOnce(String) -> ClusterError + '_ {
    move |e| ClusterError::Protocol(format!("peer link: {what}: {e}"))
}

// ---- frames on a link ----

/// Queued bytes past which the writer writes without waiting for its loop
/// to run out of work.
const QUEUE_FLUSH: usize = 256 << 10;

/// The sending half of a link. Messages are queued and written together
/// when the link's loop has nothing more to do (`flush`): many small
/// messages, one write (and one TLS record).
struct Writer<W> {
    stream: W,
    buf: Vec<u8>,
    /// Written since the last flush of the stream.
    dirty: bool,
    /// The next blob id this side gives (step 3).
    next_blob: u64,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn new(stream: W) -> Self {
        Writer { stream, buf: Vec::new(), dirty: false, next_blob: 1 }
    }

    /// Queues `msg` (written at the next `flush`, or at once past
    /// [`QUEUE_FLUSH`] bytes).
    async fn send<M: WireMessage>(&mut self, msg: M) -> Result<()> {
        frame::encode_into(&mut self.buf, msg)?;
        if self.buf.len() >= QUEUE_FLUSH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queues `msg` and writes everything queued.
    async fn send_now<M: WireMessage>(&mut self, msg: M) -> Result<()> {
        frame::encode_into(&mut self.buf, msg)?;
        self.flush().await
    }

    async fn write(&mut self, extra: &[u8]) -> Result<()> {
        let (stream, buf) = (&mut self.stream, &self.buf);
        tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(buf).await?;
            stream.write_all(extra).await
        })
        .await
        .map_err(|_| ClusterError::Timeout("a write to a peer node"))??;
        self.buf.clear();
        self.dirty = true;
        Ok(())
    }

    /// Writes everything queued.
    async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.write(&[]).await?;
        }
        if std::mem::take(&mut self.dirty) {
            tokio::time::timeout(WRITE_TIMEOUT, self.stream.flush())
                .await
                .map_err(|_| ClusterError::Timeout("a write to a peer node"))??;
        }
        Ok(())
    }

    async fn send_node<M: PeerMessage>(&mut self, msg: ToNode) -> Result<()> {
        let mut body = Vec::new();
        frame::encode_into(&mut body, msg)?;
        self.send(M::node(body)).await
    }

    /// Sends `bytes` as a new blob in chunks, each a hand-made [`Blob`]
    /// frame whose bytes are written from `bytes` itself; its id.
    async fn send_blob<M: PeerMessage>(&mut self, bytes: &[u8]) -> Result<u64> {
        let id = self.next_blob;
        self.next_blob += 1;
        let total = bytes.len() as u64;
        // An empty value is one empty chunk.
        let chunks = bytes.chunks(CHUNK).chain((total == 0).then_some(bytes));
        for (i, chunk) in chunks.enumerate() {
            let head = Blob { id, total, offset: (i * CHUNK) as u64, bytes: Vec::new() };
            blob_header(M::BLOB_TAG, &head, chunk.len(), &mut self.buf);
            self.write(chunk).await?;
        }
        Ok(id)
    }

    /// `value` with its shared-memory bytes (read from `arena`) sent as a
    /// blob first (step 3); inline values go as they are.
    async fn ship<M: PeerMessage>(&mut self, arena: &Arena, value: ObjectValue) -> Result<ObjectValue> {
        match value {
            ObjectValue::Data { payload: Payload::Shm { offset, len }, encoding, contained } => {
                // SAFETY: the caller holds a store pin on this sealed object
                // for its connection until this returns: its bytes neither
                // move nor change meanwhile.
                let bytes =
                    unsafe { arena.slice(offset, len) }.map_err(|e| peer_error("a stored value")(e.to_string()))?;
                let id = self.send_blob::<M>(bytes).await?;
                Ok(ObjectValue::Data { payload: Payload::Shm { offset: id, len }, encoding, contained })
            }
            other => Ok(other),
        }
    }
}

/// Appends the frame of a [`Blob`] with `len` bytes, up to its bytes
/// (which follow): the bytes prost would write for that message.
fn blob_header(tag: u32, b: &Blob, len: usize, out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut inner = Vec::with_capacity(40);
    for (field, v) in [(1, b.id), (2, b.total), (3, b.offset)] {
        if v != 0 {
            encode_key(field, WireType::Varint, &mut inner);
            encode_varint(v, &mut inner);
        }
    }
    encode_key(4, WireType::LengthDelimited, &mut inner);
    encode_varint(len as u64, &mut inner);
    let inner_len = inner.len() + len;
    let mut outer = Vec::with_capacity(16);
    encode_key(tag, WireType::LengthDelimited, &mut outer);
    encode_varint(inner_len as u64, &mut outer);
    out.extend_from_slice(&((outer.len() + inner_len) as u32).to_le_bytes());
    out.extend_from_slice(&outer);
    out.extend_from_slice(&inner);
}

/// Where a link's reader lands blobs: the link's store allocations.
#[derive(Clone)]
struct Lander {
    landing: Arc<Mutex<Landing>>,
    conn: Arc<LocalConnection>,
    arena: Arc<Arena>,
    /// The link's TCP socket when the link is plain (between loopback
    /// addresses), for reading chunks with a low-water mark
    /// (`read_chunk`); valid while the link's stream is, which the reader
    /// holds.
    plain: Option<RawFd>,
}

/// Reads a link's frames on a task of its own (a read given up halfway
/// would lose what it read) into a channel; `None` at the end. A blob's
/// bytes go from the socket into this node's store (`lander`), the other
/// messages are decoded and handed on.
fn spawn_reader<R, M>(mut stream: R, lander: Lander) -> mpsc::Receiver<Result<M>>
where
    R: AsyncRead + Unpin + Send + 'static,
    M: PeerMessage,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut body = Vec::new();
        loop {
            let msg = match read_one::<_, M>(&mut stream, &mut body, &lander).await {
                Ok(None) => continue,
                Ok(Some(m)) => Ok(m),
                Err(e) => Err(e),
            };
            let end = msg.is_err();
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    });
    rx
}

async fn read_varint<R: AsyncRead + Unpin>(r: &mut R, used: &mut u64) -> Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = r.read_u8().await?;
        *used += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(peer_error("frame")("a varint over 10 bytes".into()))
}

/// One frame: a message, or `None` for a blob's chunk (landed).
async fn read_one<R: AsyncRead + Unpin, M: PeerMessage>(
    r: &mut R,
    body: &mut Vec<u8>,
    lander: &Lander,
) -> Result<Option<M>> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = u64::from(u32::from_le_bytes(header));
    if len > u64::from(MAX_PEER_FRAME) {
        return Err(ferroray_protocol::FrameError::TooLarge(len as u32).into());
    }
    let mut used = 0u64;
    let key = read_varint(r, &mut used).await?;
    if key == (u64::from(M::BLOB_TAG) << 3 | 2) {
        let inner = read_varint(r, &mut used).await?;
        if used + inner != len {
            return Err(peer_error("blob")("its length disagrees with its frame".into()));
        }
        let mut b = Blob::default();
        loop {
            match read_varint(r, &mut used).await? {
                0x08 => b.id = read_varint(r, &mut used).await?,
                0x10 => b.total = read_varint(r, &mut used).await?,
                0x18 => b.offset = read_varint(r, &mut used).await?,
                0x22 => {
                    let n = read_varint(r, &mut used).await?;
                    if used + n != len || n > CHUNK as u64 {
                        return Err(peer_error("blob")(format!("a chunk of {n} bytes")));
                    }
                    b.bytes = Vec::new();
                    check_blob(&Blob { bytes: Vec::new(), ..b.clone() })?;
                    if b.offset.checked_add(n).is_none_or(|end| end > b.total) {
                        return Err(peer_error("blob")(format!("a chunk of {n} bytes at {} of {}", b.offset, b.total)));
                    }
                    lander.read_chunk(r, &b, n).await?;
                    return Ok(None);
                }
                other => return Err(peer_error("blob")(format!("an unknown field key {other}"))),
            }
        }
    }
    // Any other message: its whole body, decoded.
    if used > len {
        return Err(peer_error("frame")("a key longer than its frame".into()));
    }
    body.clear();
    prost::encoding::encode_varint(key, body);
    let start = body.len();
    body.resize(start + (len - used) as usize, 0);
    r.read_exact(&mut body[start..]).await?;
    Ok(Some(M::decode_body(body)?))
}

fn decode_node(bytes: &[u8]) -> Result<ToNode> {
    frame::read_frame::<_, ToNode>(&mut &bytes[..])?
        .ok_or_else(|| ClusterError::Protocol("peer link: an empty node message".into()))
}

// ---- blobs arriving into this node's store ----

/// Blobs being received on one link, each in an allocation of this node's
/// store made for it (aborted by the node if the link's connection goes).
#[derive(Default)]
struct Landing {
    blobs: HashMap<u64, Landed>,
}

/// One blob as it arrives.
struct Landed {
    /// Its allocation, or why the store refused one (its chunks are then
    /// read and dropped, and the value it was for becomes that error).
    at: std::result::Result<u64, Error>,
    total: u64,
    written: u64,
}

/// Reads all of `dst` from `r`, plain TCP socket `fd`'s stream, with the
/// socket's low-water mark (`SO_RCVLOWAT`) at what is left of it, up to
/// [`CHUNK`]: the reader wakes for a few large reads rather than for each
/// segment. On loopback a reader woken per segment is pulled onto the
/// writer's CPU by the kernel's wake-up placement now and then, and the two
/// copies then share one CPU: a 1 GiB transfer runs at about half speed
/// (2.0 against 4.4 GB/s). Over 43 trials with the mark, 2 ran so; over 44
/// without, 8. The mark never exceeds what is left of the chunk, which the
/// peer has sent or is sending, so a read cannot wait for bytes that do
/// not come; it is back at one byte (the default) before the next frame.
/// Setting it may grow the socket's receive buffer to fit, and clamp its
/// window at the mark (4 MiB, ample on loopback) for the link's life.
async fn read_in_large_parts<R: AsyncRead + Unpin>(r: &mut R, fd: RawFd, dst: &mut [u8]) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut done = 0;
    let mut mark = 0;
    let result = async {
        while done < dst.len() {
            let want = (dst.len() - done).min(CHUNK);
            if want != mark {
                set_rcvlowat(fd, want);
                mark = want;
            }
            match r.read(&mut dst[done..]).await? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                k => done += k,
            }
        }
        Ok(())
    }
    .await;
    if mark > 1 {
        set_rcvlowat(fd, 1);
    }
    result
}

/// Sets plain TCP socket `fd`'s low-water mark for reads; best effort (a
/// kernel that refuses leaves reads as they were).
fn set_rcvlowat(fd: RawFd, bytes: usize) {
    let v = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `fd` is the link's open socket (`Lander::plain`); the option
    // value is a c_int that lives for the call, with its size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Blobs at least this large have their pages faulted in ahead of the copy,
/// by a thread of their own.
const PREFAULT_FROM: u64 = 8 << 20;

impl Landing {
    /// Where chunk `b` (of `n` bytes) goes: the store offset, or `None` if
    /// the store refused the blob. Allocates on the first chunk. An error
    /// closes the link (the peer broke the protocol); a store that refuses
    /// the allocation does not.
    fn begin(&mut self, conn: &LocalConnection, arena: &Arc<Arena>, b: &Blob, n: u64) -> Result<Option<u64>> {
        if b.offset == 0 && !self.blobs.contains_key(&b.id) {
            if self.blobs.len() >= MAX_BLOBS {
                return Err(peer_error("blobs")(format!("more than {MAX_BLOBS} half received")));
            }
            let at = conn.allocate(b.total);
            if let (Ok(at), true) = (at.as_ref().copied(), b.total >= PREFAULT_FROM) {
                let (arena, total) = (arena.clone(), b.total);
                // Best effort (an old kernel refuses): the copy faults them else.
                tokio::task::spawn_blocking(move || arena.prefault(at, total));
            }
            self.blobs.insert(b.id, Landed { at, total: b.total, written: 0 });
        }
        let Some(l) = self.blobs.get_mut(&b.id) else {
            return Err(peer_error("blob")(format!("a chunk of blob {} before its start", b.id)));
        };
        if b.offset != l.written || b.total != l.total {
            return Err(peer_error("blob")(format!("chunk at {} of blob {} out of order", b.offset, b.id)));
        }
        l.written += n;
        Ok(l.at.as_ref().ok().map(|at| at + b.offset))
    }

    /// A value named by a message: a `Shm` payload names a whole blob, which
    /// becomes this node's allocation (or, if the store refused one, the
    /// value becomes the store's error).
    fn land(&mut self, value: &mut ObjectValue) -> Result<()> {
        if let ObjectValue::Data { payload: Payload::Shm { offset, len }, .. } = value {
            match self.blobs.remove(offset) {
                Some(l) if l.total == *len && l.written == l.total => match l.at {
                    Ok(at) => *offset = at,
                    Err(e) => *value = ObjectValue::Error(e),
                },
                _ => return Err(peer_error("value")(format!("blob {offset} of {len} bytes is not all here"))),
            }
        }
        Ok(())
    }
}

impl Lander {
    fn new(conn: Arc<LocalConnection>, arena: Arc<Arena>, plain: Option<RawFd>) -> Self {
        Lander { landing: Arc::new(Mutex::new(Landing::default())), conn, arena, plain }
    }

    /// Reads `n` bytes of blob `b` from `r` into their place in the store
    /// (or drops them, if the store refused the blob).
    async fn read_chunk<R: AsyncRead + Unpin>(&self, r: &mut R, b: &Blob, n: u64) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let at = self.landing.lock().begin(&self.conn, &self.arena, b, n)?;
        match at {
            Some(at) => {
                // SAFETY: this allocation was made for this blob alone
                // (`begin`) and is not sealed: nobody else reads or writes
                // it until the message naming it lands it, which comes after
                // this chunk on the same link; the chunk is in bounds.
                let dst = unsafe { self.arena.slice_mut(at, n) }.map_err(|e| peer_error("store")(e.to_string()))?;
                match self.plain {
                    Some(fd) => read_in_large_parts(r, fd, dst).await?,
                    None => drop(r.read_exact(dst).await?),
                }
            }
            None => {
                let mut left = n;
                let mut scratch = vec![0u8; 64 << 10];
                while left > 0 {
                    let k = left.min(scratch.len() as u64) as usize;
                    r.read_exact(&mut scratch[..k]).await?;
                    left -= k as u64;
                }
            }
        }
        Ok(())
    }

    fn land(&self, value: &mut ObjectValue) -> Result<()> {
        self.landing.lock().land(value)
    }
}

// ---- what a node tells a link's task ----

enum NodeEvent {
    Msg(FromNode),
    Closed(String),
}

/// An `Inbox` that hands the node's messages to the link's task.
struct ToTask(mpsc::UnboundedSender<NodeEvent>);

impl Inbox for ToTask {
    fn deliver(&self, msg: FromNode) {
        let _ = self.0.send(NodeEvent::Msg(msg));
    }

    fn closed(&self, reason: &str) {
        let _ = self.0.send(NodeEvent::Closed(reason.to_string()));
    }

    /// An unbounded channel's send: it never blocks and takes no lock a
    /// caller holds.
    fn delivers_anywhere(&self) -> bool {
        true
    }
}

/// What both sides of every link of this daemon share.
pub struct PeerContext {
    pub node: Arc<Node>,
    pub token: ClusterToken,
    /// Where shipped executables are kept (`exe/` in the session directory).
    pub exe_dir: PathBuf,
    /// This daemon's certificate for its peer port.
    pub identity: HeadIdentity,
    /// Links between loopback addresses use TLS too (`loopback`): neither
    /// made nor taken plain.
    pub tls_on_loopback: bool,
    /// The SHA-256 of the programs' Rust executables, by (path, length,
    /// time of change), for `job_exe_if`.
    pub job_exe: Mutex<HashMap<ExeStamp, [u8; 32]>>,
    /// Where a link gets an exported function a call names without its
    /// bytes: the cluster's function table.
    pub functions: Arc<dyn FunctionSource>,
    /// Results the links here keep for their owners (step 6), which
    /// another node's link may read (step 7).
    pub left_here: LeftHere,
}

/// Results the executing links of a daemon keep for their owners (step 6),
/// by the owner's id: the link's object here and the link's connection.
/// Another node's link of the same program reads one from here (step 7).
#[derive(Default)]
pub struct LeftHere(Mutex<HashMap<ObjectId, (ObjectId, u64)>>);

impl LeftHere {
    fn insert(&self, theirs: ObjectId, mine: ObjectId, holder: u64) {
        self.0.lock().insert(theirs, (mine, holder));
    }

    fn remove(&self, theirs: ObjectId, holder: u64) {
        let mut kept = self.0.lock();
        if kept.get(&theirs).is_some_and(|(_, h)| *h == holder) {
            kept.remove(&theirs);
        }
    }

    fn get(&self, theirs: ObjectId) -> Option<(ObjectId, u64)> {
        self.0.lock().get(&theirs).copied()
    }

    /// A link ended: what it kept went with it.
    fn forget_holder(&self, holder: u64) {
        self.0.lock().retain(|_, (_, h)| *h != holder);
    }
}

/// The cluster's function table as a link asks it (`crate::wire` step 9).
pub trait FunctionSource: Send + Sync {
    /// The bytes of `function`; `None` if the table does not have it. The
    /// answer may take as long as the head is away.
    fn fetch(&self, function: FunctionId) -> tokio::sync::oneshot::Receiver<Option<Vec<u8>>>;
}

/// How long a link waits for a function from the cluster's table before
/// it lets the call fail as one of a function never exported (the link
/// waits meanwhile: only the first call of a function on a node asks, and
/// a function not found is not asked for again on this link for as long).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A file as hashed: (path, length, time of change).
pub type ExeStamp = (PathBuf, u64, std::time::SystemTime);

/// What a link runs on: TLS, or TCP between loopback addresses.
trait LinkIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkIo for T {}
type LinkStream = Box<dyn LinkIo>;

// ---- the owner's side (steps 1 to 3, 5) ----

/// The peers this daemon's node may send tasks to, kept in step with the
/// head's view (step 1).
pub struct Peers {
    ctx: Arc<PeerContext>,
    /// One link per other node and program of this node's
    /// (`ferroray_node`'s `jobs` step 8).
    links: Mutex<HashMap<(NodeId, ProgramId), Attached>>,
    /// The alive other nodes of the last view, for attaching a program
    /// that starts between two views.
    alive: Mutex<HashMap<NodeId, PeerAddr>>,
}

impl Peers {
    /// The other nodes alive as of the last view.
    pub fn known(&self) -> usize {
        self.alive.lock().len()
    }
}

struct Attached {
    task: tokio::task::JoinHandle<()>,
    /// When its link ended (it is attached again a while later).
    ended: Arc<Mutex<Option<Instant>>>,
}

/// A peer as the view describes it.
#[derive(Clone)]
struct PeerAddr {
    node: NodeId,
    address: String,
    fingerprint: Fingerprint,
    total: ResourceSet,
    /// It takes plain links between loopback addresses.
    plain: bool,
}

impl Peers {
    pub fn new(ctx: Arc<PeerContext>) -> Arc<Self> {
        Arc::new(Peers { ctx, links: Mutex::new(HashMap::new()), alive: Mutex::new(HashMap::new()) })
    }

    /// Attaches the alive nodes of `view` that are not attached, and
    /// detaches the others (their tasks are retried). Called on the
    /// daemon's runtime.
    pub fn update(&self, view: &ClusterView) {
        let me = self.ctx.node.info().node_id;
        let mut alive = HashMap::new();
        for entry in view.nodes.iter().filter(|n| n.alive) {
            let Some(d) = &entry.desc else { continue };
            let Ok(fp) = <[u8; 32]>::try_from(d.peer_fingerprint.as_slice()) else { continue };
            if d.node_id == me.0 || d.peer_port == 0 || d.peer_port > u16::MAX as u32 {
                continue;
            }
            let host = if d.address.contains(':') { format!("[{}]", d.address) } else { d.address.clone() };
            alive.insert(
                NodeId(d.node_id),
                PeerAddr {
                    node: NodeId(d.node_id),
                    address: format!("{host}:{}", d.peer_port),
                    fingerprint: Fingerprint(fp),
                    total: ResourceSet::from_fixed(d.resources.clone()),
                    plain: d.plain_loopback_links,
                },
            );
        }
        // What each node had free at its last heartbeat: what other owners
        // use there comes off its room.
        let loads: Vec<(NodeId, ResourceSet)> = view
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| {
                Some((NodeId(n.desc.as_ref()?.node_id), ResourceSet::from_fixed(n.load.as_ref()?.available.clone())))
            })
            .filter(|(id, _)| alive.contains_key(id))
            .collect();
        self.ctx.node.peer_loads(&loads);
        let dead: Vec<NodeId> =
            view.nodes.iter().filter(|n| !n.alive).filter_map(|n| Some(NodeId(n.desc.as_ref()?.node_id))).collect();
        if !dead.is_empty() {
            self.ctx.node.peers_dead(&dead);
        }
        *self.alive.lock() = alive;
        self.refresh();
    }

    /// Attaches each alive node of the last view for each program of this
    /// node's that has no link there, and detaches the links of nodes not
    /// alive (their tasks are retried). Called on the daemon's runtime, by
    /// `update` and when a program starts or ends.
    pub fn refresh(&self) {
        let alive = self.alive.lock().clone();
        let programs = self.ctx.node.programs();
        let mut links = self.links.lock();
        // A link of a program that ended stays until its node closes it
        // (`close_ended_links`): a detached actor of it may run there.
        links.retain(|(id, _), a| {
            let keep = match *a.ended.lock() {
                // Not attached again before the pause is over (step 5).
                Some(t) => t.elapsed() < REATTACH_AFTER,
                None => alive.contains_key(id) && !a.task.is_finished(),
            };
            if !keep {
                // Its connection goes with the task: what it ran is retried.
                a.task.abort();
            }
            keep
        });
        for ((id, peer), (program, _)) in alive.iter().flat_map(|a| programs.iter().map(move |p| (a, p))) {
            if links.contains_key(&(*id, *program)) {
                continue;
            }
            let (id, peer, program) = (*id, peer.clone(), *program);
            let ended = Arc::new(Mutex::new(None));
            let (tx, rx) = mpsc::unbounded_channel();
            let conn = self.ctx.node.attach_peer(id, program, peer.total.clone(), Arc::new(ToTask(tx)));
            let ctx = self.ctx.clone();
            let mark = ended.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = outgoing(ctx, peer.clone(), program, conn, rx).await {
                    tracing::warn!("link to node {} at {} ({program}): {e}", peer.node, peer.address);
                }
                *mark.lock() = Some(Instant::now());
                // Stay "attached but ended" until the pause is over.
                tokio::time::sleep(REATTACH_AFTER).await;
            });
            links.insert((id, program), Attached { task, ended });
        }
    }

    /// Detaches every peer.
    pub fn clear(&self) {
        for (_, a) in self.links.lock().drain() {
            a.task.abort();
        }
    }
}

/// What a link's loop tells this node: queued, and handed over in one go
/// (one lock of the node, one write to each worker or driver the answers
/// concern) when the loop has nothing more at hand, before it writes to
/// the peer.
struct NodeOut {
    conn: Arc<LocalConnection>,
    queue: Mutex<Vec<ToNode>>,
}

impl NodeOut {
    fn new(conn: Arc<LocalConnection>) -> Self {
        NodeOut { conn, queue: Mutex::new(Vec::new()) }
    }

    fn send(&self, msg: ToNode) {
        self.queue.lock().push(msg);
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    /// Hands what is queued to the node, in order.
    fn flush(&self) {
        let msgs = std::mem::take(&mut *self.queue.lock());
        if !msgs.is_empty() {
            self.conn.send_all(msgs);
        }
    }
}

/// What the owner's side of a link keeps between the node's messages.
struct OwnerSide {
    gathering: HashMap<TaskId, Gathering>,
    cache: Cache<Kept>,
    /// The node's `Forget`s of results left there that a task being
    /// gathered names (step 6): sent once it went.
    forgets: Vec<ObjectId>,
    /// The next task's arguments kept on other nodes, from the node's
    /// `Elsewhere` before its `Execute` (step 7).
    elsewhere: Vec<(ObjectId, NodeId)>,
}

/// A task the owner's node sent, waiting for ref arguments to arrive.
struct Gathering {
    spec: TaskSpec,
    /// Arguments not yet in hand, by object.
    missing: Vec<ObjectId>,
    /// Objects named inside the arguments: the peer gets a copy of each
    /// before the task (`ToNode::Import`).
    named: Named,
    /// Its arguments kept on other nodes, and which (step 7).
    elsewhere: Vec<(ObjectId, NodeId)>,
}

/// Objects named by values, at any depth, asked of this node to send
/// copies of them ahead of what names them (step 3).
#[derive(Default)]
struct Named {
    /// Asked for, not answered yet.
    waiting: Vec<ObjectId>,
    /// Every object asked for, so each is asked for once.
    seen: HashSet<ObjectId>,
    /// Answered, in the order they came: an object before the ones it names.
    got: Vec<(ObjectId, ObjectValue)>,
}

impl Named {
    /// Asks the node for the objects `value` names that were not asked for yet.
    fn ask(&mut self, conn: &NodeOut, value: &ObjectValue) {
        if let ObjectValue::Data { contained, .. } = value {
            self.ask_ids(conn, contained);
        }
    }

    /// Asks the node for those of `ids` that were not asked for yet.
    fn ask_ids(&mut self, conn: &NodeOut, ids: &[ObjectId]) {
        let new: Vec<ObjectId> = ids.iter().copied().filter(|c| self.seen.insert(*c)).collect();
        if !new.is_empty() {
            self.waiting.extend_from_slice(&new);
            conn.send(ToNode::Subscribe(new));
        }
    }

    /// Takes the node's answer for `id`, one of `waiting`, and asks for
    /// what it names in turn.
    fn answer(&mut self, conn: &NodeOut, id: ObjectId, value: ObjectValue) {
        if let Some(at) = self.waiting.iter().position(|w| *w == id) {
            self.waiting.swap_remove(at);
        }
        self.ask(conn, &value);
        self.got.push((id, value));
    }
}

impl Gathering {
    /// Whether an argument names `id`, a result left on the peer (step 6).
    fn names_left(&self, id: ObjectId) -> bool {
        self.spec
            .args
            .iter()
            .any(|a| matches!(a, TaskArg::Object { id: x, payload, .. } if *x == id && payload.is_left_on_peer()))
    }

    /// Gives back the store pins of what was gathered (the task goes no
    /// further), and the task.
    fn release(self, conn: &NodeOut) -> TaskSpec {
        let mut unpin: Vec<ObjectId> = self.named.got.iter().filter(|(_, v)| is_shm(v)).map(|(id, _)| *id).collect();
        for arg in &self.spec.args {
            if let TaskArg::Object { id, payload: payload @ Payload::Shm { .. }, .. } = arg {
                // One left on a peer is not pinned here (steps 6 and 7).
                if !payload.is_left_on_peer() && !payload.is_left_elsewhere() {
                    unpin.push(*id);
                }
            }
        }
        if !unpin.is_empty() {
            conn.send(ToNode::Unpin(unpin));
        }
        self.spec
    }
}

/// Step 6: a value a task leaves here rather than sending it at once:
/// shared memory of at least [`LEAVE_FROM`] bytes that names no objects.
fn stays_here(value: &ObjectValue) -> bool {
    matches!(value, ObjectValue::Data { payload: Payload::Shm { len, .. }, contained, .. }
        if *len >= LEAVE_FROM && contained.is_empty())
}

fn is_shm(value: &ObjectValue) -> bool {
    matches!(value, ObjectValue::Data { payload: Payload::Shm { .. }, .. })
}

/// A value that cannot travel as a plain argument: it names other objects,
/// or it is one the node made (a dynamic generator's list). It goes as a
/// copy under its own id (`ToNode::Import`), and the argument names it.
fn goes_as_import(value: &ObjectValue) -> bool {
    matches!(value, ObjectValue::Data { contained, encoding, .. }
        if !contained.is_empty() || !matches!(encoding, ferroray_protocol::Encoding::Rust | ferroray_protocol::Encoding::Raw))
}

/// One link, the owner's side, from attach to end.
async fn outgoing(
    ctx: Arc<PeerContext>,
    peer: PeerAddr,
    program: ProgramId,
    conn: LocalConnection,
    mut from_node: mpsc::UnboundedReceiver<NodeEvent>,
) -> Result<()> {
    // Opened at the first message (step 1).
    let first = match from_node.recv().await {
        Some(NodeEvent::Msg(m)) => m,
        _ => return Ok(()),
    };
    let (stream, plain, welcome) = tokio::time::timeout(OPEN_TIMEOUT, open(&ctx, &peer, program))
        .await
        .map_err(|_| ClusterError::Timeout("opening a link to a peer node"))??;
    let (read, write) = tokio::io::split(stream);
    let mut writer = Writer::new(write);
    let conn = Arc::new(conn);
    let arena = ctx.node.arena().clone();
    let lander = Lander::new(conn.clone(), arena.clone(), plain);
    let out = NodeOut::new(conn);
    let mut from_peer = spawn_reader::<_, FromPeer>(read, lander.clone());
    let mut side = OwnerSide {
        gathering: HashMap::new(),
        cache: Cache::new(welcome.cache_bytes),
        forgets: Vec::new(),
        elsewhere: Vec::new(),
    };
    let mut lent = Lent::default();
    let mut pending = VecDeque::from([first]);
    let closed = 'link: loop {
        // Everything the node and the peer have sent so far, handed on;
        // then one write to the peer.
        loop {
            while let Some(msg) = pending.pop_front() {
                if let FromNode::Execute(spec) = &msg {
                    send_reaches(&ctx.node, peer.node, &mut writer, spec, &mut lent, &out).await?;
                }
                owner_node_msg(&out, &arena, &mut writer, &mut side, msg).await?;
                if !side.forgets.is_empty() {
                    // Those no task being gathered names any more.
                    let gathering = &side.gathering;
                    let now: Vec<ObjectId> = side
                        .forgets
                        .iter()
                        .copied()
                        .filter(|id| !gathering.values().any(|g| g.names_left(*id)))
                        .collect();
                    if !now.is_empty() {
                        side.forgets.retain(|id| !now.contains(id));
                        writer.send_node::<ToPeer>(ToNode::RemoveRef(now)).await?;
                    }
                }
            }
            loop {
                match from_peer.try_recv() {
                    Ok(msg) => from_executor(&ctx, &lander, &out, &mut lent, msg?)?,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                    }
                }
            }
            // The node's answers (an `Execute` for the room a `TaskDone`
            // made) come back through `from_node` at once.
            out.flush();
            match from_node.try_recv() {
                Ok(NodeEvent::Msg(m)) => pending.push_back(m),
                Ok(NodeEvent::Closed(reason)) => break 'link reason,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        writer.flush().await?;
        tokio::select! {
            ev = from_node.recv() => match ev {
                Some(NodeEvent::Msg(m)) => pending.push_back(m),
                Some(NodeEvent::Closed(reason)) => break 'link reason,
                None => return Ok(()),
            },
            msg = from_peer.recv() => {
                let msg = msg.unwrap_or_else(|| Err(ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into())))?;
                from_executor(&ctx, &lander, &out, &mut lent, msg)?;
            }
        }
    };
    // The node closed the link (its program ended, say): what it sent
    // before goes out, then the other node sees the link end (its reader
    // holds the other half of the stream, so dropping this one would not).
    writer.flush().await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.stream.shutdown()).await;
    tracing::debug!("link to node {} closed: {closed}", peer.node);
    Ok(())
}

/// Step 3: for each actor handle a task's arguments carry (its call's own
/// actor aside: the peer has that one, or reaches it by name), what the
/// peer needs to call it from there, ahead of the task. The link holds the
/// handle object here from the first (counted in `lent`), so what it names
/// lives while the peer's proxy does: this node's actor, or this node's
/// proxy of a third node's actor, which in turn keeps its own owner's link
/// holding it (a borrower's borrower, as Ray counts them).
async fn send_reaches<W: AsyncWrite + Unpin>(
    node: &Node,
    to: NodeId,
    writer: &mut Writer<W>,
    spec: &TaskSpec,
    lent: &mut Lent,
    out: &NodeOut,
) -> Result<()> {
    let own = spec.actor_id().filter(|_| matches!(spec.actor, Some(ActorTask::Call { .. })));
    for id in &spec.contained {
        if own.is_some_and(|a| a.handle_object() == *id) {
            continue;
        }
        if let Some(found) = node.actor_of_handle(*id) {
            // The peer's own actor: it makes no proxy, so it never says
            // one is gone; nothing to hold.
            if found.node != to {
                let actor = found.entry.actor;
                *lent.sent.entry(actor).or_default() += 1;
                // The task (assigned to this link) shows it the handle: it
                // may hold it.
                if lent.held.insert(actor) {
                    out.send(ToNode::AddRef(vec![actor.handle_object()]));
                }
            }
            let row = crate::wire::actor_row(found.node, &found.entry);
            writer.send(ToPeer { kind: Some(ToPeerKind::Reach(row)) }).await?;
        }
    }
    Ok(())
}

/// One message of the executing node, on the owner's side (steps 3 and 4):
/// its values landed in this store, checked as the node's socket checks,
/// and queued for the node.
fn from_executor(ctx: &PeerContext, lander: &Lander, out: &NodeOut, lent: &mut Lent, msg: FromPeer) -> Result<()> {
    match msg.kind {
        // Step 3: the peer's proxy is gone; the hold goes unless a `Reach`
        // sent since makes another.
        Some(FromPeerKind::Released(r)) => {
            let actor = crate::wire::actor_id_from(&r.actor_id)
                .ok_or_else(|| peer_error("a released handle")("a malformed actor id".into()))?;
            if lent.sent.get(&actor) == Some(&r.reaches) && lent.held.remove(&actor) {
                out.send(ToNode::RemoveRef(vec![actor.handle_object()]));
            }
            Ok(())
        }
        Some(FromPeerKind::Node(bytes)) => {
            let mut msg = decode_node(&bytes)?;
            match &mut msg {
                ToNode::TaskDone { outcome: TaskOutcome::Returned(values), .. } => {
                    for v in values.iter_mut() {
                        land_unless_left(lander, v)?;
                    }
                }
                ToNode::TaskDone { .. } => {}
                ToNode::ReportItem { value, .. } => land_unless_left(lander, value)?,
                // Copies of objects a result names, and the link's
                // references to them let go once the result holds them
                // (`return_values`).
                ToNode::Import { value, .. } => lander.land(value)?,
                ToNode::RemoveRef(_) => {}
                other => {
                    return Err(peer_error("a message out of turn")(format!("{other:?}")));
                }
            }
            msg.check().map_err(ClusterError::Node)?;
            out.send(msg);
            Ok(())
        }
        Some(FromPeerKind::Output(o)) => {
            let task =
                (o.task_submitter != 0).then_some(TaskId { submitter: WorkerId(o.task_submitter), seq: o.task_seq });
            ctx.node.output(o.to_stderr, &o.text, task);
            Ok(())
        }
        Some(FromPeerKind::Rejected(why)) => Err(ClusterError::Refused(why)),
        _ => Err(peer_error("a message out of turn")("hello".into())),
    }
}

/// Lands a value the executing node sent, but for one it left there (step
/// 6), which has no blob.
fn land_unless_left(lander: &Lander, value: &mut ObjectValue) -> Result<()> {
    match value {
        ObjectValue::Data { payload, .. } if payload.is_left_on_peer() => Ok(()),
        value => lander.land(value),
    }
}

/// Connects to `peer` for `program`'s tasks, says hello with its commands,
/// ships the executable if asked (step 2).
/// With the link's stream, its TCP socket if the link is plain.
async fn open(ctx: &PeerContext, peer: &PeerAddr, program: ProgramId) -> Result<(LinkStream, Option<RawFd>, Welcome)> {
    let mut tcp = TcpStream::connect(&peer.address)
        .await
        .map_err(|source| ClusterError::Unreachable { addr: peer.address.clone(), source })?;
    let _ = tcp.set_nodelay(true);
    // Plain between loopback addresses (`loopback`), else TLS pinned to
    // the peer's certificate.
    let plain = (peer.plain && loopback::allowed_on(&tcp, ctx.tls_on_loopback)).then(|| tcp.as_raw_fd());
    let stream: LinkStream = if plain.is_some() {
        loopback::call(&mut tcp, &ctx.token).await?;
        Box::new(tcp)
    } else {
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(peer.fingerprint)?);
        Box::new(connector.connect(tls::head_name(), tcp).await.map_err(tls::stream_error)?)
    };
    let (read, write) = tokio::io::split(stream);
    let mut writer = Writer::new(write);
    let mut reader = read;
    let mut commands = Vec::new();
    let mut exe = None;
    let commands_of = ctx.node.programs().into_iter().find(|(p, _)| *p == program).map(|(_, c)| c);
    let Some(program_commands) = commands_of else {
        return Err(peer_error("the link")(format!("{program} ended")));
    };
    for (kind, c) in program_commands {
        if kind == WorkerKind::Rust {
            exe = Some(c.program.clone());
        }
        commands.push(Command {
            kind: kind.index() as u32,
            program: c.program.to_string_lossy().into_owned(),
            args: c.args.clone(),
            env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        });
    }
    let (exe_sha256, exe_len) = match &exe {
        Some(p) => {
            let (sha, len) = file_sha256(p.clone()).await?;
            (sha.to_vec(), len)
        }
        None => (Vec::new(), 0),
    };
    let hello = PeerHello {
        protocol: PEER_PROTOCOL_VERSION,
        // A plain link's handshake proved the token already: it is not
        // sent where TLS does not hide it.
        token: if plain.is_some() { Vec::new() } else { ctx.token.as_bytes().to_vec() },
        from_node: ctx.node.info().node_id.0,
        commands,
        exe_sha256,
        exe_len,
    };
    writer.send_now(ToPeer { kind: Some(ToPeerKind::Hello(hello)) }).await?;
    let mut body = Vec::new();
    let welcome = loop {
        let answer = frame::read_frame_async_max::<_, FromPeer>(&mut reader, &mut body, MAX_PEER_FRAME)
            .await?
            .ok_or_else(|| ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
        match answer.kind {
            // Whoever holds the token could answer on that port: it must
            // be the node the view names.
            Some(FromPeerKind::Welcome(w)) if w.node_id == peer.node.0 => break w,
            Some(FromPeerKind::Welcome(w)) => {
                return Err(peer_error("hello")(format!("node {} answered for node {}", NodeId(w.node_id), peer.node)))
            }
            Some(FromPeerKind::Rejected(why)) => return Err(ClusterError::Refused(why)),
            Some(FromPeerKind::NeedExe(_)) => {
                let path = exe.clone().ok_or_else(|| peer_error("hello")("asked for no executable".into()))?;
                let read = path.clone();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(&read))
                    .await
                    .map_err(|e| peer_error("reading the executable")(e.to_string()))?
                    .map_err(ClusterError::file("cannot read", &path))?;
                let total = bytes.len() as u64;
                for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
                    let b = Blob { id: 0, total, offset: (i * CHUNK) as u64, bytes: chunk.to_vec() };
                    writer.send(ToPeer { kind: Some(ToPeerKind::Exe(b)) }).await?;
                }
                writer.flush().await?;
            }
            _ => return Err(peer_error("hello")("an answer out of turn".into())),
        }
    };
    Ok((reader.unsplit(writer.stream), plain, welcome))
}

/// SHA-256 and length of a file (read off the runtime's thread).
async fn file_sha256(path: PathBuf) -> Result<([u8; 32], u64)> {
    tokio::task::spawn_blocking(move || -> Result<([u8; 32], u64)> {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).map_err(ClusterError::file("cannot read", &path))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(ClusterError::file("cannot read", &path))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            ctx.update(&buf[..n]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok((out, len))
    })
    .await
    .map_err(|e| peer_error("hashing the executable")(e.to_string()))?
}

/// One message of the owner's node to the peer (steps 2 and 3).
async fn owner_node_msg<W: AsyncWrite + Unpin>(
    conn: &NodeOut,
    arena: &Arena,
    writer: &mut Writer<W>,
    side: &mut OwnerSide,
    msg: FromNode,
) -> Result<()> {
    let OwnerSide { gathering, cache, forgets, elsewhere } = side;
    match msg {
        // Step 7: the next task's arguments read from other nodes.
        FromNode::Elsewhere { ids, node } => elsewhere.extend(ids.into_iter().map(|id| (id, node))),
        FromNode::Execute(spec) => {
            let elsewhere = std::mem::take(elsewhere);
            let tid = spec.task_id;
            // An actor call carries its actor's handle: the peer has the actor.
            let handle = match &spec.actor {
                Some(ActorTask::Call { actor }) => Some(actor.handle_object()),
                _ => None,
            };
            let missing: Vec<ObjectId> =
                spec.args.iter().filter_map(|a| if let TaskArg::Ref(id) = a { Some(*id) } else { None }).collect();
            let nested: Vec<ObjectId> = spec.contained.iter().copied().filter(|c| Some(*c) != handle).collect();
            if missing.is_empty() && nested.is_empty() {
                return send_task(conn, arena, writer, cache, *spec, &elsewhere).await;
            }
            if !missing.is_empty() {
                conn.send(ToNode::Subscribe(missing.clone()));
            }
            let mut g = Gathering { spec: *spec, missing, named: Named::default(), elsewhere };
            // Objects named inside the arguments: the peer gets a copy of
            // each (and of what they name), so its refs work there.
            g.named.ask_ids(conn, &nested);
            gathering.insert(tid, g);
        }
        FromNode::ObjectReady { id, value } => {
            // One answer per `Subscribe` of one object: it fills the first
            // task still waiting for `id` (an argument before a named
            // object), which takes its store pin (released once sent);
            // with none waiting (the task was cancelled meanwhile) the pin
            // goes back at once.
            let pinned = is_shm(&value);
            let found = gathering
                .iter()
                .find(|(_, g)| g.missing.contains(&id) || g.named.waiting.contains(&id))
                .map(|(t, _)| *t);
            let Some(tid) = found else {
                if pinned {
                    conn.send(ToNode::Unpin(vec![id]));
                }
                return Ok(());
            };
            let g = gathering.get_mut(&tid).expect("found above");
            if let Some(at) = g.missing.iter().position(|m| *m == id) {
                g.missing.swap_remove(at);
                let slot = g.spec.args.iter().position(|a| *a == TaskArg::Ref(id));
                match &value {
                    ObjectValue::Error(e) => {
                        let e = e.clone();
                        let spec = gathering.remove(&tid).expect("found above").release(conn);
                        return fail_here(conn, &spec, e);
                    }
                    // Sent ahead as a copy; the argument stays a ref to it.
                    v if goes_as_import(v) => {
                        g.named.ask(conn, v);
                        g.named.got.push((id, value));
                    }
                    ObjectValue::Data { payload, encoding, .. } => match slot {
                        Some(i) => {
                            g.spec.args[i] = TaskArg::Object { id, payload: payload.clone(), encoding: *encoding }
                        }
                        None if pinned => conn.send(ToNode::Unpin(vec![id])),
                        None => {}
                    },
                }
            } else {
                // An error is copied too: the task's `get` of it raises there.
                g.named.answer(conn, id, value);
            }
            if g.missing.is_empty() && g.named.waiting.is_empty() {
                let g = gathering.remove(&tid).expect("found above");
                send_imports(conn, arena, writer, cache, g.named.got).await?;
                send_task(conn, arena, writer, cache, g.spec, &g.elsewhere).await?;
            }
        }
        FromNode::CancelRunning { task_id, force } => {
            if let Some(g) = gathering.remove(&task_id) {
                return fail_here(conn, &g.release(conn), Error::TaskCancelled);
            }
            let cancel = ToNode::Cancel { task_id, force, recursive: true, force_after_ms: None };
            writer.send_node::<ToPeer>(cancel).await?;
        }
        FromNode::ItemAck { task_id, index, gone } => {
            let consumed = index + 1;
            let msg = if gone {
                ToNode::StreamDrop { task_id, consumed }
            } else {
                ToNode::StreamConsumed { task_id, consumed }
            };
            writer.send_node::<ToPeer>(msg).await?;
        }
        FromNode::KillActor { actor, no_restart } => {
            writer.send_node::<ToPeer>(ToNode::KillActor { actor, no_restart }).await?;
        }
        // Step 6: results left there, read here or let go.
        FromNode::Pull(ids) => writer.send_node::<ToPeer>(ToNode::Subscribe(ids)).await?,
        FromNode::Forget(ids) => {
            // A task still gathered names it: the peer must keep it for
            // that task, which goes first.
            let (later, now): (Vec<ObjectId>, Vec<ObjectId>) =
                ids.into_iter().partition(|id| gathering.values().any(|g| g.names_left(*id)));
            forgets.extend(later);
            if !now.is_empty() {
                writer.send_node::<ToPeer>(ToNode::RemoveRef(now)).await?;
            }
        }
        FromNode::Rejected(e) => return Err(ClusterError::Node(e)),
        _ => {}
    }
    Ok(())
}

/// Ends a task that cannot be sent, as its executor would.
fn fail_here(conn: &NodeOut, spec: &TaskSpec, e: Error) -> Result<()> {
    let outcome = TaskOutcome::Failed(e);
    conn.send(ToNode::TaskDone { task_id: spec.task_id, attempt: spec.attempt, outcome });
    Ok(())
}

/// Sends the copies of objects a task's arguments name (step 3), each
/// after the objects it names itself (so each one's refs resolve there as
/// it lands), then gives back their store pins here.
async fn send_imports<W: AsyncWrite + Unpin>(
    conn: &NodeOut,
    arena: &Arena,
    writer: &mut Writer<W>,
    cache: &mut Cache<Kept>,
    imports: Vec<(ObjectId, ObjectValue)>,
) -> Result<()> {
    let mut unpin = Vec::new();
    for (id, value) in imports.into_iter().rev() {
        let shm = match &value {
            ObjectValue::Data { payload: Payload::Shm { len, .. }, encoding, contained } => {
                unpin.push(id);
                Some((*len, *encoding, contained.clone()))
            }
            _ => None,
        };
        let value = match shm {
            Some((len, encoding, contained)) => match cache.get(id).copied() {
                // The peer kept it from an earlier task under this id:
                // named, not sent again (both ends touch it in their tables).
                Some(Kept::AsItself) => {
                    ObjectValue::Data { payload: Payload::Shm { offset: CACHED, len }, encoding, contained }
                }
                // Kept there as an argument, under the link's id: a copy
                // under this one goes again (and is not kept twice).
                Some(Kept::AsArgument) => writer.ship::<ToPeer>(arena, value).await?,
                None => {
                    let shipped = writer.ship::<ToPeer>(arena, value).await?;
                    if cache.admits(len) {
                        // Kept there from now on.
                        cache.insert(id, len, Kept::AsItself);
                    }
                    shipped
                }
            },
            None => value,
        };
        writer.send_node::<ToPeer>(ToNode::Import { id, value }).await?;
    }
    if !unpin.is_empty() {
        conn.send(ToNode::Unpin(unpin));
    }
    Ok(())
}

/// Sends a task whose arguments are all in hand (step 3): shared-memory
/// ones as blobs, then unpinned; each one kept on another node (step 7,
/// `elsewhere`) as a `Borrow` naming that node, just before it.
async fn send_task<W: AsyncWrite + Unpin>(
    conn: &NodeOut,
    arena: &Arena,
    writer: &mut Writer<W>,
    cache: &mut Cache<Kept>,
    mut spec: TaskSpec,
    elsewhere: &[(ObjectId, NodeId)],
) -> Result<()> {
    let mut unpin = Vec::new();
    for arg in spec.args.iter_mut() {
        let TaskArg::Object { id, payload, encoding } = arg else { continue };
        let id = *id;
        if payload.is_left_on_peer() {
            // Already there (step 6): the link there names its own copy.
            continue;
        }
        if payload.is_left_elsewhere() {
            // Read there from the node keeping it (step 7). Named by none,
            // it stays unnamed: the peer refuses the task.
            if let Some((_, node)) = elsewhere.iter().find(|(x, _)| *x == id) {
                let borrow = ToNode::Borrow { id, node: *node, len: payload.len(), encoding: *encoding };
                writer.send_node::<ToPeer>(borrow).await?;
            }
            continue;
        }
        let Payload::Shm { len, .. } = *payload else {
            // Inline: in the message itself.
            *arg = TaskArg::Value { payload: payload.clone(), encoding: *encoding };
            continue;
        };
        unpin.push(id);
        if cache.get(id).is_some() {
            // The peer kept it: named, not sent again.
            *arg = TaskArg::Object { id, payload: Payload::Shm { offset: CACHED, len }, encoding: *encoding };
            continue;
        }
        let value = ObjectValue::Data { payload: payload.clone(), encoding: *encoding, contained: vec![] };
        let ObjectValue::Data { payload, encoding, .. } = writer.ship::<ToPeer>(arena, value).await? else {
            unreachable!("shipped as data")
        };
        if cache.admits(len) {
            // Kept there from now on (under its id here).
            cache.insert(id, len, Kept::AsArgument);
            *arg = TaskArg::Object { id, payload, encoding };
        } else {
            *arg = TaskArg::Value { payload, encoding };
        }
    }
    if !unpin.is_empty() {
        conn.send(ToNode::Unpin(unpin));
    }
    writer.send_node::<ToPeer>(ToNode::Submit(Box::new(spec))).await
}

// ---- the executing side (steps 2 to 5) ----

/// Serves peer links on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>, ctx: Arc<PeerContext>) {
    let acceptor = match ctx.identity.server_config() {
        Ok(c) => tokio_rustls::TlsAcceptor::from(c),
        Err(e) => {
            tracing::error!("peer links: {e}");
            return;
        }
    };
    let mut links = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((tcp, addr)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
                links.spawn(async move {
                    if let Err(e) = accept(acceptor, tcp, ctx).await {
                        tracing::warn!("peer link from {addr}: {e}");
                    }
                });
            }
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
    links.abort_all();
}

/// A task this node runs for the owner at the other end.
struct Running {
    /// The owner's id and attempt, which its messages carry.
    owner_id: TaskId,
    attempt: u32,
    /// Fixed returns: the values as they come.
    values: Vec<Option<ObjectValue>>,
    /// A generator: items not yet relayed, in order (a shared-memory one
    /// waits for its value), the end once known, and whether the owner
    /// acknowledges items (backpressure) or they count as taken once sent.
    items: VecDeque<(u32, Option<ObjectValue>)>,
    end: Option<(u32, Option<Error>)>,
    generator: bool,
    acked: bool,
    /// The objects the first item in `items` names, while they are asked
    /// for (step 3).
    item_named: Option<Named>,
    /// An actor's creation: its handle object stays held (the actor lives
    /// while the link holds it).
    creation: bool,
    /// A task's (not an actor's, not a dynamic generator's): its large
    /// results and items stay here (step 6).
    leaves: bool,
    /// A generator's items sent to the owner so far.
    relayed: u32,
}

/// One link, the executing side.
struct Executing<W> {
    conn: NodeOut,
    /// The node, for what goes to it directly rather than as a message
    /// (an actor to reach).
    node: Arc<Node>,
    arena: Arc<Arena>,
    writer: Writer<W>,
    /// The link's driver id: every id it makes carries it.
    me: WorkerId,
    next_seq: u64,
    running: HashMap<TaskId, Running>,
    by_owner: HashMap<TaskId, TaskId>,
    /// The owner's exported functions that came with their bytes, renamed
    /// as this link's.
    functions: HashMap<FunctionId, FunctionId>,
    /// The owner's actors placed here, as this node knows them.
    actors: HashMap<ActorId, ActorId>,
    /// The owner's objects kept here: its id → the link's object here.
    cache: Cache<ObjectId>,
    landing: Lander,
    /// Copies of the owner's objects imported for the next task, held by
    /// the link until that task holds them.
    imported: Vec<ObjectId>,
    /// Tasks that ended with values naming objects of this node, waiting
    /// for those objects (at any depth) to send copies of them first.
    exports: HashMap<TaskId, Export>,
    /// The cluster's function table, for calls whose function came
    /// without its bytes.
    functions_from: Arc<dyn FunctionSource>,
    /// Functions the table did not give, and when: their calls fail at
    /// once for [`FETCH_TIMEOUT`], then ask again (a head back by then).
    unfetched: HashMap<FunctionId, Instant>,
    /// Results left here for the owner (step 6): its id → the link's
    /// object here, held by the link until pulled or forgotten.
    left: HashMap<ObjectId, ObjectId>,
    /// Pulls under way: the link's object → the owner's id.
    pulls: HashMap<ObjectId, ObjectId>,
    /// The daemon's, for what its links keep (`left_here`, step 7): this
    /// link's `left`, for other nodes' reads, and theirs, for this link's
    /// owner's.
    ctx: Arc<PeerContext>,
    /// Objects kept on other nodes that the next task reads (step 7).
    borrowing: HashSet<ObjectId>,
}

impl<W> Drop for Executing<W> {
    fn drop(&mut self) {
        self.ctx.left_here.forget_holder(self.conn.conn.id());
    }
}

/// A result's objects being gathered for the owner (step 3).
struct Export {
    running: Running,
    values: Vec<ObjectValue>,
    named: Named,
}

/// A connection to the peer port: a plain link's handshake or TLS's, then
/// the link (`incoming`).
async fn accept(acceptor: tokio_rustls::TlsAcceptor, mut tcp: TcpStream, ctx: Arc<PeerContext>) -> Result<()> {
    if loopback::is_plain(&tcp).await? {
        loopback::listen(&mut tcp, &ctx.token, ctx.tls_on_loopback).await?;
        let plain = Some(tcp.as_raw_fd());
        return incoming(Box::new(tcp), plain, ctx).await;
    }
    let stream = tokio::time::timeout(OPEN_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| ClusterError::Timeout("a peer's TLS handshake"))?
        .map_err(tls::stream_error)?;
    incoming(Box::new(stream), None, ctx).await
}

/// The executing side of a link on `stream`; `plain`: its TCP socket, on a
/// plain link, whose handshake proved that the caller holds the token.
async fn incoming(stream: LinkStream, plain: Option<RawFd>, ctx: Arc<PeerContext>) -> Result<()> {
    let proven = plain.is_some();
    let (mut read, write) = tokio::io::split(stream);
    let mut writer = Writer::new(write);
    let mut body = Vec::new();
    let hello = tokio::time::timeout(
        OPEN_TIMEOUT,
        frame::read_frame_async_max::<_, ToPeer>(&mut read, &mut body, MAX_PEER_HELLO),
    )
    .await
    .map_err(|_| ClusterError::Timeout("a peer's hello"))??;
    let hello = match hello.and_then(|m| m.kind) {
        Some(ToPeerKind::Hello(h)) => h,
        _ => return Err(peer_error("hello")("the first message is not a hello".into())),
    };
    let refuse = |why: String| FromPeer { kind: Some(FromPeerKind::Rejected(why)) };
    if hello.protocol != PEER_PROTOCOL_VERSION {
        let why = format!("peer protocol version {} is not {PEER_PROTOCOL_VERSION}", hello.protocol);
        writer.send_now(refuse(why.clone())).await?;
        return Err(ClusterError::Refused(why));
    }
    if !proven && !ClusterToken::from_bytes(&hello.token).is_some_and(|t| ctx.token.matches(&t)) {
        writer.send_now(refuse("wrong cluster token".into())).await?;
        return Err(ClusterError::WrongToken);
    }
    let exe = if hello.exe_sha256.is_empty() {
        None
    } else {
        let sha: [u8; 32] = hello.exe_sha256.as_slice().try_into().expect("checked on arrival");
        // The program this node's job runs already, under its own path (a
        // link back from a node this program's link reached): the same
        // program, so the link joins the job.
        match job_exe_if(&ctx, sha).await {
            Some(path) => Some(path),
            None => Some(receive_exe(&ctx.exe_dir, sha, hello.exe_len, &mut read, &mut writer).await?),
        }
    };
    let mut commands = Vec::new();
    for c in hello.commands {
        let kind = WorkerKind::ALL[c.kind as usize];
        let program = match kind {
            WorkerKind::Rust => {
                exe.clone().ok_or_else(|| peer_error("hello")("a Rust command without its executable".into()))?
            }
            _ => PathBuf::from(c.program),
        };
        let env =
            c.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        commands.push((kind, WorkerCommand { program, args: c.args, env }));
    }
    let me = WorkerId::random();
    let (tx, mut from_node) = mpsc::unbounded_channel();
    let (conn, _) = ctx.node.connect_program(me, commands, Arc::new(ToTask(tx)));
    // A quarter of the store keeps the owner's objects for later tasks.
    let cache_bytes = ctx.node.info().store_capacity / 4;
    let welcome = Welcome { node_id: ctx.node.info().node_id.0, cache_bytes };
    writer.send_now(FromPeer { kind: Some(FromPeerKind::Welcome(welcome)) }).await?;
    let how = if proven { "plain TCP between loopback addresses" } else { "TLS" };
    tracing::info!("node {} sends this node tasks ({how})", NodeId(hello.from_node));
    let conn = Arc::new(conn);
    let lander = Lander::new(conn.clone(), ctx.node.arena().clone(), plain);
    let mut from_peer = spawn_reader::<_, ToPeer>(read, lander.clone());
    let mut link = Executing {
        conn: NodeOut::new(conn),
        node: ctx.node.clone(),
        arena: ctx.node.arena().clone(),
        writer,
        me,
        next_seq: 1,
        running: HashMap::new(),
        by_owner: HashMap::new(),
        functions: HashMap::new(),
        actors: HashMap::new(),
        cache: Cache::new(cache_bytes),
        landing: lander,
        imported: Vec::new(),
        exports: HashMap::new(),
        functions_from: ctx.functions.clone(),
        unfetched: HashMap::new(),
        left: HashMap::new(),
        pulls: HashMap::new(),
        ctx: ctx.clone(),
        borrowing: HashSet::new(),
    };
    loop {
        // Everything the owner and the node have sent so far, handed on;
        // then one write to the owner.
        loop {
            loop {
                match from_peer.try_recv() {
                    Ok(Ok(msg)) => link.owner_frame(msg).await?,
                    // The owner went: the node cancels what it sent (step 5).
                    Ok(Err(_)) | Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            // The node's answers come back through `from_node` at once.
            link.conn.flush();
            match from_node.try_recv() {
                Ok(NodeEvent::Msg(m)) => link.node_msg(m).await?,
                Ok(NodeEvent::Closed(reason)) => return Err(peer_error("the node closed it")(reason)),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if link.conn.is_empty() {
                        break;
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        link.writer.flush().await?;
        tokio::select! {
            ev = from_node.recv() => match ev {
                Some(NodeEvent::Msg(m)) => link.node_msg(m).await?,
                Some(NodeEvent::Closed(reason)) => return Err(peer_error("the node closed it")(reason)),
                None => return Ok(()),
            },
            msg = from_peer.recv() => match msg {
                Some(Ok(m)) => link.owner_frame(m).await?,
                Some(Err(_)) | None => return Ok(()),
            },
        }
    }
}

/// The executable of a program's Rust workers here whose SHA-256 is `sha`
/// (each file hashed once per change, off the runtime's thread).
async fn job_exe_if(ctx: &PeerContext, sha: [u8; 32]) -> Option<PathBuf> {
    let paths: Vec<PathBuf> = ctx
        .node
        .programs()
        .into_iter()
        .flat_map(|(_, commands)| commands)
        .filter(|(k, _)| *k == WorkerKind::Rust)
        .map(|(_, c)| c.program)
        .collect();
    for path in paths {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let Ok(changed) = meta.modified() else { continue };
        let stamp = (path.clone(), meta.len(), changed);
        let known = ctx.job_exe.lock().get(&stamp).copied();
        let hash = match known {
            Some(h) => h,
            None => {
                let Ok((h, _)) = file_sha256(path.clone()).await else { continue };
                let mut cache = ctx.job_exe.lock();
                // Programs are few; files that changed leave stale stamps.
                if cache.len() >= 64 {
                    cache.clear();
                }
                cache.insert(stamp, h);
                h
            }
        };
        if hash == sha {
            return Some(path);
        }
    }
    None
}

/// The executable with hash `sha`, from the cache or from the peer, which
/// sends it when asked (step 2).
async fn receive_exe<R, W>(dir: &Path, sha: [u8; 32], len: u64, read: &mut R, writer: &mut Writer<W>) -> Result<PathBuf>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(&hex);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(ClusterError::file("cannot create", dir))?;
    writer.send_now(FromPeer { kind: Some(FromPeerKind::NeedExe(Empty {})) }).await?;
    // A name of this receipt's own: two owners may ship the same file to
    // this daemon at once (the rename makes either one's the file).
    let part = dir.join(format!("{hex}.part{}-{:016x}", std::process::id(), WorkerId::random().0));
    let result = async {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(&part)
            .map_err(ClusterError::file("cannot create", &part))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut got = 0u64;
        let mut body = Vec::new();
        while got < len {
            let msg = frame::read_frame_async_max::<_, ToPeer>(read, &mut body, MAX_PEER_FRAME)
                .await?
                .ok_or_else(|| ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
            let Some(ToPeerKind::Exe(b)) = msg.kind else {
                return Err(peer_error("executable")("another message while it was sent".into()));
            };
            if b.offset != got || b.total != len {
                return Err(peer_error("executable")(format!("a chunk at {} of {}", b.offset, b.total)));
            }
            ctx.update(&b.bytes);
            file.write_all(&b.bytes).map_err(ClusterError::file("cannot write", &part))?;
            got += b.bytes.len() as u64;
        }
        if ctx.finish().as_ref() != sha {
            return Err(peer_error("executable")("its SHA-256 is not the one announced".into()));
        }
        file.sync_all().map_err(ClusterError::file("cannot write", &part))?;
        std::fs::rename(&part, &path).map_err(ClusterError::file("cannot rename", &part))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result.map(|_| path)
}

impl<W: AsyncWrite + Unpin> Executing<W> {
    fn new_task_id(&mut self) -> TaskId {
        self.next_seq += 1;
        TaskId { submitter: self.me, seq: self.next_seq }
    }

    /// A frame of the owner's.
    async fn owner_frame(&mut self, msg: ToPeer) -> Result<()> {
        match msg.kind {
            Some(ToPeerKind::Node(bytes)) => self.owner_msg(decode_node(&bytes)?).await,
            Some(ToPeerKind::Reach(row)) => {
                let found = crate::wire::found_actor(row)
                    .ok_or_else(|| peer_error("an actor to reach")("a malformed actor id".into()))?;
                // Held by the link until the next task holds it.
                let handle = found.entry.actor.handle_object();
                self.node.reach_actor(found, &self.conn.conn);
                self.imported.push(handle);
                Ok(())
            }
            _ => Err(peer_error("a message out of turn")("hello or executable".into())),
        }
    }

    /// A message of the owner (step 3).
    async fn owner_msg(&mut self, msg: ToNode) -> Result<()> {
        match msg {
            ToNode::Submit(spec) => {
                let sent = self.submit(*spec).await;
                self.borrowing.clear();
                // The task holds what was imported for it from here on.
                let imported = std::mem::take(&mut self.imported);
                if !imported.is_empty() {
                    self.conn.send(ToNode::RemoveRef(imported));
                }
                sent
            }
            ToNode::Import { id, mut value } => {
                // A copy of an object the next task's arguments name (a
                // store that refuses it makes it the store's error there).
                let shm = match &value {
                    ObjectValue::Data { payload: Payload::Shm { offset, len }, .. } => Some((*offset, *len)),
                    _ => None,
                };
                if let Some((CACHED, _)) = shm {
                    // Kept here by an earlier task, and held by the cache.
                    if self.cache.get(id).is_none() {
                        return Err(peer_error("cache")(format!("object {id} was not kept here")));
                    }
                    return Ok(());
                }
                self.landing.land(&mut value)?;
                self.conn.send(ToNode::Import { id, value });
                match shm {
                    // Kept as an argument already (the owner touched it
                    // too): this copy is the task's only.
                    Some(_) if self.cache.get(id).is_some() => self.imported.push(id),
                    // Kept for later tasks: the link's reference stays
                    // while the cache has it.
                    Some((_, len)) if self.cache.admits(len) => {
                        let evicted = self.cache.insert(id, len, id);
                        self.imported.extend(evicted);
                    }
                    _ => self.imported.push(id),
                }
                Ok(())
            }
            // Step 7: an argument of the next task, read from the node
            // keeping it (held by the link until the task holds it).
            ToNode::Borrow { id, node, len, encoding } => {
                self.conn.send(ToNode::Borrow { id, node, len, encoding });
                self.imported.push(id);
                self.borrowing.insert(id);
                Ok(())
            }
            ToNode::Cancel { task_id, force, .. } => {
                if let Some(mine) = self.by_owner.get(&task_id) {
                    let cancel = ToNode::Cancel { task_id: *mine, force, recursive: true, force_after_ms: None };
                    self.conn.send(cancel);
                }
                Ok(())
            }
            ToNode::StreamConsumed { task_id, consumed } => {
                if let Some(mine) = self.by_owner.get(&task_id) {
                    self.conn.send(ToNode::StreamConsumed { task_id: *mine, consumed });
                }
                Ok(())
            }
            ToNode::StreamDrop { task_id, consumed } => {
                if let Some(mine) = self.by_owner.get(&task_id) {
                    // Items relayed already are the owner's (those left
                    // here held by the link for it): not this drop's.
                    let relayed = self.running.get(mine).map_or(0, |r| r.relayed);
                    self.conn.send(ToNode::StreamDrop { task_id: *mine, consumed: consumed.max(relayed) });
                }
                Ok(())
            }
            // Step 6: the owner reads results left here; step 7: or one
            // another link here keeps for its owner, of the same program
            // (this link holds it while it is sent).
            ToNode::Subscribe(ids) => {
                for id in ids {
                    let kept = self.left.get(&id).copied().or_else(|| {
                        let (mine, holder) = self.ctx.left_here.get(id)?;
                        // A `RemoveRef` of this link's hold from an
                        // earlier pull of it goes first, not after.
                        self.conn.flush();
                        self.conn.conn.hold_as(holder, mine).then_some(mine)
                    });
                    match kept {
                        Some(mine) if !self.pulls.contains_key(&mine) => {
                            self.pulls.insert(mine, id);
                            self.conn.send(ToNode::Subscribe(vec![mine]));
                        }
                        Some(_) => {}
                        None => {
                            let e = Error::ObjectLost(format!("{id}: the node it was left on no longer has it"));
                            self.writer
                                .send_node::<FromPeer>(ToNode::Import { id, value: ObjectValue::Error(e) })
                                .await?;
                            self.writer.send_node::<FromPeer>(ToNode::RemoveRef(vec![id])).await?;
                        }
                    }
                }
                Ok(())
            }
            // Step 6: nothing there refers to them any more.
            ToNode::RemoveRef(ids) => {
                let holder = self.conn.conn.id();
                for id in &ids {
                    self.ctx.left_here.remove(*id, holder);
                }
                // One being sent goes once it is (`send_pulled`).
                let mine: Vec<ObjectId> =
                    ids.iter().filter_map(|id| self.left.remove(id)).filter(|m| !self.pulls.contains_key(m)).collect();
                if !mine.is_empty() {
                    self.conn.send(ToNode::RemoveRef(mine));
                }
                Ok(())
            }
            ToNode::KillActor { actor, no_restart } => {
                // The owner decides restarts: here it just ends.
                if let Some(mine) = self.actors.remove(&actor) {
                    self.conn.send(ToNode::KillActor { actor: mine, no_restart: true });
                    self.conn.send(ToNode::RemoveRef(vec![mine.handle_object()]));
                } else {
                    // An actor of this node's, reached by its name from the
                    // other one (the node checks it is named).
                    self.conn.send(ToNode::KillActor { actor, no_restart });
                }
                Ok(())
            }
            other => Err(peer_error("a message out of turn")(format!("{other:?}"))),
        }
    }

    /// Keeps `f` from the cluster's table in the node; if it cannot
    /// (false), the call fails there as one of a function never exported
    /// (`UnknownFunction`), naming it.
    async fn fetch_function(&mut self, f: FunctionId) -> bool {
        let got = tokio::time::timeout(FETCH_TIMEOUT, self.functions_from.fetch(f)).await;
        match got {
            Ok(Ok(Some(bytes))) => {
                if self.node.import_function(f, bytes) {
                    tracing::info!("took function {f} from the cluster's function table");
                    return true;
                }
                tracing::warn!("function {f} from the cluster's table does not fit in this node's");
            }
            Ok(Ok(None)) => tracing::warn!("the cluster's function table has no function {f}"),
            Ok(Err(_)) => tracing::warn!("the daemon's link to the head ended before function {f} came"),
            Err(_) => tracing::warn!("no answer for function {f} from the head in {} s", FETCH_TIMEOUT.as_secs()),
        }
        false
    }

    async fn submit(&mut self, mut spec: TaskSpec) -> Result<()> {
        let owner_id = spec.task_id;
        let attempt = spec.attempt;
        let mine = self.new_task_id();
        // An actor's creation or call, under this node's name for it.
        let mut creation = false;
        match &mut spec.actor {
            Some(ActorTask::Create(opts)) => {
                // The owner keeps its name, restarts and retries; here it is
                // the link's, and ends with it.
                opts.name = None;
                opts.detached = false;
                opts.max_restarts = 0;
                opts.max_task_retries = 0;
                creation = true;
                self.actors.insert(ActorId(owner_id), ActorId(mine));
            }
            Some(ActorTask::Call { actor }) => {
                // An actor the owner placed here goes by this link's id for
                // it; any other is this node's own, reached by its name
                // (its handle object came as an import before the call).
                if let Some(here) = self.actors.get(actor).copied() {
                    let theirs = actor.handle_object();
                    for c in spec.contained.iter_mut().filter(|c| **c == theirs) {
                        *c = here.handle_object();
                    }
                    *actor = here;
                }
            }
            None => {}
        }
        // Its exported function: its bytes, when they come with it, under
        // this link's name (the node takes exports from their exporter
        // only); otherwise from the cluster's table, under its own id
        // (`ferroray_node`'s function table, step 3).
        if let FunctionDescriptor::Python { function: Some(f), pickled, .. } = &mut spec.function {
            if pickled.is_empty() && !self.functions.contains_key(f) {
                let asked_lately = self.unfetched.get(f).is_some_and(|t| t.elapsed() < FETCH_TIMEOUT);
                if !self.node.has_function(*f) && !asked_lately && !self.fetch_function(*f).await {
                    if self.unfetched.len() >= 1024 {
                        self.unfetched.clear();
                    }
                    self.unfetched.insert(*f, Instant::now());
                }
            } else {
                let known = self.functions.len() as u64;
                let me = self.me;
                let renamed = *self.functions.entry(*f).or_insert(FunctionId { exporter: me, seq: known + 1 });
                if !pickled.is_empty() {
                    self.conn.send(ToNode::ExportFunction { function: renamed, pickled: std::mem::take(pickled) });
                }
                *f = renamed;
            }
        }
        // Its shared-memory arguments, landed in this store (every one, so
        // none is left half kept), each put as an object of the link's.
        let mut puts = Vec::new();
        // Objects the cache let go, released once the task holds its own.
        let mut evicted = Vec::new();
        let mut refused = None;
        for arg in spec.args.iter_mut() {
            if let TaskArg::Object { id: theirs, payload: Payload::Shm { offset, len }, encoding } = arg {
                let (theirs, offset, len, encoding) = (*theirs, *offset, *len, *encoding);
                if offset == Payload::LEFT_ON_PEER {
                    // A result left here (step 6), kept until the owner
                    // forgets it, which comes after this task.
                    match self.left.get(&theirs) {
                        Some(here) => *arg = TaskArg::Ref(*here),
                        None => {
                            let e = Error::ObjectLost(format!("{theirs}: this node no longer keeps it"));
                            refused.get_or_insert(e);
                        }
                    }
                    continue;
                }
                if offset == Payload::LEFT_ELSEWHERE {
                    // Kept on another node (step 7), borrowed just before.
                    if self.borrowing.contains(&theirs) {
                        *arg = TaskArg::Ref(theirs);
                    } else {
                        let e = Error::Protocol(format!("argument {theirs} names no node keeping it"));
                        refused.get_or_insert(e);
                    }
                    continue;
                }
                if offset == CACHED {
                    // Kept here by an earlier task.
                    let Some(here) = self.cache.get(theirs).copied() else {
                        return Err(peer_error("cache")(format!("object {theirs} was not kept here")));
                    };
                    *arg = TaskArg::Ref(here);
                    continue;
                }
                let mut value =
                    ObjectValue::Data { payload: Payload::Shm { offset, len }, encoding, contained: vec![] };
                self.landing.land(&mut value)?;
                let here = ObjectId::for_put(self.new_task_id());
                match value {
                    // The owner keeps it in its table all the same: an
                    // entry with no object (a task naming it fails).
                    ObjectValue::Error(e) => {
                        refused.get_or_insert(e);
                    }
                    value => self.conn.send(ToNode::Put { id: here, value }),
                }
                evicted.extend(self.cache.insert(theirs, len, here));
                *arg = TaskArg::Ref(here);
                continue;
            }
            if let TaskArg::Value { payload: payload @ Payload::Shm { .. }, encoding } = arg {
                let mut value = ObjectValue::Data { payload: payload.clone(), encoding: *encoding, contained: vec![] };
                self.landing.land(&mut value)?;
                if let ObjectValue::Error(e) = value {
                    refused.get_or_insert(e);
                    continue;
                }
                let id = ObjectId::for_put(self.new_task_id());
                self.conn.send(ToNode::Put { id, value });
                *arg = TaskArg::Ref(id);
                puts.push(id);
            }
        }
        puts.append(&mut evicted);
        if let Some(e) = refused {
            if !puts.is_empty() {
                self.conn.send(ToNode::RemoveRef(puts));
            }
            self.actors.remove(&ActorId(owner_id));
            return self.finish(owner_id, attempt, TaskOutcome::Failed(e)).await;
        }
        let generator = matches!(spec.returns, ReturnKind::Streaming { .. } | ReturnKind::Dynamic);
        let leaves = spec.actor.is_none() && spec.returns != ReturnKind::Dynamic;
        let acked = matches!(spec.returns, ReturnKind::Streaming { backpressure: Some(_) });
        if spec.returns == ReturnKind::Dynamic {
            // Items relayed one by one; the owner makes the list.
            spec.returns = ReturnKind::Streaming { backpressure: None };
        }
        spec.task_id = mine;
        spec.parent = None;
        spec.attempt = 0;
        spec.max_retries = 0;
        spec.retry_exceptions = RetryExceptions::None;
        let returns: Vec<ObjectId> = spec.return_ids().collect();
        // Bounded as anything from a node's socket is (a peer is no more trusted).
        let msg = if creation {
            ToNode::CreateActor { req: mine.seq, spec: Box::new(spec) }
        } else {
            ToNode::Submit(Box::new(spec))
        };
        if let Err(e) = msg.check() {
            if !puts.is_empty() {
                self.conn.send(ToNode::RemoveRef(puts));
            }
            self.actors.remove(&ActorId(owner_id));
            return self.finish(owner_id, attempt, TaskOutcome::Failed(e)).await;
        }
        self.running.insert(
            mine,
            Running {
                owner_id,
                attempt,
                values: vec![None; if generator { 0 } else { returns.len() }],
                items: VecDeque::new(),
                end: None,
                generator,
                acked,
                item_named: None,
                creation,
                leaves,
                relayed: 0,
            },
        );
        self.by_owner.insert(owner_id, mine);
        self.conn.send(msg);
        if !puts.is_empty() {
            // The task holds its arguments from here on.
            self.conn.send(ToNode::RemoveRef(puts));
        }
        if !generator {
            self.conn.send(ToNode::Subscribe(returns));
        }
        Ok(())
    }

    /// A message of this node (steps 3 and 4).
    async fn node_msg(&mut self, msg: FromNode) -> Result<()> {
        match msg {
            // Step 3: the owner may let go of the hold these handles kept.
            FromNode::HandleReleased { actor, reaches } => {
                let r = HandleRelease { actor_id: crate::wire::actor_id_bytes(actor), reaches };
                self.writer.send(FromPeer { kind: Some(FromPeerKind::Released(r)) }).await?;
                Ok(())
            }
            FromNode::ObjectReady { id, value } => {
                if let Some(theirs) = self.pulls.remove(&id) {
                    return self.send_pulled(id, theirs, value).await;
                }
                if let Some(mine) = self.exports.iter().find(|(_, e)| e.named.waiting.contains(&id)).map(|(t, _)| *t) {
                    let e = self.exports.get_mut(&mine).expect("found above");
                    e.named.answer(&self.conn, id, value);
                    if e.named.waiting.is_empty() {
                        let e = self.exports.remove(&mine).expect("found above");
                        self.send_returns(mine, e.running, e.values, e.named.got).await?;
                    }
                    return Ok(());
                }
                let item = self
                    .running
                    .iter()
                    .find(|(_, r)| r.item_named.as_ref().is_some_and(|n| n.waiting.contains(&id)))
                    .map(|(t, _)| *t);
                if let Some(mine) = item {
                    let r = self.running.get_mut(&mine).expect("found above");
                    r.item_named.as_mut().expect("found above").answer(&self.conn, id, value);
                    return self.pump(mine).await;
                }
                let Some(r) = self.running.get_mut(&id.task) else {
                    if let ObjectValue::Data { payload: Payload::Shm { .. }, .. } = value {
                        self.conn.send(ToNode::Unpin(vec![id]));
                    }
                    return Ok(());
                };
                if r.generator {
                    // A shared-memory item's value, asked for below.
                    let index = id.index.saturating_sub(2);
                    if let Some(slot) = r.items.iter_mut().find(|(i, v)| *i == index && v.is_none()) {
                        slot.1 = Some(value);
                    }
                    return self.pump(id.task).await;
                }
                let slot = (id.index as usize).wrapping_sub(1);
                if let Some(v) = r.values.get_mut(slot) {
                    *v = Some(value);
                }
                if r.values.iter().all(Option::is_some) {
                    let r = self.running.remove(&id.task).expect("found above");
                    self.by_owner.remove(&r.owner_id);
                    self.return_values(id.task, r).await?;
                }
                Ok(())
            }
            FromNode::StreamItem { task_id, index, value } => {
                let Some(r) = self.running.get_mut(&task_id) else { return Ok(()) };
                if value.is_none() {
                    self.conn.send(ToNode::Subscribe(vec![ObjectId::for_item(task_id, index)]));
                }
                r.items.push_back((index, value));
                self.pump(task_id).await
            }
            FromNode::StreamEnd { task_id, items, error } => {
                if let Some(r) = self.running.get_mut(&task_id) {
                    r.end = Some((items, error));
                }
                self.pump(task_id).await
            }
            FromNode::Output { to_stderr, text, task } => {
                // The task the worker ran, under the owner's id (its node
                // finds the driver it is for).
                let owner = task.and_then(|t| self.running.get(&t)).map(|r| r.owner_id);
                let (task_submitter, task_seq) = owner.map_or((0, 0), |t| (t.submitter.0, t.seq));
                let lines = OutputLines { to_stderr, text, task_submitter, task_seq };
                self.writer.send(FromPeer { kind: Some(FromPeerKind::Output(lines)) }).await
            }
            FromNode::ActorCreated { req, result: Err(e) } => {
                // Refused before anything was registered.
                let mine = TaskId { submitter: self.me, seq: req };
                match self.running.remove(&mine) {
                    Some(r) => {
                        self.by_owner.remove(&r.owner_id);
                        self.actors.retain(|_, a| a.0 != mine);
                        self.finish(r.owner_id, r.attempt, TaskOutcome::Failed(e)).await
                    }
                    None => Ok(()),
                }
            }
            FromNode::Rejected(e) => {
                let why = e.to_string();
                let _ = self.writer.send_now(FromPeer { kind: Some(FromPeerKind::Rejected(why)) }).await;
                Err(ClusterError::Node(e))
            }
            _ => Ok(()),
        }
    }

    /// A fixed-returns task ended: its values (or its error) to the owner,
    /// once the objects they name are here to send copies of (step 3).
    async fn return_values(&mut self, mine: TaskId, mut r: Running) -> Result<()> {
        let values: Vec<ObjectValue> =
            std::mem::take(&mut r.values).into_iter().map(|v| v.expect("all here")).collect();
        let mut named = Named::default();
        if !values.iter().any(|v| matches!(v, ObjectValue::Error(_))) {
            for v in &values {
                named.ask(&self.conn, v);
            }
        }
        if named.waiting.is_empty() {
            return self.send_returns(mine, r, values, Vec::new()).await;
        }
        self.exports.insert(mine, Export { running: r, values, named });
        Ok(())
    }

    /// Sends a task's results: first a copy of each object they name, each
    /// after the ones it names (the owner's link holds them until the
    /// result does: the `RemoveRef` after the `TaskDone`).
    async fn send_returns(
        &mut self,
        mine: TaskId,
        r: Running,
        values: Vec<ObjectValue>,
        exports: Vec<(ObjectId, ObjectValue)>,
    ) -> Result<()> {
        let ids: Vec<ObjectId> = (0..values.len() as u32).map(|i| ObjectId::for_return(mine, i)).collect();
        let mut unpin = Vec::new();
        let mut exported = Vec::new();
        let failed = values.iter().find_map(|v| match v {
            ObjectValue::Error(e) => Some(e.clone()),
            _ => None,
        });
        if failed.is_none() {
            exported = self.send_copies(exports).await?;
        }
        let mut shipped = Vec::new();
        let mut kept = Vec::new();
        for (i, (id, v)) in ids.iter().zip(values).enumerate() {
            if is_shm(&v) {
                unpin.push(*id);
            }
            if failed.is_some() {
                continue;
            }
            let theirs = ObjectId::for_return(r.owner_id, i as u32);
            match v {
                // Left here, held by the link (step 6), once.
                ObjectValue::Data { payload: Payload::Shm { len, .. }, encoding, contained }
                    if r.leaves && stays_here(&v) && !self.left.contains_key(&theirs) =>
                {
                    self.left.insert(theirs, *id);
                    self.ctx.left_here.insert(theirs, *id, self.conn.conn.id());
                    kept.push(*id);
                    let payload = Payload::left_on_peer(len);
                    shipped.push(ObjectValue::Data { payload, encoding, contained });
                }
                v => shipped.push(self.writer.ship::<FromPeer>(&self.arena, v).await?),
            }
        }
        if !unpin.is_empty() {
            self.conn.send(ToNode::Unpin(unpin));
        }
        if r.creation && failed.is_none() {
            // The actor lives while this link holds its handle.
        } else {
            if r.creation {
                self.actors.retain(|_, a| a.0 != mine);
            }
            let ids: Vec<ObjectId> = ids.into_iter().filter(|id| !kept.contains(id)).collect();
            if !ids.is_empty() {
                self.conn.send(ToNode::RemoveRef(ids));
            }
        }
        let outcome = match failed {
            Some(e) => TaskOutcome::Failed(e),
            None => TaskOutcome::Returned(shipped),
        };
        self.finish(r.owner_id, r.attempt, outcome).await?;
        if !exported.is_empty() {
            self.writer.send_node::<FromPeer>(ToNode::RemoveRef(exported)).await?;
        }
        Ok(())
    }

    /// Step 6: the bytes of a result left here (the link's object `mine`,
    /// the owner's `theirs`) go to the owner as a copy under its id, which
    /// the owner's link holds until the `RemoveRef` after it. The link keeps
    /// its own until the owner forgets it (a task the owner sent before it
    /// had the copy may name it), unless it did already.
    async fn send_pulled(&mut self, mine: ObjectId, theirs: ObjectId, value: ObjectValue) -> Result<()> {
        let shm = is_shm(&value);
        let value = self.writer.ship::<FromPeer>(&self.arena, value).await?;
        self.writer.send_node::<FromPeer>(ToNode::Import { id: theirs, value }).await?;
        self.writer.send_node::<FromPeer>(ToNode::RemoveRef(vec![theirs])).await?;
        if shm {
            self.conn.send(ToNode::Unpin(vec![mine]));
        }
        if !self.left.contains_key(&theirs) {
            self.conn.send(ToNode::RemoveRef(vec![mine]));
        }
        Ok(())
    }

    /// Sends copies of objects to the owner, each after the ones it names,
    /// and gives back their store pins here; their ids, for the
    /// `RemoveRef` that follows what names them.
    async fn send_copies(&mut self, copies: Vec<(ObjectId, ObjectValue)>) -> Result<Vec<ObjectId>> {
        let mut unpin = Vec::new();
        let mut ids = Vec::new();
        for (id, value) in copies.into_iter().rev() {
            if is_shm(&value) {
                unpin.push(id);
            }
            let value = self.writer.ship::<FromPeer>(&self.arena, value).await?;
            self.writer.send_node::<FromPeer>(ToNode::Import { id, value }).await?;
            ids.push(id);
        }
        if !unpin.is_empty() {
            self.conn.send(ToNode::Unpin(unpin));
        }
        Ok(ids)
    }

    /// Relays a generator's items that are in hand, in order, then its end
    /// once every item went (step 4).
    async fn pump(&mut self, mine: TaskId) -> Result<()> {
        loop {
            let Some(r) = self.running.get_mut(&mine) else { return Ok(()) };
            match r.items.front() {
                Some((_, Some(value))) => {
                    // An item naming objects waits for them, to send copies
                    // of them first, as a result does.
                    let named = match r.item_named.take() {
                        Some(n) if !n.waiting.is_empty() => {
                            r.item_named = Some(n);
                            return Ok(());
                        }
                        Some(n) => n,
                        None => {
                            let mut n = Named::default();
                            n.ask(&self.conn, value);
                            if !n.waiting.is_empty() {
                                r.item_named = Some(n);
                                return Ok(());
                            }
                            n
                        }
                    };
                    let (index, value) = r.items.pop_front().expect("front");
                    let value = value.expect("in hand");
                    let (owner_id, attempt, acked, leaves) = (r.owner_id, r.attempt, r.acked, r.leaves);
                    let exported = self.send_copies(named.got).await?;
                    let item = ObjectId::for_item(mine, index);
                    let shm = matches!(value, ObjectValue::Data { payload: Payload::Shm { .. }, .. });
                    let digest = value_digest(&self.arena, &value);
                    // A retry here replays an item an earlier attempt left
                    // here: that copy stays the one kept, this one goes.
                    let theirs = ObjectId::for_item(owner_id, index);
                    let kept = leaves && stays_here(&value) && !self.left.contains_key(&theirs);
                    let value = match value {
                        // Left here, held by the link (step 6).
                        ObjectValue::Data { payload: Payload::Shm { len, .. }, encoding, contained } if kept => {
                            self.left.insert(theirs, item);
                            self.ctx.left_here.insert(theirs, item, self.conn.conn.id());
                            let payload = Payload::left_on_peer(len);
                            ObjectValue::Data { payload, encoding, contained }
                        }
                        value => self.writer.ship::<FromPeer>(&self.arena, value).await?,
                    };
                    let report = ToNode::ReportItem { task_id: owner_id, attempt, index, value, digest };
                    self.writer.send_node::<FromPeer>(report).await?;
                    if !exported.is_empty() {
                        self.writer.send_node::<FromPeer>(ToNode::RemoveRef(exported)).await?;
                    }
                    if shm {
                        self.conn.send(ToNode::Unpin(vec![item]));
                    }
                    if !kept {
                        self.conn.send(ToNode::RemoveRef(vec![item]));
                    }
                    if let Some(r) = self.running.get_mut(&mine) {
                        r.relayed = index + 1;
                    }
                    if !acked {
                        self.conn.send(ToNode::StreamConsumed { task_id: mine, consumed: index + 1 });
                    }
                }
                Some((_, None)) => return Ok(()),
                None => {
                    let Some((items, error)) = r.end.take() else { return Ok(()) };
                    let r = self.running.remove(&mine).expect("found above");
                    self.by_owner.remove(&r.owner_id);
                    self.conn.send(ToNode::StreamDrop { task_id: mine, consumed: items });
                    self.conn.send(ToNode::RemoveRef(vec![ObjectId::for_return(mine, 0)]));
                    let outcome = match error {
                        Some(e) => TaskOutcome::Failed(e),
                        None => TaskOutcome::Streamed { items },
                    };
                    return self.finish(r.owner_id, r.attempt, outcome).await;
                }
            }
        }
    }

    async fn finish(&mut self, task_id: TaskId, attempt: u32, outcome: TaskOutcome) -> Result<()> {
        self.writer.send_node::<FromPeer>(ToNode::TaskDone { task_id, attempt, outcome }).await
    }
}

/// [`ObjectValue::digest`] of a value in this node's store.
fn value_digest(arena: &Arena, value: &ObjectValue) -> u64 {
    let sample = match value {
        ObjectValue::Data { payload: Payload::Shm { offset, len }, .. } => {
            let n = DIGEST_SAMPLE.min(*len);
            // SAFETY: the caller holds a store pin on this sealed object.
            unsafe { arena.slice(*offset, n).ok().zip(arena.slice(offset + len - n, n).ok()) }
        }
        _ => None,
    };
    value.digest(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroray_node::NodeConfig;
    use ferroray_protocol::Encoding;

    struct Nothing;

    impl Inbox for Nothing {
        fn deliver(&self, _: FromNode) {}
        fn closed(&self, _: &str) {}
    }

    fn node(store: u64) -> Node {
        let mut config = NodeConfig::new(WorkerCommand::current_exe().unwrap());
        config.worker_commands.clear();
        config.store_capacity = store;
        Node::start(config).unwrap()
    }

    fn lander(node: &Node) -> Lander {
        let conn = node.connect_local(WorkerId::random(), Arc::new(Nothing)).unwrap();
        Lander::new(Arc::new(conn), node.arena().clone(), None)
    }

    fn shm(id: u64, len: u64) -> ObjectValue {
        ObjectValue::Data { payload: Payload::Shm { offset: id, len }, encoding: Encoding::Raw, contained: vec![] }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn rcvlowat(fd: RawFd) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an open socket; `v` and `len` live for the call.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, (&mut v as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0);
        v
    }

    #[test]
    fn a_chunk_read_with_a_low_water_mark_is_whole_and_leaves_the_mark_at_one_byte() {
        use tokio::io::AsyncReadExt;
        rt().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let total = 2 * CHUNK + 12_345;
            let sent: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let data = sent.clone();
            // Written in uneven pieces with pauses, then a small frame.
            let writer = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for piece in data.chunks(777_777) {
                    s.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                s.write_all(b"next").await.unwrap();
                s
            });
            let (mut r, _) = listener.accept().await.unwrap();
            let fd = r.as_raw_fd();
            let mut got = vec![0u8; total];
            let read = read_in_large_parts(&mut r, fd, &mut got);
            tokio::time::timeout(Duration::from_secs(20), read).await.expect("no stall").unwrap();
            assert!(got == sent, "every byte in its place");
            assert_eq!(rcvlowat(fd), 1, "the next frame's bytes wake the reader as before");
            let mut next = [0u8; 4];
            let small = tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut next));
            small.await.expect("a small frame is not held back").unwrap();
            assert_eq!(&next, b"next");
            // A peer that goes mid-chunk ends the read with an error, not a wait.
            let mut s = writer.await.unwrap();
            s.write_all(&[1u8; 1000]).await.unwrap();
            drop(s);
            let mut more = vec![0u8; 10_000];
            let read = read_in_large_parts(&mut r, fd, &mut more);
            let err = tokio::time::timeout(Duration::from_secs(20), read).await.expect("no stall").unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
            assert_eq!(rcvlowat(fd), 1);
        });
    }

    /// Frames as one side writes them: `(id, total, offset, bytes)` chunks by
    /// hand, and whole blobs and messages through a `Writer`.
    fn chunk_frame(id: u64, total: u64, offset: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        blob_header(ToPeer::BLOB_TAG, &Blob { id, total, offset, bytes: vec![] }, bytes.len(), &mut out);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn hand_made_blob_frames_are_what_prost_writes() {
        for (id, total, offset, n) in [(1, 6, 0, 4), (7, 1 << 33, 5 << 30, 300), (u64::MAX, 9, 8, 1)] {
            let bytes = vec![3u8; n];
            let by_prost = {
                let mut out = Vec::new();
                let b = Blob { id, total, offset, bytes: bytes.clone() };
                frame::encode_into(&mut out, ToPeer { kind: Some(ToPeerKind::Blob(b)) }).unwrap();
                out
            };
            assert_eq!(chunk_frame(id, total, offset, &bytes), by_prost);
        }
    }

    #[test]
    fn blobs_land_in_the_store_and_messages_pass() {
        let node = node(64 << 20);
        let l = lander(&node);
        let rt = rt();
        rt.block_on(async {
            // A value of 10 MiB through a Writer (3 chunks), then a message.
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let value: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
            let expect = value.clone();
            let write = tokio::spawn(async move {
                let mut w = Writer::new(a);
                let id = w.send_blob::<ToPeer>(&value).await.unwrap();
                w.send_node::<ToPeer>(ToNode::StreamConsumed {
                    task_id: TaskId { submitter: WorkerId(1), seq: 2 },
                    consumed: 3,
                })
                .await
                .unwrap();
                w.flush().await.unwrap();
                id
            });
            let mut body = Vec::new();
            let mut got = None;
            while got.is_none() {
                got = read_one::<_, ToPeer>(&mut b, &mut body, &l).await.unwrap();
            }
            let id = write.await.unwrap();
            assert!(matches!(got, Some(ToPeer { kind: Some(ToPeerKind::Node(_)) })));
            let mut v = shm(id, 10 << 20);
            l.land(&mut v).unwrap();
            let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = v else { panic!("{v:?}") };
            // SAFETY: the test's own allocation, written above and not freed.
            assert!(unsafe { l.arena.slice(offset, 10 << 20) }.unwrap() == &expect[..]);
        });
    }

    #[test]
    fn a_peer_that_breaks_the_blob_protocol_closes_the_link() {
        let node = node(64 << 20);
        let l = lander(&node);
        let rt = rt();
        let read = |frames: Vec<u8>| {
            let l = l.clone();
            rt.block_on(async move {
                let mut r = &frames[..];
                let mut body = Vec::new();
                let mut out = Vec::new();
                while !r.is_empty() {
                    let one = read_one::<_, ToPeer>(&mut r, &mut body, &l).await.map(|_| ());
                    let end = one.is_err();
                    out.push(one);
                    if end {
                        // The link would close here.
                        break;
                    }
                }
                out
            })
        };
        let ok = read(chunk_frame(1, 6, 0, &[7; 4]));
        assert!(ok.iter().all(Result::is_ok));
        assert!(read(chunk_frame(1, 6, 0, &[7; 2]))[0].is_err(), "a chunk again");
        assert!(read(chunk_frame(2, 6, 2, &[7; 2]))[0].is_err(), "before its start");
        assert!(read(chunk_frame(3, 6, 4, &[7; 4]))[0].is_err(), "past its total");
        assert!(l.land(&mut shm(1, 6)).is_err(), "half here");
        assert!(l.land(&mut shm(9, 8)).is_err(), "never sent");
        // A frame claiming more than a chunk.
        let mut big = Vec::new();
        blob_header(ToPeer::BLOB_TAG, &Blob { id: 4, total: 1 << 30, offset: 0, bytes: vec![] }, CHUNK + 1, &mut big);
        big.extend(std::iter::repeat_n(0u8, CHUNK + 1));
        assert!(read(big)[0].is_err());
    }

    #[test]
    fn a_blob_the_store_refuses_becomes_the_stores_error() {
        let node = node(1 << 20);
        let l = lander(&node);
        let rt = rt();
        let total = 3 * CHUNK as u64;
        let mut frames = Vec::new();
        for i in 0..3u64 {
            frames.extend(chunk_frame(1, total, i * CHUNK as u64, &vec![1u8; CHUNK]));
        }
        frames.extend(chunk_frame(2, 16, 0, &[3; 16]));
        rt.block_on(async {
            let mut r = &frames[..];
            let mut body = Vec::new();
            while !r.is_empty() {
                // Read and dropped: the link goes on.
                read_one::<_, ToPeer>(&mut r, &mut body, &l).await.unwrap();
            }
        });
        let mut v = shm(1, total);
        l.land(&mut v).unwrap();
        assert!(matches!(v, ObjectValue::Error(Error::StoreFull(_))), "{v:?}");
        let mut v = shm(2, 16);
        l.land(&mut v).unwrap();
        assert!(matches!(v, ObjectValue::Data { .. }), "{v:?}");
    }

    #[test]
    fn both_ends_keep_the_same_objects() {
        let id = |n| ObjectId { task: TaskId { submitter: WorkerId(1), seq: n }, index: 0 };
        let mut owner = Cache::<()>::new(100);
        let mut there = Cache::<u64>::new(100);
        assert!(!owner.admits(101));
        let mut gone = Vec::new();
        for (n, len) in [(1, 40), (2, 40), (1, 40), (3, 40), (4, 10)] {
            if owner.get(id(n)).is_some() {
                assert!(there.get(id(n)).is_some());
                continue;
            }
            owner.insert(id(n), len, ());
            gone.extend(there.insert(id(n), len, n));
        }
        // 2 was the least recently used when 3 came.
        assert_eq!(gone, vec![2]);
        for n in [1, 3, 4] {
            assert!(owner.get(id(n)).is_some() && there.get(id(n)).is_some(), "{n}");
        }
        assert!(owner.get(id(2)).is_none() && there.get(id(2)).is_none());
    }
}
