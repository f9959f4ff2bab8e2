//! The node's state machine driven through its message handler, with no
//! process and no socket: peers are in-process outboxes whose messages the
//! test reads, and the pool is the channel the spawner would read. The
//! end-to-end tests (with real workers) stay in `tests/` and in the facade.

use crate::local::LocalOutbox;
use crate::pool::PoolCmd;
use crate::state::{ConnId, Outbox, Pool, State};
use crate::{NodeConfig, WorkerCommand};
use ferroray_common::{resources, ClusterToken, Error, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId};
use ferroray_protocol::{
    FromNode, FunctionDescriptor, NodeInfo, ObjectValue, Payload, ReturnKind, Role, TaskOutcome, TaskSpec, ToNode,
    WorkerKind, PROTOCOL_VERSION,
};
use ferroray_store::{Arena, Store};
use ferroray_transport::Inbox;
use parking_lot::Mutex;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

/// Records what the node sends to one peer.
#[derive(Default)]
pub(crate) struct Recorder(pub(crate) Mutex<Vec<FromNode>>);

impl Inbox for Recorder {
    fn deliver(&self, msg: FromNode) {
        self.0.lock().push(msg);
    }

    fn closed(&self, _reason: &str) {}
}

pub(crate) struct Peer {
    pub(crate) conn: ConnId,
    pub(crate) pid: u32,
    pub(crate) worker_id: WorkerId,
    pub(crate) outbox: Arc<LocalOutbox>,
    pub(crate) inbox: Arc<Recorder>,
}

impl Peer {
    /// What the node sent since the last call.
    pub(crate) fn take(&self) -> Vec<FromNode> {
        self.outbox.deliver();
        std::mem::take(&mut *self.inbox.0.lock())
    }
}

pub(crate) struct Harness {
    pub(crate) st: State,
    pub(crate) spawns: Receiver<PoolCmd>,
    pub(crate) token: ClusterToken,
    next_pid: u32,
    /// Keeps the store's temporary parent directory for the test's length.
    spill: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spill);
    }
}

pub(crate) fn harness(cpus: f64) -> Harness {
    harness_of(cpus, &[WorkerKind::Rust])
}

/// A node whose pool has a command for each of `kinds`.
fn harness_of(cpus: f64, kinds: &[WorkerKind]) -> Harness {
    harness_with(cpus, kinds, |_| {})
}

/// A node as `harness_of` makes it, with `tune` applied to its config.
pub(crate) fn harness_with(cpus: f64, kinds: &[WorkerKind], tune: impl FnOnce(&mut NodeConfig)) -> Harness {
    let mut config = NodeConfig::new(WorkerCommand { program: "/bin/true".into(), args: vec![], env: vec![] });
    config.worker_commands =
        kinds.iter().map(|k| (*k, WorkerCommand { program: "/bin/true".into(), args: vec![], env: vec![] })).collect();
    config.resources = ResourceSet::new().with(resources::CPU, cpus);
    config.store_capacity = 1 << 20;
    let token = ClusterToken::random().unwrap();
    config.token = Some(token.clone());
    let spill =
        std::env::temp_dir().join(format!("ferroray-state-tests-{}-{}", std::process::id(), WorkerId::random()));
    std::fs::create_dir_all(&spill).unwrap();
    let arena = Arc::new(Arena::create(config.store_capacity).unwrap());
    let store = Store::new(arena, spill.clone()).unwrap();
    tune(&mut config);
    let info = NodeInfo { node_id: config.node_id, inline_threshold: 1024, store_capacity: config.store_capacity };
    let (tx, spawns) = std::sync::mpsc::channel();
    Harness { st: State::new(&config, info, store, tx), spawns, token, next_pid: 1000, spill }
}

impl Harness {
    pub(crate) fn connect(&mut self, pid: u32) -> (ConnId, Arc<LocalOutbox>, Arc<Recorder>) {
        let inbox = Arc::new(Recorder::default());
        let outbox = Arc::new(LocalOutbox::new(inbox.clone()));
        let conn = self.st.add_connection(Outbox::Local(outbox.clone()), pid);
        (conn, outbox, inbox)
    }

    pub(crate) fn driver(&mut self) -> Peer {
        let worker_id = WorkerId::random();
        let (conn, outbox, inbox) = self.connect(1);
        let hello = ToNode::Hello {
            protocol: PROTOCOL_VERSION,
            worker_id,
            pid: 1,
            role: Role::Driver,
            token: self.token.clone(),
        };
        self.st.handle(conn, hello);
        let p = Peer { conn, pid: 1, worker_id, outbox, inbox };
        assert!(matches!(p.take().as_slice(), [FromNode::Welcome(_)]));
        p
    }

    /// A worker the spawner started (as asked), connected and welcomed.
    pub(crate) fn worker(&mut self) -> Peer {
        self.worker_of(WorkerKind::Rust)
    }

    fn worker_of(&mut self, kind: WorkerKind) -> Peer {
        self.worker_in(Pool::own(kind))
    }

    /// A worker of `pool` the spawner started, connected and welcomed.
    pub(crate) fn worker_in(&mut self, pool: Pool) -> Peer {
        let p = self.try_worker_in(pool).expect("the node takes the worker");
        // The welcome first; whatever the node sent right after (a task for
        // the new worker) stays for the test to read.
        let mut msgs = p.take();
        assert!(matches!(msgs.first(), Some(FromNode::Welcome(_))), "{msgs:?}");
        msgs.remove(0);
        *p.inbox.0.lock() = msgs;
        p
    }

    /// A worker of `pool` the spawner started, after its hello: `None` if
    /// the node turned it away.
    pub(crate) fn try_worker_in(&mut self, pool: Pool) -> Option<Peer> {
        self.next_pid += 1;
        let pid = self.next_pid;
        let worker_id = WorkerId::random();
        self.st.spawned(pid, worker_id, pool, None);
        let (conn, outbox, inbox) = self.connect(pid);
        let hello =
            ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid, role: Role::Worker, token: self.token.clone() };
        self.st.handle(conn, hello);
        self.st.is_connected(conn).then_some(Peer { conn, pid, worker_id, outbox, inbox })
    }

    /// Every command the pool received since the last call.
    pub(crate) fn pool_commands(&self) -> Vec<PoolCmd> {
        std::iter::from_fn(|| self.spawns.try_recv().ok()).collect()
    }

    /// Spawn requests the pool received since the last call.
    pub(crate) fn spawn_requests(&self) -> usize {
        self.spawn_kinds().len()
    }

    /// The kinds of the spawn requests since the last call, in order.
    fn spawn_kinds(&self) -> Vec<WorkerKind> {
        let mut kinds = Vec::new();
        loop {
            match self.spawns.try_recv() {
                Ok(PoolCmd::Spawn { pool, actor: None }) => kinds.push(pool.kind),
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return kinds,
            }
        }
    }
}

pub(crate) fn spec(by: &Peer, seq: u64, returns: ReturnKind, max_retries: u32) -> TaskSpec {
    TaskSpec {
        task_id: TaskId { submitter: by.worker_id, seq },
        function: FunctionDescriptor::Rust { name: "t::f".into() },
        args: vec![],
        contained: vec![],
        returns,
        resources: ResourceSet::new().with(resources::CPU, 1.0),
        max_retries,
        retry_exceptions: RetryExceptions::None,
        parent: None,
        enable_events: true,
        attempt: 0,
        actor: None,
    }
}

pub(crate) fn inline(bytes: &[u8]) -> ObjectValue {
    ObjectValue::Data {
        payload: Payload::Inline(bytes.to_vec()),
        encoding: ferroray_protocol::Encoding::Rust,
        contained: vec![],
    }
}

pub(crate) fn executed(msgs: &[FromNode]) -> Vec<TaskId> {
    msgs.iter()
        .filter_map(|m| match m {
            FromNode::Execute(s) => Some(s.task_id),
            _ => None,
        })
        .collect()
}

pub(crate) fn ready(msgs: &[FromNode], id: ObjectId) -> Option<&ObjectValue> {
    msgs.iter().find_map(|m| match m {
        FromNode::ObjectReady { id: got, value } if *got == id => Some(value),
        _ => None,
    })
}

#[test]
fn a_task_waits_for_a_worker_runs_there_and_wakes_its_subscriber() {
    let mut h = harness(1.0);
    let d = h.driver();
    let s = spec(&d, 1, ReturnKind::Fixed(1), 0);
    let (tid, rid) = (s.task_id, ObjectId::for_return(s.task_id, 0));
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![rid]));
    assert_eq!(h.spawn_requests(), 1, "no worker yet: one is asked for");
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![tid]);
    // A second task with no CPU free waits behind the first on the same worker.
    let s2 = spec(&d, 2, ReturnKind::Fixed(1), 0);
    let tid2 = s2.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(s2)));
    assert_eq!(executed(&w.take()), vec![tid2], "pipelined behind the running task");
    assert_eq!(h.spawn_requests(), 0, "no CPU for another worker");
    h.st.handle(
        w.conn,
        ToNode::TaskDone { task_id: tid, attempt: 0, outcome: TaskOutcome::Returned(vec![inline(b"42")]) },
    );
    assert_eq!(ready(&d.take(), rid), Some(&inline(b"42")));
    assert_eq!(h.st.stats().tasks, 1, "the first task is gone, the second runs");
}

#[test]
fn an_object_is_freed_when_its_last_holder_lets_go() {
    let mut h = harness(1.0);
    let d = h.driver();
    let id = ObjectId { task: TaskId { submitter: d.worker_id, seq: 7 }, index: 0 };
    h.st.handle(d.conn, ToNode::Put { id, value: inline(b"v") });
    assert_eq!(h.st.stats().objects, 1);
    // A second holder (the same driver again is a no-op: holds are per connection).
    h.st.handle(d.conn, ToNode::AddRef(vec![id]));
    h.st.handle(d.conn, ToNode::RemoveRef(vec![id]));
    assert_eq!(h.st.stats().objects, 0, "one RemoveRef ends this connection's hold");
}

#[test]
fn backpressure_holds_an_acknowledgement_until_the_owner_consumes() {
    let mut h = harness(1.0);
    let d = h.driver();
    let w = h.worker();
    let s = spec(&d, 1, ReturnKind::Streaming { backpressure: Some(1) }, 0);
    let tid = s.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    assert_eq!(executed(&w.take()), vec![tid]);
    let report = |index: u32| ToNode::ReportItem {
        task_id: tid,
        attempt: 0,
        index,
        value: inline(&[index as u8]),
        digest: index as u64,
    };
    let acks = |msgs: &[FromNode]| -> Vec<u32> {
        msgs.iter()
            .filter_map(|m| match m {
                FromNode::ItemAck { index, gone: false, .. } => Some(*index),
                _ => None,
            })
            .collect()
    };
    // With a limit of 1 the executor may not make item 1 while item 0 is
    // unconsumed: the acknowledgement of each report waits for the owner.
    h.st.handle(w.conn, report(0));
    assert!(acks(&w.take()).is_empty(), "item 0 unconsumed: its acknowledgement is held");
    h.st.handle(d.conn, ToNode::StreamConsumed { task_id: tid, consumed: 1 });
    assert_eq!(acks(&w.take()), vec![0], "released once the owner took it");
    h.st.handle(w.conn, report(1));
    assert!(acks(&w.take()).is_empty());
    let items = d.take().iter().filter(|m| matches!(m, FromNode::StreamItem { .. })).count();
    assert_eq!(items, 2);
    h.st.handle(d.conn, ToNode::StreamConsumed { task_id: tid, consumed: 2 });
    assert_eq!(acks(&w.take()), vec![1]);
    h.st.handle(w.conn, ToNode::TaskDone { task_id: tid, attempt: 0, outcome: TaskOutcome::Streamed { items: 2 } });
    assert!(d.take().iter().any(|m| matches!(m, FromNode::StreamEnd { items: 2, error: None, .. })));
    h.st.handle(d.conn, ToNode::StreamDrop { task_id: tid, consumed: 2 });
    h.st.handle(d.conn, ToNode::RemoveRef(vec![ObjectId::for_return(tid, 0)]));
    for i in 0..2 {
        h.st.handle(d.conn, ToNode::RemoveRef(vec![ObjectId::for_item(tid, i)]));
    }
    let stats = h.st.stats();
    assert_eq!((stats.objects, stats.tasks, stats.streams), (0, 0, 0), "nothing left: {stats:?}");
}

#[test]
fn a_batch_is_placed_once_at_its_end_and_stops_at_a_message_that_ends_its_connection() {
    let mut h = harness(1.0);
    let d = h.driver();
    let w = h.worker();
    let (s1, s2) = (spec(&d, 1, ReturnKind::Fixed(1), 0), spec(&d, 2, ReturnKind::Fixed(1), 0));
    let (t1, r1, t2) = (s1.task_id, ObjectId::for_return(s1.task_id, 0), s2.task_id);
    // Placement waits for the batch's end: the task cancelled within it
    // never reaches the idle worker (handled one by one, it would have
    // gone to the worker first, the cancel after it).
    let cancel = ToNode::Cancel { task_id: t1, force: false, recursive: true, force_after_ms: None };
    let batch = [ToNode::Submit(Box::new(s1)), ToNode::Subscribe(vec![r1]), cancel, ToNode::Submit(Box::new(s2))];
    h.st.handle_all(d.conn, batch);
    assert_eq!(ready(&d.take(), r1), Some(&ObjectValue::Error(Error::TaskCancelled)));
    assert_eq!(executed(&w.take()), vec![t2]);
    // A message that ends the connection ends the batch: what follows it
    // is not handled.
    let s3 = spec(&d, 3, ReturnKind::Fixed(1), 0);
    let foreign = ObjectId::for_return(TaskId { submitter: WorkerId(999), seq: 1 }, 0);
    let bad = ToNode::Put { id: foreign, value: inline(b"x") };
    h.st.handle_all(d.conn, [bad, ToNode::Submit(Box::new(s3))]);
    assert!(!h.st.is_connected(d.conn));
    assert!(executed(&w.take()).is_empty(), "the submit after it was not handled");
}

#[test]
fn a_queued_task_is_cancelled_without_a_worker() {
    let mut h = harness(1.0);
    let d = h.driver();
    let s = spec(&d, 1, ReturnKind::Fixed(1), 3);
    let (tid, rid) = (s.task_id, ObjectId::for_return(s.task_id, 0));
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![rid]));
    h.st.handle(d.conn, ToNode::Cancel { task_id: tid, force: false, recursive: true, force_after_ms: None });
    assert_eq!(ready(&d.take(), rid), Some(&ObjectValue::Error(Error::TaskCancelled)));
}

#[test]
fn a_dead_workers_task_is_retried_then_fails_when_retries_run_out() {
    let mut h = harness(1.0);
    let d = h.driver();
    let s = spec(&d, 1, ReturnKind::Fixed(1), 1);
    let (tid, rid) = (s.task_id, ObjectId::for_return(s.task_id, 0));
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![rid]));
    let w1 = h.worker();
    assert_eq!(executed(&w1.take()), vec![tid]);
    h.st.disconnect(w1.conn, "killed");
    let w2 = h.worker();
    let again = w2.take();
    assert!(matches!(again.as_slice(), [FromNode::Execute(s)] if s.task_id == tid && s.attempt == 1), "{again:?}");
    h.st.disconnect(w2.conn, "killed again");
    // The final error waits for how the process died (the spawner reaps it).
    assert!(ready(&d.take(), rid).is_none());
    h.st.worker_exited(w2.pid, "was killed by signal 9 (SIGKILL)".into());
    match ready(&d.take(), rid) {
        Some(ObjectValue::Error(Error::WorkerCrashed { detail, .. })) => {
            assert!(detail.contains("SIGKILL"), "{detail}")
        }
        other => panic!("expected WorkerCrashed once the retry is spent, got {other:?}"),
    }
}

#[test]
fn a_worker_reads_only_what_it_holds_or_was_shown() {
    let mut h = harness(1.0);
    let d = h.driver();
    let w = h.worker();
    let secret = ObjectId { task: TaskId { submitter: d.worker_id, seq: 9 }, index: 0 };
    h.st.handle(d.conn, ToNode::Put { id: secret, value: inline(b"s") });
    h.st.handle(w.conn, ToNode::AddRef(vec![secret]));
    h.st.handle(w.conn, ToNode::Subscribe(vec![secret]));
    assert!(matches!(ready(&w.take(), secret), Some(ObjectValue::Error(Error::PermissionDenied(_)))));
    // Shown as a ref argument of its task, it may read it.
    let mut s = spec(&d, 1, ReturnKind::Fixed(1), 0);
    s.args = vec![ferroray_protocol::TaskArg::Ref(secret)];
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    assert_eq!(executed(&w.take()).len(), 1);
    h.st.handle(w.conn, ToNode::Subscribe(vec![secret]));
    assert_eq!(ready(&w.take(), secret), Some(&inline(b"s")));
}

#[test]
fn a_task_names_only_objects_its_submitter_may_read() {
    let mut h = harness(1.0);
    let d = h.driver();
    let other = h.driver();
    let secret = ObjectId { task: TaskId { submitter: d.worker_id, seq: 9 }, index: 0 };
    h.st.handle(d.conn, ToNode::Put { id: secret, value: inline(b"s") });
    // Neither as a ref argument nor nested: the task fails, its worker is
    // shown nothing.
    let mut by_ref = spec(&other, 1, ReturnKind::Fixed(1), 0);
    by_ref.args = vec![ferroray_protocol::TaskArg::Ref(secret)];
    let rid = ObjectId::for_return(by_ref.task_id, 0);
    h.st.handle(other.conn, ToNode::Submit(Box::new(by_ref)));
    let mut nested = spec(&other, 2, ReturnKind::Fixed(1), 0);
    nested.contained = vec![secret];
    let nid = ObjectId::for_return(nested.task_id, 0);
    h.st.handle(other.conn, ToNode::Submit(Box::new(nested)));
    h.st.handle(other.conn, ToNode::Subscribe(vec![rid, nid]));
    let msgs = other.take();
    for id in [rid, nid] {
        assert!(
            matches!(ready(&msgs, id), Some(ObjectValue::Error(Error::PermissionDenied(m))) if m.contains("not given")),
            "{msgs:?}"
        );
    }
    assert_eq!(h.spawn_requests(), 0, "nothing ran");
    // Its owner may.
    h.st.handle(d.conn, ToNode::Submit(Box::new(spec(&d, 1, ReturnKind::Fixed(1), 0))));
    let mut mine = spec(&d, 2, ReturnKind::Fixed(1), 0);
    mine.contained = vec![secret];
    let mid = ObjectId::for_return(mine.task_id, 0);
    h.st.handle(d.conn, ToNode::Submit(Box::new(mine)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![mid]));
    assert!(ready(&d.take(), mid).is_none(), "waits to run");
}

fn python_spec(by: &Peer, seq: u64) -> TaskSpec {
    let mut s = spec(by, seq, ReturnKind::Fixed(1), 0);
    s.function =
        FunctionDescriptor::Python { module: "m".into(), qualname: "f".into(), function: None, pickled: vec![1] };
    s
}

#[test]
fn each_kind_of_task_runs_on_a_worker_of_its_kind() {
    let mut h = harness_of(2.0, &[WorkerKind::Rust, WorkerKind::Python]);
    let d = h.driver();
    let rust = h.worker();
    // An idle Rust worker does not take a Python task: a Python one is asked for.
    let p = python_spec(&d, 1);
    let ptid = p.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(p)));
    assert_eq!(h.spawn_kinds(), vec![WorkerKind::Python]);
    assert!(executed(&rust.take()).is_empty());
    let py = h.worker_of(WorkerKind::Python);
    assert_eq!(executed(&py.take()), vec![ptid]);
    // A Rust task goes to the idle Rust worker, not behind the Python task.
    let r = spec(&d, 2, ReturnKind::Fixed(1), 0);
    let rtid = r.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(r)));
    assert_eq!(executed(&rust.take()), vec![rtid]);
    assert!(executed(&py.take()).is_empty());
    // With no CPU left, a task waits behind a busy worker of its own kind only.
    let p2 = python_spec(&d, 3);
    let p2tid = p2.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(p2)));
    assert_eq!(executed(&py.take()), vec![p2tid]);
    assert!(executed(&rust.take()).is_empty());
    assert!(h.spawn_kinds().is_empty());
}

#[test]
fn a_kind_the_node_cannot_start_is_infeasible() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = python_spec(&d, 1);
    let rid = ObjectId::for_return(p.task_id, 0);
    h.st.handle(d.conn, ToNode::Submit(Box::new(p)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![rid]));
    assert!(h.spawn_kinds().is_empty());
    let msgs = d.take();
    assert!(
        matches!(ready(&msgs, rid), Some(ObjectValue::Error(Error::Infeasible(m))) if m.contains("Python")),
        "{msgs:?}"
    );
}

#[test]
fn a_kind_whose_workers_cannot_start_fails_its_tasks_only() {
    let mut h = harness_of(2.0, &[WorkerKind::Rust, WorkerKind::Python]);
    let d = h.driver();
    let p = python_spec(&d, 1);
    let prid = ObjectId::for_return(p.task_id, 0);
    h.st.handle(d.conn, ToNode::Submit(Box::new(p)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![prid]));
    let r = spec(&d, 2, ReturnKind::Fixed(1), 0);
    let rtid = r.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(r)));
    assert_eq!(h.spawn_kinds(), vec![WorkerKind::Python, WorkerKind::Rust]);
    h.st.spawn_failed(Pool::own(WorkerKind::Python), None, "no interpreter".into());
    let msgs = d.take();
    assert!(
        matches!(ready(&msgs, prid), Some(ObjectValue::Error(Error::WorkerCrashed { detail, .. })) if detail.contains("no interpreter")),
        "{msgs:?}"
    );
    // The Rust task still waits for its worker, and runs there.
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![rtid]);
}

#[test]
fn an_actor_process_whose_hello_beats_its_registration_is_not_refused() {
    let mut h = harness(1.0);
    let d = h.driver();
    let s = actor_spec(&d, 1, WorkerKind::Rust);
    let tid = s.task_id;
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(s) });
    assert!(matches!(d.take().as_slice(), [FromNode::ActorCreated { req: 1, result: Ok(()) }]));
    let actor = ferroray_common::ActorId(tid);
    let spawned: Vec<_> = std::iter::from_fn(|| h.spawns.try_recv().ok()).collect();
    // Its process, and a spare for the next actor.
    assert!(matches!(
        spawned.as_slice(),
        [PoolCmd::Spawn { actor: Some(a), .. }, PoolCmd::Spawn { actor: None, .. }] if *a == actor
    ));
    // The process says hello before the spawner has registered its pid.
    let (pid, worker_id) = (4242, WorkerId::random());
    let (conn, outbox, inbox) = h.connect(pid);
    let hello =
        ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid, role: Role::Worker, token: h.token.clone() };
    h.st.handle(conn, hello);
    let w = Peer { conn, pid, worker_id, outbox, inbox };
    assert!(w.take().is_empty(), "waits for the registration");
    assert!(h.st.is_connected(conn));
    h.st.spawned(pid, worker_id, Pool::own(WorkerKind::Rust), Some(actor));
    let msgs = w.take();
    assert!(matches!(msgs.first(), Some(FromNode::Welcome(_))), "{msgs:?}");
    assert_eq!(executed(&msgs), vec![tid], "the creation task goes to the actor's process");
}

fn exported_spec(by: &Peer, seq: u64, function: ferroray_common::FunctionId) -> TaskSpec {
    let mut s = spec(by, seq, ReturnKind::Fixed(1), 0);
    s.function = FunctionDescriptor::Python {
        module: "m".into(),
        qualname: "f".into(),
        function: Some(function),
        pickled: Vec::new(),
    };
    s
}

/// The pickled bytes of every Python call in `msgs`.
pub(crate) fn executed_pickled(msgs: &[FromNode]) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter_map(|m| match m {
            FromNode::Execute(s) => match &s.function {
                FunctionDescriptor::Python { pickled, .. } => Some(pickled.clone()),
                FunctionDescriptor::Rust { .. } => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn an_exported_function_goes_to_each_worker_once() {
    let mut h = harness_of(2.0, &[WorkerKind::Python]);
    let d = h.driver();
    let f = ferroray_common::FunctionId { exporter: d.worker_id, seq: 100 };
    h.st.handle(d.conn, ToNode::ExportFunction { function: f, pickled: b"the function".to_vec() });
    let w = h.worker_of(WorkerKind::Python);
    // The first call carries the bytes; the next one to the same worker
    // goes without.
    let first = exported_spec(&d, 1, f);
    let tid = first.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(first)));
    assert_eq!(executed_pickled(&w.take()), vec![b"the function".to_vec()]);
    h.st.handle(
        w.conn,
        ToNode::TaskDone { task_id: tid, attempt: 0, outcome: TaskOutcome::Returned(vec![inline(b"1")]) },
    );
    h.st.handle(d.conn, ToNode::Submit(Box::new(exported_spec(&d, 2, f))));
    assert_eq!(executed_pickled(&w.take()), vec![Vec::<u8>::new()]);
    // Exporting the same bytes again changes nothing.
    h.st.handle(d.conn, ToNode::ExportFunction { function: f, pickled: b"the function".to_vec() });
    assert!(h.st.is_connected(d.conn));
}

#[test]
fn a_call_of_a_function_never_exported_fails_and_exports_are_checked() {
    let mut h = harness_of(1.0, &[WorkerKind::Python]);
    let d = h.driver();
    let other = h.driver();
    let unknown = ferroray_common::FunctionId { exporter: d.worker_id, seq: 7 };
    let s = exported_spec(&d, 1, unknown);
    let rid = ObjectId::for_return(s.task_id, 0);
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![rid]));
    assert!(
        matches!(ready(&d.take(), rid), Some(ObjectValue::Error(Error::UnknownFunction(m))) if m.contains("not exported"))
    );
    // A function id names its exporter: another process cannot export
    // under it, nor export one id twice with other bytes.
    let theirs = ferroray_common::FunctionId { exporter: d.worker_id, seq: 8 };
    h.st.handle(other.conn, ToNode::ExportFunction { function: theirs, pickled: vec![1] });
    assert!(!h.st.is_connected(other.conn));
    h.st.handle(d.conn, ToNode::ExportFunction { function: theirs, pickled: vec![1] });
    h.st.handle(d.conn, ToNode::ExportFunction { function: theirs, pickled: vec![2] });
    assert!(!h.st.is_connected(d.conn));
}

/// The creation task of an actor of `kind` that holds no resources.
fn actor_spec(by: &Peer, seq: u64, kind: WorkerKind) -> TaskSpec {
    let mut s = if kind == WorkerKind::Python { python_spec(by, seq) } else { spec(by, seq, ReturnKind::Fixed(1), 0) };
    s.resources = ResourceSet::new();
    s.actor = Some(ferroray_protocol::ActorTask::Create(Box::new(ferroray_protocol::ActorSpec {
        class: "t::Counter".into(),
        name: None,
        detached: false,
        max_restarts: 0,
        max_task_retries: 0,
        max_concurrency: 1,
        executor: ferroray_protocol::ActorExecutor::Serial,
        front: Vec::new(),
    })));
    s
}

/// What the pool was asked: (pool workers by kind, actor processes).
fn spawn_counts(cmds: &[PoolCmd]) -> (Vec<WorkerKind>, usize) {
    let pool = cmds
        .iter()
        .filter_map(|c| match c {
            PoolCmd::Spawn { pool, actor: None } => Some(pool.kind),
            _ => None,
        })
        .collect();
    let actors = cmds.iter().filter(|c| matches!(c, PoolCmd::Spawn { actor: Some(_), .. })).count();
    (pool, actors)
}

#[test]
fn an_actor_takes_an_idle_worker_of_its_kind_and_a_spare_starts_in_its_place() {
    let mut h = harness_of(2.0, &[WorkerKind::Rust, WorkerKind::Python]);
    let d = h.driver();
    let rust = h.worker();
    let py = h.worker_of(WorkerKind::Python);
    let a = actor_spec(&d, 1, WorkerKind::Python);
    let atid = a.task_id;
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    assert!(matches!(d.take().as_slice(), [FromNode::ActorCreated { req: 1, result: Ok(()) }]));
    assert_eq!(executed(&py.take()), vec![atid], "the idle Python worker runs the constructor at once");
    assert!(executed(&rust.take()).is_empty(), "a worker of another kind is not taken");
    assert_eq!(spawn_counts(&h.pool_commands()), (vec![WorkerKind::Python], 0), "one spare, no process of its own");
    h.st.handle(
        py.conn,
        ToNode::TaskDone { task_id: atid, attempt: 0, outcome: TaskOutcome::Returned(vec![inline(b"")]) },
    );
    // The actor's process never goes back to the pool: a Python task waits
    // for the spare.
    let t = python_spec(&d, 2);
    let ttid = t.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(t)));
    assert!(executed(&py.take()).is_empty());
    assert_eq!(spawn_counts(&h.pool_commands()), (vec![], 0), "the spare is starting: nothing more is asked for");
    let spare = h.worker_of(WorkerKind::Python);
    assert_eq!(executed(&spare.take()), vec![ttid]);
    // Killing the actor kills the process it took.
    h.st.handle(d.conn, ToNode::KillActor { actor: ferroray_common::ActorId(atid), no_restart: true });
    assert!(h.pool_commands().iter().any(|c| matches!(c, PoolCmd::Kill(pid) if *pid == py.pid)));
}

#[test]
fn an_actor_with_no_idle_worker_gets_a_process_of_its_own_and_a_spare_starts_beside_it() {
    let mut h = harness(1.0);
    let d = h.driver();
    // The only idle worker dies before anyone takes it.
    let w = h.worker();
    h.st.disconnect(w.conn, "test");
    let a = actor_spec(&d, 1, WorkerKind::Rust);
    let atid = a.task_id;
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    assert_eq!(spawn_counts(&h.pool_commands()), (vec![WorkerKind::Rust], 1));
    // The spare is there before the actor's own process: the next actor takes it.
    let spare = h.worker();
    assert!(executed(&spare.take()).is_empty(), "the spare is not the first actor's");
    let b = actor_spec(&d, 2, WorkerKind::Rust);
    let btid = b.task_id;
    h.st.handle(d.conn, ToNode::CreateActor { req: 2, spec: Box::new(b) });
    assert_eq!(executed(&spare.take()), vec![btid]);
    // The first actor's own process runs its constructor.
    let (pid, worker_id) = (5151, WorkerId::random());
    h.st.spawned(pid, worker_id, Pool::own(WorkerKind::Rust), Some(ferroray_common::ActorId(atid)));
    let (conn, outbox, inbox) = h.connect(pid);
    let hello =
        ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid, role: Role::Worker, token: h.token.clone() };
    h.st.handle(conn, hello);
    let own = Peer { conn, pid, worker_id, outbox, inbox };
    assert_eq!(executed(&own.take()), vec![atid]);
}

#[test]
fn the_idle_timeout_ends_a_spare_but_never_one_an_actor_took() {
    let mut h = harness_with(1.0, &[WorkerKind::Rust], |c| {
        c.idle_worker_timeout = std::time::Duration::ZERO;
        c.unused_worker_timeout = std::time::Duration::ZERO;
    });
    let d = h.driver();
    let (w1, w2, w3) = (h.worker(), h.worker(), h.worker());
    // The most recently idled worker is taken, while all three are past
    // the timeout.
    let a = actor_spec(&d, 1, WorkerKind::Rust);
    let atid = a.task_id;
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    assert_eq!(executed(&w3.take()), vec![atid]);
    assert_eq!(spawn_counts(&h.pool_commands()), (vec![], 0), "two idle workers are spares enough");
    // Beyond the steady size (one per CPU, the actor's process counted),
    // idle workers exit, the longest idle first; the actor's does not.
    h.st.exit_idle_workers();
    assert!(!h.st.is_connected(w1.conn) && !h.st.is_connected(w2.conn));
    assert!(h.st.is_connected(w3.conn));
    // The creation task still finishes on it.
    h.st.handle(
        w3.conn,
        ToNode::TaskDone { task_id: atid, attempt: 0, outcome: TaskOutcome::Returned(vec![inline(b"")]) },
    );
    let handle = ObjectId::for_return(atid, 0);
    h.st.handle(d.conn, ToNode::Subscribe(vec![handle]));
    assert!(matches!(ready(&d.take(), handle), Some(ObjectValue::Data { .. })));
    // With no spare left, the next actor gets a process of its own and a
    // spare is asked for beside it.
    let b = actor_spec(&d, 2, WorkerKind::Rust);
    h.st.handle(d.conn, ToNode::CreateActor { req: 2, spec: Box::new(b) });
    assert_eq!(spawn_counts(&h.pool_commands()), (vec![WorkerKind::Rust], 1));
}

#[test]
fn a_worker_that_ran_a_task_goes_sooner_than_an_unused_spare() {
    // Only the short timeout has passed: the worker that ran a task beyond
    // the steady size goes, the one that never ran anything stays.
    let mut h = harness_with(1.0, &[WorkerKind::Rust], |c| {
        c.idle_worker_timeout = std::time::Duration::ZERO;
        c.unused_worker_timeout = std::time::Duration::from_secs(3600);
    });
    let d = h.driver();
    let (w1, w2, w3) = (h.worker(), h.worker(), h.worker());
    // w3, most recently idled, runs the task and is idle again after it.
    let s1 = spec(&d, 1, ReturnKind::Fixed(1), 0);
    let t = s1.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(s1)));
    assert_eq!(executed(&w3.take()), vec![t]);
    h.st.handle(
        w3.conn,
        ToNode::TaskDone { task_id: t, attempt: 0, outcome: TaskOutcome::Returned(vec![inline(b"x")]) },
    );
    h.st.exit_idle_workers();
    assert!(!h.st.is_connected(w3.conn), "used, beyond the steady size");
    assert!(h.st.is_connected(w1.conn) && h.st.is_connected(w2.conn), "never used: kept");
    // Once one ran a task, it is let go as soon as it is idle beyond the
    // steady size (one per CPU: the other unused one stays).
    let s2 = spec(&d, 2, ReturnKind::Fixed(1), 0);
    let t2 = s2.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(s2)));
    let ran = if executed(&w2.take()) == vec![t2] { &w2 } else { &w1 };
    h.st.handle(
        ran.conn,
        ToNode::TaskDone { task_id: t2, attempt: 0, outcome: TaskOutcome::Returned(vec![inline(b"x")]) },
    );
    h.st.exit_idle_workers();
    assert_eq!([&w1, &w2].iter().filter(|w| h.st.is_connected(w.conn)).count(), 1);
}

#[test]
fn no_spare_starts_once_the_node_shuts_down() {
    let mut h = harness(1.0);
    let d = h.driver();
    let w = h.worker();
    h.st.begin_shutdown();
    let a = actor_spec(&d, 1, WorkerKind::Rust);
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    assert!(executed(&w.take()).is_empty());
    assert_eq!(spawn_counts(&h.pool_commands()), (vec![], 0));
}

#[test]
fn the_event_ring_keeps_the_newest_events_with_every_field() {
    let mut h = harness_with(1.0, &[WorkerKind::Rust], |c| c.max_task_events = 5);
    let d = h.driver();
    let w = h.worker();
    let a = actor_spec(&d, 1, WorkerKind::Rust);
    let atid = a.task_id;
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    let failed = Error::task("ValueError", "no", "t::f", w.pid);
    h.st.handle(w.conn, ToNode::TaskDone { task_id: atid, attempt: 0, outcome: TaskOutcome::Failed(failed) });
    for seq in 2..4 {
        h.st.handle(d.conn, ToNode::Submit(Box::new(spec(&d, seq, ReturnKind::Fixed(1), 0))));
    }
    h.st.handle(d.conn, ToNode::ListTasks { req: 9 });
    let msgs = d.take();
    let Some(FromNode::Tasks { req: 9, events }) = msgs.iter().find(|m| matches!(m, FromNode::Tasks { .. })) else {
        panic!("{msgs:?}")
    };
    assert_eq!(events.len(), 5, "{events:?}");
    // The newest five, oldest first: the actor's end, then the two tasks'
    // submissions and waits (no worker is idle: the actor took it).
    let first = &events[0];
    assert_eq!(first.task_id, atid);
    assert_eq!(first.state, ferroray_protocol::TaskState::Failed);
    assert_eq!(first.actor_id, Some(ferroray_common::ActorId(atid)));
    assert!(first.error.as_deref().is_some_and(|e| e.contains("ValueError")), "{first:?}");
    assert_eq!(events.last().map(|e| e.task_id.seq), Some(3));
    assert!(events.windows(2).all(|p| p[0].time_us <= p[1].time_us));
    assert!(events[1..].iter().all(|e| e.actor_id.is_none() && e.name == "f"), "{events:?}");
}

#[test]
fn tables_a_burst_left_oversized_are_shrunk_once() {
    let mut h = harness(1.0);
    let d = h.driver();
    let ids: Vec<ObjectId> =
        (1..=5000).map(|seq| ObjectId { task: TaskId { submitter: d.worker_id, seq }, index: 0 }).collect();
    for id in &ids {
        h.st.handle(d.conn, ToNode::Put { id: *id, value: inline(b"v") });
    }
    assert!(!h.st.shrink_tables(), "full tables stay");
    h.st.handle(d.conn, ToNode::RemoveRef(ids[1..].to_vec()));
    assert_eq!(h.st.stats().objects, 1);
    assert!(h.st.shrink_tables(), "the emptied object table shrinks");
    assert!(!h.st.shrink_tables(), "and then stays");
    h.st.handle(d.conn, ToNode::Subscribe(vec![ids[0]]));
    assert_eq!(ready(&d.take(), ids[0]), Some(&inline(b"v")), "what is left is still there");
}
