//! The ferroray cluster: a head with the control store, node daemons that
//! join it, and the `ferroray` command that starts, stops and inspects
//! them.
//!
//! - [`wire`]: the control protocol between nodes, clients and the head
//!   (prost messages in the node protocol's frames), its numbered
//!   exchange, and the checks on what arrives.
//! - [`control`]: the control store's tables: the node table (membership
//!   and health, dead nodes declared by timeout), the names of actors
//!   (one live actor per name across the cluster, found from any node),
//!   the jobs, and the functions programs exported (once per cluster),
//!   written through a [`storage::TableStore`].
//! - [`storage`]: where the tables live: the head's memory (the default),
//!   or a Redis server (`start --head --storage redis://...`), from which a
//!   restarted head restores them, with the cluster's token, certificate
//!   and key, so that running nodes rejoin it.
//! - [`head`]: the head's server over TCP and TLS: who gets in, and serving
//!   each connection.
//! - [`inspect`]: a node's rows (task events, actors, objects) for `list`
//!   and `timeline`.
//! - [`client`]: connecting to the head and asking it.
//! - [`tls`]: TLS (rustls) on every link to the head, loopback included:
//!   the head's self-signed certificate, made fresh at each start (kept in
//!   the storage with `--storage`), is
//!   trusted by its SHA-256 fingerprint, which travels with the cluster
//!   token in the token file; the token, sent inside TLS, authenticates
//!   callers. So any address may be used, not only loopback.
//! - [`peer`]: links between nodes' daemons, on which a node's tasks run
//!   on another node (TLS, a certificate per node; between loopback
//!   addresses plain TCP, see [`loopback`]), its numbered protocol:
//!   the executable shipped by hash, values in chunks, streams relayed.
//! - [`loopback`]: the handshake of a peer link between loopback
//!   addresses: plain TCP, both ends proving they hold the token without
//!   sending it.
//! - [`daemon`]: a node daemon in a process of its own, as the head or
//!   joined to one.
//! - [`session`]: the per-user directory where daemons record themselves
//!   for later commands.
//! - `cli` (feature `cli`, on by default): the `ferroray` command.
//! - [`error`]: [`ClusterError`], and which errors are worth a retry.
//!
//! What a cluster does today: membership, health, the resource view, and
//! tasks placed on other nodes with their arguments, results and streams
//! (`docs/architecture.md` §14 lists what comes next).

#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod control;
pub mod daemon;
pub mod error;
pub mod head;
pub mod inspect;
pub mod loopback;
pub mod peer;
pub mod session;
pub mod storage;
pub mod tls;
pub mod wire;

pub use error::ClusterError;

/// Logs to stderr at the level `FERRORAY_LOG` names (default `info`), unless
/// the program installed its own subscriber.
pub fn logging() {
    let level = std::env::var("FERRORAY_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).try_init();
}
