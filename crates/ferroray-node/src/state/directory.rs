//! Actor names across a cluster: the node's side of the head's table of
//! named actors (`ferroray-cluster`'s `ActorNames`), reached through an
//! [`ClusterDirectory`] the daemon sets.
//!
//! 1. A named actor is created here only once the cluster gave it its name
//!    (`claim_name`): the name is reserved in this node's table at once (so
//!    a second creation here is refused without asking), the creation waits
//!    in `claims`, and the head's answer (`name_claimed`) either creates it
//!    (`create_actor_now`) or refuses it with the head's reason. Its driver
//!    gone meanwhile, a granted name is let go at once.
//! 2. The actor's name is let go (`release_name`) when it dies for good.
//! 3. `get_actor` of a name this node does not have asks where it lives
//!    (`find_actor`); the answer (`actor_found`) names its node and id. The
//!    node makes a *proxy* (`Actor::reached`, `actors` step 7): an entry of
//!    its actor table with a handle object of its own under the actor's id,
//!    whose calls go to that node over the peer link, where the actor's own
//!    node runs them as any caller's (the link holds the handle object while
//!    a call is on its way: the object's copy travels with the call, as
//!    refs' do, `remote` step 7). The proxy has no process, resources or
//!    restarts (the owning node has those); it goes when the last handle
//!    here does.
//! 4. The directory answers within [`DIRECTORY_TIMEOUT`], or the request
//!    fails (a head that is away for longer); nobody waits forever.
//! 5. A handle in a task's arguments (named or not) crosses nodes the same
//!    way: the owner's link sends what `actor_of_handle` says (the node
//!    that owns the actor, its class and front) ahead of the task, and the
//!    executing node makes a proxy (`reach_actor`) before the task's
//!    handle object arrives; the proxy goes with the last handle there.
//!    The handles a node lends keep its actor alive as Ray's borrowers do:
//!    the owner's link holds the actor's handle object from its first
//!    `Reach` of it, counting them; the executing node counts the `Reach`es
//!    each link brought, and when the proxy goes (its last handle there
//!    freed) tells that link how many (`FromNode::HandleReleased`); the
//!    owner lets its hold go only if it sent no more since (a `Reach` on
//!    its way makes a new proxy, which will be released in turn). A link
//!    that ends lets its holds go with it. Handles of a third node's
//!    actor are not counted: their owner's hold covers them only while its
//!    own handles live.
//! 6. A proxy's calls wait while there is no link to its node (one that
//!    joined after this node's last view of the cluster, or whose link is
//!    being made again): the node's attachment sends them
//!    (`proxies_linked`), and calls still waiting after
//!    [`DIRECTORY_TIMEOUT`] fail with the actor unreachable.
//!
//! Who sees the states in between: a creation waiting for its claim is not
//! in the actor table, so a `get_actor` of its name here says no live actor
//! has it (as for a creation not yet submitted), and the name is refused to
//! a second creation. A proxy whose actor died answers calls with the
//! owning node's `ActorDied`.

use super::*;
use crate::{ClusterDirectory, DirectoryEntry, FoundActor};
use ferroray_common::{ActorDeathCause, ActorId, NodeId};
use ferroray_protocol::{ActorSpec, ActorTask};
use std::time::{Duration, Instant};

/// How long a claim or a find may wait for the cluster's answer.
pub const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's requests to the directory, in flight.
#[derive(Default)]
pub(crate) struct Directory {
    /// Set by a daemon (`Node::set_directory`); `None` for a node of its
    /// own, whose names are its own.
    pub(super) hook: Option<Arc<dyn ClusterDirectory>>,
    next_ticket: u64,
    /// Creations waiting for their name (step 1).
    claims: FxHashMap<u64, Claim>,
    /// `get_actor`s waiting for the answer (step 3).
    finds: FxHashMap<u64, Find>,
    /// Proxies with calls waiting for a link to their node, since when
    /// (step 6).
    pub(super) unlinked: FxHashMap<ActorId, Instant>,
    /// How many handles of each actor each peer's link brought (step 5),
    /// over the link's life (a proxy made again counts on), for the owner's
    /// hold: told to the link when the proxy goes.
    reached_by: FxHashMap<(ConnId, ActorId), u64>,
}

struct Claim {
    conn: ConnId,
    req: u64,
    spec: TaskSpec,
    asked: Instant,
}

struct Find {
    conn: ConnId,
    req: u64,
    name: String,
    asked: Instant,
}

impl Directory {
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }
}

fn entry_of(id: ActorId, opts: &ActorSpec) -> Option<DirectoryEntry> {
    Some(DirectoryEntry {
        name: opts.name.clone()?,
        actor: id,
        detached: opts.detached,
        class: opts.class.clone(),
        front: opts.front.clone(),
    })
}

impl State {
    /// Step 1: true if the creation of actor `id` (named, on a node of a
    /// cluster) now waits for its claim; false if this node decides alone.
    pub(super) fn claim_name(&mut self, conn: ConnId, req: u64, id: ActorId, spec: &TaskSpec) -> bool {
        let Some(hook) = self.directory.hook.clone() else { return false };
        let Some(ActorTask::Create(opts)) = &spec.actor else { return false };
        let Some(entry) = entry_of(id, opts) else { return false };
        self.actor_names.insert(entry.name.clone(), id);
        let ticket = self.directory.ticket();
        self.directory.claims.insert(ticket, Claim { conn, req, spec: spec.clone(), asked: Instant::now() });
        hook.claim(ticket, entry);
        true
    }

    /// Step 1: the cluster's answer to claim `ticket`: `Err` says why not.
    pub fn name_claimed(&mut self, ticket: u64, result: std::result::Result<(), String>) {
        let Some(claim) = self.directory.claims.remove(&ticket) else { return };
        let id = ActorId(claim.spec.task_id);
        let Some(ActorTask::Create(opts)) = &claim.spec.actor else { return };
        let name = opts.name.clone().unwrap_or_default();
        let reserved = self.actor_names.get(&name) == Some(&id);
        match result {
            Ok(()) if reserved && self.conns.contains_key(&claim.conn) => {
                self.create_actor_now(claim.conn, claim.req, claim.spec);
            }
            Ok(()) => {
                // Its driver went meanwhile: the name goes back at once.
                if reserved {
                    self.actor_names.remove(&name);
                }
                if let (Some(hook), Some(entry)) = (self.directory.hook.clone(), entry_of(id, opts)) {
                    hook.release(entry);
                }
            }
            Err(why) => {
                if reserved {
                    self.actor_names.remove(&name);
                }
                self.send(
                    claim.conn,
                    FromNode::ActorCreated { req: claim.req, result: Err(Error::InvalidOption(why)) },
                );
            }
        }
    }

    /// Step 2: actor `id` with options `opts` is dead for good.
    pub(super) fn release_name(&mut self, id: ActorId, opts: &ActorSpec) {
        if let (Some(hook), Some(entry)) = (self.directory.hook.clone(), entry_of(id, opts)) {
            hook.release(entry);
        }
    }

    /// Step 3: true if `get_actor` of `name` now waits for the cluster.
    pub(super) fn find_actor(&mut self, conn: ConnId, req: u64, name: &str) -> bool {
        let Some(hook) = self.directory.hook.clone() else { return false };
        let ticket = self.directory.ticket();
        self.directory.finds.insert(ticket, Find { conn, req, name: name.to_string(), asked: Instant::now() });
        hook.find(ticket, name);
        true
    }

    /// Step 3: the cluster's answer to find `ticket`.
    pub fn actor_found(&mut self, ticket: u64, found: Option<FoundActor>) {
        let Some(find) = self.directory.finds.remove(&ticket) else { return };
        if !self.conns.contains_key(&find.conn) {
            return;
        }
        let me = self.info.node_id;
        let result = match found {
            // Its node is this one: the actor died since (it is not here).
            Some(f) if f.node != me && f.entry.name == find.name => {
                let (id, class, front) = (f.entry.actor, f.entry.class.clone(), f.entry.front.clone());
                if self.reach(f.node, f.entry) {
                    self.grant(find.conn, &[id.handle_object()]);
                    Ok((id, class, front))
                } else {
                    Err(Error::InvalidOption(format!("no live actor is named {:?}", find.name)))
                }
            }
            _ => Err(Error::InvalidOption(format!("no live actor is named {:?}", find.name))),
        };
        self.send(find.conn, FromNode::ActorFound { req: find.req, result });
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.info.node_id
    }

    /// Step 5: what another node needs to call the actor whose handle
    /// object is `id` (if it is one): the node that owns it, and its class
    /// and front (an unnamed actor's entry has an empty name).
    pub fn actor_of_handle(&self, id: ObjectId) -> Option<FoundActor> {
        let actor = ActorId(id.task);
        if actor.handle_object() != id {
            return None;
        }
        let a = self.actors.get(&actor)?;
        let entry = DirectoryEntry {
            name: a.opts.name.clone().unwrap_or_default(),
            actor,
            detached: a.opts.detached,
            class: a.opts.class.clone(),
            front: a.opts.front.clone(),
        };
        Some(FoundActor { node: a.reached.unwrap_or(self.info.node_id), entry })
    }

    /// Step 5: a handle of `found.entry.actor` arrives with a task from a
    /// peer: calls made here go to its node through a proxy (none is made
    /// for one of this node's own actors).
    /// `via`: the peer's link that brought it, which is told when the
    /// proxy goes.
    pub fn reach_actor(&mut self, found: FoundActor, via: Option<ConnId>) {
        if found.node == self.info.node_id {
            return;
        }
        let id = found.entry.actor;
        if self.reach(found.node, found.entry) {
            if let Some(conn) = via.filter(|c| self.conns.contains_key(c)) {
                *self.directory.reached_by.entry((conn, id)).or_default() += 1;
                // The link holds the handle until the task it came for
                // does (its `RemoveRef` after the `Submit`), as it holds
                // imports: the proxy cannot go, and be told released,
                // between this `Reach` and that task.
                self.hold(conn, id.handle_object());
            }
        }
    }

    /// Step 5: proxy `id` goes: each link that brought its handles is told
    /// how many it brought.
    pub(super) fn proxy_released(&mut self, id: ActorId) {
        let lent: Vec<(ConnId, u64)> =
            self.directory.reached_by.iter().filter(|((_, a), _)| *a == id).map(|((c, _), n)| (*c, *n)).collect();
        for (conn, reaches) in lent {
            self.send(conn, FromNode::HandleReleased { actor: id, reaches });
        }
    }

    /// Step 5: link `conn` ended (its owner's holds went with it).
    pub(super) fn links_reaches_gone(&mut self, conn: ConnId) {
        self.directory.reached_by.retain(|(c, _), _| *c != conn);
    }

    /// Step 3: a proxy for `entry`, owned by node `node` (kept if there is
    /// one); false if the id is one of this node's own actors.
    fn reach(&mut self, node: NodeId, entry: DirectoryEntry) -> bool {
        let id = entry.actor;
        if let Some(a) = self.actors.get(&id) {
            return a.reached.is_some();
        }
        let handle = id.handle_object();
        if !self.objects.contains_key(&handle) {
            self.objects.entry(handle).or_default();
            let value =
                Stored::Inline { bytes: Vec::new(), encoding: ferroray_protocol::Encoding::Unit, contained: vec![] };
            self.set_value(handle, value);
        }
        let opts = ActorSpec {
            class: entry.class,
            name: (!entry.name.is_empty()).then_some(entry.name),
            // Its life is its owner's business: nothing here ends it.
            detached: true,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
            executor: ferroray_protocol::ActorExecutor::Serial,
            front: entry.front,
        };
        self.actors.insert(id, actors::Actor::proxy(id, opts, node));
        true
    }

    /// Step 6: node `node` was attached: the calls of its proxies go.
    pub(super) fn proxies_linked(&mut self, node: NodeId) {
        let waiting: Vec<ActorId> = self
            .directory
            .unlinked
            .keys()
            .copied()
            .filter(|id| self.actors.get(id).is_some_and(|a| a.reached == Some(node)))
            .collect();
        for id in waiting {
            self.dispatch_calls(id);
        }
    }

    /// Steps 4 and 6: fails the requests, and the calls waiting for a link,
    /// older than [`DIRECTORY_TIMEOUT`] (from the node's periodic tick).
    pub fn expire_directory(&mut self, now: Instant) {
        let late = |asked: Instant| now.duration_since(asked) >= DIRECTORY_TIMEOUT;
        let claims: Vec<u64> = self.directory.claims.iter().filter(|(_, c)| late(c.asked)).map(|(t, _)| *t).collect();
        for t in claims {
            let why = format!("the cluster did not answer a claim of the name within {DIRECTORY_TIMEOUT:?}");
            self.name_claimed(t, Err(why));
        }
        let finds: Vec<u64> = self.directory.finds.iter().filter(|(_, f)| late(f.asked)).map(|(t, _)| *t).collect();
        for t in finds {
            let Some(find) = self.directory.finds.remove(&t) else { continue };
            let e = Error::Disconnected(format!(
                "the cluster did not say within {DIRECTORY_TIMEOUT:?} where actor {:?} lives",
                find.name
            ));
            self.send(find.conn, FromNode::ActorFound { req: find.req, result: Err(e) });
        }
        let stranded: Vec<ActorId> =
            self.directory.unlinked.iter().filter(|(_, since)| late(**since)).map(|(id, _)| *id).collect();
        for id in stranded {
            self.directory.unlinked.remove(&id);
            let Some(node) = self.actors.get(&id).and_then(|a| a.reached) else { continue };
            let cause = ActorDeathCause::Crashed(format!("no link to its node {node} within {DIRECTORY_TIMEOUT:?}"));
            self.fail_waiting_calls(id, Error::ActorDied { actor: id.to_string(), cause });
        }
    }
}
