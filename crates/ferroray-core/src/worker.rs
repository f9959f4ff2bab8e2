//! The core worker of one process.

use crate::codec::{self, ReturnValue, ShmPin, Source};
use crate::context::{self, TaskContext};
use crate::generator::WaitKey;
use crate::global;
use crate::object_ref::RefInner;
use crate::registry::{self, Invoke, ItemSink};
use crate::task::ArgReader;
use ferroray_common::{ClusterToken, Error, ObjectId, Result, TaskId, WorkerId};
use ferroray_protocol::{
    FromNode, FunctionDescriptor, NodeInfo, ObjectValue, Payload, ReturnKind, Role, TaskEvent, TaskOutcome, TaskSpec,
    ToNode, PROTOCOL_VERSION,
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

/// How long a request to the node (allocation, task listing) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

enum Cached {
    Inline(Arc<Vec<u8>>),
    /// Ready in shared memory, with a pin this process holds.
    Shm(Arc<ShmPin>),
    /// Ready in shared memory; reading it needs a fresh pin.
    InStore,
    Error(Error),
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

/// Tasks the node sent to this worker, in order; the node may take back the
/// ones that have not started (see `FromNode::Revoke`).
struct ExecQueue {
    tasks: Mutex<VecDeque<TaskSpec>>,
    ready: Condvar,
}

/// Acknowledgements received by a generator running here (backpressure).
#[derive(Default)]
struct Acks {
    acked: FxHashSet<u32>,
    gone: bool,
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
    /// This process's handle count per object (see `RefInner`).
    refs: FxHashMap<ObjectId, u32>,
    objects: FxHashMap<ObjectId, Entry>,
    subscribed: FxHashSet<ObjectId>,
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
    ready: Condvar,
    requests: Mutex<HashMap<u64, mpsc::SyncSender<FromNode>>>,
    next_req: AtomicU64,
    /// Tasks sent to this worker and not started yet (workers only).
    exec: Option<ExecQueue>,
    running: Mutex<Option<TaskContext>>,
    /// The running task told the node it waits (`Blocked`), lending its CPU.
    /// The node keeps it so until the task ends, so it is sent once a task.
    lent: AtomicBool,
}

impl CoreWorker {
    fn new(
        worker_id: WorkerId,
        info: NodeInfo,
        arena: Arc<Arena>,
        link: Option<Box<dyn Link>>,
        exec: Option<ExecQueue>,
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
            requests: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            exec,
            running: Mutex::new(None),
            lent: AtomicBool::new(false),
        }
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

    fn request(&self, make: impl FnOnce(u64) -> ToNode) -> Result<FromNode> {
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
            st.subscribed.remove(&id);
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

    /// Whether the value of `id` is known here. If not, asks the node to
    /// send it when ready (once: later calls find the subscription).
    pub fn is_ready(&self, id: ObjectId) -> bool {
        if self.state.lock().objects.contains_key(&id) {
            return true;
        }
        let _ = self.subscribe(&[id], false);
        false
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

    /// Stores a value made in this process as a new object.
    pub(crate) fn put_value(self: &Arc<Self>, value: ObjectValue, keep: Vec<Arc<RefInner>>) -> Result<Arc<RefInner>> {
        let id = ObjectId::for_put(self.next_task_id());
        let inner = RefInner::owned(self, id);
        let cached = match &value {
            ObjectValue::Data { payload: Payload::Inline(b), .. } => Cached::Inline(Arc::new(b.clone())),
            ObjectValue::Data { payload: Payload::Shm { .. }, .. } => Cached::InStore,
            ObjectValue::Error(e) => Cached::Error(e.clone()),
        };
        self.cache(&mut self.state.lock(), id, cached);
        self.send(ToNode::Put { id, value })?;
        drop(keep);
        Ok(inner)
    }

    pub fn put<T: serde::Serialize>(self: &Arc<Self>, v: &T) -> Result<crate::ObjectRef<T>> {
        let (value, keep) = codec::encode(self, v)?.into_parts();
        Ok(crate::ObjectRef::from_inner(self.put_value(value, keep)?))
    }

    /// Sends a task (or, if it is invalid, stores its error in every return
    /// object). Returns one handle per return object.
    pub(crate) fn submit(
        self: &Arc<Self>,
        task_id: TaskId,
        returns: ReturnKind,
        spec: Result<TaskSpec>,
    ) -> Vec<Arc<RefInner>> {
        let ids: Vec<ObjectId> = (0..returns.static_count()).map(|i| ObjectId::for_return(task_id, i)).collect();
        let refs: Vec<Arc<RefInner>> = ids.iter().map(|id| RefInner::owned(self, *id)).collect();
        if let ReturnKind::Streaming { backpressure } = returns {
            // Registered before the task is sent, so no item can come first.
            self.state.lock().streams.insert(
                task_id,
                LocalStream {
                    items: Default::default(),
                    end: None,
                    next: 0,
                    error_handed: false,
                    backpressure: backpressure.is_some(),
                    wakers: Vec::new(),
                },
            );
        }
        // The node refuses a message over its limits by closing the
        // connection: a call over them fails here, as an invalid option.
        let spec = spec.and_then(|s| match ferroray_protocol::limits::check_spec(&s) {
            Ok(()) => Ok(s),
            Err(Error::Protocol(m)) => Err(Error::InvalidOption(m)),
            Err(e) => Err(e),
        });
        let failed = match spec {
            Ok(spec) => self.send(ToNode::Submit(Box::new(spec))).err(),
            Err(e) => {
                for id in &ids {
                    let _ = self.send(ToNode::Put { id: *id, value: ObjectValue::Error(e.clone()) });
                }
                Some(e)
            }
        };
        if let Some(e) = failed {
            let mut st = self.state.lock();
            for id in &ids {
                self.cache(&mut st, *id, Cached::Error(e.clone()));
            }
            st.seq += 1;
            let seq = st.seq;
            if let Some(s) = st.streams.get_mut(&task_id) {
                s.end = Some((0, Some(e), seq));
            }
        }
        refs
    }

    /// The next item of a stream this process owns: blocks up to `timeout`
    /// (`None`: no limit; zero: do not wait). `Ok(None)` once it has ended.
    pub(crate) fn stream_next(
        self: &Arc<Self>,
        task: TaskId,
        timeout: Option<Duration>,
    ) -> Result<Option<Arc<RefInner>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut blocked = BlockedGuard::new(self);
        let mut st = self.state.lock();
        loop {
            match self.take_next(&mut st, task) {
                Poll::Ready((r, consumed)) => {
                    drop(st);
                    if let Some(consumed) = consumed {
                        let _ = self.send(ToNode::StreamConsumed { task_id: task, consumed });
                    }
                    return Ok(r);
                }
                Poll::Pending => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // A task polling (`next_ready`) for an item that is not here
                // may be what keeps the producer from a CPU: lend it, as a
                // blocking `next` would.
                drop(st);
                blocked.block();
                return Err(Error::GetTimeout);
            }
            if context::is_cancelled() {
                return Err(Error::TaskCancelled);
            }
            self.park(&mut st, &mut blocked, deadline);
        }
    }

    /// `futures::Stream` form of [`stream_next`](Self::stream_next).
    pub(crate) fn stream_poll(self: &Arc<Self>, task: TaskId, waker: &std::task::Waker) -> Poll<Option<Arc<RefInner>>> {
        let mut st = self.state.lock();
        match self.take_next(&mut st, task) {
            Poll::Ready((r, consumed)) => {
                drop(st);
                if let Some(consumed) = consumed {
                    let _ = self.send(ToNode::StreamConsumed { task_id: task, consumed });
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some(s) = st.streams.get_mut(&task) {
                    if !s.wakers.iter().any(|w| w.will_wake(waker)) {
                        s.wakers.push(waker.clone());
                    }
                }
                drop(st);
                // An async task awaiting an item lends its CPU exactly as a
                // blocking `next` does (the producer may be queued behind it).
                self.lend_cpu();
                Poll::Pending
            }
        }
    }

    /// Hands out the stream's next ref if there is one: an item, or after
    /// the last item the error (once), or the end. Also gives the new
    /// consumed count when the node needs it (backpressure).
    fn take_next(self: &Arc<Self>, st: &mut LocalState, task: TaskId) -> Poll<(Option<Arc<RefInner>>, Option<u32>)> {
        if st.disconnected.is_some() {
            let reason = st.disconnected.clone().unwrap_or_default();
            st.seq += 1;
            let seq = st.seq;
            if let Some(s) = st.streams.get_mut(&task) {
                if s.end.is_none() {
                    let next = s.next;
                    s.end = Some((next, Some(Error::Disconnected(reason)), seq));
                }
            }
        }
        let Some(s) = st.streams.get_mut(&task) else { return Poll::Ready((None, None)) };
        if let Some((cached, _)) = s.items.remove(&s.next) {
            let id = ObjectId::for_item(task, s.next);
            s.next += 1;
            let consumed = s.backpressure.then_some(s.next);
            // The node already holds the item for this process.
            *st.refs.entry(id).or_insert(0) += 1;
            self.cache(st, id, cached);
            return Poll::Ready((Some(Arc::new(RefInner { id, core: self.clone() })), consumed));
        }
        let Some((n, error, _)) = &s.end else { return Poll::Pending };
        if s.next < *n {
            return Poll::Pending;
        }
        match error {
            Some(e) if !s.error_handed => {
                s.error_handed = true;
                let e = e.clone();
                let id = ObjectId::for_return(task, 0);
                *st.refs.entry(id).or_insert(0) += 1;
                self.cache(st, id, Cached::Error(e));
                Poll::Ready((Some(Arc::new(RefInner { id, core: self.clone() })), None))
            }
            _ => Poll::Ready((None, None)),
        }
    }

    pub(crate) fn stream_ended(&self, task: TaskId) -> bool {
        self.state.lock().streams.get(&task).is_none_or(|s| s.end.is_some())
    }

    /// The caller dropped its generator: tell the node how far it got.
    pub(crate) fn drop_stream(&self, task: TaskId) {
        let removed = self.state.lock().streams.remove(&task);
        if let Some(s) = removed {
            let _ = self.send(ToNode::StreamDrop { task_id: task, consumed: s.next });
        }
    }

    /// Asks the node for every object of `ids` not known here yet.
    pub fn prefetch(&self, ids: &[ObjectId]) -> Result<()> {
        self.subscribe_missing(ids)
    }

    fn subscribe_missing(&self, ids: &[ObjectId]) -> Result<()> {
        self.subscribe(ids, true)
    }

    /// Subscribes to the objects of `ids` that are not known here, and with
    /// `refetch`, to those known to be in shared memory but not pinned (to
    /// read them). `wait` needs only readiness, so it does not refetch.
    fn subscribe(&self, ids: &[ObjectId], refetch: bool) -> Result<()> {
        let missing: Vec<ObjectId> = {
            let mut st = self.state.lock();
            ids.iter()
                .copied()
                .filter(|id| {
                    let need = match st.objects.get(id) {
                        None => true,
                        Some(e) => refetch && matches!(e.value, Cached::InStore),
                    };
                    need && st.subscribed.insert(*id)
                })
                .collect()
        };
        if missing.is_empty() {
            Ok(())
        } else {
            self.send(ToNode::Subscribe(missing))
        }
    }

    /// Waits for news. The first time, a task instead tells the node it is
    /// blocked (lending its CPU back) and returns, so the caller looks again
    /// before sleeping.
    fn park(
        &self,
        st: &mut parking_lot::MutexGuard<'_, LocalState>,
        blocked: &mut BlockedGuard<'_>,
        deadline: Option<Instant>,
    ) {
        if blocked.is_blocked() {
            self.wait_for_any(st, deadline);
        } else {
            parking_lot::MutexGuard::unlocked(st, || blocked.block());
        }
    }

    /// Sleeps until anything arrives (or `deadline`), as a waiter that every
    /// arrival wakes (`wait` and streams look at many objects at once).
    fn wait_for_any(&self, st: &mut parking_lot::MutexGuard<'_, LocalState>, deadline: Option<Instant>) {
        st.other_waiters += 1;
        match deadline {
            Some(d) => {
                self.ready.wait_until(st, d);
            }
            None => self.ready.wait(st),
        }
        st.other_waiters -= 1;
    }

    /// Blocks until `id` is ready, then decodes it.
    pub fn get<T: DeserializeOwned>(&self, id: ObjectId, timeout: Option<Duration>) -> Result<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut blocked = BlockedGuard::new(self);
        loop {
            let source = {
                let mut st = self.state.lock();
                let found = match st.objects.get_mut(&id) {
                    Some(e) => match &e.value {
                        Cached::Inline(b) => Some(Ok(Source::Inline(b.clone()))),
                        Cached::Error(err) => Some(Err(err.clone())),
                        Cached::Shm(_) => match std::mem::replace(&mut e.value, Cached::InStore) {
                            Cached::Shm(pin) => Some(Ok(Source::Shm(pin))),
                            _ => unreachable!(),
                        },
                        Cached::InStore => None,
                    },
                    None => None,
                };
                match found {
                    Some(s) => s,
                    None => {
                        if let Some(reason) = &st.disconnected {
                            return Err(Error::Disconnected(reason.clone()));
                        }
                        if context::is_cancelled() {
                            return Err(Error::TaskCancelled);
                        }
                        if !st.subscribed.contains(&id) {
                            drop(st);
                            self.subscribe_missing(&[id])?;
                            continue;
                        }
                        if !blocked.is_blocked() {
                            drop(st);
                            blocked.block();
                            continue;
                        }
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(Error::GetTimeout);
                        }
                        *st.get_waiters.entry(id).or_insert(0) += 1;
                        let timed_out = match deadline {
                            Some(d) => self.ready.wait_until(&mut st, d).timed_out(),
                            None => {
                                self.ready.wait(&mut st);
                                false
                            }
                        };
                        if let Some(n) = st.get_waiters.get_mut(&id) {
                            *n -= 1;
                            if *n == 0 {
                                st.get_waiters.remove(&id);
                            }
                        }
                        if timed_out && !st.objects.contains_key(&id) {
                            return Err(Error::GetTimeout);
                        }
                        continue;
                    }
                }
            };
            return codec::decode(&source?);
        }
    }

    /// Waits until `num_returns` of `ids` are ready or the timeout passes.
    /// Returns the positions of the ready ones in the order they became ready
    /// (at most `num_returns`), and the rest in their given order.
    pub fn wait(
        &self,
        keys: &[WaitKey],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        if num_returns > keys.len() {
            return Err(Error::InvalidOption(format!(
                "num_returns {num_returns} is more than the {} refs given",
                keys.len()
            )));
        }
        let unique: FxHashSet<WaitKey> = keys.iter().copied().collect();
        if unique.len() != keys.len() {
            return Err(Error::InvalidOption("wait was given the same ref twice".into()));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let objects: Vec<ObjectId> = keys
            .iter()
            .filter_map(|k| match k {
                WaitKey::Object(id) => Some(*id),
                WaitKey::Stream(_) => None,
            })
            .collect();
        self.subscribe(&objects, false)?;
        let mut blocked = BlockedGuard::new(self);
        let mut st = self.state.lock();
        loop {
            let mut ready: Vec<(u64, usize)> = keys
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    let seq = match k {
                        WaitKey::Object(id) => st.objects.get(id).map(|e| e.seq),
                        // A dropped stream has nothing more to wait for.
                        WaitKey::Stream(t) => st.streams.get(t).map_or(Some(0), LocalStream::ready_since),
                    };
                    seq.map(|s| (s, i))
                })
                .collect();
            let done = ready.len() >= num_returns
                || deadline.is_some_and(|d| Instant::now() >= d)
                || st.disconnected.is_some()
                || context::is_cancelled();
            if done {
                if let Some(reason) = &st.disconnected {
                    if ready.len() < num_returns {
                        return Err(Error::Disconnected(reason.clone()));
                    }
                }
                if ready.len() < num_returns {
                    // Timed out (a zero timeout polls): lend the CPU, as the
                    // blocking form would have.
                    parking_lot::MutexGuard::unlocked(&mut st, || blocked.block());
                }
                ready.sort();
                ready.truncate(num_returns);
                let chosen: FxHashSet<usize> = ready.iter().map(|(_, i)| *i).collect();
                let rest = (0..keys.len()).filter(|i| !chosen.contains(i)).collect();
                return Ok((ready.into_iter().map(|(_, i)| i).collect(), rest));
            }
            self.park(&mut st, &mut blocked, deadline);
        }
    }

    pub fn cancel(&self, id: ObjectId, force: bool, recursive: bool) -> Result<()> {
        if id.is_put() {
            return Err(Error::InvalidOption(format!("object {id} was made by put, not by a task")));
        }
        self.send(ToNode::Cancel { task_id: id.task, force, recursive, force_after_ms: None })
    }

    /// A cooperative cancel that the node turns into a forced one for each
    /// cancelled task (the task, and with `recursive` its descendants) still
    /// running after `grace`.
    pub fn cancel_with_grace(&self, id: ObjectId, recursive: bool, grace: Duration) -> Result<()> {
        if id.is_put() {
            return Err(Error::InvalidOption(format!("object {id} was made by put, not by a task")));
        }
        let force_after_ms = Some(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        self.send(ToNode::Cancel { task_id: id.task, force: false, recursive, force_after_ms })
    }

    /// Every recorded task state change, oldest first.
    pub fn task_events(&self) -> Result<Vec<TaskEvent>> {
        match self.request(|req| ToNode::ListTasks { req })? {
            FromNode::Tasks { events, .. } => Ok(events),
            other => Err(Error::Protocol(format!("unexpected reply to list tasks: {other:?}"))),
        }
    }

    fn mark_disconnected(&self, reason: &str) {
        let wakers: Vec<std::task::Waker> = {
            self.state.lock().disconnected.get_or_insert_with(|| reason.to_string());
            self.take_all_wakers()
        };
        // Async consumers too: their next poll hands out the error, then the end.
        wakers.into_iter().for_each(|w| w.wake());
        self.requests.lock().clear();
        self.ready.notify_all();
    }

    /// Applies news to a stream this process owns (stamped with the order it
    /// came in, for `wait`) and wakes whoever waits on it.
    fn update_stream(&self, task_id: TaskId, update: impl FnOnce(&mut LocalStream, u64)) {
        let wakers = {
            let mut st = self.state.lock();
            st.seq += 1;
            let seq = st.seq;
            match st.streams.get_mut(&task_id) {
                Some(s) => {
                    update(s, seq);
                    std::mem::take(&mut s.wakers)
                }
                None => Vec::new(),
            }
        };
        wakers.into_iter().for_each(|w| w.wake());
        self.ready.notify_all();
    }

    /// Handles one message from the node (on the reader thread).
    fn dispatch(self: &Arc<Self>, msg: FromNode) {
        match msg {
            FromNode::Welcome(_) => {}
            FromNode::Execute(spec) => {
                if let Some(q) = &self.exec {
                    q.tasks.lock().push_back(*spec);
                    q.ready.notify_one();
                }
            }
            FromNode::Revoke { task_ids } => {
                let taken = self.take_queued(&task_ids);
                let ids = taken.iter().map(|t| t.task_id).collect();
                taken.into_iter().for_each(|t| self.release_unrun(t));
                let _ = self.send(ToNode::Revoked { task_ids: ids });
            }
            FromNode::ObjectReady { id, value } => {
                let cached = match value {
                    ObjectValue::Error(e) => Cached::Error(e),
                    ObjectValue::Data { payload: Payload::Inline(b), .. } => Cached::Inline(Arc::new(b)),
                    ObjectValue::Data { payload: Payload::Shm { offset, len }, .. } => Cached::Shm(Arc::new(ShmPin {
                        id,
                        offset,
                        len,
                        arena: self.arena.clone(),
                        core: Arc::downgrade(self),
                    })),
                };
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
                    self.ready.notify_all();
                }
            }
            FromNode::Allocated { req, .. } | FromNode::Tasks { req, .. } => {
                if let Some(tx) = self.requests.lock().remove(&req) {
                    let _ = tx.send(msg);
                }
            }
            FromNode::CancelRunning { task_id } => {
                // Under the queue's lock, which `run_queue` holds from taking
                // a task off the queue until it is recorded as running: the
                // task is either still queued or running here (or over), so
                // the cancel cannot fall between the two.
                let unrun = match &self.exec {
                    Some(q) => {
                        let mut tasks = q.tasks.lock();
                        let mut unrun = Vec::new();
                        tasks.retain(|t| {
                            let hit = t.task_id == task_id;
                            if hit {
                                unrun.push(t.clone());
                            }
                            !hit
                        });
                        if unrun.is_empty() {
                            self.cancel_running(task_id);
                        }
                        unrun
                    }
                    None => {
                        self.cancel_running(task_id);
                        Vec::new()
                    }
                };
                // A task still queued here never starts.
                for t in unrun {
                    let attempt = t.attempt;
                    self.release_unrun(t);
                    let outcome = TaskOutcome::Failed(Error::TaskCancelled);
                    let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome });
                }
                // Under the lock: a waiter between its check and its sleep
                // must not miss this. Async waiters look at the flag when
                // polled: wake them all.
                let wakers = self.take_all_wakers();
                self.ready.notify_all();
                wakers.into_iter().for_each(|w| w.wake());
            }
            FromNode::StreamItem { task_id, index, value } => {
                let cached = match value {
                    Some(ObjectValue::Error(e)) => Cached::Error(e),
                    Some(ObjectValue::Data { payload: Payload::Inline(b), .. }) => Cached::Inline(Arc::new(b)),
                    _ => Cached::InStore,
                };
                self.update_stream(task_id, |s, seq| {
                    s.items.insert(index, (cached, seq));
                });
            }
            FromNode::StreamEnd { task_id, items, error } => {
                self.update_stream(task_id, |s, seq| s.end = Some((items, error, seq)));
            }
            FromNode::ItemAck { task_id, index, gone } => {
                let mut st = self.state.lock();
                if let Some(a) = st.acks.get_mut(&task_id) {
                    a.acked.insert(index);
                    a.gone |= gone;
                }
                drop(st);
                self.ready.notify_all();
            }
            FromNode::Rejected(e) => {
                eprintln!("ferroray: the node closed the connection: {e}");
                self.mark_disconnected(&e.to_string());
            }
        }
    }

    /// Removes these tasks from the queue if they have not started.
    fn take_queued(&self, ids: &[TaskId]) -> Vec<TaskSpec> {
        let Some(q) = &self.exec else { return Vec::new() };
        let mut tasks = q.tasks.lock();
        let mut taken = Vec::new();
        tasks.retain(|t| {
            let hit = ids.contains(&t.task_id);
            if hit {
                taken.push(t.clone());
            }
            !hit
        });
        taken
    }

    /// A task given back without running: release the pins the node took
    /// for its shared-memory arguments.
    fn release_unrun(&self, spec: TaskSpec) {
        for arg in spec.args {
            if let ferroray_protocol::TaskArg::Object { id, payload: Payload::Shm { .. } } = arg {
                self.unpin(id);
            }
        }
    }

    /// Sets the cancel flag of the task running here, if it is `task_id`.
    fn cancel_running(&self, task_id: TaskId) {
        if let Some(ctx) = self.running.lock().as_ref() {
            if ctx.task_id == task_id {
                ctx.cancelled.store(true, Ordering::Relaxed);
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
        wakers
    }

    /// `Future` form of [`get`](Self::get): the value if it is here, else
    /// `Pending` with `waker` registered for its arrival. A task polling a
    /// value that is not here lends its CPU, exactly as a blocking `get`.
    pub fn poll_get<T: DeserializeOwned>(&self, id: ObjectId, waker: &std::task::Waker) -> Poll<Result<T>> {
        let mut st = self.state.lock();
        let found = match st.objects.get_mut(&id) {
            Some(e) => match &e.value {
                Cached::Inline(b) => Some(Ok(Source::Inline(b.clone()))),
                Cached::Error(err) => Some(Err(err.clone())),
                Cached::Shm(_) => match std::mem::replace(&mut e.value, Cached::InStore) {
                    Cached::Shm(pin) => Some(Ok(Source::Shm(pin))),
                    _ => unreachable!(),
                },
                Cached::InStore => None,
            },
            None => None,
        };
        if let Some(source) = found {
            drop(st);
            return Poll::Ready(source.and_then(|s| codec::decode(&s)));
        }
        if let Some(reason) = &st.disconnected {
            return Poll::Ready(Err(Error::Disconnected(reason.clone())));
        }
        if context::is_cancelled() {
            return Poll::Ready(Err(Error::TaskCancelled));
        }
        let wakers = st.object_wakers.entry(id).or_default();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        let subscribe = !st.subscribed.contains(&id);
        drop(st);
        if subscribe {
            if let Err(e) = self.subscribe_missing(&[id]) {
                return Poll::Ready(Err(e));
            }
        }
        self.lend_cpu();
        Poll::Pending
    }

    /// Non-blocking form of [`wait`](Self::wait) for async callers: the
    /// positions of the ready keys with the order they became ready in
    /// (`(seq, position)`, unsorted). If none is ready, `waker` is registered
    /// for every key and a task lends its CPU. Fails if the connection is lost
    /// (or the task polling is cancelled) while nothing is ready.
    pub fn poll_ready(&self, keys: &[WaitKey], waker: &std::task::Waker) -> Result<Vec<(u64, usize)>> {
        let mut st = self.state.lock();
        let ready: Vec<(u64, usize)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let seq = match k {
                    WaitKey::Object(id) => st.objects.get(id).map(|e| e.seq),
                    WaitKey::Stream(t) => st.streams.get(t).map_or(Some(0), LocalStream::ready_since),
                };
                seq.map(|s| (s, i))
            })
            .collect();
        if !ready.is_empty() {
            return Ok(ready);
        }
        if let Some(reason) = &st.disconnected {
            return Err(Error::Disconnected(reason.clone()));
        }
        if context::is_cancelled() {
            return Err(Error::TaskCancelled);
        }
        let mut objects = Vec::new();
        for k in keys {
            let wakers = match k {
                WaitKey::Object(id) => {
                    objects.push(*id);
                    st.object_wakers.entry(*id).or_default()
                }
                WaitKey::Stream(t) => match st.streams.get_mut(t) {
                    Some(s) => &mut s.wakers,
                    None => continue,
                },
            };
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
            }
        }
        drop(st);
        self.subscribe(&objects, false)?;
        self.lend_cpu();
        Ok(Vec::new())
    }

    /// Tells the node, once per task, that the task on this thread waits:
    /// its CPU goes to others until the task ends. Only from a task's thread.
    pub(crate) fn lend_cpu(&self) {
        if context::in_task() && !self.lent.swap(true, Ordering::Relaxed) {
            let _ = self.send(ToNode::Blocked);
        }
    }

    /// Runs queued tasks one after another, forever (worker processes).
    fn run_queue(self: &Arc<Self>) {
        let Some(q) = &self.exec else { return };
        loop {
            let (spec, ctx) = {
                let mut tasks = q.tasks.lock();
                let spec = loop {
                    if let Some(t) = tasks.pop_front() {
                        break t;
                    }
                    q.ready.wait(&mut tasks);
                };
                // Recorded as running before the queue's lock goes, so a
                // `CancelRunning` finds the task in one place or the other.
                let ctx = TaskContext {
                    task_id: spec.task_id,
                    name: spec.name().to_string(),
                    cancelled: Arc::new(AtomicBool::new(false)),
                };
                *self.running.lock() = Some(ctx.clone());
                (spec, ctx)
            };
            test_hooks::start_delay();
            self.run_task(spec, ctx);
        }
    }

    /// Runs one task to its end and reports the outcome (worker processes).
    fn run_task(self: &Arc<Self>, spec: TaskSpec, ctx: TaskContext) {
        self.lent.store(false, Ordering::Relaxed);
        context::set(Some(ctx.clone()));
        let (task_id, attempt) = (spec.task_id, spec.attempt);
        let expected = spec.returns.static_count() as usize;
        let returns = spec.returns;
        let function = match &spec.function {
            FunctionDescriptor::Rust { name } => {
                registry::lookup(name).ok_or_else(|| Error::UnknownFunction(name.clone()))
            }
            FunctionDescriptor::Python { qualname, .. } => Err(Error::UnknownFunction(qualname.clone())),
        };
        let mut reader = ArgReader { core: self, args: spec.args.into_iter(), position: 0, function: &ctx.name };
        let guarded = |body: &mut dyn FnMut() -> Result<Vec<ReturnValue>>| match catch_unwind(AssertUnwindSafe(body)) {
            Ok(r) => r,
            Err(panic) => Err(Error::task("panic", panic_message(&panic), &ctx.name, std::process::id())),
        };
        let result = match function.map(|f| &f.invoke) {
            Err(e) => Err(e),
            Ok(Invoke::Values(f)) => guarded(&mut || {
                let values = f(&mut reader)?;
                reader.finish()?;
                Ok(values)
            }),
            Ok(Invoke::Items(f)) => match returns {
                ReturnKind::Fixed(n) => {
                    let mut sink = FixedSink { values: Vec::new(), n: n as usize, overflow: false };
                    let r = guarded(&mut || {
                        f(&mut reader, &mut sink)?;
                        reader.finish()?;
                        Ok(Vec::new())
                    });
                    sink.finish(r.err(), &ctx.name)
                }
                // Streaming and dynamic returns both report each item as it
                // comes; the node hands them out, or makes the list at the end.
                ReturnKind::Streaming { .. } | ReturnKind::Dynamic => {
                    let backpressure = matches!(returns, ReturnKind::Streaming { backpressure: Some(_) });
                    let mut sink = StreamSink { core: self, task_id, attempt, next: 0, backpressure, gone: false };
                    if sink.backpressure {
                        self.state.lock().acks.insert(task_id, Acks::default());
                    }
                    let r = guarded(&mut || {
                        f(&mut reader, &mut sink)?;
                        reader.finish()?;
                        Ok(Vec::new())
                    });
                    self.state.lock().acks.remove(&task_id);
                    drop(reader);
                    let outcome = match r {
                        Ok(_) => TaskOutcome::Streamed { items: sink.next },
                        Err(e) => TaskOutcome::Failed(e),
                    };
                    let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome });
                    context::set(None);
                    *self.running.lock() = None;
                    return;
                }
            },
        };
        drop(reader);
        let (outcome, keep) = match result {
            Ok(values) if values.len() == expected => {
                let (vals, keeps): (Vec<_>, Vec<_>) = values.into_iter().map(ReturnValue::into_parts).unzip();
                (TaskOutcome::Returned(vals), keeps)
            }
            Ok(values) => (
                TaskOutcome::Failed(Error::task(
                    "ferroray::ReturnCountMismatch",
                    format!("returned {} values, expected {expected}", values.len()),
                    &ctx.name,
                    std::process::id(),
                )),
                vec![],
            ),
            Err(e) => (TaskOutcome::Failed(e), vec![]),
        };
        if let Err(e) = self.send(ToNode::TaskDone { task_id, attempt, outcome }) {
            // The results could not be sent (too large for one message, say):
            // report that instead of leaving the caller waiting.
            let e = Error::task("ferroray::ResultsNotSent", e.to_string(), &ctx.name, std::process::id());
            let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome: TaskOutcome::Failed(e) });
        }
        drop(keep);
        context::set(None);
        *self.running.lock() = None;
    }
}

/// Keeps a generator's values as the task's `n` fixed return values.
struct FixedSink {
    values: Vec<ReturnValue>,
    n: usize,
    overflow: bool,
}

impl ItemSink for FixedSink {
    fn item(&mut self, value: ReturnValue) -> Result<()> {
        if self.values.len() == self.n {
            self.overflow = true;
            return Err(Error::InvalidOption(String::new()));
        }
        self.values.push(value);
        Ok(())
    }
}

impl FixedSink {
    /// Values yielded before a failure stay readable; the refs after them
    /// hold the error. Yielding more or fewer than `n` values is an error too
    /// (in every ref when there were more: the caller asked for exactly `n`).
    fn finish(mut self, error: Option<Error>, name: &str) -> Result<Vec<ReturnValue>> {
        let pid = std::process::id();
        let got = self.values.len();
        let count_error = |what: String| Error::task("ferroray::NumReturnsMismatch", what, name, pid);
        if self.overflow {
            let e = count_error(format!("yielded more than num_returns = {} values", self.n));
            return Ok((0..self.n).map(|_| ReturnValue::error(e.clone())).collect());
        }
        if let Some(e) = &error {
            if got == self.n {
                // It failed after making every value: that is still a failed
                // task, not a success (Ray drops this error silently).
                let cause = match e {
                    Error::Task(t) => t.message.clone(),
                    other => other.to_string(),
                };
                let e = count_error(format!("failed after yielding all {} values: {cause}", self.n));
                return Ok((0..self.n).map(|_| ReturnValue::error(e.clone())).collect());
            }
        }
        let error = match error {
            Some(e) => Some(e),
            None if got < self.n => Some(count_error(format!("yielded {got} values but num_returns = {}", self.n))),
            None => None,
        };
        if let Some(e) = error {
            self.values.extend((got..self.n).map(|_| ReturnValue::error(e.clone())));
        }
        Ok(self.values)
    }
}

/// Reports each value to the owner as it is yielded.
struct StreamSink<'a> {
    core: &'a Arc<CoreWorker>,
    task_id: TaskId,
    attempt: u32,
    next: u32,
    backpressure: bool,
    /// The owner dropped the stream: no more acknowledgements to wait for.
    gone: bool,
}

impl ItemSink for StreamSink<'_> {
    fn item(&mut self, value: ReturnValue) -> Result<()> {
        if context::is_cancelled() {
            return Err(Error::TaskCancelled);
        }
        let index = self.next;
        let digest = value.digest(self.core.arena());
        let (value, keep) = value.into_parts();
        self.core.send(ToNode::ReportItem { task_id: self.task_id, attempt: self.attempt, index, value, digest })?;
        drop(keep);
        self.next += 1;
        if !self.backpressure || self.gone {
            return Ok(());
        }
        // Paused until the owner has room (or is gone, or we are cancelled).
        // A pause longer than a moment counts as blocked: the CPU is lent
        // back and tasks queued behind this one go elsewhere.
        let paused_at = Instant::now();
        let mut blocked = BlockedGuard::new(self.core);
        let mut st = self.core.state.lock();
        loop {
            // The cancel first: a cancelled generator's held acknowledgement
            // is answered `gone` just after its `CancelRunning`.
            if context::is_cancelled() {
                return Err(Error::TaskCancelled);
            }
            if let Some(a) = st.acks.get(&self.task_id) {
                if a.gone {
                    self.gone = true;
                    return Ok(());
                }
                if a.acked.contains(&index) {
                    return Ok(());
                }
            }
            if let Some(reason) = &st.disconnected {
                return Err(Error::Disconnected(reason.clone()));
            }
            if !blocked.is_blocked() && paused_at.elapsed() >= Duration::from_millis(5) {
                drop(st);
                blocked.block();
                st = self.core.state.lock();
                continue;
            }
            st.other_waiters += 1;
            self.core.ready.wait_for(&mut st, Duration::from_millis(if blocked.is_blocked() { 500 } else { 5 }));
            st.other_waiters -= 1;
        }
    }
}

impl Drop for ArgReader<'_> {
    fn drop(&mut self) {
        for arg in self.args.by_ref() {
            if let ferroray_protocol::TaskArg::Object { id, payload: Payload::Shm { .. } } = arg {
                self.core.unpin(id);
            }
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// While a task's thread waits in `get`/`wait`, on a stream, or finds
/// nothing when it polls, its CPU is lent back to the node (so the tasks it
/// waits for can run on a 2-core machine). The node gives the CPU back only
/// when the task ends, so the task lends it once (`CoreWorker::lend_cpu`).
struct BlockedGuard<'a> {
    core: &'a CoreWorker,
    in_task: bool,
}

impl<'a> BlockedGuard<'a> {
    fn new(core: &'a CoreWorker) -> Self {
        BlockedGuard { core, in_task: context::in_task() }
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

/// Test-only delays that widen race windows, read once from the environment
/// (unset outside tests: one load of an initialised `OnceLock` per task).
mod test_hooks {
    use std::sync::OnceLock;
    use std::time::Duration;

    fn read(name: &str) -> Option<Duration> {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis)
    }

    /// `FERRORAY_TEST_START_DELAY_MS`: a pause between taking a task off the
    /// queue and running it (where a cancel used to be lost).
    pub(super) fn start_delay() {
        static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
        if let Some(d) = DELAY.get_or_init(|| read("FERRORAY_TEST_START_DELAY_MS")) {
            std::thread::sleep(*d);
        }
    }
}

/// Whether this process was started as a worker.
pub fn is_worker_process() -> bool {
    std::env::var_os(env::WORKER).is_some()
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

fn run_worker() -> Result<()> {
    let socket: String = env_var(env::WORKER)?;
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
    let (link, reader, info) = UnixLink::connect(&socket, &hello)?;
    // SAFETY: `store_fd` names the memfd the node left open (not
    // close-on-exec) for this process and nothing else here owns or uses
    // it; the arena takes it over.
    let arena = Arc::new(unsafe { Arena::open(store_fd, capacity) }.map_err(Error::io)?);
    let exec = ExecQueue { tasks: Mutex::new(VecDeque::new()), ready: Condvar::new() };
    let core = Arc::new(CoreWorker::new(worker_id, info, arena, Some(Box::new(link)), Some(exec)));
    global::set(core.clone())?;
    reader.spawn("ferroray-worker-rx", Arc::new(WorkerInbox(core.clone())))?;
    core.run_queue();
    Ok(())
}
