//! Tasks: submitting a Python function's call, the `ObjectRefGenerator`
//! class of streaming calls, and `cancel`.

use crate::core_err;
use crate::objects::{deadline, encoded, sliced, ObjectRef};
use ferroray::{CancelOptions, RawValue};
use ferroray_common::{FunctionId, TaskId, WorkerId};
use ferroray_core::task::{TaskCall, TaskOptions};
use ferroray_core::{Backpressure, Retries, RetryExceptions};
use ferroray_protocol::FunctionDescriptor;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Adds a call's arguments: each an `ObjectRef` (the task gets its value)
/// or `(pickled bytes, [refs inside them])`.
pub(crate) fn add_args(call: &mut TaskCall, args: &[Bound<'_, PyAny>]) -> PyResult<()> {
    for a in args {
        if let Ok(r) = a.cast::<ObjectRef>() {
            call.arg_ref(&r.get().inner);
        } else {
            let (payload, nested): (Bound<'_, PyAny>, Vec<Bound<'_, ObjectRef>>) = a.extract().map_err(|_| {
                PyTypeError::new_err("an argument must be an ObjectRef or (bytes or StoreSlot, [ObjectRef, ...])")
            })?;
            call.arg_encoded(encoded(&payload, &nested)?);
        }
    }
    Ok(())
}

/// `-1`: forever; otherwise a count.
pub(crate) fn retries(option: &str, n: i64) -> PyResult<Retries> {
    match n {
        -1 => Ok(Retries::Forever),
        n if n >= 0 => Ok(Retries::Count(u32::try_from(n).unwrap_or(u32::MAX - 1))),
        n => Err(PyValueError::new_err(format!("{option} must be -1 (forever) or at least 0, not {n}"))),
    }
}

/// `-1` or `None`: no limit; 0 is refused.
pub(crate) fn backpressure(n: Option<i64>) -> PyResult<Option<Backpressure>> {
    match n {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).ok().and_then(Backpressure::new).map(Some).ok_or_else(|| {
            PyValueError::new_err(format!(
                "_generator_backpressure_num_objects must be -1 (no limit) or at least 1, not {n}"
            ))
        }),
    }
}

/// What a call's `num_returns` asks for.
pub(crate) enum Returns {
    Count(u32),
    Streaming,
    Dynamic,
}

impl Returns {
    pub(crate) fn parse(num_returns: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(n) = num_returns.extract::<u32>() {
            if n > 0 {
                return Ok(Returns::Count(n));
            }
        }
        match num_returns.extract::<String>().as_deref() {
            Ok("streaming") => Ok(Returns::Streaming),
            Ok("dynamic") => Ok(Returns::Dynamic),
            _ => Err(PyValueError::new_err(format!(
                "num_returns must be a positive int, \"streaming\" or \"dynamic\", not {num_returns}"
            ))),
        }
    }

    /// Submits `call`: a list of refs, an `ObjectRefGenerator`, or the ref
    /// of a dynamic generator.
    pub(crate) fn submit<'py>(self, py: Python<'py>, call: TaskCall) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Returns::Count(n) => {
                let refs = py.detach(|| call.submit_many(n));
                let refs: Vec<ObjectRef> =
                    refs.into_iter().map(|inner| ObjectRef { inner: ferroray_core::task::typed_ref(inner) }).collect();
                Ok(refs.into_pyobject(py)?.into_any())
            }
            Returns::Streaming => {
                let inner = py.detach(|| call.submit_streaming::<RawValue>());
                Ok(Bound::new(py, ObjectRefGenerator { inner })?.into_any())
            }
            Returns::Dynamic => {
                let r = py.detach(|| call.submit_dynamic::<RawValue>());
                Ok(Bound::new(py, ObjectRef { inner: r.cast() })?.into_any())
            }
        }
    }
}

/// A task id as Python holds it: one int (submitter, counter).
pub(crate) fn task_id(id: u128) -> TaskId {
    TaskId { submitter: WorkerId((id >> 64) as u64), seq: id as u64 }
}

/// A task id as one int for Python.
pub(crate) fn task_int(id: TaskId) -> u128 {
    ((id.submitter.0 as u128) << 64) | id.seq as u128
}

/// A function id as Python holds it: one int (exporter, counter).
pub(crate) fn function_id(id: u128) -> FunctionId {
    FunctionId { exporter: WorkerId((id >> 64) as u64), seq: id as u64 }
}

/// Exports a pickled function or class: its bytes go to the node once;
/// calls name it by the id returned (an int; see `_session`).
#[pyfunction]
pub(crate) fn _export_function(py: Python<'_>, pickled: Vec<u8>) -> PyResult<u128> {
    let core = ferroray_core::global::core().map_err(core_err)?;
    let f = py.detach(move || core.export_function(pickled)).map_err(core_err)?;
    Ok(((f.exporter.0 as u128) << 64) | f.seq as u128)
}

/// Which connection to a cluster this process has (its worker id; 0 with
/// none): an export is good for that one only.
#[pyfunction]
pub(crate) fn _session() -> u64 {
    ferroray_core::global::core().map(|c| c.worker_id().0).unwrap_or(0)
}

/// Submits a Python task. `num_returns`: a count (a list of refs),
/// `"streaming"` (an `ObjectRefGenerator`) or `"dynamic"` (one ref, whose
/// value is a `DynamicObjectRefGenerator`).
#[pyfunction]
#[pyo3(signature = (function, module, qualname, args, num_returns, num_cpus, num_gpus, resources, max_retries, retry_exceptions, backpressure=None, enable_task_events=true, parent=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn submit<'py>(
    py: Python<'py>,
    function: u128,
    module: String,
    qualname: String,
    args: Vec<Bound<'py, PyAny>>,
    num_returns: Bound<'py, PyAny>,
    num_cpus: f64,
    num_gpus: f64,
    resources: Vec<(String, f64)>,
    max_retries: i64,
    retry_exceptions: Bound<'py, PyAny>,
    backpressure: Option<i64>,
    enable_task_events: bool,
    parent: Option<u128>,
) -> PyResult<Bound<'py, PyAny>> {
    let returns = Returns::parse(&num_returns)?;
    let retry_exceptions = match retry_exceptions.extract::<bool>() {
        Ok(true) => RetryExceptions::All,
        Ok(false) => RetryExceptions::None,
        Err(_) => RetryExceptions::ExactTypes(retry_exceptions.extract::<Vec<String>>()?),
    };
    let opts = TaskOptions {
        num_cpus,
        num_gpus,
        resources,
        max_retries: retries("max_retries", max_retries)?,
        retry_exceptions,
        enable_task_events,
        generator_backpressure: self::backpressure(backpressure)?,
    };
    let function = Some(function_id(function));
    let mut call =
        TaskCall::foreign(FunctionDescriptor::Python { module, qualname, function, pickled: Vec::new() }, opts);
    if let Some(parent) = parent {
        call = call.parent(task_id(parent));
    }
    add_args(&mut call, &args)?;
    returns.submit(py, call)
}

/// The refs a streaming generator call yields, in order, as they are made
/// (Ray's `ObjectRefGenerator`). A failure comes as one last ref whose
/// `get` raises it.
#[pyclass(frozen, module = "ferroray._ferroray", name = "ObjectRefGenerator")]
pub struct ObjectRefGenerator {
    pub(crate) inner: ferroray::ObjectRefGenerator<RawValue>,
}

#[pymethods]
impl ObjectRefGenerator {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next item's ref, waiting for it; `StopIteration` at the end.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<ObjectRef>> {
        // A clone shares the stream: waiting needs no lock of this object.
        let gen = self.inner.clone();
        let next = sliced(py, None, move |slice| gen.next_timeout(slice))?;
        Ok(next.map(|inner| ObjectRef { inner }))
    }

    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// `async for`: the next item's ref, waited for off the event loop
    /// (`ferroray._async`); `StopAsyncIteration` at the end.
    fn __anext__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("ferroray._async")?.getattr("next_item")?.call1((slf,))
    }

    /// Calls `callback()` (on another thread) once the next item or the
    /// end is here, taking nothing (`ferroray._async`; see `aio`).
    fn _when_ready(&self, callback: Py<PyAny>) -> PyResult<()> {
        crate::aio::when_next_ready(self.inner.clone(), callback)
    }

    /// The next item's ref within `timeout` seconds: `GetTimeoutError` if
    /// none came, `None` at the end.
    fn _next_timeout(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<ObjectRef>> {
        let deadline = deadline(Some(timeout))?;
        let gen = self.inner.clone();
        let next = sliced(py, deadline, move |slice| gen.next_timeout(slice))?;
        Ok(next.map(|inner| ObjectRef { inner }))
    }

    /// A ref ready when the task has ended; its `get` raises the task's
    /// error, if it failed.
    fn completed(&self) -> ObjectRef {
        ObjectRef { inner: self.inner.completed().cast() }
    }

    /// Whether the task has ended (every item it made is known here).
    fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Stops the task at its next yield.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let gen = self.inner.clone();
        py.detach(move || gen.close()).map_err(core_err)
    }

    fn __repr__(&self) -> String {
        format!("ObjectRefGenerator({})", self.inner.task_id())
    }

    /// Passes the stream on, inside a task's argument, a put or a return
    /// value: the receiver takes the items this process has not taken, and
    /// here the generator ends. Its completion ref travels as a nested ref.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        if !crate::objects::collecting() {
            return Err(PyTypeError::new_err(
                "an ObjectRefGenerator can be pickled only by ferroray, inside a task's argument, a put or a return \
                 value (it passes the stream on)",
            ));
        }
        let gen = self.inner.clone();
        let (completion, from, backpressure) = py.detach(move || gen.pass_on()).map_err(core_err)?;
        let completion = Bound::new(py, ObjectRef { inner: completion.cast() })?;
        let claim = py.import("ferroray._ferroray")?.getattr("_claim_generator")?;
        let args = (completion, from, backpressure).into_pyobject(py)?.into_any();
        PyTuple::new(py, [claim, args])
    }
}

/// A generator passed on to this process (`ObjectRefGenerator.__reduce__`
/// elsewhere): it takes the stream over.
#[pyfunction]
pub(crate) fn _claim_generator(
    py: Python<'_>,
    completion: Bound<'_, ObjectRef>,
    from: u32,
    backpressure: bool,
) -> ObjectRefGenerator {
    let completion = completion.get().inner.clone().cast::<()>();
    let inner = py.detach(move || ferroray::ObjectRefGenerator::claim(completion, from, backpressure));
    ObjectRefGenerator { inner }
}

/// Ray's `cancel` of a task by one of its refs, or of a generator's task.
#[pyfunction]
#[pyo3(signature = (target, force=false, recursive=true))]
pub(crate) fn cancel(py: Python<'_>, target: Bound<'_, PyAny>, force: bool, recursive: bool) -> PyResult<()> {
    let mut options = CancelOptions::default().recursive(recursive);
    if force {
        options = options.force();
    }
    if let Ok(r) = target.cast::<ObjectRef>() {
        let r = r.get().inner.clone();
        py.detach(|| ferroray::cancel_with(&r, options)).map_err(core_err)
    } else if let Ok(g) = target.cast::<ObjectRefGenerator>() {
        let g = g.get().inner.clone();
        py.detach(|| ferroray::cancel_with(&g, options)).map_err(core_err)
    } else {
        Err(PyTypeError::new_err(format!(
            "cancel() takes an ObjectRef or an ObjectRefGenerator, not {}",
            target.get_type().name()?
        )))
    }
}
