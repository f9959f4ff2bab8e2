//! Worker processes: start, kill, reap, and forward their output.
//!
//! Every worker is started from one long-lived spawner thread, because a
//! worker asks the kernel to kill it when its parent *thread* dies
//! (`PR_SET_PDEATHSIG`): so the workers go when the node's process goes, even
//! by a crash, and not before.
//!
//! The spawner signals only processes it started and has not reaped yet (a
//! reaped pid may belong to anybody by now), and only by a positive pid.
//!
//! Output forwarding: a worker's stdout and stderr are pipes; one
//! `ferroray-log` thread, whatever the number of workers, copies each line
//! to this process's stdout or stderr, prefixed with the task the worker
//! runs (or ran last) and its pid:
//! `(large_values_generator pid=373609) yielded return value 0`. A node
//! with drivers connected over its socket (a daemon's job) sends the lines
//! to them instead (`FromNode::Output`), as its own output would be a log
//! nobody watches.

use crate::state::{OutputSinks, Pool, TaskNames};
use crate::{NodeConfig, Shared};
use ferroray_common::{ActorId, WorkerId};
use ferroray_protocol::FromNode;
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// Environment variables a worker process is started with.
pub use ferroray_transport::env;

/// How many reaped pids the spawner remembers (`Spawner::reaped`).
const REAPED_KEPT: usize = 256;

pub enum PoolCmd {
    /// Start a worker of `pool`: for the pool, or the process of `actor`.
    Spawn {
        pool: Pool,
        actor: Option<ActorId>,
    },
    Kill(u32),
    /// From now on start workers of `pool` with `command` (`None`: none).
    SetCommand {
        pool: Pool,
        command: Option<crate::WorkerCommand>,
    },
    Shutdown,
}

/// The spawner thread, as the node holds it.
pub(crate) struct Spawning {
    tx: Sender<PoolCmd>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(crate) shared: Arc<OnceLock<Weak<Shared>>>,
}

struct Spawner {
    config: NodeConfig,
    /// The command of each pool (the node's own program's from `config`).
    commands: std::collections::HashMap<Pool, crate::WorkerCommand>,
    store_fd: RawFd,
    socket_name: String,
    /// Started and not reaped: the only pids it ever signals.
    children: Vec<Child>,
    /// The last pids reaped (at most `REAPED_KEPT`): a kill asked for one
    /// of them came after its process ended (it exited on the end of its
    /// socket, say, while the kill waited behind a spawn), which is no
    /// reason to warn.
    reaped: std::collections::VecDeque<u32>,
    shared: Arc<OnceLock<Weak<Shared>>>,
    /// The one thread that forwards every worker's output.
    log: Option<LogForwarder>,
}

impl Spawning {
    pub fn start(config: &NodeConfig, store_fd: RawFd, socket_name: String) -> (Spawning, Sender<PoolCmd>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(OnceLock::new());
        let mut spawner = Spawner {
            commands: config.worker_commands.iter().map(|(k, c)| (Pool::own(*k), c.clone())).collect(),
            config: config.clone(),
            store_fd,
            socket_name,
            children: Vec::new(),
            reaped: std::collections::VecDeque::new(),
            shared: shared.clone(),
            log: None,
        };
        let thread = std::thread::Builder::new()
            .name("ferroray-spawner".into())
            .spawn(move || spawner.run(rx))
            .expect("starting the spawner thread");
        (Spawning { tx: tx.clone(), thread: Some(thread), shared }, tx)
    }

    /// Kills every worker and waits until all are reaped.
    pub fn shutdown(&mut self) {
        let _ = self.tx.send(PoolCmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Spawner {
    fn run(&mut self, rx: Receiver<PoolCmd>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(PoolCmd::Spawn { pool, actor }) => {
                    if let Err(e) = self.spawn(pool, actor) {
                        tracing::warn!("cannot start a {:?} worker of {}: {e}", pool.kind, pool.program);
                        if let Some(shared) = self.shared.get().and_then(Weak::upgrade) {
                            shared.lock().spawn_failed(pool, actor, e.to_string());
                        }
                    }
                }
                Ok(PoolCmd::Kill(pid)) => match self.children.iter().find(|c| c.id() == pid) {
                    Some(child) => kill(child),
                    None if self.reaped.contains(&pid) => {}
                    None => tracing::warn!("not killing pid {pid}: not a worker this node started"),
                },
                Ok(PoolCmd::SetCommand { pool, command }) => match command {
                    Some(c) => {
                        self.commands.insert(pool, c);
                    }
                    None => {
                        self.commands.remove(&pool);
                    }
                },
                Ok(PoolCmd::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let mut exited = Vec::new();
            self.children.retain_mut(|c| match c.try_wait() {
                Ok(Some(status)) => {
                    exited.push((c.id(), describe_exit(status)));
                    false
                }
                _ => true,
            });
            for (pid, _) in &exited {
                if self.reaped.len() == REAPED_KEPT {
                    self.reaped.pop_front();
                }
                self.reaped.push_back(*pid);
            }
            if let Some(shared) = self.shared.get().and_then(Weak::upgrade) {
                let mut st = shared.lock();
                for (pid, status) in exited {
                    st.worker_exited(pid, status);
                }
                st.expire_crashes();
                st.force_overdue_cancels();
                st.expire_borrows(std::time::Instant::now());
                st.close_ended_links();
            }
        }
        for c in &self.children {
            kill(c);
        }
        for mut c in self.children.drain(..) {
            let _ = c.wait();
        }
        if let Some(log) = self.log.take() {
            log.stop();
        }
    }

    fn spawn(&mut self, pool: Pool, actor: Option<ActorId>) -> std::io::Result<()> {
        let kind = pool.kind;
        let Some(cmd) = self.commands.get(&pool) else {
            return Err(std::io::Error::other(format!(
                "no command starts {kind:?} workers of {} on this node",
                pool.program
            )));
        };
        let worker_id = WorkerId::random();
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(env::WORKER, &self.socket_name)
            .env(env::WORKER_KIND, kind.env_name())
            .env(env::WORKER_ID, worker_id.0.to_string())
            .envs(self.config.token.as_ref().map(|t| (env::TOKEN, t.to_hex())))
            .env(env::STORE_FD, self.store_fd.to_string())
            .env(env::STORE_CAPACITY, self.config.store_capacity.to_string())
            .env(ferroray_common::spin::ENV, self.config.spin_budget.as_micros().to_string())
            .stdin(Stdio::null());
        if self.config.log_to_driver {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let store_fd = self.store_fd;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // The store's memfd is close-on-exec; keep it, in this child only.
                let flags = libc::fcntl(store_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(store_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Die with the node.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = spawn_retrying_busy(&mut command)?;
        let pid = child.id();
        if let Some(shared) = self.shared.get().and_then(Weak::upgrade) {
            shared.lock().spawned(pid, worker_id, pool, actor);
        }
        if child.stdout.is_some() || child.stderr.is_some() {
            if self.log.is_none() {
                let (names, sinks) = self.names();
                self.log = Some(LogForwarder::start(names, sinks)?);
            }
            let log = self.log.as_ref().expect("just started");
            if let Some(out) = child.stdout.take() {
                log.forward(out.into(), pid, false);
            }
            if let Some(err) = child.stderr.take() {
                log.forward(err.into(), pid, true);
            }
        }
        self.children.push(child);
        Ok(())
    }

    fn names(&self) -> (TaskNames, OutputSinks) {
        self.shared
            .get()
            .and_then(Weak::upgrade)
            .map(|s| {
                let st = s.lock();
                (st.names.clone(), st.output.clone())
            })
            .unwrap_or_default()
    }
}

/// SIGKILLs a child that has not been reaped, so its pid is still its own.
/// How a process ended, in words: "exited with code 3", "was killed by
/// signal 9 (SIGKILL)".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGQUIT => " (SIGQUIT)",
                libc::SIGTRAP => " (SIGTRAP)",
                libc::SIGSYS => " (SIGSYS)",
                _ => "",
            };
            let core = if status.core_dumped() { ", core dumped" } else { "" };
            format!("was killed by signal {sig}{name}{core}")
        }
        None => format!("ended ({status})"),
    }
}

fn kill(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else { return };
    if pid <= 0 {
        return;
    }
    // SAFETY: a plain syscall; `pid` is positive (one process, never a group
    // or "every process") and names our unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// `command.spawn()`, tried again a few times while the executable is
/// "busy" (`ETXTBSY`): a file just written (a peer's executable received
/// into the session's `exe/`) cannot be run while any process holds it
/// open for writing, and a process that forks at that moment holds its
/// writer's descriptor until it execs, for a moment.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut pause = Duration::from_millis(5);
    for _ in 0..8 {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
    command.spawn()
}

/// The `ferroray-log` thread: one current-thread runtime reading every
/// worker's pipes, so the thread count does not grow with the workers.
struct LogForwarder {
    tx: tokio::sync::mpsc::UnboundedSender<(OwnedFd, u32, bool)>,
    thread: std::thread::JoinHandle<()>,
}

impl LogForwarder {
    fn start(names: TaskNames, sinks: OutputSinks) -> std::io::Result<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(OwnedFd, u32, bool)>();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("ferroray-log".into()).spawn(move || {
            rt.block_on(async move {
                let mut pipes = tokio::task::JoinSet::new();
                while let Some((fd, pid, to_stderr)) = rx.recv().await {
                    match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                        Ok(pipe) => {
                            pipes.spawn(copy_lines(pipe, pid, names.clone(), sinks.clone(), to_stderr));
                        }
                        Err(e) => tracing::warn!("cannot read the output of pid {pid}: {e}"),
                    }
                    while pipes.try_join_next().is_some() {}
                }
                // Stopping: the workers are dead; what they wrote is copied,
                // unless something they started still holds a pipe open.
                let drain = async { while pipes.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
            })
        })?;
        Ok(LogForwarder { tx, thread })
    }

    fn forward(&self, fd: OwnedFd, pid: u32, to_stderr: bool) {
        let _ = self.tx.send((fd, pid, to_stderr));
    }

    fn stop(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// Longest line forwarded whole; the rest of a longer one is dropped, with
/// a mark.
const MAX_LINE: usize = 64 << 10;

async fn copy_lines(
    pipe: tokio::net::unix::pipe::Receiver,
    pid: u32,
    names: TaskNames,
    sinks: OutputSinks,
    to_stderr: bool,
) {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let label = names.lock().get(&pid).cloned();
        let name = label.as_ref().map_or("worker", |l| l.name.as_str());
        let prefix = format!("({name} pid={pid}) ");
        {
            let sinks = sinks.lock();
            if !sinks.is_empty() {
                if line.len() > MAX_LINE {
                    line.truncate(MAX_LINE);
                    line.extend_from_slice(b" [line cut]\n");
                }
                let text = format!("{prefix}{}", String::from_utf8_lossy(&line));
                // The driver whose task it runs, if it is still connected;
                // else every driver of the job (`jobs` step 6).
                let task = label.as_ref().and_then(|l| l.task);
                let program = label.as_ref().map(|l| l.program);
                let driver = label.and_then(|l| l.driver);
                let here = driver.as_ref().map(|d| sinks.iter().any(|(_, s)| s.same(d)));
                match (driver, here) {
                    (Some(d), Some(true)) => d.send_now(FromNode::Output { to_stderr, text, task }),
                    // Its driver left: the line is nobody else's.
                    (Some(_), _) => {}
                    (None, _) => {
                        // The drivers of its program (all, if not known).
                        for (_, sink) in sinks.iter().filter(|(p, _)| program.is_none_or(|w| w == *p)) {
                            sink.send_now(FromNode::Output { to_stderr, text: text.clone(), task });
                        }
                    }
                }
                continue;
            }
        }
        let _ = if to_stderr {
            let mut e = std::io::stderr().lock();
            e.write_all(prefix.as_bytes()).and_then(|_| e.write_all(&line))
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(prefix.as_bytes()).and_then(|_| o.write_all(&line)).and_then(|_| o.flush())
        };
    }
}
