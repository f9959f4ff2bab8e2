//! The caller's side: putting values, submitting tasks, getting and waiting
//! for objects (blocking and by waker), cancelling, listing task events.

use super::*;
use ferroray_protocol::ActorTask;

impl CoreWorker {
    /// Whether the value of `id` is known here. If not, asks the node to
    /// send it when ready (once: later calls find the subscription).
    pub fn is_ready(&self, id: ObjectId) -> bool {
        if self.state.lock().objects.contains_key(&id) {
            return true;
        }
        let _ = self.subscribe(&[id], false);
        false
    }

    /// Stores a value made in this process as a new object.
    pub(crate) fn put_value(self: &Arc<Self>, value: ObjectValue, keep: Vec<Arc<RefInner>>) -> Result<Arc<RefInner>> {
        let id = ObjectId::for_put(self.next_task_id());
        let inner = RefInner::owned(self, id);
        let cached = Cached::of(value.clone(), |_, _| None);
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
        if let Ok(TaskSpec { actor: Some(ActorTask::Call { .. }), .. }) = &spec {
            // Forgotten with its first return object's last handle.
            self.state.lock().actor_calls.insert(task_id);
        }
        if let ReturnKind::Streaming { backpressure } = returns {
            // Registered before the task is sent, so no item can come first.
            self.state.lock().streams.insert(task_id, LocalStream::new(backpressure.is_some(), 0, 0));
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

    /// Asks the node for every object of `ids` not known here yet.
    pub fn prefetch(&self, ids: &[ObjectId]) -> Result<()> {
        self.subscribe_missing(ids)
    }

    pub(super) fn subscribe_missing(&self, ids: &[ObjectId]) -> Result<()> {
        self.subscribe(ids, true)
    }

    /// Subscribes to the objects of `ids` that are not known here, and with
    /// `refetch`, to those known to be in shared memory but not pinned (to
    /// read them). `wait` needs only readiness, so it does not refetch.
    pub(super) fn subscribe(&self, ids: &[ObjectId], refetch: bool) -> Result<()> {
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

    /// Asks the node to tell when the objects of `ids` not known here are
    /// made (`Locate`), once each.
    fn locate(&self, ids: &[ObjectId]) -> Result<()> {
        let asked: Vec<ObjectId> = {
            let mut st = self.state.lock();
            let st = &mut *st;
            ids.iter()
                .copied()
                .filter(|id| !st.objects.contains_key(id))
                .filter(|id| match st.made.entry(*id) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(0);
                        true
                    }
                })
                .collect()
        };
        if asked.is_empty() {
            Ok(())
        } else {
            self.send(ToNode::Locate(asked))
        }
    }

    /// Waits for news. The first time, a task instead tells the node it is
    /// blocked (lending its CPU back) and returns, so the caller looks again
    /// before sleeping.
    pub(super) fn park(
        &self,
        st: &mut parking_lot::MutexGuard<'_, LocalState>,
        blocked: &mut BlockedGuard<'_>,
        deadline: Option<Instant>,
    ) {
        if blocked.is_blocked() {
            self.wait_for_any(st, deadline, &mut blocked.spin);
        } else {
            parking_lot::MutexGuard::unlocked(st, || blocked.block());
        }
    }

    /// Sleeps until anything arrives (or `deadline`), as a waiter that every
    /// arrival wakes (`wait` and streams look at many objects at once).
    pub(super) fn wait_for_any(
        &self,
        st: &mut parking_lot::MutexGuard<'_, LocalState>,
        deadline: Option<Instant>,
        spin: &mut Spin,
    ) {
        st.other_waiters += 1;
        self.sleep(st, deadline, spin);
        st.other_waiters -= 1;
    }

    /// Sleeps until woken (`notify_waiters`) or `deadline`; true when the
    /// deadline passed. The first sleep of a wait only watches for news
    /// (`ferroray_common::spin`), with the lock released, and returns when
    /// it comes or the budget is spent: the caller looks again either way.
    pub(super) fn sleep(
        &self,
        st: &mut parking_lot::MutexGuard<'_, LocalState>,
        deadline: Option<Instant>,
        spin: &mut Spin,
    ) -> bool {
        if spin.available() {
            // Read under the lock: news after the caller's look bumps it.
            let seen = self.news.load(Ordering::Acquire);
            parking_lot::MutexGuard::unlocked(st, || {
                spin.until(deadline, || self.news.load(Ordering::Acquire) != seen);
            });
            return deadline.is_some_and(|d| Instant::now() >= d);
        }
        match deadline {
            Some(d) => self.ready.wait_until(st, d).timed_out(),
            None => {
                self.ready.wait(st);
                false
            }
        }
    }

    /// Blocks until `id` is ready, then decodes it.
    pub fn get<T: DeserializeOwned>(&self, id: ObjectId, timeout: Option<Duration>) -> Result<T> {
        codec::decode(&self.get_source(id, timeout)?)
    }

    /// Blocks until `id` is ready and gives its bytes and encoding as they
    /// are, for a front that decodes values itself. A shared-memory value
    /// is a view of the store, pinned while the [`RawValue`] lives.
    pub fn get_raw(&self, id: ObjectId, timeout: Option<Duration>) -> Result<RawValue> {
        self.get_source(id, timeout).map(RawValue)
    }

    /// Stores a value a front encoded (a [`codec::RawSlot`] it filled, say).
    pub fn put_encoded(self: &Arc<Self>, value: codec::ReturnValue) -> Result<crate::ObjectRef<RawValue>> {
        let (value, keep) = value.into_parts();
        Ok(crate::ObjectRef::from_inner(self.put_value(value, keep)?))
    }

    /// Stores `bytes` as they are, tagged [`Encoding::Raw`]: the put of a
    /// front that encodes values itself. `nested` are the refs the bytes
    /// name (each must be held by this process): the node keeps them alive
    /// while the object lives. Large values go to shared memory.
    pub fn put_raw(self: &Arc<Self>, bytes: &[u8], nested: &[ObjectId]) -> Result<crate::ObjectRef<RawValue>> {
        let mut contained = nested.to_vec();
        contained.sort();
        contained.dedup();
        let keep = {
            let st = self.state.lock();
            if let Some(id) = contained.iter().find(|id| !st.refs.contains_key(id)) {
                return Err(Error::InvalidOption(format!("nested ref {id} is not held by this process")));
            }
            drop(st);
            contained.iter().map(|id| RefInner::borrowed(self, *id)).collect()
        };
        let (value, keep) = codec::encode_raw(self, bytes, keep)?.into_parts();
        Ok(crate::ObjectRef::from_inner(self.put_value(value, keep)?))
    }

    /// Blocks until `id` is ready; gives what a read decodes.
    #[inline]
    pub(crate) fn get_source(&self, id: ObjectId, timeout: Option<Duration>) -> Result<Source> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut blocked = BlockedGuard::new(self);
        loop {
            let source = {
                let mut st = self.state.lock();
                let found = take_source(&mut st, id);
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
                        let timed_out = self.sleep(&mut st, deadline, &mut blocked.spin);
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
            return source;
        }
    }

    /// Waits until `num_returns` of `ids` are ready or the timeout passes.
    /// Returns the positions of the ready ones in the order they became ready
    /// (at most `num_returns`), and the rest in their given order. Without
    /// `fetch_local`, an object is ready once made anywhere (its value may
    /// stay on the node that made it: nothing is pulled here).
    pub fn wait(
        &self,
        keys: &[WaitKey],
        num_returns: usize,
        timeout: Option<Duration>,
        fetch_local: bool,
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
        if fetch_local {
            self.subscribe(&objects, false)?;
        } else {
            self.locate(&objects)?;
        }
        let mut blocked = BlockedGuard::new(self);
        let mut st = self.state.lock();
        loop {
            let mut ready = ready_keys(&st, keys, !fetch_local);
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
        if force {
            self.refuse_force_on_actor_call(id, "force")?;
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
        self.refuse_force_on_actor_call(id, "a grace period (it ends in a force-cancel)")?;
        let force_after_ms = Some(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        self.send(ToNode::Cancel { task_id: id.task, force: false, recursive, force_after_ms })
    }

    /// A force-cancel kills the process that runs the task: for an actor
    /// call, that is the actor with its state and its other calls. Refused,
    /// as Ray does; cancel without force, or kill the actor.
    fn refuse_force_on_actor_call(&self, id: ObjectId, what: &str) -> Result<()> {
        if self.state.lock().actor_calls.contains(&id.task) {
            return Err(Error::InvalidOption(format!(
                "{what} is not supported for an actor call: it would kill the actor's process; cancel without \
                 it, or kill the actor"
            )));
        }
        Ok(())
    }

    /// Every recorded task state change, oldest first.
    pub fn task_events(&self) -> Result<Vec<TaskEvent>> {
        match self.request(|req| ToNode::ListTasks { req })? {
            FromNode::Tasks { events, .. } => Ok(events),
            other => Err(Error::Protocol(format!("unexpected reply to list tasks: {other:?}"))),
        }
    }

    /// `Future` form of [`get`](Self::get): the value if it is here, else
    /// `Pending` with `waker` registered for its arrival. A task polling a
    /// value that is not here lends its CPU, exactly as a blocking `get`.
    pub fn poll_get<T: DeserializeOwned>(&self, id: ObjectId, waker: &std::task::Waker) -> Poll<Result<T>> {
        let mut st = self.state.lock();
        let found = take_source(&mut st, id);
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
        let ready = ready_keys(&st, keys, false);
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
}

/// What a read of `id` can decode now: inline bytes, the error, or a
/// shared-memory pin (used by one read: the entry becomes `InStore`, and the
/// next read subscribes again for a fresh pin). `None`: not here yet.
#[inline]
fn take_source(st: &mut LocalState, id: ObjectId) -> Option<Result<Source>> {
    let e = st.objects.get_mut(&id)?;
    match &e.value {
        Cached::Ready(Source::Shm(..)) => match std::mem::replace(&mut e.value, Cached::InStore) {
            Cached::Ready(source) => Some(Ok(source)),
            _ => unreachable!("matched as Ready just above"),
        },
        Cached::Ready(source) => Some(Ok(source.clone())),
        Cached::Error(err) => Some(Err(err.clone())),
        Cached::InStore => None,
    }
}

/// The keys that are ready here, as `(seq, position)`: `seq` orders them by
/// when they became ready. A dropped stream has nothing more to wait for.
/// The ready keys of `keys` as `(seq, position)`; with `made`, an object
/// told made counts (`wait` without `fetch_local`).
fn ready_keys(st: &LocalState, keys: &[WaitKey], made: bool) -> Vec<(u64, usize)> {
    keys.iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let seq = match k {
                WaitKey::Object(id) => {
                    // Ready since the first of the two news.
                    let fetched = st.objects.get(id).map(|e| e.seq);
                    let told = st.made.get(id).copied().filter(|s| made && *s > 0);
                    match (fetched, told) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
                WaitKey::Stream(t) => st.streams.get(t).map_or(Some(0), LocalStream::ready_since),
            };
            seq.map(|s| (s, i))
        })
        .collect()
}

/// An object's bytes as stored, with how they are encoded: what
/// [`CoreWorker::get_raw`] gives a front that decodes values itself.
pub struct RawValue(Source);

impl RawValue {
    pub(crate) fn from_source(source: Source) -> Self {
        RawValue(source)
    }

    pub fn encoding(&self) -> Encoding {
        match &self.0 {
            Source::Inline(_, e) | Source::Shm(_, e) => *e,
            Source::RefList(_) => Encoding::RefList,
        }
    }

    /// The value's bytes: empty for [`Encoding::Unit`] and
    /// [`Encoding::RefList`] (see [`ref_ids`](Self::ref_ids)).
    pub fn bytes(&self) -> Result<&[u8]> {
        match &self.0 {
            Source::Inline(b, _) => Ok(b),
            Source::Shm(pin, _) => pin.bytes(),
            Source::RefList(_) => Ok(&[]),
        }
    }

    /// The ids of an [`Encoding::RefList`] value (a dynamic-returns task's
    /// items, in order); empty for the other encodings.
    pub fn ref_ids(&self) -> &[ObjectId] {
        match &self.0 {
            Source::RefList(ids) => ids,
            _ => &[],
        }
    }

    /// Whether the bytes are a view of the shared-memory store.
    pub fn is_shared_memory(&self) -> bool {
        matches!(self.0, Source::Shm(..))
    }
}

impl std::fmt::Debug for RawValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.bytes().map_or(0, <[u8]>::len);
        write!(f, "RawValue({:?}, {len} bytes, {} ref ids)", self.encoding(), self.ref_ids().len())
    }
}
