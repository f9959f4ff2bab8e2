//! What a node shows of itself to `ferroray list` and `ferroray timeline`:
//! summaries made under the state lock, copied out, bounded.

use super::actors::Phase;
use super::*;

/// One actor as `list actors` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorSummary {
    pub id: ActorId,
    pub class: String,
    pub name: Option<String>,
    /// `STARTING`, `ALIVE` or `DEAD`.
    pub state: &'static str,
    /// Its process, while it has one.
    pub pid: Option<u32>,
    pub detached: bool,
    /// Why it died, once dead.
    pub death: Option<String>,
}

/// One object as `list objects` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSummary {
    pub id: ObjectId,
    /// `PENDING` (its task has not made it), `INLINE`, `SHARED_MEMORY`,
    /// `SPILLED` or `ERROR`.
    pub location: &'static str,
    /// Bytes of its value (0 while pending).
    pub size: u64,
    /// Processes holding a reference.
    pub holders: u32,
}

impl State {
    /// Every recorded task event, oldest first (at most `max_task_events`).
    pub fn task_events(&self) -> Vec<TaskEvent> {
        self.events.iter().map(Event::to_task_event).collect()
    }

    /// The actors this node knows, at most `max`.
    pub fn actor_summaries(&self, max: usize) -> Vec<ActorSummary> {
        self.actors
            .iter()
            // A proxy is listed by the node that has the actor.
            .filter(|(_, a)| a.reached.is_none())
            .take(max)
            .map(|(id, a)| {
                let (state, death) = match &a.phase {
                    Phase::Starting => ("STARTING", None),
                    Phase::Alive => ("ALIVE", None),
                    Phase::Dead(e) => ("DEAD", Some(e.to_string())),
                };
                ActorSummary {
                    id: *id,
                    class: a.class().to_string(),
                    name: a.name().map(str::to_string),
                    state,
                    pid: a.worker.and_then(|w| self.conns.get(&w)).map(|c| c.pid),
                    detached: self.is_detached(*id),
                    death,
                }
            })
            .collect()
    }

    /// The objects this node tracks, at most `max`.
    pub fn object_summaries(&self, max: usize) -> Vec<ObjectSummary> {
        self.objects
            .iter()
            .take(max)
            .map(|(id, o)| {
                let (location, size) = match &o.value {
                    None if o.left.is_some() => ("ON_PEER", o.left.as_ref().map_or(0, |l| l.len)),
                    None => ("PENDING", 0),
                    Some(Stored::Inline { bytes, .. }) => ("INLINE", bytes.len() as u64),
                    Some(Stored::Shm { .. }) if self.store.is_spilled(*id) => {
                        ("SPILLED", self.store.len_of(*id).unwrap_or(0))
                    }
                    Some(Stored::Shm { .. }) => ("SHARED_MEMORY", self.store.len_of(*id).unwrap_or(0)),
                    Some(Stored::Error(_)) => ("ERROR", 0),
                };
                ObjectSummary { id: *id, location, size, holders: o.holders }
            })
            .collect()
    }
}
