//! The control store's tables, kept by the head: the node table
//! (membership and health), the names of actors ([`ActorNames`]), the
//! jobs ([`JobTable`]) and the exported functions ([`FunctionTable`]).
//!
//! A node's life in the table:
//! 1. `register`: alive, bound to the connection it came on. Only that
//!    connection may send its heartbeats (`crate::head` checks), and no
//!    other connection may register the same id while it is open.
//! 2. `heartbeat`: its load and the time it was last heard from.
//! 3. `disconnected`: its connection closed. It stays alive (a node whose
//!    link broke for a moment registers again on a new connection) until
//!    the timeout says otherwise.
//! 4. `sweep`: a node not heard from for `node_timeout` is dead. So is one
//!    that said `leave`. A dead id never comes back: a node declared dead
//!    may have had its work retried elsewhere, so it must start again as a
//!    new node.
//!
//! The table writes through a [`TableStore`] (`crate::storage`): each
//! node's registration (its `NodeDesc`), whether it is the head, and its
//! death (cause and order), one row per node in [`storage::NODES`], written
//! when one of these changes. Loads and the time a node was last heard from
//! are not written: a load changes with every heartbeat (a write per node
//! per second for nothing a restart needs: a rejoined node reports its load
//! within one interval), and a restarted head counts silence from its own
//! start. [`NodeTable::restore`] reads the rows back: a node that was alive
//! is alive again, unbound, with one node timeout from the restart to send
//! a heartbeat (it rejoins on a new connection, as after any broken link;
//! after that the sweeper declares it dead as usual); a dead node stays
//! dead; the old head's own node, gone with its process, is declared dead.

use crate::error::{ClusterError, Result};
use crate::storage::{self, MemoryStore, TableStore};
use crate::wire::{ClusterView, FunctionRow, JobRow, NamedActor, NodeDesc, NodeEntry, NodeLoad, MAX_NODES};
use ferroray_common::NodeId;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cause given to the node of a head that restarted.
pub const HEAD_RESTARTED: &str = "its head restarted";

/// Dead nodes kept for `status` and `list nodes`; older ones are dropped.
pub const MAX_DEAD_KEPT: usize = 1_000;

/// Which connection a node is bound to (`crate::head` numbers them).
pub type ConnId = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Alive,
    Dead { cause: String },
}

struct NodeRecord {
    desc: NodeDesc,
    /// The last load it reported (empty until its first heartbeat).
    load: NodeLoad,
    health: Health,
    /// When it last registered or sent a heartbeat.
    last_heard: Instant,
    /// The connection it registered on, while that is open. `None` for the
    /// head's own node (it has no connection) and for a node whose link
    /// closed.
    conn: Option<ConnId>,
    is_head: bool,
    /// Order of death, to drop the oldest dead first.
    died: u64,
}

/// What the store keeps of a node (see the module's docs).
#[derive(Clone, PartialEq, Message)]
struct StoredNode {
    #[prost(message, optional, tag = "1")]
    desc: Option<NodeDesc>,
    #[prost(bool, tag = "2")]
    is_head: bool,
    #[prost(bool, tag = "3")]
    dead: bool,
    #[prost(string, tag = "4")]
    death_cause: String,
    #[prost(uint64, tag = "5")]
    died: u64,
}

/// Membership and health of every node.
pub struct NodeTable {
    nodes: BTreeMap<NodeId, NodeRecord>,
    node_timeout: Duration,
    deaths: u64,
    store: Arc<dyn TableStore>,
}

impl NodeTable {
    /// An empty table in the head's memory.
    pub fn new(node_timeout: Duration) -> Self {
        NodeTable { nodes: BTreeMap::new(), node_timeout, deaths: 0, store: Arc::new(MemoryStore::default()) }
    }

    /// The table `store` holds (empty for a new store), writing through it
    /// from now on; `now` is the restart, from which nodes that were alive
    /// have one node timeout to be heard from. A row that does not decode
    /// fails it.
    pub fn restore(node_timeout: Duration, store: Arc<dyn TableStore>, now: Instant) -> Result<Self> {
        let mut table = NodeTable { nodes: BTreeMap::new(), node_timeout, deaths: 0, store };
        let mut old_heads = Vec::new();
        for (key, bytes) in table.store.load(storage::NODES) {
            let bad = |reason: String| ClusterError::Storage {
                url: table.store.describe(),
                reason: format!("node table row {key}: {reason}"),
            };
            let stored = StoredNode::decode(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
            let desc = stored.desc.ok_or_else(|| bad("no description".into()))?;
            crate::wire::check_desc(&desc).map_err(|e| bad(e.to_string()))?;
            let id = NodeId(desc.node_id);
            if key != id.to_string() {
                return Err(bad(format!("holds node {id}")));
            }
            let health = if stored.dead { Health::Dead { cause: stored.death_cause } } else { Health::Alive };
            if stored.is_head && health == Health::Alive {
                old_heads.push(id);
            }
            table.deaths = table.deaths.max(stored.died);
            let record = NodeRecord {
                desc,
                load: NodeLoad::default(),
                health,
                last_heard: now,
                conn: None,
                // Only the running head's node is the head; the others are
                // dead (below) or were already.
                is_head: false,
                died: stored.died,
            };
            table.nodes.insert(id, record);
        }
        for id in old_heads {
            table.declare_dead(id, HEAD_RESTARTED.to_string());
        }
        Ok(table)
    }

    /// Writes `id`'s row as it is now.
    fn persist(&self, id: NodeId) {
        let Some(r) = self.nodes.get(&id) else { return };
        let (dead, death_cause) = match &r.health {
            Health::Alive => (false, String::new()),
            Health::Dead { cause } => (true, cause.clone()),
        };
        let stored = StoredNode { desc: Some(r.desc.clone()), is_head: r.is_head, dead, death_cause, died: r.died };
        self.store.put(storage::NODES, &id.to_string(), stored.encode_to_vec());
    }

    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// The head's own node: alive for as long as the head runs.
    pub fn register_head(&mut self, desc: NodeDesc, now: Instant) {
        let id = NodeId(desc.node_id);
        let record = NodeRecord {
            desc,
            load: NodeLoad::default(),
            health: Health::Alive,
            last_heard: now,
            conn: None,
            is_head: true,
            died: 0,
        };
        self.nodes.insert(id, record);
        self.persist(id);
    }

    /// Step 1.
    pub fn register(&mut self, desc: NodeDesc, conn: ConnId, now: Instant) -> Result<()> {
        let id = NodeId(desc.node_id);
        match self.nodes.get_mut(&id) {
            Some(r) => match &r.health {
                Health::Dead { cause } => return Err(ClusterError::NodeDead(id, cause.clone())),
                Health::Alive if r.is_head || r.conn.is_some() => return Err(ClusterError::NodeIdInUse(id)),
                Health::Alive => {
                    let changed = r.desc != desc;
                    r.desc = desc;
                    r.conn = Some(conn);
                    r.last_heard = now;
                    if changed {
                        self.persist(id);
                    }
                }
            },
            None => {
                if self.alive().count() >= MAX_NODES {
                    return Err(ClusterError::Full(MAX_NODES));
                }
                let record = NodeRecord {
                    desc,
                    load: NodeLoad::default(),
                    health: Health::Alive,
                    last_heard: now,
                    conn: Some(conn),
                    is_head: false,
                    died: 0,
                };
                self.nodes.insert(id, record);
                self.persist(id);
            }
        }
        Ok(())
    }

    /// Step 2. Fails for a node that is not alive: it must stop.
    pub fn heartbeat(&mut self, id: NodeId, load: NodeLoad, now: Instant) -> Result<()> {
        match self.nodes.get_mut(&id) {
            Some(r) if r.health == Health::Alive => {
                r.load = load;
                r.last_heard = now;
                Ok(())
            }
            Some(NodeRecord { health: Health::Dead { cause }, .. }) => Err(ClusterError::NodeDead(id, cause.clone())),
            _ => Err(ClusterError::NotRegistered("a heartbeat")),
        }
    }

    /// Step 3: `conn`, which `id` registered on, closed.
    pub fn disconnected(&mut self, id: NodeId, conn: ConnId) {
        if let Some(r) = self.nodes.get_mut(&id) {
            if r.conn == Some(conn) {
                r.conn = None;
            }
        }
    }

    /// Step 4, at a node's own request.
    pub fn leave(&mut self, id: NodeId, cause: &str) {
        self.declare_dead(id, cause.to_string());
    }

    /// Step 4: declares dead every node silent for longer than the timeout;
    /// returns them.
    pub fn sweep(&mut self, now: Instant) -> Vec<NodeId> {
        let timeout = self.node_timeout;
        let silent: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, r)| r.health == Health::Alive && !r.is_head && now.duration_since(r.last_heard) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &silent {
            let cause = format!("no heartbeat for {} ms", timeout.as_millis());
            self.declare_dead(*id, cause);
        }
        silent
    }

    fn declare_dead(&mut self, id: NodeId, cause: String) {
        let Some(r) = self.nodes.get_mut(&id) else { return };
        if r.health != Health::Alive {
            return;
        }
        self.deaths += 1;
        r.health = Health::Dead { cause };
        r.conn = None;
        r.died = self.deaths;
        self.persist(id);
        let dead = self.nodes.values().filter(|r| r.health != Health::Alive).count();
        if dead > MAX_DEAD_KEPT {
            let oldest = self
                .nodes
                .iter()
                .filter(|(_, r)| r.health != Health::Alive)
                .min_by_key(|(_, r)| r.died)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.nodes.remove(&oldest);
                self.store.delete(storage::NODES, &oldest.to_string());
            }
        }
    }

    /// Updates the head's own node's load.
    pub fn set_load(&mut self, id: NodeId, load: NodeLoad, now: Instant) {
        if let Some(r) = self.nodes.get_mut(&id) {
            r.load = load;
            r.last_heard = now;
        }
    }

    pub fn health(&self, id: NodeId) -> Option<&Health> {
        self.nodes.get(&id).map(|r| &r.health)
    }

    /// The ids of the alive nodes other than the head's own.
    pub fn alive_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, r)| r.health == Health::Alive && !r.is_head).map(|(id, _)| *id).collect()
    }

    fn alive(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|r| r.health == Health::Alive)
    }

    /// Every node, the head's first, then by id.
    pub fn view(&self, now: Instant) -> ClusterView {
        let mut nodes: Vec<NodeEntry> = self
            .nodes
            .values()
            .map(|r| NodeEntry {
                desc: Some(r.desc.clone()),
                load: Some(r.load.clone()),
                alive: r.health == Health::Alive,
                death_cause: match &r.health {
                    Health::Alive => String::new(),
                    Health::Dead { cause } => cause.clone(),
                },
                last_heard_ms: now.duration_since(r.last_heard).as_millis() as u64,
                is_head: r.is_head,
            })
            .collect();
        nodes.sort_by_key(|n| !n.is_head);
        ClusterView { nodes, ..ClusterView::default() }
    }
}

/// Most names the table holds.
pub const MAX_NAMES: usize = 100_000;

/// The names of actors across the cluster (`wire` step 7), the control
/// store's second table: one row per name in [`storage::ACTORS`], keyed by
/// the name, written when a name is claimed or let go.
///
/// A name belongs to the live actor of an alive node. The table is told of
/// deaths of actors (`release`), not of nodes: a row whose node is dead (or
/// unknown) is stale, and is dropped when a claim or a find meets it and by
/// [`ActorNames::prune`] (the head's sweeper). So a restarted head keeps the
/// names of the nodes that rejoin it and drops the others' once the node
/// table declares them dead: a detached actor is still found after a
/// restart.
pub struct ActorNames {
    names: BTreeMap<String, NamedActor>,
    store: Arc<dyn TableStore>,
}

impl ActorNames {
    /// An empty table in the head's memory.
    pub fn new() -> Self {
        ActorNames { names: BTreeMap::new(), store: Arc::new(MemoryStore::default()) }
    }

    /// The table `store` holds, writing through it from now on. A row that
    /// does not decode fails it.
    pub fn restore(store: Arc<dyn TableStore>) -> Result<Self> {
        let names = load_rows(&*store, storage::ACTORS, "actor name", |key, row: &NamedActor| {
            crate::wire::check_named(row).map_err(|e| e.to_string())?;
            if row.name != key {
                return Err(format!("holds the name {:?}", row.name));
            }
            Ok(key.to_string())
        })?;
        Ok(ActorNames { names, store })
    }

    /// Node `node` claims `row.name` for its actor `row.actor_id`: refused
    /// (why) while another actor of an alive node holds it. The row is
    /// recorded as `node`'s whatever it says.
    pub fn claim(&mut self, node: NodeId, mut row: NamedActor, nodes: &NodeTable) -> Result<(), String> {
        row.node_id = node.0;
        match self.names.get(&row.name) {
            Some(held) if held.actor_id == row.actor_id && held.node_id == node.0 => return Ok(()),
            Some(held) if is_alive(nodes, NodeId(held.node_id)) => {
                return Err(format!("an actor named {:?} already exists (on node {})", row.name, NodeId(held.node_id)));
            }
            Some(_) => {}
            None if self.names.len() >= MAX_NAMES => {
                return Err(format!("the cluster holds {MAX_NAMES} actor names already"));
            }
            None => {}
        }
        self.store.put(storage::ACTORS, &row.name, row.encode_to_vec());
        self.names.insert(row.name.clone(), row);
        Ok(())
    }

    /// Node `node`'s actor `actor_id` let go of `name` (it died); a name
    /// another actor holds stays.
    pub fn release(&mut self, node: NodeId, name: &str, actor_id: &[u8]) {
        if self.names.get(name).is_some_and(|held| held.node_id == node.0 && held.actor_id == actor_id) {
            self.names.remove(name);
            self.store.delete(storage::ACTORS, name);
        }
    }

    /// The actor named `name`, if an alive node owns it.
    pub fn find(&mut self, name: &str, nodes: &NodeTable) -> Option<NamedActor> {
        let held = self.names.get(name)?;
        if is_alive(nodes, NodeId(held.node_id)) {
            return Some(held.clone());
        }
        self.names.remove(name);
        self.store.delete(storage::ACTORS, name);
        None
    }

    /// Drops the names of nodes that are not alive.
    pub fn prune(&mut self, nodes: &NodeTable) {
        let stale: Vec<String> =
            self.names.iter().filter(|(_, r)| !is_alive(nodes, NodeId(r.node_id))).map(|(n, _)| n.clone()).collect();
        for name in stale {
            self.names.remove(&name);
            self.store.delete(storage::ACTORS, &name);
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Default for ActorNames {
    fn default() -> Self {
        Self::new()
    }
}

/// Jobs that ended kept for `list jobs`; older ones are dropped.
pub const MAX_JOBS_KEPT: usize = 1_000;

/// Jobs that run at once, at most (more are refused a row).
pub const MAX_JOBS_RUNNING: usize = 100_000;

/// The cluster's jobs (`wire` step 8), the control store's third table:
/// one row per job in [`storage::JOBS`], keyed by its id, written when it
/// starts and when it ends. A job runs from its driver's connection to its
/// node until the driver leaves (`FINISHED`) or the node dies (`FAILED`,
/// by [`JobTable::prune`]); a restarted head keeps the rows, and the jobs
/// of nodes that do not rejoin fail with them.
pub struct JobTable {
    jobs: BTreeMap<u64, JobRow>,
    store: Arc<dyn TableStore>,
}

impl JobTable {
    pub fn new() -> Self {
        JobTable { jobs: BTreeMap::new(), store: Arc::new(MemoryStore::default()) }
    }

    /// The table `store` holds, writing through it from now on.
    pub fn restore(store: Arc<dyn TableStore>) -> Result<Self> {
        let jobs = load_rows(&*store, storage::JOBS, "job table", |key, row: &JobRow| {
            if key != format!("{:016x}", row.job_id) {
                return Err(format!("holds job {:016x}", row.job_id));
            }
            Ok(row.job_id)
        })?;
        Ok(JobTable { jobs, store })
    }

    fn persist(&self, id: u64) {
        if let Some(row) = self.jobs.get(&id) {
            self.store.put(storage::JOBS, &format!("{id:016x}"), row.encode_to_vec());
        }
    }

    /// Node `node`'s driver `row.job_id` connected (the row is `node`'s,
    /// running, whatever it says).
    pub fn start(&mut self, node: NodeId, mut row: JobRow) {
        if self.jobs.get(&row.job_id).is_some_and(|r| r.node_id != node.0) {
            return;
        }
        if self.running() >= MAX_JOBS_RUNNING && !self.jobs.contains_key(&row.job_id) {
            return;
        }
        row.node_id = node.0;
        row.end_ms = 0;
        row.state = "RUNNING".into();
        let id = row.job_id;
        self.jobs.insert(id, row);
        self.persist(id);
    }

    /// Node `node`'s driver `job` left at `end_ms`.
    pub fn end(&mut self, node: NodeId, job: u64, end_ms: u64) {
        self.finish(job, Some(node), end_ms.max(1), "FINISHED");
    }

    fn finish(&mut self, job: u64, node: Option<NodeId>, end_ms: u64, state: &str) {
        let Some(row) = self.jobs.get_mut(&job) else { return };
        if node.is_some_and(|n| n.0 != row.node_id) || row.end_ms != 0 {
            return;
        }
        row.end_ms = end_ms;
        row.state = state.into();
        self.persist(job);
        self.drop_oldest();
    }

    /// Fails the running jobs of nodes that are not alive (at `now_ms`).
    pub fn prune(&mut self, nodes: &NodeTable, now_ms: u64) {
        let orphaned: Vec<u64> = self
            .jobs
            .values()
            .filter(|r| r.end_ms == 0 && !is_alive(nodes, NodeId(r.node_id)))
            .map(|r| r.job_id)
            .collect();
        for job in orphaned {
            self.finish(job, None, now_ms.max(1), "FAILED");
        }
    }

    fn drop_oldest(&mut self) {
        let mut ended: Vec<(u64, u64)> =
            self.jobs.values().filter(|r| r.end_ms != 0).map(|r| (r.end_ms, r.job_id)).collect();
        if ended.len() <= MAX_JOBS_KEPT {
            return;
        }
        ended.sort_unstable();
        for (_, job) in &ended[..ended.len() - MAX_JOBS_KEPT] {
            self.jobs.remove(job);
            self.store.delete(storage::JOBS, &format!("{job:016x}"));
        }
    }

    /// When job `job` ended (unix ms): `Some(0)` while it runs, `None` for
    /// a job the table does not have.
    pub fn ended_at(&self, job: u64) -> Option<u64> {
        self.jobs.get(&job).map(|r| r.end_ms)
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.jobs.values().filter(|r| r.end_ms == 0).count()
    }

    /// Every job, by id.
    pub fn rows(&self) -> Vec<JobRow> {
        self.jobs.values().cloned().collect()
    }
}

impl Default for JobTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of functions the [`FunctionTable`] keeps; past them it refuses
/// exports (their calls then carry them, once per link).
pub const MAX_FUNCTION_BYTES: usize = 256 << 20;

/// How long a job's functions outlive it: a call sent without a function's
/// bytes just before its job ended still finds them (a job's calls end with
/// it, but the message may be on its way).
pub const FUNCTION_GRACE_MS: u64 = 60_000;

/// The functions programs' drivers exported (`wire` step 9), once per
/// cluster rather than once per link between nodes: one row per function
/// in [`storage::FUNCTIONS`], keyed by its id, written when exported and
/// deleted when dropped. A function belongs to its job: it is taken only
/// while the job runs (in [`JobTable`]), and dropped [`FUNCTION_GRACE_MS`]
/// after the job ended (by [`FunctionTable::prune`], in the sweeper). An id
/// is the exporter's, and its bytes never change: an export of a known id
/// with other bytes is refused.
pub struct FunctionTable {
    functions: BTreeMap<(u64, u64), FunctionRow>,
    /// Bytes of `pickled` over the rows, bounded by [`MAX_FUNCTION_BYTES`].
    bytes: usize,
    store: Arc<dyn TableStore>,
}

fn function_key(exporter: u64, seq: u64) -> String {
    format!("{exporter:016x}-{seq:016x}")
}

impl FunctionTable {
    pub fn new() -> Self {
        FunctionTable { functions: BTreeMap::new(), bytes: 0, store: Arc::new(MemoryStore::default()) }
    }

    /// The table `store` holds, writing through it from now on.
    pub fn restore(store: Arc<dyn TableStore>) -> Result<Self> {
        let functions = load_rows(&*store, storage::FUNCTIONS, "function table", |key, row: &FunctionRow| {
            if key != function_key(row.exporter, row.seq) {
                return Err(format!("holds function {:016x}-{:016x}", row.exporter, row.seq));
            }
            Ok((row.exporter, row.seq))
        })?;
        let bytes = functions.values().map(|r| r.pickled.len()).sum();
        Ok(FunctionTable { functions, bytes, store })
    }

    /// Node `node` exports `row` for its job: `Err` says why the table does
    /// not keep it (the node then sends its bytes with its calls).
    pub fn export(&mut self, node: NodeId, mut row: FunctionRow, jobs: &JobTable) -> std::result::Result<(), String> {
        let key = (row.exporter, row.seq);
        if let Some(known) = self.functions.get(&key) {
            return if known.pickled == row.pickled {
                Ok(())
            } else {
                Err(format!("function {:016x}-{} was exported with other bytes", row.exporter, row.seq))
            };
        }
        if jobs.ended_at(row.job_id) != Some(0) {
            return Err(format!("job {:016x} is not running", row.job_id));
        }
        if self.bytes + row.pickled.len() > MAX_FUNCTION_BYTES {
            return Err(format!("the cluster's function table is full ({MAX_FUNCTION_BYTES} bytes)"));
        }
        row.node_id = node.0;
        self.bytes += row.pickled.len();
        self.store.put(storage::FUNCTIONS, &function_key(row.exporter, row.seq), row.encode_to_vec());
        self.functions.insert(key, row);
        Ok(())
    }

    /// Function `seq` of exporter `exporter`, if the table has it.
    pub fn get(&self, exporter: u64, seq: u64) -> Option<FunctionRow> {
        self.functions.get(&(exporter, seq)).cloned()
    }

    /// Drops the functions of jobs that ended [`FUNCTION_GRACE_MS`] before
    /// `now_ms` (or that the job table no longer has).
    pub fn prune(&mut self, jobs: &JobTable, now_ms: u64) {
        let gone: Vec<(u64, u64)> = self
            .functions
            .iter()
            .filter(|(_, r)| match jobs.ended_at(r.job_id) {
                None => true,
                Some(0) => false,
                Some(end) => now_ms.saturating_sub(end) >= FUNCTION_GRACE_MS,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(row) = self.functions.remove(&key) {
                self.bytes -= row.pickled.len();
                self.store.delete(storage::FUNCTIONS, &function_key(key.0, key.1));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

impl Default for FunctionTable {
    fn default() -> Self {
        Self::new()
    }
}

/// The rows of `table` by the key `check` gives each (after checking it
/// against its storage key); a row that does not decode or check fails
/// the load, naming `what` and the key.
fn load_rows<K: Ord, T: Message + Default>(
    store: &dyn TableStore,
    table: &str,
    what: &str,
    check: impl Fn(&str, &T) -> std::result::Result<K, String>,
) -> Result<BTreeMap<K, T>> {
    let mut rows = BTreeMap::new();
    for (key, bytes) in store.load(table) {
        let bad = |reason: String| ClusterError::Storage {
            url: store.describe(),
            reason: format!("{what} row {key:?}: {reason}"),
        };
        let row = T::decode(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
        let k = check(&key, &row).map_err(bad)?;
        rows.insert(k, row);
    }
    Ok(rows)
}

/// Unix time now in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn is_alive(nodes: &NodeTable, id: NodeId) -> bool {
    matches!(nodes.health(id), Some(Health::Alive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroray_common::ResourceSet;

    fn desc(id: u64) -> NodeDesc {
        NodeDesc {
            node_id: id,
            address: "127.0.0.1".into(),
            resources: ResourceSet::new().with("CPU", 1.0).into_fixed(),
            store_capacity: 1 << 20,
            pid: 1,
            ..Default::default()
        }
    }

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn a_silent_node_dies_after_the_timeout_and_never_comes_back() {
        let t0 = Instant::now();
        let mut table = NodeTable::new(T);
        table.register(desc(1), 10, t0).unwrap();
        table.register(desc(2), 11, t0).unwrap();
        assert!(table.sweep(t0 + T).is_empty(), "exactly the timeout is not past it");
        table.heartbeat(NodeId(2), NodeLoad::default(), t0 + T).unwrap();
        assert_eq!(table.sweep(t0 + T + Duration::from_millis(1)), vec![NodeId(1)]);
        assert!(matches!(table.health(NodeId(1)), Some(Health::Dead { cause }) if cause.contains("no heartbeat")));
        assert!(matches!(table.heartbeat(NodeId(1), NodeLoad::default(), t0 + 2 * T), Err(ClusterError::NodeDead(..))));
        assert!(matches!(table.register(desc(1), 12, t0 + 2 * T), Err(ClusterError::NodeDead(..))));
        let view = table.view(t0 + 2 * T);
        assert_eq!(view.nodes.iter().filter(|n| n.alive).count(), 1);
    }

    #[test]
    fn an_id_is_bound_to_its_connection_until_that_closes() {
        let t0 = Instant::now();
        let mut table = NodeTable::new(T);
        table.register(desc(1), 10, t0).unwrap();
        assert!(matches!(table.register(desc(1), 11, t0), Err(ClusterError::NodeIdInUse(_))));
        table.disconnected(NodeId(1), 11); // not its connection: no effect
        assert!(matches!(table.register(desc(1), 11, t0), Err(ClusterError::NodeIdInUse(_))));
        table.disconnected(NodeId(1), 10);
        table.register(desc(1), 11, t0).unwrap();
        assert_eq!(table.health(NodeId(1)), Some(&Health::Alive));
    }

    #[test]
    fn leaving_is_death_at_once_and_the_head_never_times_out() {
        let t0 = Instant::now();
        let mut table = NodeTable::new(T);
        table.register_head(desc(9), t0);
        table.register(desc(1), 10, t0).unwrap();
        table.leave(NodeId(1), "stopped");
        assert_eq!(table.health(NodeId(1)), Some(&Health::Dead { cause: "stopped".into() }));
        assert!(table.sweep(t0 + 10 * T).is_empty());
        assert!(matches!(table.register(desc(9), 11, t0), Err(ClusterError::NodeIdInUse(_))));
        let view = table.view(t0);
        assert!(view.nodes[0].is_head && view.nodes[0].alive);
    }

    #[test]
    fn a_restored_table_has_the_alive_alive_for_a_timeout_and_the_dead_dead() {
        let t0 = Instant::now();
        let store: Arc<dyn TableStore> = Arc::new(MemoryStore::default());
        let mut table = NodeTable::restore(T, store.clone(), t0).unwrap();
        table.register_head(desc(9), t0);
        table.register(desc(1), 10, t0).unwrap();
        table.register(desc(2), 11, t0).unwrap();
        table.register(desc(3), 12, t0).unwrap();
        table.leave(NodeId(3), "stopped");
        // Loads are not written: a heartbeat changes no row.
        let rows = store.load(storage::NODES);
        table.heartbeat(NodeId(1), NodeLoad { tasks: 5, ..Default::default() }, t0).unwrap();
        assert_eq!(store.load(storage::NODES), rows);
        drop(table);

        let t1 = t0 + 10 * T;
        let mut table = NodeTable::restore(T, store.clone(), t1).unwrap();
        table.register_head(desc(8), t1);
        assert_eq!(table.health(NodeId(1)), Some(&Health::Alive));
        assert_eq!(table.health(NodeId(2)), Some(&Health::Alive));
        assert_eq!(table.health(NodeId(3)), Some(&Health::Dead { cause: "stopped".into() }));
        assert_eq!(table.health(NodeId(9)), Some(&Health::Dead { cause: HEAD_RESTARTED.into() }));
        let view = table.view(t1);
        assert!(view.nodes[0].is_head && view.nodes[0].desc.as_ref().unwrap().node_id == 8);
        assert_eq!(view.nodes.iter().filter(|n| n.is_head).count(), 1);
        // Node 1 rejoins on a new connection; node 2 never does.
        table.register(desc(1), 20, t1).unwrap();
        assert!(table.sweep(t1 + T).is_empty(), "one node timeout from the restart");
        table.heartbeat(NodeId(1), NodeLoad::default(), t1 + T).unwrap();
        assert_eq!(table.sweep(t1 + T + Duration::from_millis(1)), vec![NodeId(2)]);
        assert!(matches!(table.register(desc(3), 21, t1), Err(ClusterError::NodeDead(..))));
        drop(table);
        // The deaths since were written too, in order.
        let table = NodeTable::restore(T, store.clone(), t1).unwrap();
        assert!(matches!(table.health(NodeId(2)), Some(Health::Dead { cause }) if cause.contains("no heartbeat")));
        assert_eq!(table.health(NodeId(8)), Some(&Health::Dead { cause: HEAD_RESTARTED.into() }));
        assert_eq!(table.deaths, 4);
    }

    #[test]
    fn a_row_that_does_not_decode_fails_the_restore() {
        let store: Arc<dyn TableStore> = Arc::new(MemoryStore::default());
        store.put(storage::NODES, "0000000000000001", vec![0xff, 0xff]);
        let err = NodeTable::restore(T, store, Instant::now()).err().unwrap().to_string();
        assert!(err.starts_with("storage at memory: node table row 0000000000000001"), "{err}");
    }

    #[test]
    fn dead_nodes_kept_are_bounded() {
        let t0 = Instant::now();
        let mut table = NodeTable::new(T);
        for id in 0..(MAX_DEAD_KEPT as u64 + 5) {
            table.register(desc(id), id, t0).unwrap();
            table.leave(NodeId(id), "stopped");
        }
        assert_eq!(table.view(t0).nodes.len(), MAX_DEAD_KEPT);
        assert!(table.health(NodeId(0)).is_none(), "the oldest dead went first");
        assert_eq!(table.store.load(storage::NODES).len(), MAX_DEAD_KEPT, "and its row");
    }

    fn named(name: &str, actor: u8) -> NamedActor {
        NamedActor {
            name: name.into(),
            actor_id: vec![actor; crate::wire::ACTOR_ID_LEN],
            node_id: 0,
            detached: true,
            class: "C".into(),
            front: vec![actor],
        }
    }

    #[test]
    fn a_name_is_one_live_actors_across_the_cluster() {
        let t0 = Instant::now();
        let mut nodes = NodeTable::new(T);
        for id in [2, 3] {
            nodes.register(desc(id), id, t0).unwrap();
        }
        let mut names = ActorNames::new();
        // The head takes the node from the connection, whatever the row says.
        let mut claimed = named("svc", 1);
        claimed.node_id = 3;
        names.claim(NodeId(2), claimed, &nodes).unwrap();
        assert_eq!(names.find("svc", &nodes).unwrap().node_id, 2);
        // Another node's actor of that name is refused, with where it lives.
        let refused = names.claim(NodeId(3), named("svc", 2), &nodes).unwrap_err();
        assert!(refused.contains("already exists (on node 0000000000000002)"), "{refused}");
        // The same claim again (a request sent again after a broken link).
        names.claim(NodeId(2), named("svc", 1), &nodes).unwrap();
        // Only its node lets it go, and only for that actor.
        names.release(NodeId(3), "svc", &named("svc", 1).actor_id);
        names.release(NodeId(2), "svc", &named("svc", 2).actor_id);
        assert!(names.find("svc", &nodes).is_some());
        names.release(NodeId(2), "svc", &named("svc", 1).actor_id);
        assert!(names.find("svc", &nodes).is_none());
        names.claim(NodeId(3), named("svc", 2), &nodes).unwrap();
        // Its node dead: the name is stale, found by no one, and free.
        names.claim(NodeId(3), named("other", 3), &nodes).unwrap();
        nodes.leave(NodeId(3), "stopped");
        assert!(names.find("svc", &nodes).is_none());
        names.claim(NodeId(2), named("svc", 4), &nodes).unwrap();
        names.prune(&nodes);
        assert_eq!(names.len(), 1, "the dead node's other name went too");
    }

    #[test]
    fn names_outlive_the_head_in_its_storage() {
        let store: Arc<dyn TableStore> = Arc::new(MemoryStore::default());
        let t0 = Instant::now();
        let mut nodes = NodeTable::restore(T, store.clone(), t0).unwrap();
        nodes.register(desc(2), 2, t0).unwrap();
        let mut names = ActorNames::restore(store.clone()).unwrap();
        names.claim(NodeId(2), named("kept", 1), &nodes).unwrap();
        names.claim(NodeId(2), named("gone", 2), &nodes).unwrap();
        names.release(NodeId(2), "gone", &named("gone", 2).actor_id);
        drop((nodes, names));
        // A restarted head: node 2 is alive again (until its timeout), and
        // its actor is found by name.
        let nodes = NodeTable::restore(T, store.clone(), Instant::now()).unwrap();
        let mut names = ActorNames::restore(store.clone()).unwrap();
        assert_eq!(names.len(), 1);
        let found = names.find("kept", &nodes).unwrap();
        assert_eq!((found.node_id, found.front.clone()), (2, vec![1]));
        // A row that does not decode, or is filed under another name, fails the restore.
        store.put(storage::ACTORS, "x", vec![0xff]);
        assert!(ActorNames::restore(store.clone()).is_err());
        store.put(storage::ACTORS, "x", named("y", 1).encode_to_vec());
        let err = ActorNames::restore(store).err().unwrap().to_string();
        assert!(err.contains("holds the name \"y\""), "{err}");
    }

    fn job(id: u64, pid: u32) -> JobRow {
        JobRow { job_id: id, pid, entrypoint: format!("prog {id}"), start_ms: 10, ..JobRow::default() }
    }

    #[test]
    fn jobs_run_until_their_driver_leaves_or_their_node_dies() {
        let store: Arc<dyn TableStore> = Arc::new(MemoryStore::default());
        let t0 = Instant::now();
        let mut nodes = NodeTable::new(T);
        for id in [2, 3] {
            nodes.register(desc(id), id, t0).unwrap();
        }
        let mut jobs = JobTable::restore(store.clone()).unwrap();
        // The node is the connection's, whatever the row says.
        jobs.start(NodeId(2), JobRow { node_id: 3, ..job(7, 70) });
        jobs.start(NodeId(3), job(8, 80));
        // Only its node ends a job.
        jobs.end(NodeId(3), 7, 50);
        jobs.end(NodeId(2), 7, 50);
        jobs.end(NodeId(2), 7, 60);
        let rows = jobs.rows();
        assert_eq!((rows[0].node_id, rows[0].state.as_str(), rows[0].end_ms), (2, "FINISHED", 50));
        assert_eq!((rows[1].state.as_str(), rows[1].end_ms), ("RUNNING", 0));
        // Its node dies: it failed.
        nodes.leave(NodeId(3), "stopped");
        jobs.prune(&nodes, 99);
        assert_eq!((jobs.rows()[1].state.as_str(), jobs.rows()[1].end_ms), ("FAILED", 99));
        // A restarted head has them all.
        let again = JobTable::restore(store.clone()).unwrap();
        assert_eq!(again.rows(), jobs.rows());
        // Ended jobs kept are bounded, the oldest dropped first (rows too).
        for id in 100..(100 + MAX_JOBS_KEPT as u64) {
            jobs.start(NodeId(2), job(id, 1));
            jobs.end(NodeId(2), id, 1000 + id);
        }
        assert_eq!(jobs.rows().len(), MAX_JOBS_KEPT);
        assert!(jobs.rows().iter().all(|r| r.job_id >= 100), "the two oldest went");
        assert_eq!(store.load(storage::JOBS).len(), MAX_JOBS_KEPT);
    }

    fn function(exporter: u64, seq: u64, job: u64, bytes: &[u8]) -> FunctionRow {
        FunctionRow { exporter, seq, job_id: job, node_id: 0, pickled: bytes.to_vec() }
    }

    #[test]
    fn functions_are_kept_while_their_job_runs_and_a_while_after() {
        let store: Arc<dyn TableStore> = Arc::new(MemoryStore::default());
        let mut jobs = JobTable::new();
        jobs.start(NodeId(2), job(7, 70));
        let mut table = FunctionTable::restore(store.clone()).unwrap();
        table.export(NodeId(2), function(7, 1, 7, b"f"), &jobs).unwrap();
        // Again with the same bytes: fine; with others: refused.
        table.export(NodeId(3), function(7, 1, 7, b"f"), &jobs).unwrap();
        let err = table.export(NodeId(2), function(7, 1, 7, b"g"), &jobs).unwrap_err();
        assert!(err.contains("other bytes"), "{err}");
        // Only for a running job.
        let err = table.export(NodeId(2), function(9, 1, 9, b"h"), &jobs).unwrap_err();
        assert!(err.contains("not running"), "{err}");
        let row = table.get(7, 1).unwrap();
        assert_eq!((row.node_id, row.pickled.as_slice()), (2, &b"f"[..]), "the node is the exporter's connection");
        // A restarted head has it.
        assert_eq!(FunctionTable::restore(store.clone()).unwrap().get(7, 1), Some(row));
        // The job ends: kept for the grace, then dropped, row and all.
        jobs.end(NodeId(2), 7, 1000);
        table.prune(&jobs, 1000 + FUNCTION_GRACE_MS - 1);
        assert_eq!(table.len(), 1);
        let err = table.export(NodeId(2), function(7, 2, 7, b"late"), &jobs).unwrap_err();
        assert!(err.contains("not running"), "{err}");
        table.prune(&jobs, 1000 + FUNCTION_GRACE_MS);
        assert!(table.is_empty() && table.get(7, 1).is_none());
        assert!(store.load(storage::FUNCTIONS).is_empty());
        // A bad row fails a restart, naming it.
        store.put(storage::FUNCTIONS, "x", function(1, 2, 1, b"f").encode_to_vec());
        let err = FunctionTable::restore(store).err().unwrap().to_string();
        assert!(err.contains("holds function"), "{err}");
    }

    #[test]
    fn the_function_table_is_bounded_in_bytes() {
        let mut jobs = JobTable::new();
        jobs.start(NodeId(2), job(7, 70));
        let mut table = FunctionTable::new();
        let big = vec![1u8; MAX_FUNCTION_BYTES / 2];
        table.export(NodeId(2), function(7, 1, 7, &big), &jobs).unwrap();
        table.export(NodeId(2), function(7, 2, 7, &big), &jobs).unwrap();
        let err = table.export(NodeId(2), function(7, 3, 7, b"x"), &jobs).unwrap_err();
        assert!(err.contains("full"), "{err}");
        // Dropping makes room again.
        jobs.end(NodeId(2), 7, 5);
        table.prune(&jobs, 5 + FUNCTION_GRACE_MS);
        jobs.start(NodeId(2), job(8, 80));
        table.export(NodeId(2), function(8, 1, 8, b"x"), &jobs).unwrap();
    }
}
