//! The in-process driver's connection, and how the node's messages reach it.
//!
//! The driver's messages to the node are direct calls ([`LocalConnection::send`]).
//! The node's messages to the driver wait in the connection's [`LocalOutbox`]
//! and are handed to the driver's [`Inbox`] once the state lock is
//! released, by the thread that released it, so that a worker's `TaskDone` or
//! `ReportItem` reaches the driver without a thread switch in between:
//!
//! 1. Every lock of the state goes through [`StateGuard`]; when it is dropped
//!    with messages waiting for a local client, the lock is released first
//!    (the client calls back into the node) and then the messages go out.
//! 2. A node thread (the server's, or the delivery thread) delivers them
//!    itself. Any other thread (a user thread inside `LocalConnection::send`,
//!    the spawner) wakes the delivery thread instead: a user thread may hold
//!    its core worker's locks, which delivery takes. A client whose inbox
//!    only queues (`Inbox::delivers_anywhere`: a daemon's peer link) is
//!    delivered to by whichever thread released the lock, which saves a
//!    thread switch per message. The first thread to release the lock after
//!    messages were queued claims them (`take_pending`): a driver submitting
//!    while the server thread delivers its results does not also wake the
//!    delivery thread for each of them (it did, once per result: a futex
//!    wake in the driver and, on another CPU, an interrupt per call).
//! 3. One thread delivers a link's messages at a time (`delivering`, under the
//!    link's queue lock), taking them in batches in queue order: the driver
//!    sees messages in the order the node sent them. A thread that finds
//!    another delivering leaves its messages to it; the deliverer looks at the
//!    queue again before it stops, under the same lock, so none is stranded.
//! 4. A local connection that goes away queues `closed` after its last
//!    message: the client learns that nothing more will come.

use crate::state::{Outbox, State};
use crate::Shared;
use ferroray_common::Result;
use ferroray_protocol::{FromNode, NodeInfo, ToNode};
use ferroray_store::Arena;
use ferroray_transport::{Inbox, Link};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

thread_local! {
    static NODE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one of the node's own (step 2).
pub(crate) fn mark_node_thread() {
    NODE_THREAD.with(|t| t.set(true));
}

enum Delivery {
    Message(FromNode),
    Closed,
}

#[derive(Default)]
struct OutboxQueue {
    items: VecDeque<Delivery>,
    delivering: bool,
}

/// The node's side of one local connection: its queue of messages.
pub(crate) struct LocalOutbox {
    client: Arc<dyn Inbox>,
    queue: Mutex<OutboxQueue>,
    /// Something is queued and not claimed yet (set by `push`, swapped to
    /// false under the state lock by the claimant, step 2).
    pending: AtomicBool,
}

impl LocalOutbox {
    pub(crate) fn new(client: Arc<dyn Inbox>) -> Self {
        LocalOutbox { client, queue: Mutex::new(OutboxQueue::default()), pending: AtomicBool::new(false) }
    }

    pub(crate) fn send(&self, msg: FromNode) {
        self.push(Delivery::Message(msg));
    }

    pub(crate) fn close(&self) {
        self.push(Delivery::Closed);
    }

    fn push(&self, d: Delivery) {
        self.queue.lock().items.push_back(d);
        self.pending.store(true, Ordering::Release);
    }

    /// Whether any thread may deliver this link's messages (step 2).
    fn delivers_anywhere(&self) -> bool {
        self.client.delivers_anywhere()
    }

    /// Whether anything was queued since the last claim, and claims it
    /// (step 2): read and cleared under the state lock, so of two threads
    /// that lock the state in turn only the first delivers or wakes the
    /// delivery thread.
    pub(crate) fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Hands the queued messages to the client (step 3).
    pub(crate) fn deliver(&self) {
        let mut q = self.queue.lock();
        if q.delivering {
            return;
        }
        q.delivering = true;
        let mut batch = VecDeque::new();
        loop {
            std::mem::swap(&mut q.items, &mut batch);
            self.pending.store(false, Ordering::Release);
            if batch.is_empty() {
                q.delivering = false;
                // A burst (the results of thousands of calls at once) leaves
                // the queue's buffer that large: give it back.
                if q.items.capacity() > 1024 {
                    q.items.shrink_to(64);
                }
                return;
            }
            drop(q);
            for d in batch.drain(..) {
                match d {
                    Delivery::Message(m) => self.client.deliver(m),
                    Delivery::Closed => self.client.closed("the node closed the connection"),
                }
            }
            q = self.queue.lock();
        }
    }
}

/// The delivery thread's work list (step 2).
#[derive(Default)]
pub(crate) struct Deliverer {
    work: Mutex<DelivererWork>,
    wake: Condvar,
}

#[derive(Default)]
struct DelivererWork {
    links: Vec<Arc<LocalOutbox>>,
    stop: bool,
}

impl Deliverer {
    fn hand_over(&self, link: Arc<LocalOutbox>) {
        let mut w = self.work.lock();
        if !w.links.iter().any(|l| Arc::ptr_eq(l, &link)) {
            w.links.push(link);
        }
        self.wake.notify_one();
    }

    /// The delivery thread: runs until `stop`, and until nothing is left.
    pub(crate) fn run(&self) {
        mark_node_thread();
        loop {
            let links = {
                let mut w = self.work.lock();
                while w.links.is_empty() && !w.stop {
                    self.wake.wait(&mut w);
                }
                if w.links.is_empty() {
                    return;
                }
                std::mem::take(&mut w.links)
            };
            links.iter().for_each(|l| l.deliver());
        }
    }

    pub(crate) fn stop(&self) {
        self.work.lock().stop = true;
        self.wake.notify_one();
    }
}

/// The state under its lock; dropping it delivers what it queued for local
/// clients (step 1).
pub(crate) struct StateGuard<'a> {
    shared: &'a Shared,
    guard: Option<MutexGuard<'a, State>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> StateGuard<'_> {
        StateGuard { shared: self, guard: Some(self.state.lock()) }
    }
}

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("held until drop")
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("held until drop")
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let Some(mut st) = self.guard.take() else { return };
        let outboxes = st.outboxes_to_flush();
        drop(st);
        if outboxes.is_empty() {
            return;
        }
        let on_node_thread = NODE_THREAD.with(Cell::get);
        for outbox in outboxes {
            match outbox {
                Outbox::Local(link) if on_node_thread || link.delivers_anywhere() => link.deliver(),
                Outbox::Local(link) => self.shared.deliverer.hand_over(link),
                // The server thread leaves it to the writer task, which batches
                // what it queues; anyone else writes it at once.
                Outbox::Socket(out) if on_node_thread => out.flush_later(),
                Outbox::Socket(out) => out.flush_here(),
            }
        }
    }
}

/// An in-process connection to a node: messages are handled by a direct call.
pub struct LocalConnection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: crate::state::ConnId,
}

impl LocalConnection {
    /// Handles `msg` at once, on this thread (it cannot fail: the node is
    /// here; [`Link::send`] wraps it).
    pub fn send(&self, msg: ToNode) {
        self.shared.lock().handle(self.conn, msg);
    }

    /// Handles `msgs` in order under one lock of the node, as one batch
    /// (`State::handle_all`): what they make it send goes out together (one
    /// write to each worker or driver).
    pub fn send_all(&self, msgs: Vec<ToNode>) {
        self.shared.lock().handle_all(self.conn, msgs);
    }

    /// Handles an allocation at once (no reply message needed in-process).
    pub fn allocate(&self, size: u64) -> Result<u64> {
        self.shared.lock().allocate(self.conn, size)
    }

    pub fn info(&self) -> NodeInfo {
        self.shared.info.clone()
    }

    /// This connection's id in its node (for [`LocalConnection::hold_as`]).
    pub fn id(&self) -> u64 {
        self.conn
    }

    /// Takes a reference to `id` that connection `holder` holds, both being
    /// peer links of one program (`State::hold_as`); false if it does not.
    pub fn hold_as(&self, holder: u64, id: ferroray_common::ObjectId) -> bool {
        self.shared.lock().hold_as(self.conn, holder, id)
    }

    pub fn arena(&self) -> Arc<Arena> {
        self.shared.arena.clone()
    }
}

/// The in-process kind of [`Link`]: a direct call into the node's state.
impl Link for LocalConnection {
    fn send(&self, msg: ToNode) -> Result<()> {
        LocalConnection::send(self, msg);
        Ok(())
    }

    fn allocate_now(&self, size: u64) -> Option<Result<u64>> {
        Some(self.allocate(size))
    }
}

impl Drop for LocalConnection {
    fn drop(&mut self) {
        self.shared.lock().disconnect(self.conn, "driver disconnected");
    }
}
