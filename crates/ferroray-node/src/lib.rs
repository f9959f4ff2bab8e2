//! The node daemon: one per machine.
//!
//! - [`config`]: [`NodeConfig`], what a node offers and how it starts workers.
//! - [`state`]: the node's tables and every protocol handler: the object
//!   directory with its reference counts, the task table, resource
//!   accounting, scheduling, retries, cancellation, task events. All of it
//!   sits behind one mutex; handlers never block, they only update tables and
//!   queue outgoing messages.
//! - [`pool`]: the worker pool's process side: a long-lived spawner thread
//!   that starts worker processes, reaps them, and forwards their output to
//!   the driver line by line.
//! - [`server`]: the socket side: accepts connections on a Unix socket,
//!   reads frames into [`state`] and writes queued messages back, batching
//!   whatever is queued into one write.
//!
//! - `state_tests` (tests only): the state machine driven through its
//!   message handler with in-process peers and no processes.
//!
//! - [`local`]: the in-process driver's connection: direct calls in, and
//!   the node's messages handed to the driver's [`Inbox`] by the thread
//!   that queued them (no thread switch on the way back).
//!
//! A node is embedded in the driver by [`Node::start`] (its server runs on a
//! thread of its own) and the driver talks to it through
//! [`LocalConnection`], a direct call with no socket; workers always use the
//! socket.

pub mod config;
pub mod local;
pub mod pool;
#[cfg(test)]
mod remote_tests;
pub mod server;
pub mod state;
#[cfg(test)]
mod state_tests;

pub use config::{NodeConfig, WorkerCommand};

/// Where a node of a cluster keeps what the cluster shares: the names of
/// its actors and its jobs (the head's tables; `state::directory`,
/// `state::jobs`). Called under the node's lock: an implementation queues
/// the request and returns; answers come back through
/// [`Node::name_claimed`] and [`Node::actor_found`].
pub trait ClusterDirectory: Send + Sync {
    /// This node wants `entry.name` for its actor `entry.actor`.
    fn claim(&self, ticket: u64, entry: DirectoryEntry);
    /// This node's actor died: its name is free.
    fn release(&self, entry: DirectoryEntry);
    /// Which node has the live actor named `name`.
    fn find(&self, ticket: u64, name: &str);
    /// A program's driver connected: a job starts.
    fn job_started(&self, job: JobInfo);
    /// Driver `job` left: its job ended.
    fn job_ended(&self, job: ferroray_common::WorkerId);
    /// Driver `job` exported `function`: the cluster's function table may
    /// keep it (answered by [`Node::function_published`] if it does).
    fn export_function(
        &self,
        function: ferroray_common::FunctionId,
        job: ferroray_common::WorkerId,
        pickled: Arc<Vec<u8>>,
    );
}

/// A job as its node sees it start.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// The driver's id, which names the job.
    pub job: ferroray_common::WorkerId,
    pub pid: u32,
    /// The driver's command line (`/proc/<pid>/cmdline`, read by the node,
    /// at most 1 KiB).
    pub entrypoint: String,
}

/// A named actor, as the directory keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryEntry {
    pub name: String,
    pub actor: ferroray_common::ActorId,
    pub detached: bool,
    /// What a handle needs (`ActorSpec::class`, `ActorSpec::front`).
    pub class: String,
    pub front: Vec<u8>,
}

/// The directory's answer to a find: the actor and the node that owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundActor {
    pub node: ferroray_common::NodeId,
    pub entry: DirectoryEntry,
}
pub use ferroray_transport::{Inbox, Link};
pub use local::LocalConnection;
pub use state::{Pool, ProgramId};

use ferroray_common::{ClusterToken, Error, Result, WorkerId};
use ferroray_protocol::{NodeInfo, Role, ToNode, PROTOCOL_VERSION};
use ferroray_store::Arena;
use parking_lot::Mutex;
use state::{Outbox, State};
use std::sync::Arc;

/// What the node's tick calls after a burst, beside glibc's `malloc_trim`
/// (`server::ConnLimits::trim_after_burst`), on the server thread.
static HEAP_TRIM: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets how the server thread gives back heap memory a burst left free, for
/// a process whose global allocator is not glibc's (the Python extension's
/// mimalloc returns a thread's free pages only when that thread allocates
/// again, or collects). The first call wins.
pub fn set_heap_trim(trim: fn()) {
    let _ = HEAP_TRIM.set(trim);
}

/// Shared by the server, the spawner and local connections.
pub(crate) struct Shared {
    /// Locked through [`Shared::lock`] only (see [`local`]).
    state: Mutex<State>,
    pub info: NodeInfo,
    pub arena: Arc<Arena>,
    deliverer: local::Deliverer,
    /// The cluster token (also in the state, which checks hellos).
    token: ClusterToken,
    /// Connection caps and who was refused (`crate::server`).
    limits: Arc<server::ConnLimits>,
}

/// A running node daemon.
pub struct Node {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server_thread: Option<std::thread::JoinHandle<()>>,
    delivery_thread: Option<std::thread::JoinHandle<()>>,
    pool: pool::Spawning,
    socket_name: String,
}

impl Node {
    /// Starts a node: maps the store, binds its socket, and runs the server on
    /// a thread of its own.
    pub fn start(mut config: NodeConfig) -> Result<Node> {
        config.validate()?;
        if config.token.is_none() {
            config.token = Some(ClusterToken::random().map_err(Error::io)?);
        }
        let token = config.token.clone().expect("set above");
        let arena = Arc::new(Arena::create(config.store_capacity).map_err(Error::io)?);
        let info = NodeInfo {
            node_id: config.node_id,
            inline_threshold: config.inline_threshold,
            store_capacity: config.store_capacity,
        };
        let mut store = ferroray_store::Store::new(arena.clone(), config.spill_parent.clone()).map_err(Error::io)?;
        if let Some(bytes) = config.store_keep_free {
            store.set_keep_free(bytes);
        }
        let socket_name = config.socket_name.clone();
        let listener = server::bind_abstract(&socket_name)?;
        let (pool, spawn_tx) = pool::Spawning::start(&config, arena.fd(), socket_name.clone());
        let state = Mutex::new(State::new(&config, info.clone(), store, spawn_tx));
        let shared = Arc::new(Shared {
            state,
            info,
            arena,
            deliverer: local::Deliverer::default(),
            token,
            limits: Arc::new(server::ConnLimits::new(&config)),
        });
        let _ = pool.shared.set(Arc::downgrade(&shared));
        let delivery_shared = shared.clone();
        let delivery_thread = std::thread::Builder::new()
            .name("ferroray-deliver".into())
            .spawn(move || delivery_shared.deliverer.run())
            .map_err(Error::io)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server_shared = shared.clone();
        let server_thread = std::thread::Builder::new()
            .name("ferroray-node".into())
            .spawn(move || server::run(server_shared, listener, rx))
            .map_err(Error::io)?;
        Ok(Node {
            shared,
            shutdown: Some(tx),
            server_thread: Some(server_thread),
            delivery_thread: Some(delivery_thread),
            pool,
            socket_name,
        })
    }

    pub fn info(&self) -> &NodeInfo {
        &self.shared.info
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.shared.arena
    }

    /// The cluster token a connection's hello must carry.
    pub fn token(&self) -> &ClusterToken {
        &self.shared.token
    }

    /// The abstract Unix socket name workers connect to.
    pub fn socket_name(&self) -> &str {
        &self.socket_name
    }

    /// Connects an in-process client (the driver) without a socket: its
    /// messages are direct calls, the node's go to `client`.
    pub fn connect_local(&self, worker_id: WorkerId, client: Arc<dyn Inbox>) -> Result<LocalConnection> {
        let conn = self.local_driver(&mut self.shared.lock(), worker_id, client);
        Ok(LocalConnection { shared: self.shared.clone(), conn })
    }

    /// A new in-process connection of this process, accepted as a driver.
    fn local_driver(&self, st: &mut State, worker_id: WorkerId, client: Arc<dyn Inbox>) -> state::ConnId {
        let link = Arc::new(local::LocalOutbox::new(client));
        let pid = std::process::id();
        let conn = st.add_connection(Outbox::Local(link), pid);
        let token = self.shared.token.clone();
        st.handle(conn, ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid, role: Role::Driver, token });
        conn
    }

    /// The peers' loads from the cluster's view: what each node had
    /// available at its last heartbeat (`state::remote` step 1).
    pub fn peer_loads(&self, loads: &[(ferroray_common::NodeId, ferroray_common::ResourceSet)]) {
        self.shared.lock().peer_loads(loads);
    }

    /// Nodes the cluster's view has as dead: objects borrowed from them
    /// that wait for a link there are lost now (`state::left` step 15).
    pub fn peers_dead(&self, nodes: &[ferroray_common::NodeId]) {
        self.shared.lock().peers_dead(nodes);
    }

    /// Marks the node as part of a cluster: a task that needs more than
    /// any node has waits for a node that has it rather than fail.
    pub fn enable_peers(&self) {
        self.shared.lock().enable_peers();
    }

    /// Names of actors are the cluster's from now on: claimed from, let
    /// go to and looked up in `directory` (`state::directory`).
    pub fn set_directory(&self, directory: Arc<dyn ClusterDirectory>) {
        self.shared.lock().set_directory(directory);
    }

    /// The directory's answer to claim `ticket` (`Err`: why not).
    pub fn name_claimed(&self, ticket: u64, result: std::result::Result<(), String>) {
        self.shared.lock().name_claimed(ticket, result);
    }

    /// The directory's answer to find `ticket`.
    pub fn actor_found(&self, ticket: u64, found: Option<FoundActor>) {
        self.shared.lock().actor_found(ticket, found);
    }

    /// The cluster's function table keeps `function`: calls of it go to
    /// other nodes without its bytes from now on (`state::tasks`, the
    /// function table).
    pub fn function_published(&self, function: ferroray_common::FunctionId) {
        self.shared.lock().function_published(function);
    }

    /// Whether this node's daemon has lost its head (`state::tasks`, the
    /// function table, step 5): calls of published functions carry their
    /// bytes meanwhile.
    pub fn set_head_away(&self, away: bool) {
        self.shared.lock().set_head_away(away);
    }

    /// This node has the bytes of exported function `function`.
    pub fn has_function(&self, function: ferroray_common::FunctionId) -> bool {
        self.shared.lock().has_function(function)
    }

    /// Keeps `function`'s bytes as the cluster's function table gave them
    /// (a trusted source: no exporter check); `false` if the node's table
    /// is full.
    pub fn import_function(&self, function: ferroray_common::FunctionId, pickled: Vec<u8>) -> bool {
        self.shared.lock().import_function(function, pickled)
    }

    /// What another node needs to call the actor whose handle object is
    /// `id`, if it is one (`state::directory` step 5).
    pub fn actor_of_handle(&self, id: ferroray_common::ObjectId) -> Option<FoundActor> {
        self.shared.lock().actor_of_handle(id)
    }

    /// A handle of an actor another node owns arrives: calls made here go
    /// there (`state::directory` step 5).
    /// `via`: the peer's link that brought it (told when the proxy goes).
    pub fn reach_actor(&self, found: FoundActor, via: &LocalConnection) {
        self.shared.lock().reach_actor(found, Some(via.conn));
    }

    /// Attaches peer node `node`, which has `total` resources, as an
    /// executor of this node's tasks (`state::remote`): the node sends it
    /// tasks as to a worker (`client` gets them) and takes its answers on
    /// the returned connection. Dropping it detaches the peer: what it ran
    /// is retried.
    pub fn attach_peer(
        &self,
        node: ferroray_common::NodeId,
        program: ProgramId,
        total: ferroray_common::ResourceSet,
        client: Arc<dyn Inbox>,
    ) -> LocalConnection {
        let link = Arc::new(local::LocalOutbox::new(client));
        let conn = {
            let mut st = self.shared.lock();
            let conn = st.add_connection(Outbox::Local(link), 0);
            st.attach_peer(conn, node, program, total);
            conn
        };
        LocalConnection { shared: self.shared.clone(), conn }
    }

    /// Connects an in-process driver of a program whose workers start with
    /// `commands` (a peer node's program, whose daemon made them): as a
    /// driver connected over the socket with [`ToNode::WorkerCommands`],
    /// but the commands are taken as they are. It joins the program of
    /// those commands here, or starts it (`state::jobs`).
    pub fn connect_program(
        &self,
        worker_id: WorkerId,
        commands: Vec<(ferroray_protocol::WorkerKind, WorkerCommand)>,
        client: Arc<dyn Inbox>,
    ) -> (LocalConnection, ProgramId) {
        let (conn, program) = {
            let mut st = self.shared.lock();
            let conn = self.local_driver(&mut st, worker_id, client);
            st.mark_from_peer(conn);
            let program = st.join_job(conn, commands.into_iter().collect());
            (conn, program)
        };
        (LocalConnection { shared: self.shared.clone(), conn }, program)
    }

    /// The programs connected to this daemon's node, each with the worker
    /// commands a peer node needs to run its tasks (`state::jobs` step 8).
    pub fn programs(&self) -> Vec<(ProgramId, Vec<(ferroray_protocol::WorkerKind, WorkerCommand)>)> {
        self.shared.lock().programs()
    }

    /// Calls `f` whenever a program starts or ends here (`state::jobs`
    /// step 8). It is called under the node's lock: it must only wake
    /// something.
    pub fn on_programs_changed(&self, f: Arc<dyn Fn() + Send + Sync>) {
        self.shared.lock().on_programs_changed(f);
    }

    /// Lines a worker printed (already prefixed), to the drivers of this
    /// node's job as its own workers' output goes (to the driver whose task
    /// `task` is, when known: `state::jobs` step 6), else to this process's
    /// stdout or stderr: a peer node's output for tasks it ran for this one.
    /// A line of a task whose submitter has left is dropped: it is nobody
    /// else's.
    pub fn output(&self, to_stderr: bool, text: &str, task: Option<ferroray_common::TaskId>) {
        let (sinks, own) = {
            let st = self.shared.lock();
            // The drivers of the submitter's program (all, if no task).
            let program = match task {
                Some(t) => match st.program_of(t.submitter) {
                    Some(p) => Some(p),
                    None => return,
                },
                None => None,
            };
            let sinks: Vec<Outbox> = st
                .output
                .lock()
                .iter()
                .filter(|(p, _)| program.is_none_or(|w| w == *p))
                .map(|(_, o)| o.clone())
                .collect();
            (sinks, task.and_then(|t| st.driver_of(t)))
        };
        if let Some(d) = own.filter(|d| sinks.iter().any(|s| s.same(d))) {
            d.send_now(ferroray_protocol::FromNode::Output { to_stderr, text: text.to_string(), task });
            return;
        }
        if sinks.is_empty() {
            use std::io::Write;
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(text.as_bytes())
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|_| out.flush())
            };
            return;
        }
        for sink in sinks {
            sink.send_now(ferroray_protocol::FromNode::Output { to_stderr, text: text.to_string(), task });
        }
    }

    /// Object store and table sizes, for tests and leak checks.
    pub fn stats(&self) -> state::NodeStats {
        self.shared.lock().stats()
    }

    /// Every recorded task event, oldest first.
    pub fn task_events(&self) -> Vec<ferroray_protocol::TaskEvent> {
        self.shared.lock().task_events()
    }

    /// The actors this node knows (at most `max`).
    pub fn actors(&self, max: usize) -> Vec<state::ActorSummary> {
        self.shared.lock().actor_summaries(max)
    }

    /// The objects this node tracks (at most `max`).
    pub fn objects(&self, max: usize) -> Vec<state::ObjectSummary> {
        self.shared.lock().object_summaries(max)
    }

    /// Stops the node: kills and reaps every worker, closes the socket and
    /// frees the store. Blocks until all of it is done.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().begin_shutdown();
        self.pool.shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.server_thread.take() {
            let _ = t.join();
        }
        // Last: what the steps above queued for local clients still goes out.
        self.shared.deliverer.stop();
        if let Some(t) = self.delivery_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}
