//! The socket side of the node.
//!
//! Each connection gets a reader task and a writer task:
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

use crate::state::Outbox;
use crate::Shared;
use ferroray_common::{Error, Result};
use ferroray_protocol::{frame, FromNode, ToNode};
use parking_lot::Mutex;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
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

    pub(crate) fn send(&self, msg: &FromNode) {
        let mut out = self.out.lock();
        if out.closed {
            return;
        }
        if let Err(e) = frame::encode_into(&mut out.bytes, msg) {
            eprintln!("ferroray node: cannot encode a message: {e}");
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

/// Binds an abstract Unix socket: it has no file, so nothing is left behind.
pub fn bind_abstract(name: &str) -> Result<std::os::unix::net::UnixListener> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(Error::io)?;
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(Error::io)?;
    l.set_nonblocking(true).map_err(Error::io)?;
    Ok(l)
}

/// Connects a blocking client to an abstract socket.
pub fn connect_abstract(name: &str) -> Result<std::os::unix::net::UnixStream> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(Error::io)?;
    std::os::unix::net::UnixStream::connect_addr(&addr).map_err(|e| Error::Disconnected(format!("{name}: {e}")))
}

/// Runs the server until `shutdown` fires (or its sender is dropped). The
/// listener and the shutdown signal are arguments, so a test can bind its own.
pub(crate) fn run(shared: Arc<Shared>, listener: std::os::unix::net::UnixListener, shutdown: oneshot::Receiver<()>) {
    let _ = shared.arena.set_inheritable(false);
    crate::local::mark_node_thread();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("ferroray node: cannot start the runtime: {e}"),
    };
    rt.block_on(async move {
        let listener = match UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return eprintln!("ferroray node: cannot listen: {e}"),
        };
        serve(shared, listener, shutdown).await;
    });
}

async fn serve(shared: Arc<Shared>, listener: UnixListener, mut shutdown: oneshot::Receiver<()>) {
    // Freed store pages stay resident for reuse; once a second the rest go
    // back to the system (so an idle node holds no dead object memory).
    let mut trim = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = trim.tick() => {
                shared.lock().trim_store();
                shared.lock().exit_idle_workers();
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(shared.clone(), stream));
                }
                Err(e) => eprintln!("ferroray node: accept failed: {e}"),
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, stream: UnixStream) {
    let direct = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => std::os::unix::net::UnixStream::from(fd),
        Err(e) => return eprintln!("ferroray node: cannot duplicate a connection: {e}"),
    };
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let outbox = Arc::new(SocketOutbox::new(direct));
    let conn = shared.lock().add_connection(Outbox::Socket(outbox.clone()));
    let writer = tokio::spawn(write_loop(outbox, wr));
    let mut body = Vec::new();
    let reason = loop {
        match frame::read_frame_async::<_, ToNode>(&mut rd, &mut body).await {
            Ok(Some(msg)) => {
                let mut st = shared.lock();
                st.handle(conn, msg);
                if !st.is_connected(conn) {
                    break "rejected".to_string();
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
    shared.lock().disconnect(conn, &reason);
    let _ = writer.await;
}
