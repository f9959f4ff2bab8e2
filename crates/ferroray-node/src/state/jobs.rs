//! Programs that connect to a node started on its own (a daemon): how their
//! functions' workers start, and what their end takes with it.
//!
//! A node embedded in a driver has commands for the kinds it runs from its
//! configuration, for its whole life: its program 0. A daemon has none:
//! each driver that connects over the socket brings them
//! (`ToNode::WorkerCommands`, right after the welcome), and the drivers
//! that brought the same commands form a program, whose workers are pools
//! of their own (`Pool`: kind and program):
//! 1. A driver whose commands no program has starts one (a new
//!    `ProgramId`); the spawner gets its commands (`PoolCmd::SetCommand`,
//!    by pool) before any spawn its tasks ask for, since both go through
//!    the same channel in order.
//! 2. A driver whose commands are a program's (another process of the same
//!    program, or of the same Python environment) joins it and shares its
//!    workers; a peer node's link joins only a program that no driver here
//!    runs (else a link back from a node the program reached would keep it,
//!    and that node's program, alive after its drivers left: each keeps
//!    the other's link open). Programs do not share workers: a worker runs the functions of
//!    the program it was started from, so a task goes to workers of its
//!    submitter's program only (`Task::pool`), and a worker's nested tasks
//!    are of its program.
//! 3. For the Rust kind the node does not take a path from the peer: it
//!    runs the executable the kernel says the driver runs
//!    (`/proc/<pid>/exe`, read when the commands arrive).
//! 4. When a program's last driver leaves, its commands go and every worker
//!    process of its pools that is not a detached actor's is killed (they
//!    run the program that left); a worker of it that connects later is
//!    turned away. Non-detached actors ended with their owner already
//!    (`owner_gone`). Other programs go on untouched.
//! 5. When any driver leaves, the tasks it submitted that have not finished
//!    are force-cancelled, with every task they started (their results
//!    would have nobody to go to). Its workers' output stops going to it:
//!    a program's drivers get its workers' output (`FromNode::Output`, sent
//!    by the output forwarder through `State::output`).
//! 6. With several drivers, a worker's output goes to the driver whose task
//!    it runs (`label`: its submitter, or its root's), as if each were a
//!    job of its own (as in Ray); to all the drivers of the worker's program
//!    when that is not known (a line printed between tasks, or by a task
//!    whose chain ended). Each line also names the task at the root of its
//!    chain that a driver submitted: a peer's link (a driver here) sends it
//!    on under its owner's task, for the driver there (`driver_of`).
//! 7. On a node of a cluster, each driver that joins over the socket is a
//!    job of the cluster's (as in Ray, one per driver): the node tells its
//!    directory (`ClusterDirectory::job_started`, with the command line the
//!    kernel shows for the driver's pid) and, when the driver leaves,
//!    `job_ended`. A peer node's link is no job: its program's driver is
//!    on the other node; it joins the program its hello's commands name
//!    (`Node::connect_program`), as a driver over the socket would.
//! 8. Each program with a driver has links to the peer nodes of its own
//!    (`Node::programs`, `Node::attach_peer`): the node at the other end
//!    runs its tasks in workers of the same program. The daemon is told
//!    when a program starts (`Node::on_programs_changed`), to attach it at
//!    once. A program's links close once it ended and nothing of it runs
//!    on them (`close_ended_links`), after what its end sent them.

use super::*;
use crate::WorkerCommand;
use ferroray_protocol::WorkerCommandSpec;
use std::collections::BTreeMap;

/// The programs of the drivers connected with worker commands.
#[derive(Default)]
pub(crate) struct Job {
    programs: BTreeMap<ProgramId, Program>,
    /// The last program number given (0 is the node's own).
    last: u32,
    /// The drivers told to the cluster as jobs (step 7).
    reported: FxHashSet<ConnId>,
    /// Told when a program starts or ends (step 8).
    changed: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Peer links of programs that ended may be open (step 8).
    ended_links: bool,
}

/// One program: its commands and the drivers connected with them.
struct Program {
    commands: BTreeMap<WorkerKind, WorkerCommand>,
    drivers: FxHashSet<ConnId>,
}

impl Job {
    fn drivers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.programs.values().flat_map(|p| p.drivers.iter().copied())
    }

    fn driver_count(&self) -> usize {
        self.programs.values().map(|p| p.drivers.len()).sum()
    }

    fn changed(&self) {
        if let Some(f) = &self.changed {
            f();
        }
    }
}

/// Most bytes of a driver's command line a job row keeps.
const MAX_ENTRYPOINT: usize = 1024;

/// The command line of process `pid`, arguments joined by spaces and
/// control characters (a `python -c` program's newlines) made spaces, cut
/// at [`MAX_ENTRYPOINT`] bytes (empty if it cannot be read).
fn entrypoint(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut text: String = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.len() > MAX_ENTRYPOINT {
        let mut cut = MAX_ENTRYPOINT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn same(a: &WorkerCommand, b: &WorkerCommand) -> bool {
    a.program == b.program && a.args == b.args && a.env == b.env
}

impl State {
    /// Step 6: the label of a worker's output while it runs `tid`: the
    /// driver it is for is the one that submitted it, or that submitted the
    /// task that did (following parents, which are kept while their
    /// children run); none when the job has one driver (all its output is
    /// that driver's anyway) or the chain is broken.
    /// The label's task is the one a driver submitted at the root of that
    /// chain (a peer's link maps it to its owner's task), else `tid`.
    pub(super) fn label(&self, name: &str, tid: TaskId, program: ProgramId) -> WorkerLabel {
        let root = self.chain_root(tid);
        let driver = if self.job.driver_count() > 1 { root.as_ref().map(|(_, o)| o.clone()) } else { None };
        WorkerLabel { name: name.to_string(), driver, task: Some(root.map_or(tid, |(t, _)| t)), program }
    }

    /// Step 6: the driver task `tid` is for, when there are several.
    pub(crate) fn driver_of(&self, tid: TaskId) -> Option<Outbox> {
        if self.job.driver_count() <= 1 {
            return None;
        }
        self.chain_root(tid).map(|(_, o)| o)
    }

    /// The program of the connection of worker id `id` (a driver or a
    /// worker), if it is here.
    pub(crate) fn program_of(&self, id: WorkerId) -> Option<ProgramId> {
        self.conns.values().find(|c| c.role.is_some() && c.worker_id == id).map(|c| c.program)
    }

    /// The first task in `tid`'s chain of parents (itself included) that a
    /// connected driver submitted, and that driver's outbox.
    fn chain_root(&self, tid: TaskId) -> Option<(TaskId, Outbox)> {
        let mut at = Some(tid);
        for _ in 0..64 {
            let t = at?;
            let submitter = t.submitter;
            if let Some(c) = self.job.drivers().filter_map(|d| self.conns.get(&d)).find(|c| c.worker_id == submitter) {
                return Some((t, c.outbox.clone()));
            }
            at = self.tasks.get(&t).and_then(|task| task.spec.parent);
        }
        None
    }

    /// Steps 1 to 3.
    pub(super) fn worker_commands(&mut self, conn: ConnId, specs: Vec<WorkerCommandSpec>) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.role != Some(Role::Driver) || !matches!(c.outbox, Outbox::Socket(_)) {
            let e = Error::Protocol("only a driver connected over the socket sends worker commands".into());
            return self.reject(conn, e);
        }
        if self.job.drivers().any(|d| d == conn) {
            return self.reject(conn, Error::Protocol("worker commands sent twice".into()));
        }
        let pid = c.pid;
        let mut commands = BTreeMap::new();
        for spec in specs {
            let program = match spec.kind {
                WorkerKind::Rust => match std::fs::read_link(format!("/proc/{pid}/exe")) {
                    Ok(p) => p,
                    Err(e) => {
                        let e = Error::InvalidOption(format!("cannot read the executable of driver pid {pid}: {e}"));
                        return self.reject(conn, e);
                    }
                },
                _ => spec.program.into(),
            };
            let command = WorkerCommand { program, args: spec.args, env: spec.env };
            if commands.insert(spec.kind, command).is_some() {
                return self.reject(conn, Error::Protocol(format!("two {:?} worker commands", spec.kind)));
            }
        }
        self.join_job(conn, commands);
        // Step 7.
        if let Some(hook) = self.directory.hook.clone() {
            let job = self.conns.get(&conn).map_or(WorkerId(0), |c| c.worker_id);
            self.job.reported.insert(conn);
            hook.job_started(crate::JobInfo { job, pid, entrypoint: entrypoint(pid) });
        }
    }

    /// Steps 1 and 2 for driver `conn` with `commands` (checked or made by
    /// the caller): the program it joined or started.
    pub(crate) fn join_job(&mut self, conn: ConnId, mut commands: BTreeMap<WorkerKind, WorkerCommand>) -> ProgramId {
        // The node's own commands stand: a driver of them is of program 0.
        commands.retain(|kind, _| !self.own_kinds.contains(kind));
        // A peer's link never joins a program a driver here runs (step 2):
        // a link back from a node this program reached would keep it alive
        // after its drivers left, and that node's program with it.
        let from_peer = self.conns.get(&conn).is_some_and(|c| c.from_peer);
        let conns = &self.conns;
        let links_only = |p: &Program| p.drivers.iter().all(|d| conns.get(d).is_some_and(|c| c.from_peer));
        let known = self.job.programs.iter().find(|(_, p)| {
            p.commands.len() == commands.len()
                && p.commands.iter().all(|(k, c)| commands.get(k).is_some_and(|theirs| same(c, theirs)))
                && (!from_peer || links_only(p))
        });
        let program = match known {
            Some((id, _)) => *id,
            None if commands.is_empty() => {
                // The node's own program: its commands stay with the node.
                let own = || Program { commands: BTreeMap::new(), drivers: FxHashSet::default() };
                self.job.programs.entry(ProgramId(0)).or_insert_with(own);
                ProgramId(0)
            }
            None => {
                self.job.last += 1;
                let id = ProgramId(self.job.last);
                for (kind, command) in &commands {
                    let pool = Pool { kind: *kind, program: id };
                    let _ = self.spawn.send(PoolCmd::SetCommand { pool, command: Some(command.clone()) });
                    self.pools.push(pool);
                }
                self.job.programs.insert(id, Program { commands, drivers: FxHashSet::default() });
                self.job.changed();
                id
            }
        };
        if let Some(p) = self.job.programs.get_mut(&program) {
            p.drivers.insert(conn);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.program = program;
            self.output.lock().push((program, c.outbox.clone()));
        }
        program
    }

    /// Step 8: `f` is told when a program starts or ends.
    pub(crate) fn on_programs_changed(&mut self, f: Arc<dyn Fn() + Send + Sync>) {
        self.job.changed = Some(f);
    }

    /// The programs with drivers, and the commands of each (step 8).
    pub(crate) fn programs(&self) -> Vec<(ProgramId, Vec<(WorkerKind, WorkerCommand)>)> {
        self.job
            .programs
            .iter()
            .map(|(id, p)| (*id, p.commands.iter().map(|(k, c)| (*k, c.clone())).collect()))
            .collect()
    }

    /// Driver `conn` is a job the cluster was told of (step 7).
    pub(super) fn is_reported(&self, conn: ConnId) -> bool {
        self.job.reported.contains(&conn)
    }

    /// A driver the cluster was told of, with worker id `id`, is connected.
    pub(super) fn reported_driver(&self, id: WorkerId) -> bool {
        self.job.reported.iter().any(|d| self.conns.get(d).is_some_and(|c| c.worker_id == id))
    }

    /// For tests: driver `conn` counts as a job the cluster was told of.
    #[cfg(test)]
    pub(crate) fn report_driver_for_tests(&mut self, conn: ConnId) {
        self.job.reported.insert(conn);
    }

    /// Steps 4 and 5: driver `conn` (worker id `driver`) is gone.
    pub(super) fn driver_left(&mut self, conn: ConnId, driver: WorkerId, outbox: &Outbox) {
        let Some((&program, p)) = self.job.programs.iter_mut().find(|(_, p)| p.drivers.contains(&conn)) else {
            return;
        };
        p.drivers.remove(&conn);
        let ended = p.drivers.is_empty();
        if self.job.reported.remove(&conn) {
            if let Some(hook) = self.directory.hook.clone() {
                hook.job_ended(driver);
            }
        }
        self.output.lock().retain(|(_, o)| !o.same(outbox));
        // The function table, step 4.
        self.published.retain(|f| f.exporter != driver);
        // Step 5: what it started goes with it, nested tasks included.
        let started: Vec<TaskId> = self.tasks.keys().filter(|t| t.submitter == driver).copied().collect();
        for tid in started {
            self.cancel(tid, true, true);
        }
        if !ended {
            return;
        }
        let Some(gone) = self.job.programs.remove(&program) else { return };
        if program == ProgramId(0) {
            // The node's own commands and workers stay (step 4 is for the
            // programs drivers brought).
            return;
        }
        for kind in gone.commands.keys().copied() {
            let pool = Pool { kind, program };
            let _ = self.spawn.send(PoolCmd::SetCommand { pool, command: None });
            self.pools.retain(|p| *p != pool);
        }
        let doomed: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.role == Some(Role::Worker) && c.program == program)
            .filter(|(_, c)| c.actor.is_none_or(|a| !self.is_detached(a)))
            .map(|(id, _)| *id)
            .collect();
        for w in doomed {
            self.doom(w);
        }
        self.idle.forget(program);
        self.early_deaths.forget(program);
        self.job.ended_links = true;
        self.job.changed();
    }

    /// Step 8: closes the peer links of programs that ended once nothing
    /// runs on them (no task, no actor of theirs on the peer: a detached
    /// actor keeps its link), so what the ending sent (cancels, kills)
    /// goes first. Called by the spawner's tick.
    pub fn close_ended_links(&mut self) {
        if !self.job.ended_links {
            return;
        }
        let mut idle = Vec::new();
        let mut busy = false;
        for (id, c) in &self.conns {
            let Some(r) = &c.remote else { continue };
            if self.program_alive(r.program) {
                continue;
            }
            let actor_there = self.actors.values().any(|a| a.worker == Some(*id) && a.on_peer.is_some());
            // Results left there for something still here keep it too
            // (`left` step 8): it lets them go when they are freed.
            if c.assigned.is_empty() && !actor_there && r.left.is_empty() {
                idle.push((*id, r.node));
            } else {
                busy = true;
            }
        }
        self.job.ended_links = busy;
        for (id, node) in idle {
            // Proxies calling through it move to a live link to their node
            // (`peer_conn` prefers one); with none, it stays for them.
            let other = self.peer_conn(node).filter(|o| *o != id);
            let proxies: Vec<ActorId> = self
                .actors
                .iter()
                .filter(|(_, a)| a.reached.is_some() && a.worker == Some(id))
                .map(|(a, _)| *a)
                .collect();
            match other {
                Some(o) => {
                    for a in proxies {
                        if let Some(actor) = self.actors.get_mut(&a) {
                            actor.worker = Some(o);
                        }
                    }
                }
                None if !proxies.is_empty() => {
                    self.job.ended_links = true;
                    continue;
                }
                None => {}
            }
            self.disconnect(id, "its program ended");
        }
    }

    /// Step 4: whether `program`'s workers are still wanted (a worker of a
    /// program that ended meanwhile is turned away).
    pub(super) fn program_alive(&self, program: ProgramId) -> bool {
        program == ProgramId(0) || self.job.programs.contains_key(&program)
    }
}
