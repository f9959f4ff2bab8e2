//! Objects: the `ObjectRef` class, `put`, `get`, `wait`, and refs nested
//! inside values.
//!
//! A ref inside a pickled value travels by id. While ferroray pickles a
//! value (`_collect_begin` .. `_collect_end`), each `ObjectRef` it meets is
//! noted and the value is stored with those refs as its nested ones, so the
//! node keeps them alive while the value lives; unpickling makes a counted
//! handle again (`_nested_ref`). Pickling a ref outside ferroray's own
//! pickling is refused: nothing would keep its object alive.
//!
//! Large values are written and read in shared memory in place: a value
//! with out-of-band buffers (pickle protocol 5) is laid out by
//! `ferroray._serialization` into a [`StoreSlot`] (shared memory reserved
//! here, filled by Python through its address, one copy of each buffer),
//! and a shared-memory value is handed to Python as a [`StoreView`] (its
//! address, pinned while the view lives), which `_serialization` wraps in a
//! read-only memoryview that keeps it: a numpy array read from it is a view
//! of the store, not a copy.
//!
//! Every wait runs in slices of [`SLICE`] with the GIL released, looking for
//! signals in between, so Ctrl-C interrupts it promptly.

use crate::{core_err, seconds};
use ferroray::{Error, RawValue, WaitItem};
use ferroray_common::{ObjectId, TaskId, WorkerId};
use ferroray_core::codec::{encode_raw_return, RawSlot, ReturnValue};
use ferroray_core::Encoding;
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How long a wait runs between two looks for signals (Ctrl-C).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

thread_local! {
    /// The refs met by each pickling in progress on this thread (innermost
    /// last).
    static NESTED: RefCell<Vec<Vec<ferroray::ObjectRef<RawValue>>>> = const { RefCell::new(Vec::new()) };
}

/// A handle to an object: Ray's `ObjectRef`. Counted like the Rust one: the
/// object lives while any handle to it does, in any process.
#[pyclass(frozen, module = "ferroray._ferroray", name = "ObjectRef")]
pub struct ObjectRef {
    pub(crate) inner: ferroray::ObjectRef<RawValue>,
}

#[pymethods]
impl ObjectRef {
    /// The object id as hex (Ray's `ObjectRef.hex()`).
    fn hex(&self) -> String {
        self.inner.id().to_string()
    }

    fn __repr__(&self) -> String {
        format!("ObjectRef({})", self.inner.id())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.id().hash(&mut h);
        h.finish()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<ObjectRef>().is_ok_and(|o| o.get().inner.id() == self.inner.id())
    }

    /// Whether the value is here or known to be ready (subscribes once).
    fn _is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// Calls `callback()` (on another thread) once the value is here or
    /// known to have failed (`ferroray._async`; see `aio`).
    fn _when_ready(&self, callback: Py<PyAny>) -> PyResult<()> {
        crate::aio::when_ready(self.inner.clone(), callback)
    }

    /// `await ref`: its value, waited for off the event loop
    /// (`ferroray._async`).
    fn __await__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let coro = slf.py().import("ferroray._async")?.getattr("await_ref")?.call1((slf,))?;
        coro.call_method0("__await__")
    }

    /// Pickled by id, noted as nested in the value being pickled.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let noted = NESTED.with(|n| match n.borrow_mut().last_mut() {
            Some(refs) => {
                refs.push(self.inner.clone());
                true
            }
            None => false,
        });
        if !noted {
            return Err(PyTypeError::new_err(
                "an ObjectRef can be pickled only by ferroray, inside a task's argument, a put or a return value \
                 (nothing else would keep its object alive)",
            ));
        }
        let id = self.inner.id();
        let make = py.import("ferroray._ferroray")?.getattr("_nested_ref")?;
        PyTuple::new(py, [make, (id.task.submitter.0, id.task.seq, id.index).into_pyobject(py)?.into_any()])
    }
}

/// Shared memory reserved for a value Python writes itself (see the module
/// documentation); taken by the `put`, argument or return it becomes.
#[pyclass(frozen, module = "ferroray._ferroray", name = "StoreSlot")]
pub struct StoreSlot {
    slot: Mutex<Option<RawSlot>>,
}

#[pymethods]
impl StoreSlot {
    /// (address, length) of the reserved bytes; an error once used.
    fn _address(&self) -> PyResult<(usize, usize)> {
        match self.slot.lock().as_ref() {
            Some(s) => Ok((s.as_mut_ptr() as usize, s.len() as usize)),
            None => Err(PyValueError::new_err("this store slot was already used")),
        }
    }

    /// Copies `length` bytes from `address` into the slot at `offset`
    /// without the GIL, a large copy on several threads
    /// (`RawSlot::write_at`). For `ferroray._serialization` alone: the
    /// buffer-protocol API is not in the stable ABI before Python 3.11, so
    /// it passes the address of a buffer it holds exported for the call.
    fn _write_from(&self, py: Python<'_>, offset: u64, address: usize, length: usize) -> PyResult<()> {
        if address == 0 && length > 0 {
            return Err(PyValueError::new_err("no address to copy from"));
        }
        let mut slot = self.slot.lock();
        let Some(slot) = slot.as_mut() else {
            return Err(PyValueError::new_err("this store slot was already used"));
        };
        let (start, end) = (slot.as_mut_ptr() as usize, slot.as_mut_ptr() as usize + slot.len() as usize);
        let source_end = address.checked_add(length).ok_or_else(|| PyValueError::new_err("source out of range"))?;
        if address < end && start < source_end {
            return Err(PyValueError::new_err("the source of a copy into a store slot cannot lie in the slot"));
        }
        py.detach(|| {
            // SAFETY: the caller (`_serialization.dumps`) passes the address
            // and length of a buffer it keeps exported until this returns,
            // so the bytes stay valid and in place; `write_at` checks that
            // they fit the slot.
            let src = unsafe { std::slice::from_raw_parts(address as *const u8, length) };
            slot.write_at(offset, src)
        })
        .map_err(core_err)
    }
}

/// A shared-memory value's bytes, in place: pinned in the store while this
/// lives.
#[pyclass(frozen, module = "ferroray._ferroray", name = "StoreView")]
pub struct StoreView {
    raw: RawValue,
}

#[pymethods]
impl StoreView {
    /// (address, length) of the value's bytes in this process's mapping.
    fn _address(&self) -> PyResult<(usize, usize)> {
        let bytes = self.raw.bytes().map_err(core_err)?;
        Ok((bytes.as_ptr() as usize, bytes.len()))
    }
}

/// Reserves `len` bytes of shared memory for a value Python writes.
#[pyfunction]
pub(crate) fn _reserve(py: Python<'_>, len: u64) -> PyResult<StoreSlot> {
    let slot = py.detach(|| RawSlot::reserve(len)).map_err(core_err)?;
    Ok(StoreSlot { slot: Mutex::new(Some(slot)) })
}

/// Values at least this large go to shared memory.
#[pyfunction]
pub(crate) fn _inline_threshold() -> PyResult<u64> {
    Ok(ferroray_core::global::core().map_err(core_err)?.info().inline_threshold)
}

/// A value Python made: pickled `bytes`, or a filled [`StoreSlot`]; with
/// the refs inside it.
pub(crate) fn encoded(payload: &Bound<'_, PyAny>, nested: &[Bound<'_, ObjectRef>]) -> PyResult<ReturnValue> {
    let nested = inners(nested);
    if let Ok(slot) = payload.cast::<StoreSlot>() {
        let slot =
            slot.get().slot.lock().take().ok_or_else(|| PyValueError::new_err("this store slot was already used"))?;
        return Ok(slot.finish(&nested));
    }
    let bytes = payload.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("a value must be bytes or a StoreSlot"))?;
    encode_raw_return(bytes.as_bytes(), &nested).map_err(core_err)
}

/// A value for Python to decode (`_serialization.loads`): its bytes (a
/// copy when inline, a [`StoreView`] in place when in shared memory);
/// `None` for a unit value (a generator's completion); a 1-tuple of its
/// items' refs for a dynamic generator's value. Anything else (a Rust
/// value) is a `Serialization` error.
pub(crate) fn to_python<'py>(py: Python<'py>, raw: RawValue) -> Result<Bound<'py, PyAny>, Error> {
    let py_err = |e: PyErr| Error::Serialization(e.to_string());
    match raw.encoding() {
        Encoding::Raw if raw.is_shared_memory() => Ok(Bound::new(py, StoreView { raw }).map_err(py_err)?.into_any()),
        Encoding::Raw => Ok(PyBytes::new(py, raw.bytes()?).into_any()),
        Encoding::Unit => Ok(py.None().into_bound(py)),
        Encoding::RefList => {
            // The node keeps the items alive while the value is read (it
            // pins a task's arguments; `get` holds the value's ref).
            let refs = raw
                .ref_ids()
                .iter()
                .map(|id| ferroray::ObjectRef::<RawValue>::borrowed(*id).map(|inner| ObjectRef { inner }))
                .collect::<Result<Vec<_>, Error>>()?;
            let refs = refs.into_pyobject(py).map_err(py_err)?.into_any();
            Ok(PyTuple::new(py, [refs]).map_err(py_err)?.into_any())
        }
        other => Err(Error::Serialization(format!("a value of encoding {other:?} is not a Python value"))),
    }
}

/// A counted handle to a ref named inside a value being unpickled.
#[pyfunction]
pub(crate) fn _nested_ref(submitter: u64, seq: u64, index: u32) -> PyResult<ObjectRef> {
    let id = ObjectId { task: TaskId { submitter: WorkerId(submitter), seq }, index };
    ferroray::ObjectRef::borrowed(id).map(|inner| ObjectRef { inner }).map_err(core_err)
}

/// Starts noting the refs the next pickling on this thread meets.
#[pyfunction]
pub(crate) fn _collect_begin() {
    NESTED.with(|n| n.borrow_mut().push(Vec::new()));
}

/// Whether a value is being pickled by ferroray now (`_collect_begin`
/// without its end), on this thread.
pub(crate) fn collecting() -> bool {
    NESTED.with(|n| !n.borrow().is_empty())
}

/// The refs noted since the matching `_collect_begin`.
#[pyfunction]
pub(crate) fn _collect_end() -> Vec<ObjectRef> {
    NESTED.with(|n| n.borrow_mut().pop()).unwrap_or_default().into_iter().map(|inner| ObjectRef { inner }).collect()
}

pub(crate) fn inners(refs: &[Bound<'_, ObjectRef>]) -> Vec<ferroray::ObjectRef<RawValue>> {
    refs.iter().map(|r| r.get().inner.clone()).collect()
}

/// Stores a value: pickled bytes (large ones are copied to shared memory)
/// or a filled [`StoreSlot`], with the refs inside it.
#[pyfunction]
#[pyo3(signature = (value, nested=Vec::new()))]
pub(crate) fn put(py: Python<'_>, value: Bound<'_, PyAny>, nested: Vec<Bound<'_, ObjectRef>>) -> PyResult<ObjectRef> {
    let value = encoded(&value, &nested)?;
    let core = ferroray_core::global::core().map_err(core_err)?;
    let inner = py.detach(|| core.put_encoded(value)).map_err(core_err)?;
    Ok(ObjectRef { inner })
}

/// Runs `wait` (given how long it may take) in slices until it gives
/// something other than a timeout or `deadline` passes, looking for
/// signals between slices.
pub(crate) fn sliced<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut wait: impl FnMut(Duration) -> ferroray::Result<T> + Send,
) -> PyResult<T> {
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        match py.detach(|| wait(slice)) {
            Err(Error::GetTimeout) if left.is_none_or(|l| l > slice) => py.check_signals()?,
            other => return other.map_err(core_err),
        }
    }
}

pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    Ok(timeout.map(seconds).transpose()?.map(|t| Instant::now() + t))
}

/// The pickled bytes of each ref, in order; the first error is raised. One
/// deadline for all (`timeout` in seconds). A dynamic generator's value
/// comes as a 1-tuple of its items' refs; a unit value as `None`.
#[pyfunction]
#[pyo3(signature = (refs, timeout=None))]
pub(crate) fn get<'py>(
    py: Python<'py>,
    refs: Vec<Bound<'py, ObjectRef>>,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyList>> {
    let deadline = deadline(timeout)?;
    if refs.len() > 1 {
        // One subscription for all that are not here yet (as `get_all`):
        // each then comes as it is made, not asked for one at a time when
        // its turn comes (an answer the delivery thread had to bring, a
        // thread wake per ref).
        let inners: Vec<ferroray::ObjectRef<RawValue>> = refs.iter().map(|r| r.get().inner.clone()).collect();
        py.detach(|| ferroray::ObjectRef::prefetch_all(&inners));
    }
    let out = PyList::empty(py);
    for r in &refs {
        let inner = r.get().inner.clone();
        let raw = sliced(py, deadline, |slice| inner.get_raw(Some(slice)))?;
        out.append(to_python(py, raw).map_err(|e| match e {
            Error::Serialization(why) => core_err(Error::Serialization(format!("object {}: {why}", inner.id()))),
            e => core_err(e),
        })?)?;
    }
    if refs.len() >= crate::COLLECT_AFTER {
        py.detach(crate::collect_heap_now_and_then);
    }
    Ok(out)
}

/// Ray's `wait` over refs and generators (a generator is ready when its
/// next item is here or it has ended): positions of (ready, not ready).
/// Without `fetch_local`, a ref is ready once made on any node (nothing
/// is pulled here).
#[pyfunction]
#[pyo3(signature = (items, num_returns, timeout=None, fetch_local=true))]
pub(crate) fn wait(
    py: Python<'_>,
    items: Vec<Bound<'_, PyAny>>,
    num_returns: usize,
    timeout: Option<f64>,
    fetch_local: bool,
) -> PyResult<(Vec<usize>, Vec<usize>)> {
    let deadline = deadline(timeout)?;
    let mut waits: Vec<WaitItem<RawValue>> = Vec::with_capacity(items.len());
    for item in &items {
        if let Ok(r) = item.cast::<ObjectRef>() {
            waits.push(WaitItem::Ref(r.get().inner.clone()));
        } else if let Ok(g) = item.cast::<crate::tasks::ObjectRefGenerator>() {
            waits.push(WaitItem::Generator(g.get().inner.clone()));
        } else {
            return Err(PyTypeError::new_err(format!(
                "wait() takes ObjectRefs and ObjectRefGenerators, not {}",
                item.get_type().name()?
            )));
        }
    }
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        let waited = if fetch_local { ferroray::wait_indices } else { ferroray::wait_made_indices };
        let (ready, rest) = py.detach(|| waited(&waits, num_returns, Some(slice))).map_err(core_err)?;
        if ready.len() >= num_returns || left.is_some_and(|l| l <= slice) {
            return Ok((ready, rest));
        }
        py.check_signals()?;
    }
}
