//! A node daemon in a process of its own: `ferroray start`.
//!
//! [`run`] starts a node (`ferroray_node::Node`: the scheduler, the worker
//! pool and the shared-memory store, as a driver embeds it) and joins it to
//! a cluster:
//! 1. The head (`start --head`) opens the control store's storage
//!    (`crate::storage`: its memory, or Redis with `--storage`, which must
//!    answer), makes the cluster token and a self-signed certificate
//!    (`crate::tls`) or, with `--storage`, takes the ones stored there by an
//!    earlier head (so that its nodes rejoin the restarted head), writes
//!    them to the session directory, restores the node table from the
//!    storage, serves the control protocol over TLS on its TCP port
//!    (`crate::head`), and records its own node in the node table, whose
//!    load it refreshes every heartbeat interval.
//! 2. Any other node (`start --address`) registers with the head before it
//!    reports ready, so a wrong address or token fails the start, not
//!    later (and so does a head whose certificate is not the one pinned in
//!    the token file). Then it sends a heartbeat every interval. When the
//!    link breaks it registers again, with a growing pause, for at most the
//!    head timeout (a head restarted with the same `--storage` has the same
//!    credentials and takes it back); a head that answers with a refusal
//!    (the node was declared dead, the token changed) stops it at once.
//! 3. Ready: the daemon is recorded in the session directory
//!    (`crate::session`), then `on_ready` runs (the command prints how to
//!    use the cluster).
//! 4. On the shutdown signal a node says it leaves (dead at once rather
//!    than after the timeout), its record goes, and the node stops: every
//!    worker is killed and reaped, the store freed.
//!
//! Every link is TLS, so any address may be used: loopback, a machine's own
//! interface, or the unspecified address (all of them).

use crate::client::HeadClient;
use crate::control::{ActorNames, FunctionTable, JobTable, NodeTable};
use crate::error::{ClusterError, Result};
use crate::head::{self, Control, HeadConfig};
use crate::peer::{self, FunctionSource, PeerContext, Peers};
use crate::session::{process_start_time, NodeFile, Session};
use crate::storage;
use crate::tls::Credentials;
use crate::tls::HeadIdentity;
use crate::wire::{
    FetchFunction, FindActor, FromHeadKind, FunctionExport, FunctionRow, JobEvent, JobRow, ListWhat, NameClaim,
    NamedActor, NodeDesc, NodeLoad, ToHeadKind,
};
use ferroray_common::{FunctionId, NodeId, ResourceSet, WorkerId};
use ferroray_node::{ClusterDirectory, DirectoryEntry, JobInfo, Node, NodeConfig, WorkerCommand};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The head's port when none is given.
pub const DEFAULT_PORT: u16 = 6390;

/// How long a daemon's store must be quiet before its freed pages go back
/// to the system (an embedded node's: a quarter second), as an allocator
/// decays its dirty pages: long enough to span the pauses of a program's
/// work, short enough that an idle node holds no dead objects for long.
pub const DAEMON_STORE_TRIM_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `None`: start the head. Else the head's `HOST:PORT`.
    pub head_address: Option<String>,
    /// The address this node binds (the head's port) and gives to others.
    pub host: IpAddr,
    /// The head's port (0: any free port).
    pub port: u16,
    /// What the node offers (`CPU`, `GPU`, custom resources).
    pub resources: ResourceSet,
    pub object_store_memory: Option<u64>,
    /// The token a node joins with, and the head certificate's fingerprint;
    /// `None`: the ones the head on this machine wrote. The head makes fresh
    /// ones, or with `storage` takes those stored there.
    pub token: Option<Credentials>,
    /// The head's: how often nodes report, and how long a silent node
    /// lives on.
    pub heartbeat_interval: Duration,
    pub node_timeout: Duration,
    /// A node's: how long it tries to reach a head that went away before it
    /// stops.
    pub head_timeout: Duration,
    /// The head's: where the control store keeps its tables
    /// (`redis://HOST:PORT[/DB]`); `None`: in its memory.
    pub storage: Option<String>,
    /// Peer links between loopback addresses use TLS too, rather than
    /// plain TCP with the token's handshake (`loopback`).
    pub tls_on_loopback: bool,
}

impl DaemonOptions {
    pub fn new(head_address: Option<String>) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        DaemonOptions {
            head_address,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            resources: ResourceSet::new().with(ferroray_common::resources::CPU, cpus as f64),
            object_store_memory: None,
            token: None,
            heartbeat_interval: Duration::from_millis(1000),
            node_timeout: Duration::from_millis(10_000),
            head_timeout: Duration::from_secs(60),
            storage: None,
            tls_on_loopback: false,
        }
    }
}

/// What a started daemon tells its caller.
#[derive(Debug, Clone)]
pub struct Ready {
    pub node_id: NodeId,
    /// The head's address.
    pub head: String,
    pub is_head: bool,
    pub pid: u32,
}

/// Runs a daemon until `shutdown` completes (or, for a node, until the head
/// refuses it or stays away too long).
pub fn run(
    opts: DaemonOptions,
    session: &Session,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> Result<()> {
    if let Some(addr) = &opts.head_address {
        check_address(addr)?;
        if opts.storage.is_some() {
            return Err(ClusterError::Config("--storage is the head's (start --head)".into()));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(opts, session, shutdown, on_ready))
}

/// Checks the form `HOST:PORT` of a head address (without resolving it).
pub fn check_address(addr: &str) -> Result<()> {
    let well_formed = addr.rsplit_once(':').is_some_and(|(host, port)| {
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if well_formed {
        Ok(())
    } else {
        Err(ClusterError::Config(format!("head address {addr:?}: expected HOST:PORT")))
    }
}

fn load_of(node: &Node) -> NodeLoad {
    let s = node.stats();
    NodeLoad {
        available: s.available.into_fixed(),
        store_used: s.store_used,
        objects: s.objects as u64,
        tasks: s.tasks as u64,
        workers: s.workers as u64,
    }
}

async fn run_async(
    opts: DaemonOptions,
    session: &Session,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> Result<()> {
    let is_head = opts.head_address.is_none();
    if is_head {
        if let Some(h) = session.head() {
            return Err(ClusterError::Config(format!(
                "a head is already running on this machine (pid {}, address {}); `ferroray stop` stops it",
                h.pid, h.head
            )));
        }
    }
    let (credentials, identity, store) = match (is_head, opts.token.clone()) {
        (true, _) => {
            let store = storage::open(opts.storage.as_deref())?;
            let (token, identity) = storage::head_credentials(&*store)?;
            let credentials = Credentials { token, fingerprint: identity.fingerprint() };
            (credentials, Some(identity), Some(store))
        }
        (false, Some(c)) => (c, None, None),
        (false, None) => (session.token()?, None, None),
    };
    let token = credentials.token.clone();
    let mut config = NodeConfig::new(WorkerCommand::current_exe()?);
    // Programs do not connect to a daemon yet, so nothing runs here.
    config.worker_commands.clear();
    config.resources = opts.resources.clone();
    if let Some(b) = opts.object_store_memory {
        config.store_capacity = b;
    }
    // The store's memory is what this node was given for objects: freed
    // pages stay for the next objects (a value from a peer lands in pages
    // already there instead of pages the kernel zeroes: at loopback speed,
    // most of a cold transfer's cost) and go back after a quiet while.
    config.store_keep_free = Some(config.store_capacity);
    config.store_trim_after = DAEMON_STORE_TRIM_AFTER;
    config.token = Some(token.clone());
    let node = Arc::new(Node::start(config)?);
    node.enable_peers();
    let node_id = node.info().node_id;
    let pid = std::process::id();
    // Peer links (`crate::peer`): a port and a certificate of this node's own.
    let peer_identity = HeadIdentity::generate()?;
    let peer_listener = TcpListener::bind((opts.host, 0))
        .await
        .map_err(|e| ClusterError::Config(format!("cannot listen on {} for peers: {e}", opts.host)))?;
    let desc = NodeDesc {
        node_id: node_id.0,
        address: opts.host.to_string(),
        resources: node.stats().total.into_fixed(),
        store_capacity: node.info().store_capacity,
        pid,
        peer_port: u32::from(peer_listener.local_addr()?.port()),
        peer_fingerprint: peer_identity.fingerprint().0.to_vec(),
        plain_loopback_links: !opts.tls_on_loopback,
    };
    // The node's requests to the head's tables, and its links' fetches of
    // functions: to the head's tables in this process, or over the link.
    let (head_asks, asks) = HeadAsks::channel();
    node.set_directory(head_asks.clone());
    let peer_ctx = Arc::new(PeerContext {
        node: node.clone(),
        token: token.clone(),
        exe_dir: session.exe_dir(),
        identity: peer_identity,
        tls_on_loopback: opts.tls_on_loopback,
        job_exe: Default::default(),
        functions: head_asks,
        left_here: Default::default(),
    });
    let peers = Peers::new(peer_ctx.clone());
    // A program that starts or ends gets or loses its links at once, not
    // at the next view.
    let programs_changed = Arc::new(tokio::sync::Notify::new());
    let notify = programs_changed.clone();
    node.on_programs_changed(Arc::new(move || notify.notify_one()));

    // Steps 1 and 2.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    let (refreshing, mut stop) = (peers.clone(), stop_rx.clone());
    background.spawn(async move {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return Ok(()),
                _ = programs_changed.notified() => refreshing.refresh(),
            }
        }
    });
    let mut stop = stop_rx.clone();
    background.spawn(async move {
        peer::serve(peer_listener, stopped(&mut stop), peer_ctx).await;
        Ok(())
    });
    let head_address = if let Some(identity) = identity {
        let head_config = HeadConfig {
            heartbeat_interval: opts.heartbeat_interval,
            node_timeout: opts.node_timeout,
            ..HeadConfig::new(token.clone(), identity.server_config()?)
        };
        head_config.validate()?;
        let listener = TcpListener::bind((opts.host, opts.port))
            .await
            .map_err(|e| ClusterError::Config(format!("cannot listen on {}:{}: {e}", opts.host, opts.port)))?;
        let address = listener.local_addr()?.to_string();
        let store = store.expect("a head has a store");
        let nodes = NodeTable::restore(opts.node_timeout, store.clone(), Instant::now())?;
        let names = ActorNames::restore(store.clone())?;
        let jobs = JobTable::restore(store.clone())?;
        let functions = FunctionTable::restore(store.clone())?;
        let control = Control::with_tables(head_config, nodes, names, jobs, functions, desc);
        let local = node.clone();
        let _ = control.local.set(Box::new(move |what| crate::inspect::rows(&local, what)));
        if store.durable() {
            let view = control.nodes.lock().view(Instant::now());
            let alive = view.nodes.iter().filter(|n| n.alive && !n.is_head).count();
            tracing::info!(
                "the control store is in {}: {alive} node(s) alive there, given {} ms to be heard from; {} dead",
                store.describe(),
                opts.node_timeout.as_millis(),
                view.nodes.iter().filter(|n| !n.alive).count()
            );
        }
        session.write_identity(&identity)?;
        session.write_token(&credentials)?;
        let mut stop = stop_rx.clone();
        let serving = control.clone();
        background.spawn(async move {
            head::serve(listener, stopped(&mut stop), serving).await;
            Ok(())
        });
        // The head's own node's requests: straight to the tables.
        let mut asks = asks;
        let (local, named, mut stop) = (node.clone(), control.clone(), stop_rx.clone());
        background.spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return Ok(()),
                    Some(ask) = asks.recv() => match ask {
                        HeadAsk::Claim(t, entry) => {
                            local.name_claimed(t, named.claim(node_id, named_actor(&entry)));
                        }
                        HeadAsk::Release(_, entry) => named.release(node_id, &named_actor(&entry)),
                        HeadAsk::Find(t, name) => local.actor_found(t, named.find(&name).and_then(crate::wire::found_actor)),
                        HeadAsk::JobStarted(_, row) => named.jobs.lock().start(node_id, row),
                        HeadAsk::JobEnded(_, row) => named.jobs.lock().end(node_id, row.job_id, row.end_ms),
                        HeadAsk::Export(_, row) => {
                            let f = FunctionId { exporter: WorkerId(row.exporter), seq: row.seq };
                            if named.export(node_id, row).is_ok() {
                                local.function_published(f);
                            }
                        }
                        HeadAsk::Fetch(_, f, answer) => {
                            let row = named.function(f.exporter.0, f.seq);
                            let _ = answer.send(row.map(|r| r.pickled));
                        }
                    },
                }
            }
        });
        let (node, interval, mut stop) = (node.clone(), opts.heartbeat_interval, stop_rx.clone());
        let peers = peers.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return Ok(()),
                    _ = tick.tick() => {
                        let view = {
                            let mut nodes = control.nodes.lock();
                            nodes.set_load(node_id, load_of(&node), Instant::now());
                            nodes.view(Instant::now())
                        };
                        peers.update(&view);
                    }
                }
            }
        });
        address
    } else {
        let address = opts.head_address.clone().expect("a node has a head");
        let client = HeadClient::connect(&address, &credentials, Some(desc.clone())).await?;
        let joined = Joined {
            address: address.clone(),
            credentials,
            desc,
            node: node.clone(),
            head_timeout: opts.head_timeout,
            peers: peers.clone(),
            asks,
        };
        background.spawn(joined.keep(client, stop_rx.clone()));
        address
    };

    // Step 3.
    let record = NodeFile {
        pid,
        start_time: process_start_time(pid).unwrap_or(0),
        node_id: node_id.to_string(),
        head: head_address.clone(),
        is_head,
        socket: node.socket_name().to_string(),
    };
    session.write_node(&record)?;
    on_ready(&Ready { node_id, head: head_address, is_head, pid });

    // Step 4.
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(()),
        Some(ended) = background.join_next() => ended.unwrap_or(Ok(())),
    };
    let _ = stop_tx.send(true);
    // A node's keeper sends its leave on the stop signal; the head's server
    // closes its connections.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while background.join_next().await.is_some() {} }).await;
    background.abort_all();
    peers.clear();
    session.remove_node(pid);
    drop(node);
    outcome
}

/// A node asks for the cluster's view every heartbeat while the cluster
/// has at most this many other nodes, and every `n / VIEW_SHARE`
/// heartbeats with `n` of them.
const VIEW_SHARE: usize = 16;

/// Completes once the stop signal is raised (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A node's membership: heartbeats, and joining again when the link breaks.
struct Joined {
    address: String,
    credentials: Credentials,
    desc: NodeDesc,
    node: Arc<Node>,
    head_timeout: Duration,
    /// Kept in step with the head's view, asked for every heartbeat.
    peers: Arc<Peers>,
    /// The node's requests to the head's tables (names, jobs, functions).
    asks: tokio::sync::mpsc::UnboundedReceiver<HeadAsk>,
}

/// A node's request to the head's tables of actor names, jobs and functions
/// (`wire` steps 7 to 9), numbered (by the node's ticket, or by [`HeadAsks`]).
enum HeadAsk {
    Claim(u64, DirectoryEntry),
    Release(u64, DirectoryEntry),
    Find(u64, String),
    JobStarted(u64, JobRow),
    JobEnded(u64, JobRow),
    /// A driver's function for the cluster's table (`wire` step 9).
    Export(u64, FunctionRow),
    /// A link lacks a function: its bytes go to `answer`.
    Fetch(u64, FunctionId, tokio::sync::oneshot::Sender<Option<Vec<u8>>>),
}

/// The node's [`ClusterDirectory`]: its requests, queued for the daemon's
/// task that talks to the head (never blocking under the node's lock).
struct HeadAsks {
    tx: tokio::sync::mpsc::UnboundedSender<HeadAsk>,
    /// Numbers for the requests the node does not number (the head
    /// acknowledges those too).
    next: std::sync::atomic::AtomicU64,
}

impl HeadAsks {
    fn channel() -> (Arc<HeadAsks>, tokio::sync::mpsc::UnboundedReceiver<HeadAsk>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Apart from the node's tickets (counted from 1).
        (Arc::new(HeadAsks { tx, next: std::sync::atomic::AtomicU64::new(1 << 63) }), rx)
    }

    fn number(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl ClusterDirectory for HeadAsks {
    fn claim(&self, ticket: u64, entry: DirectoryEntry) {
        let _ = self.tx.send(HeadAsk::Claim(ticket, entry));
    }

    fn release(&self, entry: DirectoryEntry) {
        let _ = self.tx.send(HeadAsk::Release(self.number(), entry));
    }

    fn find(&self, ticket: u64, name: &str) {
        let _ = self.tx.send(HeadAsk::Find(ticket, name.to_string()));
    }

    fn job_started(&self, job: JobInfo) {
        let row = JobRow {
            job_id: job.job.0,
            pid: job.pid,
            entrypoint: job.entrypoint,
            start_ms: crate::control::unix_ms(),
            ..JobRow::default()
        };
        let _ = self.tx.send(HeadAsk::JobStarted(self.number(), row));
    }

    fn job_ended(&self, job: WorkerId) {
        let row = JobRow { job_id: job.0, end_ms: crate::control::unix_ms(), ..JobRow::default() };
        let _ = self.tx.send(HeadAsk::JobEnded(self.number(), row));
    }

    fn export_function(&self, function: FunctionId, job: WorkerId, pickled: Arc<Vec<u8>>) {
        // A larger one goes with its calls, as without a table.
        if pickled.len() > crate::wire::MAX_TABLE_FUNCTION {
            return;
        }
        let row = FunctionRow {
            exporter: function.exporter.0,
            seq: function.seq,
            job_id: job.0,
            node_id: 0,
            pickled: (*pickled).clone(),
        };
        let _ = self.tx.send(HeadAsk::Export(self.number(), row));
    }
}

impl FunctionSource for HeadAsks {
    fn fetch(&self, function: FunctionId) -> tokio::sync::oneshot::Receiver<Option<Vec<u8>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(HeadAsk::Fetch(self.number(), function, tx));
        rx
    }
}

/// A claim's or release's row: the head sets the node.
fn named_actor(e: &DirectoryEntry) -> NamedActor {
    crate::wire::actor_row(NodeId(0), e)
}

impl HeadAsk {
    fn to_head(&self) -> ToHeadKind {
        match self {
            HeadAsk::Claim(t, e) => ToHeadKind::Claim(NameClaim { req: *t, actor: Some(named_actor(e)) }),
            HeadAsk::Release(t, e) => ToHeadKind::Release(NameClaim { req: *t, actor: Some(named_actor(e)) }),
            HeadAsk::Find(t, name) => ToHeadKind::Find(FindActor { req: *t, name: name.clone() }),
            HeadAsk::JobStarted(t, j) => ToHeadKind::JobStarted(JobEvent { req: *t, job: Some(j.clone()) }),
            HeadAsk::JobEnded(t, j) => ToHeadKind::JobEnded(JobEvent { req: *t, job: Some(j.clone()) }),
            HeadAsk::Export(t, f) => ToHeadKind::Export(FunctionExport { req: *t, function: Some(f.clone()) }),
            HeadAsk::Fetch(t, f, _) => ToHeadKind::Fetch(FetchFunction { req: *t, exporter: f.exporter.0, seq: f.seq }),
        }
    }

    fn ticket(&self) -> u64 {
        match self {
            HeadAsk::Claim(t, _) | HeadAsk::Release(t, _) | HeadAsk::Find(t, _) => *t,
            HeadAsk::JobStarted(t, _) | HeadAsk::JobEnded(t, _) => *t,
            HeadAsk::Export(t, _) | HeadAsk::Fetch(t, _, _) => *t,
        }
    }
}

impl Joined {
    async fn keep(mut self, mut client: HeadClient, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        // Requests to the names table sent and not answered: sent again on
        // the next connection after a break (each is idempotent), so none
        // is lost with a head that restarts.
        let mut unanswered: std::collections::BTreeMap<u64, HeadAsk> = std::collections::BTreeMap::new();
        loop {
            let interval = Duration::from_millis(client.registered.heartbeat_interval_ms.max(10));
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks = 0u64;
            // The head's messages are read by a task of their own: a read
            // given up for a tick would lose what it had read of a frame.
            let HeadClient { reader, mut writer, .. } = client;
            let (from_head_tx, mut from_head) = tokio::sync::mpsc::channel(4);
            let reading = tokio::spawn(async move {
                let mut reader = reader;
                loop {
                    let msg = reader.receive().await;
                    let end = msg.is_err();
                    if from_head_tx.send(msg).await.is_err() || end {
                        return;
                    }
                }
            });
            let mut resent = None;
            for ask in unanswered.values() {
                if let Err(e) = writer.send(ask.to_head()).await {
                    resent = Some(e);
                    break;
                }
            }
            let broken = loop {
                if let Some(e) = resent.take() {
                    break e;
                }
                tokio::select! {
                    _ = stopped(&mut stop) => {
                        // Best effort: a head that does not hear it times the node out.
                        let _ = writer.send(ToHeadKind::Leave(crate::wire::Empty {})).await;
                        reading.abort();
                        return Ok(());
                    }
                    _ = tick.tick() => {
                        if let Err(e) = writer.send(ToHeadKind::Heartbeat(load_of(&self.node))).await {
                            break e;
                        }
                        // The view every heartbeat in a small cluster; in a
                        // larger one every `nodes / VIEW_SHARE` heartbeats, so
                        // the head's work for views grows with the nodes,
                        // not their square (peers learn of a death from
                        // their link at once; of joins and loads later).
                        ticks += 1;
                        let every = (self.peers.known() / VIEW_SHARE).max(1) as u64;
                        if ticks.is_multiple_of(every) {
                            if let Err(e) = writer.send(ToHeadKind::View(crate::wire::Empty {})).await {
                                break e;
                            }
                        }
                    }
                    Some(ask) = self.asks.recv() => {
                        let sent = writer.send(ask.to_head()).await;
                        unanswered.insert(ask.ticket(), ask);
                        if let Err(e) = sent {
                            break e;
                        }
                    }
                    msg = from_head.recv() => match msg {
                        Some(Ok(FromHeadKind::View(view))) => self.peers.update(&view),
                        Some(Ok(FromHeadKind::Claimed(a))) => {
                            if let Some(HeadAsk::Claim(t, _)) = unanswered.remove(&a.req) {
                                let result = if a.refusal.is_empty() { Ok(()) } else { Err(a.refusal) };
                                self.node.name_claimed(t, result);
                            }
                        }
                        Some(Ok(FromHeadKind::Found(f))) => {
                            if let Some(HeadAsk::Find(t, _)) = unanswered.remove(&f.req) {
                                self.node.actor_found(t, f.actor.and_then(crate::wire::found_actor));
                            }
                        }
                        Some(Ok(FromHeadKind::Noted(a))) => {
                            if let Some(HeadAsk::Export(_, f)) = unanswered.remove(&a.req) {
                                if a.refusal.is_empty() {
                                    self.node.function_published(FunctionId { exporter: WorkerId(f.exporter), seq: f.seq });
                                } else {
                                    tracing::info!("the cluster's function table did not take a function: {}", a.refusal);
                                }
                            }
                        }
                        Some(Ok(FromHeadKind::Function(found))) => {
                            if let Some(HeadAsk::Fetch(_, _, answer)) = unanswered.remove(&found.req) {
                                let _ = answer.send(found.function.map(|r| r.pickled));
                            }
                        }
                        Some(Ok(FromHeadKind::List(r))) => {
                            let what = ListWhat::try_from(r.what).unwrap_or(ListWhat::Events);
                            let mut rows = crate::inspect::rows(&self.node, what);
                            rows.req = r.req;
                            if let Err(e) = writer.send(ToHeadKind::Listed(rows)).await {
                                break e;
                            }
                        }
                        Some(Ok(_)) => break ClusterError::Protocol("an answer nobody asked for".into()),
                        Some(Err(e)) => break e,
                        None => break ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into()),
                    },
                };
            };
            reading.abort();
            if !broken.is_retryable() {
                tracing::error!("the head refused this node: {broken}");
                return Err(broken);
            }
            tracing::warn!("lost the head at {}: {broken}; joining again", self.address);
            // Peers could not fetch functions from the head meanwhile.
            self.node.set_head_away(true);
            match self.rejoin(&mut stop).await? {
                Some(c) => {
                    self.node.set_head_away(false);
                    client = c;
                }
                None => return Ok(()),
            }
        }
    }

    /// Registers again, pausing 100 ms, then twice as long each time up to
    /// 2 s, for at most the head timeout.
    /// `None`: the daemon stops meanwhile.
    async fn rejoin(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<Option<HeadClient>> {
        let deadline = Instant::now() + self.head_timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
            match HeadClient::connect(&self.address, &self.credentials, Some(self.desc.clone())).await {
                Ok(c) => {
                    tracing::info!("joined the head at {} again", self.address);
                    return Ok(Some(c));
                }
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    pause = (pause * 2).min(Duration::from_secs(2))
                }
                Err(e) if e.is_retryable() => {
                    tracing::error!("no head at {} for {} s: stopping", self.address, self.head_timeout.as_secs());
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
