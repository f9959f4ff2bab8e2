//! Results left on peers: a large result of a task that ran on a peer node
//! stays in that node's store until something here reads it, and is made
//! again from its task if that node is lost before (lineage, as Ray's
//! object reconstruction). The protocol, with `remote`'s steps 1 to 7:
//!
//! 8. The peer's link leaves a result, or a streaming generator's item, in
//!    its node's store when it is shared memory of at least the link's
//!    threshold and names no objects (a task's, not an actor's: an actor's
//!    results are not made again; not a dynamic generator's). Its
//!    `TaskDone` or `ReportItem` names it by a `Shm` payload at
//!    `Payload::LEFT_ON_PEER`, which only a peer's connection may send
//!    (`leave`). The object then has no value here (`Obj::value` stays
//!    `None`, so every reader waits as for a pending object) and a
//!    [`Left`] naming the connection; the peer's `Remote::left` indexes it.
//! 9. The first reader (a `Subscribe`, a task taking it as an argument)
//!    pulls it: `FromNode::Pull` to the peer's connection, once per object
//!    (`Left::pulling`), so readers share one transfer. The link answers
//!    with a copy (`ToNode::Import`, then its `RemoveRef`): the value is
//!    set as any other (`set_value`), which wakes every reader, and the
//!    object is no longer left (`resolved`), which tells the peer to let
//!    its copy go (`FromNode::Forget`). The peer keeps it until then, so a
//!    task sent there naming it before (step 13) finds it.
//! 10. An object freed while left is forgotten there too (`Forget`); if a
//!     pull is under way, the link lets its copy go once sent, and the
//!     copy lands here for nobody and goes with its `RemoveRef`.
//! 11. While any result or item of a task is left (`left_count`), the
//!     task's spec, its retries left, its workers' pool and a generator's
//!     digests are kept ([`Lineage`]), with its
//!     arguments' liveness pins (the task's own, carried over from
//!     `complete_task`), so it can run again. The last of them pulled or
//!     freed drops the lineage and the pins.
//! 12. When the peer is lost (`lose_left`, from `peer_gone`), each object
//!     left there is made again: its task is submitted again as a retry
//!     (same task id, so the same return ids; one of its retries spent),
//!     waiting for arguments that are themselves being made again, and its
//!     readers go on waiting. A task with no retries left, or whose lineage
//!     is gone, sets `ObjectLost` naming the node. A result of the new
//!     attempt whose object has a value by then (pulled before the loss) is
//!     dropped (`task_done`). A generator made again (`Task::remaking`)
//!     replays against its digests: lost items take the replayed values
//!     (`restore_item`), nothing is handed out again, its stream is left
//!     alone, and it is told to stop after the last lost item; one still
//!     running restores them in its retry's replay, and one whose attempt
//!     ran past them elsewhere runs once more (`remake_lost`). What no
//!     attempt made again is `ObjectLost` when the task ends (`lost_ended`).
//!
//! 13. A task whose arguments are left on one peer goes there rather than
//!     pulling them (`wait_for_args` at its submission, or
//!     `send_where_left` when the last of them is left there while it
//!     waits, if its other arguments are here: a task, not an actor's, of
//!     the peer's program, that the peer's total fits, not from a peer, not
//!     naming a stream): it does not wait for them, and the scheduler
//!     places it on that peer if it has room now (`schedule`); the
//!     arguments go as `Payload::LEFT_ON_PEER`, which the link there turns
//!     into its own objects. Without room there, it waits for them here
//!     instead (`wait_here`), as any task: pulled, then placed anywhere.
//!
//! Who may observe the states in between: a reader subscribing while a pull
//! is under way joins it (step 9); a free racing a pull is step 10; a loss
//! racing a pull drops the pull with the connection (its `Left` is cleared
//! first, so the copy never lands); a loss of a peer that also ran the new
//! attempt retries it as any task (`remote` step 5).

use super::*;
use ferroray_common::NodeId;

/// `ObjectLost` for `id`, which lived only on `node`; `why` its task did
/// not make it again.
fn lost_error(id: ObjectId, node: NodeId, why: &str) -> Error {
    Error::ObjectLost(format!("{id}: it lived only on node {node}, which is gone, and the task that made it {why}"))
}

/// A result left on a peer (step 8).
pub(super) struct Left {
    /// The peer's connection, whose node keeps the bytes.
    pub(super) conn: ConnId,
    /// Asked for (step 9): later readers wait for the same copy.
    pub(super) pulling: bool,
    /// Its size, for listings, and its encoding, for a task sent where it
    /// is (step 13).
    pub(super) len: u64,
    pub(super) encoding: Encoding,
}

/// What runs a task again (step 11).
pub(super) struct Lineage {
    pub(super) spec: TaskSpec,
    pub(super) retries_left: u32,
    pub(super) pool: Pool,
    /// A generator's digests of the items it reported, to replay against.
    pub(super) digests: Option<Vec<u64>>,
}

impl State {
    /// Whether `id` is an object here with no value that is not left on a
    /// peer either: still being made, or lost and not made again yet.
    pub(super) fn unmade(&self, id: ObjectId) -> bool {
        self.objects.get(&id).is_some_and(|o| o.value.is_none() && o.left.is_none())
    }

    /// Step 8: the `TaskDone` or `ReportItem` of `conn` names result or
    /// item `id` as left there. False if `conn` is no peer (the caller then
    /// takes the value as any other, and refuses it).
    pub(super) fn leave(&mut self, conn: ConnId, id: ObjectId, len: u64, encoding: Encoding) -> bool {
        if self.conns.get(&conn).is_none_or(|c| c.remote.is_none()) {
            return false;
        }
        let wanted = self.unmade(id);
        if !wanted {
            // Nobody refers to it, or a retry's result for an object that
            // has its value (step 12).
            self.send(conn, FromNode::Forget(vec![id]));
            return true;
        }
        let o = self.objects.get_mut(&id).expect("checked above");
        o.left = Some(Left { conn, pulling: false, len, encoding });
        let mut waiting = o.waiting.clone();
        if let Some(r) = self.conns.get_mut(&conn).and_then(|c| c.remote.as_mut()) {
            r.left.insert(id);
        }
        *self.left_count.entry(id.task).or_default() += 1;
        // Step 13: a task waiting for it whose arguments are now all here
        // or left there goes there rather than waiting for them.
        waiting.sort_unstable();
        waiting.dedup();
        for tid in waiting {
            self.send_where_left(tid, conn);
        }
        let o = self.objects.get(&id).expect("checked above");
        if !o.subscribers.is_empty() || !o.waiting.is_empty() {
            self.pull(id);
        }
        true
    }

    /// Step 13 for task `tid`, waiting for an argument just left on `conn`:
    /// if every argument of it is here or left there and it may go there,
    /// it stops waiting for those left there and is to run there.
    fn send_where_left(&mut self, tid: TaskId, conn: ConnId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        if t.from_peer || t.at_peer.is_some_and(|p| p != conn) || !self.may_go_to(&t.spec, t.pool, conn) {
            return;
        }
        let mut there = Vec::new();
        for arg in &t.spec.args {
            let TaskArg::Ref(x) = arg else { continue };
            match self.objects.get(x) {
                Some(o) if o.left.as_ref().is_some_and(|l| l.conn == conn) => there.push(*x),
                Some(o) if matches!(&o.value, Some(v) if !matches!(v, Stored::Error(_))) => {}
                _ => return,
            }
        }
        there.sort_unstable();
        there.dedup();
        let mut no_longer = 0;
        for x in there {
            if let Some(o) = self.objects.get_mut(&x) {
                let before = o.waiting.len();
                o.waiting.retain(|w| *w != tid);
                no_longer += before - o.waiting.len();
            }
        }
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        t.at_peer = Some(conn);
        t.pending_deps = t.pending_deps.saturating_sub(no_longer);
        if t.pending_deps == 0 {
            self.record(tid, TaskState::PendingSchedule, None, None);
            self.enqueue(tid);
        }
    }

    /// Step 13: whether task `spec` (of `pool`) may run on peer link `p`
    /// for its arguments left there: a task, not an actor's, not naming a
    /// stream of this node's, of the link's program, that its node's total
    /// fits.
    fn may_go_to(&self, spec: &TaskSpec, pool: Pool, p: ConnId) -> bool {
        spec.actor.is_none()
            && !remote::stays_here(spec, &self.streams)
            && self
                .conns
                .get(&p)
                .and_then(|c| c.remote.as_ref())
                .is_some_and(|r| r.program == pool.program && spec.resources.fits_in(&r.total))
    }

    /// Step 9: asks for `id`'s bytes if it is left and not asked for yet.
    pub(super) fn pull(&mut self, id: ObjectId) {
        let Some(left) = self.objects.get_mut(&id).and_then(|o| o.left.as_mut()) else { return };
        if !left.pulling {
            left.pulling = true;
            let conn = left.conn;
            self.send(conn, FromNode::Pull(vec![id]));
        }
    }

    /// Steps 9 and 10: `id` is no longer left (`left` was its record): it
    /// has its value here, or it is freed. The last of its task's drops the
    /// lineage (step 11).
    pub(super) fn resolved(&mut self, id: ObjectId, left: Left) {
        if let Some(r) = self.conns.get_mut(&left.conn).and_then(|c| c.remote.as_mut()) {
            r.left.remove(&id);
        }
        self.send(left.conn, FromNode::Forget(vec![id]));
        if self.one_less_left(id.task) {
            if let Some(l) = self.lineage.remove(&id.task) {
                self.release_args(&l.spec);
            }
        }
    }

    /// Counts one result or item of `tid` no longer left; true if it was
    /// the last.
    fn one_less_left(&mut self, tid: TaskId) -> bool {
        let Some(n) = self.left_count.get_mut(&tid) else { return false };
        *n -= 1;
        if *n == 0 {
            self.left_count.remove(&tid);
            return true;
        }
        false
    }

    /// Step 11, from `complete_task`: keeps what runs task `spec` again if
    /// any of its results or items is left (`digests`: a generator's); true
    /// if it did (it then holds the arguments' pins).
    pub(super) fn keep_lineage(
        &mut self,
        spec: &TaskSpec,
        retries_left: u32,
        pool: Pool,
        digests: Option<Vec<u64>>,
    ) -> bool {
        if !self.left_count.contains_key(&spec.task_id) || spec.actor.is_some() {
            return false;
        }
        let lineage = Lineage { spec: spec.clone(), retries_left, pool, digests };
        self.lineage.insert(spec.task_id, lineage);
        true
    }

    /// Step 12: peer `node` (connection `conn`) is gone with the objects
    /// it kept for this node.
    pub(super) fn lose_left(&mut self, conn: ConnId, node: NodeId, left: FxHashSet<ObjectId>) {
        let mut lost: Vec<ObjectId> = left.into_iter().collect();
        lost.sort_unstable();
        // Every record goes first, so a task made again that takes another
        // lost object as an argument waits for it.
        lost.retain(|id| {
            let Some(o) = self.objects.get_mut(id) else { return false };
            o.left.take_if(|l| l.conn == conn).is_some()
        });
        for id in &lost {
            self.one_less_left(id.task);
        }
        let mut tasks: Vec<TaskId> = lost.iter().map(|id| id.task).collect();
        tasks.dedup();
        for tid in tasks {
            let ids: Vec<ObjectId> = lost.iter().copied().filter(|id| id.task == tid).collect();
            self.make_again(tid, ids, node);
        }
    }

    /// Step 12 for one task, whose results or items `ids` were lost on
    /// `node`. A task still running (a generator: its attempt there is
    /// retried) restores them as it replays; one that ended runs again from
    /// its lineage. Whatever its attempts end without is lost (`lost_ended`).
    fn make_again(&mut self, tid: TaskId, ids: Vec<ObjectId>, node: NodeId) {
        if self.tasks.contains_key(&tid) {
            self.lost.entry(tid).or_default().extend(ids.into_iter().map(|id| (id, node)));
            return;
        }
        let mut l = match self.lineage.remove(&tid) {
            Some(l)
                if l.retries_left > 0 && (l.digests.is_some() || matches!(l.spec.returns, ReturnKind::Fixed(_))) =>
            {
                l
            }
            other => {
                if let Some(l) = other {
                    self.release_args(&l.spec);
                }
                for id in ids {
                    self.set_value(id, Stored::Error(lost_error(id, node, "has no retries left to make it again")));
                }
                return;
            }
        };
        if l.retries_left != u32::MAX {
            l.retries_left -= 1;
        }
        l.spec.attempt += 1;
        // An earlier attempt under this id that ended while waiting left
        // its entries in its arguments' waiting lists.
        for arg in &l.spec.args {
            if let TaskArg::Ref(x) = arg {
                if let Some(o) = self.objects.get_mut(x) {
                    o.waiting.retain(|w| *w != tid);
                }
            }
        }
        let (pending, failed, at_peer) = self.wait_for_args(tid, &l.spec, l.pool, true);
        let mut task = Task::new(l.spec, pending, l.retries_left);
        task.pool = l.pool;
        task.at_peer = at_peer;
        task.remaking = l.digests;
        self.tasks.insert(tid, task);
        self.lost.entry(tid).or_default().extend(ids.into_iter().map(|id| (id, node)));
        let why = format!("its results lived only on node {node}, which is gone: running it again");
        self.record(tid, TaskState::Retrying, None, Some(why));
        if let Some(e) = failed {
            return self.complete_task(tid, Err(e));
        }
        if pending == 0 {
            self.enqueue(tid);
        }
    }

    /// Step 12, from `complete_task` of an attempt that ended well: if it
    /// left objects lost with a peer unmade (it ran past them elsewhere)
    /// and `task` may run again, it does, for them (true; its arguments'
    /// pins go with it).
    pub(super) fn remake_lost(&mut self, task: &Task, digests: Option<Vec<u64>>) -> bool {
        let tid = task.spec.task_id;
        let Some(lost) = self.lost.get(&tid) else { return false };
        let ids: Vec<ObjectId> = lost.iter().map(|(id, _)| *id).filter(|id| self.unmade(*id)).collect();
        let again = !ids.is_empty()
            && task.retries_left > 0
            && task.spec.actor.is_none()
            && (digests.is_some() || matches!(task.spec.returns, ReturnKind::Fixed(_)));
        if !again {
            return false;
        }
        let node = lost.first().map(|(_, n)| *n).expect("not empty");
        self.lost.remove(&tid);
        let (spec, retries_left, pool) = (task.spec.clone(), task.retries_left, task.pool);
        self.lineage.insert(tid, Lineage { spec, retries_left, pool, digests });
        self.make_again(tid, ids, node);
        true
    }

    /// Step 12, from `complete_task`: what task `tid`'s attempts did not
    /// make again is lost for good.
    pub(super) fn lost_ended(&mut self, tid: TaskId) {
        let Some(ids) = self.lost.remove(&tid) else { return };
        for (id, node) in ids {
            if self.unmade(id) {
                let e = lost_error(id, node, "ended without making it again");
                self.set_value(id, Stored::Error(e));
            }
        }
    }

    /// Registers task `tid` (`spec`, of `pool`) with each `Ref` argument it
    /// waits for, pulling those left on a peer, and returns how many, the
    /// error of a failed or unknown one, and (step 13, if `may_go` and the
    /// task may) the peer it goes to instead of waiting for the arguments
    /// left there. Liveness pins are the caller's.
    pub(super) fn wait_for_args(
        &mut self,
        tid: TaskId,
        spec: &TaskSpec,
        pool: Pool,
        may_go: bool,
    ) -> (usize, Option<Error>, Option<ConnId>) {
        let mut failed = None;
        // Where the arguments left on a peer are: none, one peer, or
        // several (`Some(None)`).
        let mut left_on: Option<Option<ConnId>> = None;
        for arg in &spec.args {
            let TaskArg::Ref(oid) = arg else { continue };
            match self.objects.get(oid) {
                None => failed = Some(Error::ObjectLost(oid.to_string())),
                Some(o) => match (&o.value, &o.left) {
                    (Some(Stored::Error(e)), _) => failed = Some(e.clone()),
                    (None, Some(l)) => {
                        left_on = Some(match left_on {
                            None => Some(l.conn),
                            Some(Some(p)) if p == l.conn => Some(p),
                            _ => None,
                        })
                    }
                    _ => {}
                },
            }
        }
        let at_peer = left_on.flatten().filter(|p| may_go && failed.is_none() && self.may_go_to(spec, pool, *p));
        let mut pending = 0;
        let mut pulls = Vec::new();
        for arg in &spec.args {
            let TaskArg::Ref(oid) = arg else { continue };
            let Some(o) = self.objects.get_mut(oid) else { continue };
            if o.value.is_some() || (at_peer.is_some() && o.left.as_ref().map(|l| l.conn) == at_peer) {
                continue;
            }
            o.waiting.push(tid);
            pending += 1;
            pulls.push(*oid);
        }
        for oid in pulls {
            self.pull(oid);
        }
        (pending, failed, at_peer)
    }

    /// Step 13: task `tid` cannot go to the peer that keeps its arguments
    /// (no room there now, or that peer is gone): it waits for them here.
    /// True if it is ready at once (queued again; the caller schedules).
    pub(super) fn wait_here(&mut self, tid: TaskId) -> bool {
        let Some(task) = self.tasks.get_mut(&tid) else { return false };
        task.at_peer = None;
        let (spec, pool) = (task.spec.clone(), task.pool);
        let (pending, failed, _) = self.wait_for_args(tid, &spec, pool, false);
        if let Some(e) = failed {
            self.complete_task(tid, Err(e));
            return false;
        }
        let Some(task) = self.tasks.get_mut(&tid) else { return false };
        task.pending_deps = pending;
        if pending == 0 {
            self.enqueue(tid);
            return true;
        }
        false
    }
}
