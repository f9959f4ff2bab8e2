//! The hot messages, encoded and decoded straight between the domain types
//! of [`crate::message`] and bytes: a task spec (`ToNode::Submit`,
//! `FromNode::Execute`), a task's end (`ToNode::TaskDone`), a generator's
//! item (`ToNode::ReportItem`), and an object
//! with its value (`ToNode::Put`, `FromNode::ObjectReady`, encoding only).
//!
//! The schema is still the derived structs of [`crate::wire`]; the bytes
//! written here are exactly theirs (same tags, fields in tag order, proto3
//! defaults left out; `direct_tests` compares byte for byte). Reading
//! follows prost's rules: the last value of a scalar wins, a message field
//! met twice is merged, a repeated field appends, an unknown field is
//! skipped, a known one with the wrong wire type fails; and it runs the same
//! checks as `wire`'s conversions, in the same order.
//!
//! What this saves is building the whole wire tree and converting it: a
//! spec's arguments and a task's returned values go into their domain
//! vectors as they are read, and are written from the domain values. One
//! argument or value is read into its wire struct (which allocates nothing
//! of its own) with its inline bytes copied once, straight from the frame.
//! Ids and `Shm` are written through their wire structs (no allocation);
//! rare parts (errors, retry policies other than none, actor creation) are
//! built as wire structs as before.

use crate::frame::FrameError;
use crate::message as m;
use crate::wire as w;
use bytes::{Buf, BufMut};
use ferroray_common as c;
use prost::encoding::{self as pe, encode_key, encode_varint, encoded_len_varint, key_len, DecodeContext, WireType};
use prost::{DecodeError, Message};
use std::collections::BTreeMap;

// ---- encoding: lengths and writers, one pair per message ----

/// Bytes of a length-delimited field of `len` bytes under `tag`.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_head(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A proto3 string or bytes field: left out when empty.
fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        delimited_len(tag, b.len())
    }
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut impl BufMut) {
    if !b.is_empty() {
        put_head(tag, b.len(), buf);
        buf.put_slice(b);
    }
}

/// A proto3 `uint32`: left out when zero.
fn u32_len(tag: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        pe::uint32::encoded_len(tag, &v)
    }
}

fn put_u32(tag: u32, v: u32, buf: &mut impl BufMut) {
    if v != 0 {
        pe::uint32::encode(tag, &v, buf);
    }
}

/// A value encoding (an enum): left out when 0 (`Rust`).
fn encoding_len(tag: u32, e: m::Encoding) -> usize {
    let v = w::encoding_to_wire(e);
    if v == 0 {
        0
    } else {
        pe::int32::encoded_len(tag, &v)
    }
}

fn put_encoding(tag: u32, e: m::Encoding, buf: &mut impl BufMut) {
    let v = w::encoding_to_wire(e);
    if v != 0 {
        pe::int32::encode(tag, &v, buf);
    }
}

fn task_id_len(tag: u32, t: c::TaskId) -> usize {
    pe::message::encoded_len(tag, &w::TaskId::from(t))
}

fn put_task_id(tag: u32, t: c::TaskId, buf: &mut impl BufMut) {
    pe::message::encode(tag, &w::TaskId::from(t), buf);
}

fn object_id_len(tag: u32, o: c::ObjectId) -> usize {
    pe::message::encoded_len(tag, &w::ObjectId::from(o))
}

fn put_object_id(tag: u32, o: c::ObjectId, buf: &mut impl BufMut) {
    pe::message::encode(tag, &w::ObjectId::from(o), buf);
}

/// A list of object ids: one `bytes` field of 20-byte records, written
/// straight from the list (left out when empty).
fn object_ids_len(tag: u32, ids: &[c::ObjectId]) -> usize {
    if ids.is_empty() {
        0
    } else {
        delimited_len(tag, ids.len() * w::OBJECT_ID_BYTES)
    }
}

fn put_object_ids(tag: u32, ids: &[c::ObjectId], buf: &mut impl BufMut) {
    if ids.is_empty() {
        return;
    }
    put_head(tag, ids.len() * w::OBJECT_ID_BYTES, buf);
    for id in ids {
        buf.put_u64_le(id.task.submitter.0);
        buf.put_u64_le(id.task.seq);
        buf.put_u32_le(id.index);
    }
}

/// A payload as the first cases of a `oneof` (inline bytes at tag 1, always
/// written; shared memory at tag 2).
fn payload_len(p: &m::Payload) -> usize {
    match p {
        m::Payload::Inline(b) => delimited_len(1, b.len()),
        m::Payload::Shm { offset, len } => pe::message::encoded_len(2, &w::Shm { offset: *offset, len: *len }),
    }
}

fn put_payload(p: &m::Payload, buf: &mut impl BufMut) {
    match p {
        m::Payload::Inline(b) => {
            put_head(1, b.len(), buf);
            buf.put_slice(b);
        }
        m::Payload::Shm { offset, len } => pe::message::encode(2, &w::Shm { offset: *offset, len: *len }, buf),
    }
}

/// A rare part built as its wire struct (an error).
fn error_len(tag: u32, e: &c::Error) -> usize {
    pe::message::encoded_len(tag, &w::Error::from(e.clone()))
}

fn put_error(tag: u32, e: &c::Error, buf: &mut impl BufMut) {
    pe::message::encode(tag, &w::Error::from(e.clone()), buf);
}

/// [`w::ObjectValue`]'s body.
fn value_len(v: &m::ObjectValue) -> usize {
    match v {
        m::ObjectValue::Data { payload, encoding, contained } => {
            payload_len(payload) + object_ids_len(4, contained) + encoding_len(5, *encoding)
        }
        m::ObjectValue::Error(e) => error_len(3, e),
    }
}

fn put_value(v: &m::ObjectValue, buf: &mut impl BufMut) {
    match v {
        m::ObjectValue::Data { payload, encoding, contained } => {
            put_payload(payload, buf);
            put_object_ids(4, contained, buf);
            put_encoding(5, *encoding, buf);
        }
        m::ObjectValue::Error(e) => put_error(3, e, buf),
    }
}

fn put_value_field(tag: u32, v: &m::ObjectValue, buf: &mut impl BufMut) {
    put_head(tag, value_len(v), buf);
    put_value(v, buf);
}

/// [`w::ResolvedObject`]'s body.
fn resolved_len(id: c::ObjectId, payload: &m::Payload) -> usize {
    payload_len(payload) + object_id_len(3, id)
}

/// [`w::TaskArg`]'s body.
fn arg_len(a: &m::TaskArg) -> usize {
    match a {
        m::TaskArg::Value { payload, encoding } => payload_len(payload) + encoding_len(5, *encoding),
        // The encoding of a ref is `Rust`, 0: left out.
        m::TaskArg::Ref(id) => object_id_len(3, *id),
        m::TaskArg::Object { id, payload, encoding } => {
            delimited_len(4, resolved_len(*id, payload)) + encoding_len(5, *encoding)
        }
    }
}

fn put_arg(a: &m::TaskArg, buf: &mut impl BufMut) {
    match a {
        m::TaskArg::Value { payload, encoding } => {
            put_payload(payload, buf);
            put_encoding(5, *encoding, buf);
        }
        m::TaskArg::Ref(id) => put_object_id(3, *id, buf),
        m::TaskArg::Object { id, payload, encoding } => {
            put_head(4, resolved_len(*id, payload), buf);
            put_payload(payload, buf);
            put_object_id(3, *id, buf);
            put_encoding(5, *encoding, buf);
        }
    }
}

/// The function `oneof` (Rust at tag 2, Python at 12).
fn function_len(f: &m::FunctionDescriptor) -> usize {
    match f {
        m::FunctionDescriptor::Rust { name } => delimited_len(2, bytes_len(1, name.as_bytes())),
        m::FunctionDescriptor::Python { module, qualname, function, pickled } => {
            delimited_len(12, python_function_len(module, qualname, *function, pickled))
        }
    }
}

fn python_function_len(module: &str, qualname: &str, function: Option<c::FunctionId>, pickled: &[u8]) -> usize {
    bytes_len(1, module.as_bytes())
        + bytes_len(2, qualname.as_bytes())
        + bytes_len(3, pickled)
        + function.map_or(0, |f| task_id_len(4, c::TaskId { submitter: f.exporter, seq: f.seq }))
}

fn put_function(f: &m::FunctionDescriptor, buf: &mut impl BufMut) {
    match f {
        m::FunctionDescriptor::Rust { name } => {
            put_head(2, bytes_len(1, name.as_bytes()), buf);
            put_bytes(1, name.as_bytes(), buf);
        }
        m::FunctionDescriptor::Python { module, qualname, function, pickled } => {
            put_head(12, python_function_len(module, qualname, *function, pickled), buf);
            put_bytes(1, module.as_bytes(), buf);
            put_bytes(2, qualname.as_bytes(), buf);
            put_bytes(3, pickled, buf);
            if let Some(f) = function {
                put_task_id(4, c::TaskId { submitter: f.exporter, seq: f.seq }, buf);
            }
        }
    }
}

/// The returns `oneof` (fixed at tag 5, always written; streaming 13;
/// dynamic 14).
fn returns_len(r: m::ReturnKind) -> usize {
    match r {
        m::ReturnKind::Fixed(n) => pe::uint32::encoded_len(5, &n),
        m::ReturnKind::Streaming { backpressure } => {
            delimited_len(13, backpressure.map_or(0, |b| pe::uint32::encoded_len(1, &b)))
        }
        m::ReturnKind::Dynamic => delimited_len(14, 0),
    }
}

fn put_returns(r: m::ReturnKind, buf: &mut impl BufMut) {
    match r {
        m::ReturnKind::Fixed(n) => pe::uint32::encode(5, &n, buf),
        m::ReturnKind::Streaming { backpressure } => {
            put_head(13, backpressure.map_or(0, |b| pe::uint32::encoded_len(1, &b)), buf);
            if let Some(b) = backpressure {
                pe::uint32::encode(1, &b, buf);
            }
        }
        m::ReturnKind::Dynamic => put_head(14, 0, buf),
    }
}

fn resources_len(r: &c::ResourceSet) -> usize {
    pe::btree_map::encoded_len(pe::string::encoded_len, pe::sint64::encoded_len, 6, r.fixed())
}

/// The retry policy: absent for none (the common case); otherwise built as
/// its wire struct.
fn retry_len(r: &c::RetryExceptions) -> usize {
    match r {
        c::RetryExceptions::None => 0,
        r => w::retry_to_wire(r.clone()).map_or(0, |r| pe::message::encoded_len(8, &r)),
    }
}

fn put_retry(r: &c::RetryExceptions, buf: &mut impl BufMut) {
    if !matches!(r, c::RetryExceptions::None) {
        if let Some(r) = w::retry_to_wire(r.clone()) {
            pe::message::encode(8, &r, buf);
        }
    }
}

/// The actor `oneof`: a call is an id (tag 16); a creation (rare) is built
/// as its wire struct.
fn actor_len(a: &Option<m::ActorTask>) -> usize {
    match a {
        None => 0,
        Some(m::ActorTask::Call { actor }) => task_id_len(16, actor.0),
        Some(a) => w::actor_task_to_wire(a.clone()).encoded_len(),
    }
}

fn put_actor(a: &Option<m::ActorTask>, buf: &mut impl BufMut) {
    match a {
        None => {}
        Some(m::ActorTask::Call { actor }) => put_task_id(16, actor.0, buf),
        Some(a) => w::actor_task_to_wire(a.clone()).encode(buf),
    }
}

/// [`w::TaskSpec`]'s body.
fn spec_len(s: &m::TaskSpec) -> usize {
    task_id_len(1, s.task_id)
        + function_len(&s.function)
        + s.args.iter().map(|a| delimited_len(3, arg_len(a))).sum::<usize>()
        + object_ids_len(4, &s.contained)
        + returns_len(s.returns)
        + resources_len(&s.resources)
        + u32_len(7, s.max_retries)
        + retry_len(&s.retry_exceptions)
        + s.parent.map_or(0, |p| task_id_len(9, p))
        + (if s.enable_events { pe::bool::encoded_len(10, &true) } else { 0 })
        + u32_len(11, s.attempt)
        + actor_len(&s.actor)
}

fn put_spec_field(tag: u32, s: &m::TaskSpec, buf: &mut impl BufMut) {
    put_head(tag, spec_len(s), buf);
    put_task_id(1, s.task_id, buf);
    put_function(&s.function, buf);
    for a in &s.args {
        put_head(3, arg_len(a), buf);
        put_arg(a, buf);
    }
    put_object_ids(4, &s.contained, buf);
    put_returns(s.returns, buf);
    pe::btree_map::encode(
        pe::string::encode,
        pe::string::encoded_len,
        pe::sint64::encode,
        pe::sint64::encoded_len,
        6,
        s.resources.fixed(),
        buf,
    );
    put_u32(7, s.max_retries, buf);
    put_retry(&s.retry_exceptions, buf);
    if let Some(p) = s.parent {
        put_task_id(9, p, buf);
    }
    if s.enable_events {
        pe::bool::encode(10, &true, buf);
    }
    put_u32(11, s.attempt, buf);
    put_actor(&s.actor, buf);
}

/// [`w::TaskDone`]'s body.
fn task_done_len(task_id: c::TaskId, attempt: u32, outcome: &m::TaskOutcome) -> usize {
    task_id_len(1, task_id)
        + u32_len(2, attempt)
        + match outcome {
            m::TaskOutcome::Returned(values) => {
                delimited_len(3, values.iter().map(|v| delimited_len(1, value_len(v))).sum())
            }
            m::TaskOutcome::Streamed { items } => pe::uint32::encoded_len(4, items),
            m::TaskOutcome::Failed(e) => error_len(5, e),
        }
}

fn put_task_done(task_id: c::TaskId, attempt: u32, outcome: &m::TaskOutcome, buf: &mut impl BufMut) {
    put_task_id(1, task_id, buf);
    put_u32(2, attempt, buf);
    match outcome {
        m::TaskOutcome::Returned(values) => {
            put_head(3, values.iter().map(|v| delimited_len(1, value_len(v))).sum(), buf);
            for v in values {
                put_value_field(1, v, buf);
            }
        }
        m::TaskOutcome::Streamed { items } => pe::uint32::encode(4, items, buf),
        m::TaskOutcome::Failed(e) => put_error(5, e, buf),
    }
}

/// [`w::ObjectMessage`] under `tag`.
fn put_object_message(tag: u32, id: c::ObjectId, value: &m::ObjectValue, buf: &mut impl BufMut) {
    put_head(tag, object_id_len(1, id) + delimited_len(2, value_len(value)), buf);
    put_object_id(1, id, buf);
    put_value_field(2, value, buf);
}

/// [`w::ReportItem`]'s body.
fn report_item_len(task_id: c::TaskId, attempt: u32, index: u32, value: &m::ObjectValue, digest: u64) -> usize {
    task_id_len(1, task_id)
        + u32_len(2, attempt)
        + u32_len(3, index)
        + delimited_len(4, value_len(value))
        + (if digest == 0 { 0 } else { pe::fixed64::encoded_len(5, &digest) })
}

/// Appends `msg`'s protobuf body to `buf`: the hot messages directly, the
/// others through [`w::ToNode`].
pub(crate) fn encode_to_node(msg: m::ToNode, buf: &mut Vec<u8>) -> Result<(), prost::EncodeError> {
    match &msg {
        m::ToNode::Submit(spec) => put_spec_field(2, spec, buf),
        m::ToNode::Put { id, value } => put_object_message(3, *id, value, buf),
        m::ToNode::TaskDone { task_id, attempt, outcome } => {
            put_head(8, task_done_len(*task_id, *attempt, outcome), buf);
            put_task_done(*task_id, *attempt, outcome, buf);
        }
        m::ToNode::ReportItem { task_id, attempt, index, value, digest } => {
            put_head(16, report_item_len(*task_id, *attempt, *index, value, *digest), buf);
            put_task_id(1, *task_id, buf);
            put_u32(2, *attempt, buf);
            put_u32(3, *index, buf);
            put_value_field(4, value, buf);
            if *digest != 0 {
                pe::fixed64::encode(5, digest, buf);
            }
        }
        _ => return w::ToNode::from(msg).encode(buf),
    }
    Ok(())
}

/// [`encode_to_node`] for the node's messages.
pub(crate) fn encode_from_node(msg: m::FromNode, buf: &mut Vec<u8>) -> Result<(), prost::EncodeError> {
    match &msg {
        m::FromNode::Execute(spec) => put_spec_field(2, spec, buf),
        m::FromNode::ObjectReady { id, value } => put_object_message(3, *id, value, buf),
        _ => return w::FromNode::from(msg).encode(buf),
    }
    Ok(())
}

// ---- decoding ----
//
// Each hot message has a builder: its fields as they are read, in domain
// form where that saves work, merged by prost's rules. A builder implements
// `Message` only to be read by prost's `message::merge` (which checks the
// wire type, the length and the nesting limit); it is never written, so it
// encodes as nothing.

macro_rules! decode_only {
    ($t:ty) => {
        fn encode_raw(&self, _buf: &mut impl BufMut) {}

        fn encoded_len(&self) -> usize {
            0
        }

        fn clear(&mut self) {
            *self = <$t>::default();
        }
    };
}

/// The `$case` of the oneof in `$field`, made the current case first (with
/// value `$new`, when another case or none was set), to merge into: what
/// prost's generated `merge` of a oneof does.
macro_rules! case_mut {
    ($field:expr, $case:path, $new:expr) => {{
        if !matches!($field, Some($case(_))) {
            $field = Some($case($new));
        }
        match &mut $field {
            Some($case(v)) => v,
            _ => unreachable!("the case was set just above"),
        }
    }};
}

/// A `bytes` field read with one copy, straight from the frame into `v`
/// (prost's `bytes::merge` takes a counted slice of the frame first). The
/// last value wins, as there. Anything else (the wrong wire type, a length
/// past the end, a buffer in pieces) goes to prost's own, for its errors.
fn merge_bytes(
    wire_type: WireType,
    v: &mut Vec<u8>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    if wire_type == WireType::LengthDelimited {
        let mut chunk = buf.chunk();
        let whole = chunk.len() == buf.remaining();
        if let Ok(len) = pe::decode_varint(&mut chunk) {
            if whole && len <= chunk.len() as u64 {
                let head = buf.remaining() - chunk.len();
                v.clear();
                v.extend_from_slice(&chunk[..len as usize]);
                buf.advance(head + len as usize);
                return Ok(());
            }
        }
    }
    pe::bytes::merge(wire_type, v, buf, ctx)
}

/// The leaf messages read in place: their wire struct (no allocation of
/// its own), its inline bytes read with [`merge_bytes`]. Each `oneof` case
/// met again merges into the one there; another case replaces it.
macro_rules! leaf {
    ($name:ident, $wire:ty) => {
        struct $name<'a>(&'a mut $wire);

        impl Message for $name<'_> {
            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                self.read(tag, wire_type, buf, ctx)
            }

            fn encode_raw(&self, _buf: &mut impl BufMut) {}

            fn encoded_len(&self) -> usize {
                0
            }

            fn clear(&mut self) {
                *self.0 = <$wire>::default();
            }
        }
    };
}

leaf!(Arg, w::TaskArg);
leaf!(Resolved, w::ResolvedObject);
leaf!(Value, w::ObjectValue);

impl Arg<'_> {
    fn read(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use w::TaskArgKind as K;
        let a = &mut *self.0;
        match tag {
            1 => merge_bytes(wire_type, case_mut!(a.kind, K::Inline, Vec::new()), buf, ctx),
            2 | 3 => K::merge(&mut a.kind, tag, wire_type, buf, ctx),
            4 => {
                let o = case_mut!(a.kind, K::Object, w::ResolvedObject::default());
                pe::message::merge(wire_type, &mut Resolved(o), buf, ctx)
            }
            5 => pe::int32::merge(wire_type, &mut a.encoding, buf, ctx),
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }
}

impl Resolved<'_> {
    fn read(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use w::PayloadKind as K;
        let o = &mut *self.0;
        match tag {
            1 => merge_bytes(wire_type, case_mut!(o.payload, K::Inline, Vec::new()), buf, ctx),
            2 => K::merge(&mut o.payload, tag, wire_type, buf, ctx),
            3 => pe::message::merge(wire_type, o.id.get_or_insert_with(Default::default), buf, ctx),
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }
}

impl Value<'_> {
    fn read(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use w::ObjectValueKind as K;
        let v = &mut *self.0;
        match tag {
            1 => merge_bytes(wire_type, case_mut!(v.kind, K::Inline, Vec::new()), buf, ctx),
            2 | 3 => K::merge(&mut v.kind, tag, wire_type, buf, ctx),
            4 => merge_bytes(wire_type, &mut v.contained, buf, ctx),
            5 => pe::int32::merge(wire_type, &mut v.encoding, buf, ctx),
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }
}

/// A task spec as it is read: arguments converted as they arrive (the first
/// bad one kept for the checks at the end, in `wire`'s order).
#[derive(Default)]
struct SpecBuilder {
    task_id: Option<w::TaskId>,
    function: Option<w::FunctionKind>,
    args: Vec<m::TaskArg>,
    bad_arg: Option<FrameError>,
    contained: Vec<u8>,
    returns: Option<w::ReturnKind>,
    resources: BTreeMap<String, i64>,
    max_retries: u32,
    retry_exceptions: Option<w::RetryExceptions>,
    parent: Option<w::TaskId>,
    enable_events: bool,
    attempt: u32,
    actor: Option<w::ActorTaskKind>,
}

impl Message for SpecBuilder {
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => pe::message::merge(wire_type, self.task_id.get_or_insert_with(Default::default), buf, ctx),
            2 | 12 => w::FunctionKind::merge(&mut self.function, tag, wire_type, buf, ctx),
            3 => {
                let mut arg = w::TaskArg::default();
                pe::message::merge(wire_type, &mut Arg(&mut arg), buf, ctx)?;
                match w::arg_from_wire(arg) {
                    Ok(a) => self.args.push(a),
                    Err(e) => {
                        self.bad_arg.get_or_insert(e);
                    }
                }
                Ok(())
            }
            4 => merge_bytes(wire_type, &mut self.contained, buf, ctx),
            5 | 13 | 14 => w::ReturnKind::merge(&mut self.returns, tag, wire_type, buf, ctx),
            // The derived code checks a map's wire type itself; so here.
            6 => pe::check_wire_type(WireType::LengthDelimited, wire_type).and_then(|()| {
                pe::btree_map::merge(pe::string::merge, pe::sint64::merge, &mut self.resources, buf, ctx)
            }),
            7 => pe::uint32::merge(wire_type, &mut self.max_retries, buf, ctx),
            8 => pe::message::merge(wire_type, self.retry_exceptions.get_or_insert_with(Default::default), buf, ctx),
            9 => pe::message::merge(wire_type, self.parent.get_or_insert_with(Default::default), buf, ctx),
            10 => pe::bool::merge(wire_type, &mut self.enable_events, buf, ctx),
            11 => pe::uint32::merge(wire_type, &mut self.attempt, buf, ctx),
            15 | 16 => w::ActorTaskKind::merge(&mut self.actor, tag, wire_type, buf, ctx),
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }

    decode_only!(SpecBuilder);
}

impl SpecBuilder {
    fn finish(self) -> Result<m::TaskSpec, FrameError> {
        w::spec_from_parts(w::SpecParts {
            task_id: self.task_id,
            function: self.function,
            args: match self.bad_arg {
                Some(e) => Err(e),
                None => Ok(self.args),
            },
            contained: &self.contained,
            returns: self.returns,
            resources: self.resources,
            max_retries: self.max_retries,
            retry_exceptions: self.retry_exceptions,
            parent: self.parent,
            enable_events: self.enable_events,
            attempt: self.attempt,
            actor: self.actor,
        })
    }
}

/// `Returned`: values converted as they arrive.
#[derive(Default)]
struct ReturnedBuilder {
    values: Vec<m::ObjectValue>,
    bad: Option<FrameError>,
}

impl Message for ReturnedBuilder {
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                let mut v = w::ObjectValue::default();
                pe::message::merge(wire_type, &mut Value(&mut v), buf, ctx)?;
                match m::ObjectValue::try_from(v) {
                    Ok(v) => self.values.push(v),
                    Err(e) => {
                        self.bad.get_or_insert(e);
                    }
                }
                Ok(())
            }
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }

    decode_only!(ReturnedBuilder);
}

/// [`w::TaskOutcome`], with the returned values already converted.
enum OutcomeBuilder {
    Returned(ReturnedBuilder),
    Streamed(u32),
    Failed(w::Error),
}

#[derive(Default)]
struct TaskDoneBuilder {
    task_id: Option<w::TaskId>,
    attempt: u32,
    outcome: Option<OutcomeBuilder>,
}

impl Message for TaskDoneBuilder {
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // A `oneof` case met again merges into the one there, as prost does;
        // another case replaces it.
        match tag {
            1 => pe::message::merge(wire_type, self.task_id.get_or_insert_with(Default::default), buf, ctx),
            2 => pe::uint32::merge(wire_type, &mut self.attempt, buf, ctx),
            3 => {
                if !matches!(self.outcome, Some(OutcomeBuilder::Returned(_))) {
                    self.outcome = Some(OutcomeBuilder::Returned(ReturnedBuilder::default()));
                }
                match &mut self.outcome {
                    Some(OutcomeBuilder::Returned(r)) => pe::message::merge(wire_type, r, buf, ctx),
                    _ => Ok(()),
                }
            }
            4 => {
                let mut items = 0;
                pe::uint32::merge(wire_type, &mut items, buf, ctx)?;
                self.outcome = Some(OutcomeBuilder::Streamed(items));
                Ok(())
            }
            5 => {
                if !matches!(self.outcome, Some(OutcomeBuilder::Failed(_))) {
                    self.outcome = Some(OutcomeBuilder::Failed(w::Error::default()));
                }
                match &mut self.outcome {
                    Some(OutcomeBuilder::Failed(e)) => pe::message::merge(wire_type, e, buf, ctx),
                    _ => Ok(()),
                }
            }
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }

    decode_only!(TaskDoneBuilder);
}

impl TaskDoneBuilder {
    fn finish(self) -> Result<m::ToNode, FrameError> {
        Ok(m::ToNode::TaskDone {
            task_id: w::task_id(self.task_id, "TaskDone task id")?,
            attempt: self.attempt,
            outcome: match w::required(self.outcome, "TaskDone outcome")? {
                OutcomeBuilder::Returned(r) => match r.bad {
                    Some(e) => return Err(e),
                    None => m::TaskOutcome::Returned(r.values),
                },
                OutcomeBuilder::Streamed(items) => m::TaskOutcome::Streamed { items },
                OutcomeBuilder::Failed(e) => m::TaskOutcome::Failed(e.try_into()?),
            },
        })
    }
}

/// A generator's item: its value read in place.
#[derive(Default)]
struct ReportItemBuilder {
    task_id: Option<w::TaskId>,
    attempt: u32,
    index: u32,
    value: Option<w::ObjectValue>,
    digest: u64,
}

impl Message for ReportItemBuilder {
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => pe::message::merge(wire_type, self.task_id.get_or_insert_with(Default::default), buf, ctx),
            2 => pe::uint32::merge(wire_type, &mut self.attempt, buf, ctx),
            3 => pe::uint32::merge(wire_type, &mut self.index, buf, ctx),
            4 => pe::message::merge(wire_type, &mut Value(self.value.get_or_insert_with(Default::default)), buf, ctx),
            5 => pe::fixed64::merge(wire_type, &mut self.digest, buf, ctx),
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }

    decode_only!(ReportItemBuilder);
}

impl ReportItemBuilder {
    fn finish(self) -> Result<m::ToNode, FrameError> {
        Ok(m::ToNode::ReportItem {
            task_id: w::task_id(self.task_id, "ReportItem task id")?,
            attempt: self.attempt,
            index: self.index,
            value: w::value(self.value, "ReportItem value")?,
            digest: self.digest,
        })
    }
}

/// The tags of [`w::ToNodeKind`] and [`w::FromNodeKind`] (their `merge`
/// must see no other). Kept with the `tags` of `w::ToNode` and
/// `w::FromNode`: a case added there and not here is skipped, which the
/// round-trip tests of every message catch.
const TO_NODE_TAGS: std::ops::RangeInclusive<u32> = 1..=29;
const FROM_NODE_TAGS: std::ops::RangeInclusive<u32> = 1..=21;

// One per frame being read, on the stack: boxing the spec would cost an
// allocation per message.
#[allow(clippy::large_enum_variant)]
enum ToNodeDirect {
    Submit(SpecBuilder),
    TaskDone(TaskDoneBuilder),
    ReportItem(ReportItemBuilder),
}

/// A [`m::ToNode`] as it is read: a hot case in its builder, any other in
/// its wire struct (only one of the two is set: a later case replaces an
/// earlier one).
#[derive(Default)]
struct ToNodeBuilder {
    direct: Option<ToNodeDirect>,
    other: Option<w::ToNodeKind>,
}

impl Message for ToNodeBuilder {
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            2 => {
                self.other = None;
                pe::message::merge(
                    wire_type,
                    case_mut!(self.direct, ToNodeDirect::Submit, SpecBuilder::default()),
                    buf,
                    ctx,
                )
            }
            8 => {
                self.other = None;
                pe::message::merge(
                    wire_type,
                    case_mut!(self.direct, ToNodeDirect::TaskDone, TaskDoneBuilder::default()),
                    buf,
                    ctx,
                )
            }
            16 => {
                self.other = None;
                pe::message::merge(
                    wire_type,
                    case_mut!(self.direct, ToNodeDirect::ReportItem, ReportItemBuilder::default()),
                    buf,
                    ctx,
                )
            }
            t if TO_NODE_TAGS.contains(&t) => {
                self.direct = None;
                w::ToNodeKind::merge(&mut self.other, tag, wire_type, buf, ctx)
            }
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }

    decode_only!(ToNodeBuilder);
}

enum FromNodeDirect {
    Execute(SpecBuilder),
}

/// [`ToNodeBuilder`] for the node's messages.
#[derive(Default)]
struct FromNodeBuilder {
    direct: Option<FromNodeDirect>,
    other: Option<w::FromNodeKind>,
}

impl Message for FromNodeBuilder {
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            2 => {
                self.other = None;
                let FromNodeDirect::Execute(s) =
                    self.direct.get_or_insert_with(|| FromNodeDirect::Execute(SpecBuilder::default()));
                pe::message::merge(wire_type, s, buf, ctx)
            }
            t if FROM_NODE_TAGS.contains(&t) => {
                self.direct = None;
                w::FromNodeKind::merge(&mut self.other, tag, wire_type, buf, ctx)
            }
            _ => pe::skip_field(wire_type, tag, buf, ctx),
        }
    }

    decode_only!(FromNodeBuilder);
}

fn decode_error(e: DecodeError) -> FrameError {
    FrameError::Malformed(e.to_string())
}

/// Decodes a body of [`m::ToNode`].
pub(crate) fn decode_to_node(body: impl Buf) -> Result<m::ToNode, FrameError> {
    let b = ToNodeBuilder::decode(body).map_err(decode_error)?;
    match (b.direct, b.other) {
        (Some(ToNodeDirect::Submit(s)), _) => Ok(m::ToNode::Submit(Box::new(s.finish()?))),
        (Some(ToNodeDirect::TaskDone(d)), _) => d.finish(),
        (Some(ToNodeDirect::ReportItem(r)), _) => r.finish(),
        (None, kind) => w::ToNode { kind }.try_into(),
    }
}

/// Decodes a body of [`m::FromNode`].
pub(crate) fn decode_from_node(body: impl Buf) -> Result<m::FromNode, FrameError> {
    let b = FromNodeBuilder::decode(body).map_err(decode_error)?;
    match (b.direct, b.other) {
        (Some(FromNodeDirect::Execute(s)), _) => Ok(m::FromNode::Execute(Box::new(s.finish()?))),
        (None, kind) => w::FromNode { kind }.try_into(),
    }
}
