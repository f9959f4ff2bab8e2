//! The Unix-socket link.
//!
//! The node listens on an abstract socket (no file, so nothing to clean up;
//! and no permissions, so the node checks every peer itself). A client:
//! 1. connects and sends its `Hello` (with the cluster token);
//! 2. reads the node's answer: `Welcome(NodeInfo)`, or `Rejected(error)`;
//!    a driver's welcome carries the store's descriptor (`SCM_RIGHTS`), as
//!    a worker inherits it;
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
use std::os::fd::OwnedFd;
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

/// Room for `fds` descriptors of ancillary data.
fn control_buffer(fds: usize) -> Vec<u8> {
    // SAFETY: CMSG_SPACE only computes a length.
    vec![0u8; unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<libc::c_int>()) as u32) } as usize]
}

/// A message header over one buffer and a control buffer; valid while both
/// are.
fn message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    msg
}

/// Sends `bytes` with descriptor `fd` attached (`SCM_RIGHTS`), without
/// blocking and without raising SIGPIPE; how many bytes went. The receiver
/// gets the descriptor with the first of them ([`recv_with_fd`]).
pub fn send_with_fd(socket: &UnixStream, bytes: &[u8], fd: std::os::fd::RawFd) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the message header points at `bytes` and at a control buffer
    // sized by CMSG_SPACE for one descriptor, both alive for the call; the
    // CMSG macros only compute offsets inside that buffer.
    unsafe {
        let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
        let mut control = control_buffer(1);
        let msg = message(&mut iov, &mut control);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        let n = libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Reads into `buf` like `read`, also taking a descriptor that came with
/// the bytes (close-on-exec). Any further descriptors are closed: only one
/// is ever sent.
pub fn recv_with_fd(socket: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    const MAX_FDS: usize = 8;
    // SAFETY: as in `send_with_fd`; every descriptor the kernel put in the
    // control buffer is read within the length it reports and owned here.
    unsafe {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = control_buffer(MAX_FDS);
        let mut msg = message(&mut iov, &mut control);
        let n = loop {
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut got = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count =
                    ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if got.is_none() {
                        got = Some(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n, got))
    }
}

/// The uid of the process at the other end of a Unix socket (`SO_PEERCRED`).
pub fn peer_uid(socket: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: `cred` is a valid out-buffer of the size passed.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
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

/// What a connection's handshake gives.
pub struct Connected {
    pub link: UnixLink,
    pub reader: UnixReader,
    pub info: NodeInfo,
    /// The store's descriptor, which a node sends a driver with its welcome
    /// (a worker inherits it instead).
    pub store: Option<OwnedFd>,
}

impl UnixLink {
    /// Connects to the node at `socket`, sends `hello` and waits for the
    /// answer (steps 1 and 2). Abstract names have no permissions, so the
    /// node must be a process of this user: one that took the name first
    /// is refused before anything is sent to it.
    pub fn connect(socket: &str, hello: ToNode) -> Result<Connected> {
        let mut stream = connect_abstract(socket)?;
        let uid = peer_uid(&stream).map_err(Error::io)?;
        // SAFETY: geteuid cannot fail and touches no memory.
        if uid != unsafe { libc::geteuid() } {
            return Err(Error::PermissionDenied(format!("the node at {socket} runs as uid {uid}, not this user")));
        }
        frame::write_frame(&mut stream, hello)?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(Error::io)?;
        // The header's bytes by `recvmsg`, which takes a descriptor sent
        // with them; the body by plain reads (nothing else carries one).
        let mut header = [0u8; 4];
        let mut have = 0;
        let mut store = None;
        while have < header.len() {
            let (n, fd) = recv_with_fd(&stream, &mut header[have..]).map_err(Error::io)?;
            if n == 0 {
                return Err(Error::Disconnected("the node closed the connection during the hello".into()));
            }
            store = store.or(fd);
            have += n;
        }
        let info = match frame::read_frame::<_, FromNode>(&mut (&header[..]).chain(&mut stream))? {
            Some(FromNode::Welcome(info)) => info,
            Some(FromNode::Rejected(e)) => return Err(e),
            None => return Err(Error::Disconnected("the node closed the connection during the hello".into())),
            Some(other) => return Err(Error::Protocol(format!("expected welcome, got {other:?}"))),
        };
        stream.set_read_timeout(None).map_err(Error::io)?;
        let writer = stream.try_clone().map_err(Error::io)?;
        Ok(Connected { link: UnixLink { writer: Mutex::new(writer) }, reader: UnixReader { stream }, info, store })
    }
}

impl Drop for UnixLink {
    /// Ends the connection both ways, so the node sees its end at once (the
    /// reader thread holds another descriptor of the same socket).
    fn drop(&mut self) {
        let _ = self.writer.lock().shutdown(std::net::Shutdown::Both);
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
