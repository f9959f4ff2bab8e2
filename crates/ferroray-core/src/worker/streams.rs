//! The caller's side of generator streams: handing items out in order,
//! by blocking or by waker, and dropping a stream.

use super::*;

/// What [`CoreWorker::take_next`] hands out: the next ref (`None`: the
/// end), and the consumed count to tell the node (backpressure).
type Taken = (Option<Arc<RefInner>>, Option<u32>);

impl CoreWorker {
    /// The next item of a stream this process owns: blocks up to `timeout`
    /// (`None`: no limit; zero: do not wait). `Ok(None)` once it has ended.
    pub(crate) fn stream_next(
        self: &Arc<Self>,
        task: TaskId,
        token: u64,
        timeout: Option<Duration>,
    ) -> Result<Option<Arc<RefInner>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut blocked = BlockedGuard::new(self);
        let mut st = self.state.lock();
        loop {
            match self.take_next(&mut st, task, token)? {
                Poll::Ready((r, consumed)) => {
                    drop(st);
                    if let Some(consumed) = consumed {
                        let _ = self.send(ToNode::StreamConsumed { task_id: task, consumed });
                    }
                    return Ok(r);
                }
                Poll::Pending => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // A task polling (`next_ready`) for an item that is not here
                // may be what keeps the producer from a CPU: lend it, as a
                // blocking `next` would.
                drop(st);
                blocked.block();
                return Err(Error::GetTimeout);
            }
            if context::is_cancelled() {
                return Err(Error::TaskCancelled);
            }
            self.park(&mut st, &mut blocked, deadline);
        }
    }

    /// `futures::Stream` form of [`stream_next`](Self::stream_next).
    pub(crate) fn stream_poll(
        self: &Arc<Self>,
        task: TaskId,
        token: u64,
        waker: &std::task::Waker,
    ) -> Poll<Result<Option<Arc<RefInner>>>> {
        let mut st = self.state.lock();
        match self.take_next(&mut st, task, token) {
            Err(e) => Poll::Ready(Err(e)),
            Ok(Poll::Ready((r, consumed))) => {
                drop(st);
                if let Some(consumed) = consumed {
                    let _ = self.send(ToNode::StreamConsumed { task_id: task, consumed });
                }
                Poll::Ready(Ok(r))
            }
            Ok(Poll::Pending) => {
                if let Some(s) = st.streams.get_mut(&task) {
                    if !s.wakers.iter().any(|w| w.will_wake(waker)) {
                        s.wakers.push(waker.clone());
                    }
                }
                drop(st);
                // An async task awaiting an item lends its CPU exactly as a
                // blocking `next` does (the producer may be queued behind it).
                self.lend_cpu();
                Poll::Pending
            }
        }
    }

    /// Hands out the stream's next ref if there is one: an item, or after
    /// the last item the error (once), or the end. Also gives the new
    /// consumed count when the node needs it (backpressure). An error if
    /// generator `token` passed the stream on (its caller hands that out
    /// once, as a fresh error object, then the end).
    pub(super) fn take_next(self: &Arc<Self>, st: &mut LocalState, task: TaskId, token: u64) -> Result<Poll<Taken>> {
        if st.disconnected.is_some() {
            let reason = st.disconnected.clone().unwrap_or_default();
            st.seq += 1;
            let seq = st.seq;
            if let Some(s) = st.streams.get_mut(&task) {
                if s.end.is_none() {
                    let next = s.next;
                    s.end = Some((next, Some(Error::Disconnected(reason)), seq));
                }
            }
        }
        let Some(s) = st.streams.get_mut(&task) else { return Ok(Poll::Ready((None, None))) };
        if s.token != token || s.passed_on.is_some() {
            return Err(passed_on(task));
        }
        if let Some((cached, _)) = s.items.remove(&s.next) {
            let id = ObjectId::for_item(task, s.next);
            s.next += 1;
            let consumed = s.backpressure.then_some(s.next);
            // The node already holds the item for this process.
            *st.refs.entry(id).or_insert(0) += 1;
            self.cache(st, id, cached);
            return Ok(Poll::Ready((Some(Arc::new(RefInner { id, core: self.clone() })), consumed)));
        }
        let Some((n, error, _)) = &s.end else { return Ok(Poll::Pending) };
        if s.next < *n {
            return Ok(Poll::Pending);
        }
        match error {
            Some(e) if !s.error_handed => {
                s.error_handed = true;
                let e = e.clone();
                let id = ObjectId::for_return(task, 0);
                *st.refs.entry(id).or_insert(0) += 1;
                self.cache(st, id, Cached::Error(e));
                Ok(Poll::Ready((Some(Arc::new(RefInner { id, core: self.clone() })), None)))
            }
            _ => Ok(Poll::Ready((None, None))),
        }
    }

    pub(crate) fn stream_ended(&self, task: TaskId, token: u64) -> bool {
        self.state.lock().streams.get(&task).is_none_or(|s| s.end.is_some() || s.token != token)
    }

    /// The caller dropped its generator: tell the node how far it got
    /// (unless it passed the stream on: then it is no longer its own).
    pub(crate) fn drop_stream(&self, task: TaskId, token: u64) {
        let removed = {
            let mut st = self.state.lock();
            match st.streams.get(&task) {
                Some(s) if s.token == token => st.streams.remove(&task),
                _ => None,
            }
        };
        if let Some(s) = removed {
            if s.passed_on.is_none() {
                let _ = self.send(ToNode::StreamDrop { task_id: task, consumed: s.next });
            }
        }
    }

    /// The generator `token` of stream `task` is being serialized into a
    /// value: the stream is passed on from the item this process would take
    /// next. Its items go to whoever claims it (`claim_stream`); here the
    /// generator ends with an error. Serializing it again (a value written
    /// in two passes) gives the same answer. Returns the first index the
    /// claimer gets and whether the stream has backpressure.
    pub(crate) fn hand_off_stream(&self, task: TaskId, token: u64) -> Result<(u32, bool)> {
        let (from, backpressure, wakers) = {
            let mut st = self.state.lock();
            st.seq += 1;
            let seq = st.seq;
            let Some(s) = st.streams.get_mut(&task).filter(|s| s.token == token) else {
                return Err(Error::InvalidOption(format!(
                    "generator {task} cannot be passed on: this process does not consume it"
                )));
            };
            if let Some(from) = s.passed_on {
                return Ok((from, s.backpressure));
            }
            let from = s.next;
            s.passed_on = Some(from);
            // Ended here: its generators hand out `passed_on` once.
            s.items.clear();
            s.end = Some((from, None, seq));
            (from, s.backpressure, std::mem::take(&mut s.wakers))
        };
        // Not under the state's lock: an in-process node may answer at once.
        let _ = self.send(ToNode::StreamHandOff { task_id: task, consumed: from });
        wakers.into_iter().for_each(|w| w.wake());
        self.notify_waiters();
        Ok((from, backpressure))
    }

    /// Takes over stream `task`, passed on from item `from` (a generator
    /// deserialized here). Gives the new generator's token, or why it gets
    /// no items (another consumer took the stream, or it is gone).
    pub(crate) fn claim_stream(self: &Arc<Self>, task: TaskId, from: u32, backpressure: bool) -> Result<u64> {
        let token = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let before = {
            let mut st = self.state.lock();
            if st.streams.get(&task).is_some_and(|s| s.passed_on.is_none()) {
                return Err(Error::InvalidOption(format!(
                    "generator {task} is already consumed in this process: each item goes to one consumer"
                )));
            }
            // Registered before the claim, so the items the node sends with
            // its answer find it. What it replaces (this process passed the
            // stream on) comes back if the claim is refused.
            st.streams.insert(task, LocalStream::new(backpressure, from, token))
        };
        let refused = match self.request(|req| ToNode::StreamClaim { req, task_id: task, from }) {
            Ok(FromNode::StreamClaimed { result: Ok(start), .. }) if start == from => return Ok(token),
            Ok(FromNode::StreamClaimed { result: Ok(start), .. }) => Error::Protocol(format!(
                "generator {task} was passed on at item {from} but the node resumes it at {start}"
            )),
            Ok(FromNode::StreamClaimed { result: Err(e), .. }) => e,
            Ok(other) => Error::Protocol(format!("unexpected reply to StreamClaim: {other:?}")),
            Err(e) => e,
        };
        let mut st = self.state.lock();
        if st.streams.get(&task).is_some_and(|s| s.token == token) {
            match before {
                Some(s) => st.streams.insert(task, s),
                None => st.streams.remove(&task),
            };
        }
        Err(refused)
    }

    /// Applies news to a stream this process owns (stamped with the order it
    /// came in, for `wait`) and wakes whoever waits on it.
    pub(super) fn update_stream(&self, task_id: TaskId, update: impl FnOnce(&mut LocalStream, u64)) {
        let wakers = {
            let mut st = self.state.lock();
            st.seq += 1;
            let seq = st.seq;
            match st.streams.get_mut(&task_id) {
                Some(s) => {
                    update(s, seq);
                    std::mem::take(&mut s.wakers)
                }
                None => Vec::new(),
            }
        };
        wakers.into_iter().for_each(|w| w.wake());
        self.notify_waiters();
    }
}

/// What a generator that passed its stream on hands out (once, as an error
/// item): its items go to the receiver.
pub(crate) fn passed_on(task: TaskId) -> Error {
    Error::InvalidOption(format!("generator {task} was passed on: its items go to its receiver"))
}
