//! Actors: the actor table, placement, call order, death and restarts.
//!
//! An actor is a worker process of its own that keeps state; its creation
//! and its method calls are tasks of the task table with
//! `TaskSpec::actor` set, so argument resolution, pins, events, cancel and
//! results work as for any task. What differs is where they run and when:
//!
//! 1. `CreateActor` registers the actor and its name at once (a taken name
//!    is refused before anything else exists) and submits the creation
//!    task. Its return object is the actor's *handle object*: every handle
//!    anywhere is a ref to it, so the actor is in scope exactly while that
//!    object lives (a call pins it through its `contained`, so a handle
//!    used only for one call keeps the actor until the call is done). The
//!    actor also pins its constructor's arguments for its life, for
//!    restarts.
//! 2. When the creation task's arguments are ready, the actor is placed:
//!    it takes its resources for its whole life (waiting in `unplaced`
//!    while they are busy) and a process: an idle pool worker of its kind
//!    if there is one (`adopt`), else one of its own is asked for
//!    (`PoolCmd::Spawn` with the actor), outside the task pool's counts.
//!    Either way the pool starts a spare of that kind if it has none
//!    (`keep_spare`), so the next actor finds a process ready.
//! 3. That process (at its hello, or adopted at once) becomes the actor's
//!    worker: never idle, never given another task, never revoked, never
//!    back in the pool. The creation task goes to it.
//! 4. The creation task's end makes the actor alive (calls flow) or dead
//!    with `CreationFailed` (every waiting call fails with it).
//! 5. A call enters its caller's FIFO when submitted; the head of each FIFO
//!    is sent to the worker once its arguments are ready and the actor is
//!    alive, so one caller's calls start in submission order (the worker's
//!    executor starts them in the order they arrive). Calls submitted while
//!    the actor starts or restarts wait, and spend no retry.
//! 6. The process ends (crash, kill, terminate, out of scope, owner gone).
//!    With restarts left (and not `no_restart`), the actor restarts: the
//!    creation task runs again on a new process; calls that were sent and
//!    not done go back to the front of their FIFO if they have task retries
//!    left (else fail with `ActorDied`). Otherwise it is dead: every call
//!    waiting or sent fails with `ActorDied`, later calls fail at once, its
//!    resources, name and pins go.
//! 7. On a node of a cluster a name is the cluster's (`directory`): a named
//!    actor is created once the head gave it the name, and `get_actor` of a
//!    name another node's actor holds makes a *proxy* here (`reached`): an
//!    entry whose calls go, in each caller's order as above, to that node
//!    over the peer link, which runs them on the actor's own node; it has no
//!    process, resources or restarts of its own, and nothing here ends the
//!    actor (a kill is passed on); it goes with its last handle here.

use super::*;
use ferroray_common::{ActorDeathCause, ActorId, NodeId};
use ferroray_protocol::{ActorSpec, ActorTask};

/// Where an actor is in its life.
pub(super) enum Phase {
    /// Its creation task has not finished (first start or a restart).
    Starting,
    Alive,
    /// Gone for good: calls fail with this error.
    Dead(Error),
}

pub(super) struct Actor {
    /// The creation task's spec, run again by a restart.
    creation: TaskSpec,
    /// Its options (from `creation`).
    pub(super) opts: ActorSpec,
    pub(super) phase: Phase,
    /// Its process's connection, once that process said hello.
    pub(super) worker: Option<ConnId>,
    /// The connection that created it: its end ends a non-detached actor.
    owner: ConnId,
    /// Calls submitted and not sent, one FIFO per caller, each in
    /// submission order.
    queues: Vec<(WorkerId, VecDeque<TaskId>)>,
    /// Calls sent to its process and not done, in the order sent.
    sent: VecDeque<TaskId>,
    restarts_left: u32,
    /// The resources it took when placed, given back when it dies.
    held: Option<ResourceSet>,
    /// Placed on a peer node (`remote`): `worker` is that peer's
    /// connection, which holds these resources of the peer's for it.
    pub(super) on_peer: Option<ResourceSet>,
    /// Why its process is being ended (a kill or a terminate on its way),
    /// and whether it may restart after.
    pub(super) ending: Option<(ActorDeathCause, bool)>,
    /// End it once no call is waiting or running (terminate, out of scope).
    drain: Option<ActorDeathCause>,
    /// Objects it keeps alive while it lives: its constructor's arguments
    /// (for restarts) and, when detached, its handle object.
    pinned: Vec<ObjectId>,
    /// A proxy (step 7): the actor is this node's of the cluster, and
    /// `worker` is the peer connection to it while there is one.
    pub(super) reached: Option<NodeId>,
    /// The workers its process comes from: its class's kind, its creator's
    /// program (kept for restarts after the creator left).
    pool: Pool,
}

impl Actor {
    /// Step 7: the proxy of an actor that node `node` owns.
    pub(super) fn proxy(id: ActorId, opts: ActorSpec, node: NodeId) -> Actor {
        // It is never created or restarted here: a spec that says what it is.
        let creation = TaskSpec {
            task_id: id.0,
            function: FunctionDescriptor::Rust { name: opts.class.clone() },
            args: Vec::new(),
            contained: Vec::new(),
            returns: ReturnKind::Fixed(1),
            resources: ResourceSet::new(),
            max_retries: 0,
            retry_exceptions: ferroray_common::RetryExceptions::None,
            parent: None,
            enable_events: false,
            attempt: 0,
            actor: Some(ActorTask::Create(Box::new(opts.clone()))),
        };
        Actor { phase: Phase::Alive, reached: Some(node), ..Actor::new(creation, opts, ConnId::MAX, ProgramId(0)) }
    }

    /// Step 1: an actor of creation task `creation` made by `owner`, not
    /// started yet.
    fn new(creation: TaskSpec, opts: ActorSpec, owner: ConnId, program: ProgramId) -> Actor {
        Actor {
            pool: Pool { kind: creation.function.worker_kind(), program },
            creation,
            restarts_left: opts.max_restarts,
            opts,
            phase: Phase::Starting,
            worker: None,
            owner,
            queues: Vec::new(),
            sent: VecDeque::new(),
            held: None,
            on_peer: None,
            ending: None,
            drain: None,
            pinned: Vec::new(),
            reached: None,
        }
    }

    pub(super) fn class(&self) -> &str {
        &self.opts.class
    }

    pub(super) fn name(&self) -> Option<&str> {
        self.opts.name.as_deref()
    }

    fn calls_waiting(&self) -> bool {
        !self.sent.is_empty() || self.queues.iter().any(|(_, q)| !q.is_empty())
    }
}

fn died(actor: ActorId, cause: ActorDeathCause) -> Error {
    Error::ActorDied { actor: actor.to_string(), cause }
}

impl State {
    /// Step 1: registers the actor of creation task `spec` and submits that
    /// task, answering `ActorCreated` first.
    pub(super) fn create_actor(&mut self, conn: ConnId, req: u64, spec: TaskSpec) {
        let Some(ActorTask::Create(opts)) = spec.actor.clone() else {
            return self.reject(conn, Error::Protocol("CreateActor without an actor spec".into()));
        };
        let id = ActorId(spec.task_id);
        if self.actors.contains_key(&id) || self.tasks.contains_key(&spec.task_id) {
            return self.reject(conn, Error::Protocol(format!("actor {id} already exists")));
        }
        if let Some(name) = &opts.name {
            if self.actor_names.contains_key(name) {
                let e = Error::InvalidOption(format!("an actor named {name:?} already exists"));
                return self.send(conn, FromNode::ActorCreated { req, result: Err(e) });
            }
        }
        // Step 7: a name of the cluster's first.
        if !self.claim_name(conn, req, id, &spec) {
            self.create_actor_now(conn, req, spec);
        }
    }

    /// Step 1 once the name (if any) is the actor's.
    pub(super) fn create_actor_now(&mut self, conn: ConnId, req: u64, spec: TaskSpec) {
        let Some(ActorTask::Create(opts)) = spec.actor.clone() else { return };
        let id = ActorId(spec.task_id);
        self.send(conn, FromNode::ActorCreated { req, result: Ok(()) });
        if let Some(name) = &opts.name {
            self.actor_names.insert(name.clone(), id);
        }
        let program = self.conns.get(&conn).map_or(ProgramId(0), |c| c.program);
        let actor = Actor::new(spec.clone(), *opts, conn, program);
        // Kept for restarts: the constructor's arguments.
        let args: Vec<ObjectId> = spec
            .args
            .iter()
            .filter_map(|arg| match arg {
                TaskArg::Ref(r) => Some(*r),
                _ => None,
            })
            .chain(spec.contained.iter().copied())
            .collect();
        let detached = actor.opts.detached;
        self.actors.insert(id, actor);
        for p in args {
            if self.pin_alive(p) {
                self.actors.get_mut(&id).expect("just inserted").pinned.push(p);
            }
        }
        self.submit(conn, spec);
        let (dead, created) = match self.actors.get(&id) {
            Some(a) => (matches!(a.phase, Phase::Dead(_)), self.tasks.contains_key(&id.0)),
            None => return,
        };
        if !dead && !created {
            // Refused by `submit` (the connection is gone).
            self.actor_dead(id, Error::Disconnected("its creator is gone".into()));
        } else if !dead && detached && self.pin_alive(id.handle_object()) {
            // Detached: its handle object lives until the actor is dead.
            self.actors.get_mut(&id).expect("checked").pinned.push(id.handle_object());
        }
    }

    /// The answer to `GetActor`: the live actor of that name, which `conn`
    /// may then take a handle to.
    pub(super) fn get_actor(&mut self, conn: ConnId, req: u64, name: &str) {
        let found = self.actor_names.get(name).and_then(|id| {
            let a = self.actors.get(id)?;
            let live = !matches!(a.phase, Phase::Dead(_)) && self.objects.contains_key(&id.handle_object());
            live.then(|| (*id, a.opts.class.clone(), a.opts.front.clone()))
        });
        let result = match found {
            Some((id, class, front)) => {
                self.grant(conn, &[id.handle_object()]);
                Ok((id, class, front))
            }
            // Step 7: perhaps another node's.
            None if self.find_actor(conn, req, name) => return,
            None => Err(Error::InvalidOption(format!("no live actor is named {name:?}"))),
        };
        self.send(conn, FromNode::ActorFound { req, result });
    }

    /// A task of the task table became ready (its arguments are): an actor
    /// task goes its own way. True if `tid` was one.
    pub(super) fn actor_task_ready(&mut self, tid: TaskId) -> bool {
        match self.tasks.get(&tid).and_then(|t| t.spec.actor.as_ref()) {
            None => false,
            Some(ActorTask::Create(_)) => {
                self.place_actor(ActorId(tid));
                true
            }
            Some(ActorTask::Call { actor }) => {
                let actor = *actor;
                self.dispatch_calls(actor);
                true
            }
        }
    }

    /// A call was submitted: it joins its caller's FIFO (or fails at once
    /// if the actor is dead or unknown).
    pub(super) fn actor_call_submitted(&mut self, tid: TaskId, actor: ActorId) {
        let error = match self.actors.get_mut(&actor) {
            None => Some(Error::ActorDied { actor: actor.to_string(), cause: ActorDeathCause::OutOfScope }),
            Some(a) => match &a.phase {
                Phase::Dead(e) => Some(e.clone()),
                _ if a.drain.is_some() || a.ending.as_ref().is_some_and(|(_, restart)| !restart) => {
                    let cause = a.drain.clone().or(a.ending.as_ref().map(|(c, _)| c.clone()));
                    Some(died(actor, cause.unwrap_or(ActorDeathCause::Exited)))
                }
                _ => {
                    let caller = tid.submitter;
                    match a.queues.iter_mut().find(|(c, _)| *c == caller) {
                        Some((_, q)) => q.push_back(tid),
                        None => a.queues.push((caller, VecDeque::from([tid]))),
                    }
                    if let Some(task) = self.tasks.get_mut(&tid) {
                        task.retries_left = a.opts.max_task_retries;
                    }
                    None
                }
            },
        };
        if let Some(e) = error {
            self.complete_task(tid, Err(e));
        }
    }

    /// Step 2: takes the actor's resources and asks for its process, or
    /// waits in `unplaced` until the resources are free.
    fn place_actor(&mut self, id: ActorId) {
        let Some(a) = self.actors.get(&id) else { return };
        if a.held.is_some() || a.worker.is_some() || matches!(a.phase, Phase::Dead(_)) {
            return;
        }
        let want = a.creation.resources.clone();
        if !want.fits_in(&self.available) {
            // No room here: a peer with room takes it (`remote` step 6).
            let here = super::remote::stays_here(&a.creation, &self.streams)
                || self.tasks.get(&id.0).is_some_and(|t| t.from_peer);
            let rooms = self.peer_rooms();
            let program = a.pool.program;
            let peer = (!here).then(|| rooms.pick(&want, program, &self.conns)).flatten();
            if let Some(peer) = peer {
                self.unplaced.retain(|u| *u != id);
                return self.place_actor_on_peer(id, peer, want);
            }
            if !self.unplaced.contains(&id) {
                self.unplaced.push_back(id);
            }
            if !want.fits_in(&self.total) && !self.peer_could_run(&want) {
                self.warn_waiting(id.0);
            }
            return;
        }
        self.unplaced.retain(|u| *u != id);
        self.available.subtract(&want);
        let pool = a.pool;
        if let Some(a) = self.actors.get_mut(&id) {
            a.held = Some(want);
        }
        // An idle pool worker of its kind, started and connected already,
        // becomes its process (it never goes back to the pool); a spare
        // then starts in its place.
        if let Some(w) = self.idle[pool].pop() {
            self.adopt(w, id);
            return self.keep_spare(pool);
        }
        if self.spawn.send(PoolCmd::Spawn { pool, actor: Some(id) }).is_err() {
            self.actor_dead(id, Error::Disconnected("the node is shutting down".into()));
        } else {
            self.actor_spawns += 1;
            self.keep_spare(pool);
        }
    }

    /// Step 3 for an idle pool worker `w` taken by actor `id`: from here on
    /// it is the actor's process as if started for it. All in one lock hold:
    /// nobody sees it both idle and the actor's.
    fn adopt(&mut self, w: ConnId, id: ActorId) {
        let Some(c) = self.conns.get_mut(&w) else { return };
        c.actor = Some(id);
        if let Some(record) = self.worker_pids.get_mut(&c.pid) {
            record.2 = Some(id);
        }
        self.actor_connected(id, w);
    }

    /// Places the actors waiting for resources, in order (called by `schedule`).
    pub(super) fn place_unplaced(&mut self) {
        if self.unplaced.is_empty() {
            return;
        }
        for id in self.unplaced.clone() {
            self.place_actor(id);
        }
    }

    /// Step 3: the actor's process said hello on `conn`.
    pub(super) fn actor_connected(&mut self, id: ActorId, conn: ConnId) {
        let Some(a) = self.actors.get_mut(&id) else {
            return self.disconnect(conn, "its actor is gone");
        };
        if a.worker.is_some() || matches!(a.phase, Phase::Dead(_)) {
            return self.disconnect(conn, "its actor is gone");
        }
        a.worker = Some(conn);
        let class = a.opts.class.rsplit("::").next().unwrap_or(&a.opts.class).to_string();
        if let Some((pid, program)) = self.conns.get(&conn).map(|c| (c.pid, c.program)) {
            let label = self.label(&class, id.0, program);
            self.names.lock().insert(pid, label);
        }
        if self.tasks.contains_key(&id.0) {
            self.assign(id.0, conn, false);
        }
    }

    /// Step 4: the creation task ended (called by `complete_task`).
    pub(super) fn actor_creation_done(&mut self, id: ActorId, result: &Result<Vec<Option<Stored>>>) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        match result {
            Ok(_) => {
                a.phase = Phase::Alive;
                self.dispatch_calls(id);
                self.drain_if_done(id);
            }
            Err(e) => {
                let e = match e {
                    Error::Infeasible(_) | Error::ActorDied { .. } => e.clone(),
                    other => died(id, ActorDeathCause::CreationFailed(other.to_string())),
                };
                self.actor_dead(id, e);
            }
        }
    }

    /// Step 5: sends the head of each caller's FIFO while it is ready.
    pub(super) fn dispatch_calls(&mut self, id: ActorId) {
        if let Some(node) = self.actors.get(&id).and_then(|a| a.reached) {
            // Step 7: the link to its node now (links are made again).
            let linked = self.actors[&id]
                .worker
                .is_some_and(|w| self.conns.get(&w).and_then(|c| c.remote.as_ref()).is_some_and(|r| r.node == node));
            if !linked {
                let conn = self.peer_conn(node);
                let Some(a) = self.actors.get_mut(&id) else { return };
                a.worker = conn;
                if conn.is_none() {
                    // No link to its node yet (it joined after this node's
                    // last view) or for the moment (a link being made
                    // again): the calls wait for one (`directory` step 6).
                    self.directory.unlinked.entry(id).or_insert_with(std::time::Instant::now);
                    return;
                }
                self.directory.unlinked.remove(&id);
            }
        }
        let Some(a) = self.actors.get_mut(&id) else { return };
        let Some(worker) = a.worker else { return };
        if !matches!(a.phase, Phase::Alive) {
            return;
        }
        let mut to_send = Vec::new();
        for (_, q) in a.queues.iter_mut() {
            while let Some(tid) = q.front().copied() {
                match self.tasks.get(&tid) {
                    None => {
                        q.pop_front();
                    }
                    Some(t) if t.pending_deps == 0 => {
                        q.pop_front();
                        to_send.push(tid);
                    }
                    Some(_) => break,
                }
            }
        }
        a.queues.retain(|(_, q)| !q.is_empty());
        a.sent.extend(to_send.iter().copied());
        for tid in to_send {
            self.assign(tid, worker, false);
        }
    }

    /// Fails the calls of actor `id` that were submitted and not sent.
    pub(super) fn fail_waiting_calls(&mut self, id: ActorId, e: Error) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        let waiting: Vec<TaskId> = a.queues.drain(..).flat_map(|(_, q)| q).collect();
        for tid in waiting {
            self.complete_task(tid, Err(e.clone()));
        }
    }

    /// A call (not the creation) finished for good: the actor may now be
    /// drained.
    pub(super) fn actor_call_done(&mut self, actor: ActorId, tid: TaskId) {
        let Some(a) = self.actors.get_mut(&actor) else { return };
        // Calls mostly end in the order sent: the front, without a scan.
        if a.sent.front() == Some(&tid) {
            a.sent.pop_front();
        } else {
            a.sent.retain(|t| *t != tid);
        }
        for (_, q) in a.queues.iter_mut() {
            q.retain(|t| *t != tid);
        }
        self.drain_if_done(actor);
    }

    fn drain_if_done(&mut self, id: ActorId) {
        let Some(a) = self.actors.get(&id) else { return };
        let Some(cause) = a.drain.clone() else { return };
        if a.calls_waiting() || self.tasks.contains_key(&id.0) {
            return;
        }
        match a.worker {
            Some(w) => {
                let remote = a.on_peer.is_some();
                if let Some(a) = self.actors.get_mut(&id) {
                    a.ending = Some((cause, false));
                }
                if remote {
                    self.end_on_peer(id, w, "the actor ended");
                } else {
                    // The process exits when it reads the end of its socket.
                    self.disconnect(w, "the actor ended");
                }
            }
            None => self.actor_dead(id, died(id, cause)),
        }
    }

    /// The handle object was freed: no handle is left anywhere and no call
    /// is waiting (calls pin it). The actor ends.
    pub(super) fn actor_out_of_scope(&mut self, id: ActorId) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        if matches!(a.phase, Phase::Dead(_)) || a.reached.is_some() {
            // Nobody can call it any more; a proxy's lenders let go
            // (`directory` step 5).
            if a.reached.is_some() {
                self.proxy_released(id);
            }
            return self.forget_actor(id);
        }
        if a.opts.detached {
            return;
        }
        a.drain.get_or_insert(ActorDeathCause::OutOfScope);
        self.drain_if_done(id);
    }

    /// `KillActor`: ends the process now (interrupting running calls).
    pub(super) fn kill_actor(&mut self, id: ActorId, no_restart: bool) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        if matches!(a.phase, Phase::Dead(_)) {
            return;
        }
        if let Some(node) = a.reached {
            // Step 7: its node ends it.
            let conn = a.worker.filter(|w| self.conns.contains_key(w)).or_else(|| self.peer_conn(node));
            if let Some(w) = conn {
                self.send(w, FromNode::KillActor { actor: id, no_restart });
            }
            return;
        }
        a.ending = Some((ActorDeathCause::Killed, !no_restart));
        match a.worker {
            Some(w) if a.on_peer.is_some() => self.end_on_peer(id, w, "killed"),
            Some(w) => self.doom(w),
            // Not started yet (waiting for resources or its process): it
            // dies here, and a process started for it is turned away.
            None => {
                if no_restart {
                    self.actor_dead(id, died(id, ActorDeathCause::Killed));
                }
            }
        }
    }

    /// `TerminateActor` from the actor's own process (`exit_actor`): it ends
    /// now, after the call that asked (whose result came first, on the same
    /// connection); calls waiting for it fail, and it does not restart.
    pub(super) fn exit_actor(&mut self, id: ActorId) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        a.ending = Some((ActorDeathCause::Exited, false));
        if let Some(w) = a.worker {
            self.disconnect(w, "the actor exited");
        }
    }

    /// `TerminateActor`: ends it once the calls already sent are done.
    pub(super) fn terminate_actor(&mut self, id: ActorId) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        if matches!(a.phase, Phase::Dead(_)) || a.reached.is_some() {
            return;
        }
        a.drain.get_or_insert(ActorDeathCause::Exited);
        self.drain_if_done(id);
    }

    /// Step 6: the actor's process ended (its connection closed): `assigned`
    /// are the tasks that were sent to it.
    pub(super) fn actor_process_ended(&mut self, id: ActorId, assigned: VecDeque<TaskId>, status: String) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        a.worker = None;
        let (cause, may_restart) = match a.ending.take() {
            Some((cause, may_restart)) => (cause, may_restart),
            None => (ActorDeathCause::Crashed(status), true),
        };
        let restart = may_restart && a.restarts_left > 0 && a.drain.is_none();
        if restart && a.restarts_left != u32::MAX {
            a.restarts_left -= 1;
        }
        let sent = std::mem::take(&mut a.sent);
        if !restart {
            let e = died(id, cause);
            for tid in assigned {
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.worker = None;
                }
                self.complete_task(tid, Err(e.clone()));
            }
            return self.actor_dead(id, e);
        }
        // Calls sent and not done: back to the front of their FIFO, in the
        // order sent, each spending a task retry (or failing without one).
        let mut back: Vec<TaskId> = Vec::new();
        for tid in sent.iter().rev().copied() {
            let Some(t) = self.tasks.get_mut(&tid) else { continue };
            t.worker = None;
            if t.cancelled {
                self.complete_task(tid, Err(Error::TaskCancelled));
            } else if t.retries_left == 0 {
                self.complete_task(tid, Err(died(id, cause.clone())));
            } else {
                if t.retries_left != u32::MAX {
                    t.retries_left -= 1;
                }
                t.spec.attempt += 1;
                t.attempt_items = 0;
                back.push(tid);
            }
        }
        if let Some(a) = self.actors.get_mut(&id) {
            for tid in back {
                let caller = tid.submitter;
                match a.queues.iter_mut().find(|(c, _)| *c == caller) {
                    Some((_, q)) => q.push_front(tid),
                    None => a.queues.push((caller, VecDeque::from([tid]))),
                }
            }
            a.phase = Phase::Starting;
        }
        // The creation task again: a task of its own, its arguments pinned
        // by the actor all along.
        let mut spec = self.actors[&id].creation.clone();
        spec.attempt = self.tasks.get(&id.0).map_or(1, |t| t.spec.attempt + 1);
        if let Some(t) = self.tasks.get_mut(&id.0) {
            // It died while creating: the same task goes again.
            t.worker = None;
            t.spec.attempt += 1;
        } else {
            for arg in &spec.args {
                if let TaskArg::Ref(r) = arg {
                    self.pin_alive(*r);
                }
            }
            for c in &spec.contained {
                self.pin_alive(*c);
            }
            self.tasks.insert(id.0, Task::new(spec, 0, 0));
        }
        if let Some(a) = self.actors.get_mut(&id) {
            // Its resources go back; placing it again takes them (it may
            // wait for them, like a new actor).
            let held = a.held.take();
            if let Some(h) = held {
                self.available.add(&h);
            }
        }
        self.record(id.0, TaskState::Retrying, None, Some("the actor restarts".into()));
        self.place_actor(id);
    }

    /// The actor is gone for good: waiting calls fail with `e`, its
    /// resources, name and pins go. Its record stays (calls made later fail
    /// at once) until the handle object is freed.
    pub(super) fn actor_dead(&mut self, id: ActorId, e: Error) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        if matches!(a.phase, Phase::Dead(_)) {
            return;
        }
        a.phase = Phase::Dead(e.clone());
        a.drain = None;
        let waiting: Vec<TaskId> = a.queues.drain(..).flat_map(|(_, q)| q).chain(std::mem::take(&mut a.sent)).collect();
        let held = a.held.take();
        let name = a.opts.name.clone();
        // A proxy's `worker` is the peer link: it stays.
        let worker = if a.reached.is_some() { None } else { a.worker.take() };
        let on_peer = a.on_peer.take();
        let pins = std::mem::take(&mut a.pinned);
        let release = (a.reached.is_none() && name.is_some()).then(|| a.opts.clone());
        self.unplaced.retain(|u| *u != id);
        if let Some(h) = held {
            self.available.add(&h);
        }
        if let Some(n) = name {
            if self.actor_names.get(&n) == Some(&id) {
                self.actor_names.remove(&n);
            }
        }
        if let Some(opts) = release {
            self.release_name(id, &opts);
        }
        for tid in waiting {
            self.complete_task(tid, Err(e.clone()));
        }
        if self.tasks.contains_key(&id.0) {
            self.complete_task(id.0, Err(e.clone()));
        }
        match (worker, on_peer) {
            (Some(w), Some(hold)) => {
                self.send(w, FromNode::KillActor { actor: id, no_restart: true });
                self.peer_hold_released(w, &hold);
            }
            (Some(w), None) => self.disconnect(w, "the actor is dead"),
            (None, _) => {}
        }
        for p in pins {
            self.unpin_alive(p);
        }
        if !self.objects.contains_key(&id.handle_object()) {
            self.forget_actor(id);
        }
        self.schedule();
    }

    /// Drops the record of an actor nobody can call any more.
    pub(super) fn forget_actor(&mut self, id: ActorId) {
        self.directory.unlinked.remove(&id);
        if let Some(a) = self.actors.remove(&id) {
            if let Some(n) = a.opts.name {
                if self.actor_names.get(&n) == Some(&id) {
                    self.actor_names.remove(&n);
                }
            }
            self.unplaced.retain(|u| *u != id);
        }
    }

    /// Whether `id` is a detached actor (it outlives its creator's job).
    pub(super) fn is_detached(&self, id: ActorId) -> bool {
        self.actors.get(&id).is_some_and(|a| a.opts.detached)
    }

    /// Connection `conn` ended: the non-detached actors it created end too
    /// (their job, or their owner process, is gone).
    pub(super) fn owner_gone(&mut self, conn: ConnId) {
        let owned: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, a)| a.owner == conn && !a.opts.detached && !matches!(a.phase, Phase::Dead(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in owned {
            match self.actors.get(&id).and_then(|a| a.worker) {
                Some(w) => {
                    let remote = self.actors.get(&id).is_some_and(|a| a.on_peer.is_some());
                    if let Some(a) = self.actors.get_mut(&id) {
                        a.ending = Some((ActorDeathCause::JobEnded, false));
                    }
                    if remote {
                        self.end_on_peer(id, w, "its job ended");
                    } else {
                        self.doom(w);
                    }
                }
                None => self.actor_dead(id, died(id, ActorDeathCause::JobEnded)),
            }
        }
    }
}
