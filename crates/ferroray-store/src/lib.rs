//! Shared-memory object store of a ferroray node.
//!
//! Large objects live in one shared-memory arena that the node daemon and
//! every worker map without copying:
//!
//! - [`arena`]: the arena itself, an anonymous `memfd_create` file mapped
//!   `MAP_SHARED` ([`Arena`]). Workers inherit the fd and map it with
//!   [`Arena::open`]; nothing is left in `/dev/shm` when processes die.
//! - [`alloc`]: pure offset bookkeeping over the arena ([`Allocator`]):
//!   best-fit, 64-byte aligned blocks, coalescing on free.
//! - [`writer`]: large writes into the arena through small windows mapped
//!   ahead and unmapped behind by a helper thread ([`ArenaWriter`]), so a
//!   writer pays one memory copy and keeps no pages resident.
//! - [`copy`]: large copies into the arena split over a few threads at once
//!   (one core does not drive the memory bandwidth).
//! - [`spill`]: one file per object in a private spill directory (made
//!   fresh, mode 0700, files 0600, no symlink followed; those of dead
//!   processes are removed at start), copied straight from / into the
//!   mapped arena.
//! - [`store`]: the object table ([`Store`]): allocate, seal, pin/unpin,
//!   delete (deferred while pinned), spilling least recently pinned objects
//!   when the arena is full and restoring them on the next pin.

pub mod alloc;
pub mod arena;
pub mod copy;
pub mod spill;
pub mod store;
pub mod writer;

pub use alloc::Allocator;
pub use arena::Arena;
pub use store::{Store, StoreStats};
pub use writer::ArenaWriter;

/// Errors of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No block fits even after spilling every unpinned sealed object.
    #[error("object store is full: requested {requested} bytes, capacity {capacity}, {used} in use")]
    Full { requested: u64, capacity: u64, used: u64 },
    #[error("unknown object {0}")]
    UnknownObject(String),
    #[error("object {0} already exists")]
    ObjectExists(String),
    #[error("no unsealed allocation at offset {0}")]
    NotAllocated(u64),
    #[error("sealed length {len} exceeds the allocation of {allocated} bytes")]
    SealTooLong { len: u64, allocated: u64 },
    #[error("range [{offset}, +{len}) is out of bounds of the arena of {capacity} bytes")]
    OutOfBounds { offset: u64, len: u64, capacity: u64 },
    #[error("invalid arena capacity {0}")]
    InvalidCapacity(u64),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
