//! The core worker of one process: the tables it keeps, its link to the
//! node, and the handler of the node's messages (`dispatch`). The parts:
//!
//! - [`caller`]: what a caller does: put, submit, get, wait, cancel.
//! - [`streams`]: the caller's side of generator streams.
//! - [`executor`]: tasks the node sends to a worker, run here (one at a
//!   time; [`threaded`] and [`async_exec`] run a threaded or async actor's
//!   calls several at once; [`foreign_async`] hands an async actor of
//!   another language's front to that front's event loop).
//! - [`process`]: a worker process's start-up and life.

use crate::codec::{self, ReturnValue, ShmPin, Source};
use crate::context::{self, TaskContext};
use crate::generator::WaitKey;
use crate::global;
use crate::object_ref::RefInner;
use crate::registry::{self, Invoke, ItemSink};
use crate::task::ArgReader;
use ferroray_common::spin::Spin;
use ferroray_common::{ClusterToken, Error, FunctionId, ObjectId, Result, TaskId, WorkerId};
use ferroray_protocol::{
    Encoding, FromNode, FunctionDescriptor, NodeInfo, ObjectValue, Payload, ReturnKind, Role, TaskEvent, TaskOutcome,
    TaskSpec, ToNode, PROTOCOL_VERSION,
};
use ferroray_store::Arena;
use ferroray_transport::unix::UnixLink;
use ferroray_transport::{env, Inbox, Link};
use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::{Duration, Instant};

mod async_exec;
mod caller;
mod executor;
mod foreign_async;
mod process;
mod streams;
mod threaded;

pub use async_exec::AsyncItemSink;
pub use caller::RawValue;
use executor::Executor;
pub use executor::{current_actor, exit_actor};
pub use foreign_async::{AsyncCalls, CallReturns, StartedCall, Taken};
pub use process::{foreign_worker_main, is_rust_worker_process, is_worker_process, worker_main};
pub(crate) use streams::passed_on;

/// How long a request to the node (allocation, task listing) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

enum Cached {
    /// Readable now: inline bytes, a ref list, or shared memory with a pin
    /// this process holds (`Source::Shm`, used by one read).
    Ready(Source),
    /// Ready in shared memory; reading it needs a fresh pin.
    InStore,
    Error(Error),
}

impl Cached {
    /// What this process keeps of a value the node sent or it made: the
    /// bytes of an inline one; only the fact of a shared-memory one, whose
    /// reading takes a pin (`pin` makes it, when the message brought one).
    fn of(value: ObjectValue, pin: impl FnOnce(u64, u64) -> Option<ShmPin>) -> Cached {
        match value {
            ObjectValue::Error(e) => Cached::Error(e),
            ObjectValue::Data { encoding: Encoding::RefList, contained, .. } => {
                Cached::Ready(Source::RefList(contained.into()))
            }
            ObjectValue::Data { payload: Payload::Inline(b), encoding, .. } => {
                Cached::Ready(Source::Inline(Arc::new(b), encoding))
            }
            ObjectValue::Data { payload: Payload::Shm { offset, len }, encoding, .. } => match pin(offset, len) {
                Some(p) => Cached::Ready(Source::Shm(Arc::new(p), encoding)),
                None => Cached::InStore,
            },
        }
    }
}

struct Entry {
    value: Cached,
    /// Order in which objects became ready here, for `wait`.
    seq: u64,
}

/// The caller's table of one stream: what arrived, what was handed out.
struct LocalStream {
    items: std::collections::BTreeMap<u32, (Cached, u64)>,
    /// Item count, the error to hand out after the items, and when it came.
    end: Option<(u32, Option<Error>, u64)>,
    next: u32,
    error_handed: bool,
    backpressure: bool,
    wakers: Vec<std::task::Waker>,
    /// Which generator value consumes it here (see `GenInner::token`): a
    /// stream passed on and claimed back in one process is a new stream.
    token: u64,
    /// Passed on (serialized into a value) at this item index: its items go
    /// to whoever claims it; here it ends with an error.
    passed_on: Option<u32>,
}

impl LocalStream {
    fn new(backpressure: bool, next: u32, token: u64) -> Self {
        LocalStream {
            items: Default::default(),
            end: None,
            next,
            error_handed: false,
            backpressure,
            wakers: Vec::new(),
            token,
            passed_on: None,
        }
    }
}

impl LocalStream {
    /// Since when the stream has something for `next` (an item or its end).
    fn ready_since(&self) -> Option<u64> {
        if let Some((_, seq)) = self.items.get(&self.next) {
            return Some(*seq);
        }
        match &self.end {
            Some((n, _, seq)) if self.next >= *n => Some(*seq),
            _ => None,
        }
    }
}

/// A driver's inbox: the node's messages go to its core worker while it
/// lives (weak: the node holds the inbox, the core worker holds the link).
struct DriverInbox(std::sync::Weak<CoreWorker>);

impl Inbox for DriverInbox {
    fn deliver(&self, msg: FromNode) {
        if let Some(core) = self.0.upgrade() {
            core.dispatch(msg);
        }
    }

    fn closed(&self, reason: &str) {
        if let Some(core) = self.0.upgrade() {
            core.mark_disconnected(reason);
        }
    }
}

/// Acknowledgements received by a generator running here (backpressure).
#[derive(Default)]
struct Acks {
    acked: FxHashSet<u32>,
    gone: bool,
    /// An async generator waiting for room (woken by an acknowledgement).
    wakers: Vec<std::task::Waker>,
}

#[derive(Default)]
struct LocalState {
    /// Threads blocked in `get`, by the object they wait for: an arriving
    /// object wakes waiters only if someone waits for it (a `get_all` of
    /// 1,000 refs would otherwise be woken 1,000 times for nothing).
    get_waiters: FxHashMap<ObjectId, u32>,
    /// Threads blocked in `wait` or on a stream: woken by every arrival.
    other_waiters: u32,
    /// Async waiters on objects (`ObjectRef` awaited, `as_completed`), by
    /// object: woken when it arrives, the connection is lost, or a task
    /// running here is cancelled.
    object_wakers: FxHashMap<ObjectId, Vec<std::task::Waker>>,
    streams: FxHashMap<TaskId, LocalStream>,
    acks: FxHashMap<TaskId, Acks>,
    /// Actor calls this process made whose first return object it still
    /// holds (a force-cancel of them is refused).
    actor_calls: FxHashSet<TaskId>,
    /// This process's handle count per object (see `RefInner`).
    refs: FxHashMap<ObjectId, u32>,
    objects: FxHashMap<ObjectId, Entry>,
    subscribed: FxHashSet<ObjectId>,
    /// Objects asked to be told made (`wait` with `fetch_local` off): the
    /// `seq` they were told made at, 0 while asked.
    made: FxHashMap<ObjectId, u64>,
    seq: u64,
    disconnected: Option<String>,
}

pub struct CoreWorker {
    worker_id: WorkerId,
    info: NodeInfo,
    arena: Arc<Arena>,
    /// How messages reach the node (in-process or a socket; see
    /// `ferroray_transport`); `None` once closed.
    link: RwLock<Option<Box<dyn Link>>>,
    next_seq: AtomicU64,
    state: Mutex<LocalState>,
    /// Wakes the threads waiting for news in `state` (`notify_waiters`).
    ready: Condvar,
    /// Counts the wake-ups of `ready`: a waiter that watches before it
    /// sleeps (`ferroray_common::spin`) stops when it changes.
    news: AtomicU64,
    requests: Mutex<HashMap<u64, mpsc::SyncSender<FromNode>>>,
    next_req: AtomicU64,
    /// Runs the tasks the node sends (workers only; see [`executor`]).
    exec: Option<Box<dyn Executor>>,
    /// The running task told the node it waits (`Blocked`), lending its CPU.
    /// The node keeps it so until the task ends, so it is sent once a task.
    lent: AtomicBool,
    /// Bytes of exported functions, as the node sent them with a first call
    /// (kept on arrival: the call may be taken back before it runs, and
    /// later calls come without them).
    functions: Mutex<FxHashMap<FunctionId, Arc<[u8]>>>,
}

impl CoreWorker {
    fn new(
        worker_id: WorkerId,
        info: NodeInfo,
        arena: Arc<Arena>,
        link: Option<Box<dyn Link>>,
        exec: Option<Box<dyn Executor>>,
    ) -> Self {
        codec::register_arena(&arena);
        CoreWorker {
            worker_id,
            info,
            arena,
            link: RwLock::new(link),
            next_seq: AtomicU64::new(1),
            state: Mutex::new(LocalState::default()),
            ready: Condvar::new(),
            news: AtomicU64::new(0),
            requests: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            exec,
            lent: AtomicBool::new(false),
            functions: Mutex::new(FxHashMap::default()),
        }
    }

    /// Exports a function (or class) of another language's front: its
    /// bytes go to the node once, and calls name it by the id returned.
    pub fn export_function(&self, pickled: Vec<u8>) -> Result<FunctionId> {
        let function = FunctionId { exporter: self.worker_id, seq: self.next_seq.fetch_add(1, Ordering::Relaxed) };
        self.send(ToNode::ExportFunction { function, pickled })?;
        Ok(function)
    }

    /// The bytes of an exported function this worker was sent, if any.
    pub fn function_bytes(&self, function: FunctionId) -> Option<Arc<[u8]>> {
        self.functions.lock().get(&function).cloned()
    }

    /// A driver's core worker, not connected yet: connect it with
    /// [`CoreWorker::inbox`] (what the node's messages go to) and then
    /// [`CoreWorker::attach`] (how messages reach the node).
    pub fn driver(worker_id: WorkerId, info: NodeInfo, arena: Arc<Arena>) -> Arc<Self> {
        Arc::new(CoreWorker::new(worker_id, info, arena, None, None))
    }

    /// Where a link should hand the node's messages for this driver.
    pub fn inbox(self: &Arc<Self>) -> Arc<dyn Inbox> {
        Arc::new(DriverInbox(Arc::downgrade(self)))
    }

    /// Sends this process's messages through `link` from now on.
    pub fn attach(&self, link: Box<dyn Link>) {
        *self.link.write() = Some(link);
    }

    /// A core worker connected to nothing, whose calls fail with
    /// `Disconnected(reason)`: what a `remote()` call submits to when there
    /// is no cluster and none could be started, so that its refs hand out
    /// the error instead of the call panicking. `None` if even its
    /// one-page arena cannot be made.
    pub fn detached(reason: &str) -> Option<Arc<Self>> {
        let arena = Arc::new(Arena::create(4096).ok()?);
        let info =
            NodeInfo { node_id: ferroray_common::NodeId::random(), inline_threshold: u64::MAX, store_capacity: 0 };
        let core = Arc::new(CoreWorker::new(WorkerId::random(), info, arena, None, None));
        core.mark_disconnected(reason);
        Some(core)
    }

    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }

    /// Closes the connection to the node; later calls fail with `Disconnected`.
    pub fn close(&self) {
        let link = self.link.write().take();
        drop(link);
        self.mark_disconnected("ferroray was shut down");
    }

    pub(crate) fn send(&self, msg: ToNode) -> Result<()> {
        match self.link.read().as_ref() {
            None => Err(Error::Disconnected("ferroray was shut down".into())),
            Some(link) => link.send(msg),
        }
    }

    pub(crate) fn request(&self, make: impl FnOnce(u64) -> ToNode) -> Result<FromNode> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        self.requests.lock().insert(req, tx);
        if let Err(e) = self.send(make(req)) {
            self.requests.lock().remove(&req);
            return Err(e);
        }
        let r = rx.recv_timeout(REQUEST_TIMEOUT);
        self.requests.lock().remove(&req);
        r.map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => Error::GetTimeout,
            mpsc::RecvTimeoutError::Disconnected => Error::Disconnected("the node went away".into()),
        })
    }

    pub(crate) fn allocate(&self, size: u64) -> Result<u64> {
        if let Some(result) = self.link.read().as_ref().and_then(|l| l.allocate_now(size)) {
            return result;
        }
        match self.request(|req| ToNode::Allocate { req, size })? {
            FromNode::Allocated { result, .. } => result,
            other => Err(Error::Protocol(format!("unexpected reply to allocate: {other:?}"))),
        }
    }

    pub(crate) fn deallocate(&self, offset: u64) {
        let _ = self.send(ToNode::Deallocate { offset });
    }

    pub(crate) fn unpin(&self, id: ObjectId) {
        let _ = self.send(ToNode::Unpin(vec![id]));
    }

    pub fn next_task_id(&self) -> TaskId {
        TaskId { submitter: self.worker_id, seq: self.next_seq.fetch_add(1, Ordering::Relaxed) }
    }

    pub(crate) fn add_local_ref(&self, id: ObjectId, notify: bool) {
        let first = {
            let mut st = self.state.lock();
            let n = st.refs.entry(id).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first && notify {
            let _ = self.send(ToNode::AddRef(vec![id]));
        }
    }

    pub(crate) fn remove_local_ref(&self, id: ObjectId) {
        let evicted = {
            let mut st = self.state.lock();
            let Some(n) = st.refs.get_mut(&id) else {
                return;
            };
            *n -= 1;
            if *n > 0 {
                return;
            }
            st.refs.remove(&id);
            if !st.actor_calls.is_empty() && id == ObjectId::for_return(id.task, 0) {
                st.actor_calls.remove(&id.task);
            }
            st.subscribed.remove(&id);
            st.made.remove(&id);
            st.object_wakers.remove(&id);
            st.objects.remove(&id)
        };
        drop(evicted);
        let _ = self.send(ToNode::RemoveRef(vec![id]));
    }

    /// How many objects this process holds handles to (for leak checks).
    pub fn local_ref_count(&self) -> usize {
        self.state.lock().refs.len()
    }

    fn cache(&self, st: &mut LocalState, id: ObjectId, value: Cached) {
        let seq = match st.objects.get(&id) {
            Some(e) => e.seq,
            None => {
                st.seq += 1;
                st.seq
            }
        };
        st.objects.insert(id, Entry { value, seq });
    }

    /// Wakes every thread waiting for news in `state`; the news must be in
    /// `state` already (a waiter looks under the lock before it sleeps).
    fn notify_waiters(&self) {
        self.news.fetch_add(1, Ordering::Release);
        self.ready.notify_all();
    }

    fn mark_disconnected(&self, reason: &str) {
        let wakers: Vec<std::task::Waker> = {
            self.state.lock().disconnected.get_or_insert_with(|| reason.to_string());
            self.take_all_wakers()
        };
        // Async consumers too: their next poll hands out the error, then the end.
        wakers.into_iter().for_each(|w| w.wake());
        self.requests.lock().clear();
        self.notify_waiters();
    }

    /// Handles one message from the node (on the reader thread).
    fn dispatch(self: &Arc<Self>, msg: FromNode) {
        match msg {
            FromNode::Welcome(_) => {}
            // Only ever sent to a peer node's connections.
            FromNode::KillActor { .. }
            | FromNode::HandleReleased { .. }
            | FromNode::Pull(_)
            | FromNode::Forget(_)
            | FromNode::Elsewhere { .. } => {}
            FromNode::Execute(mut spec) => {
                if let FunctionDescriptor::Python { function: Some(f), pickled, .. } = &mut spec.function {
                    if !pickled.is_empty() {
                        self.functions.lock().insert(*f, std::mem::take(pickled).into());
                    }
                }
                if let Some(exec) = &self.exec {
                    exec.push(*spec);
                }
            }
            FromNode::Revoke { task_ids } => {
                let taken = self.exec.as_ref().map(|e| e.take_queued(&task_ids)).unwrap_or_default();
                let ids = taken.iter().map(|t| t.task_id).collect();
                taken.into_iter().for_each(|t| self.release_unrun(t));
                let _ = self.send(ToNode::Revoked { task_ids: ids });
            }
            FromNode::ObjectReady { id, value } => {
                let cached = Cached::of(value, |offset, len| {
                    Some(ShmPin { id, offset, len, arena: self.arena.clone(), core: Arc::downgrade(self) })
                });
                let unwanted = {
                    let mut st = self.state.lock();
                    st.subscribed.remove(&id);
                    let wakers = st.object_wakers.remove(&id);
                    let wake = st.other_waiters > 0 || st.get_waiters.contains_key(&id);
                    let unwanted = if st.refs.contains_key(&id) {
                        self.cache(&mut st, id, cached);
                        None
                    } else {
                        Some(cached)
                    };
                    (unwanted, wake, wakers)
                };
                let (unwanted, wake, wakers) = unwanted;
                drop(unwanted);
                wakers.into_iter().flatten().for_each(|w| w.wake());
                if wake {
                    self.notify_waiters();
                }
            }
            FromNode::Made(ids) => {
                let mut st = self.state.lock();
                for id in ids {
                    if st.refs.contains_key(&id) {
                        st.seq += 1;
                        let seq = st.seq;
                        st.made.insert(id, seq);
                    }
                }
                if st.other_waiters > 0 {
                    self.notify_waiters();
                }
            }
            FromNode::Allocated { req, .. }
            | FromNode::Tasks { req, .. }
            | FromNode::ActorCreated { req, .. }
            | FromNode::ActorFound { req, .. }
            | FromNode::StreamClaimed { req, .. } => {
                if let Some(tx) = self.requests.lock().remove(&req) {
                    let _ = tx.send(msg);
                }
            }
            FromNode::CancelRunning { task_id, .. } => {
                // The executor removes the task if it is still queued, or
                // raises the flag of the running one, in one step with
                // respect to a task starting (see `Executor::cancel`).
                let unrun = self.exec.as_ref().and_then(|e| e.cancel(task_id));
                // A task still queued here never starts.
                if let Some(t) = unrun {
                    let attempt = t.attempt;
                    self.release_unrun(t);
                    let outcome = TaskOutcome::Failed(Error::TaskCancelled);
                    let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome });
                }
                // Under the lock: a waiter between its check and its sleep
                // must not miss this. Async waiters look at the flag when
                // polled: wake them all.
                let wakers = self.take_all_wakers();
                self.notify_waiters();
                wakers.into_iter().for_each(|w| w.wake());
            }
            FromNode::StreamItem { task_id, index, value } => {
                // A shared-memory item comes without a pin: `get` takes one.
                let cached = value.map_or(Cached::InStore, |v| Cached::of(v, |_, _| None));
                // News sent before this process passed the stream on goes to
                // its new owner too; here the stream has ended for good.
                self.update_stream(task_id, |s, seq| {
                    if s.passed_on.is_none() {
                        s.items.insert(index, (cached, seq));
                    }
                });
            }
            FromNode::StreamEnd { task_id, items, error } => {
                self.update_stream(task_id, |s, seq| {
                    if s.passed_on.is_none() {
                        s.end = Some((items, error, seq));
                    }
                });
            }
            FromNode::ItemAck { task_id, index, gone } => {
                let mut st = self.state.lock();
                let wakers = match st.acks.get_mut(&task_id) {
                    Some(a) => {
                        a.acked.insert(index);
                        a.gone |= gone;
                        std::mem::take(&mut a.wakers)
                    }
                    None => Vec::new(),
                };
                drop(st);
                wakers.into_iter().for_each(|w| w.wake());
                self.notify_waiters();
            }
            FromNode::Rejected(e) => {
                eprintln!("ferroray: the node closed the connection: {e}");
                self.mark_disconnected(&e.to_string());
            }
            FromNode::Output { to_stderr, text, .. } => {
                use std::io::Write;
                // Best effort, as a worker's own print: a closed stdout
                // loses the lines, nothing else.
                let _ = if to_stderr {
                    std::io::stderr().lock().write_all(text.as_bytes())
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes()).and_then(|_| out.flush())
                };
            }
        }
    }

    /// A new ref holding `e`, for a failure that has no object of its own
    /// (a stream's consumer cancelled while it waits): its `get` gives `e`.
    /// Works after the connection is lost too (the value is cached here).
    pub(crate) fn error_ref(self: &Arc<Self>, e: Error) -> Arc<RefInner> {
        let id = ObjectId::for_put(self.next_task_id());
        let inner = RefInner::owned(self, id);
        self.cache(&mut self.state.lock(), id, Cached::Error(e.clone()));
        let _ = self.send(ToNode::Put { id, value: ObjectValue::Error(e) });
        inner
    }

    /// Every async waiter, objects and streams (to wake them all).
    fn take_all_wakers(&self) -> Vec<std::task::Waker> {
        let mut st = self.state.lock();
        let mut wakers: Vec<std::task::Waker> = st.object_wakers.drain().flat_map(|(_, w)| w).collect();
        wakers.extend(st.streams.values_mut().flat_map(|s| std::mem::take(&mut s.wakers)));
        wakers.extend(st.acks.values_mut().flat_map(|a| std::mem::take(&mut a.wakers)));
        wakers
    }

    /// Tells the node, once per task, that the task on this thread waits:
    /// its CPU goes to others until the task ends. Only from a task's thread.
    pub(crate) fn lend_cpu(&self) {
        if context::in_task() && !self.lent.swap(true, Ordering::Relaxed) {
            let _ = self.send(ToNode::Blocked);
        }
    }
}

/// While a task's thread waits in `get`/`wait`, on a stream, or finds
/// nothing when it polls, its CPU is lent back to the node (so the tasks it
/// waits for can run on a 2-core machine). The node gives the CPU back only
/// when the task ends, so the task lends it once (`CoreWorker::lend_cpu`).
struct BlockedGuard<'a> {
    core: &'a CoreWorker,
    in_task: bool,
    /// This wait's watching before its first sleep.
    spin: Spin,
}

impl<'a> BlockedGuard<'a> {
    fn new(core: &'a CoreWorker) -> Self {
        BlockedGuard { core, in_task: context::in_task(), spin: Spin::new() }
    }

    fn is_blocked(&self) -> bool {
        !self.in_task || self.core.lent.load(Ordering::Relaxed)
    }

    fn block(&mut self) {
        if self.in_task {
            self.core.lend_cpu();
        }
    }
}
