//! Who is on the other side: connections and their outboxes, the hello and
//! what a peer may see, cancel or make, worker processes coming and going.

use super::*;
use ferroray_common::ActorDeathCause;

impl State {
    /// A new connection from process `pid` (the socket's credentials).
    pub(crate) fn add_connection(&mut self, outbox: Outbox, pid: u32) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.outboxes.push(outbox.clone());
        self.conns.insert(
            id,
            Conn {
                outbox,
                role: None,
                pid,
                worker_id: WorkerId(0),
                kind: WorkerKind::Rust,
                program: ProgramId(0),
                actor: None,
                held: FxHashSet::default(),
                granted: FxHashSet::default(),
                store_pins: FxHashMap::default(),
                unsealed: FxHashSet::default(),
                assigned: VecDeque::new(),
                lease: ResourceSet::new(),
                lease_shape: ResourceSet::new(),
                blocked: false,
                paused: false,
                revoking: Vec::new(),
                functions_sent: FxHashSet::default(),
                doomed: false,
                idle_since: std::time::Instant::now(),
                used: false,
                remote: None,
                from_peer: false,
            },
        );
        id
    }

    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    pub(super) fn send(&self, conn: ConnId, msg: FromNode) {
        if let Some(c) = self.conns.get(&conn) {
            c.outbox.send(msg);
        }
    }

    /// Outboxes with messages waiting (sent when the lock is released).
    pub(crate) fn outboxes_to_flush(&mut self) -> Vec<Outbox> {
        let mut out = std::mem::take(&mut self.closed_links);
        out.extend(self.outboxes.iter().filter(|o| o.take_pending()).cloned());
        out
    }

    /// A connection leaves: a socket's writer ends once its queue is out; a
    /// local client learns it after its last message.
    pub(super) fn forget_outbox(&mut self, outbox: Outbox) {
        self.outboxes.retain(|o| !o.same(&outbox));
        match outbox {
            Outbox::Socket(out) => out.close(),
            Outbox::Local(link) => {
                link.close();
                self.closed_links.push(Outbox::Local(link));
            }
        }
    }

    /// Closes `conn` with a reason the peer can read.
    pub fn reject(&mut self, conn: ConnId, err: Error) {
        // A peer not yet accepted is logged by the server, once per peer.
        if let Some(c) = self.conns.get(&conn).filter(|c| c.role.is_some()) {
            tracing::warn!("closing connection {conn} (pid {}): {err}", c.pid);
        }
        self.send(conn, FromNode::Rejected(err));
        self.disconnect(conn, "rejected");
    }

    /// Accepts a connection, in this order:
    /// 1. the protocol version, so an old peer learns why it is refused;
    /// 2. the cluster token (constant-time), so nothing below is reachable
    ///    without it;
    /// 3. one hello per connection;
    /// 4. the claimed identity: a worker must be a process the spawner
    ///    started (its pid, from the socket, is one of `worker_pids`) and claim
    ///    the worker id the spawner gave it; a hello that beats the
    ///    spawner's registration of its pid waits for it (`awaiting_spawn`).
    ///    A driver's worker id must not be in use.
    pub(super) fn hello(&mut self, conn: ConnId, protocol: u32, worker_id: WorkerId, role: Role, token: &ClusterToken) {
        if protocol != PROTOCOL_VERSION {
            return self
                .reject(conn, Error::Protocol(format!("protocol version {protocol} is not {PROTOCOL_VERSION}")));
        }
        if !self.token.matches(token) {
            return self.reject(conn, Error::PermissionDenied("wrong cluster token".into()));
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let pid = c.pid;
        if c.role.is_some() || self.awaiting_spawn.values().any(|(w, _)| *w == conn) {
            return self.reject(conn, Error::Protocol("hello sent twice".into()));
        }
        match role {
            Role::Worker => match self.worker_pids.get(&pid) {
                Some((id, _, _)) if *id == worker_id => self.accept(conn, role, worker_id),
                Some(_) => self.reject(
                    conn,
                    Error::PermissionDenied(format!("process {pid} claims a worker id the node did not give it")),
                ),
                None if self.starting.total() + self.actor_spawns > 0 => match self.awaiting_spawn.entry(pid) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        self.reject(conn, Error::Protocol("two hellos from one process".into()))
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert((conn, worker_id));
                    }
                },
                None => self
                    .reject(conn, Error::PermissionDenied(format!("process {pid} is not a worker this node started"))),
            },
            Role::Peer => self.reject(
                conn,
                Error::PermissionDenied("a peer node is attached by its daemon, never over the socket".into()),
            ),
            Role::Driver => {
                if self.conns.values().any(|c| c.role.is_some() && c.worker_id == worker_id) {
                    return self.reject(conn, Error::PermissionDenied(format!("worker id {worker_id} is in use")));
                }
                self.accept(conn, role, worker_id)
            }
        }
    }

    pub(super) fn accept(&mut self, conn: ConnId, role: Role, worker_id: WorkerId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.role = Some(role);
        c.worker_id = worker_id;
        let pid = c.pid;
        let mut actor = None;
        if role == Role::Worker {
            let (pool, for_actor) =
                self.worker_pids.get(&pid).map_or((Pool::own(WorkerKind::Rust), None), |(_, p, a)| (*p, *a));
            c.kind = pool.kind;
            c.program = pool.program;
            c.actor = for_actor;
            self.starting_pids.remove(&pid);
            match for_actor {
                // An actor's process: not part of the pool.
                Some(a) => actor = Some(a),
                None => {
                    // Counted as starting since it was asked for.
                    self.starting[pool] = self.starting[pool].saturating_sub(1);
                    self.early_deaths[pool] = 0;
                    if !self.program_alive(pool.program) {
                        // Started just before its program's last driver
                        // left (`jobs` step 4).
                        return self.disconnect(conn, "its program ended");
                    }
                    self.idle[pool].push(conn);
                }
            }
        }
        self.send(conn, FromNode::Welcome(self.info.clone()));
        if let Some(a) = actor {
            self.actor_connected(a, conn);
        }
        self.schedule();
    }

    /// Whether `conn` may read `id` (or, with `take`, take a reference to
    /// it): it holds it, was shown it, or (to take one) made it.
    pub(super) fn may_see(&self, conn: ConnId, id: ObjectId, take: bool) -> bool {
        let Some(c) = self.conns.get(&conn) else { return false };
        c.held.contains(&id) || c.granted.contains(&id) || (take && id.task.submitter == c.worker_id)
    }

    /// Peer link `conn` takes a reference to `id`, which `holder`, another
    /// peer link of the same program, holds: it serves another node's
    /// read of a result kept here for `holder`'s owner (`left` step 15).
    /// False if `holder` does not hold it (any more).
    pub fn hold_as(&mut self, conn: ConnId, holder: ConnId, id: ObjectId) -> bool {
        let link_of = |c: ConnId| self.conns.get(&c).filter(|c| c.from_peer).map(|c| c.program);
        let allowed = conn != holder
            && link_of(conn).is_some_and(|p| link_of(holder) == Some(p))
            && self.conns.get(&holder).is_some_and(|h| h.held.contains(&id));
        if allowed {
            self.hold(conn, id);
        }
        allowed
    }

    /// Shows `ids` to `conn` (see [`Conn::granted`]).
    pub(super) fn grant(&mut self, conn: ConnId, ids: &[ObjectId]) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        for id in ids {
            if !c.held.contains(id) && c.granted.insert(*id) {
                if let Some(o) = self.objects.get_mut(id) {
                    o.granted_to.push(conn);
                }
            }
        }
    }

    /// A task may be cancelled by its submitter and by whoever holds one of
    /// its return objects.
    pub(super) fn may_cancel(&self, conn: ConnId, tid: TaskId) -> bool {
        let Some(c) = self.conns.get(&conn) else { return false };
        if tid.submitter == c.worker_id {
            return true;
        }
        let allowed = self.tasks.get(&tid).is_some_and(|t| t.spec.return_ids().any(|id| c.held.contains(&id)));
        if !allowed {
            tracing::warn!("connection {conn} (pid {}) may not cancel task {tid}", c.pid);
        }
        allowed
    }

    /// A `Put` or a task's returns: the ids must be the sender's own and new.
    pub(super) fn check_new_object(&self, conn: ConnId, id: ObjectId) -> Result<()> {
        let Some(c) = self.conns.get(&conn) else { return Ok(()) };
        if id.task.submitter != c.worker_id {
            return Err(Error::PermissionDenied(format!("object {id} belongs to another process")));
        }
        if self.objects.get(&id).is_some_and(|o| o.value.is_some()) {
            return Err(Error::Protocol(format!("object {id} already has a value")));
        }
        Ok(())
    }

    /// Forgets a connection: its references, pins and allocations go; a task
    /// it was running is retried or failed.
    pub fn disconnect(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if c.role.is_none() {
            self.awaiting_spawn.retain(|_, (w, _)| *w != conn);
        }
        self.idle.remove(conn);
        if c.from_peer {
            self.links_reaches_gone(conn);
        }
        if !self.locating.is_empty() {
            self.locating.retain(|_, waiting| {
                waiting.retain(|w| *w != conn);
                !waiting.is_empty()
            });
        }
        let outbox = c.outbox.clone();
        self.forget_outbox(c.outbox);
        for id in c.held {
            if let Some(o) = self.objects.get_mut(&id) {
                o.holders -= 1;
            }
            self.maybe_free(id);
        }
        for (id, n) in c.store_pins {
            for _ in 0..n {
                self.store.unpin(id);
            }
        }
        for offset in c.unsealed {
            self.store.abort(offset);
        }
        if c.role == Some(Role::Worker) {
            self.names.lock().remove(&c.pid);
        }
        // A stream this connection passed on is no longer its own.
        let owned: Vec<TaskId> =
            self.streams.iter().filter(|(_, s)| s.owner == conn && !s.in_transit).map(|(t, _)| *t).collect();
        for tid in owned {
            if let Some(st) = self.streams.get_mut(&tid) {
                st.dropped = true;
            }
            self.release_acks(tid);
            if !self.tasks.contains_key(&tid) {
                self.streams.remove(&tid);
            }
        }
        self.owner_gone(conn);
        if c.role == Some(Role::Driver) {
            self.driver_left(conn, c.worker_id, &outbox);
        }
        if let Some(r) = c.remote {
            return self.peer_gone(conn, *r, c.assigned, reason);
        }
        if let Some(actor) = c.actor {
            let status = format!("worker pid={} exited unexpectedly ({reason})", c.pid);
            self.actor_process_ended(actor, c.assigned, status);
            self.schedule();
            return;
        }
        let mut lease = c.lease;
        if c.blocked {
            // The CPU it lent out is already back in `available`.
            lease.set(resources::CPU, 0.0);
        }
        self.available.add(&lease);
        let running = c.assigned.front().copied();
        for tid in c.assigned {
            if running != Some(tid) {
                // Never started: back to the front of the queue, no retry spent.
                if let Some(task) = self.tasks.get_mut(&tid) {
                    task.worker = None;
                    if task.cancelled {
                        self.complete_task(tid, Err(Error::TaskCancelled));
                    } else {
                        self.requeue(tid);
                    }
                }
                continue;
            }
            if let Some(task) = self.tasks.get_mut(&tid) {
                task.worker = None;
                let name = task.spec.name().to_string();
                if task.cancelled {
                    self.complete_task(tid, Err(Error::TaskCancelled));
                } else if c.doomed {
                    // Killed for another task's force-cancel (which ended
                    // first): not this task's failure, no retry spent.
                    self.requeue(tid);
                    self.record(tid, TaskState::PendingSchedule, None, None);
                } else {
                    let err = Error::WorkerCrashed {
                        task: name.clone(),
                        detail: format!("worker pid={} exited unexpectedly ({reason})", c.pid),
                    };
                    // A retry does not wait for the exit status; the final
                    // error says how the worker died (`worker_exited`), or
                    // what is known after `CRASH_STATUS_WAIT`.
                    if !self.retry(tid, &err) {
                        match self.exits.remove(&c.pid) {
                            Some((status, _)) => self.complete_task(tid, Err(crash_error(name, c.pid, &status))),
                            None if self.worker_pids.contains_key(&c.pid) => {
                                let deadline = std::time::Instant::now() + CRASH_STATUS_WAIT;
                                self.crashed.entry(c.pid).or_insert((deadline, Vec::new())).1.push((tid, name));
                            }
                            None => self.complete_task(tid, Err(err)),
                        }
                    }
                }
            }
        }
        self.schedule();
    }

    /// The spawner started worker process `pid` of `pool` and gave it
    /// `worker_id`. A hello that came first is answered now.
    pub fn spawned(&mut self, pid: u32, worker_id: WorkerId, pool: Pool, actor: Option<ActorId>) {
        self.worker_pids.insert(pid, (worker_id, pool, actor));
        // What it prints before its first task is its program's drivers'.
        let label = WorkerLabel { name: "worker".into(), driver: None, task: None, program: pool.program };
        self.names.lock().insert(pid, label);
        if actor.is_some() {
            self.actor_spawns = self.actor_spawns.saturating_sub(1);
        }
        match self.awaiting_spawn.remove(&pid) {
            Some((conn, claimed)) if claimed == worker_id => self.accept(conn, Role::Worker, worker_id),
            Some((conn, _)) => self.reject(
                conn,
                Error::PermissionDenied(format!("process {pid} claims a worker id the node did not give it")),
            ),
            None => {
                self.starting_pids.insert(pid);
            }
        }
    }

    /// Worker process `pid` exited. If it never said hello it is no longer
    /// starting; after several such deaths in a row, nothing can run, so the
    /// waiting tasks fail instead of hanging.
    pub fn worker_exited(&mut self, pid: u32, status: String) {
        let (pool, actor) =
            self.worker_pids.remove(&pid).map_or((Pool::own(WorkerKind::Rust), None), |(_, p, a)| (p, a));
        self.names.lock().remove(&pid);
        match self.crashed.remove(&pid) {
            Some((_, failed)) => {
                for (tid, name) in failed {
                    self.complete_task(tid, Err(crash_error(name, pid, &status)));
                }
            }
            // Reaped before its connection's end was seen: `disconnect` reads it.
            None if self.conns.values().any(|c| c.pid == pid) => {
                self.exits.insert(pid, (status.clone(), std::time::Instant::now()));
            }
            None => {}
        }
        if let Some((conn, _)) = self.awaiting_spawn.remove(&pid) {
            self.disconnect(conn, "the process exited");
        }
        if !self.starting_pids.remove(&pid) {
            return;
        }
        if let Some(a) = actor {
            // An actor's process died before it connected.
            return self.actor_process_ended(a, VecDeque::new(), status);
        }
        self.starting[pool] = self.starting[pool].saturating_sub(1);
        self.early_deaths[pool] += 1;
        if self.early_deaths[pool] >= 3 {
            let error = format!("worker processes exit before connecting (last: pid {pid}, {status})");
            self.fail_pool_if_stuck(pool, error);
        } else {
            self.schedule();
        }
    }

    /// Completes the failures whose worker's exit status did not come in
    /// time (called by the spawner's 200 ms loop), and forgets statuses
    /// nobody asked for.
    pub fn expire_crashes(&mut self) {
        let now = std::time::Instant::now();
        self.exits.retain(|_, (_, at)| now.duration_since(*at) < CRASH_STATUS_WAIT);
        let late: Vec<u32> = self.crashed.iter().filter(|(_, (d, _))| *d <= now).map(|(p, _)| *p).collect();
        for pid in late {
            let Some((_, failed)) = self.crashed.remove(&pid) else { continue };
            for (tid, name) in failed {
                let detail = format!("worker pid={pid} exited unexpectedly (its exit status is not known)");
                self.complete_task(tid, Err(Error::WorkerCrashed { task: name, detail }));
            }
        }
    }

    /// A worker process could not be started.
    pub fn spawn_failed(&mut self, pool: Pool, actor: Option<ActorId>, error: String) {
        if let Some(a) = actor {
            self.actor_spawns = self.actor_spawns.saturating_sub(1);
            let cause = ActorDeathCause::CreationFailed(format!("its process could not start: {error}"));
            return self.actor_dead(a, Error::ActorDied { actor: a.to_string(), cause });
        }
        self.starting[pool] = self.starting[pool].saturating_sub(1);
        self.fail_pool_if_stuck(pool, error);
    }

    /// With no worker of `pool` alive or starting, nothing can run the
    /// tasks that wait for one: they fail instead of hanging.
    fn fail_pool_if_stuck(&mut self, pool: Pool, error: String) {
        let live = self.conns.values().any(|c| c.role == Some(Role::Worker) && c.pool() == pool);
        if live || self.starting[pool] > 0 {
            return;
        }
        // Tasks only another node could run wait for one (`remote`).
        let mut waiting = Vec::new();
        let total = &self.total;
        self.ready.retain_mut(|((p, shape), q)| {
            if *p == pool && shape.fits_in(total) {
                waiting.extend(q.drain(..));
            }
            !q.is_empty()
        });
        for t in waiting {
            let detail = format!("worker could not start: {error}");
            self.complete_task(t, Err(Error::WorkerCrashed { task: String::new(), detail }));
        }
    }

    /// Idle workers beyond the steady size exit once idle for `idle_timeout`
    /// (longest idle first): their connection is closed, and a worker exits
    /// when it reads the end of its socket. Called by the node's tick.
    pub fn exit_idle_workers(&mut self) {
        if self.shutting_down {
            return;
        }
        let now = std::time::Instant::now();
        let pools: Vec<Pool> = self.idle.iter().map(|(p, _)| *p).collect();
        for pool in pools {
            self.exit_idle_workers_of(pool, now);
        }
    }

    fn exit_idle_workers_of(&mut self, pool: Pool, now: std::time::Instant) {
        let mut workers =
            self.conns.values().filter(|c| c.role == Some(Role::Worker) && c.pool() == pool && !c.doomed).count();
        // `idle` is a stack: the front has been idle longest.
        let idle: Vec<ConnId> = self.idle[pool].clone();
        for w in idle {
            if workers <= self.steady_workers {
                break;
            }
            // Each exit may reschedule, and an actor may take a worker of
            // this list meanwhile (`adopt`): only one still idle exits.
            let expired = self.idle[pool].contains(&w)
                && self.conns.get(&w).is_some_and(|c| {
                    let timeout = if c.used { self.idle_timeout } else { self.unused_timeout };
                    now.duration_since(c.idle_since) >= timeout
                });
            if expired {
                self.disconnect(w, "idle");
                workers -= 1;
            }
        }
    }
}
