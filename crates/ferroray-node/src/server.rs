//! The socket side of the node.
//!
//! Who gets in (see `docs/security.md`), checked in this order so that each
//! step costs an outsider as little as possible:
//! 1. The accept loop admits at most `max_connections` at once; more are
//!    closed as they arrive. An accept error (out of file descriptors) backs
//!    off, up to a second, and is logged once until an accept succeeds.
//! 2. The peer's credentials (`SO_PEERCRED`, from the kernel): another user
//!    is closed before a byte is read. Its pid, not the one it claims, is
//!    the connection's.
//! 3. The hello must arrive within `handshake_timeout`, in a frame of at
//!    most [`limits::MAX_HELLO_FRAME`] bytes (read without a buffer: a
//!    connection that never says hello costs a socket and a task, nothing
//!    more). Only then is the connection added to the state, which checks
//!    the token and the claimed identity.
//! 4. Every message is checked against [`limits`] before the state lock is
//!    taken.
//!
//! Refusals are logged once per peer (user or pid), not per attempt.
//!
//! After the hello each connection gets a reader task and a writer task:
//! 1. The reader decodes frames (through a buffer: a burst of frames costs one
//!    read) and hands each message to the state under its lock. A frame that
//!    is too large or does not decode closes only this connection, after a
//!    [`FromNode::Rejected`] naming the problem; the node goes on serving
//!    everyone else.
//! 2. Messages to the connection are encoded into its [`SocketOutbox`] under
//!    the state lock, and go out once the lock is released. The thread that
//!    queued them writes them at once if it is not the server's own (a user
//!    thread's `submit` or stream acknowledgement reaches the worker without
//!    waking this thread), with a non-blocking write. The server thread
//!    leaves them to the writer task instead, which sends everything queued
//!    by then in one write (a burst of replies costs one syscall), and which
//!    also takes over whatever a non-blocking write could not send. Only one
//!    of the two writes at a time (`writing`), so bytes never interleave.
//! 3. When either side ends, the connection is removed from the state, which
//!    releases what it held and retries or fails the task it was running, and
//!    closes the outbox: the writer sends what is left and shuts the socket.

//!
//! Before the server thread sleeps it watches every connection's socket for a
//! moment ([`Watch`], `ferroray_common::spin`): a worker's answer to a call
//! just sent is often that close, and waking a sleeping thread costs more.

use crate::state::Outbox;
use crate::Shared;
use ferroray_common::Error;
use ferroray_protocol::{frame, limits, FromNode, ToNode};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Notify};

/// A socket connection's outgoing messages (step 2).
pub(crate) struct SocketOutbox {
    out: Mutex<Pending>,
    /// The same socket, for writes from other threads (non-blocking, like
    /// the runtime's own handle).
    direct: std::os::unix::net::UnixStream,
    wake: Notify,
    /// Something was queued since the last flush (read under the state lock).
    pending: AtomicBool,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The writer task has bytes in flight: nobody else writes.
    writing: bool,
    closed: bool,
}

impl SocketOutbox {
    fn new(direct: std::os::unix::net::UnixStream) -> Self {
        SocketOutbox {
            out: Mutex::new(Pending::default()),
            direct,
            wake: Notify::new(),
            pending: AtomicBool::new(false),
        }
    }

    pub(crate) fn send(&self, msg: FromNode) {
        let mut out = self.out.lock();
        if out.closed {
            return;
        }
        if let Err(e) = frame::encode_into(&mut out.bytes, msg) {
            tracing::error!("cannot encode a message: {e}");
        }
        self.pending.store(true, Ordering::Release);
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Writes what is queued from the calling thread, as far as the socket
    /// takes it without blocking; the writer task sends the rest.
    pub(crate) fn flush_here(&self) {
        self.pending.store(false, Ordering::Release);
        let mut out = self.out.lock();
        if out.writing || out.bytes.is_empty() {
            return;
        }
        loop {
            match send_nosignal(&self.direct, &out.bytes) {
                Ok(n) => {
                    out.bytes.drain(..n);
                    if out.bytes.is_empty() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The connection is going: its reader sees the end.
                Err(_) => return out.bytes.clear(),
            }
        }
        out.writing = true;
        drop(out);
        self.wake.notify_one();
    }

    /// Sends what is queued (a driver's welcome, right after its hello)
    /// with the store's descriptor attached; what the socket does not take
    /// at once is left to the writer task.
    pub(crate) fn flush_with_fd(&self, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        let mut out = self.out.lock();
        if out.writing || out.bytes.is_empty() {
            return Err(std::io::Error::other("no welcome to send the store with"));
        }
        let n = ferroray_transport::unix::send_with_fd(&self.direct, &out.bytes, fd)?;
        out.bytes.drain(..n);
        Ok(())
    }

    /// Leaves what is queued to the writer task.
    pub(crate) fn flush_later(&self) {
        self.pending.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    pub(crate) fn close(&self) {
        self.out.lock().closed = true;
        self.wake.notify_one();
    }
}

/// A non-blocking `send` that cannot raise SIGPIPE in the embedding process
/// when the peer is gone (it fails with `EPIPE` instead).
fn send_nosignal(socket: &std::os::unix::net::UnixStream, bytes: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a socket we own, with a valid buffer and length.
    let n = unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The writer task: sends what the outbox holds whenever woken, until it is
/// closed and empty; then shuts the socket.
async fn write_loop(outbox: Arc<SocketOutbox>, mut wr: OwnedWriteHalf) {
    let mut chunk = Vec::with_capacity(4096);
    loop {
        let idle = {
            let mut out = outbox.out.lock();
            if out.bytes.is_empty() {
                out.writing = false;
                Some(out.closed)
            } else {
                out.writing = true;
                std::mem::swap(&mut out.bytes, &mut chunk);
                None
            }
        };
        match idle {
            Some(true) => break,
            // A wake-up between the check and here is kept as a permit.
            Some(false) => outbox.wake.notified().await,
            None => {
                if wr.write_all(&chunk).await.is_err() {
                    // Nothing more goes out (`writing` stays set).
                    outbox.out.lock().closed = true;
                    break;
                }
                chunk.clear();
            }
        }
    }
    let _ = wr.shutdown().await;
}

pub use ferroray_transport::unix::{bind_abstract, connect_abstract};

/// The sockets the server thread watches before it sleeps: an epoll set of
/// every admitted connection, level-triggered on input, of its own (the
/// runtime's is not reachable). Only a shortcut: a frame that comes while
/// nobody watches wakes the runtime as before.
struct Watch {
    epoll: std::os::fd::OwnedFd,
}

impl Watch {
    fn new() -> std::io::Result<Watch> {
        use std::os::fd::FromRawFd;
        // SAFETY: a plain syscall; on success the new descriptor is ours.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we own and nothing else closes.
        Ok(Watch { epoll: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: libc::c_int, fd: std::os::fd::RawFd) {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
        // SAFETY: both descriptors are open; `ev` is a valid event. A failure
        // only means the socket is not watched.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
    }

    /// Watches the sockets until one has input, or the budget is spent.
    fn watch(&self) {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        ferroray_common::spin::Spin::new().until(None, || {
            // SAFETY: a zero-timeout wait on our epoll set into one valid event.
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, 0) > 0 }
        });
    }
}

/// Runs the server until `shutdown` fires (or its sender is dropped). The
/// listener and the shutdown signal are arguments, so a test can bind its own.
pub(crate) fn run(shared: Arc<Shared>, listener: std::os::unix::net::UnixListener, shutdown: oneshot::Receiver<()>) {
    let _ = shared.arena.set_inheritable(false);
    crate::local::mark_node_thread();
    let watch = match Watch::new() {
        Ok(w) => Arc::new(w),
        Err(e) => return tracing::error!("cannot create an epoll set: {e}"),
    };
    let watcher = watch.clone();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(move || watcher.watch())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return tracing::error!("cannot start the runtime: {e}"),
    };
    rt.block_on(async move {
        let listener = match UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!("cannot listen: {e}"),
        };
        serve(shared, listener, shutdown, watch).await;
    });
}

/// The accept loop's limits and its record of refused peers.
pub(crate) struct ConnLimits {
    max: usize,
    handshake_timeout: Duration,
    /// Socket connections open now.
    active: AtomicUsize,
    /// The most open since the last trim of the allocator's free memory.
    high_water: AtomicUsize,
    /// Peers already logged as refused: (reason, uid or pid). Bounded.
    refused: Mutex<HashSet<(&'static str, u32)>>,
    /// The cap was hit and logged; cleared once below it again.
    full_logged: AtomicBool,
}

/// Most peers remembered as already logged; past it, refusals go unlogged.
const MAX_REFUSALS_LOGGED: usize = 4096;

/// The most frames of one connection handled under one lock of the node:
/// a batch spares a placement pass and a write to each worker per frame,
/// and this bounds how long the others wait for the lock.
const BATCH: usize = 256;

impl ConnLimits {
    pub(crate) fn new(config: &crate::NodeConfig) -> Self {
        ConnLimits {
            max: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            active: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            refused: Mutex::new(HashSet::new()),
            full_logged: AtomicBool::new(false),
        }
    }

    /// Logs a refusal the first time for this peer.
    fn refuse(&self, reason: &'static str, peer: u32, detail: impl FnOnce() -> String) {
        let mut seen = self.refused.lock();
        if seen.len() < MAX_REFUSALS_LOGGED && seen.insert((reason, peer)) {
            tracing::warn!("refused a connection: {}", detail());
        }
    }

    /// Takes a connection slot, or `None` at the cap.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let n = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        if n > self.max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            if !self.full_logged.swap(true, Ordering::AcqRel) {
                tracing::warn!("{} connections open, the limit: refusing more", self.max);
            }
            return None;
        }
        self.high_water.fetch_max(n, Ordering::AcqRel);
        Some(Admitted(self.clone()))
    }

    /// After a burst of connections has ended, or when the state's tables
    /// were just shrunk (`shrunk`), gives the memory they took back to the
    /// system (the allocator keeps freed heap memory otherwise). Called
    /// from the node's tick.
    fn trim_after_burst(&self, shrunk: bool) {
        let active = self.active.load(Ordering::Acquire);
        let high = self.high_water.load(Ordering::Acquire);
        if shrunk || high >= active + 8 {
            self.high_water.store(active, Ordering::Release);
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
            if let Some(trim) = crate::HEAP_TRIM.get() {
                trim();
            }
        }
    }
}

/// One admitted connection's slot, given back on drop.
struct Admitted(Arc<ConnLimits>);

impl Drop for Admitted {
    fn drop(&mut self) {
        let n = self.0.active.fetch_sub(1, Ordering::AcqRel) - 1;
        if n < self.0.max {
            self.0.full_logged.store(false, Ordering::Release);
        }
    }
}

async fn serve(shared: Arc<Shared>, listener: UnixListener, mut shutdown: oneshot::Receiver<()>, watch: Arc<Watch>) {
    // Freed store pages stay resident for reuse while objects keep coming;
    // once the store has been quiet for a moment they go back to the system
    // (so an idle node holds no dead object memory for long).
    let mut trim = tokio::time::interval(crate::state::STORE_QUIET);
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = trim.tick() => {
                shared.lock().trim_store();
                shared.lock().exit_idle_workers();
                shared.lock().warn_long_waits(std::time::Instant::now());
                shared.lock().expire_directory(std::time::Instant::now());
                let shrunk = shared.lock().shrink_tables();
                shared.limits.trim_after_burst(shrunk);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::ZERO;
                    if let Some(slot) = shared.limits.admit() {
                        tokio::spawn(connection(shared.clone(), stream, slot, watch.clone()));
                    }
                }
                Err(e) => {
                    // Out of file descriptors (or memory): retrying at once
                    // would spin. Wait, longer each time, up to a second.
                    if backoff.is_zero() {
                        tracing::warn!("accept failed: {e}; backing off");
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
}

/// Writes a rejection straight to a socket that has no outbox yet, then
/// closes it (a peer that does not read it costs at most a second).
async fn reject_unaccepted(stream: &mut UnixStream, err: Error) {
    let mut buf = Vec::new();
    if frame::encode_into(&mut buf, FromNode::Rejected(err)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
    }
    let _ = stream.shutdown().await;
}

/// The effective uid of this process: the only user let in.
fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

async fn connection(shared: Arc<Shared>, mut stream: UnixStream, _slot: Admitted, watch: Arc<Watch>) {
    let limits = &shared.limits;
    // Step 2: who is on the other side, from the kernel.
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => return tracing::warn!("cannot read a connection's credentials: {e}"),
    };
    if cred.uid() != own_uid() {
        let uid = cred.uid();
        return limits.refuse("user", uid, || format!("uid {uid} is not this node's user"));
    }
    let pid = match cred.pid().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0) {
        Some(p) => p,
        None => return limits.refuse("pid", 0, || "the peer's pid is unknown".into()),
    };
    // Step 3: the hello, small and in time.
    let mut body = Vec::new();
    let first = tokio::time::timeout(
        limits.handshake_timeout,
        frame::read_frame_async_max::<_, ToNode>(&mut stream, &mut body, limits::MAX_HELLO_FRAME),
    )
    .await;
    let hello = match first {
        Err(_) => {
            let t = limits.handshake_timeout;
            return limits.refuse("silent", pid, || format!("pid {pid} sent no hello within {t:?}"));
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(msg @ ToNode::Hello { .. }))) => msg,
        Ok(Ok(Some(_))) => {
            return reject_unaccepted(&mut stream, Error::Protocol("the first message must be hello".into())).await
        }
        Ok(Err(e)) => {
            let err: Error = e.into();
            if !matches!(err, Error::Disconnected(_)) {
                reject_unaccepted(&mut stream, err).await;
            }
            return;
        }
    };
    drop(body);
    let direct = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => std::os::unix::net::UnixStream::from(fd),
        Err(e) => return tracing::warn!("cannot duplicate a connection: {e}"),
    };
    let (rd, wr) = stream.into_split();
    // The outbox keeps this descriptor (of the same socket) open until after
    // the watch is removed.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&direct);
    let outbox = Arc::new(SocketOutbox::new(direct));
    let is_driver = matches!(hello, ToNode::Hello { role: ferroray_protocol::Role::Driver, .. });
    let conn = {
        let mut st = shared.lock();
        let conn = st.add_connection(Outbox::Socket(outbox.clone()), pid);
        st.handle(conn, hello);
        // A driver maps the store through the descriptor that comes with
        // its welcome; sent under the lock, before anything else can be
        // queued for it.
        if is_driver && st.is_connected(conn) {
            if let Err(e) = outbox.flush_with_fd(shared.arena.fd()) {
                tracing::warn!("cannot send the store to driver pid {pid}: {e}");
                st.disconnect(conn, "the store could not be sent");
            }
        }
        conn
    };
    let writer = tokio::spawn(write_loop(outbox, wr));
    if !shared.lock().is_connected(conn) {
        let _ = writer.await;
        return limits.refuse("hello", pid, || format!("pid {pid}: its hello was refused"));
    }
    // Buffered and watched from here on: the peer is one of ours.
    watch.ctl(libc::EPOLL_CTL_ADD, fd);
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut body = Vec::new();
    let mut batch = Vec::new();
    let reason = loop {
        match frame::read_frame_async::<_, ToNode>(&mut rd, &mut body).await {
            Ok(Some(msg)) => {
                // Frames the same read brought in are handled with it, as
                // one batch (`State::handle_all`), up to `BATCH`.
                batch.push(msg);
                let mut cut = None;
                while batch.len() < BATCH {
                    match frame::buffered_frame::<ToNode>(rd.buffer()) {
                        Ok(Some((msg, n))) => {
                            std::pin::Pin::new(&mut rd).consume(n);
                            batch.push(msg);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            cut = Some(Error::from(e));
                            break;
                        }
                    }
                }
                // Step 4: bounds, before the lock.
                let bad = batch.iter().position(|m| m.check().is_err());
                if let Some(at) = bad {
                    cut = batch.drain(at..).next().and_then(|m| m.check().err());
                }
                let mut st = shared.lock();
                st.handle_all(conn, batch.drain(..));
                if !st.is_connected(conn) {
                    break "rejected".to_string();
                }
                if let Some(e) = cut {
                    st.reject(conn, e.clone());
                    break e.to_string();
                }
            }
            Ok(None) => break "connection closed".to_string(),
            Err(e) => {
                let err: Error = e.into();
                if matches!(err, Error::Disconnected(_)) {
                    break err.to_string();
                }
                shared.lock().reject(conn, err.clone());
                break err.to_string();
            }
        }
    };
    watch.ctl(libc::EPOLL_CTL_DEL, fd);
    shared.lock().disconnect(conn, &reason);
    let _ = writer.await;
}
