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
        let known = if dynamic {
            task.dynamic_digests.get(index as usize).copied()
        } else {
            match self.streams.get(&tid) {
                Some(stream) if !stream.dropped => stream.digests.get(index as usize).copied(),
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
                self.send(conn, FromNode::CancelRunning { task_id: tid });
            }
            return self.refuse_item(conn, tid, index, value);
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
        let backpressure = stream.backpressure;
        let unconsumed = stream.generated().saturating_sub(stream.consumed);
        self.objects.entry(id).or_default();
        self.hold(owner, id);
        let Some(stored) = self.accept_value(conn, id, value) else { return };
        self.grant(owner, stored.contained());
        let inline = match &stored {
            Stored::Inline { bytes, encoding, contained } => Some(ObjectValue::Data {
                payload: Payload::Inline(bytes.clone()),
                encoding: *encoding,
                contained: contained.clone(),
            }),
            Stored::Error(e) => Some(ObjectValue::Error(e.clone())),
            Stored::Shm { .. } => None,
        };
        self.set_value(id, stored);
        self.send(owner, FromNode::StreamItem { task_id: tid, index, value: inline });
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

    /// How many items the attempts of generator task `tid` reported between them.
    pub(super) fn reported(&self, tid: TaskId) -> Option<u32> {
        let task = self.tasks.get(&tid)?;
        match task.spec.returns {
            ReturnKind::Dynamic => Some(task.dynamic_digests.len() as u32),
            ReturnKind::Streaming { .. } => self.streams.get(&tid).map(Stream::generated),
            ReturnKind::Fixed(_) => None,
        }
    }

    /// Drops a report nobody will take, and unblocks its executor.
    pub(super) fn refuse_item(&mut self, conn: ConnId, tid: TaskId, index: u32, value: ObjectValue) {
        if let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = value {
            self.handle(conn, ToNode::Deallocate { offset });
        }
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
        if st.owner != conn {
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
}
