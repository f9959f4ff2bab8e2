//! The socket side of the node.
//!
//! Each connection gets a reader task and a writer task:
//! 1. The reader decodes frames and hands each message to the state under its
//!    lock. A frame that is too large or does not decode closes only this
//!    connection, after a [`FromNode::Rejected`] naming the problem; the node
//!    goes on serving everyone else.
//! 2. The writer drains the connection's queue: everything queued at the time
//!    goes out in one write, so a burst of replies costs one syscall.
//! 3. When either side ends, the connection is removed from the state, which
//!    releases what it held and retries or fails the task it was running.

use crate::state::Outbox;
use crate::Shared;
use ferroray_common::{Error, Result};
use ferroray_protocol::{frame, FromNode, ToNode};
use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

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
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<FromNode>();
    let conn = shared.lock().add_connection(Outbox::Socket(tx));
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(4096);
        while let Some(msg) = rx.recv().await {
            buf.clear();
            let mut next = Some(msg);
            while let Some(m) = next {
                if let Err(e) = frame::encode_into(&mut buf, &m) {
                    eprintln!("ferroray node: cannot encode a message: {e}");
                }
                next = rx.try_recv().ok();
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
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
