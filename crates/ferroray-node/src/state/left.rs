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
//!     `stop_waiting_for_left` when one is left there while it waits: a
//!     task, not an actor's, of the peer's program, that the peer's total
//!     fits, not from a peer, not naming a stream): it does not wait for
//!     them, and the scheduler places it on that peer if it has room now
//!     (`schedule`); the arguments go as `Payload::LEFT_ON_PEER`, which the
//!     link there turns into its own objects. Without room there, step 14.
//! 14. Such a task may also run on another peer, which reads the arguments
//!     straight from the peer keeping them rather than through this node
//!     (one transfer, not two): a task that may go to a peer (as in step
//!     13, but for the keeping peer's total) does not wait for any
//!     argument left on a peer (`Task::left_args`), and the scheduler
//!     places it on the peer keeping them all if it has room (step 13),
//!     here only once they are pulled here (`wait_here`, when this node
//!     has room now or no peer could take it: as any task, pulled, then
//!     placed anywhere), else on a peer with room (or, if only a peer
//!     could ever run it, queued behind what one runs). Each argument left on another peer than the one it goes to
//!     goes as `Payload::LEFT_ELSEWHERE`, after a `FromNode::Elsewhere`
//!     naming the keeping node, and is lent (`Left::lent`, the task's
//!     `borrowed`) until the task no longer runs there (`unlend`): a
//!     `Forget` waits for it (`lent_out`), since the task's node reads
//!     the keeping node's copy. A task whose argument was lost meanwhile
//!     waits here for it being made again; placement checks first
//!     (`placeable`).
//! 15. On the executing node the link hands each on as `ToNode::Borrow`
//!     (`borrow`): the object is left on the node's own link to the
//!     keeping node for the same program (`Left::borrowed`; waiting for
//!     that link to be attached if it is not yet, `unlinked`), pulled
//!     from there when read as in step 9 (that node's link serves it from
//!     the copy the owner's link keeps), with no lineage here. No such
//!     link in time (or the keeping node dead in the cluster's view,
//!     `peers_dead`), its loss, or a keeping node that no longer has it
//!     make the object an `ObjectLost` error naming it, which fails the
//!     tasks reading it.
//! 16. Back here, a task sent with lent arguments that failed with
//!     `ObjectLost` of one of them (its message starts with the object's
//!     id, as every such error here does) is not retried but waits for
//!     them here (`read_here_instead`, no retry spent): they are pulled
//!     here, or made again if their node is gone.
//!
//! Who may observe the states in between: a reader subscribing while a pull
//! is under way joins it (step 9); a free racing a pull is step 10; a loss
//! racing a pull drops the pull with the connection (its `Left` is cleared
//! first, so the copy never lands); a loss of a peer that also ran the new
//! attempt retries it as any task (`remote` step 5). A pull here or a free
//! racing another peer's read of a lent object waits for the task's end to
//! `Forget` it (step 14); a loss of the keeping peer racing that read fails
//! the read there, which step 16 turns into a wait here.

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
    /// Tasks on other peers reading it from there (step 14).
    pub(super) lent: u32,
    /// Another node's object, for a task a peer's link sent here (step
    /// 15): no lineage here, and its loss is an error, not a remake.
    pub(super) borrowed: bool,
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
        o.left = Some(Left { conn, pulling: false, len, encoding, lent: 0, borrowed: false });
        let mut waiting = o.waiting.clone();
        if let Some(r) = self.conns.get_mut(&conn).and_then(|c| c.remote.as_mut()) {
            r.left.insert(id);
        }
        *self.left_count.entry(id.task).or_default() += 1;
        self.made(id);
        // Steps 13 and 14: a task waiting for it that may go to a peer
        // stops waiting for it.
        waiting.sort_unstable();
        waiting.dedup();
        for tid in waiting {
            self.stop_waiting_for_left(tid);
        }
        let o = self.objects.get(&id).expect("checked above");
        if !o.subscribers.is_empty() || !o.waiting.is_empty() {
            self.pull(id);
        }
        true
    }

    /// Steps 13 and 14 for task `tid`, waiting for an argument just left
    /// on a peer: if it may go to a peer, it stops waiting for every
    /// argument left on one (and goes to the peer keeping them all, if it
    /// may); it still waits for those being made.
    fn stop_waiting_for_left(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        if t.from_peer || !self.may_go_anywhere(&t.spec) {
            return;
        }
        let mut there = Vec::new();
        // Where they are: one peer, or several (`None`).
        let mut on: Option<Option<ConnId>> = None;
        for arg in &t.spec.args {
            let TaskArg::Ref(x) = arg else { continue };
            match self.objects.get(x) {
                Some(o) if o.value.is_none() => {
                    if let Some(l) = o.left.as_ref().filter(|l| !l.borrowed) {
                        there.push(*x);
                        on = Some(if on.is_none() || on == Some(Some(l.conn)) { Some(l.conn) } else { None });
                    }
                }
                Some(o) if !matches!(&o.value, Some(Stored::Error(_))) => {}
                // A failed argument fails it when it is set: waiting.
                _ => return,
            }
        }
        let at_peer = on.flatten().filter(|p| self.may_go_to(&t.spec, t.pool, *p));
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
        t.left_args = true;
        t.at_peer = at_peer;
        t.pending_deps = t.pending_deps.saturating_sub(no_longer);
        if t.pending_deps == 0 && no_longer > 0 {
            self.record(tid, TaskState::PendingSchedule, None, None);
            self.enqueue(tid);
        }
    }

    /// Step 14: whether task `spec` may run on a peer for its arguments
    /// left on peers: a task, not an actor's, not naming a stream of this
    /// node's.
    fn may_go_anywhere(&self, spec: &TaskSpec) -> bool {
        spec.actor.is_none() && !remote::stays_here(spec, &self.streams)
    }

    /// Step 13: whether task `spec` (of `pool`) may run on peer link `p`
    /// for its arguments left there: one that may go to a peer, of the
    /// link's program, that its node's total fits.
    fn may_go_to(&self, spec: &TaskSpec, pool: Pool, p: ConnId) -> bool {
        self.may_go_anywhere(spec)
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
        if left.borrowed {
            // Step 15: the node it was pulled from keeps nothing for this one.
            return;
        }
        if left.lent > 0 {
            // Step 14: other peers read it there until their tasks end.
            self.lent_out.insert(id, (left.conn, left.lent));
        } else {
            self.send(left.conn, FromNode::Forget(vec![id]));
        }
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
        let mut borrowed = Vec::new();
        lost.retain(|id| {
            let Some(o) = self.objects.get_mut(id) else { return false };
            match o.left.take_if(|l| l.conn == conn) {
                Some(l) if l.borrowed => {
                    borrowed.push(*id);
                    false
                }
                taken => taken.is_some(),
            }
        });
        // Step 15: another node's, whose owner makes it again.
        for id in borrowed {
            let e = Error::ObjectLost(format!("{id}: node {node}, which kept it, is gone"));
            self.set_value(id, Stored::Error(e));
        }
        // Step 14: nothing to forget there any more.
        self.lent_out.retain(|_, (c, _)| *c != conn);
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
        let waits = self.wait_for_args(tid, &l.spec, l.pool, true);
        let (pending, failed) = (waits.pending, waits.failed);
        let mut task = Task::new(l.spec, pending, l.retries_left);
        task.pool = l.pool;
        task.left_args = waits.left_args;
        task.at_peer = waits.at_peer;
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
    /// waits for, pulling those left on a peer, and says how many, the
    /// error of a failed or unknown one, and whether (steps 13 and 14, if
    /// `may_go` and the task may) it waits for none left on a peer, and
    /// goes to the peer keeping them all. Liveness pins are the caller's.
    pub(super) fn wait_for_args(&mut self, tid: TaskId, spec: &TaskSpec, pool: Pool, may_go: bool) -> ArgWaits {
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
                    // A borrowed one (step 15) is waited for: pulled here.
                    (None, Some(l)) if !l.borrowed => {
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
        let left_args = left_on.is_some() && may_go && failed.is_none() && self.may_go_anywhere(spec);
        let at_peer = left_on.flatten().filter(|p| left_args && self.may_go_to(spec, pool, *p));
        let mut pending = 0;
        let mut pulls = Vec::new();
        for arg in &spec.args {
            let TaskArg::Ref(oid) = arg else { continue };
            let Some(o) = self.objects.get_mut(oid) else { continue };
            if o.value.is_some() || (left_args && o.left.as_ref().is_some_and(|l| !l.borrowed)) {
                continue;
            }
            o.waiting.push(tid);
            pending += 1;
            pulls.push(*oid);
        }
        for oid in pulls {
            self.pull(oid);
        }
        ArgWaits { pending, failed, left_args, at_peer }
    }

    /// Steps 13 and 14: task `tid` does not run on a peer with its
    /// arguments left on peers (none has room now, this node has, or that
    /// peer is gone): it waits for them here. True if it is ready at once
    /// (queued again; the caller schedules).
    pub(super) fn wait_here(&mut self, tid: TaskId) -> bool {
        let Some(task) = self.tasks.get_mut(&tid) else { return false };
        task.at_peer = None;
        task.left_args = false;
        let (spec, pool) = (task.spec.clone(), task.pool);
        let waits = self.wait_for_args(tid, &spec, pool, false);
        if let Some(e) = waits.failed {
            self.complete_task(tid, Err(e));
            return false;
        }
        let Some(task) = self.tasks.get_mut(&tid) else { return false };
        task.pending_deps = waits.pending;
        if waits.pending == 0 {
            self.enqueue(tid);
            return true;
        }
        false
    }

    /// Step 14: whether every argument of `spec` is here or left on a
    /// peer (one lost since is not: the task waits here for it).
    pub(super) fn placeable(spec: &TaskSpec, objects: &FxHashMap<ObjectId, Obj>) -> bool {
        spec.args.iter().all(|arg| match arg {
            TaskArg::Ref(x) => objects.get(x).is_some_and(|o| match &o.value {
                Some(v) => !matches!(v, Stored::Error(_)),
                None => o.left.as_ref().is_some_and(|l| !l.borrowed),
            }),
            _ => true,
        })
    }

    /// Step 14, from `assign` of task `tid` to peer `to`: argument `id`,
    /// left on another peer, is read from there; returns that peer's node
    /// for `FromNode::Elsewhere`.
    pub(super) fn lend(&mut self, tid: TaskId, id: ObjectId, to: ConnId) -> Option<ferroray_common::NodeId> {
        let l = self.objects.get_mut(&id)?.left.as_mut().filter(|l| l.conn != to && !l.borrowed)?;
        l.lent += 1;
        let keeper = l.conn;
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.borrowed.push((id, keeper));
        }
        self.conns.get(&keeper).and_then(|c| c.remote.as_ref()).map(|r| r.node)
    }

    /// Step 14: task `tid` no longer runs on a peer (it ended there, was
    /// taken back, or that peer is gone): what it read from other peers
    /// may be forgotten there.
    pub(super) fn unlend(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        if t.borrowed.is_empty() {
            return;
        }
        for (id, keeper) in std::mem::take(&mut t.borrowed) {
            if let Some(l) = self.objects.get_mut(&id).and_then(|o| o.left.as_mut()).filter(|l| l.conn == keeper) {
                l.lent = l.lent.saturating_sub(1);
                continue;
            }
            let Some((conn, n)) = self.lent_out.get_mut(&id).filter(|(c, _)| *c == keeper) else { continue };
            *n -= 1;
            if *n == 0 {
                let conn = *conn;
                self.lent_out.remove(&id);
                self.send(conn, FromNode::Forget(vec![id]));
            }
        }
    }

    /// Step 16, from `task_done` before the task's worker is released:
    /// whether failure `e` of task `tid` is the loss of an argument it was
    /// sent with that another peer keeps.
    pub(super) fn lost_lent(&self, tid: TaskId, e: &Error) -> bool {
        let Error::ObjectLost(m) = e else { return false };
        let Some(t) = self.tasks.get(&tid) else { return false };
        t.borrowed.iter().any(|(id, _)| m.strip_prefix(&id.to_string()).is_some_and(|rest| rest.starts_with(':')))
    }

    /// Step 16: task `tid`'s peer could not read an argument it was lent:
    /// it waits for its arguments here instead, with no retry spent.
    pub(super) fn read_here_instead(&mut self, tid: TaskId, e: &Error) {
        let Some(task) = self.tasks.get_mut(&tid) else { return };
        task.spec.attempt += 1;
        task.attempt_items = 0;
        let why = format!("{e}: reading its arguments here first");
        self.record(tid, TaskState::Retrying, None, Some(why));
        self.wait_here(tid);
    }

    /// Step 15: a peer's link `conn` lends object `id` of its owner, kept
    /// on node `node` (`len` bytes as `encoding`), to the task it submits
    /// next. Held by `conn`; an object here already is held as it is (as
    /// an `Import` of it would be). With no link to `node` for the
    /// program yet (one is attached as the program starts here, or a
    /// second after one ended), it waits for one up to
    /// [`BORROW_LINK_WAIT`] (`unlinked`).
    pub(super) fn borrow(
        &mut self,
        conn: ConnId,
        id: ObjectId,
        node: ferroray_common::NodeId,
        len: u64,
        encoding: Encoding,
    ) {
        let Some(c) = self.conns.get(&conn) else { return };
        if !c.from_peer {
            return self.reject(conn, Error::Protocol("objects are borrowed by a node's own peer links only".into()));
        }
        let program = c.program;
        let known = self.objects.contains_key(&id);
        self.objects.entry(id).or_default();
        self.hold(conn, id);
        if known {
            return;
        }
        let via = self
            .conns
            .iter()
            .find(|(_, c)| c.remote.as_ref().is_some_and(|r| r.node == node && r.program == program))
            .map(|(via, _)| *via);
        match via {
            Some(via) => self.keep_borrowed(id, via, len, encoding),
            None => {
                let until = std::time::Instant::now() + BORROW_LINK_WAIT;
                self.unlinked.push(Unlinked { id, node, program, len, encoding, until });
            }
        }
    }

    /// Step 15: borrowed `id` is left on link `via`; pulled at once if
    /// something here reads it already.
    fn keep_borrowed(&mut self, id: ObjectId, via: ConnId, len: u64, encoding: Encoding) {
        let Some(o) = self.objects.get_mut(&id).filter(|o| o.value.is_none() && o.left.is_none()) else { return };
        o.left = Some(Left { conn: via, pulling: false, len, encoding, lent: 0, borrowed: true });
        let read = !o.subscribers.is_empty() || !o.waiting.is_empty();
        if let Some(r) = self.conns.get_mut(&via).and_then(|c| c.remote.as_mut()) {
            r.left.insert(id);
        }
        self.made(id);
        if read {
            self.pull(id);
        }
    }

    /// Step 15: peer link `conn` to `node` for `program` is attached:
    /// objects borrowed from that node while there was none are left on it.
    pub(super) fn linked(&mut self, conn: ConnId, node: ferroray_common::NodeId, program: ProgramId) {
        if self.unlinked.is_empty() {
            return;
        }
        let (now, later): (Vec<Unlinked>, Vec<Unlinked>) =
            std::mem::take(&mut self.unlinked).into_iter().partition(|u| u.node == node && u.program == program);
        self.unlinked = later;
        for u in now {
            self.keep_borrowed(u.id, conn, u.len, u.encoding);
        }
    }

    /// Step 15: objects borrowed from a node this node got no link to in
    /// time are lost here (their readers fail; their owner reads them
    /// itself). Called by the pool's periodic pass.
    pub fn expire_borrows(&mut self, now: std::time::Instant) {
        if self.unlinked.iter().all(|u| u.until > now) {
            return;
        }
        self.lose_unlinked(|u| u.until <= now, "has no link from this node");
    }

    /// Step 15: `nodes` are dead in the cluster's view: objects borrowed
    /// from them that wait for a link there are lost now, not at their
    /// deadline.
    pub fn peers_dead(&mut self, nodes: &[ferroray_common::NodeId]) {
        if self.unlinked.iter().any(|u| nodes.contains(&u.node)) {
            self.lose_unlinked(|u| nodes.contains(&u.node), "is dead in the cluster's view");
        }
    }

    /// The objects of `unlinked` that `due` picks are lost; their error
    /// says `why` of the node keeping them.
    fn lose_unlinked(&mut self, due: impl Fn(&Unlinked) -> bool, why: &str) {
        let (lost, later): (Vec<Unlinked>, Vec<Unlinked>) =
            std::mem::take(&mut self.unlinked).into_iter().partition(|u| due(u));
        self.unlinked = later;
        for u in lost {
            if self.unmade(u.id) {
                let e = Error::ObjectLost(format!("{}: node {}, which keeps it, {why}", u.id, u.node));
                self.set_value(u.id, Stored::Error(e));
            }
        }
    }
}

/// How long a borrowed object waits for a link to the node keeping it
/// (`left` step 15): a link is attached when its program starts here, or
/// a second after one ended, once the cluster's view has the node.
pub const BORROW_LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An object borrowed from a node with no link here yet (step 15).
pub(super) struct Unlinked {
    pub(super) id: ObjectId,
    node: ferroray_common::NodeId,
    program: ProgramId,
    len: u64,
    encoding: Encoding,
    /// Lost at this time if no link came.
    until: std::time::Instant,
}

/// What [`State::wait_for_args`] registered.
pub(super) struct ArgWaits {
    /// Arguments waited for.
    pub(super) pending: usize,
    /// An argument that failed or is unknown.
    pub(super) failed: Option<Error>,
    /// Step 14: none left on a peer is waited for.
    pub(super) left_args: bool,
    /// Step 13: the peer keeping them all, which may run it.
    pub(super) at_peer: Option<ConnId>,
}
