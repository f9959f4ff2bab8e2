//! The caller's side of the control protocol: connect to the head,
//! register, then ask. Used by node daemons (`crate::daemon`) and by the
//! `status` and `list` commands.
//!
//! The link is TLS, trusting only the head certificate whose fingerprint the
//! caller pinned (`crate::tls`); the token is sent only once the handshake
//! proved the head holds that certificate's key.

use crate::error::{ClusterError, Result};
use crate::tls::{self, Credentials};
use crate::wire::*;
use ferroray_protocol::frame;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long connecting and registering may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the head may take to answer a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered connection to the head.
pub struct HeadClient {
    pub reader: HeadReader,
    pub writer: HeadWriter,
    pub registered: Registered,
}

/// The half of a connection that reads the head's answers.
pub struct HeadReader {
    stream: ReadHalf<TlsStream<TcpStream>>,
    body: Vec<u8>,
}

/// The half that sends requests.
pub struct HeadWriter {
    stream: WriteHalf<TlsStream<TcpStream>>,
}

impl HeadClient {
    /// Connects to `addr` over TLS, checks the head's certificate against
    /// the pinned fingerprint, and registers with the token, as a node when
    /// `node` is given, else as a client.
    pub async fn connect(addr: &str, credentials: &Credentials, node: Option<NodeDesc>) -> Result<Self> {
        let unreachable = |source| ClusterError::Unreachable { addr: addr.to_string(), source };
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(credentials.fingerprint)?);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = TcpStream::connect(addr).await.map_err(unreachable)?;
            let _ = stream.set_nodelay(true);
            connector.connect(tls::head_name(), stream).await.map_err(tls::stream_error)
        })
        .await
        .map_err(|_| ClusterError::Timeout("connecting to the head"))??;
        let role = if node.is_some() { PeerRole::Node } else { PeerRole::Client };
        let (read, write) = tokio::io::split(stream);
        let mut client = HeadClient {
            reader: HeadReader { stream: read, body: Vec::new() },
            writer: HeadWriter { stream: write },
            registered: Registered::default(),
        };
        let register = Register {
            protocol: CONTROL_PROTOCOL_VERSION,
            token: credentials.token.as_bytes().to_vec(),
            role: role as i32,
            node,
        };
        client.writer.send(ToHeadKind::Register(register)).await?;
        match tokio::time::timeout(CONNECT_TIMEOUT, client.reader.receive()).await {
            Err(_) => Err(ClusterError::Timeout("registering with the head")),
            Ok(Ok(FromHeadKind::Registered(r))) => {
                client.registered = r;
                Ok(client)
            }
            Ok(Ok(_)) => Err(ClusterError::Protocol("an answer out of turn".into())),
            Ok(Err(e)) => Err(e),
        }
    }

    /// The cluster's nodes as the head sees them.
    pub async fn view(&mut self) -> Result<ClusterView> {
        self.writer.send(ToHeadKind::View(Empty {})).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.reader.receive()).await {
            Err(_) => Err(ClusterError::Timeout("asking the head for the cluster's view")),
            Ok(Ok(FromHeadKind::View(v))) => Ok(v),
            Ok(Ok(_)) => Err(ClusterError::Protocol("an answer out of turn".into())),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// The cluster's view from the head at `addr`, for a caller with no async
/// runtime of its own (a program's `nodes()`): connects, asks, closes.
pub fn view_blocking(addr: &str, credentials: &Credentials) -> Result<ClusterView> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let mut client = HeadClient::connect(addr, credentials, None).await?;
        client.view().await
    })
}

impl HeadClient {
    /// Every alive node's rows of `what` (`wire` step 6).
    pub async fn list(&mut self, what: ListWhat) -> Result<Listing> {
        self.writer.send(ToHeadKind::List(ListRequest { req: 0, what: what as i32 })).await?;
        // The head waits up to its own timeout for the nodes.
        let wait = crate::head::LIST_TIMEOUT + REQUEST_TIMEOUT;
        match tokio::time::timeout(wait, self.reader.receive()).await {
            Err(_) => Err(ClusterError::Timeout("asking the head for a listing")),
            Ok(Ok(FromHeadKind::Listed(l))) => Ok(l),
            Ok(Ok(_)) => Err(ClusterError::Protocol("an answer out of turn".into())),
            Ok(Err(e)) => Err(e),
        }
    }
}

impl HeadWriter {
    pub async fn send(&mut self, kind: ToHeadKind) -> Result<()> {
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, ToHead::new(kind))?;
        // A TLS stream holds what it was given until flushed.
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.stream.write_all(&buf).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| ClusterError::Timeout("a request to the head"))??;
        Ok(())
    }
}

impl HeadReader {
    /// The next answer; a rejection is an error carrying the head's reason.
    pub async fn receive(&mut self) -> Result<FromHeadKind> {
        let frame = frame::read_frame_async_max::<_, FromHead>(&mut self.stream, &mut self.body, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| match e {
                ferroray_protocol::FrameError::Io(e) => tls::stream_error(e),
                other => other.into(),
            })?;
        match frame {
            None => Err(ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Some(FromHead { kind: Some(FromHeadKind::Rejected(why)) }) => Err(refusal(why)),
            Some(FromHead { kind: Some(kind) }) => Ok(kind),
            Some(FromHead { kind: None }) => Err(ClusterError::Protocol("an empty answer".into())),
        }
    }
}

/// A rejection as an error: the kinds a caller acts on keep their kind.
fn refusal(r: Rejection) -> ClusterError {
    match RejectKind::try_from(r.kind).unwrap_or(RejectKind::Other) {
        RejectKind::WrongToken => ClusterError::WrongToken,
        RejectKind::NodeDead => ClusterError::Refused(r.reason),
        RejectKind::NodeIdInUse => ClusterError::Busy(r.reason),
        RejectKind::Other => ClusterError::Refused(r.reason),
    }
}
