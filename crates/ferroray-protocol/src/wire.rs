//! The wire schema: protobuf messages, written as prost structs, and their
//! conversions to and from the domain types in [`crate::message`].
//!
//! This file is the schema: each struct is a protobuf message, each field's
//! tag is its number on the wire, each `*Kind` enum is a `oneof`. No `.proto`
//! file or code generator is involved.
//!
//! Evolution rules, so that nodes and workers of different builds talk:
//! - Never reuse or renumber a tag, in a message or a `oneof`; a field or
//!   case that goes away leaves its tag retired (say so in a comment).
//! - Never change a field's type or meaning. Make a new field instead.
//! - A new field is optional: a peer that does not know it skips it, and a
//!   message without it (from an older peer) decodes to a sensible default
//!   (proto3's zero, an empty list, or `None`).
//! - A new `oneof` case (a new message, a new error kind) is skipped by a
//!   peer that does not know it, which then finds the `oneof` empty and
//!   fails the frame with [`FrameError::Malformed`] (never a panic). Send one
//!   only to peers known to understand it, or bump
//!   [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
//! - [`ToNode`]'s `hello` (tag 1, with `protocol` as its tag 1) and
//!   [`FromNode`]'s `rejected` (tag 11) never change, so a peer of another
//!   version is always told why it is refused.
//!
//! Ids: a single id is a small message of fixed-width integers (no
//! allocation to decode). A list of ids is one `bytes` field of fixed-size
//! records (an object id is 20 bytes: submitter, seq, index, little-endian;
//! a task id 16), checked to be a whole number of records; so a list costs
//! as many bytes in memory as on the wire. Domain to wire moves every value
//! payload (`Vec<u8>`), wire to domain moves it back: value bytes are copied
//! only into and out of the frame.

use crate::frame::FrameError;
use crate::message as m;
use ferroray_common as c;
use prost::{Enumeration, Message, Oneof};
use std::collections::BTreeMap;

pub(crate) fn malformed(msg: String) -> FrameError {
    FrameError::Malformed(msg)
}

/// A field that must be present.
pub(crate) fn required<T>(v: Option<T>, what: &str) -> Result<T, FrameError> {
    v.ok_or_else(|| malformed(format!("{what} is missing")))
}

/// An empty message, for unit cases of a `oneof`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Empty {}

// ---- ids ----

#[derive(Clone, Copy, PartialEq, Message)]
pub struct TaskId {
    #[prost(fixed64, tag = "1")]
    pub submitter: u64,
    #[prost(fixed64, tag = "2")]
    pub seq: u64,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct ObjectId {
    #[prost(fixed64, tag = "1")]
    pub submitter: u64,
    #[prost(fixed64, tag = "2")]
    pub seq: u64,
    #[prost(uint32, tag = "3")]
    pub index: u32,
}

/// A list of object ids: 20-byte records.
#[derive(Clone, PartialEq, Message)]
pub struct ObjectIds {
    #[prost(bytes = "vec", tag = "1")]
    pub ids: Vec<u8>,
}

/// A list of task ids: 16-byte records.
#[derive(Clone, PartialEq, Message)]
pub struct TaskIds {
    #[prost(bytes = "vec", tag = "1")]
    pub ids: Vec<u8>,
}

pub(crate) const OBJECT_ID_BYTES: usize = 20;
const TASK_ID_BYTES: usize = 16;

impl From<c::TaskId> for TaskId {
    fn from(t: c::TaskId) -> Self {
        TaskId { submitter: t.submitter.0, seq: t.seq }
    }
}

impl From<TaskId> for c::TaskId {
    fn from(t: TaskId) -> Self {
        c::TaskId { submitter: c::WorkerId(t.submitter), seq: t.seq }
    }
}

impl From<c::ObjectId> for ObjectId {
    fn from(o: c::ObjectId) -> Self {
        ObjectId { submitter: o.task.submitter.0, seq: o.task.seq, index: o.index }
    }
}

impl From<ObjectId> for c::ObjectId {
    fn from(o: ObjectId) -> Self {
        c::ObjectId { task: c::TaskId { submitter: c::WorkerId(o.submitter), seq: o.seq }, index: o.index }
    }
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn object_ids_to_bytes(ids: &[c::ObjectId]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ids.len() * OBJECT_ID_BYTES);
    for id in ids {
        b.extend_from_slice(&id.task.submitter.0.to_le_bytes());
        b.extend_from_slice(&id.task.seq.to_le_bytes());
        b.extend_from_slice(&id.index.to_le_bytes());
    }
    b
}

pub(crate) fn object_ids_from_bytes(b: &[u8], what: &str) -> Result<Vec<c::ObjectId>, FrameError> {
    let records = b.chunks_exact(OBJECT_ID_BYTES);
    if !records.remainder().is_empty() {
        return Err(malformed(format!(
            "{what}: {} bytes are not a whole number of {OBJECT_ID_BYTES}-byte object ids",
            b.len()
        )));
    }
    Ok(records
        .map(|r| c::ObjectId {
            task: c::TaskId { submitter: c::WorkerId(u64_at(r, 0)), seq: u64_at(r, 8) },
            index: u32::from_le_bytes([r[16], r[17], r[18], r[19]]),
        })
        .collect())
}

fn task_ids_to_bytes(ids: &[c::TaskId]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ids.len() * TASK_ID_BYTES);
    for id in ids {
        b.extend_from_slice(&id.submitter.0.to_le_bytes());
        b.extend_from_slice(&id.seq.to_le_bytes());
    }
    b
}

fn task_ids_from_bytes(b: &[u8], what: &str) -> Result<Vec<c::TaskId>, FrameError> {
    let records = b.chunks_exact(TASK_ID_BYTES);
    if !records.remainder().is_empty() {
        return Err(malformed(format!(
            "{what}: {} bytes are not a whole number of {TASK_ID_BYTES}-byte task ids",
            b.len()
        )));
    }
    Ok(records.map(|r| c::TaskId { submitter: c::WorkerId(u64_at(r, 0)), seq: u64_at(r, 8) }).collect())
}

fn object_ids(ids: Vec<c::ObjectId>) -> ObjectIds {
    ObjectIds { ids: object_ids_to_bytes(&ids) }
}

fn task_ids(ids: Vec<c::TaskId>) -> TaskIds {
    TaskIds { ids: task_ids_to_bytes(&ids) }
}

pub(crate) fn task_id(t: Option<TaskId>, what: &str) -> Result<c::TaskId, FrameError> {
    required(t, what).map(Into::into)
}

/// A function id travels in a task id's shape (two fixed64s).
pub(crate) fn function_to_wire(f: c::FunctionId) -> TaskId {
    TaskId { submitter: f.exporter.0, seq: f.seq }
}

pub(crate) fn function_from_wire(t: c::TaskId) -> c::FunctionId {
    c::FunctionId { exporter: t.submitter, seq: t.seq }
}

pub(crate) fn object_id(o: Option<ObjectId>, what: &str) -> Result<c::ObjectId, FrameError> {
    required(o, what).map(Into::into)
}

// ---- errors ----

/// [`ferroray_common::Error`], every variant a case.
#[derive(Clone, PartialEq, Message)]
pub struct Error {
    #[prost(oneof = "ErrorKind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19")]
    pub kind: Option<ErrorKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ErrorKind {
    #[prost(message, boxed, tag = "1")]
    Task(Box<TaskError>),
    #[prost(message, tag = "2")]
    GetTimeout(Empty),
    #[prost(message, tag = "3")]
    TaskCancelled(Empty),
    #[prost(message, tag = "4")]
    WorkerCrashed(WorkerCrashed),
    #[prost(string, tag = "5")]
    ObjectLost(String),
    #[prost(string, tag = "6")]
    InvalidOption(String),
    #[prost(string, tag = "7")]
    Serialization(String),
    #[prost(string, tag = "8")]
    UnknownFunction(String),
    #[prost(string, tag = "9")]
    Infeasible(String),
    #[prost(string, tag = "10")]
    StoreFull(String),
    #[prost(string, tag = "11")]
    ReplayMismatch(String),
    #[prost(message, tag = "12")]
    NotInitialized(Empty),
    #[prost(message, tag = "13")]
    AlreadyInitialized(Empty),
    #[prost(string, tag = "14")]
    Disconnected(String),
    #[prost(string, tag = "15")]
    Protocol(String),
    #[prost(string, tag = "16")]
    Io(String),
    #[prost(string, tag = "17")]
    PermissionDenied(String),
    #[prost(message, tag = "18")]
    ActorDied(ActorDied),
    #[prost(string, tag = "19")]
    NoCluster(String),
}

#[derive(Clone, PartialEq, Message)]
pub struct ActorDied {
    #[prost(string, tag = "1")]
    pub actor: String,
    #[prost(oneof = "DeathCause", tags = "2, 3, 4, 5, 6, 7")]
    pub cause: Option<DeathCause>,
}

/// [`ferroray_common::ActorDeathCause`].
#[derive(Clone, PartialEq, Oneof)]
pub enum DeathCause {
    #[prost(message, tag = "2")]
    Killed(Empty),
    #[prost(string, tag = "3")]
    Crashed(String),
    #[prost(string, tag = "4")]
    CreationFailed(String),
    #[prost(message, tag = "5")]
    OutOfScope(Empty),
    #[prost(message, tag = "6")]
    Exited(Empty),
    #[prost(message, tag = "7")]
    JobEnded(Empty),
}

#[derive(Clone, PartialEq, Message)]
pub struct TaskError {
    #[prost(string, tag = "1")]
    pub type_name: String,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(string, tag = "3")]
    pub task_name: String,
    #[prost(uint32, tag = "4")]
    pub pid: u32,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WorkerCrashed {
    #[prost(string, tag = "1")]
    pub task: String,
    #[prost(string, tag = "2")]
    pub detail: String,
}

impl From<c::Error> for Error {
    fn from(e: c::Error) -> Self {
        use ErrorKind as K;
        let kind = match e {
            c::Error::Task(t) => {
                let t = *t;
                K::Task(Box::new(TaskError {
                    type_name: t.type_name,
                    message: t.message,
                    task_name: t.task_name,
                    pid: t.pid,
                    value: t.value,
                }))
            }
            c::Error::GetTimeout => K::GetTimeout(Empty {}),
            c::Error::TaskCancelled => K::TaskCancelled(Empty {}),
            c::Error::WorkerCrashed { task, detail } => K::WorkerCrashed(WorkerCrashed { task, detail }),
            c::Error::ObjectLost(s) => K::ObjectLost(s),
            c::Error::InvalidOption(s) => K::InvalidOption(s),
            c::Error::Serialization(s) => K::Serialization(s),
            c::Error::UnknownFunction(s) => K::UnknownFunction(s),
            c::Error::Infeasible(s) => K::Infeasible(s),
            c::Error::StoreFull(s) => K::StoreFull(s),
            c::Error::ReplayMismatch(s) => K::ReplayMismatch(s),
            c::Error::NotInitialized => K::NotInitialized(Empty {}),
            c::Error::AlreadyInitialized => K::AlreadyInitialized(Empty {}),
            c::Error::Disconnected(s) => K::Disconnected(s),
            c::Error::NoCluster(s) => K::NoCluster(s),
            c::Error::Protocol(s) => K::Protocol(s),
            c::Error::Io(s) => K::Io(s),
            c::Error::PermissionDenied(s) => K::PermissionDenied(s),
            c::Error::ActorDied { actor, cause } => K::ActorDied(ActorDied {
                actor,
                cause: Some(match cause {
                    c::ActorDeathCause::Killed => DeathCause::Killed(Empty {}),
                    c::ActorDeathCause::Crashed(s) => DeathCause::Crashed(s),
                    c::ActorDeathCause::CreationFailed(s) => DeathCause::CreationFailed(s),
                    c::ActorDeathCause::OutOfScope => DeathCause::OutOfScope(Empty {}),
                    c::ActorDeathCause::Exited => DeathCause::Exited(Empty {}),
                    c::ActorDeathCause::JobEnded => DeathCause::JobEnded(Empty {}),
                    // A cause added after this was written: its text travels.
                    other => DeathCause::Crashed(other.to_string()),
                }),
            }),
            // A variant added to `Error` after this was written: it needs a
            // case of its own here; until then its text travels.
            other => K::Protocol(format!("an error with no wire form: {other}")),
        };
        Error { kind: Some(kind) }
    }
}

impl TryFrom<Error> for c::Error {
    type Error = FrameError;

    fn try_from(e: Error) -> Result<Self, FrameError> {
        use ErrorKind as K;
        Ok(match required(e.kind, "error kind (unknown to this build?)")? {
            K::Task(t) => {
                let mut e = c::Error::task("", String::new(), "", t.pid);
                if let c::Error::Task(b) = &mut e {
                    b.type_name = t.type_name;
                    b.message = t.message;
                    b.task_name = t.task_name;
                    b.value = t.value;
                }
                e
            }
            K::GetTimeout(_) => c::Error::GetTimeout,
            K::TaskCancelled(_) => c::Error::TaskCancelled,
            K::WorkerCrashed(w) => c::Error::WorkerCrashed { task: w.task, detail: w.detail },
            K::ObjectLost(s) => c::Error::ObjectLost(s),
            K::InvalidOption(s) => c::Error::InvalidOption(s),
            K::Serialization(s) => c::Error::Serialization(s),
            K::UnknownFunction(s) => c::Error::UnknownFunction(s),
            K::Infeasible(s) => c::Error::Infeasible(s),
            K::StoreFull(s) => c::Error::StoreFull(s),
            K::ReplayMismatch(s) => c::Error::ReplayMismatch(s),
            K::NotInitialized(_) => c::Error::NotInitialized,
            K::AlreadyInitialized(_) => c::Error::AlreadyInitialized,
            K::Disconnected(s) => c::Error::Disconnected(s),
            K::NoCluster(s) => c::Error::NoCluster(s),
            K::Protocol(s) => c::Error::Protocol(s),
            K::Io(s) => c::Error::Io(s),
            K::PermissionDenied(s) => c::Error::PermissionDenied(s),
            K::ActorDied(d) => c::Error::ActorDied {
                actor: d.actor,
                cause: match required(d.cause, "actor death cause (unknown to this build?)")? {
                    DeathCause::Killed(_) => c::ActorDeathCause::Killed,
                    DeathCause::Crashed(s) => c::ActorDeathCause::Crashed(s),
                    DeathCause::CreationFailed(s) => c::ActorDeathCause::CreationFailed(s),
                    DeathCause::OutOfScope(_) => c::ActorDeathCause::OutOfScope,
                    DeathCause::Exited(_) => c::ActorDeathCause::Exited,
                    DeathCause::JobEnded(_) => c::ActorDeathCause::JobEnded,
                },
            },
        })
    }
}

fn error(e: Option<Error>, what: &str) -> Result<c::Error, FrameError> {
    required(e, what)?.try_into()
}

// ---- resources and retry policy ----

/// [`ferroray_common::RetryExceptions`]; absent from a task spec means none.
#[derive(Clone, PartialEq, Message)]
pub struct RetryExceptions {
    #[prost(oneof = "RetryKind", tags = "1, 2, 3, 4")]
    pub kind: Option<RetryKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum RetryKind {
    #[prost(message, tag = "1")]
    None(Empty),
    #[prost(message, tag = "2")]
    All(Empty),
    /// Type name suffixes.
    #[prost(message, tag = "3")]
    Types(Names),
    /// Exact type names.
    #[prost(message, tag = "4")]
    ExactTypes(Names),
}

#[derive(Clone, PartialEq, Message)]
pub struct Names {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
}

pub(crate) fn retry_to_wire(r: c::RetryExceptions) -> Option<RetryExceptions> {
    let kind = match r {
        c::RetryExceptions::None => return None,
        c::RetryExceptions::All => RetryKind::All(Empty {}),
        c::RetryExceptions::Types(names) => RetryKind::Types(Names { names }),
        c::RetryExceptions::ExactTypes(names) => RetryKind::ExactTypes(Names { names }),
        // A policy added after this was written needs a case here; until
        // then it travels as the safe choice, no retries.
        _ => return None,
    };
    Some(RetryExceptions { kind: Some(kind) })
}

fn retry_from_wire(r: Option<RetryExceptions>) -> Result<c::RetryExceptions, FrameError> {
    let Some(r) = r else { return Ok(c::RetryExceptions::None) };
    Ok(match required(r.kind, "retry policy kind (unknown to this build?)")? {
        RetryKind::None(_) => c::RetryExceptions::None,
        RetryKind::All(_) => c::RetryExceptions::All,
        RetryKind::Types(n) => c::RetryExceptions::Types(n.names),
        RetryKind::ExactTypes(n) => c::RetryExceptions::ExactTypes(n.names),
    })
}

// ---- values and task specs ----

/// Where a value's bytes are, as the first two cases of a `oneof`.
#[derive(Clone, PartialEq, Oneof)]
pub enum PayloadKind {
    #[prost(bytes = "vec", tag = "1")]
    Inline(Vec<u8>),
    #[prost(message, tag = "2")]
    Shm(Shm),
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Shm {
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    #[prost(uint64, tag = "2")]
    pub len: u64,
}

impl From<m::Payload> for PayloadKind {
    fn from(p: m::Payload) -> Self {
        match p {
            m::Payload::Inline(b) => PayloadKind::Inline(b),
            m::Payload::Shm { offset, len } => PayloadKind::Shm(Shm { offset, len }),
        }
    }
}

impl From<PayloadKind> for m::Payload {
    fn from(p: PayloadKind) -> Self {
        match p {
            PayloadKind::Inline(b) => m::Payload::Inline(b),
            PayloadKind::Shm(s) => m::Payload::Shm { offset: s.offset, len: s.len },
        }
    }
}

/// [`m::Encoding`]. `Rust` is 0, so a peer that sends no encoding (an older
/// build) means the Rust value format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Encoding {
    Rust = 0,
    Unit = 1,
    RefList = 2,
    Raw = 3,
}

pub(crate) fn encoding_to_wire(e: m::Encoding) -> i32 {
    (match e {
        m::Encoding::Rust => Encoding::Rust,
        m::Encoding::Unit => Encoding::Unit,
        m::Encoding::RefList => Encoding::RefList,
        m::Encoding::Raw => Encoding::Raw,
    }) as i32
}

fn encoding_from_wire(e: i32) -> Result<m::Encoding, FrameError> {
    Ok(match Encoding::try_from(e) {
        Ok(Encoding::Rust) => m::Encoding::Rust,
        Ok(Encoding::Unit) => m::Encoding::Unit,
        Ok(Encoding::RefList) => m::Encoding::RefList,
        Ok(Encoding::Raw) => m::Encoding::Raw,
        Err(_) => return Err(malformed(format!("unknown value encoding {e}"))),
    })
}

/// A value (inline or in shared memory, with the refs nested in it) or the
/// error in its place.
#[derive(Clone, PartialEq, Message)]
pub struct ObjectValue {
    #[prost(oneof = "ObjectValueKind", tags = "1, 2, 3")]
    pub kind: Option<ObjectValueKind>,
    /// Object ids, 20-byte records (data only).
    #[prost(bytes = "vec", tag = "4")]
    pub contained: Vec<u8>,
    /// How the bytes are read (data only).
    #[prost(enumeration = "Encoding", tag = "5")]
    pub encoding: i32,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ObjectValueKind {
    #[prost(bytes = "vec", tag = "1")]
    Inline(Vec<u8>),
    #[prost(message, tag = "2")]
    Shm(Shm),
    #[prost(message, tag = "3")]
    Error(Error),
}

impl From<m::ObjectValue> for ObjectValue {
    fn from(v: m::ObjectValue) -> Self {
        match v {
            m::ObjectValue::Data { payload, encoding, contained } => ObjectValue {
                kind: Some(match payload {
                    m::Payload::Inline(b) => ObjectValueKind::Inline(b),
                    m::Payload::Shm { offset, len } => ObjectValueKind::Shm(Shm { offset, len }),
                }),
                contained: object_ids_to_bytes(&contained),
                encoding: encoding_to_wire(encoding),
            },
            m::ObjectValue::Error(e) => {
                ObjectValue { kind: Some(ObjectValueKind::Error(e.into())), contained: vec![], encoding: 0 }
            }
        }
    }
}

impl TryFrom<ObjectValue> for m::ObjectValue {
    type Error = FrameError;

    fn try_from(v: ObjectValue) -> Result<Self, FrameError> {
        let payload = match required(v.kind, "object value kind")? {
            ObjectValueKind::Inline(b) => m::Payload::Inline(b),
            ObjectValueKind::Shm(s) => m::Payload::Shm { offset: s.offset, len: s.len },
            ObjectValueKind::Error(e) => return Ok(m::ObjectValue::Error(e.try_into()?)),
        };
        Ok(m::ObjectValue::Data {
            payload,
            encoding: encoding_from_wire(v.encoding)?,
            contained: object_ids_from_bytes(&v.contained, "refs nested in a value")?,
        })
    }
}

pub(crate) fn value(v: Option<ObjectValue>, what: &str) -> Result<m::ObjectValue, FrameError> {
    required(v, what)?.try_into()
}

#[derive(Clone, PartialEq, Oneof)]
pub enum FunctionKind {
    #[prost(message, tag = "2")]
    Rust(RustFunction),
    #[prost(message, tag = "12")]
    Python(PythonFunction),
}

#[derive(Clone, PartialEq, Message)]
pub struct RustFunction {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PythonFunction {
    #[prost(string, tag = "1")]
    pub module: String,
    #[prost(string, tag = "2")]
    pub qualname: String,
    #[prost(bytes = "vec", tag = "3")]
    pub pickled: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub function: Option<TaskId>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TaskArg {
    #[prost(oneof = "TaskArgKind", tags = "1, 2, 3, 4")]
    pub kind: Option<TaskArgKind>,
    /// How a value's bytes are read (values and resolved objects).
    #[prost(enumeration = "Encoding", tag = "5")]
    pub encoding: i32,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum TaskArgKind {
    /// A value given by the caller, inline.
    #[prost(bytes = "vec", tag = "1")]
    Inline(Vec<u8>),
    /// A value given by the caller, in shared memory.
    #[prost(message, tag = "2")]
    Shm(Shm),
    #[prost(message, tag = "3")]
    Ref(ObjectId),
    #[prost(message, tag = "4")]
    Object(ResolvedObject),
}

#[derive(Clone, PartialEq, Message)]
pub struct ResolvedObject {
    #[prost(oneof = "PayloadKind", tags = "1, 2")]
    pub payload: Option<PayloadKind>,
    #[prost(message, optional, tag = "3")]
    pub id: Option<ObjectId>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ReturnKind {
    #[prost(uint32, tag = "5")]
    Fixed(u32),
    #[prost(message, tag = "13")]
    Streaming(Streaming),
    #[prost(message, tag = "14")]
    Dynamic(Empty),
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Streaming {
    #[prost(uint32, optional, tag = "1")]
    pub backpressure: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TaskSpec {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(oneof = "FunctionKind", tags = "2, 12")]
    pub function: Option<FunctionKind>,
    #[prost(message, repeated, tag = "3")]
    pub args: Vec<TaskArg>,
    /// Object ids, 20-byte records.
    #[prost(bytes = "vec", tag = "4")]
    pub contained: Vec<u8>,
    #[prost(oneof = "ReturnKind", tags = "5, 13, 14")]
    pub returns: Option<ReturnKind>,
    /// Amounts in fixed point, 1/10,000 of a unit.
    #[prost(btree_map = "string, sint64", tag = "6")]
    pub resources: BTreeMap<String, i64>,
    #[prost(uint32, tag = "7")]
    pub max_retries: u32,
    #[prost(message, optional, tag = "8")]
    pub retry_exceptions: Option<RetryExceptions>,
    #[prost(message, optional, tag = "9")]
    pub parent: Option<TaskId>,
    #[prost(bool, tag = "10")]
    pub enable_events: bool,
    #[prost(uint32, tag = "11")]
    pub attempt: u32,
    #[prost(oneof = "ActorTaskKind", tags = "15, 16")]
    pub actor: Option<ActorTaskKind>,
}

/// [`m::ActorTask`], as cases of [`TaskSpec`].
#[derive(Clone, PartialEq, Oneof)]
pub enum ActorTaskKind {
    #[prost(message, tag = "15")]
    Create(ActorSpec),
    /// The called actor's id (its creation task's id).
    #[prost(message, tag = "16")]
    Call(TaskId),
}

/// [`m::ActorExecutor`]; 0 is the serial executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum ActorExecutor {
    Serial = 0,
    Threaded = 1,
    Async = 2,
}

#[derive(Clone, PartialEq, Message)]
pub struct ActorSpec {
    #[prost(string, tag = "1")]
    pub class: String,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(bool, tag = "3")]
    pub detached: bool,
    #[prost(uint32, tag = "4")]
    pub max_restarts: u32,
    #[prost(uint32, tag = "5")]
    pub max_task_retries: u32,
    #[prost(uint32, tag = "6")]
    pub max_concurrency: u32,
    #[prost(enumeration = "ActorExecutor", tag = "7")]
    pub executor: i32,
    #[prost(bytes = "vec", tag = "8")]
    pub front: Vec<u8>,
}

pub(crate) fn actor_task_to_wire(a: m::ActorTask) -> ActorTaskKind {
    match a {
        m::ActorTask::Create(s) => ActorTaskKind::Create(ActorSpec {
            class: s.class,
            name: s.name,
            detached: s.detached,
            max_restarts: s.max_restarts,
            max_task_retries: s.max_task_retries,
            max_concurrency: s.max_concurrency,
            executor: (match s.executor {
                m::ActorExecutor::Serial => ActorExecutor::Serial,
                m::ActorExecutor::Threaded => ActorExecutor::Threaded,
                m::ActorExecutor::Async => ActorExecutor::Async,
            }) as i32,
            front: s.front,
        }),
        m::ActorTask::Call { actor } => ActorTaskKind::Call(actor.0.into()),
    }
}

fn actor_task_from_wire(a: ActorTaskKind) -> Result<m::ActorTask, FrameError> {
    Ok(match a {
        ActorTaskKind::Create(s) => m::ActorTask::Create(Box::new(m::ActorSpec {
            class: s.class,
            name: s.name,
            detached: s.detached,
            max_restarts: s.max_restarts,
            max_task_retries: s.max_task_retries,
            max_concurrency: s.max_concurrency,
            executor: match ActorExecutor::try_from(s.executor) {
                Ok(ActorExecutor::Serial) => m::ActorExecutor::Serial,
                Ok(ActorExecutor::Threaded) => m::ActorExecutor::Threaded,
                Ok(ActorExecutor::Async) => m::ActorExecutor::Async,
                Err(_) => return Err(malformed(format!("unknown actor executor {}", s.executor))),
            },
            front: s.front,
        })),
        ActorTaskKind::Call(t) => m::ActorTask::Call { actor: c::ActorId(t.into()) },
    })
}

impl From<m::TaskSpec> for TaskSpec {
    fn from(s: m::TaskSpec) -> Self {
        let function = match s.function {
            m::FunctionDescriptor::Rust { name } => FunctionKind::Rust(RustFunction { name }),
            m::FunctionDescriptor::Python { module, qualname, function, pickled } => {
                FunctionKind::Python(PythonFunction {
                    module,
                    qualname,
                    pickled,
                    function: function.map(function_to_wire),
                })
            }
        };
        let args = s
            .args
            .into_iter()
            .map(|a| {
                let (kind, encoding) = match a {
                    m::TaskArg::Value { payload: m::Payload::Inline(b), encoding } => {
                        (TaskArgKind::Inline(b), encoding)
                    }
                    m::TaskArg::Value { payload: m::Payload::Shm { offset, len }, encoding } => {
                        (TaskArgKind::Shm(Shm { offset, len }), encoding)
                    }
                    m::TaskArg::Ref(id) => (TaskArgKind::Ref(id.into()), m::Encoding::Rust),
                    m::TaskArg::Object { id, payload, encoding } => (
                        TaskArgKind::Object(ResolvedObject { payload: Some(payload.into()), id: Some(id.into()) }),
                        encoding,
                    ),
                };
                TaskArg { kind: Some(kind), encoding: encoding_to_wire(encoding) }
            })
            .collect();
        let returns = match s.returns {
            m::ReturnKind::Fixed(n) => ReturnKind::Fixed(n),
            m::ReturnKind::Streaming { backpressure } => ReturnKind::Streaming(Streaming { backpressure }),
            m::ReturnKind::Dynamic => ReturnKind::Dynamic(Empty {}),
        };
        TaskSpec {
            task_id: Some(s.task_id.into()),
            function: Some(function),
            args,
            contained: object_ids_to_bytes(&s.contained),
            returns: Some(returns),
            resources: s.resources.into_fixed(),
            max_retries: s.max_retries,
            retry_exceptions: retry_to_wire(s.retry_exceptions),
            parent: s.parent.map(Into::into),
            enable_events: s.enable_events,
            attempt: s.attempt,
            actor: s.actor.map(actor_task_to_wire),
        }
    }
}

impl TryFrom<TaskSpec> for m::TaskSpec {
    type Error = FrameError;

    fn try_from(s: TaskSpec) -> Result<Self, FrameError> {
        let args = s.args.into_iter().map(arg_from_wire).collect::<Result<_, FrameError>>();
        spec_from_parts(SpecParts {
            task_id: s.task_id,
            function: s.function,
            args,
            contained: &s.contained,
            returns: s.returns,
            resources: s.resources,
            max_retries: s.max_retries,
            retry_exceptions: s.retry_exceptions,
            parent: s.parent,
            enable_events: s.enable_events,
            attempt: s.attempt,
            actor: s.actor,
        })
    }
}

/// One argument, checked (shared with the direct decoder, which converts
/// each argument as it arrives).
pub(crate) fn arg_from_wire(a: TaskArg) -> Result<m::TaskArg, FrameError> {
    let encoding = encoding_from_wire(a.encoding)?;
    Ok(match required(a.kind, "task argument kind")? {
        TaskArgKind::Inline(b) => m::TaskArg::Value { payload: m::Payload::Inline(b), encoding },
        TaskArgKind::Shm(s) => {
            m::TaskArg::Value { payload: m::Payload::Shm { offset: s.offset, len: s.len }, encoding }
        }
        TaskArgKind::Ref(id) => m::TaskArg::Ref(id.into()),
        TaskArgKind::Object(o) => m::TaskArg::Object {
            id: object_id(o.id, "resolved argument id")?,
            payload: required(o.payload, "resolved argument payload")?.into(),
            encoding,
        },
    })
}

/// A task spec's decoded fields, before the checks; `args` already
/// converted (the first failure, if any).
pub(crate) struct SpecParts<'a> {
    pub task_id: Option<TaskId>,
    pub function: Option<FunctionKind>,
    pub args: Result<Vec<m::TaskArg>, FrameError>,
    pub contained: &'a [u8],
    pub returns: Option<ReturnKind>,
    pub resources: BTreeMap<String, i64>,
    pub max_retries: u32,
    pub retry_exceptions: Option<RetryExceptions>,
    pub parent: Option<TaskId>,
    pub enable_events: bool,
    pub attempt: u32,
    pub actor: Option<ActorTaskKind>,
}

/// The checks of a task spec, in one order for both decoders (so the same
/// bad spec gets the same error either way).
pub(crate) fn spec_from_parts(s: SpecParts<'_>) -> Result<m::TaskSpec, FrameError> {
    let function = match required(s.function, "task function")? {
        FunctionKind::Rust(f) => m::FunctionDescriptor::Rust { name: f.name },
        FunctionKind::Python(f) => m::FunctionDescriptor::Python {
            module: f.module,
            qualname: f.qualname,
            function: f.function.map(|t| function_from_wire(t.into())),
            pickled: f.pickled,
        },
    };
    let args = s.args?;
    let returns = match required(s.returns, "task returns")? {
        ReturnKind::Fixed(n) => m::ReturnKind::Fixed(n),
        ReturnKind::Streaming(st) => m::ReturnKind::Streaming { backpressure: st.backpressure },
        ReturnKind::Dynamic(_) => m::ReturnKind::Dynamic,
    };
    Ok(m::TaskSpec {
        task_id: task_id(s.task_id, "task id")?,
        function,
        args,
        contained: object_ids_from_bytes(s.contained, "refs nested in arguments")?,
        returns,
        resources: c::ResourceSet::from_fixed(s.resources),
        max_retries: s.max_retries,
        retry_exceptions: retry_from_wire(s.retry_exceptions)?,
        parent: s.parent.map(Into::into),
        enable_events: s.enable_events,
        attempt: s.attempt,
        actor: s.actor.map(actor_task_from_wire).transpose()?,
    })
}

impl m::TaskSpec {
    /// An upper bound on the bytes of this spec as a protobuf message,
    /// computed without encoding it: the variable-size parts (inline values,
    /// names, the pickled function, ids) plus [`SPEC_OVERHEAD`] for the
    /// fixed part and [`PART_OVERHEAD`] for each argument, name and id list.
    pub fn max_encoded_len(&self) -> u64 {
        let function = match &self.function {
            m::FunctionDescriptor::Rust { name } => name.len(),
            m::FunctionDescriptor::Python { module, qualname, pickled, .. } => {
                module.len() + qualname.len() + pickled.len() + 20
            }
        } as u64;
        let payload_len = |p: &m::Payload| match p {
            m::Payload::Inline(b) => b.len() as u64,
            m::Payload::Shm { .. } => 0,
        };
        let args: u64 = self
            .args
            .iter()
            .map(|a| match a {
                m::TaskArg::Value { payload: p, .. } | m::TaskArg::Object { payload: p, .. } => payload_len(p),
                m::TaskArg::Ref(_) => 0,
            } + PART_OVERHEAD)
            .sum();
        let resources: u64 = self.resources.iter().map(|(name, _)| name.len() as u64 + PART_OVERHEAD).sum();
        let retry: u64 = match &self.retry_exceptions {
            c::RetryExceptions::Types(names) | c::RetryExceptions::ExactTypes(names) => {
                names.iter().map(|n| n.len() as u64 + PART_OVERHEAD).sum()
            }
            _ => 0,
        };
        SPEC_OVERHEAD + function + args + (self.contained.len() * OBJECT_ID_BYTES) as u64 + resources + retry
    }
}

/// Bytes of a task spec besides its variable-size parts, at most (ids,
/// counters, flags, and the tags and lengths of every message).
pub const SPEC_OVERHEAD: u64 = 256;
/// Bytes of tags and lengths around one argument, name or id list, at most.
pub const PART_OVERHEAD: u64 = 64;

// ---- task outcomes and events ----

/// How a task attempt ended, as cases of [`TaskDone`].
#[derive(Clone, PartialEq, Oneof)]
pub enum TaskOutcome {
    #[prost(message, tag = "3")]
    Returned(Returned),
    /// A generator's item count.
    #[prost(uint32, tag = "4")]
    Streamed(u32),
    #[prost(message, tag = "5")]
    Failed(Error),
}

#[derive(Clone, PartialEq, Message)]
pub struct Returned {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<ObjectValue>,
}

impl From<m::TaskOutcome> for TaskOutcome {
    fn from(o: m::TaskOutcome) -> Self {
        match o {
            m::TaskOutcome::Returned(values) => {
                TaskOutcome::Returned(Returned { values: values.into_iter().map(Into::into).collect() })
            }
            m::TaskOutcome::Streamed { items } => TaskOutcome::Streamed(items),
            m::TaskOutcome::Failed(e) => TaskOutcome::Failed(e.into()),
        }
    }
}

impl TryFrom<TaskOutcome> for m::TaskOutcome {
    type Error = FrameError;

    fn try_from(o: TaskOutcome) -> Result<Self, FrameError> {
        Ok(match o {
            TaskOutcome::Returned(r) => m::TaskOutcome::Returned(
                r.values.into_iter().map(TryInto::try_into).collect::<Result<_, FrameError>>()?,
            ),
            TaskOutcome::Streamed(items) => m::TaskOutcome::Streamed { items },
            TaskOutcome::Failed(e) => m::TaskOutcome::Failed(e.try_into()?),
        })
    }
}

/// [`m::TaskState`]; 0 is never sent (a missing state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum TaskState {
    Unspecified = 0,
    Submitted = 1,
    PendingSchedule = 2,
    Running = 3,
    Finished = 4,
    Failed = 5,
    Retrying = 6,
    Cancelled = 7,
}

#[derive(Clone, PartialEq, Message)]
pub struct TaskEvent {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(enumeration = "TaskState", tag = "3")]
    pub state: i32,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
    #[prost(uint64, tag = "5")]
    pub time_us: u64,
    #[prost(uint32, optional, tag = "6")]
    pub worker_pid: Option<u32>,
    #[prost(string, optional, tag = "7")]
    pub error: Option<String>,
    #[prost(message, optional, tag = "8")]
    pub actor_id: Option<TaskId>,
}

impl From<m::TaskEvent> for TaskEvent {
    fn from(e: m::TaskEvent) -> Self {
        let state = match e.state {
            m::TaskState::Submitted => TaskState::Submitted,
            m::TaskState::PendingSchedule => TaskState::PendingSchedule,
            m::TaskState::Running => TaskState::Running,
            m::TaskState::Finished => TaskState::Finished,
            m::TaskState::Failed => TaskState::Failed,
            m::TaskState::Retrying => TaskState::Retrying,
            m::TaskState::Cancelled => TaskState::Cancelled,
        };
        TaskEvent {
            task_id: Some(e.task_id.into()),
            name: e.name,
            state: state as i32,
            attempt: e.attempt,
            time_us: e.time_us,
            worker_pid: e.worker_pid,
            error: e.error,
            actor_id: e.actor_id.map(|a| a.0.into()),
        }
    }
}

impl TryFrom<TaskEvent> for m::TaskEvent {
    type Error = FrameError;

    fn try_from(e: TaskEvent) -> Result<Self, FrameError> {
        let state = match TaskState::try_from(e.state) {
            Ok(TaskState::Unspecified) => return Err(malformed("task event state is missing".into())),
            Ok(TaskState::Submitted) => m::TaskState::Submitted,
            Ok(TaskState::PendingSchedule) => m::TaskState::PendingSchedule,
            Ok(TaskState::Running) => m::TaskState::Running,
            Ok(TaskState::Finished) => m::TaskState::Finished,
            Ok(TaskState::Failed) => m::TaskState::Failed,
            Ok(TaskState::Retrying) => m::TaskState::Retrying,
            Ok(TaskState::Cancelled) => m::TaskState::Cancelled,
            Err(_) => return Err(malformed(format!("unknown task state {}", e.state))),
        };
        Ok(m::TaskEvent {
            task_id: task_id(e.task_id, "task event id")?,
            name: e.name,
            state,
            attempt: e.attempt,
            time_us: e.time_us,
            worker_pid: e.worker_pid,
            error: e.error,
            actor_id: e.actor_id.map(|a| c::ActorId(a.into())),
        })
    }
}

// ---- client to node ----

/// [`m::Role`]; 0 is never sent (a missing role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Role {
    Unspecified = 0,
    Driver = 1,
    Worker = 2,
    Peer = 3,
}

/// [`m::ToNode`]: one case per message.
#[derive(Clone, PartialEq, Message)]
pub struct ToNode {
    #[prost(
        oneof = "ToNodeKind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29"
    )]
    pub kind: Option<ToNodeKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ToNodeKind {
    /// Tag 1 forever (see the evolution rules).
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Submit(TaskSpec),
    #[prost(message, tag = "3")]
    Put(ObjectMessage),
    #[prost(message, tag = "4")]
    AddRef(ObjectIds),
    #[prost(message, tag = "5")]
    RemoveRef(ObjectIds),
    #[prost(message, tag = "6")]
    Subscribe(ObjectIds),
    #[prost(message, tag = "7")]
    Unpin(ObjectIds),
    #[prost(message, tag = "8")]
    TaskDone(TaskDone),
    #[prost(message, tag = "9")]
    Allocate(Allocate),
    #[prost(message, tag = "10")]
    Deallocate(Deallocate),
    #[prost(message, tag = "11")]
    Cancel(Cancel),
    #[prost(message, tag = "12")]
    Blocked(Empty),
    #[prost(message, tag = "13")]
    Unblocked(Empty),
    #[prost(message, tag = "14")]
    Revoked(TaskIds),
    #[prost(message, tag = "15")]
    ListTasks(Request),
    #[prost(message, tag = "16")]
    ReportItem(ReportItem),
    #[prost(message, tag = "17")]
    StreamConsumed(StreamProgress),
    #[prost(message, tag = "18")]
    StreamDrop(StreamProgress),
    #[prost(message, tag = "19")]
    CreateActor(CreateActor),
    #[prost(message, tag = "20")]
    GetActor(GetActor),
    #[prost(message, tag = "21")]
    KillActor(KillActor),
    /// The actor to end (its id).
    #[prost(message, tag = "22")]
    TerminateActor(TaskId),
    #[prost(message, tag = "23")]
    StreamHandOff(StreamProgress),
    #[prost(message, tag = "24")]
    StreamClaim(StreamClaim),
    #[prost(message, tag = "25")]
    ExportFunction(ExportFunction),
    #[prost(message, tag = "26")]
    WorkerCommands(WorkerCommands),
    #[prost(message, tag = "27")]
    Import(ObjectMessage),
    #[prost(message, tag = "28")]
    Borrow(Borrow),
    #[prost(message, tag = "29")]
    Locate(ObjectIds),
}

/// An object kept on another node, for a peer's link (`m::ToNode::Borrow`).
#[derive(Clone, PartialEq, Message)]
pub struct Borrow {
    #[prost(message, optional, tag = "1")]
    pub id: Option<ObjectId>,
    #[prost(fixed64, tag = "2")]
    pub node_id: u64,
    #[prost(uint64, tag = "3")]
    pub len: u64,
    #[prost(enumeration = "Encoding", tag = "4")]
    pub encoding: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WorkerCommands {
    #[prost(message, repeated, tag = "1")]
    pub commands: Vec<WorkerCommand>,
}

/// [`m::WorkerKind`]; 0 is never sent (a missing kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum WorkerKind {
    Unspecified = 0,
    Rust = 1,
    Python = 2,
}

#[derive(Clone, PartialEq, Message)]
pub struct WorkerCommand {
    #[prost(enumeration = "WorkerKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub program: String,
    #[prost(string, repeated, tag = "3")]
    pub args: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub env: Vec<EnvVar>,
}

#[derive(Clone, PartialEq, Message)]
pub struct EnvVar {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExportFunction {
    /// The function's id (exporter, counter), in the task id's shape.
    #[prost(message, optional, tag = "1")]
    pub function: Option<TaskId>,
    #[prost(bytes = "vec", tag = "2")]
    pub pickled: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct StreamClaim {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "3")]
    pub from: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CreateActor {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<TaskSpec>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GetActor {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(string, tag = "2")]
    pub name: String,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct KillActor {
    #[prost(message, optional, tag = "1")]
    pub actor: Option<TaskId>,
    #[prost(bool, tag = "2")]
    pub no_restart: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Hello {
    /// Tag 1 forever (see the evolution rules).
    #[prost(uint32, tag = "1")]
    pub protocol: u32,
    #[prost(fixed64, tag = "2")]
    pub worker_id: u64,
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    #[prost(enumeration = "Role", tag = "4")]
    pub role: i32,
    /// The cluster token's bytes.
    #[prost(bytes = "vec", tag = "5")]
    pub token: Vec<u8>,
}

/// An object and its value: `Put` and `ObjectReady`.
#[derive(Clone, PartialEq, Message)]
pub struct ObjectMessage {
    #[prost(message, optional, tag = "1")]
    pub id: Option<ObjectId>,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ObjectValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TaskDone {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
    #[prost(oneof = "TaskOutcome", tags = "3, 4, 5")]
    pub outcome: Option<TaskOutcome>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Allocate {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint64, tag = "2")]
    pub size: u64,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Deallocate {
    #[prost(uint64, tag = "1")]
    pub offset: u64,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Cancel {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(bool, tag = "2")]
    pub force: bool,
    #[prost(bool, tag = "3")]
    pub recursive: bool,
    #[prost(uint64, optional, tag = "4")]
    pub force_after_ms: Option<u64>,
}

/// A request numbered by its sender (`ListTasks`).
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Request {
    #[prost(uint64, tag = "1")]
    pub req: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ReportItem {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
    #[prost(uint32, tag = "3")]
    pub index: u32,
    #[prost(message, optional, tag = "4")]
    pub value: Option<ObjectValue>,
    #[prost(fixed64, tag = "5")]
    pub digest: u64,
}

/// `StreamConsumed`, `StreamDrop` and `StreamHandOff`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct StreamProgress {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "2")]
    pub consumed: u32,
}

impl From<m::ToNode> for ToNode {
    fn from(msg: m::ToNode) -> Self {
        use ToNodeKind as K;
        let kind = match msg {
            m::ToNode::Hello { protocol, worker_id, pid, role, token } => K::Hello(Hello {
                protocol,
                worker_id: worker_id.0,
                pid,
                role: match role {
                    m::Role::Driver => Role::Driver,
                    m::Role::Worker => Role::Worker,
                    m::Role::Peer => Role::Peer,
                } as i32,
                token: token.as_bytes().to_vec(),
            }),
            m::ToNode::Submit(spec) => K::Submit((*spec).into()),
            m::ToNode::Put { id, value } => K::Put(ObjectMessage { id: Some(id.into()), value: Some(value.into()) }),
            m::ToNode::Import { id, value } => {
                K::Import(ObjectMessage { id: Some(id.into()), value: Some(value.into()) })
            }
            m::ToNode::Borrow { id, node, len, encoding } => {
                K::Borrow(Borrow { id: Some(id.into()), node_id: node.0, len, encoding: encoding_to_wire(encoding) })
            }
            m::ToNode::AddRef(ids) => K::AddRef(object_ids(ids)),
            m::ToNode::RemoveRef(ids) => K::RemoveRef(object_ids(ids)),
            m::ToNode::Subscribe(ids) => K::Subscribe(object_ids(ids)),
            m::ToNode::Locate(ids) => K::Locate(object_ids(ids)),
            m::ToNode::Unpin(ids) => K::Unpin(object_ids(ids)),
            m::ToNode::TaskDone { task_id, attempt, outcome } => {
                K::TaskDone(TaskDone { task_id: Some(task_id.into()), attempt, outcome: Some(outcome.into()) })
            }
            m::ToNode::Allocate { req, size } => K::Allocate(Allocate { req, size }),
            m::ToNode::Deallocate { offset } => K::Deallocate(Deallocate { offset }),
            m::ToNode::Cancel { task_id, force, recursive, force_after_ms } => {
                K::Cancel(Cancel { task_id: Some(task_id.into()), force, recursive, force_after_ms })
            }
            m::ToNode::Blocked => K::Blocked(Empty {}),
            m::ToNode::Unblocked => K::Unblocked(Empty {}),
            m::ToNode::Revoked { task_ids: ids } => K::Revoked(task_ids(ids)),
            m::ToNode::ListTasks { req } => K::ListTasks(Request { req }),
            m::ToNode::ReportItem { task_id, attempt, index, value, digest } => K::ReportItem(ReportItem {
                task_id: Some(task_id.into()),
                attempt,
                index,
                value: Some(value.into()),
                digest,
            }),
            m::ToNode::StreamConsumed { task_id, consumed } => {
                K::StreamConsumed(StreamProgress { task_id: Some(task_id.into()), consumed })
            }
            m::ToNode::StreamDrop { task_id, consumed } => {
                K::StreamDrop(StreamProgress { task_id: Some(task_id.into()), consumed })
            }
            m::ToNode::CreateActor { req, spec } => K::CreateActor(CreateActor { req, spec: Some((*spec).into()) }),
            m::ToNode::GetActor { req, name } => K::GetActor(GetActor { req, name }),
            m::ToNode::KillActor { actor, no_restart } => {
                K::KillActor(KillActor { actor: Some(actor.0.into()), no_restart })
            }
            m::ToNode::TerminateActor { actor } => K::TerminateActor(actor.0.into()),
            m::ToNode::StreamHandOff { task_id, consumed } => {
                K::StreamHandOff(StreamProgress { task_id: Some(task_id.into()), consumed })
            }
            m::ToNode::StreamClaim { req, task_id, from } => {
                K::StreamClaim(StreamClaim { req, task_id: Some(task_id.into()), from })
            }
            m::ToNode::ExportFunction { function, pickled } => {
                K::ExportFunction(ExportFunction { function: Some(function_to_wire(function)), pickled })
            }
            m::ToNode::WorkerCommands(commands) => K::WorkerCommands(WorkerCommands {
                commands: commands
                    .into_iter()
                    .map(|c| WorkerCommand {
                        kind: match c.kind {
                            m::WorkerKind::Rust => WorkerKind::Rust,
                            m::WorkerKind::Python => WorkerKind::Python,
                        } as i32,
                        program: c.program,
                        args: c.args,
                        env: c.env.into_iter().map(|(name, value)| EnvVar { name, value }).collect(),
                    })
                    .collect(),
            }),
        };
        ToNode { kind: Some(kind) }
    }
}

impl TryFrom<ToNode> for m::ToNode {
    type Error = FrameError;

    fn try_from(msg: ToNode) -> Result<Self, FrameError> {
        use ToNodeKind as K;
        Ok(match required(msg.kind, "message kind (unknown to this build?)")? {
            K::Hello(h) => m::ToNode::Hello {
                protocol: h.protocol,
                worker_id: c::WorkerId(h.worker_id),
                pid: h.pid,
                role: match Role::try_from(h.role) {
                    Ok(Role::Driver) => m::Role::Driver,
                    Ok(Role::Worker) => m::Role::Worker,
                    Ok(Role::Peer) => m::Role::Peer,
                    Ok(Role::Unspecified) => return Err(malformed("hello role is missing".into())),
                    Err(_) => return Err(malformed(format!("unknown role {}", h.role))),
                },
                token: c::ClusterToken::from_bytes(&h.token).ok_or_else(|| {
                    malformed(format!(
                        "a cluster token of {} bytes, not {}",
                        h.token.len(),
                        ferroray_common::auth::TOKEN_LEN
                    ))
                })?,
            },
            K::Submit(spec) => m::ToNode::Submit(Box::new(spec.try_into()?)),
            K::Put(p) => m::ToNode::Put { id: object_id(p.id, "put id")?, value: value(p.value, "put value")? },
            K::Import(p) => {
                m::ToNode::Import { id: object_id(p.id, "import id")?, value: value(p.value, "import value")? }
            }
            K::Borrow(b) => m::ToNode::Borrow {
                id: object_id(b.id, "borrowed id")?,
                node: c::NodeId(b.node_id),
                len: b.len,
                encoding: encoding_from_wire(b.encoding)?,
            },
            K::AddRef(ids) => m::ToNode::AddRef(object_ids_from_bytes(&ids.ids, "AddRef ids")?),
            K::RemoveRef(ids) => m::ToNode::RemoveRef(object_ids_from_bytes(&ids.ids, "RemoveRef ids")?),
            K::Subscribe(ids) => m::ToNode::Subscribe(object_ids_from_bytes(&ids.ids, "Subscribe ids")?),
            K::Locate(ids) => m::ToNode::Locate(object_ids_from_bytes(&ids.ids, "Locate ids")?),
            K::Unpin(ids) => m::ToNode::Unpin(object_ids_from_bytes(&ids.ids, "Unpin ids")?),
            K::TaskDone(d) => m::ToNode::TaskDone {
                task_id: task_id(d.task_id, "TaskDone task id")?,
                attempt: d.attempt,
                outcome: required(d.outcome, "TaskDone outcome")?.try_into()?,
            },
            K::Allocate(a) => m::ToNode::Allocate { req: a.req, size: a.size },
            K::Deallocate(d) => m::ToNode::Deallocate { offset: d.offset },
            K::Cancel(x) => m::ToNode::Cancel {
                task_id: task_id(x.task_id, "cancel task id")?,
                force: x.force,
                recursive: x.recursive,
                force_after_ms: x.force_after_ms,
            },
            K::Blocked(_) => m::ToNode::Blocked,
            K::Unblocked(_) => m::ToNode::Unblocked,
            K::Revoked(ids) => m::ToNode::Revoked { task_ids: task_ids_from_bytes(&ids.ids, "revoked task ids")? },
            K::ListTasks(r) => m::ToNode::ListTasks { req: r.req },
            K::ReportItem(r) => m::ToNode::ReportItem {
                task_id: task_id(r.task_id, "ReportItem task id")?,
                attempt: r.attempt,
                index: r.index,
                value: value(r.value, "ReportItem value")?,
                digest: r.digest,
            },
            K::StreamConsumed(s) => m::ToNode::StreamConsumed {
                task_id: task_id(s.task_id, "StreamConsumed task id")?,
                consumed: s.consumed,
            },
            K::StreamDrop(s) => {
                m::ToNode::StreamDrop { task_id: task_id(s.task_id, "StreamDrop task id")?, consumed: s.consumed }
            }
            K::CreateActor(a) => {
                m::ToNode::CreateActor { req: a.req, spec: Box::new(required(a.spec, "CreateActor spec")?.try_into()?) }
            }
            K::GetActor(g) => m::ToNode::GetActor { req: g.req, name: g.name },
            K::KillActor(k) => m::ToNode::KillActor {
                actor: c::ActorId(task_id(k.actor, "KillActor actor")?),
                no_restart: k.no_restart,
            },
            K::TerminateActor(t) => m::ToNode::TerminateActor { actor: c::ActorId(t.into()) },
            K::StreamHandOff(s) => {
                m::ToNode::StreamHandOff { task_id: task_id(s.task_id, "StreamHandOff task id")?, consumed: s.consumed }
            }
            K::StreamClaim(s) => {
                m::ToNode::StreamClaim { req: s.req, task_id: task_id(s.task_id, "StreamClaim task id")?, from: s.from }
            }
            K::ExportFunction(e) => m::ToNode::ExportFunction {
                function: function_from_wire(task_id(e.function, "ExportFunction id")?),
                pickled: e.pickled,
            },
            K::WorkerCommands(w) => m::ToNode::WorkerCommands(
                w.commands
                    .into_iter()
                    .map(|c| {
                        let kind = match WorkerKind::try_from(c.kind) {
                            Ok(WorkerKind::Rust) => m::WorkerKind::Rust,
                            Ok(WorkerKind::Python) => m::WorkerKind::Python,
                            _ => return Err(malformed(format!("worker kind {}", c.kind))),
                        };
                        let env = c.env.into_iter().map(|v| (v.name, v.value)).collect();
                        Ok(m::WorkerCommandSpec { kind, program: c.program, args: c.args, env })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

// ---- node to client ----

/// [`m::FromNode`]: one case per message.
#[derive(Clone, PartialEq, Message)]
pub struct FromNode {
    #[prost(
        oneof = "FromNodeKind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21"
    )]
    pub kind: Option<FromNodeKind>,
}

// `Execute` (a task spec) is the common case: boxing it would add an
// allocation to each, to save space in rarer messages that live briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Oneof)]
pub enum FromNodeKind {
    #[prost(message, tag = "1")]
    Welcome(NodeInfo),
    #[prost(message, tag = "2")]
    Execute(TaskSpec),
    #[prost(message, tag = "3")]
    ObjectReady(ObjectMessage),
    #[prost(message, tag = "4")]
    Allocated(Allocated),
    #[prost(message, tag = "5")]
    CancelRunning(TaskRef),
    #[prost(message, tag = "6")]
    Revoke(TaskIds),
    #[prost(message, tag = "7")]
    Tasks(Tasks),
    #[prost(message, tag = "8")]
    StreamItem(StreamItem),
    #[prost(message, tag = "9")]
    StreamEnd(StreamEnd),
    #[prost(message, tag = "10")]
    ItemAck(ItemAck),
    /// Tag 11 forever (see the evolution rules).
    #[prost(message, tag = "11")]
    Rejected(Error),
    #[prost(message, tag = "12")]
    ActorCreated(ActorCreated),
    #[prost(message, tag = "13")]
    ActorFound(ActorFound),
    #[prost(message, tag = "14")]
    StreamClaimed(StreamClaimed),
    #[prost(message, tag = "15")]
    Output(Output),
    #[prost(message, tag = "16")]
    KillActor(KillActor),
    #[prost(message, tag = "17")]
    HandleReleased(HandleReleased),
    #[prost(message, tag = "18")]
    Pull(ObjectIds),
    #[prost(message, tag = "19")]
    Forget(ObjectIds),
    #[prost(message, tag = "20")]
    Elsewhere(Elsewhere),
    #[prost(message, tag = "21")]
    Made(ObjectIds),
}

/// Arguments kept on another node, for a peer's link (`m::FromNode::Elsewhere`).
#[derive(Clone, PartialEq, Message)]
pub struct Elsewhere {
    #[prost(bytes = "vec", tag = "1")]
    pub ids: Vec<u8>,
    #[prost(fixed64, tag = "2")]
    pub node_id: u64,
}

/// A proxy gone, for a peer's link (`FromNode::HandleReleased`).
#[derive(Clone, PartialEq, Message)]
pub struct HandleReleased {
    #[prost(message, optional, tag = "1")]
    pub actor: Option<TaskId>,
    #[prost(uint64, tag = "2")]
    pub reaches: u64,
}

/// Worker output for a driver (`FromNode::Output`).
#[derive(Clone, PartialEq, Message)]
pub struct Output {
    #[prost(bool, tag = "1")]
    pub to_stderr: bool,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(message, optional, tag = "3")]
    pub task: Option<TaskId>,
}

/// The answer to `StreamClaim`: the first index the claimer gets, or an
/// error.
#[derive(Clone, PartialEq, Message)]
pub struct StreamClaimed {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub from: u32,
    #[prost(message, optional, tag = "3")]
    pub error: Option<Error>,
}

/// The answer to `CreateActor`: an error, or none for success.
#[derive(Clone, PartialEq, Message)]
pub struct ActorCreated {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}

/// The answer to `GetActor`: the actor and its class, or an error.
#[derive(Clone, PartialEq, Message)]
pub struct ActorFound {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, optional, tag = "2")]
    pub actor: Option<TaskId>,
    #[prost(string, tag = "3")]
    pub class: String,
    #[prost(message, optional, tag = "4")]
    pub error: Option<Error>,
    #[prost(bytes = "vec", tag = "5")]
    pub front: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct NodeInfo {
    #[prost(fixed64, tag = "1")]
    pub node_id: u64,
    #[prost(uint64, tag = "2")]
    pub inline_threshold: u64,
    #[prost(uint64, tag = "3")]
    pub store_capacity: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Allocated {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(oneof = "AllocatedResult", tags = "2, 3")]
    pub result: Option<AllocatedResult>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum AllocatedResult {
    #[prost(uint64, tag = "2")]
    Offset(u64),
    #[prost(message, tag = "3")]
    Error(Error),
}

/// A message that names one task (`CancelRunning`).
#[derive(Clone, Copy, PartialEq, Message)]
pub struct TaskRef {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(bool, tag = "2")]
    pub force: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Tasks {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<TaskEvent>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamItem {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "2")]
    pub index: u32,
    #[prost(message, optional, tag = "3")]
    pub value: Option<ObjectValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamEnd {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "2")]
    pub items: u32,
    #[prost(message, optional, tag = "3")]
    pub error: Option<Error>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct ItemAck {
    #[prost(message, optional, tag = "1")]
    pub task_id: Option<TaskId>,
    #[prost(uint32, tag = "2")]
    pub index: u32,
    #[prost(bool, tag = "3")]
    pub gone: bool,
}

impl From<m::FromNode> for FromNode {
    fn from(msg: m::FromNode) -> Self {
        use FromNodeKind as K;
        let kind = match msg {
            m::FromNode::Welcome(i) => K::Welcome(NodeInfo {
                node_id: i.node_id.0,
                inline_threshold: i.inline_threshold,
                store_capacity: i.store_capacity,
            }),
            m::FromNode::Execute(spec) => K::Execute((*spec).into()),
            m::FromNode::ObjectReady { id, value } => {
                K::ObjectReady(ObjectMessage { id: Some(id.into()), value: Some(value.into()) })
            }
            m::FromNode::Allocated { req, result } => K::Allocated(Allocated {
                req,
                result: Some(match result {
                    Ok(offset) => AllocatedResult::Offset(offset),
                    Err(e) => AllocatedResult::Error(e.into()),
                }),
            }),
            m::FromNode::CancelRunning { task_id, force } => {
                K::CancelRunning(TaskRef { task_id: Some(task_id.into()), force })
            }
            m::FromNode::Revoke { task_ids: ids } => K::Revoke(task_ids(ids)),
            m::FromNode::KillActor { actor, no_restart } => {
                K::KillActor(KillActor { actor: Some(actor.0.into()), no_restart })
            }
            m::FromNode::HandleReleased { actor, reaches } => {
                K::HandleReleased(HandleReleased { actor: Some(actor.0.into()), reaches })
            }
            m::FromNode::Pull(ids) => K::Pull(object_ids(ids)),
            m::FromNode::Forget(ids) => K::Forget(object_ids(ids)),
            m::FromNode::Made(ids) => K::Made(object_ids(ids)),
            m::FromNode::Elsewhere { ids, node } => {
                K::Elsewhere(Elsewhere { ids: object_ids(ids).ids, node_id: node.0 })
            }
            m::FromNode::Tasks { req, events } => {
                K::Tasks(Tasks { req, events: events.into_iter().map(Into::into).collect() })
            }
            m::FromNode::StreamItem { task_id, index, value } => {
                K::StreamItem(StreamItem { task_id: Some(task_id.into()), index, value: value.map(Into::into) })
            }
            m::FromNode::StreamEnd { task_id, items, error } => {
                K::StreamEnd(StreamEnd { task_id: Some(task_id.into()), items, error: error.map(Into::into) })
            }
            m::FromNode::ItemAck { task_id, index, gone } => {
                K::ItemAck(ItemAck { task_id: Some(task_id.into()), index, gone })
            }
            m::FromNode::Rejected(e) => K::Rejected(e.into()),
            m::FromNode::ActorCreated { req, result } => {
                K::ActorCreated(ActorCreated { req, error: result.err().map(Into::into) })
            }
            m::FromNode::Output { to_stderr, text, task } => {
                K::Output(Output { to_stderr, text, task: task.map(Into::into) })
            }
            m::FromNode::StreamClaimed { req, result } => K::StreamClaimed(match result {
                Ok(from) => StreamClaimed { req, from, error: None },
                Err(e) => StreamClaimed { req, from: 0, error: Some(e.into()) },
            }),
            m::FromNode::ActorFound { req, result } => K::ActorFound(match result {
                Ok((actor, class, front)) => ActorFound { req, actor: Some(actor.0.into()), class, error: None, front },
                Err(e) => {
                    ActorFound { req, actor: None, class: String::new(), error: Some(e.into()), front: Vec::new() }
                }
            }),
        };
        FromNode { kind: Some(kind) }
    }
}

impl TryFrom<FromNode> for m::FromNode {
    type Error = FrameError;

    fn try_from(msg: FromNode) -> Result<Self, FrameError> {
        use FromNodeKind as K;
        Ok(match required(msg.kind, "message kind (unknown to this build?)")? {
            K::Welcome(i) => m::FromNode::Welcome(m::NodeInfo {
                node_id: c::NodeId(i.node_id),
                inline_threshold: i.inline_threshold,
                store_capacity: i.store_capacity,
            }),
            K::Execute(spec) => m::FromNode::Execute(Box::new(spec.try_into()?)),
            K::ObjectReady(o) => m::FromNode::ObjectReady {
                id: object_id(o.id, "ObjectReady id")?,
                value: value(o.value, "ObjectReady value")?,
            },
            K::Allocated(a) => m::FromNode::Allocated {
                req: a.req,
                result: match required(a.result, "Allocated result")? {
                    AllocatedResult::Offset(o) => Ok(o),
                    AllocatedResult::Error(e) => Err(e.try_into()?),
                },
            },
            K::CancelRunning(t) => {
                m::FromNode::CancelRunning { task_id: task_id(t.task_id, "CancelRunning task id")?, force: t.force }
            }
            K::Revoke(ids) => m::FromNode::Revoke { task_ids: task_ids_from_bytes(&ids.ids, "revoked task ids")? },
            K::KillActor(k) => m::FromNode::KillActor {
                actor: c::ActorId(task_id(k.actor, "KillActor actor")?),
                no_restart: k.no_restart,
            },
            K::HandleReleased(h) => m::FromNode::HandleReleased {
                actor: c::ActorId(task_id(h.actor, "HandleReleased actor")?),
                reaches: h.reaches,
            },
            K::Pull(ids) => m::FromNode::Pull(object_ids_from_bytes(&ids.ids, "pulled object ids")?),
            K::Forget(ids) => m::FromNode::Forget(object_ids_from_bytes(&ids.ids, "forgotten object ids")?),
            K::Made(ids) => m::FromNode::Made(object_ids_from_bytes(&ids.ids, "made object ids")?),
            K::Elsewhere(e) => m::FromNode::Elsewhere {
                ids: object_ids_from_bytes(&e.ids, "ids kept elsewhere")?,
                node: c::NodeId(e.node_id),
            },
            K::Tasks(t) => m::FromNode::Tasks {
                req: t.req,
                events: t.events.into_iter().map(TryInto::try_into).collect::<Result<_, FrameError>>()?,
            },
            K::StreamItem(s) => m::FromNode::StreamItem {
                task_id: task_id(s.task_id, "StreamItem task id")?,
                index: s.index,
                value: s.value.map(TryInto::try_into).transpose()?,
            },
            K::StreamEnd(s) => m::FromNode::StreamEnd {
                task_id: task_id(s.task_id, "StreamEnd task id")?,
                items: s.items,
                error: s.error.map(TryInto::try_into).transpose()?,
            },
            K::ItemAck(a) => {
                m::FromNode::ItemAck { task_id: task_id(a.task_id, "ItemAck task id")?, index: a.index, gone: a.gone }
            }
            K::Rejected(e) => m::FromNode::Rejected(error(Some(e), "rejection")?),
            K::ActorCreated(a) => m::FromNode::ActorCreated {
                req: a.req,
                result: match a.error {
                    None => Ok(()),
                    Some(e) => Err(e.try_into()?),
                },
            },
            K::ActorFound(a) => m::FromNode::ActorFound {
                req: a.req,
                result: match a.error {
                    Some(e) => Err(e.try_into()?),
                    None => Ok((c::ActorId(task_id(a.actor, "ActorFound actor")?), a.class, a.front)),
                },
            },
            K::Output(o) => m::FromNode::Output { to_stderr: o.to_stderr, text: o.text, task: o.task.map(Into::into) },
            K::StreamClaimed(c) => m::FromNode::StreamClaimed {
                req: c.req,
                result: match c.error {
                    Some(e) => Err(e.try_into()?),
                    None => Ok(c.from),
                },
            },
        })
    }
}
