//! The head's server: nodes register and send heartbeats, clients ask for
//! the cluster's view. It takes its listener and its shutdown signal as
//! arguments ([`serve`]), so a test runs it on a port of its own.
//!
//! Who gets in, in this order, each step costing a stranger as little as
//! possible:
//! 1. At most [`HeadConfig::max_connections`] at once; more are closed as
//!    they arrive.
//! 2. The TLS handshake (`crate::tls`: the head's certificate, no client
//!    certificate), then the first frame, must be done within the handshake
//!    timeout, and the frame must fit in [`MAX_REGISTER_FRAME`] bytes.
//!    Nothing else is read before it. A peer that fails the handshake (not
//!    TLS, or it gave up on the head's certificate) is logged once per
//!    address and reason, like any refusal, and closed.
//! 3. The protocol version, then the token (constant time); a refusal is
//!    answered with its reason and logged once per peer address and reason.
//! 4. A node's description is checked (`crate::wire`), then the node table
//!    decides (`crate::control`).
//!
//! After that each connection is one task reading requests in order and
//! answering each before the next. A heartbeat is accepted only from the
//! connection its node registered on.

use crate::control::{ActorNames, ConnId, FunctionTable, JobTable, NodeTable};
use crate::error::ClusterError;
use crate::wire::*;
use ferroray_common::{ClusterToken, NodeId};
use ferroray_protocol::frame;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::mem::Discriminant;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the head serves.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    pub token: ClusterToken,
    /// The head's TLS side (`crate::tls::HeadIdentity::server_config`).
    pub tls: Arc<rustls::ServerConfig>,
    /// How often nodes report; sent to each node when it registers.
    pub heartbeat_interval: Duration,
    /// A node silent for longer is declared dead.
    pub node_timeout: Duration,
    /// A connection that has not registered by then is closed.
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

impl HeadConfig {
    pub fn new(token: ClusterToken, tls: Arc<rustls::ServerConfig>) -> Self {
        HeadConfig {
            token,
            tls,
            heartbeat_interval: Duration::from_millis(1000),
            node_timeout: Duration::from_millis(10_000),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 4096,
        }
    }

    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.heartbeat_interval.is_zero() || self.node_timeout < 2 * self.heartbeat_interval {
            return Err(ClusterError::Config(format!(
                "the node timeout ({} ms) must be at least twice the heartbeat interval ({} ms)",
                self.node_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            )));
        }
        Ok(())
    }
}

/// The head's state, shared by its connections.
pub struct Control {
    pub config: HeadConfig,
    pub nodes: Mutex<NodeTable>,
    /// The names of actors across the cluster (`wire` step 7). Taken after
    /// `nodes` when both are held.
    pub names: Mutex<ActorNames>,
    /// The cluster's jobs (`wire` step 8). Taken before `functions` when
    /// both are held.
    pub jobs: Mutex<JobTable>,
    /// Functions exported once per cluster (`wire` step 9).
    pub functions: Mutex<FunctionTable>,
    /// The head's own node.
    pub head_node: NodeId,
    next_conn: AtomicU64,
    open: AtomicUsize,
    /// Peers refused once already for a reason (logged only the first time).
    refused: Mutex<HashSet<(IpAddr, Discriminant<ClusterError>)>>,
    /// Each registered node's connection, for the head's requests to it
    /// (`wire` step 6), with the connection's number (a node that joined
    /// again replaces its entry; only its own connection removes it).
    links: Mutex<HashMap<NodeId, (ConnId, NodeLink)>>,
    /// The head's own node's rows, set by the daemon that runs the head.
    pub local: std::sync::OnceLock<LocalRows>,
}

/// Where a node's connection takes the head's requests.
type NodeLink = tokio::sync::mpsc::UnboundedSender<(ListWhat, tokio::sync::oneshot::Sender<Listing>)>;

/// Makes the rows of the head's own node.
pub type LocalRows = Box<dyn Fn(ListWhat) -> Listing + Send + Sync>;

/// How long a listing waits for the nodes' answers.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(3);

impl Control {
    /// The control store in the head's memory, with the head's own node in
    /// it.
    pub fn new(config: HeadConfig, head: NodeDesc) -> Arc<Self> {
        let nodes = NodeTable::new(config.node_timeout);
        Control::with_tables(config, nodes, ActorNames::new(), JobTable::new(), FunctionTable::new(), head)
    }

    /// The control store over its tables (say, restored from storage:
    /// `NodeTable::restore` and the others'), with the head's own node
    /// added.
    pub fn with_tables(
        config: HeadConfig,
        mut nodes: NodeTable,
        names: ActorNames,
        jobs: JobTable,
        functions: FunctionTable,
        head: NodeDesc,
    ) -> Arc<Self> {
        let head_node = NodeId(head.node_id);
        nodes.register_head(head, Instant::now());
        Arc::new(Control {
            config,
            nodes: Mutex::new(nodes),
            names: Mutex::new(names),
            jobs: Mutex::new(jobs),
            functions: Mutex::new(functions),
            head_node,
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            refused: Mutex::new(HashSet::new()),
            links: Mutex::new(HashMap::new()),
            local: std::sync::OnceLock::new(),
        })
    }

    /// Node `node` claims `row`'s name (`wire` step 7).
    pub fn claim(&self, node: NodeId, row: NamedActor) -> Result<(), String> {
        let nodes = self.nodes.lock();
        self.names.lock().claim(node, row, &nodes)
    }

    /// Node `node`'s actor let go of its name.
    pub fn release(&self, node: NodeId, row: &NamedActor) {
        self.names.lock().release(node, &row.name, &row.actor_id);
    }

    /// The live actor named `name`, and its node.
    pub fn find(&self, name: &str) -> Option<NamedActor> {
        let nodes = self.nodes.lock();
        self.names.lock().find(name, &nodes)
    }

    /// Node `node` exports `row` for the cluster (`wire` step 9).
    pub fn export(&self, node: NodeId, row: FunctionRow) -> Result<(), String> {
        let jobs = self.jobs.lock();
        self.functions.lock().export(node, row, &jobs)
    }

    /// An exported function's row, if the table has it.
    pub fn function(&self, exporter: u64, seq: u64) -> Option<FunctionRow> {
        self.functions.lock().get(exporter, seq)
    }

    fn refuse(&self, peer: SocketAddr, why: &ClusterError) {
        if self.refused.lock().insert((peer.ip(), std::mem::discriminant(why))) {
            tracing::warn!("refused a connection from {peer}: {why}");
        }
    }
}

/// Serves until `shutdown` completes; every connection ends with it.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>, control: Arc<Control>) {
    let sweeper = tokio::spawn(sweep(control.clone()));
    let acceptor = tokio_rustls::TlsAcceptor::from(control.config.tls.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    if control.open.load(Ordering::Relaxed) >= control.config.max_connections {
                        control.refuse(peer, &ClusterError::Config("too many connections".into()));
                        continue;
                    }
                    control.open.fetch_add(1, Ordering::Relaxed);
                    let (control, acceptor) = (control.clone(), acceptor.clone());
                    tasks.spawn(async move {
                        connection(stream, peer, acceptor, &control).await;
                        control.open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: back off, do not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    sweeper.abort();
    tasks.shutdown().await;
}

/// Declares silent nodes dead, twice per heartbeat interval.
async fn sweep(control: Arc<Control>) {
    let period = (control.config.heartbeat_interval / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes = {
            let mut nodes = control.nodes.lock();
            for id in nodes.sweep(Instant::now()) {
                tracing::warn!("node {id} is dead: no heartbeat for {} ms", control.config.node_timeout.as_millis());
            }
            nodes
        };
        // The names of actors on nodes that died go with them, and their
        // jobs fail.
        control.names.lock().prune(&nodes);
        let now = crate::control::unix_ms();
        let mut jobs = control.jobs.lock();
        jobs.prune(&nodes, now);
        // The functions of jobs a while ended go.
        control.functions.lock().prune(&jobs, now);
    }
}

fn rejection(e: &ClusterError) -> FromHeadKind {
    let kind = match e {
        ClusterError::WrongToken => RejectKind::WrongToken,
        ClusterError::NodeDead(..) => RejectKind::NodeDead,
        ClusterError::NodeIdInUse(_) => RejectKind::NodeIdInUse,
        _ => RejectKind::Other,
    };
    FromHeadKind::Rejected(Rejection { kind: kind as i32, reason: e.to_string() })
}

async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, msg: FromHeadKind) -> Result<(), ClusterError> {
    let mut buf = Vec::new();
    frame::encode_into(&mut buf, FromHead::new(msg))?;
    // A peer that does not read holds only its own task, and not forever.
    // A TLS stream holds what it was given until flushed.
    tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(&buf).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| ClusterError::Timeout("a reply to a peer"))??;
    Ok(())
}

/// What the handshake timeout bounds: the TLS handshake, then the first
/// frame.
enum Opening<S> {
    Frame(S, Result<Option<ToHead>, ferroray_protocol::FrameError>),
    HandshakeFailed(std::io::Error),
}

async fn connection(stream: TcpStream, peer: SocketAddr, acceptor: tokio_rustls::TlsAcceptor, control: &Control) {
    let _ = stream.set_nodelay(true);
    let conn: ConnId = control.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut body = Vec::new();
    // Step 2.
    let opening = tokio::time::timeout(control.config.handshake_timeout, async {
        let mut stream = match acceptor.accept(stream).await {
            Ok(s) => s,
            Err(e) => return Opening::HandshakeFailed(e),
        };
        let first = frame::read_frame_async_max::<_, ToHead>(&mut stream, &mut body, MAX_REGISTER_FRAME).await;
        Opening::Frame(stream, first)
    })
    .await;
    let (mut stream, first) = match opening {
        Ok(Opening::Frame(stream, first)) => (stream, first),
        // Closed before a byte, like an empty connection: nothing to refuse.
        Ok(Opening::HandshakeFailed(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
        Ok(Opening::HandshakeFailed(e)) => {
            let why = match crate::tls::stream_error(e) {
                ClusterError::Io(e) => ClusterError::Tls(format!("handshake: {e}")),
                tls => tls,
            };
            return control.refuse(peer, &why);
        }
        Err(_) => return control.refuse(peer, &ClusterError::Timeout("registering")),
    };
    let register = match first {
        Ok(Some(ToHead { kind: Some(ToHeadKind::Register(r)) })) => r,
        Ok(None) => return,
        Ok(Some(_)) => return refuse(&mut stream, peer, control, ClusterError::NotRegistered("a request")).await,
        Err(e) => return refuse(&mut stream, peer, control, e.into()).await,
    };
    // Step 3.
    if register.protocol != CONTROL_PROTOCOL_VERSION {
        let e = ClusterError::Version { theirs: register.protocol, ours: CONTROL_PROTOCOL_VERSION };
        return refuse(&mut stream, peer, control, e).await;
    }
    if !ClusterToken::from_bytes(&register.token).is_some_and(|t| control.config.token.matches(&t)) {
        return refuse(&mut stream, peer, control, ClusterError::WrongToken).await;
    }
    // Step 4.
    let node = match (PeerRole::try_from(register.role), register.node) {
        (Ok(PeerRole::Node), Some(desc)) => {
            let id = NodeId(desc.node_id);
            let address = desc.address.clone();
            let registered = control.nodes.lock().register(desc, conn, Instant::now());
            if let Err(e) = registered {
                return refuse(&mut stream, peer, control, e).await;
            }
            tracing::info!("node {id} joined from {peer} (address {address})");
            Some(id)
        }
        (Ok(PeerRole::Client), None) => None,
        _ => {
            let e = ClusterError::Protocol("a node must describe itself, and only a node".into());
            return refuse(&mut stream, peer, control, e).await;
        }
    };
    let registered = Registered {
        head_node_id: control.head_node.0,
        heartbeat_interval_ms: control.config.heartbeat_interval.as_millis() as u64,
        node_timeout_ms: control.config.node_timeout.as_millis() as u64,
    };
    if reply(&mut stream, FromHeadKind::Registered(registered)).await.is_ok() {
        serve_requests(&mut stream, node, conn, control, &mut body).await;
    }
    if let Some(id) = node {
        control.nodes.lock().disconnected(id, conn);
    }
    close(&mut stream).await;
}

/// Ends TLS with its close message, so the peer tells a close from a cut;
/// a peer that does not read holds this task for a second at most.
async fn close<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Serves a registered connection until it ends. Frames are read by a loop
/// of their own (a read cut short would lose bytes), handed over through a
/// channel, so that a node's connection can also carry the head's requests
/// to it.
async fn serve_requests<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    node: Option<NodeId>,
    conn: ConnId,
    control: &Control,
    body: &mut Vec<u8>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(16);
    let reading = async move {
        loop {
            let frame = frame::read_frame_async_max::<_, ToHead>(&mut rd, body, MAX_CONTROL_FRAME).await;
            let end = !matches!(frame, Ok(Some(_)));
            if frames_tx.send(frame).await.is_err() || end {
                // The handler has what it needs to end.
                return std::future::pending::<()>().await;
            }
        }
    };
    let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
    if let Some(id) = node {
        control.links.lock().insert(id, (conn, requests_tx));
    }
    let handling = async {
        let mut waiting: HashMap<u64, tokio::sync::oneshot::Sender<Listing>> = HashMap::new();
        let mut next_req = 1u64;
        loop {
            let request = tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Ok(Some(ToHead { kind: Some(kind) }))) => kind,
                    Some(Ok(_)) | None => return,
                    Some(Err(e)) => {
                        let _ = reply(&mut wr, rejection(&e.into())).await;
                        return;
                    }
                },
                Some((what, answer)) = requests.recv() => {
                    let req = next_req;
                    next_req += 1;
                    waiting.insert(req, answer);
                    let ask = FromHeadKind::List(ListRequest { req, what: what as i32 });
                    if reply(&mut wr, ask).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let answer = match (request, node) {
                (ToHeadKind::Heartbeat(load), Some(id)) => {
                    let heard = control.nodes.lock().heartbeat(id, load, Instant::now());
                    heard.err().map(Err)
                }
                (ToHeadKind::View(_), _) => {
                    let mut view = control.nodes.lock().view(Instant::now());
                    view.jobs_running = control.jobs.lock().running() as u64;
                    view.named_actors = control.names.lock().len() as u64;
                    view.functions = control.functions.lock().len() as u64;
                    Some(Ok(FromHeadKind::View(view)))
                }
                (ToHeadKind::Leave(_), Some(id)) => {
                    control.nodes.lock().leave(id, "stopped");
                    tracing::info!("node {id} left");
                    return;
                }
                (ToHeadKind::Listed(listing), Some(_)) => {
                    // An answer nobody waits for any more (timed out) is dropped.
                    if let Some(w) = waiting.remove(&listing.req) {
                        let _ = w.send(listing);
                    }
                    None
                }
                (ToHeadKind::List(r), _) if r.what == ListWhat::Jobs as i32 => {
                    let jobs = control.jobs.lock().rows();
                    Some(Ok(FromHeadKind::Listed(Listing { jobs, ..Listing::default() })))
                }
                (ToHeadKind::List(r), _) => {
                    let what = ListWhat::try_from(r.what).unwrap_or(ListWhat::Events);
                    Some(Ok(FromHeadKind::Listed(gather(control, what).await)))
                }
                // Step 7 of `wire`: for the node this connection registered.
                (ToHeadKind::Claim(c), Some(id)) => {
                    let row = c.actor.expect("checked on arrival");
                    let refusal = control.claim(id, row).err().unwrap_or_default();
                    Some(Ok(FromHeadKind::Claimed(ClaimAnswer { req: c.req, refusal })))
                }
                (ToHeadKind::Release(c), Some(id)) => {
                    control.release(id, c.actor.as_ref().expect("checked on arrival"));
                    Some(Ok(FromHeadKind::Noted(Ack { req: c.req, refusal: String::new() })))
                }
                // Step 8.
                (ToHeadKind::JobStarted(e), Some(id)) => {
                    control.jobs.lock().start(id, e.job.expect("checked on arrival"));
                    Some(Ok(FromHeadKind::Noted(Ack { req: e.req, refusal: String::new() })))
                }
                (ToHeadKind::JobEnded(e), Some(id)) => {
                    let job = e.job.expect("checked on arrival");
                    control.jobs.lock().end(id, job.job_id, job.end_ms);
                    Some(Ok(FromHeadKind::Noted(Ack { req: e.req, refusal: String::new() })))
                }
                // Step 9.
                (ToHeadKind::Export(e), Some(id)) => {
                    let refusal = control.export(id, e.function.expect("checked on arrival")).err().unwrap_or_default();
                    Some(Ok(FromHeadKind::Noted(Ack { req: e.req, refusal })))
                }
                (ToHeadKind::Fetch(f), Some(_)) => {
                    let function = control.function(f.exporter, f.seq);
                    Some(Ok(FromHeadKind::Function(FoundFunction { req: f.req, function })))
                }
                (ToHeadKind::Find(f), Some(_)) => {
                    let actor = control.find(&f.name);
                    Some(Ok(FromHeadKind::Found(FoundActor { req: f.req, actor })))
                }
                (ToHeadKind::Register(_), _) => Some(Err(ClusterError::Protocol("registered twice".into()))),
                (_, None) => Some(Err(ClusterError::Protocol(
                    "only a node sends heartbeats, leaves, listings or actor names".into(),
                ))),
            };
            #[allow(clippy::collapsible_match)] // the reply moves the message
            match answer {
                None => {}
                Some(Ok(msg)) => {
                    if reply(&mut wr, msg).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let _ = reply(&mut wr, rejection(&e)).await;
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = reading => {}
        _ = handling => {}
    }
    if let Some(id) = node {
        let mut links = control.links.lock();
        if links.get(&id).is_some_and(|(c, _)| *c == conn) {
            links.remove(&id);
        }
    }
}

/// Step 6 of `wire`: every alive node's rows, the head's own first; nodes
/// that do not answer within [`LIST_TIMEOUT`] are named in `missing`.
async fn gather(control: &Control, what: ListWhat) -> Listing {
    let mut out = control.local.get().map(|rows| rows(what)).unwrap_or_default();
    let alive = control.nodes.lock().alive_nodes();
    let mut asked = Vec::new();
    {
        let links = control.links.lock();
        for id in &alive {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match links.get(id) {
                Some((_, link)) if link.send((what, tx)).is_ok() => asked.push((*id, rx)),
                _ => out.missing.push(id.to_string()),
            }
        }
    }
    let deadline = tokio::time::Instant::now() + LIST_TIMEOUT;
    for (id, rx) in asked {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(rows)) => {
                out.events.extend(rows.events);
                out.actors.extend(rows.actors);
                out.objects.extend(rows.objects);
                out.truncated |= rows.truncated;
            }
            _ => out.missing.push(id.to_string()),
        }
    }
    fit(&mut out);
    out
}

/// Cuts a listing until it fits in a frame: the oldest events go first.
fn fit(out: &mut Listing) {
    use prost::Message;
    let limit = MAX_CONTROL_FRAME as usize - 4096;
    while out.encoded_len() > limit {
        out.truncated = true;
        out.events.sort_by_key(|e| e.time_us);
        let (e, a, o) = (out.events.len(), out.actors.len(), out.objects.len());
        out.events.drain(..e / 2 + usize::from(e == 1));
        out.actors.truncate(a / 2);
        out.objects.truncate(o / 2);
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, peer: SocketAddr, control: &Control, why: ClusterError) {
    control.refuse(peer, &why);
    let _ = reply(stream, rejection(&why)).await;
    close(stream).await;
}
