//! Programs that connect to a node started on its own (a daemon): how their
//! functions' workers start, and what their end takes with it.
//!
//! A node embedded in a driver has commands for the kinds it runs from its
//! configuration, for its whole life. A daemon has none: each driver that
//! connects over the socket brings them (`ToNode::WorkerCommands`, right
//! after the welcome). The drivers connected with commands form the node's
//! job:
//! 1. The first driver's commands become the job's; the spawner gets them
//!    (`PoolCmd::SetCommand`) before any spawn this driver's tasks ask for,
//!    since both go through the same channel in order.
//! 2. A driver whose commands are the same (another process of the same
//!    program, or of the same Python environment) joins the job and shares
//!    its workers. A different one is refused: a worker runs the functions
//!    of the program it was started from, so two programs would need pools
//!    of their own.
//! 3. For the Rust kind the node does not take a path from the peer: it
//!    runs the executable the kernel says the driver runs
//!    (`/proc/<pid>/exe`, read when the commands arrive).
//! 4. When the job's last driver leaves, the job's commands go and every
//!    worker process of its kinds that is not a detached actor's is
//!    killed (they run the program that left). Non-detached actors ended
//!    with their owner already (`owner_gone`).
//! 5. When any driver of the job leaves, the tasks it submitted that have
//!    not finished are force-cancelled, with every task they started
//!    (their results would have nobody to go to). Its workers' output
//!    stops going to it: a job's drivers get its workers' output
//!    (`FromNode::Output`, sent by the output forwarder through
//!    `State::output`).
//! 6. With several drivers, a worker's output goes to the driver whose task
//!    it runs (`label`: its submitter, or its root's), as if each were a
//!    job of its own (as in Ray); to all of them when that is not known (a
//!    line printed between tasks, or by a task whose chain ended). Each line
//!    also names the task at the root of its chain that a driver submitted:
//!    a peer's link (a driver here) sends it on under its owner's task, for
//!    the driver there (`driver_of`).
//! 7. On a node of a cluster, each driver that joins over the socket is a
//!    job of the cluster's (as in Ray, one per driver): the node tells its
//!    directory (`ClusterDirectory::job_started`, with the command line the
//!    kernel shows for the driver's pid) and, when the driver leaves,
//!    `job_ended`. A peer node's link is no job: its program's driver is
//!    on the other node.

use super::*;
use crate::WorkerCommand;
use ferroray_protocol::WorkerCommandSpec;
use std::collections::BTreeMap;

/// The drivers connected with worker commands, and those commands.
#[derive(Default)]
pub(crate) struct Job {
    commands: BTreeMap<WorkerKind, WorkerCommand>,
    drivers: FxHashSet<ConnId>,
    /// Counts the changes of `commands` over the node's life (kept across
    /// jobs): a peer link made for one program is not used for the next.
    generation: u64,
    /// The drivers told to the cluster as jobs (step 7).
    reported: FxHashSet<ConnId>,
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
    pub(super) fn label(&self, name: &str, tid: TaskId) -> WorkerLabel {
        let root = self.chain_root(tid);
        let driver = if self.job.drivers.len() > 1 { root.as_ref().map(|(_, o)| o.clone()) } else { None };
        WorkerLabel { name: name.to_string(), driver, task: Some(root.map_or(tid, |(t, _)| t)) }
    }

    /// Step 6: the driver task `tid` is for, when the job has several.
    pub(crate) fn driver_of(&self, tid: TaskId) -> Option<Outbox> {
        if self.job.drivers.len() <= 1 {
            return None;
        }
        self.chain_root(tid).map(|(_, o)| o)
    }

    /// The first task in `tid`'s chain of parents (itself included) that a
    /// driver of the job submitted, and that driver's outbox.
    fn chain_root(&self, tid: TaskId) -> Option<(TaskId, Outbox)> {
        let mut at = Some(tid);
        for _ in 0..64 {
            let t = at?;
            let submitter = t.submitter;
            if let Some(c) =
                self.job.drivers.iter().filter_map(|d| self.conns.get(d)).find(|c| c.worker_id == submitter)
            {
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
        if let Err(e) = self.join_job(conn, commands) {
            return self.reject(conn, e);
        }
        // Step 7.
        if let Some(hook) = self.directory.hook.clone() {
            let job = self.conns.get(&conn).map_or(WorkerId(0), |c| c.worker_id);
            self.job.reported.insert(conn);
            hook.job_started(crate::JobInfo { job, pid, entrypoint: entrypoint(pid) });
        }
    }

    /// Steps 1 and 2 for driver `conn` with `commands` (checked or made by
    /// the caller): refused, with nothing changed, if the job is another
    /// program's.
    pub(crate) fn join_job(&mut self, conn: ConnId, mut commands: BTreeMap<WorkerKind, WorkerCommand>) -> Result<()> {
        // The node's own commands stand; the job's must agree with the job.
        commands.retain(|kind, _| !self.own_kinds.contains(kind));
        for (kind, command) in &commands {
            if let Some(theirs) = self.job.commands.get(kind) {
                if !same(theirs, command) {
                    return Err(Error::InvalidOption(format!(
                        "this node runs the {kind:?} workers of another program ({}); it serves one program's \
                         workers at a time",
                        theirs.program.display()
                    )));
                }
            }
        }
        for (kind, command) in commands {
            if !self.job.commands.contains_key(&kind) {
                let _ = self.spawn.send(PoolCmd::SetCommand { kind, command: Some(command.clone()) });
                self.job.commands.insert(kind, command);
                self.job.generation += 1;
                if !self.kinds.contains(&kind) {
                    self.kinds.push(kind);
                }
            }
        }
        self.job.drivers.insert(conn);
        if let Some(c) = self.conns.get(&conn) {
            self.output.lock().push(c.outbox.clone());
        }
        Ok(())
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
        self.job.drivers.insert(conn);
        self.job.reported.insert(conn);
    }

    /// The job's worker commands now, and their generation.
    pub(crate) fn program(&self) -> (u64, Vec<(WorkerKind, WorkerCommand)>) {
        (self.job.generation, self.job.commands.iter().map(|(k, c)| (*k, c.clone())).collect())
    }

    /// The generation of the job's worker commands (see `Job::generation`).
    pub(crate) fn program_generation(&self) -> u64 {
        self.job.generation
    }

    /// Steps 4 and 5: driver `conn` (worker id `driver`) is gone.
    pub(super) fn driver_left(&mut self, conn: ConnId, driver: WorkerId, outbox: &Outbox) {
        if !self.job.drivers.remove(&conn) {
            return;
        }
        if self.job.reported.remove(&conn) {
            if let Some(hook) = self.directory.hook.clone() {
                hook.job_ended(driver);
            }
        }
        self.output.lock().retain(|o| !o.same(outbox));
        // The function table, step 4.
        self.published.retain(|f| f.exporter != driver);
        // Step 5: what it started goes with it, nested tasks included.
        let started: Vec<TaskId> = self.tasks.keys().filter(|t| t.submitter == driver).copied().collect();
        for tid in started {
            self.cancel(tid, true, true);
        }
        if !self.job.drivers.is_empty() {
            return;
        }
        let kinds: Vec<WorkerKind> = self.job.commands.keys().copied().collect();
        self.job = Job {
            generation: self.job.generation + 1,
            reported: std::mem::take(&mut self.job.reported),
            ..Job::default()
        };
        for kind in kinds {
            let _ = self.spawn.send(PoolCmd::SetCommand { kind, command: None });
            self.kinds.retain(|k| *k != kind);
            let doomed: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.role == Some(Role::Worker) && c.kind == kind)
                .filter(|(_, c)| c.actor.is_none_or(|a| !self.is_detached(a)))
                .map(|(id, _)| *id)
                .collect();
            for w in doomed {
                self.doom(w);
            }
        }
    }
}
