//! Peer nodes as executors (`state::remote`), driven through the state
//! machine's message handler with the harness of `state_tests`: a peer is an
//! in-process connection attached with `State::attach_peer`, whose inbox the
//! test reads and whose answers (`TaskDone`, `ReportItem`) it sends.

use crate::pool::PoolCmd;
use crate::state::{ConnId, Pool, ProgramId};
use crate::state_tests::{executed, executed_pickled, harness, harness_with, inline, ready, spec, Harness, Peer};
use ferroray_common::{resources, Error, NodeId, ObjectId, ResourceSet, TaskId, WorkerId};
use ferroray_protocol::{
    FromNode, FunctionDescriptor, ObjectValue, Payload, ReturnKind, TaskArg, TaskOutcome, TaskSpec, ToNode, WorkerKind,
};
use parking_lot::Mutex;
use std::sync::Arc;

/// A custom resource the node under test never has.
const X: &str = "x";

/// Attaches peer node `node` with `total` on a new in-process connection
/// (for the node's own program).
fn attach(h: &mut Harness, node: u64, total: ResourceSet) -> Peer {
    attach_for(h, node, ProgramId(0), total)
}

/// Attaches peer node `node` for the tasks of `program`.
fn attach_for(h: &mut Harness, node: u64, program: ProgramId, total: ResourceSet) -> Peer {
    let (conn, outbox, inbox) = h.connect(0);
    h.st.attach_peer(conn, NodeId(node), program, total);
    Peer { conn, pid: 0, worker_id: WorkerId(0), outbox, inbox }
}

fn cpus(n: f64) -> ResourceSet {
    ResourceSet::new().with(resources::CPU, n)
}

fn cpus_x(n: f64, x: f64) -> ResourceSet {
    cpus(n).with(X, x)
}

/// A task needing 1 CPU and 1 `x` (only a peer can run it), named `on_x`.
fn x_spec(by: &Peer, seq: u64, max_retries: u32) -> TaskSpec {
    let mut s = spec(by, seq, ReturnKind::Fixed(1), max_retries);
    s.function = FunctionDescriptor::Rust { name: "t::on_x".into() };
    s.resources = cpus_x(1.0, 1.0);
    s
}

/// Submits `s` for `d`, which does not read its result (yet).
fn unread(h: &mut Harness, d: &Peer, s: TaskSpec) -> (TaskId, ObjectId) {
    let ids = (s.task_id, ObjectId::for_return(s.task_id, 0));
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    ids
}

fn submit(h: &mut Harness, d: &Peer, s: TaskSpec) -> (TaskId, ObjectId) {
    let (tid, rid) = unread(h, d, s);
    h.st.handle(d.conn, ToNode::Subscribe(vec![rid]));
    (tid, rid)
}

fn returned(h: &mut Harness, from: &Peer, tid: TaskId, attempt: u32, bytes: &[u8]) {
    let outcome = TaskOutcome::Returned(vec![inline(bytes)]);
    h.st.handle(from.conn, ToNode::TaskDone { task_id: tid, attempt, outcome });
}

/// (task, attempt) of every `Execute` in `msgs`.
fn executed_attempts(msgs: &[FromNode]) -> Vec<(TaskId, u32)> {
    msgs.iter()
        .filter_map(|m| match m {
            FromNode::Execute(s) => Some((s.task_id, s.attempt)),
            _ => None,
        })
        .collect()
}

fn revokes(msgs: &[FromNode]) -> usize {
    msgs.iter().filter(|m| matches!(m, FromNode::Revoke { .. })).count()
}

fn kills(cmds: &[PoolCmd]) -> usize {
    cmds.iter().filter(|c| matches!(c, PoolCmd::Kill(_))).count()
}

/// What the node logged (its `tracing` output) while `f` ran on this thread.
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let cap = Capture::default();
    let writer = cap.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&cap.0.lock()).into_owned();
    (out, text)
}

// 1.
#[test]
fn a_task_only_a_peer_could_run_waits_warned_once_and_goes_to_a_peer_that_has_it() {
    let mut h = harness(1.0);
    h.st.enable_peers();
    let d = h.driver();
    let ((tid, rid), log) = logged(|| {
        let s = x_spec(&d, 1, 0);
        let ids = submit(&mut h, &d, s);
        // More scheduling passes (another task, a new worker): no second warning.
        let other = spec(&d, 2, ReturnKind::Fixed(1), 0);
        let other_tid = other.task_id;
        h.st.handle(d.conn, ToNode::Submit(Box::new(other)));
        assert_eq!(h.spawn_requests(), 1, "the CPU task asks for a worker, the waiting one does not");
        let w = h.worker();
        assert_eq!(executed(&w.take()), vec![other_tid], "only the CPU task runs here");
        h.st.schedule();
        // Warned once it has waited long enough (a node's view of its
        // peers lags), and once only.
        let now = std::time::Instant::now();
        h.st.warn_long_waits(now);
        h.st.warn_long_waits(now + crate::state::WAIT_WARNING_AFTER);
        h.st.schedule();
        h.st.warn_long_waits(now + 2 * crate::state::WAIT_WARNING_AFTER);
        ids
    });
    assert_eq!(
        log.matches("warning: task on_x needs 1 x, and no node of the cluster has that much (this one has 0)").count(),
        1,
        "{log}"
    );
    let msgs = d.take();
    assert_eq!(ready(&msgs, rid), None, "accepted, not failed: {msgs:?}");
    assert_eq!(h.st.stats().tasks, 2);
    // A peer without `x` changes nothing (and is not warned about again).
    let (p0, log) = logged(|| attach(&mut h, 7, cpus(8.0)));
    assert!(p0.take().is_empty());
    assert!(!log.contains("warning: task"), "{log}");
    // A peer that has it gets it at once, and the node takes no lease for it.
    let before = h.st.stats().available;
    let p = attach(&mut h, 8, cpus_x(2.0, 1.0));
    assert_eq!(executed_attempts(&p.take()), vec![(tid, 0)]);
    assert!(p0.take().is_empty());
    assert_eq!(h.st.stats().available, before);
    assert_eq!(ready(&d.take(), rid), None, "still running");
}

// 2.
#[test]
fn without_peers_a_task_the_node_lacks_resources_for_is_infeasible() {
    let mut h = harness(1.0);
    let d = h.driver();
    let (_, rid) = submit(&mut h, &d, x_spec(&d, 1, 3));
    let msgs = d.take();
    assert!(
        matches!(
            ready(&msgs, rid),
            Some(ObjectValue::Error(Error::Infeasible(m))) if m.contains("needs 1 x but this node has 0 in total")
        ),
        "{msgs:?}"
    );
    assert_eq!(h.st.stats().tasks, 0);
    assert_eq!(h.spawn_requests(), 0);
}

/// An actor creation needing what `x_spec` needs, with `max_restarts`.
fn x_actor(by: &Peer, seq: u64, max_restarts: u32) -> TaskSpec {
    let mut s = x_spec(by, seq, 0);
    s.actor = Some(ferroray_protocol::ActorTask::Create(Box::new(ferroray_protocol::ActorSpec {
        class: "t::Counter".into(),
        name: None,
        detached: false,
        max_restarts,
        max_task_retries: 1,
        max_concurrency: 1,
        executor: ferroray_protocol::ActorExecutor::Serial,
        front: Vec::new(),
    })));
    s
}

/// A call of `actor` by `by`.
fn call(by: &Peer, seq: u64, actor: ferroray_common::ActorId) -> TaskSpec {
    let mut s = spec(by, seq, ReturnKind::Fixed(1), 0);
    s.resources = ResourceSet::new();
    s.actor = Some(ferroray_protocol::ActorTask::Call { actor });
    s.contained = vec![actor.handle_object()];
    s
}

// Step 6: an actor with no room here goes to a peer with room, which holds
// its resources for its life; its calls follow it; the peer's loss restarts
// it on another peer, and a kill is a message to the peer, never a process
// killed here.
#[test]
fn an_actor_goes_to_a_peer_its_calls_follow_and_it_restarts_elsewhere() {
    let mut h = harness(1.0);
    let d = h.driver();
    let b = attach(&mut h, 1, cpus_x(4.0, 1.0));
    let c = attach(&mut h, 2, cpus_x(4.0, 1.0));
    let s = x_actor(&d, 1, 1);
    let actor = ferroray_common::ActorId(s.task_id);
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(s) });
    assert_eq!(executed_attempts(&b.take()), vec![(actor.0, 0)], "its creation goes to the first of equal peers");
    // Its resources are the peer's for its life: another `x` task waits for C.
    let (t, _) = submit(&mut h, &d, x_spec(&d, 2, 0));
    assert!(executed(&b.take()).is_empty());
    assert_eq!(executed(&c.take()), vec![t]);
    returned(&mut h, &b, actor.0, 0, b"handle");
    returned(&mut h, &c, t, 0, b"done");
    // Calls go to the actor's peer.
    let k = call(&d, 3, actor);
    let ktid = k.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(k)));
    assert_eq!(executed(&b.take()), vec![ktid]);
    // B is lost with the call running: the actor restarts on C (its
    // creation again, then the call, with a retry spent).
    h.st.disconnect(b.conn, "link broke");
    let sent = executed_attempts(&c.take());
    assert_eq!(sent, vec![(actor.0, 1)], "the creation runs again on C first");
    returned(&mut h, &c, actor.0, 1, b"handle");
    assert_eq!(executed_attempts(&c.take()), vec![(ktid, 1)]);
    returned(&mut h, &c, ktid, 1, b"7");
    h.st.handle(d.conn, ToNode::Subscribe(vec![ObjectId::for_return(ktid, 0)]));
    let msgs = d.take();
    assert!(matches!(ready(&msgs, ObjectId::for_return(ktid, 0)), Some(ObjectValue::Data { .. })), "{msgs:?}");
    // A kill: a message to C, the actor is dead (no restarts left), C's
    // room comes back, and no process here is killed.
    h.st.handle(d.conn, ToNode::KillActor { actor, no_restart: true });
    let msgs = c.take();
    assert!(msgs.iter().any(|m| matches!(m, FromNode::KillActor { actor: a, .. } if *a == actor)), "{msgs:?}");
    assert_eq!(kills(&h.pool_commands()), 0);
    let (t2, _) = submit(&mut h, &d, x_spec(&d, 4, 0));
    assert_eq!(executed(&c.take()), vec![t2], "C's room for the actor came back");
}

// Step 1: only tasks that take room set a peer's pace (`Pace`): an actor
// on the peer, its creation and its calls, neither count nor keep a
// window open.
#[test]
fn an_actors_creation_and_calls_on_a_peer_leave_its_pace_alone() {
    let mut h = harness(1.0);
    let d = h.driver();
    let b = attach(&mut h, 1, cpus_x(4.0, 1.0));
    let counted = |h: &Harness| h.st.pace_of(b.conn).expect("a peer").counted();
    let s = x_actor(&d, 1, 0);
    let actor = ferroray_common::ActorId(s.task_id);
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(s) });
    assert_eq!(executed_attempts(&b.take()), vec![(actor.0, 0)]);
    assert_eq!(counted(&h), (0, false), "its creation");
    returned(&mut h, &b, actor.0, 0, b"handle");
    let k = call(&d, 2, actor);
    h.st.handle(d.conn, ToNode::Submit(Box::new(k)));
    assert_eq!(b.take().len(), 1);
    assert_eq!(counted(&h), (0, false), "a call");
    // A task is counted, and its end closes the window.
    let (t, _) = submit(&mut h, &d, x_spec(&d, 3, 0));
    assert_eq!(executed(&b.take()), vec![t]);
    assert_eq!(counted(&h), (1, true));
    returned(&mut h, &b, t, 0, b"done");
    assert_eq!(counted(&h), (0, false));
}

// An actor's death on its peer, learnt from a call that fails with
// `ActorDied` there: it restarts (its process crashed) or stays dead (it
// exited).
#[test]
fn an_actor_that_dies_on_its_peer_restarts_or_stays_dead_by_its_cause() {
    use ferroray_common::ActorDeathCause;
    let mut h = harness(1.0);
    let d = h.driver();
    let b = attach(&mut h, 1, cpus_x(4.0, 2.0));
    let s = x_actor(&d, 1, 1);
    let actor = ferroray_common::ActorId(s.task_id);
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(s) });
    assert_eq!(executed_attempts(&b.take()), vec![(actor.0, 0)]);
    returned(&mut h, &b, actor.0, 0, b"handle");
    let k = call(&d, 2, actor);
    let ktid = k.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(k)));
    assert_eq!(executed(&b.take()), vec![ktid]);
    let crashed = Error::ActorDied { actor: "there".into(), cause: ActorDeathCause::Crashed("boom".into()) };
    h.st.handle(b.conn, ToNode::TaskDone { task_id: ktid, attempt: 0, outcome: TaskOutcome::Failed(crashed) });
    assert_eq!(executed_attempts(&b.take()), vec![(actor.0, 1)], "restarted on the peer that has room");
    returned(&mut h, &b, actor.0, 1, b"handle");
    assert_eq!(executed_attempts(&b.take()), vec![(ktid, 1)], "the call again, on its retry");
    let exited = Error::ActorDied { actor: "there".into(), cause: ActorDeathCause::Exited };
    h.st.handle(b.conn, ToNode::TaskDone { task_id: ktid, attempt: 1, outcome: TaskOutcome::Failed(exited) });
    h.st.handle(d.conn, ToNode::Subscribe(vec![ObjectId::for_return(ktid, 0)]));
    let msgs = d.take();
    assert!(
        matches!(ready(&msgs, ObjectId::for_return(ktid, 0)), Some(ObjectValue::Error(Error::ActorDied { .. }))),
        "{msgs:?}"
    );
    assert!(executed(&b.take()).is_empty(), "an actor that exited does not restart");
}

// 3.
#[test]
fn spillback_a_task_with_no_room_here_goes_to_a_peer_with_room() {
    let mut h = harness(1.0);
    let d = h.driver();
    let (t1, _) = submit(&mut h, &d, spec(&d, 1, ReturnKind::Fixed(1), 0));
    assert_eq!(h.spawn_requests(), 1);
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![t1]);
    let p = attach(&mut h, 1, cpus(1.0));
    assert!(p.take().is_empty(), "nothing waits");
    // No CPU free here: the peer takes it, it is not pipelined behind `w`.
    let (t2, _) = submit(&mut h, &d, spec(&d, 2, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&p.take()), vec![t2]);
    assert!(executed(&w.take()).is_empty());
    assert_eq!(h.spawn_requests(), 0);
    assert_eq!(h.st.stats().available, cpus(0.0));
    // The peer's one CPU is taken: the next one (which this node could run)
    // is pipelined behind the busy worker, not sent to the full peer.
    let (t3, _) = submit(&mut h, &d, spec(&d, 3, ReturnKind::Fixed(1), 0));
    assert!(executed(&p.take()).is_empty(), "the peer has no room");
    assert_eq!(executed(&w.take()), vec![t3]);
}

// 3: the peer's room.
#[test]
fn a_peer_takes_what_its_total_has_room_for_then_queues_tasks_only_it_can_run() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    // Room for one, and `PIPELINE_DEPTH` times that queued behind it there.
    let n = 1 + crate::state::PIPELINE_DEPTH;
    let tasks: Vec<(TaskId, ObjectId)> = (1..=n as u64 + 1).map(|seq| submit(&mut h, &d, x_spec(&d, seq, 0))).collect();
    let sent: Vec<TaskId> = tasks[..n].iter().map(|(t, _)| *t).collect();
    assert_eq!(executed(&p.take()), sent, "in order");
    assert_eq!(h.st.stats().tasks, n + 1, "the last stays queued here");
    assert_eq!(h.spawn_requests(), 0, "nothing here could run them");
    // Any of them ending (the peer runs them in its own order) makes room.
    returned(&mut h, &p, tasks[3].0, 0, b"4");
    assert_eq!(ready(&d.take(), tasks[3].1), Some(&inline(b"4")));
    assert_eq!(executed(&p.take()), vec![tasks[n].0], "the room freed takes the next");
    // A `TaskDone` of a task the peer was not sent changes nothing.
    let stray = x_spec(&d, 100, 0).task_id;
    returned(&mut h, &p, stray, 0, b"no");
    assert!(executed(&p.take()).is_empty());
    assert_eq!(h.st.stats().available, cpus(1.0), "this node's resources were never taken");
}

// 3: a peer that gets through its tasks fast takes a deeper queue.
#[test]
fn a_fast_peer_takes_more_queued_tasks_a_slow_one_the_usual() {
    use crate::state::MAX_PEER_DEPTH;
    use std::time::Duration;
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    h.st.pace_clock = Some(std::time::Instant::now());
    h.st.set_peer_gap(p.conn, Duration::from_micros(50));
    let n = 1 + MAX_PEER_DEPTH as usize;
    let tasks: Vec<(TaskId, ObjectId)> = (1..=n as u64 + 1).map(|seq| submit(&mut h, &d, x_spec(&d, seq, 0))).collect();
    let sent: Vec<TaskId> = tasks[..n].iter().map(|(t, _)| *t).collect();
    assert_eq!(executed(&p.take()), sent, "its room and 4 ms of its tasks, at most MAX_PEER_DEPTH times its room");
    // Measured slow meanwhile (its tasks take 10 ms): as deep as a busy
    // worker again; with more than that queued there, nothing goes until
    // it is below.
    h.st.set_peer_gap(p.conn, Duration::from_millis(10));
    let usual = 1 + crate::state::PIPELINE_DEPTH;
    for (tid, _) in &tasks[..n - usual] {
        returned(&mut h, &p, *tid, 0, b"1");
        assert!(executed(&p.take()).is_empty(), "more than the usual depth still there");
    }
    returned(&mut h, &p, tasks[n - usual].0, 0, b"1");
    assert_eq!(executed(&p.take()), vec![tasks[n].0], "below the usual depth: the next goes");
}

// 4.
#[test]
fn a_peers_task_done_completes_the_task_stores_its_value_and_frees_its_room() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let other = attach(&mut h, 2, cpus(1.0));
    let (t1, r1) = submit(&mut h, &d, x_spec(&d, 1, 0));
    assert_eq!(executed(&p.take()), vec![t1]);
    // Only the executor of the current attempt may end it.
    returned(&mut h, &other, t1, 0, b"forged");
    returned(&mut h, &p, t1, 1, b"stale");
    assert_eq!(ready(&d.take(), r1), None);
    assert_eq!(h.st.stats().tasks, 1);
    returned(&mut h, &p, t1, 0, b"42");
    assert_eq!(ready(&d.take(), r1), Some(&inline(b"42")));
    assert_eq!(h.st.stats().tasks, 0);
    // Stored: a later reader gets it too.
    h.st.handle(d.conn, ToNode::Subscribe(vec![r1]));
    assert_eq!(ready(&d.take(), r1), Some(&inline(b"42")));
    // The peer's room is back: two more tasks in turn, each at once.
    let (t2, _) = submit(&mut h, &d, x_spec(&d, 2, 0));
    assert_eq!(executed(&p.take()), vec![t2]);
    returned(&mut h, &p, t2, 0, b"");
    let (t3, _) = submit(&mut h, &d, x_spec(&d, 3, 0));
    assert_eq!(executed(&p.take()), vec![t3]);
    assert!(executed(&other.take()).is_empty(), "the other peer has no x");
    assert_eq!(h.st.stats().available, cpus(1.0));
}

// 5.
#[test]
fn a_generator_on_a_peer_streams_to_its_owner_under_backpressure() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let mut s = x_spec(&d, 1, 0);
    s.returns = ReturnKind::Streaming { backpressure: Some(1) };
    let (tid, _) = submit(&mut h, &d, s);
    assert_eq!(executed(&p.take()), vec![tid]);
    let report = |h: &mut Harness, index: u32, bytes: &[u8]| {
        let msg =
            ToNode::ReportItem { task_id: tid, attempt: 0, index, value: inline(bytes), digest: 100 + index as u64 };
        h.st.handle(p.conn, msg);
    };
    report(&mut h, 0, b"a");
    let msgs = d.take();
    assert!(
        msgs.iter().any(|m| matches!(
            m,
            FromNode::StreamItem { task_id, index: 0, value: Some(v) } if *task_id == tid && *v == inline(b"a")
        )),
        "{msgs:?}"
    );
    assert!(p.take().is_empty(), "one unconsumed item: the acknowledgement is held");
    h.st.handle(d.conn, ToNode::StreamConsumed { task_id: tid, consumed: 1 });
    assert!(matches!(
        p.take().as_slice(),
        [FromNode::ItemAck { task_id, index: 0, gone: false }] if *task_id == tid
    ));
    report(&mut h, 1, b"b");
    assert!(d
        .take()
        .iter()
        .any(|m| matches!(m, FromNode::StreamItem { index: 1, value: Some(v), .. } if *v == inline(b"b"))));
    assert!(p.take().is_empty());
    h.st.handle(d.conn, ToNode::StreamConsumed { task_id: tid, consumed: 2 });
    assert!(matches!(p.take().as_slice(), [FromNode::ItemAck { index: 1, gone: false, .. }]));
    h.st.handle(p.conn, ToNode::TaskDone { task_id: tid, attempt: 0, outcome: TaskOutcome::Streamed { items: 2 } });
    let msgs = d.take();
    assert!(
        msgs.iter().any(|m| matches!(m, FromNode::StreamEnd { task_id, items: 2, error: None } if *task_id == tid)),
        "{msgs:?}"
    );
    assert_eq!(h.st.stats().tasks, 0);
    assert_eq!(h.st.stats().available, cpus(1.0));
}

// 6.
#[test]
fn a_cancel_of_a_task_on_a_peer_is_a_message_to_it_never_a_kill() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(3.0, 3.0));
    let (t1, r1) = submit(&mut h, &d, x_spec(&d, 1, 5));
    let (t2, r2) = submit(&mut h, &d, x_spec(&d, 2, 5));
    let (t3, r3) = submit(&mut h, &d, x_spec(&d, 3, 5));
    assert_eq!(executed(&p.take()), vec![t1, t2, t3], "a peer runs all three at once");
    let cancel = |h: &mut Harness, task_id: TaskId, force: bool, force_after_ms: Option<u64>| {
        h.st.handle(d.conn, ToNode::Cancel { task_id, force, recursive: false, force_after_ms });
    };
    cancel(&mut h, t1, true, None);
    assert!(matches!(
        p.take().as_slice(),
        [FromNode::CancelRunning { task_id, force: true }] if *task_id == t1
    ));
    cancel(&mut h, t2, false, None);
    assert!(matches!(
        p.take().as_slice(),
        [FromNode::CancelRunning { task_id, force: false }] if *task_id == t2
    ));
    // A grace that passed: forced by a second message, still no kill.
    cancel(&mut h, t3, false, Some(0));
    assert!(matches!(p.take().as_slice(), [FromNode::CancelRunning { force: false, .. }]));
    std::thread::sleep(std::time::Duration::from_millis(2));
    h.st.force_overdue_cancels();
    assert!(matches!(
        p.take().as_slice(),
        [FromNode::CancelRunning { task_id, force: true }] if *task_id == t3
    ));
    assert_eq!(kills(&h.pool_commands()), 0);
    assert!(h.st.is_connected(p.conn));
    // Whatever the peer answers, they end cancelled (not retried).
    h.st.handle(
        p.conn,
        ToNode::TaskDone { task_id: t1, attempt: 0, outcome: TaskOutcome::Failed(Error::TaskCancelled) },
    );
    returned(&mut h, &p, t2, 0, b"late");
    let crash = Error::WorkerCrashed { task: "on_x".into(), detail: "killed".into() };
    h.st.handle(p.conn, ToNode::TaskDone { task_id: t3, attempt: 0, outcome: TaskOutcome::Failed(crash) });
    let msgs = d.take();
    for rid in [r1, r2, r3] {
        assert!(matches!(ready(&msgs, rid), Some(ObjectValue::Error(Error::TaskCancelled))), "{msgs:?}");
    }
    assert!(executed(&p.take()).is_empty());
    assert_eq!(h.st.stats().tasks, 0);
    assert_eq!(kills(&h.pool_commands()), 0);
}

// 7.
#[test]
fn a_lost_peers_tasks_retry_elsewhere_and_spend_a_retry() {
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(1.0, 1.0));
    let b = attach(&mut h, 0xb, cpus_x(1.0, 1.0));
    let (t1, r1) = submit(&mut h, &d, x_spec(&d, 1, 1));
    assert_eq!(executed_attempts(&a.take()), vec![(t1, 0)], "the first of equal peers");
    h.st.disconnect(a.conn, "link broke");
    assert_eq!(executed_attempts(&b.take()), vec![(t1, 1)], "retried on the other peer");
    assert_eq!(ready(&d.take(), r1), None);
    // Its last retry spent: the next loss fails it, naming the node.
    h.st.disconnect(b.conn, "node died");
    let msgs = d.take();
    let detail = match ready(&msgs, r1) {
        Some(ObjectValue::Error(Error::WorkerCrashed { detail, .. })) => detail.clone(),
        other => panic!("{other:?} in {msgs:?}"),
    };
    assert!(detail.contains(&NodeId(0xb).to_string()) && detail.contains("node died"), "{detail}");
    assert_eq!(h.st.stats().tasks, 0);
}

// 7: with no other peer, back to the queue; with no retries, failed.
#[test]
fn a_lost_peers_task_waits_for_another_peer_or_fails_without_retries() {
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(2.0, 2.0));
    let (t1, r1) = submit(&mut h, &d, x_spec(&d, 1, 2));
    let (t2, r2) = submit(&mut h, &d, x_spec(&d, 2, 0));
    assert_eq!(executed(&a.take()), vec![t1, t2]);
    h.st.disconnect(a.conn, "link broke");
    let msgs = d.take();
    assert_eq!(ready(&msgs, r1), None, "retried: it waits for a peer");
    let detail = match ready(&msgs, r2) {
        Some(ObjectValue::Error(Error::WorkerCrashed { task, detail })) => {
            assert_eq!(task, "on_x");
            detail.clone()
        }
        other => panic!("{other:?} in {msgs:?}"),
    };
    assert_eq!(detail, format!("node {}, which ran it, is gone (link broke)", NodeId(0xa)));
    assert_eq!(h.st.stats().tasks, 1);
    assert_eq!(h.spawn_requests(), 0);
    let c = attach(&mut h, 0xc, cpus_x(1.0, 1.0));
    assert_eq!(executed_attempts(&c.take()), vec![(t1, 1)]);
    // The old executor's answer is stale.
    returned(&mut h, &a, t1, 0, b"old");
    assert_eq!(ready(&d.take(), r1), None);
    returned(&mut h, &c, t1, 1, b"new");
    assert_eq!(ready(&d.take(), r1), Some(&inline(b"new")));
    assert_eq!(h.st.stats().available, cpus(1.0));
}

// 8.
#[test]
fn a_peer_is_never_an_idle_worker() {
    let mut h = harness_with(1.0, &[WorkerKind::Rust], |c| c.idle_worker_timeout = std::time::Duration::ZERO);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus(4.0));
    assert_eq!(h.st.stats().workers, 0, "a peer is no worker");
    // A task this node has room for waits for a worker of its own.
    let (t1, _) = submit(&mut h, &d, spec(&d, 1, ReturnKind::Fixed(1), 0));
    assert!(p.take().is_empty());
    assert_eq!(h.spawn_requests(), 1);
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![t1]);
    // An actor takes an idle worker: never the peer.
    let mut a = spec(&d, 2, ReturnKind::Fixed(1), 0);
    a.resources = ResourceSet::new();
    a.actor = Some(ferroray_protocol::ActorTask::Create(Box::new(ferroray_protocol::ActorSpec {
        class: "t::Counter".into(),
        name: None,
        detached: false,
        max_restarts: 0,
        max_task_retries: 0,
        max_concurrency: 1,
        executor: ferroray_protocol::ActorExecutor::Serial,
        front: Vec::new(),
    })));
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    assert!(p.take().iter().all(|m| !matches!(m, FromNode::Execute(_))));
    let cmds = h.pool_commands();
    assert!(cmds.iter().any(|c| matches!(c, PoolCmd::Spawn { actor: Some(_), .. })), "a process of its own");
    // Idle workers time out; a peer is not one.
    h.st.exit_idle_workers();
    assert!(h.st.is_connected(p.conn));
}

// 8.
#[test]
fn a_peer_running_several_tasks_is_not_asked_to_give_any_back_when_a_worker_frees() {
    let mut h = harness(1.0);
    let d = h.driver();
    let (t1, _) = submit(&mut h, &d, spec(&d, 1, ReturnKind::Fixed(1), 0));
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![t1]);
    let p = attach(&mut h, 1, cpus(2.0));
    let (t2, _) = submit(&mut h, &d, spec(&d, 2, ReturnKind::Fixed(1), 0));
    let (t3, _) = submit(&mut h, &d, spec(&d, 3, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&p.take()), vec![t2, t3]);
    // The local worker frees while the peer holds two tasks: they run
    // there, none is taken back.
    returned(&mut h, &w, t1, 0, b"");
    assert_eq!(revokes(&p.take()), 0);
    // The worker blocks: tasks queued behind it are revoked, never the peer's.
    let (t4, _) = submit(&mut h, &d, spec(&d, 4, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&w.take()), vec![t4]);
    h.st.handle(w.conn, ToNode::Blocked);
    assert_eq!(revokes(&p.take()), 0);
    assert_eq!(h.st.stats().tasks, 3);
}

// 8: a worker's answer to a `Revoke` makes the node take back tasks queued
// after the revoked ones on other workers (`revoke_queued_after`); it must
// skip peers, which run every task they have (nothing of theirs is queued)
// and never answer a `Revoke` (their daemon ignores it).
#[test]
fn a_revoke_answered_by_a_worker_never_revokes_a_peers_tasks() {
    let mut h = harness(1.0);
    let d = h.driver();
    let (t1, _) = submit(&mut h, &d, spec(&d, 1, ReturnKind::Fixed(1), 0));
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![t1]);
    // t2 is pipelined behind w (no peer yet).
    let (t2, _) = submit(&mut h, &d, spec(&d, 2, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&w.take()), vec![t2]);
    let p = attach(&mut h, 1, cpus(2.0));
    let (t3, _) = submit(&mut h, &d, spec(&d, 3, ReturnKind::Fixed(1), 0));
    let (t4, _) = submit(&mut h, &d, spec(&d, 4, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&p.take()), vec![t3, t4]);
    // w blocks: t2 is revoked; w gives it back.
    h.st.handle(w.conn, ToNode::Blocked);
    assert!(w.take().iter().any(|m| matches!(m, FromNode::Revoke { task_ids } if *task_ids == vec![t2])));
    h.st.handle(w.conn, ToNode::Revoked { task_ids: vec![t2] });
    let to_peer = p.take();
    // A second worker takes t2; the peer ends t3: its room takes the next task.
    let w2 = h.worker();
    assert_eq!(executed(&w2.take()), vec![t2]);
    returned(&mut h, &p, t3, 0, b"");
    let (t5, _) = submit(&mut h, &d, spec(&d, 5, ReturnKind::Fixed(1), 0));
    let placed = executed(&p.take());
    assert_eq!(placed, vec![t5], "the queue stalls behind the peer's never-answered revoke");
    assert_eq!(revokes(&to_peer), 0, "a peer was asked to give back a task it runs: {to_peer:?}");
}

// A dispatch to a peer that fails before it is sent (here: arguments too
// large for one message) must not credit the peer's room with the task's
// resources it never took.
#[test]
fn a_dispatch_to_a_peer_that_fails_leaves_its_room_unchanged() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let mut big = x_spec(&d, 1, 0);
    let huge = vec![0u8; ferroray_protocol::MAX_FRAME as usize + 1];
    big.args = vec![TaskArg::Value { payload: Payload::Inline(huge), encoding: ferroray_protocol::Encoding::Rust }];
    let (_, rbig) = submit(&mut h, &d, big);
    let msgs = d.take();
    assert!(matches!(ready(&msgs, rbig), Some(ObjectValue::Error(Error::InvalidOption(_)))));
    assert!(executed(&p.take()).is_empty());
    // A peer with 1 x runs one task needing 1 x and queues
    // `PIPELINE_DEPTH` more: no place more than that.
    let n = 1 + crate::state::PIPELINE_DEPTH;
    let tasks: Vec<TaskId> = (2..=n as u64 + 2).map(|seq| submit(&mut h, &d, x_spec(&d, seq, 0)).0).collect();
    assert_eq!(executed(&p.take()), tasks[..n].to_vec());
}

/// A small LCG (Knuth's MMIX constants), for a reproducible interleaving.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An executor as the stress test plays it: what it was sent and runs.
struct Exec {
    peer: Peer,
    remote: bool,
    /// (task, attempt) sent to it and not answered, in order.
    running: Vec<(TaskId, u32)>,
    /// Tasks it was sent, and of those retries (attempt > 0).
    runs: usize,
    retries: usize,
}

impl Exec {
    /// Reads what the node sent: new tasks, and revokes (a worker gives
    /// back what it has not started, as a worker does; a peer ignores them,
    /// as its daemon does). Returns the revoked tasks to give back.
    fn read(&mut self, all_live: &[(TaskId, u32)]) -> Vec<TaskId> {
        let mut back = Vec::new();
        for m in self.peer.take() {
            match m {
                FromNode::Execute(s) => {
                    assert!(
                        !all_live.iter().any(|(t, _)| *t == s.task_id)
                            && !self.running.iter().any(|(t, _)| *t == s.task_id),
                        "task {} sent while another executor has it",
                        s.task_id
                    );
                    self.running.push((s.task_id, s.attempt));
                    self.runs += 1;
                    self.retries += usize::from(s.attempt > 0);
                }
                FromNode::Revoke { task_ids } if !self.remote => {
                    for t in task_ids {
                        if let Some(at) = self.running.iter().skip(1).position(|(r, _)| *r == t) {
                            self.running.remove(at + 1);
                            back.push(t);
                        }
                    }
                }
                _ => {}
            }
        }
        back
    }
}

/// A stress run's step: an executor with work (`parts`: its unanswered
/// tasks, whether it is a peer, its connection) ends one, a worker its
/// first, a peer any; the connection and the (task, attempt).
fn end_one<E>(
    rng: &mut Lcg,
    execs: &mut [E],
    parts: impl Fn(&mut E) -> (&mut Vec<(TaskId, u32)>, bool, ConnId),
) -> Option<(ConnId, TaskId, u32)> {
    let busy: Vec<usize> = (0..execs.len()).filter(|i| !parts(&mut execs[*i]).0.is_empty()).collect();
    let &i = busy.get(rng.below(busy.len().max(1)))?;
    let (running, remote, conn) = parts(&mut execs[i]);
    let at = if remote { rng.below(running.len()) } else { 0 };
    let (task_id, attempt) = running.remove(at);
    Some((conn, task_id, attempt))
}

/// What one stress run went through, so that the test can check it
/// exercised each path.
#[derive(Debug, Default)]
struct Went {
    local_runs: usize,
    peer_runs: usize,
    retries: usize,
    losses: usize,
    joins: usize,
    cancels: usize,
}

impl Went {
    fn count(&mut self, e: &Exec) {
        if e.remote {
            self.peer_runs += e.runs;
        } else {
            self.local_runs += e.runs;
        }
        self.retries += e.retries;
    }
}

#[test]
fn stress_peers_coming_and_going_leave_every_task_ended_once_and_the_node_whole() {
    let started = std::time::Instant::now();
    for seed in [0x5eed_f00d, 1, 2, 3] {
        let went = stress_run(seed);
        assert!(
            went.local_runs > 0
                && went.peer_runs > 0
                && went.retries > 0
                && went.losses > 0
                && went.joins > 0
                && went.cancels > 0,
            "seed {seed}: {went:?}"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}

/// Many tasks (half of them only a peer can run), two workers, peers that
/// come and go, cancels, answers in a random order: at the end every task
/// ended exactly once and the node has all its resources back.
fn stress_run(seed: u64) -> Went {
    let mut went = Went::default();
    let mut rng = Lcg(seed);
    let mut h = harness(2.0);
    h.st.enable_peers();
    let d = h.driver();
    let total = h.st.stats().total;
    let mut execs: Vec<Exec> = Vec::new();
    for _ in 0..2 {
        let peer = h.worker();
        execs.push(Exec { peer, remote: false, running: Vec::new(), runs: 0, retries: 0 });
    }
    let mut next_node = 100;
    for _ in 0..2 {
        next_node += 1;
        let peer = attach(&mut h, next_node, cpus_x(2.0, 2.0));
        execs.push(Exec { peer, remote: true, running: Vec::new(), runs: 0, retries: 0 });
    }
    let mut rids = Vec::new();
    let mut seq = 0;
    let mut steps = 0;
    let n_tasks = 400;
    loop {
        steps += 1;
        assert!(steps < 50_000, "no progress: {} tasks left", h.st.stats().tasks);
        // Deliver what the node sent, answering revokes.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..execs.len() {
                let others: Vec<(TaskId, u32)> = execs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, e)| e.running.iter().copied())
                    .collect();
                let back = execs[i].read(&others);
                if !back.is_empty() {
                    let conn = execs[i].peer.conn;
                    h.st.handle(conn, ToNode::Revoked { task_ids: back });
                    changed = true;
                }
            }
        }
        let remotes = execs.iter().filter(|e| e.remote).count();
        if seq >= n_tasks && h.st.stats().tasks == 0 {
            break;
        }
        match rng.below(20) {
            0..=5 if seq < n_tasks => {
                seq += 1;
                let s = if rng.below(2) == 0 {
                    spec(&d, seq, ReturnKind::Fixed(1), rng.below(3) as u32)
                } else {
                    x_spec(&d, seq, rng.below(3) as u32)
                };
                rids.push(submit(&mut h, &d, s).1);
            }
            // A peer goes away (its tasks retry or fail).
            6 if remotes > 1 || (remotes == 1 && seq < n_tasks) => {
                let i = execs.iter().position(|e| e.remote).unwrap() + rng.below(remotes);
                let gone = execs.remove(i);
                went.count(&gone);
                went.losses += 1;
                h.st.disconnect(gone.peer.conn, "stress");
            }
            // A peer joins (at most three).
            7 if remotes < 3 => {
                next_node += 1;
                let total = if rng.below(2) == 0 { cpus_x(2.0, 2.0) } else { cpus(1.0) };
                let peer = attach(&mut h, next_node, total);
                went.joins += 1;
                execs.push(Exec { peer, remote: true, running: Vec::new(), runs: 0, retries: 0 });
            }
            // A cooperative cancel of some task.
            8 if !rids.is_empty() => {
                let rid = rids[rng.below(rids.len())];
                let msg = ToNode::Cancel { task_id: rid.task, force: false, recursive: false, force_after_ms: None };
                h.st.handle(d.conn, msg);
                went.cancels += 1;
            }
            _ => {
                // Some executor ends a task: a worker its first, a peer any.
                if let Some((conn, task_id, attempt)) =
                    end_one(&mut rng, &mut execs, |e| (&mut e.running, e.remote, e.peer.conn))
                {
                    let outcome = match rng.below(10) {
                        0 => TaskOutcome::Failed(Error::task("ValueError", "no", "f", 1)),
                        _ => TaskOutcome::Returned(vec![inline(&task_id.seq.to_le_bytes())]),
                    };
                    h.st.handle(conn, ToNode::TaskDone { task_id, attempt, outcome });
                }
            }
        }
        // Every peer gone with work left: one comes back.
        if seq >= n_tasks && execs.iter().all(|e| !e.remote) {
            next_node += 1;
            let peer = attach(&mut h, next_node, cpus_x(2.0, 2.0));
            execs.push(Exec { peer, remote: true, running: Vec::new(), runs: 0, retries: 0 });
        }
    }
    // Every task ended exactly once: one answer per return object.
    let msgs = d.take();
    let mut answers: std::collections::HashMap<ObjectId, usize> = Default::default();
    for m in &msgs {
        if let FromNode::ObjectReady { id, value } = m {
            *answers.entry(*id).or_default() += 1;
            if let ObjectValue::Data { payload: Payload::Inline(b), .. } = value {
                assert_eq!(b.as_slice(), id.task.seq.to_le_bytes(), "the value of {id}");
            }
        }
    }
    assert_eq!(answers.len(), rids.len());
    assert!(rids.iter().all(|r| answers.get(r) == Some(&1)), "{answers:?}");
    let stats = h.st.stats();
    assert_eq!((stats.tasks, stats.available), (0, total));
    assert!(execs.iter().all(|e| e.running.is_empty()));
    for e in &execs {
        went.count(e);
    }
    went
}

// `jobs` steps 1, 2, 4 and 8: programs side by side on one node. Drivers of
// the same commands share a program; another program's drivers get pools
// and peer links of their own; each program's tasks go to its workers and
// its links only; a program's end dooms its workers alone, turns away a
// worker of it that connects late, and is told to the daemon.
#[test]
fn programs_have_pools_and_peer_links_of_their_own_and_end_alone() {
    use crate::WorkerCommand;
    let mut h = harness_with(1.0, &[], |_| {});
    let told = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = told.clone();
    h.st.on_programs_changed(Arc::new(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let told = || told.load(std::sync::atomic::Ordering::Relaxed);
    let python = |arg: &str| WorkerCommand { program: "/usr/bin/python3".into(), args: vec![arg.into()], env: vec![] };
    let commands = |arg: &str| std::collections::BTreeMap::from([(WorkerKind::Python, python(arg))]);
    let a = h.driver();
    let pa = h.st.join_job(a.conn, commands("a"));
    let a2 = h.driver();
    assert_eq!(h.st.join_job(a2.conn, commands("a")), pa, "the same commands: the same program");
    let b = h.driver();
    let pb = h.st.join_job(b.conn, commands("b"));
    assert!(pa != pb && pa != ProgramId(0) && pb != ProgramId(0));
    assert_eq!(told(), 2);
    let set: Vec<Pool> = h
        .pool_commands()
        .iter()
        .filter_map(|c| match c {
            PoolCmd::SetCommand { pool, command: Some(_) } => Some(*pool),
            _ => None,
        })
        .collect();
    assert_eq!(
        set,
        vec![Pool { kind: WorkerKind::Python, program: pa }, Pool { kind: WorkerKind::Python, program: pb }]
    );
    let programs: Vec<ProgramId> = h.st.programs().into_iter().map(|(p, _)| p).collect();
    assert_eq!(programs, vec![pa, pb]);
    // Each program's task asks for a worker of its own pool, and an idle
    // worker of the other program's is never given it.
    let py = |by: &Peer, seq: u64| {
        let mut s = spec(by, seq, ReturnKind::Fixed(1), 0);
        s.function =
            FunctionDescriptor::Python { module: "m".into(), qualname: "f".into(), function: None, pickled: vec![1] };
        s.resources = ResourceSet::new();
        s
    };
    let wa = h.worker_in(Pool { kind: WorkerKind::Python, program: pa });
    let (tb, _) = submit(&mut h, &b, py(&b, 1));
    assert!(executed(&wa.take()).is_empty(), "not in the other program's worker");
    let spawns: Vec<Pool> = h
        .pool_commands()
        .iter()
        .filter_map(|c| match c {
            PoolCmd::Spawn { pool, actor: None } => Some(*pool),
            _ => None,
        })
        .collect();
    assert_eq!(spawns, vec![Pool { kind: WorkerKind::Python, program: pb }]);
    let wb = h.worker_in(Pool { kind: WorkerKind::Python, program: pb });
    assert_eq!(executed(&wb.take()), vec![tb]);
    let (ta, _) = submit(&mut h, &a2, py(&a2, 1));
    assert_eq!(executed(&wa.take()), vec![ta]);
    // Peer links per program: a task no room here takes goes on its own.
    let mut on_x = x_spec(&b, 2, 0);
    on_x.function = py(&b, 2).function;
    let link_a = attach_for(&mut h, 7, pa, cpus_x(4.0, 4.0));
    let link_b = attach_for(&mut h, 7, pb, cpus_x(4.0, 4.0));
    let (tx, _) = submit(&mut h, &b, on_x);
    assert!(executed(&link_a.take()).is_empty());
    assert_eq!(executed(&link_b.take()), vec![tx]);
    // Program a ends with its last driver: its worker is killed, b's is not.
    h.st.disconnect(a.conn, "gone");
    assert_eq!(told(), 2, "one driver of a is still here");
    h.st.disconnect(a2.conn, "gone");
    assert_eq!(told(), 3);
    let cmds = h.pool_commands();
    assert!(cmds.iter().any(|c| matches!(c, PoolCmd::Kill(pid) if *pid == wa.pid)), "a's worker goes");
    assert!(!cmds.iter().any(|c| matches!(c, PoolCmd::Kill(pid) if *pid == wb.pid)), "b's stays");
    assert!(cmds.iter().any(
        |c| matches!(c, PoolCmd::SetCommand { pool, command: None } if *pool == Pool { kind: WorkerKind::Python, program: pa })
    ));
    let programs: Vec<ProgramId> = h.st.programs().into_iter().map(|(p, _)| p).collect();
    assert_eq!(programs, vec![pb]);
    // A worker of a's that connects now is turned away.
    assert!(h.try_worker_in(Pool { kind: WorkerKind::Python, program: pa }).is_none());
    // A new program of a's commands is a new program.
    let a3 = h.driver();
    let pa2 = h.st.join_job(a3.conn, commands("a"));
    assert!(pa2 != pa && pa2 != pb);
    // A peer's link of a's commands never joins the program a driver here
    // runs (a link back would keep it alive): one of its own, which the
    // next such link joins.
    let l1 = h.driver();
    h.st.mark_from_peer(l1.conn);
    let pl = h.st.join_job(l1.conn, commands("a"));
    assert!(pl != pa2);
    let l2 = h.driver();
    h.st.mark_from_peer(l2.conn);
    assert_eq!(h.st.join_job(l2.conn, commands("a")), pl);
    // The driver leaves: its program ends although links of its commands
    // remain.
    h.st.disconnect(a3.conn, "gone");
    let programs: Vec<ProgramId> = h.st.programs().into_iter().map(|(p, _)| p).collect();
    assert_eq!(programs, vec![pb, pl]);
}

// 7. Refs in arguments: a task naming one of this node's streams is not
// sent to a peer, since a copy of the value would not carry the stream; a
// peer link's imported copies are held by it, and a copy of an object the
// node has already is dropped.
#[test]
fn a_task_naming_a_stream_stays_here_and_imports_are_copies_held_by_the_link() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 7, cpus(4.0));
    let g = spec(&d, 1, ReturnKind::Streaming { backpressure: None }, 0);
    let gid = g.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(g)));
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![gid], "the generator runs here");
    // No room here now: the task naming the stream waits here, the other goes.
    let mut naming = spec(&d, 2, ReturnKind::Fixed(1), 0);
    naming.contained = vec![ObjectId::for_return(gid, 0)];
    let (naming_tid, _) = submit(&mut h, &d, naming);
    let (plain_tid, _) = submit(&mut h, &d, spec(&d, 3, ReturnKind::Fixed(1), 0));
    let sent = executed(&p.take());
    assert_eq!(sent, vec![plain_tid], "only the plain task goes to the peer");
    assert!(!sent.contains(&naming_tid));

    // Imports, by an in-process connection (as a peer link is).
    let link = h.driver();
    let theirs = ObjectId { task: TaskId { submitter: WorkerId(999), seq: 1 }, index: 0 };
    let before = h.st.stats().objects;
    h.st.handle(link.conn, ToNode::Import { id: theirs, value: inline(b"first") });
    h.st.handle(link.conn, ToNode::Import { id: theirs, value: inline(b"second") });
    h.st.handle(link.conn, ToNode::Subscribe(vec![theirs]));
    assert_eq!(ready(&link.take(), theirs), Some(&inline(b"first")), "values never change");
    assert_eq!(h.st.stats().objects, before + 1);
    // A task of the link's holds it past the link's reference.
    let mut reads = spec(&link, 1, ReturnKind::Fixed(1), 0);
    reads.args = vec![TaskArg::Ref(theirs)];
    h.st.handle(link.conn, ToNode::Submit(Box::new(reads)));
    h.st.handle(link.conn, ToNode::RemoveRef(vec![theirs]));
    assert_eq!(h.st.stats().objects, before + 2, "the copy and the task's result");
    // (No room here: the peer runs it, and ends it.)
    let reads_tid = TaskId { submitter: link.worker_id, seq: 1 };
    assert_eq!(executed(&p.take()), vec![reads_tid]);
    returned(&mut h, &p, reads_tid, 0, b"read");
    h.st.handle(link.conn, ToNode::RemoveRef(vec![ObjectId::for_return(reads_tid, 0)]));
    assert_eq!(h.st.stats().objects, before, "gone with the task");
}

// 1. Placement balances: of the peers with room, the one with the most CPU
// free takes a task (the first attached, of equals), what other owners use
// on a peer (from its heartbeat's load) comes off its room, and with no
// room anywhere a task is queued on a peer.
#[test]
fn placement_takes_the_peer_with_the_most_room_other_owners_counted() {
    let mut h = harness(0.0);
    h.st.enable_peers();
    let d = h.driver();
    let p1 = attach(&mut h, 1, cpus(2.0));
    let p2 = attach(&mut h, 2, cpus(4.0));
    let mut seq = 0;
    let mut place = |h: &mut Harness| {
        seq += 1;
        submit(h, &d, spec(&d, seq, ReturnKind::Fixed(1), 0)).0
    };
    let t1 = place(&mut h);
    assert_eq!(executed(&p2.take()), vec![t1], "4 CPUs free against 2");
    let t2 = place(&mut h);
    assert_eq!(executed(&p2.take()), vec![t2], "3 against 2");
    let t3 = place(&mut h);
    assert_eq!(executed(&p1.take()), vec![t3], "2 and 2: the first attached");
    // Heartbeats: 1 CPU free on each. On p1 that is this node's task; on
    // p2 another owner uses 1 beside this node's 2.
    h.st.peer_loads(&[(NodeId(1), cpus(1.0)), (NodeId(2), cpus(1.0))]);
    let t4 = place(&mut h);
    assert_eq!(executed(&p1.take()), vec![t4], "1 and 1");
    let t5 = place(&mut h);
    assert_eq!(executed(&p2.take()), vec![t5], "p1 is full");
    // Both full: a task only peers can run (nothing runs here) is queued
    // behind what runs on the one with the most room for queued tasks
    // (p2: 9 x 4 - 3 - 1 = 32 against p1: 9 x 2 - 2 = 16).
    let t6 = place(&mut h);
    assert_eq!(executed(&p2.take()), vec![t6]);
    assert!(p1.take().is_empty());
}

// 1. A task that came over a peer link runs where its owner placed it: it
// is never placed on this node's own peers, even with no room here.
#[test]
fn a_task_from_a_peer_link_is_not_placed_on_another_peer() {
    let mut h = harness(1.0);
    let link = h.driver();
    h.st.mark_from_peer(link.conn);
    let p = attach(&mut h, 7, cpus(4.0));
    let (t1, _) = submit(&mut h, &link, spec(&link, 1, ReturnKind::Fixed(1), 0));
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![t1]);
    let (t2, _) = submit(&mut h, &link, spec(&link, 2, ReturnKind::Fixed(1), 0));
    assert!(executed(&p.take()).is_empty(), "no room here, and still not sent on");
    assert_eq!(executed(&w.take()), vec![t2], "queued behind the busy worker here");
    // A task of a program of this node's own goes to the peer.
    let d = h.driver();
    let (t3, _) = submit(&mut h, &d, spec(&d, 1, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&p.take()), vec![t3]);
}

// ---- actor names across the cluster (`state::directory`) ----

/// What the node asked its directory, in order.
#[derive(Default)]
struct FakeDirectory(Mutex<Vec<(String, u64, String)>>);

impl FakeDirectory {
    fn take(&self) -> Vec<(String, u64, String)> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl crate::ClusterDirectory for FakeDirectory {
    fn claim(&self, ticket: u64, entry: crate::DirectoryEntry) {
        self.0.lock().push(("claim".into(), ticket, entry.name));
    }
    fn release(&self, entry: crate::DirectoryEntry) {
        self.0.lock().push(("release".into(), 0, entry.name));
    }
    fn find(&self, ticket: u64, name: &str) {
        self.0.lock().push(("find".into(), ticket, name.into()));
    }
    fn job_started(&self, job: crate::JobInfo) {
        self.0.lock().push(("job_started".into(), job.job.0, job.entrypoint));
    }
    fn job_ended(&self, job: WorkerId) {
        self.0.lock().push(("job_ended".into(), job.0, String::new()));
    }
    fn export_function(&self, function: ferroray_common::FunctionId, job: WorkerId, pickled: Arc<Vec<u8>>) {
        let what = format!("{}:{}", function.seq, String::from_utf8_lossy(&pickled));
        self.0.lock().push(("export".into(), job.0, what));
    }
}

fn with_directory(h: &mut Harness) -> Arc<FakeDirectory> {
    let dir = Arc::new(FakeDirectory::default());
    h.st.set_directory(dir.clone());
    dir
}

/// The creation of an actor named `name` that holds no resources.
fn named_actor(by: &Peer, seq: u64, name: &str) -> TaskSpec {
    let mut s = spec(by, seq, ReturnKind::Fixed(1), 0);
    s.resources = ResourceSet::new();
    s.actor = Some(ferroray_protocol::ActorTask::Create(Box::new(ferroray_protocol::ActorSpec {
        class: "t::Named".into(),
        name: Some(name.into()),
        detached: false,
        max_restarts: 0,
        max_task_retries: 0,
        max_concurrency: 1,
        executor: ferroray_protocol::ActorExecutor::Serial,
        front: vec![7],
    })));
    s
}

fn created(msgs: &[FromNode], req: u64) -> Option<Result<(), Error>> {
    msgs.iter().find_map(|m| match m {
        FromNode::ActorCreated { req: r, result } if *r == req => Some(result.clone()),
        _ => None,
    })
}

// Directory steps 1, 2 and 4: a named actor is made once the cluster gave it
// its name; a second one here is refused without asking; a refusal names
// the reason; a name granted after its driver left goes back; a death lets
// it go; an answer that never comes fails the creation in time.
#[test]
fn a_named_actor_waits_for_its_name_and_lets_it_go_when_it_dies() {
    let mut h = harness(2.0);
    let dir = with_directory(&mut h);
    let d = h.driver();
    let a = named_actor(&d, 1, "svc");
    let actor = ferroray_common::ActorId(a.task_id);
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(a) });
    let asked = dir.take();
    assert_eq!(asked.len(), 1);
    let (what, ticket, name) = &asked[0];
    assert_eq!((what.as_str(), name.as_str()), ("claim", "svc"));
    assert_eq!(created(&d.take(), 1), None, "not made before the cluster answers");
    assert_eq!(h.spawn_requests(), 0);
    // The same name again, here: refused at once.
    h.st.handle(d.conn, ToNode::CreateActor { req: 2, spec: Box::new(named_actor(&d, 2, "svc")) });
    assert!(matches!(created(&d.take(), 2), Some(Err(Error::InvalidOption(m))) if m.contains("already exists")));
    assert!(dir.take().is_empty());
    // Granted: made now.
    h.st.name_claimed(*ticket, Ok(()));
    assert_eq!(created(&d.take(), 1), Some(Ok(())));
    assert_eq!(h.spawn_requests(), 1, "its process is asked for");
    // Killed before its process said hello: dead, and its name goes back.
    h.st.handle(d.conn, ToNode::KillActor { actor, no_restart: true });
    assert_eq!(dir.take(), vec![("release".to_string(), 0, "svc".to_string())]);

    // Refused by the cluster: the reason reaches the driver, and the name
    // is free here again (a get_actor asks the cluster).
    h.st.handle(d.conn, ToNode::CreateActor { req: 3, spec: Box::new(named_actor(&d, 3, "taken")) });
    let ticket = dir.take()[0].1;
    h.st.name_claimed(ticket, Err("an actor named \"taken\" already exists (on node 0000000000000009)".into()));
    assert!(
        matches!(created(&d.take(), 3), Some(Err(Error::InvalidOption(m))) if m.contains("on node 0000000000000009"))
    );
    h.st.handle(d.conn, ToNode::GetActor { req: 4, name: "taken".into() });
    assert!(matches!(dir.take().as_slice(), [(w, _, n)] if w == "find" && n == "taken"));

    // Its driver gone before the answer: the granted name goes back.
    let d2 = h.driver();
    h.st.handle(d2.conn, ToNode::CreateActor { req: 1, spec: Box::new(named_actor(&d2, 1, "late")) });
    let ticket = dir.take()[0].1;
    h.st.disconnect(d2.conn, "gone");
    h.st.name_claimed(ticket, Ok(()));
    assert_eq!(dir.take(), vec![("release".to_string(), 0, "late".to_string())]);
    assert_eq!(h.spawn_requests(), 0, "nothing made for it");

    // No answer in time: the creation fails, and says why.
    h.st.handle(d.conn, ToNode::CreateActor { req: 5, spec: Box::new(named_actor(&d, 5, "slow")) });
    dir.take();
    let now = std::time::Instant::now();
    h.st.expire_directory(now);
    assert_eq!(created(&d.take(), 5), None);
    h.st.expire_directory(now + crate::state::DIRECTORY_TIMEOUT);
    assert!(matches!(created(&d.take(), 5), Some(Err(Error::InvalidOption(m))) if m.contains("did not answer")));
}

// Directory steps 3 and 6: `get_actor` of a name another node's actor holds
// makes a proxy: its calls go to that node over the peer link in order, a
// kill is passed on, a name nobody holds is an error, and with no link to
// its node a call waits for one, for a bounded time.
#[test]
fn get_actor_of_another_nodes_actor_makes_a_proxy_whose_calls_go_there() {
    let mut h = harness(1.0);
    let dir = with_directory(&mut h);
    let d = h.driver();
    let b = attach(&mut h, 9, cpus(2.0));
    h.st.handle(d.conn, ToNode::GetActor { req: 5, name: "far".into() });
    let ticket = match dir.take().as_slice() {
        [(w, t, n)] if w == "find" && n == "far" => *t,
        other => panic!("{other:?}"),
    };
    assert!(d.take().is_empty(), "no answer before the cluster's");
    let actor = ferroray_common::ActorId(TaskId { submitter: WorkerId(77), seq: 1 });
    let entry =
        crate::DirectoryEntry { name: "far".into(), actor, detached: true, class: "t::Far".into(), front: vec![1, 2] };
    h.st.actor_found(ticket, Some(crate::FoundActor { node: NodeId(9), entry }));
    let msgs = d.take();
    assert!(
        msgs.iter().any(|m| matches!(m, FromNode::ActorFound { req: 5, result: Ok((a, c, f)) }
            if *a == actor && c == "t::Far" && f == &vec![1, 2])),
        "{msgs:?}"
    );
    h.st.handle(d.conn, ToNode::AddRef(vec![actor.handle_object()]));
    // Calls go to node 9's link, in submission order.
    let (k1, k2) = (call(&d, 2, actor), call(&d, 3, actor));
    let (t1, t2) = (k1.task_id, k2.task_id);
    h.st.handle(d.conn, ToNode::Submit(Box::new(k1)));
    h.st.handle(d.conn, ToNode::Submit(Box::new(k2)));
    assert_eq!(executed(&b.take()), vec![t1, t2]);
    returned(&mut h, &b, t1, 0, b"1");
    h.st.handle(d.conn, ToNode::Subscribe(vec![ObjectId::for_return(t1, 0)]));
    assert!(matches!(ready(&d.take(), ObjectId::for_return(t1, 0)), Some(ObjectValue::Data { .. })));
    // The proxy is not this node's actor: `list actors` shows it where it is.
    assert!(h.st.actor_summaries(10).is_empty());
    // A kill goes to its node; nothing here is killed.
    h.st.handle(d.conn, ToNode::KillActor { actor, no_restart: true });
    assert!(b.take().iter().any(|m| matches!(m, FromNode::KillActor { actor: a, .. } if *a == actor)));
    assert_eq!(kills(&h.pool_commands()), 0);
    // A name nobody holds.
    h.st.handle(d.conn, ToNode::GetActor { req: 6, name: "none".into() });
    let ticket = dir.take()[0].1;
    h.st.actor_found(ticket, None);
    assert!(d
        .take()
        .iter()
        .any(|m| matches!(m, FromNode::ActorFound { req: 6, result: Err(Error::InvalidOption(_)) })));
    // The link gone: the call that ran there fails; a new one waits for a
    // link to node 9 (step 6), and goes when node 9 is attached again.
    h.st.disconnect(b.conn, "link broke");
    let k3 = call(&d, 4, actor);
    let t3 = k3.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(k3)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![ObjectId::for_return(t2, 0), ObjectId::for_return(t3, 0)]));
    let msgs = d.take();
    assert!(matches!(ready(&msgs, ObjectId::for_return(t2, 0)), Some(ObjectValue::Error(_))), "{msgs:?}");
    assert_eq!(ready(&msgs, ObjectId::for_return(t3, 0)), None, "waits for a link");
    let b2 = attach(&mut h, 9, cpus(2.0));
    assert_eq!(executed(&b2.take()), vec![t3]);
    returned(&mut h, &b2, t3, 0, b"3");
    assert!(matches!(ready(&d.take(), ObjectId::for_return(t3, 0)), Some(ObjectValue::Data { .. })));
    // With no link for long: the waiting call fails, and says why.
    h.st.disconnect(b2.conn, "link broke");
    let k4 = call(&d, 5, actor);
    let t4 = k4.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(k4)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![ObjectId::for_return(t4, 0)]));
    let now = std::time::Instant::now();
    h.st.expire_directory(now);
    assert_eq!(ready(&d.take(), ObjectId::for_return(t4, 0)), None);
    h.st.expire_directory(now + crate::state::DIRECTORY_TIMEOUT + std::time::Duration::from_millis(1));
    let msgs = d.take();
    assert!(
        matches!(ready(&msgs, ObjectId::for_return(t4, 0)),
            Some(ObjectValue::Error(Error::ActorDied { cause: ferroray_common::ActorDeathCause::Crashed(m), .. }))
            if m.contains("no link to its node")),
        "{msgs:?}"
    );
}

// Directory step 5: a task naming an actor's handle goes to a peer like any
// other; what the peer needs to call the actor names the node that owns it
// (this one for its own actor, the owner for a proxy), and a node that
// receives a handle of another node's actor calls it there.
#[test]
fn actor_handles_cross_nodes_and_their_calls_go_to_the_owner() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 7, cpus(4.0));
    // An actor of this node's.
    let own = named_actor(&d, 1, "own");
    let own_id = ferroray_common::ActorId(own.task_id);
    h.st.handle(d.conn, ToNode::CreateActor { req: 1, spec: Box::new(own) });
    let found = h.st.actor_of_handle(own_id.handle_object()).unwrap();
    assert_eq!((found.node, found.entry.name.as_str(), found.entry.front.clone()), (h.st.node_id(), "own", vec![7]));
    assert!(h.st.actor_of_handle(ObjectId::for_return(own_id.0, 1)).is_none(), "not a handle object");
    // A task naming its handle, with no room here: it goes to the peer.
    let busy = h.worker();
    let (first, _) = submit(&mut h, &d, spec(&d, 2, ReturnKind::Fixed(1), 0));
    assert_eq!(executed(&busy.take()), vec![first]);
    let mut naming = spec(&d, 3, ReturnKind::Fixed(1), 0);
    naming.contained = vec![own_id.handle_object()];
    let (naming_tid, _) = submit(&mut h, &d, naming);
    assert_eq!(executed(&p.take()), vec![naming_tid], "a handle does not keep a task here");

    // A handle of node 9's actor arrives with a task from a peer: a proxy,
    // whose calls go to node 9's link; its handle info names node 9.
    let nine = attach(&mut h, 9, cpus(1.0));
    let theirs = ferroray_common::ActorId(TaskId { submitter: WorkerId(55), seq: 4 });
    let entry = crate::DirectoryEntry {
        name: String::new(),
        actor: theirs,
        detached: false,
        class: "t::Theirs".into(),
        front: vec![],
    };
    // Brought twice by a peer's link (two tasks naming it).
    let link = h.driver();
    h.st.mark_from_peer(link.conn);
    for _ in 0..2 {
        h.st.reach_actor(crate::FoundActor { node: NodeId(9), entry: entry.clone() }, Some(link.conn));
    }
    assert_eq!(h.st.actor_of_handle(theirs.handle_object()).unwrap().node, NodeId(9));
    // One of this node's own, announced back to it: no proxy.
    h.st.reach_actor(
        crate::FoundActor { node: h.st.node_id(), entry: crate::DirectoryEntry { actor: own_id, ..entry } },
        Some(link.conn),
    );
    assert_eq!(h.st.actor_of_handle(own_id.handle_object()).unwrap().entry.name, "own");
    h.st.handle(link.conn, ToNode::Import { id: theirs.handle_object(), value: inline(b"") });
    let k = call(&link, 1, theirs);
    let ktid = k.task_id;
    h.st.handle(link.conn, ToNode::Submit(Box::new(k)));
    assert_eq!(executed(&nine.take()), vec![ktid]);
    // Its last handle here gone (the link's and the call's): the proxy
    // goes, and the link hears how many handles it brought.
    returned(&mut h, &nine, ktid, 0, b"ok");
    let _ = link.take();
    h.st.handle(link.conn, ToNode::RemoveRef(vec![theirs.handle_object(), ObjectId::for_return(ktid, 0)]));
    assert!(h.st.actor_of_handle(theirs.handle_object()).is_none());
    let released: Vec<(ferroray_common::ActorId, u64)> = link
        .take()
        .into_iter()
        .filter_map(|m| match m {
            FromNode::HandleReleased { actor, reaches } => Some((actor, reaches)),
            _ => None,
        })
        .collect();
    assert_eq!(released, vec![(theirs, 2)]);
    // Made again by a later handle from the same link: counted on, so
    // the owner can tell its newer `Reach`es from the ones released.
    h.st.reach_actor(crate::FoundActor { node: NodeId(9), entry: entry_again(theirs) }, Some(link.conn));
    h.st.handle(link.conn, ToNode::Import { id: theirs.handle_object(), value: inline(b"") });
    h.st.handle(link.conn, ToNode::RemoveRef(vec![theirs.handle_object()]));
    let again: Vec<u64> = link
        .take()
        .into_iter()
        .filter_map(|m| match m {
            FromNode::HandleReleased { reaches, .. } => Some(reaches),
            _ => None,
        })
        .collect();
    assert_eq!(again, vec![3]);
}

fn entry_again(actor: ferroray_common::ActorId) -> crate::DirectoryEntry {
    crate::DirectoryEntry { name: String::new(), actor, detached: false, class: "t::Theirs".into(), front: vec![] }
}

// ---- the cluster's function table (`state::tasks`) ----

/// A call of exported function `f` that only a peer can run.
fn x_call(by: &Peer, seq: u64, f: ferroray_common::FunctionId) -> TaskSpec {
    let mut s = x_spec(by, seq, 0);
    s.function =
        FunctionDescriptor::Python { module: "m".into(), qualname: "f".into(), function: Some(f), pickled: vec![] };
    s
}

/// A node with a cluster directory and a reported job's driver that
/// exported function `fn` (bytes `fn`).
fn exporting_driver() -> (Harness, Arc<FakeDirectory>, Peer, ferroray_common::FunctionId) {
    let mut h = harness_with(1.0, &[WorkerKind::Rust, WorkerKind::Python], |_| {});
    let dir = with_directory(&mut h);
    let d = h.driver();
    h.st.join_job(d.conn, Default::default());
    h.st.report_driver_for_tests(d.conn);
    let f = ferroray_common::FunctionId { exporter: d.worker_id, seq: 1 };
    h.st.handle(d.conn, ToNode::ExportFunction { function: f, pickled: b"fn".to_vec() });
    (h, dir, d, f)
}

// Steps 1, 2 and 4: a driver's export goes to the directory; until the
// cluster has it, its first call on each peer link carries it; after, a
// call goes without it; once the driver left, with it again. A worker's
// export is not published; a function from the cluster's table is kept
// under its own id.
#[test]
fn a_published_function_goes_to_peers_without_its_bytes_while_its_driver_is_here() {
    let (mut h, dir, d, f) = exporting_driver();
    assert_eq!(dir.take(), vec![("export".to_string(), d.worker_id.0, "1:fn".to_string())]);
    // Not published yet: the bytes go with the first call on the link.
    let p = attach(&mut h, 7, cpus_x(4.0, 4.0));
    submit(&mut h, &d, x_call(&d, 1, f));
    assert_eq!(executed_pickled(&p.take()), vec![b"fn".to_vec()]);
    // Published: a link that never had it gets the call alone.
    h.st.function_published(f);
    let q = attach(&mut h, 8, cpus_x(4.0, 4.0));
    for seq in 2..5 {
        submit(&mut h, &d, x_call(&d, seq, f));
    }
    let sent: Vec<Vec<u8>> = [executed_pickled(&p.take()), executed_pickled(&q.take())].concat();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|b| b.is_empty()), "{sent:?}");
    // A driver that is not a reported job (a peer's link, say) exports
    // nothing to the cluster, nor does a worker.
    let other = h.driver();
    let g = ferroray_common::FunctionId { exporter: other.worker_id, seq: 1 };
    h.st.handle(other.conn, ToNode::ExportFunction { function: g, pickled: b"g".to_vec() });
    assert!(dir.take().is_empty());
    h.st.function_published(g);
    // The driver leaves: its functions go with their bytes again to a link
    // that never had them (a detached actor of its may still be placed;
    // links that had them keep them).
    h.st.disconnect(d.conn, "gone");
    let r = attach(&mut h, 9, cpus_x(4.0, 4.0));
    submit(&mut h, &other, x_call(&other, 1, f));
    submit(&mut h, &other, x_call(&other, 2, g));
    let sent: Vec<Vec<u8>> =
        [executed_pickled(&p.take()), executed_pickled(&q.take()), executed_pickled(&r.take())].concat();
    assert!(sent.contains(&b"fn".to_vec()) && sent.contains(&b"g".to_vec()), "{sent:?}");
    // Step 3: a function from the cluster's table, under its exporter's id.
    let remote = ferroray_common::FunctionId { exporter: WorkerId(77), seq: 3 };
    assert!(!h.st.has_function(remote));
    assert!(h.st.import_function(remote, b"theirs".to_vec()));
    assert!(h.st.has_function(remote));
    assert!(!h.st.import_function(
        ferroray_common::FunctionId { exporter: WorkerId(77), seq: 4 },
        vec![0; crate::state::MAX_FUNCTION_TABLE + 1]
    ));
}

// The function table, step 5.
#[test]
fn while_the_head_is_away_published_functions_go_with_their_bytes() {
    let (mut h, _dir, d, f) = exporting_driver();
    h.st.function_published(f);
    // Away: a link that never had it gets the bytes (it could not fetch them).
    h.st.set_head_away(true);
    let away = attach(&mut h, 7, cpus_x(4.0, 4.0));
    submit(&mut h, &d, x_call(&d, 1, f));
    assert_eq!(executed_pickled(&away.take()), vec![b"fn".to_vec()]);
    // Back: a new link gets the call alone again.
    h.st.set_head_away(false);
    let back = attach(&mut h, 8, cpus_x(8.0, 8.0));
    submit(&mut h, &d, x_call(&d, 2, f));
    assert_eq!(executed_pickled(&back.take()), vec![Vec::<u8>::new()]);
    // Away again: that link had calls of it but never its bytes.
    h.st.set_head_away(true);
    submit(&mut h, &d, x_call(&d, 3, f));
    assert_eq!(executed_pickled(&back.take()), vec![b"fn".to_vec()]);
}

/// An executor of the programs stress run: a worker of a pool, or a peer
/// link of a program, and the tasks it was sent and not answered.
struct ProgramExec {
    peer: Peer,
    program: ProgramId,
    remote: bool,
    running: Vec<(TaskId, u32)>,
}

// `jobs` steps 1 to 5 and 8 under churn: drivers of two programs come and go
// (a program ends with its last driver, and starts again as a new one),
// tasks (some only a peer could run) are submitted, answered, and
// force-cancelled with their driver, workers start late and die when
// killed. Every task is sent only to a worker or link of its submitter's
// program, and at the end nothing is left: no task, no program, no link of
// an ended program, every resource back.
#[test]
fn stress_programs_coming_and_going_keep_their_tasks_in_their_own_workers() {
    use crate::WorkerCommand;
    let started = std::time::Instant::now();
    for seed in [7u64, 8, 9, 10] {
        let mut rng = Lcg(seed);
        let mut h = harness_with(2.0, &[], |_| {});
        h.st.enable_peers();
        let total = h.st.stats().total;
        let python =
            |arg: &str| WorkerCommand { program: "/usr/bin/python3".into(), args: vec![arg.into()], env: vec![] };
        let commands = |arg: &str| std::collections::BTreeMap::from([(WorkerKind::Python, python(arg))]);
        // Drivers: (peer, program); programs seen, with a link each.
        let mut drivers: Vec<(Peer, ProgramId)> = Vec::new();
        let mut of_submitter: std::collections::HashMap<WorkerId, ProgramId> = Default::default();
        let mut linked: Vec<ProgramId> = Vec::new();
        let mut execs: Vec<ProgramExec> = Vec::new();
        let mut seq = 0u64;
        let (mut sent, mut ended_programs, mut kills) = (0usize, 0usize, 0usize);
        for step in 0..3000 {
            // The pool's commands: spawns start workers, kills end them.
            for cmd in h.pool_commands() {
                match cmd {
                    PoolCmd::Spawn { pool, actor: None } => {
                        if let Some(peer) = h.try_worker_in(pool) {
                            execs.push(ProgramExec { peer, program: pool.program, remote: false, running: vec![] });
                        }
                    }
                    PoolCmd::Kill(pid) => {
                        if let Some(i) = execs.iter().position(|e| !e.remote && e.peer.pid == pid) {
                            let gone = execs.remove(i);
                            h.st.disconnect(gone.peer.conn, "killed");
                            h.st.worker_exited(pid, "was killed by signal 9 (SIGKILL)".into());
                            kills += 1;
                        }
                    }
                    _ => {}
                }
            }
            // What each executor was sent: only tasks of its program.
            for e in execs.iter_mut() {
                for m in e.peer.take() {
                    if let FromNode::Execute(s) = m {
                        let program = of_submitter.get(&s.task_id.submitter).copied();
                        assert_eq!(program, Some(e.program), "seed {seed}: task {} went to another program", s.task_id);
                        e.running.push((s.task_id, s.attempt));
                        sent += 1;
                    }
                }
            }
            // Links of ended programs close once idle; the daemon attaches
            // a new program's links.
            execs.retain(|e| h.st.is_connected(e.peer.conn));
            for (p, _) in h.st.programs() {
                if !linked.contains(&p) {
                    linked.push(p);
                    let peer = attach_for(&mut h, 50 + u64::from(p.0), p, cpus_x(2.0, 2.0));
                    execs.push(ProgramExec { peer, program: p, remote: true, running: vec![] });
                }
            }
            if step % 50 == 0 {
                h.st.close_ended_links();
            }
            match rng.below(12) {
                // A driver joins program a or b (at most two each).
                0 if drivers.len() < 4 => {
                    let d = h.driver();
                    let which = if rng.below(2) == 0 { "a" } else { "b" };
                    let p = h.st.join_job(d.conn, commands(which));
                    of_submitter.insert(d.worker_id, p);
                    drivers.push((d, p));
                }
                // A driver leaves: its tasks are force-cancelled.
                1 if !drivers.is_empty() => {
                    let (d, p) = drivers.remove(rng.below(drivers.len()));
                    h.st.disconnect(d.conn, "gone");
                    if !drivers.iter().any(|(_, q)| *q == p) {
                        ended_programs += 1;
                    }
                }
                2..=5 if !drivers.is_empty() => {
                    let (d, _) = &drivers[rng.below(drivers.len())];
                    seq += 1;
                    let mut s =
                        if rng.below(3) == 0 { x_spec(d, seq, 0) } else { spec(d, seq, ReturnKind::Fixed(1), 0) };
                    s.function = FunctionDescriptor::Python {
                        module: "m".into(),
                        qualname: "f".into(),
                        function: None,
                        pickled: vec![1],
                    };
                    let conn = d.conn;
                    h.st.handle(conn, ToNode::Submit(Box::new(s)));
                }
                _ => {
                    // An executor ends a task (a worker its first).
                    let ended = end_one(&mut rng, &mut execs, |e| (&mut e.running, e.remote, e.peer.conn));
                    if let Some((conn, task_id, attempt)) = ended {
                        let outcome = TaskOutcome::Returned(vec![inline(b"1")]);
                        h.st.handle(conn, ToNode::TaskDone { task_id, attempt, outcome });
                    }
                }
            }
        }
        // Everyone leaves; what the executors hold is answered or killed.
        for (d, _) in drivers.drain(..) {
            h.st.disconnect(d.conn, "gone");
            ended_programs += 1;
        }
        for cmd in h.pool_commands() {
            if let PoolCmd::Kill(pid) = cmd {
                if let Some(i) = execs.iter().position(|e| !e.remote && e.peer.pid == pid) {
                    let gone = execs.remove(i);
                    h.st.disconnect(gone.peer.conn, "killed");
                    h.st.worker_exited(pid, "was killed by signal 9 (SIGKILL)".into());
                }
            }
        }
        for e in execs.iter_mut().filter(|e| e.remote) {
            // A peer's task ends with its answer, cancelled or not.
            for m in e.peer.take() {
                if let FromNode::Execute(s) = m {
                    e.running.push((s.task_id, s.attempt));
                }
            }
            for (task_id, attempt) in e.running.drain(..) {
                let outcome = TaskOutcome::Returned(vec![inline(b"1")]);
                h.st.handle(e.peer.conn, ToNode::TaskDone { task_id, attempt, outcome });
            }
        }
        h.st.close_ended_links();
        assert!(h.st.programs().is_empty(), "seed {seed}");
        assert!(
            execs.iter().filter(|e| e.remote).all(|e| !h.st.is_connected(e.peer.conn)),
            "seed {seed}: a link of an ended program is open"
        );
        let stats = h.st.stats();
        assert_eq!((stats.tasks, stats.available), (0, total.clone()), "seed {seed}");
        assert!(
            sent > 50 && ended_programs > 3 && kills > 0,
            "seed {seed}: sent {sent}, ended {ended_programs}, kills {kills}"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

// ---- results left on peers (`left` steps 8 to 12) ----

/// A result the peer's link left in its node's store, of `len` bytes.
fn left(len: u64) -> ObjectValue {
    ObjectValue::Data {
        payload: Payload::left_on_peer(len),
        encoding: ferroray_protocol::Encoding::Rust,
        contained: vec![],
    }
}

fn left_by(h: &mut Harness, from: &Peer, tid: TaskId, attempt: u32) {
    let outcome = TaskOutcome::Returned(vec![left(4 << 20)]);
    h.st.handle(from.conn, ToNode::TaskDone { task_id: tid, attempt, outcome });
}

fn pulls(msgs: &[FromNode]) -> Vec<ObjectId> {
    msgs.iter().filter_map(|m| if let FromNode::Pull(ids) = m { Some(ids.clone()) } else { None }).flatten().collect()
}

fn forgets(msgs: &[FromNode]) -> Vec<ObjectId> {
    msgs.iter().filter_map(|m| if let FromNode::Forget(ids) = m { Some(ids.clone()) } else { None }).flatten().collect()
}

/// The peer's answer to a pull: a copy under the owner's id, then the
/// link's hold on it let go.
fn pulled(h: &mut Harness, from: &Peer, id: ObjectId, bytes: &[u8]) {
    h.st.handle(from.conn, ToNode::Import { id, value: inline(bytes) });
    h.st.handle(from.conn, ToNode::RemoveRef(vec![id]));
}

fn location(h: &Harness, id: ObjectId) -> Option<&'static str> {
    h.st.object_summaries(usize::MAX).into_iter().find(|o| o.id == id).map(|o| o.location)
}

/// A put object of the driver's.
fn put(h: &mut Harness, d: &Peer, seq: u64) -> ObjectId {
    let id = ObjectId::for_put(TaskId { submitter: d.worker_id, seq });
    h.st.handle(d.conn, ToNode::Put { id, value: inline(b"arg") });
    id
}

#[test]
fn a_result_left_on_a_peer_is_pulled_once_for_all_its_readers_and_forgotten_when_freed() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let arg = put(&mut h, &d, 100);
    let mut s = x_spec(&d, 1, 0);
    s.args = vec![TaskArg::Ref(arg)];
    let (t1, r1) = unread(&mut h, &d, s);
    assert_eq!(executed(&p.take()), vec![t1]);
    left_by(&mut h, &p, t1, 0);
    // Nobody reads it yet: nothing moves, and the task is done.
    assert!(pulls(&p.take()).is_empty());
    assert_eq!(h.st.stats().tasks, 0);
    assert_eq!(location(&h, r1), Some("ON_PEER"));
    // Its argument stays while the task may have to run again.
    h.st.handle(d.conn, ToNode::RemoveRef(vec![arg]));
    assert_eq!(location(&h, arg), Some("INLINE"));
    // The first reader pulls it; a second one and a task taking it as an
    // argument (which cannot go to the peer: it is busy) wait for the same
    // copy.
    h.st.handle(d.conn, ToNode::Subscribe(vec![r1]));
    h.st.handle(d.conn, ToNode::Subscribe(vec![r1]));
    let (busy, _) = submit(&mut h, &d, x_spec(&d, 9, 0));
    let mut reader = spec(&d, 2, ReturnKind::Fixed(1), 0);
    reader.args = vec![TaskArg::Ref(r1)];
    let t2 = reader.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(reader)));
    let msgs = p.take();
    assert_eq!(executed(&msgs), vec![busy]);
    assert_eq!(pulls(&msgs), vec![r1], "one pull for three readers");
    assert_eq!(ready(&d.take(), r1), None);
    returned(&mut h, &p, busy, 0, b"");
    assert_eq!(h.spawn_requests(), 0, "the reading task waits for its argument");
    pulled(&mut h, &p, r1, b"big");
    let msgs = d.take();
    let got: Vec<_> = msgs.iter().filter(|m| matches!(m, FromNode::ObjectReady { id, .. } if *id == r1)).collect();
    assert_eq!(got.len(), 2, "both subscribers answered: {msgs:?}");
    assert_eq!(ready(&msgs, r1), Some(&inline(b"big")));
    assert_eq!(location(&h, r1), Some("INLINE"));
    // Here now: the lineage and its argument went.
    assert_eq!(location(&h, arg), None);
    assert_eq!(forgets(&p.take()), vec![r1], "the peer's copy goes once this one is here");
    assert_eq!(h.spawn_requests(), 1);
    let w = h.worker();
    assert_eq!(executed(&w.take()), vec![t2]);
    // A result freed while it is left there is forgotten there.
    let s = x_spec(&d, 3, 0);
    let (t3, r3) = unread(&mut h, &d, s);
    assert_eq!(executed(&p.take()), vec![t3]);
    left_by(&mut h, &p, t3, 0);
    h.st.handle(d.conn, ToNode::RemoveRef(vec![r3]));
    assert_eq!(forgets(&p.take()), vec![r3]);
    assert_eq!(location(&h, r3), None);
    // Only a peer may leave a result: a worker's is refused.
    let s = spec(&d, 4, ReturnKind::Fixed(1), 0);
    let (t4, r4) = (s.task_id, ObjectId::for_return(s.task_id, 0));
    returned(&mut h, &w, t2, 0, b"done");
    h.st.handle(d.conn, ToNode::Submit(Box::new(s)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![r4]));
    assert_eq!(executed(&w.take()), vec![t4]);
    left_by(&mut h, &w, t4, 0);
    match ready(&d.take(), r4) {
        Some(ObjectValue::Error(Error::Protocol(m))) => assert!(m.contains("did not allocate"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_result_lost_with_its_peer_is_made_again_by_its_task_or_lost_without_retries() {
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(2.0, 2.0));
    let arg = put(&mut h, &d, 100);
    let mut s1 = x_spec(&d, 1, 1);
    s1.args = vec![TaskArg::Ref(arg)];
    let (t1, r1) = unread(&mut h, &d, s1);
    let (t2, r2) = submit(&mut h, &d, x_spec(&d, 2, 0));
    assert_eq!(executed(&a.take()), vec![t1, t2]);
    left_by(&mut h, &a, t1, 0);
    h.st.handle(d.conn, ToNode::RemoveRef(vec![arg]));
    // Read while the peer has it: the pull is under way when it is lost.
    h.st.handle(d.conn, ToNode::Subscribe(vec![r2]));
    left_by(&mut h, &a, t2, 0);
    assert_eq!(pulls(&a.take()), vec![r2]);
    // A task reading the first result goes where it is (`left` step 13).
    let mut reader = spec(&d, 3, ReturnKind::Fixed(1), 1);
    reader.args = vec![TaskArg::Ref(r1)];
    let t3 = reader.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(reader)));
    let msgs = a.take();
    assert!(pulls(&msgs).is_empty() && executed(&msgs) == vec![t3], "{msgs:?}");
    // Lost with the peer, it waits here for the result made again.
    h.st.disconnect(a.conn, "node died");
    // The task with a retry left runs again when a node that can joins;
    // the one without has its result lost, naming the node.
    let msgs = d.take();
    match ready(&msgs, r2) {
        Some(ObjectValue::Error(Error::ObjectLost(m))) => {
            assert!(m.contains(&NodeId(0xa).to_string()) && m.contains("no retries left"), "{m}")
        }
        other => panic!("{other:?} in {msgs:?}"),
    }
    assert_eq!(ready(&msgs, r1), None);
    assert_eq!(location(&h, arg), Some("INLINE"), "the argument stays for the new attempt");
    let b = attach(&mut h, 0xb, cpus_x(1.0, 1.0));
    let execs = b.take();
    assert_eq!(executed_attempts(&execs), vec![(t1, 1)]);
    let args: Vec<TaskArg> = execs
        .iter()
        .find_map(|m| if let FromNode::Execute(s) = m { Some(s.args.clone()) } else { None })
        .expect("executed");
    assert!(matches!(&args[..], [TaskArg::Object { id, .. }] if *id == arg), "{args:?}");
    // Left again, on the new peer: the reader waiting for it goes there.
    left_by(&mut h, &b, t1, 1);
    let msgs = b.take();
    assert!(pulls(&msgs).is_empty(), "{msgs:?}");
    assert_eq!(executed(&msgs), vec![t3]);
    // Lost again with its last retry spent: lost for good, and the
    // reader's retry fails with it.
    h.st.disconnect(b.conn, "node died");
    h.st.handle(d.conn, ToNode::Subscribe(vec![r1]));
    let msgs = d.take();
    assert!(matches!(ready(&msgs, r1), Some(ObjectValue::Error(Error::ObjectLost(_)))), "{msgs:?}");
    assert_eq!(h.st.stats().tasks, 0);
    assert_eq!(location(&h, arg), None, "the lineage went with it");
}

#[test]
fn a_task_whose_argument_is_left_on_a_peer_goes_there_or_waits_for_it_here() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let s = x_spec(&d, 1, 0);
    let (t1, r1) = unread(&mut h, &d, s);
    assert_eq!(executed(&p.take()), vec![t1]);
    left_by(&mut h, &p, t1, 0);
    // A plain task reading it goes to the peer that has it, which has
    // room: nothing is pulled, and it names the peer's copy.
    let mut there = spec(&d, 2, ReturnKind::Fixed(1), 0);
    there.args = vec![TaskArg::Ref(r1)];
    let t2 = there.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(there)));
    let msgs = p.take();
    assert!(pulls(&msgs).is_empty(), "{msgs:?}");
    let sent = msgs.iter().find_map(|m| if let FromNode::Execute(s) = m { Some(s.clone()) } else { None });
    let sent = sent.expect("executed there");
    assert_eq!(sent.task_id, t2);
    match &sent.args[..] {
        [TaskArg::Object { id, payload, .. }] => assert!(*id == r1 && payload.is_left_on_peer(), "{payload:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.spawn_requests(), 0);
    // The peer busy: the next reader waits for it here instead.
    let mut here = spec(&d, 3, ReturnKind::Fixed(1), 0);
    here.args = vec![TaskArg::Ref(r1)];
    let t3 = here.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(here)));
    assert_eq!(pulls(&p.take()), vec![r1]);
    assert_eq!(h.spawn_requests(), 0);
    pulled(&mut h, &p, r1, b"big");
    assert_eq!(forgets(&p.take()), vec![r1]);
    assert_eq!(h.spawn_requests(), 1);
    let w = h.worker();
    let msgs = w.take();
    assert_eq!(executed(&msgs), vec![t3]);
    // The one sent there ends as any; the result is here now.
    returned(&mut h, &p, t2, 0, b"2");
    h.st.handle(d.conn, ToNode::Subscribe(vec![r1]));
    assert_eq!(ready(&d.take(), r1), Some(&inline(b"big")));
}

/// Submits a streaming generator (no backpressure, `retries`) that only a
/// peer can run, and checks that it went to `p`.
fn generator_on(h: &mut Harness, d: &Peer, p: &Peer, retries: u32) -> TaskId {
    let mut s = x_spec(d, 1, retries);
    s.returns = ReturnKind::Streaming { backpressure: None };
    let (tid, _) = unread(h, d, s);
    assert_eq!(executed(&p.take()), vec![tid]);
    tid
}

/// Item `index` of attempt `attempt` of generator `tid`, from `from`: left
/// there when `left_there`, else inline; its digest is its index's.
fn item(h: &mut Harness, from: &Peer, tid: TaskId, attempt: u32, index: u32, left_there: bool) {
    let value = if left_there { left(4 << 20) } else { inline(b"small") };
    let msg = ToNode::ReportItem { task_id: tid, attempt, index, value, digest: 100 + index as u64 };
    h.st.handle(from.conn, msg);
}

fn acks(msgs: &[FromNode]) -> Vec<(u32, bool)> {
    msgs.iter()
        .filter_map(|m| if let FromNode::ItemAck { index, gone, .. } = m { Some((*index, *gone)) } else { None })
        .collect()
}

#[test]
fn a_generators_items_lost_with_its_peer_are_replayed_up_to_the_last_lost_one() {
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(1.0, 1.0));
    let tid = generator_on(&mut h, &d, &a, 1);
    // Items 1 and 2 stay on the peer; the consumer hears of each at once.
    item(&mut h, &a, tid, 0, 0, false);
    item(&mut h, &a, tid, 0, 1, true);
    item(&mut h, &a, tid, 0, 2, true);
    item(&mut h, &a, tid, 0, 3, false);
    let end = TaskOutcome::Streamed { items: 4 };
    h.st.handle(a.conn, ToNode::TaskDone { task_id: tid, attempt: 0, outcome: end });
    let msgs = d.take();
    let items: Vec<(u32, bool)> = msgs
        .iter()
        .filter_map(|m| {
            if let FromNode::StreamItem { index, value, .. } = m {
                Some((*index, value.is_some()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(items, vec![(0, true), (1, false), (2, false), (3, true)]);
    assert!(msgs.iter().any(|m| matches!(m, FromNode::StreamEnd { items: 4, .. })));
    let (i1, i2) = (ObjectId::for_item(tid, 1), ObjectId::for_item(tid, 2));
    assert_eq!(location(&h, i1), Some("ON_PEER"));
    // The consumer reads item 2 as the peer dies.
    h.st.handle(d.conn, ToNode::Subscribe(vec![i2]));
    assert_eq!(pulls(&a.take()), vec![i2]);
    h.st.disconnect(a.conn, "node died");
    assert!(ready(&d.take(), i2).is_none(), "it waits for the replay");
    // Made again on a node that joins: the replay restores the lost items
    // and hands out nothing again; told to stop after the last lost one.
    let b = attach(&mut h, 0xb, cpus_x(1.0, 1.0));
    assert_eq!(executed_attempts(&b.take()), vec![(tid, 1)]);
    item(&mut h, &b, tid, 1, 0, false);
    item(&mut h, &b, tid, 1, 1, true);
    item(&mut h, &b, tid, 1, 2, true);
    let msgs = b.take();
    assert_eq!(acks(&msgs), vec![(0, false), (1, false), (2, true)]);
    assert_eq!(pulls(&msgs), vec![i2], "its reader waits: pulled from the new peer");
    let end = TaskOutcome::Streamed { items: 3 };
    h.st.handle(b.conn, ToNode::TaskDone { task_id: tid, attempt: 1, outcome: end });
    let msgs = d.take();
    assert!(!msgs.iter().any(|m| matches!(m, FromNode::StreamItem { .. } | FromNode::StreamEnd { .. })), "{msgs:?}");
    assert_eq!(h.st.stats().tasks, 0);
    pulled(&mut h, &b, i2, b"two");
    assert_eq!(ready(&d.take(), i2), Some(&inline(b"two")));
    assert_eq!(location(&h, i1), Some("ON_PEER"));
    // Lost again, with no retries left: lost for good, naming the node.
    h.st.disconnect(b.conn, "node died");
    h.st.handle(d.conn, ToNode::Subscribe(vec![i1]));
    match ready(&d.take(), i1) {
        Some(ObjectValue::Error(Error::ObjectLost(m))) => assert!(m.contains(&NodeId(0xb).to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_running_generators_items_lost_with_its_peer_come_back_with_its_retry_or_are_lost() {
    for retries in [1, 0] {
        let mut h = harness(1.0);
        let d = h.driver();
        let a = attach(&mut h, 0xa, cpus_x(1.0, 1.0));
        let b = attach(&mut h, 0xb, cpus_x(1.0, 1.0));
        let tid = generator_on(&mut h, &d, &a, retries);
        item(&mut h, &a, tid, 0, 0, true);
        let i0 = ObjectId::for_item(tid, 0);
        h.st.handle(d.conn, ToNode::Subscribe(vec![i0]));
        assert_eq!(pulls(&a.take()), vec![i0]);
        h.st.disconnect(a.conn, "node died");
        if retries == 0 {
            // The attempt fails with the node: the item goes with it.
            match ready(&d.take(), i0) {
                Some(ObjectValue::Error(Error::ObjectLost(m))) => assert!(m.contains("ended without"), "{m}"),
                other => panic!("{other:?}"),
            }
            continue;
        }
        // The retry replays it into the lost item, and goes on.
        assert_eq!(executed_attempts(&b.take()), vec![(tid, 1)]);
        item(&mut h, &b, tid, 1, 0, false);
        assert_eq!(acks(&b.take()), vec![(0, false)]);
        assert_eq!(ready(&d.take(), i0), Some(&inline(b"small")));
        item(&mut h, &b, tid, 1, 1, false);
        let msgs = d.take();
        assert!(msgs.iter().any(|m| matches!(m, FromNode::StreamItem { index: 1, .. })), "{msgs:?}");
    }
}

#[test]
fn items_lost_with_a_peer_come_back_though_their_stream_was_dropped_or_its_attempt_ran_past_them() {
    // Dropped: the consumer kept item 0 and dropped the generator, which
    // runs on; its peer dies, and the retry restores the item, then stops.
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(1.0, 1.0));
    let b = attach(&mut h, 0xb, cpus_x(1.0, 1.0));
    let tid = generator_on(&mut h, &d, &a, 1);
    item(&mut h, &a, tid, 0, 0, true);
    item(&mut h, &a, tid, 0, 1, true);
    let (i0, i1) = (ObjectId::for_item(tid, 0), ObjectId::for_item(tid, 1));
    h.st.handle(d.conn, ToNode::StreamDrop { task_id: tid, consumed: 1 });
    assert_eq!(forgets(&a.take()), vec![i1], "the item it never took goes");
    h.st.disconnect(a.conn, "node died");
    assert_eq!(executed_attempts(&b.take()), vec![(tid, 1)]);
    item(&mut h, &b, tid, 1, 0, false);
    assert_eq!(acks(&b.take()), vec![(0, true)], "nothing lost after it: told to stop");
    h.st.handle(d.conn, ToNode::Subscribe(vec![i0]));
    assert_eq!(ready(&d.take(), i0), Some(&inline(b"small")));

    // Ran past them: attempt 0 left item 0 on A and failed; attempt 1 ran
    // on B past it; then A died. The task runs once more, for that item.
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(1.0, 1.0));
    let tid = generator_on(&mut h, &d, &a, 2);
    item(&mut h, &a, tid, 0, 0, true);
    // More CPU free there: the retry goes to B.
    let b = attach(&mut h, 0xb, cpus_x(2.0, 1.0));
    let crashed = Error::WorkerCrashed { task: "on_x".into(), detail: "exited".into() };
    h.st.handle(a.conn, ToNode::TaskDone { task_id: tid, attempt: 0, outcome: TaskOutcome::Failed(crashed) });
    assert_eq!(executed_attempts(&b.take()), vec![(tid, 1)]);
    let i0 = ObjectId::for_item(tid, 0);
    item(&mut h, &b, tid, 1, 0, true);
    assert_eq!(forgets(&b.take()), vec![i0], "A keeps the item: B's copy goes");
    item(&mut h, &b, tid, 1, 1, false);
    h.st.disconnect(a.conn, "node died");
    h.st.handle(d.conn, ToNode::Subscribe(vec![i0]));
    assert_eq!(ready(&d.take(), i0), None);
    let end = TaskOutcome::Streamed { items: 2 };
    h.st.handle(b.conn, ToNode::TaskDone { task_id: tid, attempt: 1, outcome: end });
    assert_eq!(executed_attempts(&b.take()), vec![(tid, 2)], "once more, for the lost item");
    item(&mut h, &b, tid, 2, 0, false);
    assert_eq!(acks(&b.take()), vec![(0, true)]);
    assert_eq!(ready(&d.take(), i0), Some(&inline(b"small")));
    let end = TaskOutcome::Streamed { items: 1 };
    h.st.handle(b.conn, ToNode::TaskDone { task_id: tid, attempt: 2, outcome: end });
    assert_eq!(h.st.stats().tasks, 0);
    let ends = d.take().iter().filter(|m| matches!(m, FromNode::StreamEnd { .. })).count();
    assert_eq!(ends, 0, "the stream ended once, with attempt 1");
}

// Step 1: one room per node, however many programs have links to it.
#[test]
fn programs_placing_work_on_one_peer_share_its_room() {
    use crate::WorkerCommand;
    let mut h = harness_with(1.0, &[], |_| {});
    let python = |arg: &str| WorkerCommand { program: "/usr/bin/python3".into(), args: vec![arg.into()], env: vec![] };
    let commands = |arg: &str| std::collections::BTreeMap::from([(WorkerKind::Python, python(arg))]);
    let a = h.driver();
    let pa = h.st.join_job(a.conn, commands("a"));
    let b = h.driver();
    let pb = h.st.join_job(b.conn, commands("b"));
    let py = |by: &Peer, seq: u64| {
        let mut s = spec(by, seq, ReturnKind::Fixed(1), 0);
        s.function =
            FunctionDescriptor::Python { module: "m".into(), qualname: "f".into(), function: None, pickled: vec![1] };
        s.resources = cpus(1.0);
        s
    };
    let la = attach_for(&mut h, 9, pa, cpus(2.0));
    let lb = attach_for(&mut h, 9, pb, cpus(2.0));
    // B's task takes this node's CPU.
    let (t0, _) = submit(&mut h, &b, py(&b, 1));
    let wb = h.worker_in(Pool { kind: WorkerKind::Python, program: pb });
    assert_eq!(executed(&wb.take()), vec![t0]);
    // A's two fill the peer.
    let (t1, _) = submit(&mut h, &a, py(&a, 1));
    let (t2, _) = submit(&mut h, &a, py(&a, 2));
    assert_eq!(executed(&la.take()), vec![t1, t2]);
    // B's next has no room there either: it queues behind B's busy worker
    // here (its link's own count alone would have sent it there).
    let (t3, _) = submit(&mut h, &b, py(&b, 2));
    assert!(executed(&lb.take()).is_empty());
    assert_eq!(executed(&wb.take()), vec![t3]);
    // One of A's ends: the room it made is B's too.
    returned(&mut h, &la, t1, 0, b"1");
    let (t4, _) = submit(&mut h, &b, py(&b, 3));
    assert_eq!(executed(&lb.take()), vec![t4]);
}

// `left` step 13, for a task submitted before its argument was made.
#[test]
fn a_task_waiting_for_a_result_goes_where_it_is_left() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(2.0, 1.0));
    let s = x_spec(&d, 1, 0);
    let (t1, r1) = unread(&mut h, &d, s);
    assert_eq!(executed(&p.take()), vec![t1]);
    // Submitted while its argument is being made, with a put object too.
    let arg = put(&mut h, &d, 100);
    let mut chained = spec(&d, 2, ReturnKind::Fixed(1), 0);
    chained.args = vec![TaskArg::Ref(r1), TaskArg::Ref(arg), TaskArg::Ref(r1)];
    let t2 = chained.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(chained)));
    assert_eq!(h.spawn_requests(), 0, "it waits");
    left_by(&mut h, &p, t1, 0);
    let msgs = p.take();
    assert!(pulls(&msgs).is_empty(), "{msgs:?}");
    let sent = msgs.iter().find_map(|m| if let FromNode::Execute(s) = m { Some(s.clone()) } else { None });
    let sent = sent.expect("sent there");
    assert_eq!(sent.task_id, t2);
    assert!(matches!(&sent.args[0], TaskArg::Object { payload, .. } if payload.is_left_on_peer()));
    assert!(matches!(&sent.args[2], TaskArg::Object { payload, .. } if payload.is_left_on_peer()));
    assert_eq!(h.spawn_requests(), 0);
    returned(&mut h, &p, t2, 0, b"2");
    // A reader of results left on two peers, with room here, goes to
    // neither: both are pulled for it once the last is left (`left` step
    // 14: until then it might go to a peer, which would read them there).
    let q = attach(&mut h, 2, cpus_x(1.0, 1.0));
    let s3 = x_spec(&d, 3, 0);
    let s4 = x_spec(&d, 4, 0);
    let (t3, r3, t4, r4) =
        (s3.task_id, ObjectId::for_return(s3.task_id, 0), s4.task_id, ObjectId::for_return(s4.task_id, 0));
    h.st.handle(d.conn, ToNode::Submit(Box::new(s3)));
    h.st.handle(d.conn, ToNode::Submit(Box::new(s4)));
    assert_eq!(executed(&p.take()), vec![t3], "p has one x");
    assert_eq!(executed(&q.take()), vec![t4]);
    let mut reader = spec(&d, 5, ReturnKind::Fixed(1), 0);
    reader.args = vec![TaskArg::Ref(r3), TaskArg::Ref(r4)];
    h.st.handle(d.conn, ToNode::Submit(Box::new(reader)));
    left_by(&mut h, &p, t3, 0);
    assert!(pulls(&p.take()).is_empty());
    left_by(&mut h, &q, t4, 0);
    let (at_p, at_q) = (p.take(), q.take());
    assert_eq!((pulls(&at_p), pulls(&at_q)), (vec![r3], vec![r4]));
    assert!(executed(&at_p).is_empty() && executed(&at_q).is_empty());
}

#[test]
fn a_generator_made_again_that_stops_before_a_lost_item_fails_it_once() {
    let mut h = harness(1.0);
    let d = h.driver();
    let a = attach(&mut h, 0xa, cpus_x(1.0, 1.0));
    let tid = generator_on(&mut h, &d, &a, u32::MAX);
    item(&mut h, &a, tid, 0, 0, false);
    item(&mut h, &a, tid, 0, 1, true);
    let end = TaskOutcome::Streamed { items: 2 };
    h.st.handle(a.conn, ToNode::TaskDone { task_id: tid, attempt: 0, outcome: end });
    h.st.disconnect(a.conn, "node died");
    let b = attach(&mut h, 0xb, cpus_x(1.0, 1.0));
    assert_eq!(executed_attempts(&b.take()), vec![(tid, 1)]);
    // It yields one item this time: the lost one is never made again, and
    // it is not run once more (its retries are unlimited).
    item(&mut h, &b, tid, 1, 0, false);
    let end = TaskOutcome::Streamed { items: 1 };
    h.st.handle(b.conn, ToNode::TaskDone { task_id: tid, attempt: 1, outcome: end });
    assert!(executed_attempts(&b.take()).is_empty());
    assert_eq!(h.st.stats().tasks, 0);
    let i1 = ObjectId::for_item(tid, 1);
    h.st.handle(d.conn, ToNode::Subscribe(vec![i1]));
    match ready(&d.take(), i1) {
        Some(ObjectValue::Error(Error::ObjectLost(m))) => assert!(m.contains(&NodeId(0xa).to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ---- arguments read from the peer keeping them (`left` steps 14 to 16) ----

/// A custom resource only the reading peer has.
const Y: &str = "y";

/// A task reading `arg` that only a node with `y` can run.
fn y_reader(by: &Peer, seq: u64, arg: ObjectId, max_retries: u32) -> TaskSpec {
    let mut s = spec(by, seq, ReturnKind::Fixed(1), max_retries);
    s.resources = cpus(1.0).with(Y, 1.0);
    s.args = vec![TaskArg::Ref(arg)];
    s
}

/// The node named by each `Elsewhere` in `msgs` and the ids it names, and
/// the arguments of the `Execute` of `tid` after them.
fn elsewhere_then(msgs: &[FromNode], tid: TaskId) -> (Vec<(NodeId, Vec<ObjectId>)>, Vec<TaskArg>) {
    let named = msgs
        .iter()
        .filter_map(|m| if let FromNode::Elsewhere { ids, node } = m { Some((*node, ids.clone())) } else { None })
        .collect();
    let at = msgs.iter().position(|m| matches!(m, FromNode::Execute(s) if s.task_id == tid));
    let at = at.unwrap_or_else(|| panic!("{tid} not executed: {msgs:?}"));
    assert!(msgs[..at].iter().any(|m| matches!(m, FromNode::Elsewhere { .. })), "named before the task: {msgs:?}");
    let FromNode::Execute(s) = &msgs[at] else { unreachable!() };
    (named, s.args.clone())
}

fn left_elsewhere(args: &[TaskArg], id: ObjectId) -> bool {
    matches!(args, [TaskArg::Object { id: x, payload, .. }] if *x == id && payload.is_left_elsewhere())
}

/// A driver, peer `p` (node 1, has `x`) keeping the result `r1` of its
/// task `t1` (with `retries`), and peer `q` (node 2, has `y`).
struct Lending {
    h: Harness,
    d: Peer,
    p: Peer,
    q: Peer,
    t1: TaskId,
    r1: ObjectId,
}

fn lending(retries: u32) -> Lending {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let q = attach(&mut h, 2, cpus(1.0).with(Y, 1.0));
    let (t1, r1) = unread(&mut h, &d, x_spec(&d, 1, retries));
    assert_eq!(executed(&p.take()), vec![t1]);
    left_by(&mut h, &p, t1, 0);
    Lending { h, d, p, q, t1, r1 }
}

impl Lending {
    /// Submits a reader of `r1` only `q` can run (`subscribe`d or not),
    /// which goes there to read it from `p`'s node; its task and result.
    fn reader_on_q(&mut self, seq: u64, subscribe: bool) -> (TaskId, ObjectId) {
        let reader = y_reader(&self.d, seq, self.r1, 0);
        let (t, r) =
            if subscribe { submit(&mut self.h, &self.d, reader) } else { unread(&mut self.h, &self.d, reader) };
        assert!(pulls(&self.p.take()).is_empty());
        let (named, args) = elsewhere_then(&self.q.take(), t);
        assert_eq!(named, vec![(NodeId(1), vec![self.r1])]);
        assert!(left_elsewhere(&args, self.r1), "{args:?}");
        (t, r)
    }
}

#[test]
fn a_task_another_peer_runs_reads_its_argument_where_it_is_left_and_holds_it_there_until_it_ends() {
    // Only q can run the reader: it goes there, naming p's node, and
    // nothing is pulled here.
    let mut l = lending(0);
    let (t2, _) = l.reader_on_q(2, false);
    let Lending { mut h, d, p, q, r1, .. } = l;
    assert_eq!(location(&h, r1), Some("ON_PEER"));
    // Read here meanwhile: pulled, but p keeps its copy for q's task.
    h.st.handle(d.conn, ToNode::Subscribe(vec![r1]));
    assert_eq!(pulls(&p.take()), vec![r1]);
    pulled(&mut h, &p, r1, b"big");
    assert_eq!(ready(&d.take(), r1), Some(&inline(b"big")));
    assert!(forgets(&p.take()).is_empty(), "q's task may still read it there");
    // Its end lets p forget it.
    returned(&mut h, &q, t2, 0, b"2");
    assert_eq!(forgets(&p.take()), vec![r1]);
    // A second reader finds it here now: sent as any argument.
    let reader = y_reader(&d, 3, r1, 0);
    let t3 = reader.task_id;
    h.st.handle(d.conn, ToNode::Submit(Box::new(reader)));
    let msgs = q.take();
    assert!(!msgs.iter().any(|m| matches!(m, FromNode::Elsewhere { .. })), "{msgs:?}");
    assert_eq!(executed(&msgs), vec![t3]);
}

#[test]
fn a_lent_argument_freed_here_is_forgotten_there_once_the_task_reading_it_ends() {
    let mut l = lending(0);
    let (t2, _) = l.reader_on_q(2, false);
    let Lending { mut h, d, p, q, r1, .. } = l;
    // The driver lets go; the task still holds it.
    h.st.handle(d.conn, ToNode::RemoveRef(vec![r1]));
    assert!(forgets(&p.take()).is_empty());
    // The task's end frees it here and forgets it there, once.
    returned(&mut h, &q, t2, 0, b"2");
    assert_eq!(forgets(&p.take()), vec![r1]);
    assert_eq!(location(&h, r1), None);
    assert!(forgets(&p.take()).is_empty());
}

#[test]
fn a_task_that_could_not_read_a_lent_argument_waits_for_it_here_with_no_retry_spent() {
    let mut l = lending(1);
    let (t2, r2) = l.reader_on_q(2, true);
    let (t3, r3) = l.reader_on_q(3, true);
    let Lending { mut h, d, p, q, r1, .. } = l;
    // A lent task's own loss, naming no argument of its, is its own: with
    // no retries it fails.
    let e = Error::ObjectLost(format!("{r3}: gone"));
    h.st.handle(q.conn, ToNode::TaskDone { task_id: t3, attempt: 0, outcome: TaskOutcome::Failed(e) });
    assert!(matches!(ready(&d.take(), r3), Some(ObjectValue::Error(Error::ObjectLost(_)))));
    // q could not read it there (p said it no longer had it): with no
    // retries, the reader waits for it here, pulled from p.
    let e = Error::ObjectLost(format!("{r1}: the node it was left on no longer has it"));
    h.st.handle(q.conn, ToNode::TaskDone { task_id: t2, attempt: 0, outcome: TaskOutcome::Failed(e) });
    assert_eq!(ready(&d.take(), r2), None, "not failed");
    assert_eq!(pulls(&p.take()), vec![r1]);
    pulled(&mut h, &p, r1, b"big");
    assert_eq!(forgets(&p.take()), vec![r1], "nothing reads it there any more");
    let execs = q.take();
    assert_eq!(executed_attempts(&execs), vec![(t2, 1)]);
    let args = execs.iter().find_map(|m| if let FromNode::Execute(s) = m { Some(s.args.clone()) } else { None });
    assert!(matches!(&args.expect("sent")[..], [TaskArg::Object { payload: Payload::Inline(b), .. }] if b == b"big"));
    returned(&mut h, &q, t2, 1, b"2");
    assert_eq!(ready(&d.take(), r2), Some(&inline(b"2")));
    assert_eq!(h.st.stats().tasks, 0);
}

#[test]
fn a_lent_argument_lost_with_its_peer_is_made_again_and_its_reader_reads_the_new_copy() {
    let mut l = lending(1);
    let (t2, r2) = l.reader_on_q(2, true);
    let Lending { mut h, d, p, q, t1, r1 } = l;
    // p dies: its result is made again; q's read fails, so the reader
    // waits here for the new one.
    h.st.disconnect(p.conn, "node died");
    let e = Error::ObjectLost(format!("{r1}: node {}, which kept it, is gone", NodeId(1)));
    h.st.handle(q.conn, ToNode::TaskDone { task_id: t2, attempt: 0, outcome: TaskOutcome::Failed(e) });
    assert_eq!(ready(&d.take(), r2), None);
    let p2 = attach(&mut h, 3, cpus_x(1.0, 1.0));
    assert_eq!(executed_attempts(&p2.take()), vec![(t1, 1)]);
    assert!(executed(&q.take()).is_empty(), "waits for it");
    // Left on the new peer: the reader goes to q again, reading it there.
    left_by(&mut h, &p2, t1, 1);
    assert!(pulls(&p2.take()).is_empty());
    let msgs = q.take();
    assert_eq!(executed_attempts(&msgs), vec![(t2, 1)]);
    let (named, args) = elsewhere_then(&msgs, t2);
    assert_eq!(named, vec![(NodeId(3), vec![r1])]);
    assert!(left_elsewhere(&args, r1));
    returned(&mut h, &q, t2, 1, b"2");
    assert_eq!(ready(&d.take(), r2), Some(&inline(b"2")));
}

#[test]
fn a_queued_reader_whose_argument_is_lost_waits_for_it_rather_than_failing() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    // A peer that can run neither task: peers are there throughout.
    let _o = attach(&mut h, 9, cpus(1.0));
    let (t1, r1) = unread(&mut h, &d, x_spec(&d, 1, 1));
    assert_eq!(executed(&p.take()), vec![t1]);
    left_by(&mut h, &p, t1, 0);
    // No node can run the reader yet: it queues, pulling nothing.
    let reader = y_reader(&d, 2, r1, 0);
    let (t2, r2) = (reader.task_id, ObjectId::for_return(reader.task_id, 0));
    h.st.handle(d.conn, ToNode::Submit(Box::new(reader)));
    h.st.handle(d.conn, ToNode::Subscribe(vec![r2]));
    assert!(pulls(&p.take()).is_empty());
    // Its argument is lost, then a node that can run it joins: it waits
    // for the argument being made again rather than going without it.
    h.st.disconnect(p.conn, "node died");
    let q = attach(&mut h, 2, cpus(1.0).with(Y, 1.0));
    assert!(executed(&q.take()).is_empty());
    assert_eq!(ready(&d.take(), r2), None);
    let p2 = attach(&mut h, 3, cpus_x(1.0, 1.0));
    assert_eq!(executed_attempts(&p2.take()), vec![(t1, 1)]);
    left_by(&mut h, &p2, t1, 1);
    assert!(pulls(&p2.take()).is_empty());
    let (named, args) = elsewhere_then(&q.take(), t2);
    assert_eq!(named, vec![(NodeId(3), vec![r1])]);
    assert!(left_elsewhere(&args, r1));
}

/// An object of another node's owner (its task `seq`).
fn theirs(seq: u64) -> ObjectId {
    ObjectId::for_return(TaskId { submitter: WorkerId(0x77), seq }, 0)
}

fn borrow(h: &mut Harness, link: &Peer, id: ObjectId, node: u64) {
    let msg = ToNode::Borrow { id, node: NodeId(node), len: 4 << 20, encoding: ferroray_protocol::Encoding::Rust };
    h.st.handle(link.conn, msg);
}

/// A task the link submits reading `id`, then lets go of its hold.
fn borrowed_by_task(h: &mut Harness, link: &Peer, seq: u64, id: ObjectId) -> (TaskId, ObjectId) {
    let mut s = spec(link, seq, ReturnKind::Fixed(1), 0);
    s.args = vec![TaskArg::Ref(id)];
    let ids = submit(h, link, s);
    h.st.handle(link.conn, ToNode::RemoveRef(vec![id]));
    ids
}

// `left` step 15: the executing node's side.
#[test]
fn a_borrowed_argument_is_pulled_from_the_node_keeping_it_and_its_loss_fails_its_readers() {
    let mut h = harness(1.0);
    let link = h.driver();
    h.st.mark_from_peer(link.conn);
    let b = attach(&mut h, 0xb, cpus(1.0));
    let x = theirs(1);
    borrow(&mut h, &link, x, 0xb);
    let (t1, _) = borrowed_by_task(&mut h, &link, 1, x);
    assert_eq!(pulls(&b.take()), vec![x], "read from b over this node's own link");
    assert_eq!(h.spawn_requests(), 0, "it waits for it");
    // A second reader joins the same pull.
    borrow(&mut h, &link, x, 0xb);
    let (t2, _) = borrowed_by_task(&mut h, &link, 2, x);
    assert!(pulls(&b.take()).is_empty());
    pulled(&mut h, &b, x, b"big");
    assert!(forgets(&b.take()).is_empty(), "b keeps nothing for this node");
    assert_eq!(h.spawn_requests(), 1);
    let w = h.worker();
    let msgs = w.take();
    assert_eq!(executed(&msgs), vec![t1]);
    let args = msgs.iter().find_map(|m| if let FromNode::Execute(s) = m { Some(s.args.clone()) } else { None });
    assert!(matches!(&args.expect("sent")[..], [TaskArg::Object { payload: Payload::Inline(v), .. }] if v == b"big"));
    returned(&mut h, &w, t1, 0, b"1");
    assert_eq!(executed(&w.take()), vec![t2]);
    returned(&mut h, &w, t2, 0, b"2");
    // No link to the keeping node yet: read once one is attached.
    let y = theirs(2);
    borrow(&mut h, &link, y, 0xc);
    let (t3, ry) = borrowed_by_task(&mut h, &link, 3, y);
    assert_eq!(ready(&link.take(), ry), None);
    let c = attach(&mut h, 0xc, cpus(1.0));
    assert_eq!(pulls(&c.take()), vec![y]);
    pulled(&mut h, &c, y, b"late");
    assert_eq!(executed(&w.take()), vec![t3]);
    returned(&mut h, &w, t3, 0, b"3");
    // Freed while it waits for a link, then borrowed again from another
    // node: the first wait went with it.
    let u = theirs(6);
    borrow(&mut h, &link, u, 0xd);
    h.st.handle(link.conn, ToNode::RemoveRef(vec![u]));
    borrow(&mut h, &link, u, 0xf);
    let (t6, _) = borrowed_by_task(&mut h, &link, 6, u);
    let d = attach(&mut h, 0xd, cpus(1.0));
    assert!(pulls(&d.take()).is_empty(), "not from the node it was first borrowed from");
    let f = attach(&mut h, 0xf, cpus(1.0));
    assert_eq!(pulls(&f.take()), vec![u]);
    pulled(&mut h, &f, u, b"again");
    assert_eq!(executed(&w.take()), vec![t6]);
    returned(&mut h, &w, t6, 0, b"6");
    // From a node the cluster has as dead: lost at once.
    let g = theirs(7);
    borrow(&mut h, &link, g, 0x9);
    let (_, rg) = borrowed_by_task(&mut h, &link, 7, g);
    h.st.peers_dead(&[NodeId(0x8)]);
    assert_eq!(ready(&link.take(), rg), None, "another node's death");
    h.st.peers_dead(&[NodeId(0x9)]);
    match ready(&link.take(), rg) {
        Some(ObjectValue::Error(Error::ObjectLost(m))) => assert!(m.starts_with(&format!("{g}:")), "{m}"),
        other => panic!("{other:?}"),
    }
    // None in time: lost, naming the node.
    let v = theirs(5);
    borrow(&mut h, &link, v, 0xe);
    let (_, rv) = borrowed_by_task(&mut h, &link, 5, v);
    h.st.expire_borrows(std::time::Instant::now());
    assert_eq!(ready(&link.take(), rv), None, "not yet");
    h.st.expire_borrows(std::time::Instant::now() + crate::state::BORROW_LINK_WAIT);
    match ready(&link.take(), rv) {
        Some(ObjectValue::Error(Error::ObjectLost(m))) => {
            assert!(m.starts_with(&format!("{v}:")) && m.contains(&NodeId(0xe).to_string()), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // The keeping node lost mid-pull: its readers fail with its id first
    // (their owner then reads it there, or makes it again).
    let z = theirs(3);
    borrow(&mut h, &link, z, 0xb);
    let (_, rz) = borrowed_by_task(&mut h, &link, 4, z);
    assert_eq!(pulls(&b.take()), vec![z]);
    h.st.disconnect(b.conn, "node died");
    match ready(&link.take(), rz) {
        Some(ObjectValue::Error(Error::ObjectLost(m))) => {
            assert!(m.starts_with(&format!("{z}:")) && m.contains("is gone"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.st.stats().tasks, 0);
    // Only a peer's link borrows.
    let d = h.driver();
    borrow(&mut h, &d, theirs(4), 0xb);
    assert!(!h.st.is_connected(d.conn));
}

// `left` step 15: the keeping node's side, where one link serves another
// node's read of what a second link keeps.
#[test]
fn a_peer_link_may_hold_what_another_link_of_its_program_holds_and_nothing_else() {
    use crate::WorkerCommand;
    let mut h = harness_with(1.0, &[], |_| {});
    let python = |arg: &str| WorkerCommand { program: "/usr/bin/python3".into(), args: vec![arg.into()], env: vec![] };
    let commands = |arg: &str| std::collections::BTreeMap::from([(WorkerKind::Python, python(arg))]);
    let link = |h: &mut Harness, program: &str| {
        let l = h.driver();
        h.st.mark_from_peer(l.conn);
        h.st.join_job(l.conn, commands(program));
        l
    };
    let (keeper, reader, other) = (link(&mut h, "a"), link(&mut h, "a"), link(&mut h, "b"));
    let plain = h.driver();
    h.st.join_job(plain.conn, commands("a"));
    let x = put(&mut h, &keeper, 1);
    assert!(!h.st.hold_as(reader.conn, keeper.conn, theirs(9)), "not held by the keeper");
    assert!(!h.st.hold_as(other.conn, keeper.conn, x), "another program's link");
    assert!(!h.st.hold_as(plain.conn, keeper.conn, x), "not a peer's link");
    assert!(!h.st.hold_as(keeper.conn, keeper.conn, x));
    assert!(h.st.hold_as(reader.conn, keeper.conn, x));
    // The keeper lets go while it is read: the reader's hold keeps it.
    h.st.handle(keeper.conn, ToNode::RemoveRef(vec![x]));
    assert_eq!(location(&h, x), Some("INLINE"));
    h.st.handle(reader.conn, ToNode::Subscribe(vec![x]));
    assert_eq!(ready(&reader.take(), x), Some(&inline(b"arg")));
    h.st.handle(reader.conn, ToNode::RemoveRef(vec![x]));
    assert_eq!(location(&h, x), None);
}

/// Arguments a task reads from other peers, and their nodes.
type Borrowed = Vec<(ObjectId, NodeId)>;

/// A peer as the lending stress test plays it: a maker (has `x`) leaves
/// results in its store; a reader (has `y`) runs tasks reading them.
struct Lender {
    peer: Peer,
    node: NodeId,
    maker: bool,
    /// (task, attempt, its arguments borrowed from other peers' nodes).
    running: Vec<(TaskId, u32, Borrowed)>,
    /// A maker's results left in its store and not forgotten yet.
    kept: std::collections::HashSet<ObjectId>,
    /// Pulls to answer.
    pulls: Vec<ObjectId>,
    /// The `Elsewhere`s before the next `Execute`.
    named: Vec<(ObjectId, NodeId)>,
}

/// `left` steps 14 to 16 under random orders: results left on makers that
/// come and go, readers on other peers reading them where they are,
/// pulls, frees and failed reads in between. Throughout, a peer is never
/// told to forget what it does not keep, nor what a task still reads
/// there, and a task is sent only naming a copy its node keeps; at the end
/// every task ended and every result kept was forgotten.
fn lending_stress_run(seed: u64) -> (usize, usize, usize) {
    let mut rng = Lcg(seed);
    let mut h = harness(1.0);
    h.st.enable_peers();
    let d = h.driver();
    let mut peers: Vec<Lender> = Vec::new();
    let mut next_node = 200;
    let mut join = |h: &mut Harness, peers: &mut Vec<Lender>, maker: bool| {
        next_node += 1;
        let total = if maker { cpus_x(1.0, 1.0) } else { cpus(1.0).with(Y, 1.0) };
        let peer = attach(h, next_node, total);
        let node = NodeId(next_node);
        let (kept, pulls, named, running) = (Default::default(), Vec::new(), Vec::new(), Vec::new());
        peers.push(Lender { peer, node, maker, running, kept, pulls, named });
    };
    for maker in [true, true, false, false] {
        join(&mut h, &mut peers, maker);
    }
    let (mut held, mut readers) = (Vec::new(), Vec::new());
    let (mut seq, mut steps, n_tasks) = (0, 0, 300);
    let (mut lent_runs, mut failed_reads, mut losses) = (0, 0, 0);
    loop {
        steps += 1;
        assert!(steps < 50_000, "seed {seed}: no progress: {} tasks left", h.st.stats().tasks);
        // What the node sent, checked against what each peer keeps.
        for i in 0..peers.len() {
            for m in peers[i].peer.take() {
                match m {
                    FromNode::Elsewhere { ids, node } => peers[i].named.extend(ids.into_iter().map(|id| (id, node))),
                    FromNode::Execute(s) => {
                        let named = std::mem::take(&mut peers[i].named);
                        let mut borrowed = Vec::new();
                        for arg in &s.args {
                            let TaskArg::Object { id, payload, .. } = arg else { continue };
                            if !payload.is_left_elsewhere() {
                                continue;
                            }
                            let &(_, node) = named.iter().find(|(x, _)| x == id).expect("named before");
                            let keeper = peers.iter().find(|p| p.node == node).expect("a live node");
                            assert!(
                                keeper.kept.contains(id),
                                "seed {seed}: {id} sent as kept on {node}, which has not it"
                            );
                            borrowed.push((*id, node));
                        }
                        lent_runs += usize::from(!borrowed.is_empty());
                        peers[i].running.push((s.task_id, s.attempt, borrowed));
                    }
                    FromNode::Pull(ids) => peers[i].pulls.extend(ids),
                    FromNode::Forget(ids) => {
                        for id in ids {
                            let node = peers[i].node;
                            assert!(
                                peers[i].kept.remove(&id),
                                "seed {seed}: {id} forgotten on {node}, which had not it"
                            );
                            let read = peers.iter().any(|p| p.running.iter().any(|(_, _, b)| b.contains(&(id, node))));
                            assert!(!read, "seed {seed}: {id} forgotten on {node} while a task reads it there");
                        }
                    }
                    _ => {}
                }
            }
        }
        if seq >= n_tasks && h.st.stats().tasks == 0 {
            break;
        }
        let makers = peers.iter().filter(|p| p.maker).count();
        let readers_up = peers.len() - makers;
        match rng.below(24) {
            0..=3 if seq < n_tasks => {
                seq += 1;
                let (_, r) = unread(&mut h, &d, x_spec(&d, seq, rng.below(3) as u32));
                held.push(r);
            }
            4..=6 if seq < n_tasks && !held.is_empty() => {
                seq += 1;
                let arg = held[rng.below(held.len())];
                readers.push(submit(&mut h, &d, y_reader(&d, seq, arg, rng.below(2) as u32)).1);
            }
            // The driver reads a result (pulled here) or lets it go.
            7 if !held.is_empty() => {
                let r = held[rng.below(held.len())];
                h.st.handle(d.conn, ToNode::Subscribe(vec![r]));
            }
            8 if !held.is_empty() => {
                let r = held.swap_remove(rng.below(held.len()));
                h.st.handle(d.conn, ToNode::RemoveRef(vec![r]));
            }
            // A maker answers a pull.
            9 => {
                let with: Vec<usize> = (0..peers.len()).filter(|i| !peers[*i].pulls.is_empty()).collect();
                if let Some(&i) = with.get(rng.below(with.len().max(1))) {
                    let id = peers[i].pulls.remove(0);
                    pulled(&mut h, &peers[i].peer, id, &id.task.seq.to_le_bytes());
                }
            }
            // A peer dies, or one joins.
            10 if makers > 1 || readers_up > 1 => {
                let i = rng.below(peers.len());
                if (peers[i].maker && makers > 1) || (!peers[i].maker && readers_up > 1) {
                    let gone = peers.remove(i);
                    losses += 1;
                    h.st.disconnect(gone.peer.conn, "stress");
                }
            }
            11 if peers.len() < 6 => {
                let maker = rng.below(2) == 0;
                join(&mut h, &mut peers, maker);
            }
            _ => {
                // A peer ends one of its tasks: a maker leaves or returns
                // its result; a reader returns, or fails to read an
                // argument whose node is gone (or, now and then, one
                // whose node it could not reach).
                let busy: Vec<usize> = (0..peers.len()).filter(|i| !peers[*i].running.is_empty()).collect();
                let Some(&i) = busy.get(rng.below(busy.len().max(1))) else { continue };
                let (task_id, attempt, borrowed) = {
                    let at = rng.below(peers[i].running.len());
                    peers[i].running.remove(at)
                };
                let conn = peers[i].peer.conn;
                let outcome = if peers[i].maker {
                    if rng.below(3) > 0 {
                        peers[i].kept.insert(ObjectId::for_return(task_id, 0));
                        TaskOutcome::Returned(vec![left(4 << 20)])
                    } else {
                        TaskOutcome::Returned(vec![inline(&task_id.seq.to_le_bytes())])
                    }
                } else {
                    let unreadable = borrowed.iter().find(|(_, n)| !peers.iter().any(|p| p.node == *n));
                    match unreadable.or_else(|| borrowed.first().filter(|_| rng.below(6) == 0)) {
                        Some((x, n)) => {
                            failed_reads += 1;
                            TaskOutcome::Failed(Error::ObjectLost(format!("{x}: node {n}, which kept it, is gone")))
                        }
                        None => TaskOutcome::Returned(vec![inline(&task_id.seq.to_le_bytes())]),
                    }
                };
                h.st.handle(conn, ToNode::TaskDone { task_id, attempt, outcome });
            }
        }
        // Work left and no peer to do it: one joins.
        for maker in [true, false] {
            if !peers.iter().any(|p| p.maker == maker) {
                join(&mut h, &mut peers, maker);
            }
        }
    }
    // Every reader ended once.
    let msgs = d.take();
    for r in &readers {
        let n = msgs.iter().filter(|m| matches!(m, FromNode::ObjectReady { id, .. } if id == r)).count();
        assert_eq!(n, 1, "seed {seed}: {r} answered {n} times");
    }
    // Letting go of every result forgets every copy kept anywhere.
    h.st.handle(d.conn, ToNode::RemoveRef(held));
    for p in &mut peers {
        for m in p.peer.take() {
            if let FromNode::Forget(ids) = m {
                for id in ids {
                    assert!(p.kept.remove(&id), "seed {seed}: {id} forgotten twice");
                }
            }
        }
        assert!(p.kept.is_empty(), "seed {seed}: {:?} never forgotten on {}", p.kept, p.node);
        assert!(p.running.is_empty());
    }
    assert_eq!(h.st.stats().tasks, 0);
    (lent_runs, failed_reads, losses)
}

#[test]
fn stress_lent_arguments_are_kept_while_read_and_forgotten_once_after() {
    let started = std::time::Instant::now();
    for seed in [0x1e4d, 1, 2, 3, 4, 5] {
        let (lent, failed, losses) = lending_stress_run(seed);
        assert!(
            lent > 10 && failed > 0 && losses > 0,
            "seed {seed}: {lent} lent runs, {failed} failed reads, {losses} losses"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

// `ToNode::Locate` (`wait` without fetching): told made when the value is
// set or left on a peer, and nothing is pulled for it.
#[test]
fn a_located_object_is_told_made_when_left_on_a_peer_without_a_pull() {
    let mut h = harness(1.0);
    let d = h.driver();
    let p = attach(&mut h, 1, cpus_x(1.0, 1.0));
    let made = |msgs: &[FromNode]| -> Vec<ObjectId> {
        msgs.iter()
            .filter_map(|m| if let FromNode::Made(ids) = m { Some(ids.clone()) } else { None })
            .flatten()
            .collect()
    };
    let (t1, r1) = unread(&mut h, &d, x_spec(&d, 1, 0));
    let (t2, r2) = unread(&mut h, &d, x_spec(&d, 2, 0));
    assert_eq!(executed(&p.take()), vec![t1, t2]);
    h.st.handle(d.conn, ToNode::Locate(vec![r1, r2]));
    h.st.handle(d.conn, ToNode::Locate(vec![r2]));
    assert!(made(&d.take()).is_empty(), "neither made yet");
    left_by(&mut h, &p, t1, 0);
    assert_eq!(made(&d.take()), vec![r1]);
    assert!(pulls(&p.take()).is_empty(), "nothing is read");
    assert_eq!(location(&h, r1), Some("ON_PEER"));
    returned(&mut h, &p, t2, 0, b"2");
    let msgs = d.take();
    assert_eq!(made(&msgs), vec![r2], "once, though asked twice");
    assert_eq!(ready(&msgs, r2), None, "told made, not sent the value");
    // Made already: told at once; one not shown to the sender (or no
    // longer held by it) is answered as a subscription is.
    h.st.handle(d.conn, ToNode::Locate(vec![r1]));
    assert_eq!(made(&d.take()), vec![r1]);
    let other = h.driver();
    h.st.handle(other.conn, ToNode::Locate(vec![r1]));
    assert!(matches!(ready(&other.take(), r1), Some(ObjectValue::Error(Error::PermissionDenied(_)))));
    h.st.handle(d.conn, ToNode::RemoveRef(vec![r2]));
    h.st.handle(d.conn, ToNode::Locate(vec![r2]));
    assert!(matches!(ready(&d.take(), r2), Some(ObjectValue::Error(Error::PermissionDenied(_)))));
}
