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
//! A node is embedded in the driver by [`Node::start`] (its server runs on a
//! thread of its own) and the driver talks to it through
//! [`LocalConnection`], a direct call with no socket; workers always use the
//! socket.

pub mod config;
pub mod pool;
pub mod server;
pub mod state;

pub use config::{NodeConfig, WorkerCommand};

use ferroray_common::{Error, Result, WorkerId};
use ferroray_protocol::{FromNode, NodeInfo, Role, ToNode, PROTOCOL_VERSION};
use ferroray_store::Arena;
use parking_lot::Mutex;
use state::{ConnId, State};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Shared by the server, the spawner and local connections.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub info: NodeInfo,
    pub arena: Arc<Arena>,
}

/// A running node daemon.
pub struct Node {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server_thread: Option<std::thread::JoinHandle<()>>,
    pool: pool::Pool,
    socket_name: String,
}

impl Node {
    /// Starts a node: maps the store, binds its socket, and runs the server on
    /// a thread of its own.
    pub fn start(config: NodeConfig) -> Result<Node> {
        config.validate()?;
        let arena = Arc::new(Arena::create(config.store_capacity).map_err(Error::io)?);
        let info = NodeInfo {
            node_id: config.node_id,
            inline_threshold: config.inline_threshold,
            store_capacity: config.store_capacity,
        };
        let store = ferroray_store::Store::new(arena.clone(), config.spill_dir.clone()).map_err(Error::io)?;
        let socket_name = config.socket_name.clone();
        let listener = server::bind_abstract(&socket_name)?;
        let (pool, spawn_tx) = pool::Pool::start(&config, arena.fd(), socket_name.clone());
        let shared =
            Arc::new(Shared { state: Mutex::new(State::new(&config, info.clone(), store, spawn_tx)), info, arena });
        let _ = pool.shared.set(Arc::downgrade(&shared));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server_shared = shared.clone();
        let server_thread = std::thread::Builder::new()
            .name("ferroray-node".into())
            .spawn(move || server::run(server_shared, listener, rx))
            .map_err(Error::io)?;
        Ok(Node { shared, shutdown: Some(tx), server_thread: Some(server_thread), pool, socket_name })
    }

    pub fn info(&self) -> &NodeInfo {
        &self.shared.info
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.shared.arena
    }

    /// The abstract Unix socket name workers connect to.
    pub fn socket_name(&self) -> &str {
        &self.socket_name
    }

    /// Connects an in-process client (the driver) without a socket.
    pub fn connect_local(&self, worker_id: WorkerId) -> Result<LocalConnection> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = {
            let mut st = self.shared.state.lock();
            let conn = st.add_connection(tx);
            st.handle(
                conn,
                ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid: std::process::id(), role: Role::Driver },
            );
            conn
        };
        Ok(LocalConnection { shared: self.shared.clone(), conn, rx: Mutex::new(Some(rx)) })
    }

    /// Object store and table sizes, for tests and leak checks.
    pub fn stats(&self) -> state::NodeStats {
        self.shared.state.lock().stats()
    }

    /// Stops the node: kills and reaps every worker, closes the socket and
    /// frees the store. Blocks until all of it is done.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.state.lock().begin_shutdown();
        self.pool.shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.server_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An in-process connection to a node: messages are handled by a direct call.
pub struct LocalConnection {
    shared: Arc<Shared>,
    conn: ConnId,
    rx: Mutex<Option<mpsc::UnboundedReceiver<FromNode>>>,
}

impl LocalConnection {
    pub fn send(&self, msg: ToNode) {
        self.shared.state.lock().handle(self.conn, msg);
    }

    /// Handles an allocation at once (no reply message needed in-process).
    pub fn allocate(&self, size: u64) -> Result<u64> {
        self.shared.state.lock().allocate(self.conn, size)
    }

    /// The receiving half, taken once by the client's reader thread.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<FromNode>> {
        self.rx.lock().take()
    }

    pub fn info(&self) -> NodeInfo {
        self.shared.info.clone()
    }

    pub fn arena(&self) -> Arc<Arena> {
        self.shared.arena.clone()
    }
}

impl Drop for LocalConnection {
    fn drop(&mut self) {
        self.shared.state.lock().disconnect(self.conn, "driver disconnected");
    }
}
