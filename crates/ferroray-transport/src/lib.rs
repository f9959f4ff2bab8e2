//! Links between a core worker and a node daemon.
//!
//! A core worker (a driver or a worker process) talks to its node through a
//! [`Link`] and hears back through an [`Inbox`]; it never knows which kind of
//! connection carries the messages. This crate sits below both the core and
//! the node, so the core does not depend on the node:
//!
//! - [`Link`] / [`Inbox`]: the two halves of a connection, as traits.
//! - [`unix`]: the Unix-socket link every worker uses: connect to the node's
//!   abstract socket, the hello/welcome handshake, a writer, and a reader
//!   thread that hands each message to an [`Inbox`]. Also how the node binds
//!   its socket.
//! - [`env`]: the environment a node gives the worker processes it starts.
//!
//! The in-process link (a driver with an embedded node: a direct call, no
//! socket) is `ferroray_node::LocalConnection`, which implements [`Link`];
//! the node depends on this crate for that.
//!
//! Next links, shaped by the same two traits: TCP between machines (the same
//! frames, with TLS and the cluster token), and a simulated link for
//! fault-injection tests of the cluster protocol: a [`Link`] whose messages
//! go through a queue that a seeded scheduler delivers to the peer's
//! [`Inbox`] in a deterministic order, dropping, delaying or duplicating
//! them as the seed decides, with the node's handler driven by the same
//! scheduler instead of a socket.

pub mod env;
pub mod unix;

use ferroray_common::Result;
use ferroray_protocol::{FromNode, ToNode};

/// The sending half of a connection to a node.
pub trait Link: Send + Sync {
    /// Sends one message, in order after every earlier one. Fails with
    /// `Error::Disconnected` once the connection is gone.
    fn send(&self, msg: ToNode) -> Result<()>;

    /// Reserves `size` bytes of the node's shared memory at once, when the
    /// node is in this process. `None`: ask with `ToNode::Allocate` and wait
    /// for `FromNode::Allocated`.
    fn allocate_now(&self, size: u64) -> Option<Result<u64>> {
        let _ = size;
        None
    }
}

/// The receiving half: where a link hands the node's messages.
pub trait Inbox: Send + Sync {
    /// One message from the node; called one at a time, in the order the
    /// node sent them, with no lock of the link held.
    fn deliver(&self, msg: FromNode);

    /// Nothing more will come: the node closed the connection, shut down,
    /// or the connection failed (`reason` says which).
    fn closed(&self, reason: &str);

    /// Whether [`Inbox::deliver`] may be called on any thread, including
    /// one that holds locks of its own (it only queues, and takes no lock
    /// a caller could hold): an in-process node then hands messages over
    /// on the thread that made them rather than waking a thread to.
    fn delivers_anywhere(&self) -> bool {
        false
    }
}
