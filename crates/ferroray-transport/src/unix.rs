//! The Unix-socket link.
//!
//! The node listens on an abstract socket (no file, so nothing to clean up;
//! and no permissions, so the node checks every peer itself). A client:
//! 1. connects and sends its `Hello` (with the cluster token);
//! 2. reads the node's answer: `Welcome(NodeInfo)`, or `Rejected(error)`;
//! 3. from then on writes frames through [`UnixLink`] (one lock, so frames
//!    of different threads never interleave), and a reader thread
//!    ([`UnixReader::spawn`]) hands every frame to its [`Inbox`], through a
//!    64 KiB buffer, until the socket ends. With its buffer empty, the reader
//!    watches the socket for a moment before it sleeps in `read`
//!    (`ferroray_common::spin`): the next frame is often close behind.

use crate::{Inbox, Link};
use ferroray_common::spin::Spin;
use ferroray_common::{Error, Result};
use ferroray_protocol::{frame, FromNode, NodeInfo, ToNode};
use parking_lot::Mutex;
use std::io::{BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

/// Binds an abstract Unix socket, non-blocking (for the node's accept loop).
pub fn bind_abstract(name: &str) -> Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(Error::io)?;
    let l = UnixListener::bind_addr(&addr).map_err(Error::io)?;
    l.set_nonblocking(true).map_err(Error::io)?;
    Ok(l)
}

/// Connects a blocking client to an abstract socket.
pub fn connect_abstract(name: &str) -> Result<UnixStream> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(Error::io)?;
    UnixStream::connect_addr(&addr).map_err(|e| Error::Disconnected(format!("{name}: {e}")))
}

/// How long the node may take to answer a hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The writing half of a socket connection to a node.
pub struct UnixLink {
    writer: Mutex<UnixStream>,
}

/// The reading half, not yet started (the inbox may need the link first).
pub struct UnixReader {
    stream: UnixStream,
}

impl UnixLink {
    /// Connects to the node at `socket`, sends `hello` and waits for the
    /// answer (steps 1 and 2).
    pub fn connect(socket: &str, hello: ToNode) -> Result<(UnixLink, UnixReader, NodeInfo)> {
        let mut stream = connect_abstract(socket)?;
        frame::write_frame(&mut stream, hello)?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(Error::io)?;
        let info = match frame::read_frame::<_, FromNode>(&mut stream)? {
            Some(FromNode::Welcome(info)) => info,
            Some(FromNode::Rejected(e)) => return Err(e),
            None => return Err(Error::Disconnected("the node closed the connection during the hello".into())),
            Some(other) => return Err(Error::Protocol(format!("expected welcome, got {other:?}"))),
        };
        stream.set_read_timeout(None).map_err(Error::io)?;
        let writer = stream.try_clone().map_err(Error::io)?;
        Ok((UnixLink { writer: Mutex::new(writer) }, UnixReader { stream }, info))
    }
}

impl Link for UnixLink {
    fn send(&self, msg: ToNode) -> Result<()> {
        let mut buf = Vec::with_capacity(128);
        frame::encode_into(&mut buf, msg)?;
        self.writer.lock().write_all(&buf).map_err(|e| Error::Disconnected(e.to_string()))
    }
}

impl UnixReader {
    /// Starts the reader thread (step 3): every frame goes to `inbox`; at
    /// the end of the socket, or a frame that does not decode, `closed`.
    pub fn spawn(self, name: &str, inbox: Arc<dyn Inbox>) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut rd = BufReader::with_capacity(64 * 1024, WatchingRead(self.stream));
                let mut body = Vec::new();
                loop {
                    match frame::read_frame_into::<_, FromNode>(&mut rd, &mut body) {
                        Ok(Some(msg)) => inbox.deliver(msg),
                        Ok(None) => return inbox.closed("the node closed the connection"),
                        Err(e) => return inbox.closed(&e.to_string()),
                    }
                }
            })
            .map_err(Error::io)
    }
}

/// The reader thread's socket: a read first watches with non-blocking reads
/// (`ferroray_common::spin`), then blocks.
struct WatchingRead(UnixStream);

impl Read for WatchingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut got = None;
        Spin::new().until(None, || {
            // SAFETY: a plain syscall on a socket we own, into a valid buffer
            // of the given length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                got = Some(Ok(n as usize));
                return true;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => false,
                _ => {
                    got = Some(Err(e));
                    true
                }
            }
        });
        match got {
            Some(r) => r,
            None => self.0.read(buf),
        }
    }
}
