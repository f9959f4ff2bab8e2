//! The wire protocol between core workers (drivers and workers) and the node daemon.
//!
//! - [`message`]: what travels: task specs, object payloads, and the two
//!   message enums [`ToNode`] and [`FromNode`].
//! - [`limits`]: the bounds on every count and size a message carries,
//!   checked right after decoding, before the node takes its lock.
//! - [`frame`]: how it travels: a 4-byte little-endian length, then a
//!   bincode body. Blocking helpers for the core worker's socket threads, async
//!   ones for the daemon's tokio tasks. A length above [`frame::MAX_FRAME`] or
//!   a body that does not decode is a [`FrameError`], never a panic or a hang.
//!
//! A connection starts with the client's [`ToNode::Hello`] carrying
//! [`PROTOCOL_VERSION`]; anything else first is rejected.

pub mod frame;
pub mod limits;
pub mod message;

pub use frame::{FrameError, MAX_FRAME};
pub use message::*;

/// Bumped on any incompatible change to [`message`].
pub const PROTOCOL_VERSION: u32 = 2;
