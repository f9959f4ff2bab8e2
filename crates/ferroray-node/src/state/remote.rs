//! Peers: other nodes of the cluster that run this node's tasks. The node's
//! daemon attaches one in-process connection per peer node
//! (`Node::attach_peer`, role [`Role::Peer`]) and carries what goes on it
//! to that node and back. To this node a peer is an executor speaking the
//! worker's protocol, which runs every task sent to it at once:
//!
//! 1. Placement (`schedule`): a ready task that cannot start here now (no
//!    room, or this node could never run it) goes to the peer with room for
//!    it that has the most CPU free (`PeerRooms::pick`): room is the peer's
//!    total minus what this node sent it and has not heard back about (over
//!    all its links there, one per program: a node has one room however
//!    many programs place work on it), and minus what its other owners use
//!    there as of its last heartbeat (`peer_loads`). A task that only a peer could run, with no peer
//!    room for it now, is queued on the peer with the most room for
//!    queued tasks (`PIPELINE_DEPTH` times its total beyond it, more for a
//!    node that gets through its tasks fast: [`Pace`]), as tasks
//!    queue behind a busy worker here: the round trip between two tasks is
//!    hidden, and answers come back in batches; with no such room either
//!    it stays queued here. A task that came from a peer
//!    (`Task::from_peer`) runs where its owner placed it: it is never
//!    placed on this node's peers in turn. A task that no node has the
//!    resources for waits for a node that has, with a warning to the job's
//!    drivers once it has waited `WAIT_WARNING_AFTER` (`warn_long_waits`),
//!    and is placed when such a node is attached.
//! 2. Dispatch (`assign`): as to a worker: ref arguments are resolved and
//!    shared-memory ones pinned for the peer's connection, which reads them
//!    to send them and then unpins them. The task takes no lease here: this
//!    node's resources are not the peer's.
//! 3. The peer answers as a worker does: results written into this node's
//!    store (`Allocate`) and `TaskDone` (large ones left on the peer until
//!    read: `left`, steps 8 to 13); a generator's items as
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
//! 6. Actors: one that has no room here goes to a peer with room
//!    (`place_actor_on_peer`), which holds its resources for its life (in
//!    the peer's `in_flight`, apart from its tasks'); its creation and calls
//!    go there as tasks do, the actor table stays here. Its end is told to
//!    the peer (`FromNode::KillActor`) and counts as its process ending
//!    (`remote_actor_ended`, then `actor_process_ended`: a restart places
//!    it again, here or on a peer). Its death there is learnt from a call
//!    failing with `ActorDied`, or from the peer's loss.
//!
//! 7. Refs in arguments: a peer gets a copy of every object a task's
//!    arguments name, nested ones included (the daemon's link sends them
//!    with the task, `ToNode::Import` there), so any task may go to a peer,
//!    except one whose arguments hold a streaming generator that this node
//!    keeps: it lives in this node's tables, not in a value, so such a task
//!    runs here ([`stays_here`]). An actor's handle goes with what its node
//!    needs to call the actor (`Node::actor_of_handle`, sent ahead by the
//!    link): the peer makes a proxy for it (`directory` step 3), whose calls
//!    come back to the node that owns the actor.

use super::*;
use ferroray_common::{ActorId, NodeId};
use std::time::{Duration, Instant};

/// How long a task waits for a node that has what it needs before its
/// drivers are warned (step 1).
pub(crate) const WAIT_WARNING_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// A peer node, as this node accounts for it.
pub(crate) struct Remote {
    /// Which node, for errors and events.
    pub(super) node: NodeId,
    /// The program whose tasks go on this link: the node at the other end
    /// runs them in workers of that program (its hello names its commands).
    pub(super) program: ProgramId,
    /// What it has (from the cluster's view when attached).
    pub(super) total: ResourceSet,
    /// The resources of the tasks this link sent it that have not ended:
    /// its node's room is `total` minus these over all this node's links
    /// there, and minus `others` (step 1).
    pub(super) in_flight: ResourceSet,
    /// What the peer's other owners use there: its used resources at its
    /// last heartbeat (`State::peer_loads`) less, summed over this node's
    /// links there, the most each had in flight over the last two views
    /// (the heartbeat was taken at some moment of that span, and this
    /// node's tasks that ended since must not count as others'; the sum
    /// may count more than this node had at once, erring toward room),
    /// never below zero; the same on each of this node's links there.
    pub(super) others: ResourceSet,
    /// The most of `in_flight` since the last view, and over the view
    /// before (for `others`).
    pub(super) peak: ResourceSet,
    pub(super) peak_before: ResourceSet,
    /// Results it keeps for this node (`left` step 8), lost with it.
    pub(super) left: FxHashSet<ObjectId>,
    /// How fast the node gets through this link's tasks: how many may
    /// queue there (step 1, [`Pace::queue_times`]).
    pub(super) pace: Pace,
}

impl Remote {
    /// Takes `need` into `in_flight` (and its peak).
    pub(super) fn take(&mut self, need: &ResourceSet) {
        self.in_flight.add(need);
        // Most placements stay under the peak: nothing to make then.
        if !self.in_flight.fits_in(&self.peak) {
            self.peak = max_of(&self.peak, &self.in_flight);
        }
    }
}

/// How deep tasks may queue on a peer beyond what it runs (step 1): deep
/// enough that answers come back in batches, shallow enough that tasks do
/// not wait there long while another node could run them.
///
/// 1. A window opens when the link goes from no task to one, and counts
///    the tasks that end on it while it has any. Tasks that take room
///    only: an actor's calls (which take none) are neither counted nor
///    keep a window open.
/// 2. It closes once it has lasted [`PACE_WINDOW`] (or when the link has
///    none left, if it lasted that long; a shorter one is dropped): its
///    time per ended task is the `gap` (the last window's alone: after a
///    few long tasks, a burst of short ones deepens the queue within its
///    first window). Idle time never counts, a long task's time does.
/// 3. Queued tasks may be as many as the node gets through in
///    [`QUEUE_BUDGET`] at that gap, per CPU of the node's, within
///    `PIPELINE_DEPTH` and [`MAX_PEER_DEPTH`]: a node of short tasks takes
///    a deeper queue (fewer, larger batches on the link, both nodes'
///    threads woken less often per task); one of long tasks, or one not
///    measured yet, the same as a busy worker here. Once an open window
///    has lasted [`PACE_WINDOW`], its time so far per task ended in it
///    plus one counts as a gap too when longer: a peer measured fast that
///    now runs long tasks gets a shallow queue again before the first of
///    them ends, not after every queued one did.
///
/// A dispatch that fails before the task leaves counts as a task ended at
/// once (rare: an argument that cannot be sent).
#[derive(Debug, Default, Clone)]
pub(crate) struct Pace {
    /// Tasks on the link (sent, not ended).
    on_link: u32,
    /// When the open window began; none while the link has no task.
    since: Option<Instant>,
    /// Tasks ended in the open window.
    ended: u32,
    /// The time per ended task, when measured.
    gap: Option<Duration>,
}

/// Step 2: how long a window lasts before it gives a gap.
const PACE_WINDOW: Duration = Duration::from_millis(5);
/// Step 3: the work that may wait in a peer's queue, in time.
const QUEUE_BUDGET: Duration = Duration::from_millis(4);
/// Step 3: at most this many times a peer's room queued beyond it.
pub(crate) const MAX_PEER_DEPTH: i64 = 32;

impl Pace {
    /// Step 1: a task was sent on the link.
    pub(super) fn sent(&mut self, now: Instant) {
        if self.on_link == 0 {
            self.since = Some(now);
            self.ended = 0;
        }
        self.on_link += 1;
    }

    /// Steps 1 and 2: a task sent on the link ended there (or failed).
    pub(super) fn ended(&mut self, now: Instant) {
        self.on_link = self.on_link.saturating_sub(1);
        let Some(since) = self.since else { return };
        self.ended += 1;
        let lasted = now.saturating_duration_since(since);
        if lasted >= PACE_WINDOW {
            self.gap = Some(lasted / self.ended);
            self.since = Some(now);
            self.ended = 0;
        }
        if self.on_link == 0 {
            self.since = None;
        }
    }

    /// Step 3: how many times the room of a node with `total` its queue
    /// may hold at `now`, counting the room itself.
    pub(super) fn queue_times(&self, total: &ResourceSet, now: Instant) -> i64 {
        let least = 1 + super::scheduling::PIPELINE_DEPTH as i64;
        let Some(measured) = self.gap else { return least };
        // The open window so far, as if a task ended now, once it lasted
        // as long as a window does.
        let lasted = self.since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let so_far = if lasted >= PACE_WINDOW { lasted / (self.ended + 1) } else { Duration::ZERO };
        let gap = measured.max(so_far);
        if gap.is_zero() {
            return least;
        }
        let cpus = (total.get(ferroray_common::resources::CPU).ceil() as i64).max(1);
        let queued = (QUEUE_BUDGET.as_nanos() / gap.as_nanos()) as i64;
        (1 + queued / cpus).clamp(least, 1 + MAX_PEER_DEPTH)
    }

    /// A pace measured at `gap` per task (tests).
    #[cfg(test)]
    pub(crate) fn measured(gap: Duration) -> Pace {
        Pace { gap: Some(gap), ..Pace::default() }
    }

    /// Tasks counted on the link, and whether a window is open (tests).
    #[cfg(test)]
    pub(crate) fn counted(&self) -> (u32, bool) {
        (self.on_link, self.since.is_some())
    }
}

/// The larger amount of each resource of `a` and `b`.
fn max_of(a: &ResourceSet, b: &ResourceSet) -> ResourceSet {
    let mut m = a.fixed().clone();
    for (k, v) in b.fixed() {
        let e = m.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
    ResourceSet::from_fixed(m)
}

/// Step 1: the room of each peer link for one scheduling pass. A node with
/// several links to it (one per program of this node's) has one room: each
/// link's entry shows the node's, and a task placed on one link takes it
/// from all of them, so programs placing tasks between two heartbeats do
/// not each count the node's whole room.
pub(super) struct PeerRooms(Vec<PeerRoom>);

pub(super) struct PeerRoom {
    link: ConnId,
    node: NodeId,
    room: ResourceSet,
}

impl PeerRooms {
    /// Each link's node's total, less what this node has in flight there
    /// over all its links and what other owners use; in the order links
    /// were attached. `queued`: the total taken as many times as the
    /// link's pace lets tasks queue there (the room for tasks queued behind
    /// what it runs), else once (the node's room).
    /// Rooms for tasks queued behind what peers run (`of` with `queued`),
    /// less what `placed` (tasks of `tasks` and their peers) took already.
    pub(super) fn less_placed(
        conns: &FxHashMap<ConnId, Conn>,
        now: Instant,
        placed: &[(TaskId, ConnId)],
        tasks: &FxHashMap<TaskId, Task>,
    ) -> Self {
        let mut q = PeerRooms::of(conns, true, now);
        for (tid, peer) in placed {
            if let Some(t) = tasks.get(tid) {
                q.take(*peer, &t.spec.resources);
            }
        }
        q
    }

    pub(super) fn of(conns: &FxHashMap<ConnId, Conn>, queued: bool, now: Instant) -> Self {
        let mut in_flight: FxHashMap<NodeId, ResourceSet> = FxHashMap::default();
        for r in conns.values().filter_map(|c| c.remote.as_ref()) {
            in_flight.entry(r.node).or_default().add(&r.in_flight);
        }
        let mut rooms: Vec<PeerRoom> = conns
            .iter()
            .filter_map(|(id, c)| {
                let r = c.remote.as_ref()?;
                let times = if queued { r.pace.queue_times(&r.total, now) } else { 1 };
                let mut room = if times == 1 {
                    r.total.clone()
                } else {
                    ResourceSet::from_fixed(
                        r.total.fixed().iter().map(|(k, v)| (k.clone(), v.saturating_mul(times))).collect(),
                    )
                };
                room.subtract(&in_flight[&r.node]);
                room.subtract(&r.others);
                Some(PeerRoom { link: *id, node: r.node, room })
            })
            .collect();
        rooms.sort_by_key(|p| p.link);
        PeerRooms(rooms)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The link of `program` to place a task of `shape` on: of the nodes
    /// with room for it, the one with the most CPU free (the first
    /// attached, of equals).
    pub(super) fn pick(
        &self,
        shape: &ResourceSet,
        program: ProgramId,
        conns: &FxHashMap<ConnId, Conn>,
    ) -> Option<ConnId> {
        let cpu = |room: &ResourceSet| room.fixed().get(ferroray_common::resources::CPU).copied().unwrap_or(0);
        let of_program =
            |id: &ConnId| conns.get(id).and_then(|c| c.remote.as_ref()).is_some_and(|r| r.program == program);
        let mut best: Option<&PeerRoom> = None;
        for p in self.0.iter().filter(|p| shape.fits_in(&p.room) && of_program(&p.link)) {
            if best.is_none_or(|b| cpu(&p.room) > cpu(&b.room)) {
                best = Some(p);
            }
        }
        best.map(|p| p.link)
    }

    /// Whether `link`'s node has room for `shape`.
    pub(super) fn fits(&self, link: ConnId, shape: &ResourceSet) -> bool {
        self.0.iter().any(|p| p.link == link && shape.fits_in(&p.room))
    }

    /// A task of `shape` placed on `link` takes its node's room.
    pub(super) fn take(&mut self, link: ConnId, shape: &ResourceSet) {
        let Some(node) = self.0.iter().find(|p| p.link == link).map(|p| p.node) else { return };
        for p in self.0.iter_mut().filter(|p| p.node == node) {
            p.room.subtract(shape);
        }
    }
}

/// Step 7: whether a task must run on this node, because refs in its
/// arguments name a streaming generator of this node's (a copy of the
/// value would not carry the stream).
pub(super) fn stays_here(spec: &TaskSpec, streams: &FxHashMap<TaskId, Stream>) -> bool {
    spec.contained.iter().any(|c| *c == ObjectId::for_return(c.task, 0) && streams.contains_key(&c.task))
}

impl State {
    /// Marks the node as part of a cluster (step 1: unplaceable tasks wait).
    pub fn enable_peers(&mut self) {
        self.peers_enabled = true;
    }

    /// Names of actors are the cluster's from now on (`directory`).
    pub fn set_directory(&mut self, directory: Arc<dyn crate::ClusterDirectory>) {
        self.directory.hook = Some(directory);
    }

    /// The peer connection to node `node`, if it is attached.
    /// (Of a live program's, if any: one of a program that ended may be
    /// closing.)
    pub(super) fn peer_conn(&self, node: NodeId) -> Option<ConnId> {
        let to = |c: &Conn| c.remote.as_ref().is_some_and(|r| r.node == node);
        let live = |c: &Conn| c.remote.as_ref().is_some_and(|r| self.program_alive(r.program));
        let mut links: Vec<(ConnId, bool)> =
            self.conns.iter().filter(|(_, c)| to(c)).map(|(id, c)| (*id, live(c))).collect();
        links.sort_by_key(|(id, live)| (!*live, *id));
        links.first().map(|(id, _)| *id)
    }

    /// Marks `conn` as a peer node's link (its tasks stay here, step 1).
    pub(crate) fn mark_from_peer(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.from_peer = true;
        }
    }

    /// Attaches peer node `node` with `total` resources on `conn` (a new
    /// in-process connection), for the tasks of `program`: they may be
    /// placed on it from now on.
    pub(crate) fn attach_peer(&mut self, conn: ConnId, node: NodeId, program: ProgramId, total: ResourceSet) {
        // What other owners use there, as this node's other links to it
        // know it (one room per node, step 1).
        let others = self
            .conns
            .values()
            .filter_map(|c| c.remote.as_ref())
            .find(|r| r.node == node)
            .map_or_else(ResourceSet::new, |r| r.others.clone());
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.role = Some(Role::Peer);
        c.pid = 0;
        c.program = program;
        c.remote = Some(Box::new(Remote {
            node,
            program,
            total,
            in_flight: ResourceSet::new(),
            others,
            peak: ResourceSet::new(),
            peak_before: ResourceSet::new(),
            left: FxHashSet::default(),
            pace: Pace::default(),
        }));
        self.peers_enabled = true;
        self.proxies_linked(node);
        self.linked(conn, node, program);
        self.schedule();
    }

    /// The time peers' paces are read and kept at: now (in tests, the
    /// clock they set, if any).
    pub(super) fn pace_now(&self) -> Instant {
        #[cfg(test)]
        if let Some(t) = self.pace_clock {
            return t;
        }
        Instant::now()
    }

    /// Peer `conn`'s pace (tests).
    #[cfg(test)]
    pub(crate) fn pace_of(&self, conn: ConnId) -> Option<Pace> {
        self.conns.get(&conn).and_then(|c| c.remote.as_ref()).map(|r| r.pace.clone())
    }

    /// Sets peer `conn`'s gap as if measured (tests).
    #[cfg(test)]
    pub(crate) fn set_peer_gap(&mut self, conn: ConnId, gap: Duration) {
        if let Some(r) = self.conns.get_mut(&conn).and_then(|c| c.remote.as_mut()) {
            r.pace.gap = Some(gap);
        }
    }

    /// The peers' rooms (step 1), for one pass of `schedule`.
    pub(super) fn peer_rooms(&self) -> PeerRooms {
        PeerRooms::of(&self.conns, false, self.pace_now())
    }

    /// The peers' loads from the cluster's view (step 1): what each node
    /// had available at its last heartbeat. What its other owners use
    /// there comes off its room here.
    pub fn peer_loads(&mut self, loads: &[(NodeId, ResourceSet)]) {
        // The most this node had on each node over the span the report was
        // taken in, over all its links there.
        let mut mine: FxHashMap<NodeId, ResourceSet> = FxHashMap::default();
        for r in self.conns.values().filter_map(|c| c.remote.as_ref()) {
            mine.entry(r.node).or_default().add(&max_of(&max_of(&r.peak, &r.peak_before), &r.in_flight));
        }
        let mut changed = false;
        for c in self.conns.values_mut() {
            let Some(r) = c.remote.as_mut() else { continue };
            let Some((_, available)) = loads.iter().find(|(n, _)| *n == r.node) else { continue };
            let mut used = r.total.clone();
            used.subtract(available);
            used.subtract(&mine[&r.node]);
            // The peak starts again from what is there now.
            r.peak_before = std::mem::replace(&mut r.peak, r.in_flight.clone());
            let others = ResourceSet::from_fixed(used.into_fixed().into_iter().filter(|(_, v)| *v > 0).collect());
            if others != r.others {
                r.others = others;
                changed = true;
            }
        }
        if changed {
            self.schedule();
        }
    }

    /// Whether some attached peer has `need` in total.
    pub(super) fn peer_could_run(&self, need: &ResourceSet) -> bool {
        self.conns.values().filter_map(|c| c.remote.as_ref()).any(|r| need.fits_in(&r.total))
    }

    /// Step 1: notes that nothing in the cluster has what `tid` needs (yet).
    pub(super) fn warn_waiting(&mut self, tid: TaskId) {
        if !self.warned_waiting.contains(&tid) {
            self.waiting_since.entry(tid).or_insert_with(std::time::Instant::now);
        }
    }

    /// Step 1's warning, once per task that has waited `WAIT_WARNING_AFTER`
    /// (by `now`) for a node that has what it needs; called periodically.
    pub fn warn_long_waits(&mut self, now: std::time::Instant) {
        if self.waiting_since.is_empty() {
            return;
        }
        let due: Vec<TaskId> = self
            .waiting_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= WAIT_WARNING_AFTER)
            .map(|(t, _)| *t)
            .collect();
        for tid in due {
            self.waiting_since.remove(&tid);
            let need = match self.tasks.get(&tid) {
                Some(t) => t.spec.resources.clone(),
                None => continue,
            };
            // A node that can run it has joined meanwhile: nothing to say.
            if !need.fits_in(&self.total) && !self.peer_could_run(&need) {
                self.warn_now(tid);
            }
        }
    }

    fn warn_now(&mut self, tid: TaskId) {
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
        let program = task.pool.program;
        for (_, sink) in self.output.lock().iter().filter(|(p, _)| *p == program) {
            sink.send(FromNode::Output { to_stderr: true, text: text.clone(), task: None });
        }
    }

    /// `tid` left peer `conn` (ended, or failed with it). An actor's tasks
    /// take no room of their own (step 6).
    pub(super) fn peer_released(&mut self, conn: ConnId, tid: TaskId) {
        let need = self.tasks.get(&tid).filter(|t| t.spec.actor.is_none()).map(|t| t.spec.resources.clone());
        let now = self.pace_now();
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if let Some(at) = c.assigned.iter().position(|t| *t == tid) {
            c.assigned.remove(at);
            if let (Some(r), Some(need)) = (c.remote.as_mut(), need) {
                r.in_flight.subtract(&need);
                r.pace.ended(now);
            }
        }
    }

    /// Step 6: actor `id` goes to `peer`, which holds `want` for it.
    pub(super) fn place_actor_on_peer(&mut self, id: ActorId, peer: ConnId, want: ResourceSet) {
        if let Some(r) = self.conns.get_mut(&peer).and_then(|c| c.remote.as_mut()) {
            r.take(&want);
        }
        if let Some(a) = self.actors.get_mut(&id) {
            a.on_peer = Some(want);
            a.worker = Some(peer);
        }
        if self.tasks.contains_key(&id.0) {
            self.assign(id.0, peer, false);
        }
    }

    /// What peer `conn` held for an actor comes back.
    pub(super) fn peer_hold_released(&mut self, conn: ConnId, hold: &ResourceSet) {
        if let Some(r) = self.conns.get_mut(&conn).and_then(|c| c.remote.as_mut()) {
            r.in_flight.subtract(hold);
        }
    }

    /// Step 6: ends actor `id` on its peer `w` now (kill, drain, its job's
    /// end, with `Actor::ending` set by the caller).
    pub(super) fn end_on_peer(&mut self, id: ActorId, w: ConnId, status: &str) {
        self.send(w, FromNode::KillActor { actor: id, no_restart: true });
        self.remote_actor_ended(id, w, status.to_string());
    }

    /// Step 6: actor `id`'s process on peer `w` is gone: its hold there and
    /// its tasks leave the peer, then as for any actor process that ended.
    pub(super) fn remote_actor_ended(&mut self, id: ActorId, w: ConnId, status: String) {
        let Some(a) = self.actors.get_mut(&id) else { return };
        if a.worker != Some(w) {
            return;
        }
        if let Some(hold) = a.on_peer.take() {
            self.peer_hold_released(w, &hold);
        }
        let tasks = &self.tasks;
        let mut mine = VecDeque::new();
        if let Some(c) = self.conns.get_mut(&w) {
            c.assigned.retain(|t| {
                let its = tasks.get(t).and_then(|t| t.spec.actor_id()) == Some(id);
                if its {
                    mine.push_back(*t);
                }
                !its
            });
        }
        self.actor_process_ended(id, mine, status);
    }

    /// Step 6: a call of an actor on peer `conn` failed with `ActorDied`:
    /// the actor died there. True if it was such a call (handled here).
    pub(super) fn peer_actor_died(&mut self, conn: ConnId, tid: TaskId, e: &Error) -> bool {
        let Error::ActorDied { cause, .. } = e else { return false };
        let Some(ferroray_protocol::ActorTask::Call { actor }) =
            self.tasks.get(&tid).and_then(|t| t.spec.actor.clone())
        else {
            return false;
        };
        let Some(a) = self.actors.get_mut(&actor) else { return false };
        if a.on_peer.is_none() || a.worker != Some(conn) {
            return false;
        }
        if matches!(cause, ferroray_common::ActorDeathCause::Exited) {
            a.ending.get_or_insert((cause.clone(), false));
        }
        self.remote_actor_ended(actor, conn, cause.to_string());
        self.schedule();
        true
    }

    /// Step 5: peer connection `conn` (node `node`) is gone with the tasks
    /// it ran (`assigned`); `reason` says why. Actors there restart.
    pub(super) fn peer_gone(&mut self, conn: ConnId, r: Remote, mut assigned: VecDeque<TaskId>, reason: &str) {
        let node = r.node;
        self.lose_left(conn, node, r.left);
        let on_it: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, a)| a.worker == Some(conn) && a.on_peer.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in on_it {
            let tasks = &self.tasks;
            let (mine, rest): (VecDeque<TaskId>, VecDeque<TaskId>) =
                assigned.into_iter().partition(|t| tasks.get(t).and_then(|t| t.spec.actor_id()) == Some(id));
            assigned = rest;
            if let Some(a) = self.actors.get_mut(&id) {
                a.on_peer = None;
            }
            self.actor_process_ended(id, mine, format!("node {node}, where it ran, is gone ({reason})"));
        }
        for tid in assigned {
            self.unlend(tid);
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

#[cfg(test)]
mod pace_tests {
    use super::*;

    fn two_cpus() -> ResourceSet {
        ResourceSet::new().with(ferroray_common::resources::CPU, 2.0)
    }

    #[test]
    fn a_window_gives_the_time_per_ended_task_and_idle_time_never_counts() {
        let least = 1 + scheduling::PIPELINE_DEPTH as i64;
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut p = Pace::default();
        assert_eq!(p.queue_times(&two_cpus(), at(0)), least, "not measured: as deep as a busy worker");
        // 100 tasks end over 5 ms while the link has some: 50 us each.
        p.sent(at(0));
        for i in 1..=100 {
            p.sent(at(i * 50 - 1));
            p.ended(at(i * 50));
        }
        assert_eq!(p.gap, Some(Duration::from_micros(50)));
        // 4 ms / 50 us = 80 tasks queued, over 2 CPUs: 1 + 40, within the most.
        assert_eq!(p.queue_times(&two_cpus(), at(5_000)), 1 + MAX_PEER_DEPTH);
        // The link empties and stays idle for a second: a short window
        // closed by the link emptying is dropped, and the idle time is not
        // a gap.
        p.ended(at(5_100));
        assert_eq!(p.on_link, 0);
        assert_eq!(p.queue_times(&two_cpus(), at(1_005_000)), 1 + MAX_PEER_DEPTH, "idle: no window open");
        p.sent(at(1_005_100));
        p.ended(at(1_005_200));
        assert_eq!(p.gap, Some(Duration::from_micros(50)));
        // Long tasks: one ends after a second, with nothing left on the link.
        p.sent(at(2_000_000));
        p.ended(at(3_000_000));
        assert_eq!(p.gap, Some(Duration::from_secs(1)), "the last window's alone");
        assert_eq!(p.queue_times(&two_cpus(), at(3_000_000)), least);
        // Short tasks again: deep within their first window.
        p.sent(at(4_000_000));
        for i in 1..=100 {
            p.sent(at(4_000_000 + i * 50 - 1));
            p.ended(at(4_000_000 + i * 50));
        }
        assert_eq!(p.queue_times(&two_cpus(), at(4_005_000)), 1 + MAX_PEER_DEPTH);
    }

    #[test]
    fn a_fast_peer_running_long_tasks_gets_a_shallow_queue_before_any_ends() {
        let least = 1 + scheduling::PIPELINE_DEPTH as i64;
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = Pace::measured(Duration::from_micros(50));
        // Long tasks sent: while none ends, the open window's time per
        // (ended + 1) task grows, and the queue with it shrinks.
        p.sent(at(0));
        p.sent(at(0));
        assert_eq!(p.queue_times(&two_cpus(), at(0)), 1 + MAX_PEER_DEPTH);
        assert_eq!(p.queue_times(&two_cpus(), at(4)), 1 + MAX_PEER_DEPTH, "not a window's length yet");
        assert_eq!(p.queue_times(&two_cpus(), at(5)), least, "5 ms a task: none more fits in 4 ms");
        // One ends after 5 ms (the window's gap is 5 ms), the other runs on.
        p.ended(at(5));
        assert_eq!(p.queue_times(&two_cpus(), at(6)), least);
        assert_eq!(p.queue_times(&two_cpus(), at(100)), least);
    }

    #[test]
    fn the_queue_grows_with_the_pace_between_its_bounds() {
        let cpus = |n: f64| ResourceSet::new().with(ferroray_common::resources::CPU, n);
        let least = 1 + scheduling::PIPELINE_DEPTH as i64;
        // 4 ms at 200 us a task is 20 tasks: 1 + 10 for 2 CPUs, 1 + 20 for
        // one; a node with no CPUs counts as one.
        let now = Instant::now();
        let p = Pace::measured(Duration::from_micros(200));
        assert_eq!(p.queue_times(&cpus(2.0), now), 11);
        assert_eq!(p.queue_times(&cpus(1.0), now), 21);
        assert_eq!(p.queue_times(&ResourceSet::new(), now), 21);
        assert_eq!(p.queue_times(&cpus(64.0), now), least);
        assert_eq!(Pace::measured(Duration::from_nanos(1)).queue_times(&cpus(1.0), now), 1 + MAX_PEER_DEPTH);
        assert_eq!(Pace::measured(Duration::ZERO).queue_times(&cpus(1.0), now), least, "no gap measured");
    }
}
