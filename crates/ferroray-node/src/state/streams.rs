//! Generator streams: item reports, replay checks, backpressure
//! acknowledgements, drops (the stream protocol numbered in the module above).

use super::*;

impl State {
    /// One yielded item from the executor of `tid` (steps 1 to 3 above).
    pub(super) fn report_item(
        &mut self,
        conn: ConnId,
        tid: TaskId,
        attempt: u32,
        index: u32,
        value: ObjectValue,
        digest: u64,
    ) {
        let current = self.tasks.get(&tid).is_some_and(|t| t.worker == Some(conn) && t.spec.attempt == attempt);
        if !current {
            return self.refuse_item(conn, tid, index, value);
        }
        let task = self.tasks.get_mut(&tid).expect("checked");
        // Reports of one attempt arrive in order, from 0: anything else is a
        // broken executor, and fails the task rather than guess.
        if index != task.attempt_items {
            let e = Error::Protocol(format!("item {index} reported after {} items", task.attempt_items));
            task.replay_error.get_or_insert(e);
            return self.refuse_item(conn, tid, index, value);
        }
        task.attempt_items += 1;
        if task.replay_error.is_some() || task.cancelled {
            // The task already failed, or was cancelled: nothing more reaches
            // the owner, and a paused executor is let go (`gone`).
            return self.refuse_item(conn, tid, index, value);
        }
        let dynamic = task.spec.returns == ReturnKind::Dynamic;
        let known = if let Some(digests) = &task.remaking {
            // Made again (`left` step 12): nothing beyond what it reported.
            match digests.get(index as usize) {
                Some(d) => Some(*d),
                None => return self.refuse_item(conn, tid, index, value),
            }
        } else if dynamic {
            task.dynamic_digests.get(index as usize).copied()
        } else {
            match self.streams.get(&tid) {
                Some(stream) if !stream.dropped => stream.digests.get(index as usize).copied(),
                // Dropped, but items its consumer kept were lost with a
                // peer (`left` step 12): the replay restores them.
                Some(stream) if self.lost.contains_key(&tid) => match stream.digests.get(index as usize) {
                    Some(d) => Some(*d),
                    None => return self.refuse_item(conn, tid, index, value),
                },
                _ => return self.refuse_item(conn, tid, index, value),
            }
        };
        if let Some(known) = known {
            // A retry replays what an earlier attempt reported: hand nothing
            // out twice, but notice if it differs (and then stop the attempt).
            if known != digest {
                let task = self.tasks.get_mut(&tid).expect("checked");
                let name = task.spec.name().to_string();
                task.replay_error.get_or_insert(Error::ReplayMismatch(format!(
                    "a retry of {name} yielded a different value at index {index}"
                )));
                self.send(conn, FromNode::CancelRunning { task_id: tid, force: false });
                return self.refuse_item(conn, tid, index, value);
            }
            // An item lost with a peer since takes this copy.
            return self.restore_item(conn, tid, index, value);
        }
        let id = ObjectId::for_item(tid, index);
        if dynamic {
            // The item is pinned by its task until the final list (which
            // contains it) is stored.
            self.tasks.get_mut(&tid).expect("checked").dynamic_digests.push(digest);
            self.objects.entry(id).or_default().liveness_pins += 1;
            if let Some(stored) = self.accept_value(conn, id, value) {
                self.set_value(id, stored);
            }
            return;
        }
        let stream = self.streams.get_mut(&tid).expect("checked");
        stream.digests.push(digest);
        let owner = stream.owner;
        let in_transit = stream.in_transit;
        let backpressure = stream.backpressure;
        let unconsumed = stream.generated().saturating_sub(stream.consumed);
        self.objects.entry(id).or_default();
        if in_transit {
            // Kept for the consumer that claims the stream.
            self.pin_alive(id);
        } else {
            self.hold(owner, id);
        }
        let inline = match value {
            // Kept where it was made (`left` step 8): read as a
            // shared-memory item is, fetched on `get`.
            ObjectValue::Data { payload, contained, encoding }
                if payload.is_left_on_peer()
                    && contained.is_empty()
                    && self.leave(conn, id, payload.len(), encoding) =>
            {
                None
            }
            value => {
                let Some(stored) = self.accept_value(conn, id, value) else { return };
                if !in_transit {
                    self.grant(owner, stored.contained());
                }
                let inline = sent_with_item(&stored);
                self.set_value(id, stored);
                inline
            }
        };
        if !in_transit {
            self.send(owner, FromNode::StreamItem { task_id: tid, index, value: inline });
        }
        if let Some(n) = backpressure {
            if unconsumed >= n {
                if let Some(st) = self.streams.get_mut(&tid) {
                    st.held_acks.push_back((conn, index));
                }
            } else {
                self.send(conn, FromNode::ItemAck { task_id: tid, index, gone: false });
            }
        }
    }

    /// A replayed item `index` of `tid` whose digest matched: it becomes the
    /// item's value if that was lost with a peer (`left` step 12), and is
    /// dropped otherwise; nothing is handed out again. Its executor goes on
    /// while a later item is still to be made again, and, if the task is
    /// made again only for those, is told to stop after the last.
    fn restore_item(&mut self, conn: ConnId, tid: TaskId, index: u32, value: ObjectValue) {
        let id = ObjectId::for_item(tid, index);
        match value {
            value if !self.unmade(id) => self.drop_item(conn, tid, index, value),
            ObjectValue::Data { payload, contained, encoding }
                if payload.is_left_on_peer()
                    && contained.is_empty()
                    && self.leave(conn, id, payload.len(), encoding) => {}
            value => {
                if let Some(stored) = self.accept_value(conn, id, value) {
                    self.set_value(id, stored);
                }
            }
        }
        // Made again only for lost items (for an ended generator, or one
        // whose consumer dropped it): on up to the last of them.
        let remaking = self.tasks.get(&tid).and_then(|t| t.remaking.as_ref()).map(|d| d.len() as u32);
        let dropped = self.streams.get(&tid).filter(|s| s.dropped).map(Stream::generated);
        let gone = match remaking.or(dropped) {
            Some(n) => !(index + 1..n).any(|i| self.unmade(ObjectId::for_item(tid, i))),
            None => !self.streams.contains_key(&tid),
        };
        self.send(conn, FromNode::ItemAck { task_id: tid, index, gone });
        // A task reading the item may be ready now (`left` step 13).
        self.schedule();
    }

    /// How many items the attempts of generator task `tid` reported between them.
    pub(super) fn reported(&self, tid: TaskId) -> Option<u32> {
        let task = self.tasks.get(&tid)?;
        match task.spec.returns {
            ReturnKind::Dynamic => Some(task.dynamic_digests.len() as u32),
            ReturnKind::Streaming { .. } => self.streams.get(&tid).map(Stream::generated),
            ReturnKind::Fixed(_) => None,
        }
    }

    /// Drops a report's value: its allocation here, or the peer's copy of
    /// one left there (`left` step 10).
    fn drop_item(&mut self, conn: ConnId, tid: TaskId, index: u32, value: ObjectValue) {
        match value {
            ObjectValue::Data { payload, .. }
                if payload.is_left_on_peer() && self.conns.get(&conn).is_some_and(|c| c.remote.is_some()) =>
            {
                self.send(conn, FromNode::Forget(vec![ObjectId::for_item(tid, index)]));
            }
            ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } => {
                self.handle(conn, ToNode::Deallocate { offset });
            }
            _ => {}
        }
    }

    /// Drops a report nobody will take, and unblocks its executor.
    pub(super) fn refuse_item(&mut self, conn: ConnId, tid: TaskId, index: u32, value: ObjectValue) {
        self.drop_item(conn, tid, index, value);
        let gone = self.streams.get(&tid).is_none_or(|s| s.dropped) || self.tasks.get(&tid).is_none_or(|t| t.cancelled);
        self.send(conn, FromNode::ItemAck { task_id: tid, index, gone });
    }

    /// Answers held acknowledgements while the owner is below its limit (or
    /// all of them once the stream is dropped or over).
    pub(super) fn release_acks(&mut self, tid: TaskId) {
        let Some(st) = self.streams.get_mut(&tid) else { return };
        let mut out = Vec::new();
        while let Some(&(conn, index)) = st.held_acks.front() {
            let unconsumed_then = (index + 1).saturating_sub(st.consumed);
            let limit = st.backpressure.unwrap_or(u32::MAX);
            if !st.dropped && unconsumed_then >= limit {
                break;
            }
            st.held_acks.pop_front();
            out.push((conn, index, st.dropped));
        }
        for (conn, index, gone) in out {
            self.send(conn, FromNode::ItemAck { task_id: tid, index, gone });
        }
    }

    /// The owner dropped its generator: items it never took go, the executor
    /// is released, later reports are refused. The task itself runs on.
    pub(super) fn drop_stream(&mut self, conn: ConnId, tid: TaskId, consumed: u32) {
        let Some(st) = self.streams.get_mut(&tid) else { return };
        if st.owner != conn || st.in_transit {
            return;
        }
        st.dropped = true;
        let generated = st.generated();
        self.release_acks(tid);
        let finished = !self.tasks.contains_key(&tid);
        if finished {
            self.streams.remove(&tid);
        }
        for index in consumed..generated {
            self.unhold(conn, ObjectId::for_item(tid, index));
        }
    }

    /// The owner passed the stream on after taking `consumed` items (a
    /// generator serialized into a value): the items it did not take are
    /// pinned for the claimer instead of held for it, and nothing more is
    /// sent to it (`StreamHandOff`).
    pub(super) fn hand_off_stream(&mut self, conn: ConnId, tid: TaskId, consumed: u32) {
        let Some(st) = self.streams.get_mut(&tid) else { return };
        if st.owner != conn || st.in_transit || st.dropped {
            return;
        }
        st.in_transit = true;
        st.consumed = st.consumed.max(consumed.min(st.generated()));
        let (from, generated) = (st.consumed, st.generated());
        for index in from..generated {
            let id = ObjectId::for_item(tid, index);
            // Pinned before the hold goes, so it is never freed in between.
            self.pin_alive(id);
            self.unhold(conn, id);
        }
    }

    /// `conn` takes over a stream passed on at item `from`: it must hold a
    /// ref to the generator's own object (the value that carried the
    /// generator grants it), and the stream must be in transit at `from`
    /// (a stale copy of an older hand-off is refused, changing nothing). It
    /// gets the items not consumed yet, then the end if it came, and from
    /// then on everything the owner gets. Only one claim succeeds.
    pub(super) fn claim_stream(&mut self, conn: ConnId, tid: TaskId, from: u32) -> Result<u32> {
        if !self.may_see(conn, ObjectId::for_return(tid, 0), false) {
            return Err(Error::InvalidOption(format!("generator {tid} is not passed to this process")));
        }
        let Some(st) = self.streams.get_mut(&tid) else {
            return Err(Error::InvalidOption(format!("generator {tid} is gone")));
        };
        if !st.in_transit || st.consumed != from {
            return Err(Error::InvalidOption(format!(
                "generator {tid} was already taken by another consumer: each item goes to one consumer"
            )));
        }
        st.in_transit = false;
        st.owner = conn;
        let (from, generated, end) = (st.consumed, st.generated(), st.end.clone());
        for index in from..generated {
            let id = ObjectId::for_item(tid, index);
            self.hold(conn, id);
            let stored = self.objects.get(&id).and_then(|o| o.value.as_ref());
            let contained = stored.map(|v| v.contained().to_vec()).unwrap_or_default();
            let value = stored.and_then(sent_with_item);
            let ready = stored.is_some();
            self.grant(conn, &contained);
            self.unpin_alive(id);
            if ready {
                self.send(conn, FromNode::StreamItem { task_id: tid, index, value });
            }
        }
        if let Some((items, error)) = end {
            self.send(conn, FromNode::StreamEnd { task_id: tid, items, error });
        }
        self.release_acks(tid);
        Ok(from)
    }

    /// A stream passed on whose generator's object was freed before anyone
    /// claimed it (the value that carried it is gone): dropped, as if its
    /// owner dropped it.
    pub(super) fn drop_unclaimed(&mut self, tid: TaskId) {
        let Some(st) = self.streams.get_mut(&tid) else { return };
        if !st.in_transit {
            return;
        }
        st.in_transit = false;
        st.dropped = true;
        let (from, generated) = (st.consumed, st.generated());
        self.release_acks(tid);
        if !self.tasks.contains_key(&tid) {
            self.streams.remove(&tid);
        }
        for index in from..generated {
            self.unpin_alive(ObjectId::for_item(tid, index));
        }
    }
}

/// What a `StreamItem` carries of a stored item: an inline value or an
/// error; a shared-memory one is fetched on `get`.
fn sent_with_item(stored: &Stored) -> Option<ObjectValue> {
    match stored {
        Stored::Inline { bytes, encoding, contained } => Some(ObjectValue::Data {
            payload: Payload::Inline(bytes.clone()),
            encoding: *encoding,
            contained: contained.clone(),
        }),
        Stored::Error(e) => Some(ObjectValue::Error(e.clone())),
        Stored::Shm { .. } => None,
    }
}
