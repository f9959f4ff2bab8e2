//! Peers: other nodes of the cluster that run this node's tasks. The node's
//! daemon attaches one in-process connection per peer node
//! (`Node::attach_peer`, role [`Role::Peer`]) and carries what goes on it
//! to that node and back. To this node a peer is an executor speaking the
//! worker's protocol, which runs every task sent to it at once:
//!
//! 1. Placement (`schedule`): a ready task that cannot start here now (no
//!    room, or this node could never run it) goes to the first peer with
//!    room for it: the peer's total minus what this node sent it and has
//!    not heard back about. A task that only a peer could run and no peer
//!    has room for stays queued; one that no node has the resources for
//!    waits for a node that has, with a warning to the job's drivers
//!    (`warn_waiting`), and is placed when such a node is attached.
//! 2. Dispatch (`assign`): as to a worker: ref arguments are resolved and
//!    shared-memory ones pinned for the peer's connection, which reads them
//!    to send them and then unpins them. The task takes no lease here: this
//!    node's resources are not the peer's.
//! 3. The peer answers as a worker does: results written into this node's
//!    store (`Allocate`) and `TaskDone`; a generator's items as
//!    `ReportItem`, acknowledged under backpressure as for a worker (the
//!    acknowledgement travels back to the executing node, so the
//!    generator there pauses). The owner's tables, streams and retries stay
//!    here: a retried attempt replays through the same digest checks.
//! 4. A cancel is always a message (`CancelRunning`, with `force`), which
//!    the peer forwards: no process here is killed for a peer's task.
//! 5. A peer that goes away (its node died or left, the link broke): each
//!    task it ran failed with a retryable error naming the node, and is
//!    placed again (on this node or another peer) within its retries.
//!
//! Actors stay on the node that creates them in this build, and a task
//! whose arguments hold refs runs where those refs live (the peer's
//! connection refuses it): neither crosses nodes yet.

use super::*;
use ferroray_common::NodeId;

/// A peer node, as this node accounts for it.
pub(crate) struct Remote {
    /// Which node, for errors and events.
    pub(super) node: NodeId,
    /// What it has (from the cluster's view when attached).
    pub(super) total: ResourceSet,
    /// The resources of the tasks this node sent it that have not ended:
    /// its room is `total` minus these (step 1).
    pub(super) in_flight: ResourceSet,
}

impl State {
    /// Marks the node as part of a cluster (step 1: unplaceable tasks wait).
    pub fn enable_peers(&mut self) {
        self.peers_enabled = true;
    }

    /// Attaches peer node `node` with `total` resources on `conn` (a new
    /// in-process connection): tasks may be placed on it from now on.
    pub(crate) fn attach_peer(&mut self, conn: ConnId, node: NodeId, total: ResourceSet) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.role = Some(Role::Peer);
        c.pid = 0;
        c.remote = Some(Box::new(Remote { node, total, in_flight: ResourceSet::new() }));
        self.peers_enabled = true;
        self.schedule();
    }

    /// The peers' rooms (step 1), for one pass of `schedule`.
    pub(super) fn peer_rooms(&self) -> Vec<(ConnId, ResourceSet)> {
        let mut rooms: Vec<(ConnId, ResourceSet)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| {
                let r = c.remote.as_ref()?;
                let mut room = r.total.clone();
                room.subtract(&r.in_flight);
                Some((*id, room))
            })
            .collect();
        rooms.sort_by_key(|(id, _)| *id);
        rooms
    }

    /// Whether some attached peer has `need` in total.
    pub(super) fn peer_could_run(&self, need: &ResourceSet) -> bool {
        self.conns.values().filter_map(|c| c.remote.as_ref()).any(|r| need.fits_in(&r.total))
    }

    /// Step 1's warning, once per task: nothing in the cluster has what it
    /// needs (yet).
    pub(super) fn warn_waiting(&mut self, tid: TaskId) {
        let Some(task) = self.tasks.get(&tid) else { return };
        if !self.warned_waiting.insert(tid) {
            return;
        }
        let missing = task.spec.resources.first_missing(&self.total);
        let text = match missing {
            Some((name, want, have)) => format!(
                "warning: task {} needs {want} {name}, and no node of the cluster has that much (this one has \
                 {have}); it waits for a node that has\n",
                task.spec.name()
            ),
            None => format!("warning: task {} waits for a node with room for it\n", task.spec.name()),
        };
        tracing::warn!("{}", text.trim_end());
        for sink in self.output.lock().iter() {
            sink.send(FromNode::Output { to_stderr: true, text: text.clone() });
        }
    }

    /// `tid` left peer `conn` (ended, or failed with it).
    pub(super) fn peer_released(&mut self, conn: ConnId, tid: TaskId) {
        let need = self.tasks.get(&tid).map(|t| t.spec.resources.clone()).unwrap_or_default();
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if let Some(at) = c.assigned.iter().position(|t| *t == tid) {
            c.assigned.remove(at);
            if let Some(r) = c.remote.as_mut() {
                r.in_flight.subtract(&need);
            }
        }
    }

    /// Step 5: the connection of peer `node` is gone with the tasks it ran
    /// (`assigned`); `reason` says why.
    pub(super) fn peer_gone(&mut self, node: NodeId, assigned: VecDeque<TaskId>, reason: &str) {
        for tid in assigned {
            let Some(task) = self.tasks.get_mut(&tid) else { continue };
            task.worker = None;
            if task.cancelled {
                self.complete_task(tid, Err(Error::TaskCancelled));
                continue;
            }
            let err = Error::WorkerCrashed {
                task: task.spec.name().to_string(),
                detail: format!("node {node}, which ran it, is gone ({reason})"),
            };
            if !self.retry(tid, &err) {
                self.complete_task(tid, Err(err));
            }
        }
        self.schedule();
    }
}
