//! The cluster crate's errors, and which of them are worth a retry.

use ferroray_common::NodeId;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An option or a combination of options that cannot work.
    #[error("{0}")]
    Config(String),
    #[error("wrong cluster token")]
    WrongToken,
    #[error("control protocol version {theirs} is not {ours}")]
    Version { theirs: u32, ours: u32 },
    #[error("node {0} was declared dead ({1}); start it again to rejoin as a new node")]
    NodeDead(NodeId, String),
    #[error("node id {0} is in use by another connection")]
    NodeIdInUse(NodeId),
    #[error("the cluster is full ({0} nodes)")]
    Full(usize),
    #[error("{0} before registering")]
    NotRegistered(&'static str),
    /// The head said no; its reason.
    #[error("refused by the head: {0}")]
    Refused(String),
    /// The head said not now (see `wire::RejectKind::NodeIdInUse`).
    #[error("refused by the head for now: {0}")]
    Busy(String),
    #[error("cannot reach the head at {addr}: {source}")]
    Unreachable { addr: String, source: std::io::Error },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("no cluster was started on this machine (nothing in {0}); give the head's address and token")]
    NoCluster(PathBuf),
    #[error("{what} {path}: {source}")]
    File { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A TLS handshake that failed for a reason a retry does not change:
    /// a certificate other than the pinned one, a peer that does not speak
    /// TLS, a bad certificate or key.
    #[error("tls: {0}")]
    Tls(String),
    /// The control store's storage (`--storage`) did not answer in time or
    /// refused the connection: worth trying again once it is back.
    #[error("cannot reach the storage at {url}: {reason}")]
    StorageUnreachable { url: String, reason: String },
    /// The storage answered with something unusable (a key of another type,
    /// a row that does not decode, refused credentials).
    #[error("storage at {url}: {reason}")]
    Storage { url: String, reason: String },
    #[error("connection to the head: {0}")]
    Io(#[from] std::io::Error),
    #[error("control protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Node(#[from] ferroray_common::Error),
}

impl From<ferroray_protocol::FrameError> for ClusterError {
    fn from(e: ferroray_protocol::FrameError) -> Self {
        match e {
            ferroray_protocol::FrameError::Io(e) => ClusterError::Io(e),
            other => ClusterError::Protocol(other.to_string()),
        }
    }
}

impl ClusterError {
    /// Worth trying again later (the head may come back); everything else
    /// stays wrong until something changes.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::Unreachable { .. }
                | ClusterError::Io(_)
                | ClusterError::Timeout(_)
                | ClusterError::Busy(_)
                | ClusterError::StorageUnreachable { .. }
        )
    }

    pub(crate) fn file(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ClusterError::File { what, path, source }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
