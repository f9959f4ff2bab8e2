//! Values to bytes and back.
//!
//! Encoding, in three steps:
//! 1. Serialize into a `Vec` (`value::to_vec_below`: the value format lives
//!    in `ferroray_common::value`), collecting the object refs nested inside
//!    it, stopping if it reaches the node's inline threshold. Most values
//!    are small, and are done in this one pass.
//! 2. At or above the threshold, measure the value (`value::encoded_size`),
//!    ask the node for that much shared memory and serialize straight into
//!    it (no intermediate copy) through an `ArenaWriter`, whose helper thread
//!    maps the range a few MiB ahead of the copy and unmaps it behind
//!    (`ferroray_store::writer`).
//! 3. Hand back the payload with the nested refs' ids, and the nested handles
//!    themselves: the caller keeps those alive until the message that stores
//!    the value has been sent, so the node pins the nested objects before
//!    this process can drop its own references.
//!
//! Decoding a shared-memory value runs with the object's pin in a
//! thread-local, so that a [`Buffer`] inside it becomes a view of the shared
//! memory (kept pinned while the view lives) instead of a copy.

use crate::object_ref::RefInner;
use crate::worker::CoreWorker;
use bytes::Bytes;
use ferroray_common::{value, Error, ObjectId, Result};
use ferroray_protocol::{Encoding, ObjectValue, Payload};
use ferroray_store::Arena;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

thread_local! {
    static COLLECTOR: RefCell<Option<Vec<Arc<RefInner>>>> = const { RefCell::new(None) };
    static BACKING: RefCell<Option<Arc<ShmPin>>> = const { RefCell::new(None) };
    /// While fingerprinting a value: the distinct refs met so far, in order.
    static PLACEHOLDERS: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
}

/// Called by `ObjectRef`'s `Serialize`: while a value is fingerprinted, the
/// ordinal that stands for the ref (the same id gets the same ordinal).
pub(crate) fn placeholder(id: ObjectId) -> Option<u32> {
    PLACEHOLDERS.with(|p| {
        let mut p = p.borrow_mut();
        let seen = p.as_mut()?;
        Some(match seen.iter().position(|s| *s == id) {
            Some(i) => i as u32,
            None => {
                seen.push(id);
                (seen.len() - 1) as u32
            }
        })
    })
}

/// The fingerprint of a yielded value with refs inside: its serialization
/// with each distinct ref replaced by its ordinal of first appearance. A
/// retry yields the same data with new ids (its puts and sub-tasks are
/// new), and must match; other data, or another number or pattern of refs,
/// must not. Hashed whole (no sampling), streamed into the hasher.
pub(crate) fn placeholder_digest<T: Serialize + ?Sized>(v: &T) -> Option<u64> {
    use std::hash::Hasher;
    struct HashWriter<'a>(&'a mut std::collections::hash_map::DefaultHasher);
    impl std::io::Write for HashWriter<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.write(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(b"ferroray-refs");
    let prev = PLACEHOLDERS.with(|p| p.borrow_mut().replace(Vec::new()));
    let r = value::to_writer(v, HashWriter(&mut h));
    let seen = PLACEHOLDERS.with(|p| std::mem::replace(&mut *p.borrow_mut(), prev));
    r.ok()?;
    h.write_usize(seen.map_or(0, |s| s.len()));
    Some(h.finish())
}

/// Called by `ObjectRef`'s `Serialize`: notes a nested ref.
pub(crate) fn note_nested(inner: &Arc<RefInner>) {
    COLLECTOR.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push(inner.clone());
        }
    });
}

fn collecting<R>(f: impl FnOnce() -> R) -> (R, Vec<Arc<RefInner>>) {
    let prev = COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = f();
    let got = COLLECTOR.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev)).unwrap_or_default();
    (r, got)
}

/// An encoded value ready to be stored, with the nested handles to keep alive
/// until it has been sent. Dropped without being sent (the task failed after
/// making it), it gives its shared memory back.
pub struct ReturnValue {
    value: Option<ObjectValue>,
    keep: Vec<Arc<RefInner>>,
    /// The replay fingerprint, when it is not that of the bytes (see
    /// `placeholder_digest`).
    digest: Option<u64>,
}

impl ReturnValue {
    pub fn new(value: ObjectValue, keep: Vec<Arc<RefInner>>) -> Self {
        ReturnValue { value: Some(value), keep, digest: None }
    }

    pub(crate) fn has_refs(&self) -> bool {
        !self.keep.is_empty()
    }

    pub(crate) fn set_digest(&mut self, digest: Option<u64>) {
        self.digest = digest;
    }

    /// The fingerprint a retried generator's replay is compared by.
    pub(crate) fn digest(&self, arena: &Arena) -> u64 {
        self.digest.unwrap_or_else(|| digest(arena, self.value()))
    }

    pub fn error(e: Error) -> Self {
        Self::new(ObjectValue::Error(e), Vec::new())
    }

    pub fn value(&self) -> &ObjectValue {
        self.value.as_ref().expect("present until taken")
    }

    /// The value to send and the handles to drop after sending it.
    pub fn into_parts(mut self) -> (ObjectValue, Vec<Arc<RefInner>>) {
        let value = self.value.take().expect("present until taken");
        (value, std::mem::take(&mut self.keep))
    }
}

impl Drop for ReturnValue {
    fn drop(&mut self) {
        if let Some(ObjectValue::Data { payload: Payload::Shm { offset, .. }, .. }) = self.value.take() {
            if let Ok(core) = crate::global::core() {
                core.deallocate(offset);
            }
        }
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(core: &CoreWorker, v: &T) -> Result<ReturnValue> {
    // Below the inline threshold (most values), one pass; above it, the
    // pass stops at the threshold and the value is measured, then written.
    let threshold = core.info().inline_threshold;
    let (small, keep) = collecting(|| value::to_vec_below(v, threshold));
    let (payload, keep) = if let Some(bytes) = small? {
        (Payload::Inline(bytes), keep)
    } else {
        drop(keep);
        let (size, _) = collecting(|| value::encoded_size(v));
        let size = size?;
        let offset = core.allocate(size)?;
        let (written, keep) = collecting(|| {
            // SAFETY: the node gave this fresh range to this process alone;
            // nobody reads it before the value is sealed by our next message.
            unsafe { core.arena().write_with(offset, size, |w| value::to_writer(v, w)) }
                .map_err(Error::io)?
                .map_err(Error::from)
        });
        if let Err(e) = written {
            core.deallocate(offset);
            return Err(e);
        }
        (Payload::Shm { offset, len: size }, keep)
    };
    let mut contained: Vec<ObjectId> = keep.iter().map(|r| r.id).collect();
    contained.sort();
    contained.dedup();
    Ok(ReturnValue::new(ObjectValue::Data { payload, encoding: Encoding::Rust, contained }, keep))
}

/// Bytes a front encoded itself, tagged [`Encoding::Raw`]: inline below the
/// inline threshold, else copied once into shared memory. `keep` are the
/// refs the bytes name (held until the value is sent; the node keeps them
/// alive while the value lives).
pub(crate) fn encode_raw(core: &CoreWorker, bytes: &[u8], keep: Vec<Arc<RefInner>>) -> Result<ReturnValue> {
    let len = bytes.len() as u64;
    let payload = if len >= core.info().inline_threshold {
        let offset = core.allocate(len)?;
        // SAFETY: the node gave this fresh range to this process alone;
        // nobody reads it before the value is sealed by our next message.
        let written = unsafe { core.arena().write_with(offset, len, |w| std::io::Write::write_all(w, bytes)) };
        if let Err(e) = written.map_err(Error::io).and_then(|r| r.map_err(Error::io)) {
            core.deallocate(offset);
            return Err(e);
        }
        Payload::Shm { offset, len }
    } else {
        Payload::Inline(bytes.to_vec())
    };
    let mut contained: Vec<ObjectId> = keep.iter().map(|r| r.id).collect();
    contained.sort();
    contained.dedup();
    Ok(ReturnValue::new(ObjectValue::Data { payload, encoding: Encoding::Raw, contained }, keep))
}

/// Shared memory a front fills with a raw value itself (so that large
/// buffers are written once, straight from where they are): one fresh
/// allocation of `len` bytes, written through [`RawSlot::as_mut_ptr`], then
/// made a value by [`RawSlot::finish`]. Dropped unfinished, the memory goes
/// back.
///
/// The front writes through this process's own mapping of the arena, where
/// a page not mapped yet costs a fault on first touch (and zeroing, if the
/// store gave it back): for a slot of at least [`PREFAULT_MIN`], a helper
/// thread faults in such pages from the end backwards while the front
/// copies from the start (see [`Prefault`]).
pub struct RawSlot {
    /// First, so that it stops before the memory may go back.
    prefault: Option<Prefault>,
    value: ReturnValue,
    ptr: *mut u8,
    len: u64,
    /// Keeps the mapping `ptr` points into.
    _arena: Arc<Arena>,
}

// SAFETY: `ptr` points into this process's mapping of the arena (kept alive
// by `_arena`), to an allocation only this slot writes.
unsafe impl Send for RawSlot {}
// SAFETY: as above; `&RawSlot` gives only the address, and writing through
// it is the holder's contract (`as_mut_ptr`).
unsafe impl Sync for RawSlot {}

impl RawSlot {
    /// Reserves `len` bytes (at least 1) of the node's shared memory.
    pub fn reserve(len: u64) -> Result<RawSlot> {
        let core = crate::global::core()?;
        let len = len.max(1);
        let offset = core.allocate(len)?;
        let arena = core.arena().clone();
        // SAFETY: the node gave this fresh range to this process alone; only
        // this slot writes it, and nobody reads it before it is sealed.
        let ptr = match unsafe { arena.slice_mut(offset, len) } {
            Ok(s) => s.as_mut_ptr(),
            Err(e) => {
                core.deallocate(offset);
                return Err(Error::io(e));
            }
        };
        let value =
            ObjectValue::Data { payload: Payload::Shm { offset, len }, encoding: Encoding::Raw, contained: vec![] };
        let prefault = (len >= PREFAULT_MIN).then(|| Prefault::start(arena.clone(), offset, len)).flatten();
        Ok(RawSlot { prefault, value: ReturnValue::new(value, Vec::new()), ptr, len, _arena: arena })
    }

    /// Where to write the value: `len` bytes, valid until the slot is
    /// finished or dropped, to be written by one writer at a time.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` into the slot at `offset`, a large one on several
    /// threads at once (`ferroray_store::copy`); an error if it does not
    /// fit. Takes `&mut self`: one writer at a time.
    pub fn write_at(&mut self, offset: u64, src: &[u8]) -> Result<()> {
        let end = offset.checked_add(src.len() as u64).filter(|end| *end <= self.len);
        let Some(_) = end else {
            return Err(Error::InvalidOption(format!(
                "{} bytes at offset {offset} do not fit in a slot of {} bytes",
                src.len(),
                self.len
            )));
        };
        // SAFETY: `ptr..ptr + len` is this slot's range of the mapping that
        // `_arena` keeps alive, written only through this slot (`&mut self`),
        // and `offset + src.len() <= len` was checked above. A front that
        // also writes the slot through its own view of the address (Python's
        // `_serialization.dumps`) does not while this runs (it called it),
        // and nobody reads a slot before it is sealed; `src` is not in the
        // slot (`StoreSlot::_write_from` refuses a source inside it).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset as usize), src.len()) };
        ferroray_store::copy::copy_parallel(dst, src);
        Ok(())
    }

    /// The written value, naming the refs `nested` inside it.
    pub fn finish(mut self, nested: &[crate::ObjectRef<crate::RawValue>]) -> ReturnValue {
        drop(self.prefault.take());
        let keep: Vec<Arc<RefInner>> = nested.iter().map(|r| r.inner.clone()).collect();
        let mut contained: Vec<ObjectId> = keep.iter().map(|r| r.id).collect();
        contained.sort();
        contained.dedup();
        if let Some(ObjectValue::Data { contained: c, .. }) = self.value.value.as_mut() {
            *c = contained;
        }
        self.value.keep = keep;
        std::mem::replace(&mut self.value, ReturnValue { value: None, keep: Vec::new(), digest: None })
    }
}

/// Slots at least this large are pre-faulted beside the copy.
pub const PREFAULT_MIN: u64 = 8 << 20;
/// Pages pre-faulted per step (between two looks at the stop flag).
const PREFAULT_STEP: u64 = 2 << 20;

/// A helper thread that faults in a slot's pages from its end backwards,
/// step by step, skipping steps already mapped in this process, until it
/// reaches the start or is stopped. The writer copies from the start: the
/// two meet somewhere in the middle, and the copy runs at memory speed over
/// the part the helper did. A slot whose first and last pages are mapped
/// here (a block this process wrote before, reused while the store keeps
/// its pages) starts no thread. Faulting in changes no byte, so it may
/// overlap the writer anywhere. Dropping it stops and joins the thread.
struct Prefault {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prefault {
    /// `None` if the slot looks warm (its first and last pages are mapped
    /// here: two pagemap entries, not the whole range, to keep a warm copy's
    /// cost at the copy), or if no thread could be started (the copy then
    /// faults alone).
    fn start(arena: Arc<Arena>, offset: u64, len: u64) -> Option<Prefault> {
        let page = 4096.min(len);
        let mapped = |at| arena.is_mapped(at, page).unwrap_or(true);
        if mapped(offset) && mapped(offset + len - page) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ferroray-prefault".into())
            .spawn(move || {
                let mut end = len;
                while end > 0 && !flag.load(Ordering::Relaxed) {
                    let start = end.saturating_sub(PREFAULT_STEP);
                    let (at, n) = (offset + start, end - start);
                    // An error (a kernel without MADV_POPULATE_WRITE) ends
                    // the helper; the copy faults the rest itself.
                    if !arena.is_mapped(at, n).unwrap_or(true) && arena.prefault(at, n).is_err() {
                        break;
                    }
                    end = start;
                }
            })
            .ok()?;
        Some(Prefault { stop, thread: Some(thread) })
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw return value (see [`encode_raw`]) of the running task, for a front
/// that encodes values itself.
pub fn encode_raw_return(bytes: &[u8], nested: &[crate::ObjectRef<crate::RawValue>]) -> Result<ReturnValue> {
    let core = crate::global::core()?;
    encode_raw(&core, bytes, nested.iter().map(|r| r.inner.clone()).collect())
}

/// A fingerprint of a stored value, to tell whether a retried generator
/// yielded the same thing. Large values are sampled (length, first and last
/// 4 KiB) rather than read whole. Values with refs inside use
/// `placeholder_digest` instead (their bytes hold ids a retry renames).
pub(crate) fn digest(arena: &Arena, value: &ObjectValue) -> u64 {
    let sample = match value {
        ObjectValue::Data { payload: Payload::Shm { offset, len }, .. } => {
            let n = ferroray_protocol::DIGEST_SAMPLE.min(*len);
            // SAFETY: `value` was just encoded by this process into an
            // allocation the node gave it alone; it is done writing, nobody
            // else writes it, and the node frees it only after this process
            // sends or drops the value, both after the digest.
            unsafe { arena.slice(*offset, n).ok().zip(arena.slice(offset + len - n, n).ok()) }
        }
        _ => None,
    };
    value.digest(sample)
}

/// One pin on a shared-memory object, released (`Unpin`) when dropped.
pub struct ShmPin {
    pub(crate) id: ObjectId,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) arena: Arc<Arena>,
    pub(crate) core: Weak<CoreWorker>,
}

impl ShmPin {
    /// The pinned object's bytes.
    pub(crate) fn bytes(&self) -> Result<&[u8]> {
        // SAFETY: a `ShmPin` is only made from a node message that took a
        // store pin on this sealed object for this process (`ObjectReady`,
        // `Execute`), released when the `ShmPin` drops, which the returned
        // borrow cannot outlive. Sealed bytes are never written, and a pinned
        // object is not spilled, moved or freed; `self.arena` keeps the
        // mapping alive.
        unsafe { self.arena.slice(self.offset, self.len) }.map_err(|e| Error::ObjectLost(format!("{}: {e}", self.id)))
    }
}

impl Drop for ShmPin {
    fn drop(&mut self) {
        if let Some(core) = self.core.upgrade() {
            core.unpin(self.id);
        }
    }
}

/// A value to read: its bytes (or, for a ref list, its ids) and how they are
/// encoded.
#[derive(Clone)]
pub(crate) enum Source {
    Inline(Arc<Vec<u8>>, Encoding),
    Shm(Arc<ShmPin>, Encoding),
    RefList(Arc<[ObjectId]>),
}

#[inline]
pub(crate) fn decode<T: DeserializeOwned>(src: &Source) -> Result<T> {
    match src {
        Source::Inline(b, Encoding::Rust) => value::from_slice(b).map_err(Error::from),
        Source::Shm(pin, Encoding::Rust) => {
            let bytes = pin.bytes()?;
            let prev = BACKING.with(|b| b.borrow_mut().replace(pin.clone()));
            let r = value::from_slice(bytes).map_err(Error::from);
            BACKING.with(|b| *b.borrow_mut() = prev);
            r
        }
        Source::Inline(_, Encoding::Unit) | Source::Shm(_, Encoding::Unit) => {
            T::deserialize(serde::de::value::UnitDeserializer::<serde::de::value::Error>::new())
                .map_err(Error::serialization)
        }
        // The node made the list from ids; this process gives it the shape
        // a `Vec<ObjectRef<T>>` has in the value format, and reads it back.
        Source::RefList(ids) => {
            #[derive(Serialize)]
            #[serde(rename = "ObjectRef")]
            struct Wire(ObjectId);
            let list: Vec<Wire> = ids.iter().map(|id| Wire(*id)).collect();
            let bytes = value::to_vec(&list).map_err(Error::from)?;
            value::from_slice(&bytes).map_err(Error::from)
        }
        Source::Inline(_, Encoding::Raw) | Source::Shm(_, Encoding::Raw) => {
            Err(Error::Serialization("the object holds raw bytes put by another front: read it with get_raw".into()))
        }
        // Made into `Source::RefList` on arrival (see `Source::new`).
        Source::Inline(_, Encoding::RefList) | Source::Shm(_, Encoding::RefList) => {
            Err(Error::Protocol("a ref list arrived as bytes".into()))
        }
    }
}

/// An immutable byte buffer. Read from a large object, it is a zero-copy view
/// of the shared-memory store, which keeps the object pinned while it lives.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Buffer(Bytes);

impl Buffer {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Buffer(bytes.into())
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Whether these bytes live in the shared-memory store (not copied).
    pub fn is_shared_memory(&self) -> bool {
        !self.0.is_empty() && shm_view_contains(self.0.as_ptr())
    }
}

/// Address ranges of mapped arenas, to tell views from copies.
static ARENAS: parking_lot::Mutex<Vec<(usize, usize)>> = parking_lot::Mutex::new(Vec::new());

pub(crate) fn register_arena(arena: &Arena) {
    let start = arena.as_ptr() as usize;
    ARENAS.lock().push((start, start + arena.capacity() as usize));
}

fn shm_view_contains(p: *const u8) -> bool {
    let p = p as usize;
    ARENAS.lock().iter().any(|(s, e)| p >= *s && p < *e)
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Self {
        Buffer(v.into())
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.0.len())
    }
}

/// Serialized as an 8-byte header (zero padding and the length) then the
/// bytes (`value::serialize_aligned_bytes`), like a [`TypedBuffer`], so
/// either reads back as the other.
impl Serialize for Buffer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        value::serialize_aligned_bytes(&self.0, s)
    }
}

/// Owns a pin and points into the pinned bytes.
struct PinnedSlice {
    _pin: Arc<ShmPin>,
    ptr: usize,
    len: usize,
}

impl AsRef<[u8]> for PinnedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range lies inside the pinned object's bytes (checked
        // when the view was made against `ShmPin::bytes`), so the contract
        // of `ShmPin::bytes` holds for as long as `_pin` lives, which is as
        // long as `self`: the mapping stays (the pin holds the arena), the
        // object is not moved or freed, and its sealed bytes are not written.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl<'de> Deserialize<'de> for Buffer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Buffer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> std::result::Result<Buffer, E> {
                let view = BACKING.with(|b| {
                    let b = b.borrow();
                    let pin = b.as_ref()?;
                    let all = pin.bytes().ok()?;
                    let start = all.as_ptr() as usize;
                    let p = v.as_ptr() as usize;
                    (p >= start && p + v.len() <= start + all.len()).then(|| PinnedSlice {
                        _pin: pin.clone(),
                        ptr: p,
                        len: v.len(),
                    })
                });
                Ok(match view {
                    Some(s) => Buffer(Bytes::from_owner(s)),
                    None => Buffer(Bytes::copy_from_slice(v)),
                })
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Buffer, E> {
                Ok(Buffer(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<Buffer, E> {
                Ok(Buffer(v.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Buffer, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Buffer(v.into()))
            }
        }
        value::deserialize_aligned_bytes(d, V)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A plain-old-data element type of a [`TypedBuffer`]: the primitive
/// numbers whose every bit pattern is a valid value and whose alignment is
/// at most 8 (`u8`..`u64`, `i8`..`i64`, `f32`, `f64`). Sealed: it cannot
/// be implemented outside ferroray (reading arbitrary bytes as another type
/// would not be sound).
pub trait Pod: sealed::Sealed + Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Pod for $t {}
    )*};
}
pod!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// A `Vec<T>` handed back as itself, as bytes (no copy).
struct PodVec<T: Pod>(Vec<T>);

impl<T: Pod> AsRef<[u8]> for PodVec<T> {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `T: Pod` has no padding and every byte of it is
        // initialized; the slice covers exactly the vector's elements and
        // lives as long as the borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), std::mem::size_of_val(&self.0[..])) }
    }
}

/// An immutable array of plain-old-data numbers (`f32`, `u64`, ...; see
/// [`Pod`]): a [`Buffer`] that reads as `&[T]`. Built from a `Vec<T>`
/// without copying (`TypedBuffer::from(vec![1.0f32; n])`); it serializes
/// like a `Buffer` (a header, then the elements' bytes in native byte order,
/// which workers share, being the same executable on the same machine), so
/// a large one moves as one memory copy rather than element by element.
///
/// Read from a large object, it is a zero-copy view of the shared-memory
/// store (`is_shared_memory()`), like a `Buffer`, when its bytes are
/// aligned for `T` there. Every object starts on a 64-byte boundary of the
/// store, and a serialized `TypedBuffer` is an 8-byte header (zero padding,
/// then the varint length; 16 bytes from 512 TiB on) then the elements: so
/// a `TypedBuffer` that is the whole value (a task's return, a yielded item,
/// a `put`), or that follows only fields whose encoded sizes add up to a
/// multiple of 8 (another `TypedBuffer` of whole words, an `f64`; integers
/// and lengths are varints, so their sizes depend on their values), is read
/// without a copy. Otherwise (say after a `u8` field) it is copied once into
/// aligned memory on reading: never a misaligned `&[T]`.
pub struct TypedBuffer<T: Pod> {
    /// Invariant: aligned for `T`, and a whole number of `T`s long.
    bytes: Bytes,
    _t: std::marker::PhantomData<T>,
}

impl<T: Pod> TypedBuffer<T> {
    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        if self.bytes.is_empty() {
            return &[];
        }
        // SAFETY: the invariant: `bytes` is aligned for `T` and a whole
        // number of `T`s long; any bit pattern is a valid `T: Pod`; `bytes`
        // is immutable and lives as long as the borrow of `self`.
        unsafe {
            std::slice::from_raw_parts(self.bytes.as_ptr().cast::<T>(), self.bytes.len() / std::mem::size_of::<T>())
        }
    }

    /// Whether the elements live in the shared-memory store (not copied).
    pub fn is_shared_memory(&self) -> bool {
        !self.bytes.is_empty() && shm_view_contains(self.bytes.as_ptr())
    }

    /// The elements' bytes, as a [`Buffer`] (no copy).
    pub fn into_buffer(self) -> Buffer {
        Buffer(self.bytes)
    }

    /// `bytes` as elements: kept if aligned for `T`, else copied into
    /// aligned memory; `None` if not a whole number of elements.
    fn from_bytes(bytes: Bytes) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        if !bytes.len().is_multiple_of(size) {
            return None;
        }
        if bytes.is_empty() || bytes.as_ptr().cast::<T>().is_aligned() {
            return Some(TypedBuffer { bytes, _t: std::marker::PhantomData });
        }
        let n = bytes.len() / size;
        let mut v: Vec<T> = Vec::with_capacity(n);
        // SAFETY: `v` has room for `n` elements, that is `bytes.len()`
        // bytes; the regions do not overlap; every bit pattern is a valid
        // `T: Pod`, so all `n` elements are initialized after the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes.len());
            v.set_len(n);
        }
        Some(Self::from(v))
    }
}

impl<T: Pod> From<Vec<T>> for TypedBuffer<T> {
    fn from(v: Vec<T>) -> Self {
        TypedBuffer { bytes: Bytes::from_owner(PodVec(v)), _t: std::marker::PhantomData }
    }
}

impl<T: Pod> From<&[T]> for TypedBuffer<T> {
    fn from(v: &[T]) -> Self {
        Self::from(v.to_vec())
    }
}

impl<T: Pod> Default for TypedBuffer<T> {
    fn default() -> Self {
        Self::from(Vec::new())
    }
}

impl<T: Pod> Clone for TypedBuffer<T> {
    fn clone(&self) -> Self {
        TypedBuffer { bytes: self.bytes.clone(), _t: std::marker::PhantomData }
    }
}

impl<T: Pod + PartialEq> PartialEq for TypedBuffer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Pod> std::ops::Deref for TypedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> AsRef<[T]> for TypedBuffer<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> std::fmt::Debug for TypedBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TypedBuffer<{}>({} elements)", std::any::type_name::<T>(), self.len())
    }
}

impl<T: Pod> Serialize for TypedBuffer<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        value::serialize_aligned_bytes(&self.bytes, s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for TypedBuffer<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let Buffer(bytes) = Buffer::deserialize(d)?;
        let len = bytes.len();
        TypedBuffer::from_bytes(bytes).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{len} bytes are not a whole number of {} elements",
                std::any::type_name::<T>()
            ))
        })
    }
}

#[cfg(test)]
mod typed_buffer_tests {
    use super::*;

    #[test]
    fn round_trips_and_realigns_a_misaligned_payload() {
        let t = TypedBuffer::from(vec![1.5f64, -2.0, 3.25]);
        assert_eq!(t.as_slice(), &[1.5, -2.0, 3.25]);
        // Alone, the elements follow an 8-byte header: on an 8-byte
        // boundary of the store, where every object starts on 64.
        let alone = value::to_vec(&t).unwrap();
        assert_eq!(alone.len(), 8 + 24);
        assert_eq!(&alone[8..], t.bytes.as_ref());
        assert_eq!(value::from_slice::<TypedBuffer<f64>>(&alone).unwrap().as_slice(), t.as_slice());
        // After one byte: the elements are misaligned in the encoding.
        let enc = value::to_vec(&(7u8, &t)).unwrap();
        let (b, back): (u8, TypedBuffer<f64>) = value::from_slice(&enc).unwrap();
        assert_eq!((b, back.as_slice()), (7, t.as_slice()));
        assert!(back.as_ptr().is_aligned());
        // A Buffer reads as a TypedBuffer; not a whole number of elements
        // is an error, not a panic.
        let odd = value::to_vec(&Buffer::from(vec![0u8; 5])).unwrap();
        assert!(value::from_slice::<TypedBuffer<u32>>(&odd).is_err());
        let four = value::to_vec(&Buffer::from(vec![1u8, 0, 0, 0])).unwrap();
        assert_eq!(
            value::from_slice::<TypedBuffer<u32>>(&four).unwrap().as_slice(),
            &[u32::from_ne_bytes([1, 0, 0, 0])]
        );
        assert!(TypedBuffer::<u64>::default().is_empty());
    }

    #[test]
    fn each_encoding_decodes_as_what_it_means() {
        use ferroray_common::{TaskId, WorkerId};
        let unit = Source::Inline(Arc::new(Vec::new()), Encoding::Unit);
        decode::<()>(&unit).unwrap();
        assert_eq!(decode::<Option<u8>>(&unit).unwrap(), None);
        let ids: Vec<ObjectId> =
            (0..3).map(|i| ObjectId::for_item(TaskId { submitter: WorkerId(1), seq: 2 }, i)).collect();
        assert_eq!(decode::<Vec<ObjectId>>(&Source::RefList(ids.clone().into())).unwrap(), ids);
        let raw = Source::Inline(Arc::new(vec![1, 2, 3]), Encoding::Raw);
        assert!(matches!(decode::<Vec<u8>>(&raw), Err(Error::Serialization(m)) if m.contains("raw bytes")));
        let stray = Source::Inline(Arc::new(Vec::new()), Encoding::RefList);
        assert!(matches!(decode::<Vec<ObjectId>>(&stray), Err(Error::Protocol(_))));
    }
}
