//! The wire protocol between core workers (drivers and workers) and the node daemon.
//!
//! - [`message`]: what travels: task specs, object payloads, and the two
//!   message enums [`ToNode`] and [`FromNode`].
//! - [`limits`]: the bounds on every count and size a message carries,
//!   checked right after decoding, before the node takes its lock.
//! - [`wire`]: the protobuf schema those messages travel as (prost structs
//!   with explicit tags), its evolution rules, and the conversions, which
//!   check what arrived (a missing field or an unknown case is malformed);
//!   `wire_tests` (tests only) round-trips every message through it.
//! - `direct` (private): the hot messages (a task spec, a task's end, a
//!   generator's item)
//!   encoded and decoded straight between these types and bytes, the same
//!   bytes as `wire`'s; `direct_tests` holds it to that.
//! - [`frame`]: how it travels: a 4-byte little-endian length, then a
//!   protobuf body. Blocking helpers for the core worker's socket threads, async
//!   ones for the daemon's tokio tasks. A length above [`frame::MAX_FRAME`] or
//!   a body that does not decode is a [`FrameError`], never a panic or a hang.
//!
//! A connection starts with the client's [`ToNode::Hello`] carrying
//! [`PROTOCOL_VERSION`]; anything else first is rejected.

mod direct;
#[cfg(test)]
mod direct_tests;
pub mod frame;
pub mod limits;
pub mod message;
pub mod wire;
#[cfg(test)]
mod wire_tests;

pub use frame::{FrameError, WireMessage, MAX_FRAME};
pub use message::*;

/// Bumped on any incompatible change to the wire (see [`wire`] for the
/// changes that are compatible). 3: protobuf bodies. 4: streams passed on
/// (`StreamHandOff`, `StreamClaim`, `StreamClaimed`). 5: drivers connected
/// to a daemon (`WorkerCommands`, the `NoCluster` error).
pub const PROTOCOL_VERSION: u32 = 5;
