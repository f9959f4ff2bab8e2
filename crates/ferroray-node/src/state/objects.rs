//! The object directory: values, shared-memory pins, holders and liveness
//! pins (reference counting; the module above numbers the rules).

use super::*;

impl State {
    /// Reserves shared memory for a value `conn` is about to write.
    pub fn allocate(&mut self, conn: ConnId, size: u64) -> Result<u64> {
        let offset = self.store.allocate(size).map_err(|e| Error::StoreFull(e.to_string()))?;
        match self.conns.get_mut(&conn) {
            Some(c) => {
                c.unsealed.insert(offset);
                Ok(offset)
            }
            None => {
                self.store.abort(offset);
                Err(Error::Disconnected("connection closed".into()))
            }
        }
    }

    /// Turns a value sent by `conn` into a stored one (sealing shared memory),
    /// or drops it if nobody wants object `id` any more.
    pub(super) fn accept_value(&mut self, conn: ConnId, id: ObjectId, value: ObjectValue) -> Option<Stored> {
        let wanted = self.objects.contains_key(&id);
        match value {
            ObjectValue::Error(e) => wanted.then_some(Stored::Error(e)),
            ObjectValue::Data { payload: Payload::Inline(bytes), encoding, contained } => {
                wanted.then_some(Stored::Inline { bytes, encoding, contained })
            }
            ObjectValue::Data { payload: Payload::Shm { offset, len }, encoding, contained } => {
                let owned = self.conns.get_mut(&conn).is_some_and(|c| c.unsealed.remove(&offset));
                if !owned {
                    return wanted.then(|| {
                        Stored::Error(Error::Protocol(format!("object {id} names shared memory it did not allocate")))
                    });
                }
                if !wanted {
                    self.store.abort(offset);
                    return None;
                }
                match self.store.seal(id, offset, len) {
                    Ok(()) => Some(Stored::Shm { encoding, contained }),
                    Err(e) => {
                        self.store.abort(offset);
                        Some(Stored::Error(Error::Protocol(e.to_string())))
                    }
                }
            }
        }
    }

    /// `ToNode::Import`: a copy of another node's object, under its id,
    /// held by `conn`. Only an in-process connection (a peer link) may
    /// import: a worker or a driver on the socket could otherwise name
    /// objects that are not its own. An object that already has a value
    /// here keeps it (values never change), and the copy is dropped.
    pub(super) fn import(&mut self, conn: ConnId, id: ObjectId, value: ObjectValue) {
        let local = self.conns.get(&conn).is_some_and(|c| matches!(c.outbox, Outbox::Local(_)));
        if !local {
            return self.reject(conn, Error::Protocol("objects are imported by a node's own links only".into()));
        }
        let here = self.objects.get(&id).is_some_and(|o| o.value.is_some());
        self.objects.entry(id).or_default();
        self.hold(conn, id);
        if here {
            if let ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. } = value {
                if self.conns.get_mut(&conn).is_some_and(|c| c.unsealed.remove(&offset)) {
                    self.store.abort(offset);
                }
            }
            return;
        }
        if let Some(stored) = self.accept_value(conn, id, value) {
            self.set_value(id, stored);
            // A pulled result (`left` step 9) may make tasks ready.
            self.schedule();
        }
    }

    pub(super) fn send_ready(&mut self, conn: ConnId, id: ObjectId) {
        let (value, encoding, contained) = match self.objects.get(&id).and_then(|o| o.value.as_ref()) {
            None => return,
            Some(Stored::Error(e)) => (Some(ObjectValue::Error(e.clone())), Encoding::Rust, Vec::new()),
            Some(Stored::Inline { bytes, encoding, contained }) => (
                Some(ObjectValue::Data {
                    payload: Payload::Inline(bytes.clone()),
                    encoding: *encoding,
                    contained: contained.clone(),
                }),
                *encoding,
                contained.clone(),
            ),
            Some(Stored::Shm { encoding, contained }) => (None, *encoding, contained.clone()),
        };
        if !contained.is_empty() {
            self.grant(conn, &contained);
        }
        let value = match value {
            Some(v) => v,
            None => match self.pin_shm(conn, id) {
                Ok(payload) => ObjectValue::Data { payload, encoding, contained },
                Err(e) => ObjectValue::Error(e),
            },
        };
        self.send(conn, FromNode::ObjectReady { id, value });
    }

    pub(super) fn pin_shm(&mut self, conn: ConnId, id: ObjectId) -> Result<Payload> {
        let (offset, len) = self.store.pin(id).map_err(|e| Error::ObjectLost(format!("{id}: {e}")))?;
        match self.conns.get_mut(&conn) {
            Some(c) => *c.store_pins.entry(id).or_insert(0) += 1,
            None => self.store.unpin(id),
        }
        Ok(Payload::Shm { offset, len })
    }

    pub(super) fn unpin_shm(&mut self, conn: ConnId, id: ObjectId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(n) = c.store_pins.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                c.store_pins.remove(&id);
            }
            self.store.unpin(id);
        }
    }

    pub(super) fn hold(&mut self, conn: ConnId, id: ObjectId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.held.insert(id) {
            if let Some(o) = self.objects.get_mut(&id) {
                o.holders += 1;
            }
        }
    }

    pub(super) fn unhold(&mut self, conn: ConnId, id: ObjectId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.held.remove(&id) {
            if let Some(o) = self.objects.get_mut(&id) {
                o.holders -= 1;
            }
            self.maybe_free(id);
        }
    }

    pub(super) fn pin_alive(&mut self, id: ObjectId) -> bool {
        match self.objects.get_mut(&id) {
            Some(o) => {
                o.liveness_pins += 1;
                true
            }
            None => false,
        }
    }

    pub(super) fn unpin_alive(&mut self, id: ObjectId) {
        if let Some(o) = self.objects.get_mut(&id) {
            o.liveness_pins = o.liveness_pins.saturating_sub(1);
            self.maybe_free(id);
        }
    }

    /// Frees `id` once nothing holds or pins it, and releases what it contained.
    pub(super) fn maybe_free(&mut self, id: ObjectId) {
        let Some(o) = self.objects.get(&id) else {
            return;
        };
        if o.holders > 0 || o.liveness_pins > 0 {
            return;
        }
        let mut o = self.objects.remove(&id).expect("checked above");
        if !self.locating.is_empty() {
            self.locating.remove(&id);
        }
        if !self.unlinked.is_empty() {
            // Borrowed again later, it waits for a link of its own.
            self.unlinked.retain(|u| u.id != id);
        }
        if let Some(left) = o.left.take() {
            self.resolved(id, left);
        }
        for conn in &o.granted_to {
            if let Some(c) = self.conns.get_mut(conn) {
                c.granted.remove(&id);
            }
        }
        if let Some(value) = o.value {
            if matches!(value, Stored::Shm { .. }) {
                self.store.delete(id);
            }
            for c in value.contained() {
                self.unpin_alive(*c);
            }
        }
        // A generator's own object: a stream passed on and never claimed
        // goes with the last ref to it.
        if id == ObjectId::for_return(id.task, 0) && self.streams.get(&id.task).is_some_and(|s| s.in_transit) {
            self.drop_unclaimed(id.task);
        }
        // An actor's handle object: no handle is left anywhere.
        let actor = ActorId(id.task);
        if actor.handle_object() == id && self.actors.contains_key(&actor) {
            self.actor_out_of_scope(actor);
        }
    }

    /// Answers `conn`'s `Subscribe` or `Locate` of `id` with its error if
    /// it may not read it or it is gone; true if it did.
    pub(super) fn refuse_unreadable(&mut self, conn: ConnId, id: ObjectId) -> bool {
        let e = if !self.may_see(conn, id, false) {
            Error::PermissionDenied(format!("object {id} was not given to this process"))
        } else if !self.objects.contains_key(&id) {
            Error::ObjectLost(id.to_string())
        } else {
            return false;
        };
        self.send(conn, FromNode::ObjectReady { id, value: ObjectValue::Error(e) });
        true
    }

    /// `ToNode::Locate` from `conn`: each object made (a value here, or
    /// left on a peer) is told at once, the others once they are.
    pub(super) fn locate(&mut self, conn: ConnId, ids: Vec<ObjectId>) {
        let mut made = Vec::new();
        for id in ids {
            if self.refuse_unreadable(conn, id) {
                continue;
            }
            match self.objects.get(&id) {
                None => {}
                Some(o) if o.value.is_some() || o.left.is_some() => made.push(id),
                Some(_) => {
                    let waiting = self.locating.entry(id).or_default();
                    if !waiting.contains(&conn) {
                        waiting.push(conn);
                    }
                }
            }
        }
        if !made.is_empty() {
            self.send(conn, FromNode::Made(made));
        }
    }

    /// `id` is made (its value set, or left on a peer): those locating it
    /// are told.
    pub(super) fn made(&mut self, id: ObjectId) {
        if self.locating.is_empty() {
            return;
        }
        for conn in self.locating.remove(&id).unwrap_or_default() {
            self.send(conn, FromNode::Made(vec![id]));
        }
    }

    /// Stores the value of a pending object and wakes what waits for it.
    pub(super) fn set_value(&mut self, id: ObjectId, value: Stored) {
        if !self.objects.contains_key(&id) {
            // Nobody wants it any more: whatever it contained is not kept
            // alive by it (an item nobody pins goes now).
            for c in value.contained() {
                self.maybe_free(*c);
            }
            return;
        }
        for c in value.contained() {
            self.pin_alive(*c);
        }
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        let failed = match &value {
            Stored::Error(e) => Some(e.clone()),
            _ => None,
        };
        o.value = Some(value);
        let left = o.left.take();
        let subscribers = std::mem::take(&mut o.subscribers);
        let waiting = std::mem::take(&mut o.waiting);
        self.made(id);
        // Pulled, or copied here another way (`left` steps 9 and 10).
        if let Some(left) = left {
            self.resolved(id, left);
        }
        for s in subscribers {
            self.send_ready(s, id);
        }
        for t in waiting {
            let Some(task) = self.tasks.get_mut(&t) else {
                continue;
            };
            task.pending_deps -= 1;
            if let Some(e) = &failed {
                // A failed argument fails the task without running it.
                self.complete_task(t, Err(e.clone()));
            } else if task.pending_deps == 0 {
                self.record(t, TaskState::PendingSchedule, None, None);
                self.enqueue(t);
            }
        }
    }
}
