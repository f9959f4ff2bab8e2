//! The control store's tables, kept by the head. Today: the node table
//! (membership and health). Actors, names, jobs and the function table
//! join it as the cluster grows.
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

use crate::error::{ClusterError, Result};
use crate::wire::{ClusterView, NodeDesc, NodeEntry, NodeLoad, MAX_NODES};
use ferroray_common::NodeId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// Membership and health of every node.
pub struct NodeTable {
    nodes: BTreeMap<NodeId, NodeRecord>,
    node_timeout: Duration,
    deaths: u64,
}

impl NodeTable {
    pub fn new(node_timeout: Duration) -> Self {
        NodeTable { nodes: BTreeMap::new(), node_timeout, deaths: 0 }
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
    }

    /// Step 1.
    pub fn register(&mut self, desc: NodeDesc, conn: ConnId, now: Instant) -> Result<()> {
        let id = NodeId(desc.node_id);
        match self.nodes.get_mut(&id) {
            Some(r) => match &r.health {
                Health::Dead { cause } => return Err(ClusterError::NodeDead(id, cause.clone())),
                Health::Alive if r.is_head || r.conn.is_some() => return Err(ClusterError::NodeIdInUse(id)),
                Health::Alive => {
                    r.desc = desc;
                    r.conn = Some(conn);
                    r.last_heard = now;
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
        ClusterView { nodes }
    }
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
    fn dead_nodes_kept_are_bounded() {
        let t0 = Instant::now();
        let mut table = NodeTable::new(T);
        for id in 0..(MAX_DEAD_KEPT as u64 + 5) {
            table.register(desc(id), id, t0).unwrap();
            table.leave(NodeId(id), "stopped");
        }
        assert_eq!(table.view(t0).nodes.len(), MAX_DEAD_KEPT);
        assert!(table.health(NodeId(0)).is_none(), "the oldest dead went first");
    }
}
