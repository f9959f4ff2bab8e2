//! Ready queues, leases and workers: which task runs where, pipelining,
//! taking queued tasks back, blocked workers lending their CPU.

use super::*;

/// Tasks a busy worker may hold beyond the one it runs (8 measured best:
/// ~40k tasks/s at 2, ~52k at 4, ~60k at 8 on the async benchmark). Pipelining hides the
/// round trip between two tasks; it applies only to tasks that could not
/// start anyway (no free resources), and is undone if the worker blocks.
pub(crate) const PIPELINE_DEPTH: usize = 8;

/// Idle (or starting) pool workers of a kind kept ready for the next actor
/// once an actor of that kind took a process: an actor's creation then
/// waits for no interpreter to start (`keep_spare`).
pub(super) const SPARE_WORKERS: usize = 1;

/// Bytes of argument values sent inline with one task, at most.
const ARG_INLINE_BUDGET: usize = ferroray_protocol::limits::INLINE_ARGS;

impl State {
    pub(super) fn enqueue(&mut self, tid: TaskId) {
        if self.actor_task_ready(tid) {
            return;
        }
        let Some(task) = self.tasks.get_mut(&tid) else { return };
        self.next_order += 1;
        task.order = self.next_order;
        let pool = task.pool;
        match self.ready.iter_mut().find(|((p, shape), _)| *p == pool && *shape == task.spec.resources) {
            Some((_, q)) => q.push_back(tid),
            None => self.ready.push(((pool, task.spec.resources.clone()), VecDeque::from([tid]))),
        }
    }

    /// Puts back a task taken back without running (revoked, or queued on a
    /// worker that died) at its place in its queue, by `Task::order`: tasks
    /// start in the order they were queued, whichever worker held them.
    pub(super) fn requeue(&mut self, tid: TaskId) {
        if self.actor_task_ready(tid) {
            return;
        }
        let Some(task) = self.tasks.get(&tid) else { return };
        let (order, shape, pool) = (task.order, &task.spec.resources, task.pool);
        let tasks = &self.tasks;
        match self.ready.iter_mut().find(|((p, s), _)| *p == pool && s == shape) {
            Some((_, q)) => {
                let at = q.partition_point(|t| tasks.get(t).is_none_or(|t| t.order < order));
                q.insert(at, tid);
            }
            None => self.ready.push(((pool, shape.clone()), VecDeque::from([tid]))),
        }
    }

    /// Starts every ready task that has resources and a worker; asks for more
    /// workers when tasks could run but no worker is idle.
    /// Inside a batch of messages (`handle_all`), at its end.
    pub fn schedule(&mut self) {
        if self.batching {
            self.schedule_due = true;
            return;
        }
        // A pass may queue tasks again (`left` step 13): once more for them.
        while self.schedule_pass() {}
    }

    /// One pass of `schedule`; true if it queued tasks again.
    fn schedule_pass(&mut self) -> bool {
        if self.shutting_down {
            return false;
        }
        self.place_unplaced();
        let mut tentative = self.available.clone();
        let mut want_workers: PerPool<usize> = PerPool::default();
        let mut dispatches = Vec::new();
        let mut pipelined = Vec::new();
        // Busy workers that could take a task behind the one they run.
        let mut busy: Vec<(ConnId, Pool, &ResourceSet, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.actor.is_none()
                    && c.remote.is_none()
                    && !c.blocked
                    && !c.doomed
                    && (1..=PIPELINE_DEPTH).contains(&c.assigned.len())
            })
            .map(|(id, c)| (*id, c.pool(), &c.lease_shape, c.assigned.len()))
            .collect();
        // Tasks on their way back from a `Revoke`: nothing queued after one
        // of them in its queue starts before it is back (by pool and shape,
        // the earliest order out).
        let mut out: Vec<(Pool, &ResourceSet, u64)> = Vec::new();
        for c in self.conns.values() {
            for t in c.revoking.iter().filter_map(|t| self.tasks.get(t)) {
                out.push((t.pool, &t.spec.resources, t.order));
            }
        }
        // Other nodes' room (`remote` step 1), and tasks placed there.
        let mut rooms = self.peer_rooms();
        let now = self.pace_now();
        // Made when first needed (most passes queue nothing on a peer).
        let mut queue_rooms: Option<remote::PeerRooms> = None;
        let conns = &self.conns;
        let mut to_peers = Vec::new();
        // Tasks that cannot go where their arguments are (`left` step 13).
        let mut wait_here = Vec::new();
        let mut waiting = Vec::new();
        let total = &self.total;
        let streams = &self.streams;
        for ((pool, shape), queue) in self.ready.iter_mut() {
            let pool = *pool;
            let head = queue.front().and_then(|t| self.tasks.get(t)).map_or(0, |t| t.order);
            if out.iter().any(|(p, s, order)| *p == pool && *s == shape && *order < head) {
                continue;
            }
            let mut i = 0;
            while i < queue.len() && want_workers.total() < self.max_workers {
                let Some(task) = self.tasks.get(&queue[i]) else {
                    queue.remove(i);
                    continue;
                };
                // Some arguments are on peers (`left` steps 13 and 14): on
                // the peer keeping them all if it has room; here once they
                // are pulled if this node has room; else on a peer with
                // room, which reads them where they are.
                if task.left_args {
                    let placeable = Self::placeable(&task.spec, &self.objects);
                    let peer = if !placeable {
                        None
                    } else if let Some(p) = task.at_peer.filter(|p| rooms.fits(*p, shape)) {
                        Some(p)
                    } else if shape.fits_in(&tentative) || rooms.is_empty() {
                        None
                    } else {
                        rooms.pick(shape, pool.program, conns)
                    };
                    if let Some(p) = peer {
                        rooms.take(p, shape);
                        if let Some(q) = queue_rooms.as_mut() {
                            q.take(p, shape);
                        }
                        to_peers.push((queue.remove(i).expect("index checked"), p));
                        continue;
                    }
                    if placeable && shape.fits_in(&tentative) {
                        // It runs here once they are pulled: in this pass
                        // the room is its, not another such task's (a
                        // later pass sees the room free again).
                        tentative.subtract(shape);
                    } else if placeable && !shape.fits_in(total) && !rooms.is_empty() {
                        // Only a peer could run it: queued behind what one
                        // runs, else it waits for one (not pulling).
                        let q = queue_rooms
                            .get_or_insert_with(|| remote::PeerRooms::less_placed(conns, now, &to_peers, &self.tasks));
                        if let Some(p) = q.pick(shape, pool.program, conns) {
                            q.take(p, shape);
                            to_peers.push((queue.remove(i).expect("index checked"), p));
                            continue;
                        }
                        waiting.push(queue[i]);
                        break;
                    }
                    wait_here.push(queue.remove(i).expect("index checked"));
                    continue;
                }
                if !shape.fits_in(&tentative) {
                    // No room here now: another node with room takes it,
                    // unless it must run here (`remote` step 7).
                    let here = rooms.is_empty()
                        || self
                            .tasks
                            .get(&queue[i])
                            .is_some_and(|t| t.from_peer || remote::stays_here(&t.spec, streams));
                    if let Some(peer) = (!here).then(|| rooms.pick(shape, pool.program, conns)).flatten() {
                        rooms.take(peer, shape);
                        if let Some(q) = queue_rooms.as_mut() {
                            q.take(peer, shape);
                        }
                        to_peers.push((queue.remove(i).expect("index checked"), peer));
                        continue;
                    }
                    if !shape.fits_in(total) {
                        // Only another node could run it: queued behind what
                        // a peer runs (pipelining), else it waits for one.
                        let q = queue_rooms
                            .get_or_insert_with(|| remote::PeerRooms::less_placed(conns, now, &to_peers, &self.tasks));
                        if let Some(peer) = (!here).then(|| q.pick(shape, pool.program, conns)).flatten() {
                            q.take(peer, shape);
                            to_peers.push((queue.remove(i).expect("index checked"), peer));
                            continue;
                        }
                        waiting.push(queue[i]);
                        break;
                    }
                    // No room to start it: queue it behind a busy worker
                    // holding a lease of the same shape, least loaded first.
                    // Not while an earlier task of this queue waits for a
                    // worker to start (`i > 0`): a later one queued behind a
                    // busy worker would start before it (and, with every
                    // place in `max_workers` taken, perhaps long before).
                    while i == 0 && i < queue.len() {
                        let Some(slot) = busy
                            .iter_mut()
                            .filter(|(_, p, s, n)| *p == pool && *s == shape && *n <= PIPELINE_DEPTH)
                            .min_by_key(|(_, _, _, n)| *n)
                        else {
                            break;
                        };
                        let tid = queue.remove(i).expect("index checked");
                        slot.3 += 1;
                        pipelined.push((tid, slot.0));
                    }
                    break;
                }
                tentative.subtract(shape);
                match self.idle[pool].pop() {
                    Some(w) => {
                        let tid = queue.remove(i).expect("index checked");
                        dispatches.push((tid, w));
                    }
                    None => {
                        want_workers[pool] += 1;
                        i += 1;
                    }
                }
            }
        }
        self.ready.retain(|(_, q)| !q.is_empty());
        let mut again = false;
        for tid in wait_here {
            again |= self.wait_here(tid);
        }
        for (tid, w) in dispatches {
            self.assign(tid, w, true);
        }
        for (tid, peer) in to_peers {
            self.assign(tid, peer, false);
        }
        for tid in waiting {
            let need = self.tasks.get(&tid).map(|t| t.spec.resources.clone()).unwrap_or_default();
            if !self.peer_could_run(&need) {
                self.warn_waiting(tid);
            }
        }
        for (tid, w) in pipelined {
            if self.tasks.contains_key(&tid) {
                self.assign(tid, w, false);
            }
        }
        if !self.idle.is_empty() && self.ready.is_empty() {
            // A worker is free while tasks wait behind busy ones: take them
            // back so they can start now (they return through `Revoked`).
            // Only tasks that could start with what is free now (the others
            // would just queue behind a busy worker again).
            for c in self.conns.values_mut() {
                if c.assigned.len() < 2
                    || !c.revoking.is_empty()
                    || c.actor.is_some()
                    || c.remote.is_some()
                    || self.idle[c.pool()].is_empty()
                {
                    continue;
                }
                let movable: Vec<TaskId> = c
                    .assigned
                    .iter()
                    .skip(1)
                    .copied()
                    .filter(|t| self.tasks.get(t).is_some_and(|t| t.spec.resources.fits_in(&self.available)))
                    .collect();
                if !movable.is_empty() {
                    c.revoking = movable.clone();
                    c.outbox.send(FromNode::Revoke { task_ids: movable });
                }
            }
        }
        if want_workers.iter().all(|(p, n)| *n <= self.starting[*p]) {
            return again;
        }
        let starting = self.starting.total();
        // Workers in the count: all but the dying, and those whose task
        // waits in `get` (they lend their place, so nested tasks cannot
        // deadlock). A generator that blocked paused by backpressure lends
        // its CPU but keeps its place: paused generators never make more
        // than `max_workers` processes.
        let active = self
            .conns
            .values()
            .filter(|c| c.role == Some(Role::Worker) && c.actor.is_none() && !c.doomed && (!c.blocked || c.paused))
            .count();
        let mut room = self.max_workers.saturating_sub(active + starting);
        // Blocked workers lend their place in `max_workers`, but every
        // process counts here: nested blocking calls cannot start
        // processes without bound.
        let processes =
            self.conns.values().filter(|c| c.role == Some(Role::Worker) && c.actor.is_none() && !c.doomed).count();
        let below_cap = self.max_processes.saturating_sub(processes + starting);
        if room > below_cap {
            room = below_cap;
            if room == 0 && !self.cap_logged {
                self.cap_logged = true;
                tracing::warn!(
                    "{processes} worker processes, the limit (max_worker_processes), and tasks \
                     are waiting: they start when a worker finishes; nested blocking calls deeper than the \
                     limit wait"
                );
            }
        } else {
            self.cap_logged = false;
        }
        for &(pool, want) in want_workers.iter() {
            let mut to_start = want.saturating_sub(self.starting[pool]);
            while to_start > 0 && room > 0 {
                if self.spawn.send(PoolCmd::Spawn { pool, actor: None }).is_err() {
                    return again;
                }
                self.starting[pool] += 1;
                to_start -= 1;
                room -= 1;
            }
        }
        again
    }

    /// Starts workers of `pool` until [`SPARE_WORKERS`] of them are
    /// idle or starting, within `max_workers` and `max_worker_processes`
    /// (called when an actor took a process of that kind). A spare is an
    /// ordinary pool worker: it holds no lease (no CPU) while idle, the next
    /// task or actor of its kind takes it, and the idle timeout lets it go
    /// like any other.
    pub(super) fn keep_spare(&mut self, pool: Pool) {
        let have = self.idle[pool].len() + self.starting[pool];
        if self.shutting_down || have >= SPARE_WORKERS {
            return;
        }
        let starting = self.starting.total();
        let in_pool = |c: &&Conn| c.role == Some(Role::Worker) && c.actor.is_none() && !c.doomed;
        let active = self.conns.values().filter(in_pool).filter(|c| !c.blocked || c.paused).count();
        let processes = self.conns.values().filter(in_pool).count();
        let room = self
            .max_workers
            .saturating_sub(active + starting)
            .min(self.max_processes.saturating_sub(processes + starting));
        for _ in 0..(SPARE_WORKERS - have).min(room) {
            if self.spawn.send(PoolCmd::Spawn { pool, actor: None }).is_err() {
                return;
            }
            self.starting[pool] += 1;
        }
    }

    /// Sends a task to a worker: an idle one (taking a new lease on the
    /// task's resources) or a busy one, behind the task it runs.
    pub(super) fn assign(&mut self, tid: TaskId, worker: ConnId, new_lease: bool) {
        let now = self.pace_now();
        let mut spec = {
            let task = self.tasks.get_mut(&tid).expect("assigning a known task");
            task.worker = Some(worker);
            task.started = true;
            task.spec.clone()
        };
        if let Some(c) = self.conns.get_mut(&worker) {
            if new_lease {
                c.lease = spec.resources.clone();
                c.lease_shape = spec.resources.clone();
                self.available.subtract(&spec.resources);
            }
            c.assigned.push_back(tid);
            // A peer's room is taken as the task is assigned, so that a
            // dispatch failing below gives back only what it took
            // (`release_worker` → `peer_released`).
            if let Some(r) = c.remote.as_mut().filter(|_| spec.actor.is_none()) {
                r.take(&spec.resources);
                r.pace.sent(now);
            }
            // An exported function's bytes go with its first call to this
            // worker, which keeps them (even if the call is taken back);
            // recorded as sent when it is (below). A peer fetches a function
            // the cluster's table has (the function table, step 2).
            if let FunctionDescriptor::Python { function: Some(f), pickled, .. } = &mut spec.function {
                let fetched = c.remote.is_some() && self.published.contains(f) && !self.head_away;
                if !c.functions_sent.contains(f) && !fetched {
                    if let Some(bytes) = self.functions.get(f) {
                        pickled.clone_from(bytes);
                    }
                }
            }
        }
        let mut pinned = Vec::new();
        let mut failed = None;
        let to_peer = self.conns.get(&worker).is_some_and(|c| c.remote.is_some());
        let mut elsewhere = Vec::new();
        // Ref arguments travel inline up to a budget; past it they stay refs
        // and the worker fetches them, so the task fits in one message.
        let mut inline_budget = ARG_INLINE_BUDGET;
        for arg in spec.args.iter_mut() {
            if let TaskArg::Value { payload: Payload::Inline(b), .. } = arg {
                inline_budget = inline_budget.saturating_sub(b.len());
            }
            if let TaskArg::Ref(id) = *arg {
                if let Some(l) = self.objects.get(&id).and_then(|o| o.left.as_ref()).filter(|l| to_peer && !l.borrowed)
                {
                    // Left on this peer: it names its own copy (`left` step
                    // 13); on another: read from there (step 14).
                    let payload =
                        if l.conn == worker { Payload::left_on_peer(l.len) } else { Payload::left_elsewhere(l.len) };
                    if l.conn != worker {
                        elsewhere.push(id);
                    }
                    *arg = TaskArg::Object { id, payload, encoding: l.encoding };
                    continue;
                }
                let payload = match self.objects.get(&id).and_then(|o| o.value.as_ref()) {
                    // A ref list's value is its ids: the worker fetches it
                    // whole (`TaskArg::Object` carries no ids).
                    Some(Stored::Inline { encoding: Encoding::RefList, .. }) => continue,
                    Some(Stored::Inline { bytes, .. }) if bytes.len() > inline_budget => continue,
                    Some(Stored::Inline { bytes, encoding, .. }) => {
                        inline_budget -= bytes.len();
                        Ok((Payload::Inline(bytes.clone()), *encoding))
                    }
                    Some(Stored::Shm { encoding, .. }) => {
                        let encoding = *encoding;
                        self.pin_shm(worker, id).inspect(|_| pinned.push(id)).map(|p| (p, encoding))
                    }
                    _ => Err(Error::ObjectLost(id.to_string())),
                };
                match payload {
                    Ok((payload, encoding)) => *arg = TaskArg::Object { id, payload, encoding },
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if failed.is_none() {
            // Inline arguments must fit in one message to the worker.
            // (a bound on the spec's size; the tag of `Execute` adds a few bytes)
            let size = spec.max_encoded_len() + 16;
            if size > ferroray_protocol::MAX_FRAME as u64 {
                failed = Some(Error::InvalidOption(format!(
                    "the arguments of {} take {size} bytes inline, over the {}-byte message limit: \
                     pass large values with put() or as refs",
                    spec.name(),
                    ferroray_protocol::MAX_FRAME
                )));
            }
        }
        if let Some(e) = failed {
            for id in pinned {
                self.unpin_shm(worker, id);
            }
            self.release_worker(tid);
            return self.complete_task(tid, Err(e));
        }
        // The worker may read its ref arguments and take references to the
        // refs nested in them.
        let mut shown = spec.contained.clone();
        for arg in &spec.args {
            if let TaskArg::Ref(id) | TaskArg::Object { id, .. } = arg {
                shown.push(*id);
                if let Some(v) = self.objects.get(id).and_then(|o| o.value.as_ref()) {
                    shown.extend_from_slice(v.contained());
                }
            }
        }
        if !shown.is_empty() {
            self.grant(worker, &shown);
        }
        let (pid, first, actor, peer, program) =
            self.conns.get(&worker).map_or((0, false, None, false, ProgramId(0)), |c| {
                (c.pid, c.assigned.len() == 1, c.actor, c.remote.is_some(), c.program)
            });
        if peer {
            // A peer runs all it is sent at once (`remote` step 2).
            self.record(tid, TaskState::Running, None, None);
        } else if first {
            // Queued ones are recorded as running when they reach the front.
            // An actor's output keeps its class's name (`actor_connected`).
            if actor.is_none() {
                let label = self.label(spec.name(), tid, program);
                self.names.lock().insert(pid, label);
            }
            self.record(tid, TaskState::Running, Some(pid), None);
        }
        // Only bytes that went count: a peer that fetches a published
        // function from the head gets them with a call while the head is
        // away (the function table, step 5).
        if let (FunctionDescriptor::Python { function: Some(f), pickled, .. }, Some(c)) =
            (&spec.function, self.conns.get_mut(&worker))
        {
            if !pickled.is_empty() {
                c.functions_sent.insert(*f);
            }
        }
        // Step 14: the peers keeping the arguments read elsewhere, named
        // just before the task.
        let mut by_node: Vec<(ferroray_common::NodeId, Vec<ObjectId>)> = Vec::new();
        for id in elsewhere {
            let Some(node) = self.lend(tid, id, worker) else { continue };
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, ids)) => ids.push(id),
                None => by_node.push((node, vec![id])),
            }
        }
        for (node, ids) in by_node {
            self.send(worker, FromNode::Elsewhere { ids, node });
        }
        self.send(worker, FromNode::Execute(Box::new(spec)));
    }

    /// Takes the task off its worker. The next task queued there runs under
    /// the same lease; with none, the lease goes back and the worker is idle.
    pub(super) fn release_worker(&mut self, tid: TaskId) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(w) = task.worker else {
            return;
        };
        if self.conns.get(&w).is_some_and(|c| c.remote.is_some()) {
            self.unlend(tid);
            self.peer_released(w, tid);
            if let Some(task) = self.tasks.get_mut(&tid) {
                task.worker = None;
            }
            return;
        }
        if let Some(task) = self.tasks.get_mut(&tid) {
            task.worker = None;
        }
        let Some(c) = self.conns.get_mut(&w) else {
            return;
        };
        let was_running = c.running() == Some(tid);
        // Usually the first (the running one): an actor may have a thousand
        // calls queued behind it, and a scan each would be quadratic.
        if c.assigned.front() == Some(&tid) {
            c.assigned.pop_front();
        } else if let Some(at) = c.assigned.iter().position(|t| *t == tid) {
            c.assigned.remove(at);
        }
        if !was_running {
            // A queued task ended (cancelled) while another runs: the lease
            // and the blocked state belong to the running one.
            return self.free_lease_if_empty(w);
        }
        if c.blocked {
            // The blocked task is over: its lease takes back the CPU it lent
            // out (available may go below zero while a borrower still runs).
            let mut lent = c.lease_shape.clone();
            lent.subtract(&c.lease);
            self.available.subtract(&lent);
            c.lease = c.lease_shape.clone();
            c.blocked = false;
            c.paused = false;
        }
        if let Some(next) = c.running().filter(|_| !c.doomed) {
            let (pid, program) = (c.pid, c.program);
            if let Some(t) = self.tasks.get(&next).filter(|_| c.actor.is_none()) {
                let name = t.spec.name().to_string();
                let label = self.label(&name, next, program);
                self.names.lock().insert(pid, label);
            }
            self.record(next, TaskState::Running, Some(pid), None);
        }
        self.free_lease_if_empty(w);
    }

    /// A worker with nothing assigned gives its lease back and is idle.
    pub(super) fn free_lease_if_empty(&mut self, w: ConnId) {
        let Some(c) = self.conns.get_mut(&w) else {
            return;
        };
        if c.actor.is_some() || c.remote.is_some() {
            // An actor's process has no lease and is never idle; nor has a peer.
            return;
        }
        if !c.assigned.is_empty() || c.lease_shape.is_empty() && c.lease.is_empty() && self.idle.contains(w) {
            return;
        }
        let mut lease = std::mem::take(&mut c.lease);
        if c.blocked {
            // The CPU it lent out is already in `available`.
            lease.set(resources::CPU, 0.0);
            c.blocked = false;
            c.paused = false;
        }
        c.lease_shape = ResourceSet::new();
        self.available.add(&lease);
        if !self.shutting_down && !c.doomed && !self.idle.contains(w) {
            c.idle_since = std::time::Instant::now();
            c.used = true;
            self.idle[c.pool()].push(w);
        }
    }

    /// The worker gave back tasks queued behind its blocked task.
    pub(super) fn revoked(&mut self, conn: ConnId, task_ids: Vec<TaskId>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.revoking.clear();
        }
        // The earliest task back in the ready queue: tasks queued after it
        // and pipelined behind other workers must not start before it.
        let earliest =
            task_ids.iter().filter_map(|t| self.tasks.get(t).filter(|t| t.worker == Some(conn)).map(|t| t.order)).min();
        for tid in task_ids.into_iter().rev() {
            let Some(task) = self.tasks.get_mut(&tid) else { continue };
            if task.worker != Some(conn) {
                continue;
            }
            task.worker = None;
            let cancelled = task.cancelled;
            if let Some(c) = self.conns.get_mut(&conn) {
                // Usually the first (the running one): an actor may have a thousand
                // calls queued behind it, and a scan each would be quadratic.
                if c.assigned.front() == Some(&tid) {
                    c.assigned.pop_front();
                } else if let Some(at) = c.assigned.iter().position(|t| *t == tid) {
                    c.assigned.remove(at);
                }
            }
            if cancelled {
                // Cancelled while it was being taken back: it never runs.
                self.complete_task(tid, Err(Error::TaskCancelled));
                continue;
            }
            self.requeue(tid);
        }
        if let Some(order) = earliest {
            self.revoke_queued_after(order);
        }
        // The worker may have finished its own task meanwhile: with nothing
        // left assigned it must not keep its lease.
        self.free_lease_if_empty(conn);
        self.schedule();
    }

    /// Takes back the tasks queued (not running) behind workers that were
    /// queued after `order`: a task taken back goes to the front of the
    /// ready queue, and a later one that stayed behind a worker would start
    /// before it when that worker's task ends (with every place in
    /// `max_workers` held by paused generators, the earlier one might not
    /// start at all until they are consumed).
    fn revoke_queued_after(&mut self, order: u64) {
        let tasks = &self.tasks;
        for c in self.conns.values_mut() {
            if !c.revoking.is_empty() || c.actor.is_some() || c.remote.is_some() || c.doomed || c.assigned.len() < 2 {
                continue;
            }
            let later: Vec<TaskId> =
                c.assigned.iter().skip(1).copied().filter(|t| tasks.get(t).is_some_and(|t| t.order > order)).collect();
            if !later.is_empty() {
                c.revoking = later.clone();
                c.outbox.send(FromNode::Revoke { task_ids: later });
            }
        }
    }

    pub(super) fn set_blocked(&mut self, conn: ConnId, blocked: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // An actor's process holds no lease (the actor holds its resources
        // for its life) and its queued calls stay with it.
        if !blocked || c.blocked || c.running().is_none() || c.actor.is_some() {
            // On unblock the task goes on without taking the CPU back: a
            // brief oversubscription, as in Ray, instead of a deadlock.
            return;
        }
        c.blocked = true;
        // Paused by backpressure rather than waiting for a result?
        c.paused = c
            .running()
            .and_then(|t| self.streams.get(&t))
            .is_some_and(|s| s.held_acks.iter().any(|(held_by, _)| *held_by == conn));
        // Lend the CPU back so that the tasks this one waits for can run.
        let cpu = ResourceSet::new().with(resources::CPU, c.lease.get(resources::CPU));
        c.lease.subtract(&cpu);
        self.available.add(&cpu);
        // Tasks queued behind it could be the very ones it waits for.
        let queued: Vec<TaskId> = c.assigned.iter().skip(1).copied().collect();
        if !queued.is_empty() {
            c.revoking.extend(queued.iter().filter(|t| !c.revoking.contains(t)).copied().collect::<Vec<_>>());
            self.send(conn, FromNode::Revoke { task_ids: queued });
        }
        self.schedule();
    }
}
