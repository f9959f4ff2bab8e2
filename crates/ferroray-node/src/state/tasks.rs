//! The task lifecycle: submission, completion, retries, cancellation.

use super::*;

impl State {
    /// Checks a task `spec` to run in workers of `pool` (an actor's call
    /// runs in its actor's process, whatever program calls it).
    pub(super) fn validate(&self, spec: &TaskSpec, pool: Pool) -> Result<()> {
        if let ReturnKind::Streaming { backpressure: Some(0) } = spec.returns {
            return Err(Error::InvalidOption("generator backpressure must not be 0".into()));
        }
        let call = matches!(spec.actor, Some(ferroray_protocol::ActorTask::Call { .. }));
        if !call && !self.pools.contains(&pool) {
            let kind = pool.kind;
            return Err(Error::Infeasible(format!(
                "task {} needs a {kind:?} worker, and this node starts none for its program (no command for \
                 that kind)",
                spec.name()
            )));
        }
        // In a cluster, another node may run it (`remote` steps 1 and 6).
        let elsewhere = self.peers_enabled;
        if let Some((name, want, have)) = spec.resources.first_missing(&self.total).filter(|_| !elsewhere) {
            return Err(Error::Infeasible(format!(
                "task {} needs {want} {name} but this node has {have} in total",
                spec.name()
            )));
        }
        if let FunctionDescriptor::Python { function: Some(f), .. } = &spec.function {
            if !self.functions.contains_key(f) {
                return Err(Error::UnknownFunction(format!(
                    "{} (function {f} was not exported, or the node's table of {MAX_FUNCTION_TABLE} bytes was full)",
                    spec.name()
                )));
            }
        }
        Ok(())
    }

    /// Keeps an exported function: its exporter must be the sender (ids
    /// are the exporter's); exporting one id again with other bytes is a
    /// protocol error. Over the table's bound it is not kept (calls of it
    /// then fail with `UnknownFunction`).
    pub(super) fn export_function(&mut self, conn: ConnId, function: FunctionId, pickled: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else { return };
        if function.exporter != c.worker_id {
            return self
                .reject(conn, Error::PermissionDenied(format!("function {function} belongs to another process")));
        }
        match self.functions.get(&function) {
            Some(known) if **known == pickled => {}
            Some(_) => {
                self.reject(conn, Error::Protocol(format!("function {function} was exported twice with other bytes")))
            }
            None if self.function_bytes + pickled.len() > MAX_FUNCTION_TABLE => {}
            None => {
                self.function_bytes += pickled.len();
                let pickled = Arc::new(pickled);
                self.functions.insert(function, pickled.clone());
                // The function table, step 1.
                if let Some(hook) = self.directory.hook.clone().filter(|_| self.is_reported(conn)) {
                    hook.export_function(function, function.exporter, pickled);
                }
            }
        }
    }

    // The cluster's function table (`ferroray-cluster`'s `control::FunctionTable`):
    // a driver's function goes to the head once, not with its first call on
    // every link between nodes.
    // 1. A driver connected over the socket (a job the head knows) exports a
    //    function: the node keeps it and gives it to the directory.
    // 2. Once the head has it (`function_published`), a call of it goes to a
    //    peer without its bytes. Until then (or if the head refused it: too
    //    large, table full) the bytes go with the first call on each link,
    //    so nothing waits for the head.
    // 3. The executing node's link, meeting a call of a function it lacks
    //    with no bytes, fetches it from the head and keeps it under its own
    //    id (`import_function`), before it submits the call.
    // 4. When the driver leaves, its functions are no longer taken as
    //    published: the head drops them a while after its job ended, and
    //    what still calls them (a detached actor restarted on a peer) sends
    //    their bytes again.
    // 5. While the daemon has no head (it died, or the link broke), calls
    //    of published functions go with their bytes again: the executing
    //    node could not fetch them. Once the head is back, they go without.
    // Functions a worker exports (defined inside a task) are not published:
    // their bytes go once per link.

    /// Step 2.
    pub fn function_published(&mut self, function: FunctionId) {
        if self.reported_driver(function.exporter) && self.functions.contains_key(&function) {
            self.published.insert(function);
        }
    }

    /// Step 5.
    pub fn set_head_away(&mut self, away: bool) {
        self.head_away = away;
    }

    pub fn has_function(&self, function: FunctionId) -> bool {
        self.functions.contains_key(&function)
    }

    /// Step 3.
    pub fn import_function(&mut self, function: FunctionId, pickled: Vec<u8>) -> bool {
        if self.functions.contains_key(&function) {
            return true;
        }
        if self.function_bytes + pickled.len() > MAX_FUNCTION_TABLE {
            return false;
        }
        self.function_bytes += pickled.len();
        self.functions.insert(function, Arc::new(pickled));
        true
    }

    pub(super) fn submit(&mut self, conn: ConnId, spec: TaskSpec) {
        let id = spec.task_id;
        if self.tasks.contains_key(&id) {
            return self.reject(conn, Error::Protocol(format!("task {id} is already submitted")));
        }
        for rid in spec.return_ids() {
            if let Err(e) = self.check_new_object(conn, rid) {
                return self.reject(conn, e);
            }
        }
        for rid in spec.return_ids() {
            self.objects.entry(rid).or_default();
            self.hold(conn, rid);
        }
        if let Some(parent) = spec.parent {
            self.children.entry(parent).or_default().push(id);
        }
        for arg in &spec.args {
            if let TaskArg::Ref(oid) = arg {
                self.pin_alive(*oid);
            }
        }
        for c in &spec.contained {
            self.pin_alive(*c);
        }
        // Its workers: its function's kind, of its submitter's program.
        let program = self.conns.get(&conn).map_or(ProgramId(0), |c| c.program);
        let pool = Pool { kind: spec.function.worker_kind(), program };
        let from_peer = self.conns.get(&conn).is_some_and(|c| c.from_peer);
        let mut failed = None;
        // A task may name only objects its submitter may read (held or
        // shown to it): its worker is shown them in turn. A call's own
        // actor's handle is the exception: a call goes by the actor's rules
        // (one found by name, or a proxy's, is not shown to its caller).
        let named = spec.args.iter().filter_map(|a| match a {
            TaskArg::Ref(oid) => Some(oid),
            _ => None,
        });
        let own = match &spec.actor {
            Some(ferroray_protocol::ActorTask::Call { actor }) => Some(actor.handle_object()),
            _ => None,
        };
        let unseen = named.chain(spec.contained.iter()).find(|o| own != Some(**o) && !self.may_see(conn, **o, false));
        if let Some(unseen) = unseen {
            failed = Some(Error::PermissionDenied(format!("object {unseen} was not given to this process")));
        }
        // Nothing is pulled for a task that may not read its arguments.
        let waits = match failed {
            None => Some(self.wait_for_args(id, &spec, pool, !from_peer)),
            Some(_) => None,
        };
        let pending = waits.as_ref().map_or(0, |w| w.pending);
        failed = failed.or(waits.as_ref().and_then(|w| w.failed.clone()));
        let retries_left = spec.max_retries;
        let invalid = self.validate(&spec, pool).err();
        if let ReturnKind::Streaming { backpressure } = spec.returns {
            self.streams.insert(
                id,
                Stream {
                    owner: conn,
                    backpressure,
                    digests: Vec::new(),
                    consumed: 0,
                    held_acks: VecDeque::new(),
                    dropped: false,
                    in_transit: false,
                    end: None,
                },
            );
        }
        let mut task = Task::new(spec, pending, retries_left);
        task.from_peer = from_peer;
        task.pool = pool;
        if let Some(w) = waits {
            task.left_args = w.left_args;
            task.at_peer = w.at_peer;
        }
        self.tasks.insert(id, task);
        self.record(id, TaskState::Submitted, None, None);
        if let Some(e) = invalid.or(failed) {
            self.complete_task(id, Err(e));
            return;
        }
        if let Some(ferroray_protocol::ActorTask::Call { actor }) = self.tasks[&id].spec.actor {
            self.actor_call_submitted(id, actor);
            if !self.tasks.contains_key(&id) {
                return;
            }
        }
        if pending == 0 {
            self.record(id, TaskState::PendingSchedule, None, None);
            self.enqueue(id);
            self.schedule();
        }
    }

    pub(super) fn task_done(&mut self, conn: ConnId, tid: TaskId, attempt: u32, outcome: TaskOutcome) {
        let current = self.tasks.get(&tid).is_some_and(|t| t.worker == Some(conn) && t.spec.attempt == attempt);
        if !current {
            // A stale attempt: drop whatever it stored.
            return self.discard_outcome(conn, tid, outcome);
        }
        let mut lost_lent = false;
        if let TaskOutcome::Failed(e) = &outcome {
            if self.peer_actor_died(conn, tid, e) {
                return;
            }
            lost_lent = self.lost_lent(tid, e);
        }
        self.release_worker(tid);
        let task = &self.tasks[&tid];
        if task.cancelled {
            self.discard_outcome(conn, tid, outcome);
            self.complete_task(tid, Err(Error::TaskCancelled));
        } else {
            match outcome {
                TaskOutcome::Returned(values) => {
                    let ids: Vec<ObjectId> = task.spec.return_ids().collect();
                    if values.len() != ids.len() {
                        let e = Error::Protocol(format!(
                            "task {} returned {} values for {} return objects",
                            task.spec.name(),
                            values.len(),
                            ids.len()
                        ));
                        self.discard_outcome(conn, tid, TaskOutcome::Returned(values));
                        self.complete_task(tid, Err(e));
                    } else {
                        let stored = ids
                            .iter()
                            .zip(values)
                            .map(|(id, v)| match v {
                                // Kept where it ran (`left` step 8).
                                ObjectValue::Data { payload, contained, encoding }
                                    if payload.is_left_on_peer()
                                        && contained.is_empty()
                                        && self.leave(conn, *id, payload.len(), encoding) =>
                                {
                                    None
                                }
                                // A new attempt's result for an object
                                // that has its value (`left` step 12).
                                v if self.objects.get(id).is_some_and(|o| o.value.is_some()) => {
                                    if let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = v {
                                        self.handle(conn, ToNode::Deallocate { offset });
                                    }
                                    None
                                }
                                v => self.accept_value(conn, *id, v),
                            })
                            .collect::<Vec<_>>();
                        self.complete_task(tid, Ok(stored));
                    }
                }
                // Made again for lost items only (`left` step 12): it may
                // stop after the last of them.
                TaskOutcome::Streamed { items } if task.remaking.is_some() => {
                    let mut replay = self.tasks.get_mut(&tid).and_then(|t| t.replay_error.take());
                    // It must reach every item it was made again for.
                    let short = self
                        .lost
                        .get(&tid)
                        .into_iter()
                        .flatten()
                        .find(|(id, _)| id.index >= 2 && id.index - 2 >= items && self.unmade(*id));
                    if let (None, Some((id, _))) = (&replay, short) {
                        let name = self.tasks[&tid].spec.name().to_string();
                        replay = Some(Error::ReplayMismatch(format!(
                            "{name}, run again for its lost item {}, yielded {items} items",
                            id.index - 2
                        )));
                    }
                    self.complete_task(tid, replay.map_or(Ok(vec![None]), Err));
                }
                TaskOutcome::Streamed { items } => {
                    let generated = self.reported(tid).unwrap_or(items);
                    let replay = self.tasks.get_mut(&tid).and_then(|t| t.replay_error.take());
                    if let Some(e) = replay {
                        self.complete_task(tid, Err(e));
                    } else if items < generated {
                        let name = self.tasks[&tid].spec.name().to_string();
                        self.complete_task(
                            tid,
                            Err(Error::ReplayMismatch(format!(
                                "a retry of {name} yielded {items} items, but {generated} were already reported"
                            ))),
                        );
                    } else {
                        // A streaming generator's own object holds `()` once it
                        // ends well (a dynamic one's list is made by `complete_task`).
                        let unit =
                            Stored::Inline { bytes: Vec::new(), encoding: Encoding::Unit, contained: Vec::new() };
                        self.complete_task(tid, Ok(vec![Some(unit)]));
                    }
                }
                TaskOutcome::Failed(e) => {
                    let (name, failed_at) = (task.spec.name().to_string(), task.attempt_items);
                    let replay = self.tasks.get_mut(&tid).and_then(|t| t.replay_error.take());
                    if let Some(r) = replay {
                        self.complete_task(tid, Err(r));
                    } else if lost_lent {
                        // Its peer could not read an argument where it
                        // was left (`left` step 16).
                        self.read_here_instead(tid, &e);
                    } else if !self.retry(tid, &e) {
                        // An attempt that fails at item k when an earlier one got
                        // further disagrees with what the owner already has.
                        let e = match self.reported(tid) {
                            Some(known) if failed_at < known => Error::ReplayMismatch(format!(
                                "a retry of {name} failed after {failed_at} items, but {known} were already reported: {e}"
                            )),
                            _ => e,
                        };
                        self.complete_task(tid, Err(e));
                    }
                }
            }
        }
        self.schedule();
    }

    /// Drops what an outcome of task `tid` stored: its allocations here,
    /// its results left on a peer (`left` step 10).
    pub(super) fn discard_outcome(&mut self, conn: ConnId, tid: TaskId, outcome: TaskOutcome) {
        let TaskOutcome::Returned(values) = outcome else { return };
        let mut forget = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            match v {
                ObjectValue::Data { payload, .. } if payload.is_left_on_peer() => {
                    forget.push(ObjectId::for_return(tid, i as u32));
                }
                ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } => {
                    self.handle(conn, ToNode::Deallocate { offset });
                }
                _ => {}
            }
        }
        if !forget.is_empty() && self.conns.get(&conn).is_some_and(|c| c.remote.is_some()) {
            self.send(conn, FromNode::Forget(forget));
        }
    }

    /// Queues another attempt if the policy allows; true if it did.
    pub(super) fn retry(&mut self, tid: TaskId, err: &Error) -> bool {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return false;
        };
        if task.cancelled || task.retries_left == 0 || !err.is_retryable(&task.spec.retry_exceptions) {
            return false;
        }
        if task.retries_left != u32::MAX {
            task.retries_left -= 1;
        }
        task.spec.attempt += 1;
        task.attempt_items = 0;
        self.record(tid, TaskState::Retrying, None, Some(err.to_string()));
        self.enqueue(tid);
        true
    }

    /// Ends a task for good: stores its return values (or its error in each
    /// return object) and releases its arguments.
    pub(super) fn complete_task(&mut self, tid: TaskId, result: Result<Vec<Option<Stored>>>) {
        let Some(task) = self.tasks.remove(&tid) else {
            return;
        };
        self.children.remove(&tid);
        self.warned_waiting.remove(&tid);
        self.waiting_since.remove(&tid);
        match task.spec.actor {
            Some(ferroray_protocol::ActorTask::Create(_)) => self.actor_creation_done(ActorId(tid), &result),
            Some(ferroray_protocol::ActorTask::Call { actor }) => self.actor_call_done(actor, tid),
            None => {}
        }
        let (state, error) = match &result {
            Ok(_) => (TaskState::Finished, None),
            Err(Error::TaskCancelled) => (TaskState::Cancelled, None),
            Err(e) => (TaskState::Failed, Some(e.to_string())),
        };
        if task.spec.enable_events {
            push_event(&mut self.events, self.max_events, &task, state, None, error);
        }
        // A generator with items left on a peer: what it reported, for a
        // replay if they are lost (`left` step 11).
        let digests = match &task.remaking {
            Some(d) => Some(d.clone()),
            None if self.left_count.contains_key(&tid) || self.lost.contains_key(&tid) => {
                self.streams.get(&tid).map(|s| s.digests.clone())
            }
            None => None,
        };
        // The stream's end goes out before the generator's own object is
        // ready, so whoever sees `completed()` ready also sees the end (a
        // generator made again for lost items leaves its stream alone).
        if let Some(st) = self.streams.get_mut(&tid).filter(|_| task.remaking.is_none()) {
            let error = result.as_ref().err().cloned();
            let (owner, items, dropped, in_transit) = (st.owner, st.generated(), st.dropped, st.in_transit);
            // Kept for a consumer that claims the stream later.
            st.end = Some((items, error.clone()));
            // Nothing will be reported any more: let a waiting executor go.
            st.dropped = true;
            self.release_acks(tid);
            if dropped {
                self.streams.remove(&tid);
            } else {
                if let Some(st) = self.streams.get_mut(&tid) {
                    st.dropped = false;
                }
                if !in_transit {
                    self.send(owner, FromNode::StreamEnd { task_id: tid, items, error });
                }
            }
        }
        let result = if task.spec.returns == ReturnKind::Dynamic { self.dynamic_list(&task, result) } else { result };
        let ok = result.is_ok();
        let ids: Vec<ObjectId> = task.spec.return_ids().collect();
        match result {
            Ok(values) => {
                for (id, v) in ids.into_iter().zip(values) {
                    if let Some(v) = v {
                        self.set_value(id, v);
                    }
                }
            }
            Err(e) => {
                // Not those that have their value (or are left on a peer)
                // from an earlier attempt (`left` step 12).
                for id in ids {
                    if self.unmade(id) {
                        self.set_value(id, Stored::Error(e.clone()));
                    }
                }
            }
        }
        // Objects lost with a peer that this attempt did not make again
        // (it ran elsewhere, past them): once more, or lost for good
        // (`left` step 12). A task with results left on a peer keeps its
        // arguments while it may have to run again (step 11).
        if !(ok && self.remake_lost(&task, digests.clone())) {
            self.lost_ended(tid);
            if !self.keep_lineage(&task.spec, task.retries_left, task.pool, digests) {
                self.release_args(&task.spec);
            }
        }
        for index in 0..task.dynamic_digests.len() as u32 {
            self.unpin_alive(ObjectId::for_item(tid, index));
        }
    }

    /// Lets go of the liveness pins a task's arguments took at `submit`.
    pub(super) fn release_args(&mut self, spec: &TaskSpec) {
        for arg in &spec.args {
            if let TaskArg::Ref(id) | TaskArg::Object { id, .. } = arg {
                self.unpin_alive(*id);
            }
        }
        for c in &spec.contained {
            self.unpin_alive(*c);
        }
    }

    /// The value of a dynamic-returns task: the list of its item refs. A
    /// failure of a task that ran becomes one more, final item holding the
    /// error, so the items before it stay readable; a cancelled task, or one
    /// that never ran (a failed argument), holds the error in the list's place.
    pub(super) fn dynamic_list(
        &mut self,
        task: &Task,
        result: Result<Vec<Option<Stored>>>,
    ) -> Result<Vec<Option<Stored>>> {
        let tid = task.spec.task_id;
        let n = task.dynamic_digests.len() as u32;
        let mut items: Vec<ObjectId> = (0..n).map(|i| ObjectId::for_item(tid, i)).collect();
        match result {
            Err(e) if matches!(e, Error::TaskCancelled) || !task.started => return Err(e),
            Err(e) => {
                // Pinned by the list, like the other items.
                let id = ObjectId::for_item(tid, n);
                self.objects.entry(id).or_default().value = Some(Stored::Error(e));
                items.push(id);
            }
            Ok(_) => {}
        }
        Ok(vec![Some(Stored::Inline { bytes: Vec::new(), encoding: Encoding::RefList, contained: items })])
    }

    /// Cancels a task: a queued one is removed, a running one is asked to stop
    /// (or its worker killed, with `force`). `recursive` reaches the tasks it
    /// submitted.
    pub fn cancel(&mut self, tid: TaskId, force: bool, recursive: bool) {
        if recursive {
            for child in self.children.get(&tid).cloned().unwrap_or_default() {
                self.cancel(child, force, true);
            }
        }
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        task.cancelled = true;
        // An actor's process runs other calls and holds the actor's state:
        // an actor call is only ever cancelled cooperatively.
        let force = force && task.spec.actor.is_none();
        match task.worker {
            Some(w) => {
                let running = self.conns.get(&w).and_then(Conn::running) == Some(tid);
                let peer = self.conns.get(&w).is_some_and(|c| c.remote.is_some());
                // A task only queued on the worker is dropped there, never by
                // killing the worker (which runs somebody else's task). A
                // peer forwards the cancel (`remote` step 4).
                if peer {
                    self.send(w, FromNode::CancelRunning { task_id: tid, force });
                } else if force && running {
                    self.doom(w);
                } else {
                    self.send(w, FromNode::CancelRunning { task_id: tid, force: false });
                }
                // A cancelled generator reports nothing more: acknowledgements
                // held by backpressure are answered `gone` (after the cancel,
                // so the executor, let go, sees its flag first), and later
                // reports are refused (`report_item`).
                if let Some(st) = self.streams.get_mut(&tid) {
                    let held: Vec<(ConnId, u32)> = st.held_acks.drain(..).collect();
                    for (c, index) in held {
                        self.send(c, FromNode::ItemAck { task_id: tid, index, gone: true });
                    }
                }
            }
            None => self.complete_task(tid, Err(Error::TaskCancelled)),
        }
    }

    /// The task and, with `recursive`, every descendant it has now (what a
    /// `cancel` reaches), or `None` for an unknown task.
    pub(super) fn cancel_targets(&self, tid: TaskId, recursive: bool) -> Option<Vec<TaskId>> {
        self.tasks.get(&tid)?;
        let mut out = vec![tid];
        let mut i = 0;
        while recursive && i < out.len() {
            out.extend(self.children.get(&out[i]).into_iter().flatten().copied());
            i += 1;
        }
        Some(out)
    }

    /// Force-cancels the grace-period cancels whose deadline passed and
    /// whose task still runs (called by the spawner's 200 ms loop, so a
    /// grace ends up to 200 ms late). A task only queued on a worker was
    /// already dropped there by the cooperative cancel; one that ended is
    /// gone from `tasks`.
    pub fn force_overdue_cancels(&mut self) {
        if self.force_at.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let due: Vec<TaskId> = self.force_at.iter().filter(|(at, _)| *at <= now).map(|(_, t)| *t).collect();
        // Tasks that ended are forgotten before their deadline.
        let tasks = &self.tasks;
        self.force_at.retain(|(at, t)| *at > now && tasks.contains_key(t));
        for tid in due {
            let Some(w) = self.tasks.get(&tid).and_then(|t| t.worker) else { continue };
            if self.conns.get(&w).is_some_and(|c| c.remote.is_some()) {
                self.send(w, FromNode::CancelRunning { task_id: tid, force: true });
            } else if self.conns.get(&w).and_then(Conn::running) == Some(tid) {
                self.doom(w);
            }
        }
    }

    /// A force-cancel kills worker `w`. From now on nothing is assigned to
    /// it (it is not idle and takes no pipelined task), the tasks queued
    /// behind its running one are taken back (`Revoke`), and when it dies
    /// only a cancelled task is charged: the others go back to their queue
    /// without spending a retry (`disconnect`).
    pub(super) fn doom(&mut self, w: ConnId) {
        let Some(c) = self.conns.get_mut(&w) else { return };
        let pid = c.pid;
        if !c.doomed {
            c.doomed = true;
            let queued: Vec<TaskId> = c.assigned.iter().skip(1).copied().collect();
            // An actor's calls stay with it (they fail or retry with it).
            if !queued.is_empty() && c.actor.is_none() {
                c.revoking = queued.clone();
                c.outbox.send(FromNode::Revoke { task_ids: queued });
            }
            self.idle.remove(w);
        }
        if pid == 0 {
            return;
        }
        match self.test_kill_delay {
            None => {
                let _ = self.spawn.send(PoolCmd::Kill(pid));
            }
            Some(delay) => {
                let spawn = self.spawn.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = spawn.send(PoolCmd::Kill(pid));
                });
            }
        }
    }
}
