//! The caller's side of the control protocol: connect to the head,
//! register, then ask. Used by node daemons (`crate::daemon`) and by the
//! `status` and `list` commands.

use crate::error::{ClusterError, Result};
use crate::wire::*;
use ferroray_common::ClusterToken;
use ferroray_protocol::frame;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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
    stream: OwnedReadHalf,
    body: Vec<u8>,
}

/// The half that sends requests.
pub struct HeadWriter {
    stream: OwnedWriteHalf,
}

impl HeadClient {
    /// Connects to `addr` and registers, as a node when `node` is given,
    /// else as a client.
    pub async fn connect(addr: &str, token: &ClusterToken, node: Option<NodeDesc>) -> Result<Self> {
        let unreachable = |source| ClusterError::Unreachable { addr: addr.to_string(), source };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClusterError::Timeout("connecting to the head"))?
            .map_err(unreachable)?;
        let _ = stream.set_nodelay(true);
        let role = if node.is_some() { PeerRole::Node } else { PeerRole::Client };
        let (read, write) = stream.into_split();
        let mut client = HeadClient {
            reader: HeadReader { stream: read, body: Vec::new() },
            writer: HeadWriter { stream: write },
            registered: Registered::default(),
        };
        let register =
            Register { protocol: CONTROL_PROTOCOL_VERSION, token: token.as_bytes().to_vec(), role: role as i32, node };
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

impl HeadWriter {
    pub async fn send(&mut self, kind: ToHeadKind) -> Result<()> {
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, ToHead::new(kind))?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.stream.write_all(&buf))
            .await
            .map_err(|_| ClusterError::Timeout("a request to the head"))??;
        Ok(())
    }
}

impl HeadReader {
    /// The next answer; a rejection is an error carrying the head's reason.
    pub async fn receive(&mut self) -> Result<FromHeadKind> {
        match frame::read_frame_async_max::<_, FromHead>(&mut self.stream, &mut self.body, MAX_CONTROL_FRAME).await? {
            None => Err(ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Some(FromHead { kind: Some(FromHeadKind::Rejected(why)) }) => Err(refusal(why)),
            Some(FromHead { kind: Some(kind) }) => Ok(kind),
            Some(FromHead { kind: None }) => Err(ClusterError::Protocol("an empty answer".into())),
        }
    }

    /// Waits for the head to close the connection or reject something
    /// (a node's heartbeats get no answer otherwise).
    pub async fn closed(&mut self) -> ClusterError {
        match self.receive().await {
            Ok(_) => ClusterError::Protocol("an answer nobody asked for".into()),
            Err(e) => e,
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
