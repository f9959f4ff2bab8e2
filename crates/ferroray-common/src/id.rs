//! Identifiers.
//!
//! Layout, chosen so that every id is derivable without asking anybody:
//! - `NodeId`, `WorkerId`: random 64-bit values picked at start-up.
//! - `TaskId`: the submitting worker's id and that worker's task counter.
//! - `ObjectId`: a task id and an index. Index 0 is an object made by `put`
//!   (its task id is a fresh counter value that names no task); index 1..=n
//!   are the task's returns; a streaming generator's item `i` has index `2 + i`
//!   (index 1 being the generator's own completion object).
//! - `FunctionId`: the exporting worker's id and that worker's export
//!   counter (a function's bytes go to the node once, then calls name it).
//! - `ActorId`: the id of the task that creates the actor (its constructor
//!   call). That task's return object is the actor's *handle object*: every
//!   handle holds a ref to it, so the actor lives exactly as long as the
//!   object does, counted by the same machinery as any ref.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One machine's node daemon.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// One driver or worker process (its core worker).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u64);

/// One task; stays the same across its retries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    pub submitter: WorkerId,
    pub seq: u64,
}

/// One object: the task that makes it and which of its outputs it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId {
    pub task: TaskId,
    pub index: u32,
}

impl ObjectId {
    /// The index used by objects created with `put`.
    pub const PUT_INDEX: u32 = 0;

    pub fn for_put(task: TaskId) -> Self {
        ObjectId { task, index: Self::PUT_INDEX }
    }

    /// The `i`-th return (0-based) of a task.
    pub fn for_return(task: TaskId, i: u32) -> Self {
        ObjectId { task, index: i + 1 }
    }

    /// Item `i` (0-based) of a generator task: index `2 + i` (index 1 is the
    /// generator's own completion object, the task's return 0).
    pub fn for_item(task: TaskId, i: u32) -> Self {
        ObjectId { task, index: i + 2 }
    }

    pub fn is_put(&self) -> bool {
        self.index == Self::PUT_INDEX
    }
}

/// A function (or class) of another language's front, exported once
/// (`ToNode::ExportFunction`) and named by the calls that run it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionId {
    pub exporter: WorkerId,
    pub seq: u64,
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:016x}", self.exporter, self.seq)
    }
}
impl fmt::Debug for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FunctionId({self})")
    }
}

/// One actor: the id of the task that creates it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId(pub TaskId);

impl ActorId {
    /// The object whose refs are the actor's handles (the creation task's
    /// return): while it lives, so does the actor (unless detached).
    pub fn handle_object(&self) -> ObjectId {
        ObjectId::for_return(self.0, 0)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

/// A random 64-bit value that is never zero, for node and worker ids.
pub fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish() | 1
}

impl WorkerId {
    pub fn random() -> Self {
        WorkerId(random_u64())
    }
}

impl NodeId {
    pub fn random() -> Self {
        NodeId(random_u64())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}
impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({self})")
    }
}
impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:016x}", self.submitter, self.seq)
    }
}
impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:08x}", self.task, self.index)
    }
}
impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_ids_are_deterministic_and_distinct_from_puts() {
        let t = TaskId { submitter: WorkerId(7), seq: 3 };
        assert_eq!(ObjectId::for_return(t, 0), ObjectId::for_return(t, 0));
        assert_ne!(ObjectId::for_return(t, 0), ObjectId::for_put(t));
        assert!(ObjectId::for_put(t).is_put());
        assert_eq!(ObjectId::for_return(t, 2).index, 3);
    }

    #[test]
    fn random_ids_are_nonzero_and_differ() {
        let a = WorkerId::random();
        let b = WorkerId::random();
        assert_ne!(a.0, 0);
        assert_ne!(a, b);
    }
}
