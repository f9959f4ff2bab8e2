//! `ferroray._ferroray`: the Python front's extension module, a thin layer
//! over the Rust core. All PyO3 code of the project is here; the Python
//! package (`python/ferroray`) builds Ray's API on these functions.
//!
//! - The driver side: `init`/`shutdown`/`is_initialized` start and stop the
//!   embedded cluster (whose workers for Python tasks are this interpreter
//!   running `ferroray._worker`), `put`, `get`, `wait`, `submit` and the
//!   [`ObjectRef`] class. Values cross as bytes the Python side pickled
//!   (`Encoding::Raw`); this module never looks inside them.
//! - The worker side: `worker_main(runner)` serves tasks until the node goes;
//!   each task calls `runner` (Python) with the pickled function and
//!   arguments, under the GIL, through [`PyRunner`].
//! - Errors: every core error reaches Python as [`CoreError`] with the
//!   variant's name, its text, and for a task's error its exception class
//!   name and pickled exception; `ferroray.exceptions` turns it into Ray's
//!   exception classes.
//!
//! Every call that waits releases the GIL.

use ferroray::{CancelOptions, Config, Error, RawValue, WaitItem};
use ferroray_core::codec::{encode_raw_return, ReturnValue};
use ferroray_core::registry::ForeignFunctions;
use ferroray_core::registry::ItemSink;
use ferroray_core::task::{ArgReader, TaskCall, TaskOptions};
use ferroray_core::{Backpressure, Encoding, Retries, RetryExceptions};
use ferroray_protocol::FunctionDescriptor;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::time::Duration;

create_exception!(
    _ferroray,
    CoreError,
    PyException,
    "an error of the ferroray core: (kind, message, exception class name or None, pickled exception or None)"
);

/// The name of an error's variant (`GetTimeout`, `Task`, ...): what the
/// Python side dispatches on.
fn kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("Other").to_string()
}

/// The Python exception for a core error: Ray's class for it, made by
/// `ferroray.exceptions._from_core` (a plain [`CoreError`] if that module
/// cannot be imported).
fn core_err(e: Error) -> PyErr {
    let (type_name, value) = match &e {
        Error::Task(t) => (Some(t.type_name.clone()), t.value.clone()),
        _ => (None, None),
    };
    let raw = CoreError::new_err((kind(&e), e.to_string(), type_name, value));
    Python::attach(|py| {
        let converted = py
            .import("ferroray.exceptions")
            .and_then(|m| m.getattr("_from_core"))
            .and_then(|f| f.call1((raw.value(py),)));
        match converted {
            Ok(exc) => PyErr::from_value(exc),
            Err(_) => raw,
        }
    })
}

/// A handle to an object: Ray's `ObjectRef`. Counted like the Rust one: the
/// object lives while any handle to it does, in any process.
#[pyclass(frozen, module = "ferroray._ferroray", name = "ObjectRef")]
pub struct ObjectRef {
    inner: ferroray::ObjectRef<RawValue>,
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

    /// Refs nested inside values do not travel yet: a clear error rather
    /// than a handle the receiver could not count.
    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "an ObjectRef inside a value cannot be sent yet: pass it as a top-level argument of the task",
        ))
    }
}

/// Starts the embedded cluster; Python tasks run in `python worker_args..`.
#[pyfunction]
#[pyo3(signature = (python, worker_args, worker_env=Vec::new(), num_cpus=None, num_gpus=None, resources=Vec::new(), object_store_memory=None))]
#[allow(clippy::too_many_arguments)]
fn init(
    py: Python<'_>,
    python: std::path::PathBuf,
    worker_args: Vec<String>,
    worker_env: Vec<(String, String)>,
    num_cpus: Option<f64>,
    num_gpus: Option<f64>,
    resources: Vec<(String, f64)>,
    object_store_memory: Option<u64>,
) -> PyResult<()> {
    let mut config = Config::default().python_workers(python, worker_args);
    for (name, value) in &worker_env {
        config = config.worker_env(name, value);
    }
    if let Some(n) = num_cpus {
        config = config.num_cpus(n);
    }
    if let Some(n) = num_gpus {
        config = config.num_gpus(n);
    }
    for (name, amount) in &resources {
        config = config.resource(name, *amount);
    }
    if let Some(b) = object_store_memory {
        config = config.object_store_memory(b);
    }
    py.detach(|| ferroray::init_with(config)).map_err(core_err)
}

#[pyfunction]
fn shutdown(py: Python<'_>) {
    py.detach(ferroray::shutdown);
}

/// True in a driver after `init`, and always in a worker process (its core
/// is connected before any task runs), so a task never starts a cluster.
#[pyfunction]
fn is_initialized() -> bool {
    ferroray::is_initialized() || ferroray_core::global::core().is_ok()
}

/// Stores pickled bytes; large ones go to shared memory.
#[pyfunction]
fn put(py: Python<'_>, value: &[u8]) -> PyResult<ObjectRef> {
    let value = value.to_vec();
    let inner = py.detach(|| ferroray::put_raw(&value, &[])).map_err(core_err)?;
    Ok(ObjectRef { inner })
}

/// The pickled bytes of each ref, in order; the first error is raised. One
/// deadline for all (`timeout` in seconds).
#[pyfunction]
#[pyo3(signature = (refs, timeout=None))]
fn get<'py>(py: Python<'py>, refs: Vec<Bound<'py, ObjectRef>>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
    let deadline = match timeout {
        Some(t) if !(t >= 0.0 && t.is_finite()) => {
            return Err(PyValueError::new_err(format!("timeout must be a non-negative number of seconds, not {t}")))
        }
        Some(t) => Some(std::time::Instant::now() + Duration::from_secs_f64(t)),
        None => None,
    };
    let out = PyList::empty(py);
    for r in &refs {
        let inner = r.get().inner.clone();
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let raw = py.detach(|| inner.get_raw(left)).map_err(core_err)?;
        match raw.encoding() {
            Encoding::Raw => out.append(PyBytes::new(py, raw.bytes().map_err(core_err)?))?,
            Encoding::Unit => out.append(py.None())?,
            Encoding::RefList => {
                // A dynamic generator's value: its items' refs, in order.
                let typed = inner.clone().cast::<ferroray::DynamicObjectRefGenerator<RawValue>>();
                let items = py.detach(|| typed.get_timeout(Duration::ZERO)).map_err(core_err)?;
                let refs: Vec<ObjectRef> = items.into_iter().map(|inner| ObjectRef { inner }).collect();
                out.append(PyTuple::new(py, [refs.into_pyobject(py)?.into_any()])?)?
            }
            other => {
                return Err(core_err(Error::Serialization(format!(
                    "object {} holds a value of encoding {other:?}, not a Python value",
                    inner.id()
                ))))
            }
        }
    }
    Ok(out)
}

/// Ray's `wait` over refs and generators (a generator is ready when its
/// next item is here or it has ended): positions of (ready, not ready).
#[pyfunction]
#[pyo3(signature = (items, num_returns, timeout=None))]
fn wait(
    py: Python<'_>,
    items: Vec<Bound<'_, PyAny>>,
    num_returns: usize,
    timeout: Option<f64>,
) -> PyResult<(Vec<usize>, Vec<usize>)> {
    let timeout = timeout.map(seconds).transpose()?;
    let mut waits: Vec<WaitItem<RawValue>> = Vec::with_capacity(items.len());
    for item in &items {
        if let Ok(r) = item.cast::<ObjectRef>() {
            waits.push(WaitItem::Ref(r.get().inner.clone()));
        } else if let Ok(g) = item.cast::<ObjectRefGenerator>() {
            waits.push(WaitItem::Generator(g.get().inner.clone()));
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "wait() takes ObjectRefs and ObjectRefGenerators, not {}",
                item.get_type().name()?
            )));
        }
    }
    py.detach(|| ferroray::wait_indices(&waits, num_returns, timeout)).map_err(core_err)
}

/// Ray's `cancel` of a task by one of its refs, or of a generator's task.
#[pyfunction]
#[pyo3(signature = (target, force=false, recursive=true))]
fn cancel(py: Python<'_>, target: Bound<'_, PyAny>, force: bool, recursive: bool) -> PyResult<()> {
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
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "cancel() takes an ObjectRef or an ObjectRefGenerator, not {}",
            target.get_type().name()?
        )))
    }
}

/// Counts of what the runtime keeps (for leak checks in tests): objects
/// and streams of the node, refs of this process.
#[pyfunction]
fn _runtime_stats() -> PyResult<std::collections::HashMap<&'static str, u64>> {
    let s = ferroray::runtime_stats().map_err(core_err)?;
    Ok(std::collections::HashMap::from([
        ("node_objects", s.node_objects as u64),
        ("node_tasks", s.node_tasks as u64),
        ("node_streams", s.node_streams as u64),
        ("store_objects", s.store_objects),
        ("local_refs", s.local_refs as u64),
        ("workers", s.workers as u64),
    ]))
}

/// A Python task's call: `args` are pickled bytes or `ObjectRef`s (whose
/// values the task gets).
#[allow(clippy::too_many_arguments)]
fn build_call(
    pickled: Vec<u8>,
    module: String,
    qualname: String,
    args: &[Bound<'_, PyAny>],
    num_cpus: f64,
    num_gpus: f64,
    resources: Vec<(String, f64)>,
    max_retries: i64,
    retry_exceptions: &Bound<'_, PyAny>,
    backpressure: Option<i64>,
) -> PyResult<TaskCall> {
    let max_retries = match max_retries {
        -1 => Retries::Forever,
        n if n >= 0 => Retries::Count(u32::try_from(n).unwrap_or(u32::MAX - 1)),
        n => return Err(PyValueError::new_err(format!("max_retries must be -1 (forever) or at least 0, not {n}"))),
    };
    let retry_exceptions = match retry_exceptions.extract::<bool>() {
        Ok(true) => RetryExceptions::All,
        Ok(false) => RetryExceptions::None,
        Err(_) => RetryExceptions::ExactTypes(retry_exceptions.extract::<Vec<String>>()?),
    };
    let generator_backpressure = match backpressure {
        None | Some(-1) => None,
        Some(n) => Some(u32::try_from(n).ok().and_then(Backpressure::new).ok_or_else(|| {
            PyValueError::new_err(format!(
                "_generator_backpressure_num_objects must be -1 (no limit) or at least 1, not {n}"
            ))
        })?),
    };
    let opts = TaskOptions {
        num_cpus,
        num_gpus,
        resources,
        max_retries,
        retry_exceptions,
        enable_task_events: true,
        generator_backpressure,
    };
    let mut call = TaskCall::foreign(FunctionDescriptor::Python { module, qualname, pickled }, opts);
    for a in args {
        if let Ok(r) = a.cast::<ObjectRef>() {
            call.arg_ref(&r.get().inner);
        } else {
            let bytes =
                a.cast::<PyBytes>().map_err(|_| PyValueError::new_err("an argument must be bytes or an ObjectRef"))?;
            call.arg_raw(bytes.as_bytes(), &[]);
        }
    }
    Ok(call)
}

/// Submits a Python task. `num_returns`: a count (one ref per value),
/// `"streaming"` (an `ObjectRefGenerator`) or `"dynamic"` (one ref, whose
/// value is a `DynamicObjectRefGenerator`).
#[pyfunction]
#[pyo3(signature = (pickled, module, qualname, args, num_returns, num_cpus, num_gpus, resources, max_retries, retry_exceptions, backpressure=None))]
#[allow(clippy::too_many_arguments)]
fn submit<'py>(
    py: Python<'py>,
    pickled: Vec<u8>,
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
) -> PyResult<Bound<'py, PyAny>> {
    let call = build_call(
        pickled,
        module,
        qualname,
        &args,
        num_cpus,
        num_gpus,
        resources,
        max_retries,
        &retry_exceptions,
        backpressure,
    )?;
    if let Ok(n) = num_returns.extract::<u32>() {
        let refs = py.detach(|| call.submit_many(n));
        let refs: Vec<ObjectRef> =
            refs.into_iter().map(|inner| ObjectRef { inner: ferroray_core::task::typed_ref(inner) }).collect();
        return Ok(refs.into_pyobject(py)?.into_any());
    }
    match num_returns.extract::<String>().as_deref() {
        Ok("streaming") => {
            let inner = py.detach(|| call.submit_streaming::<RawValue>());
            Ok(Bound::new(py, ObjectRefGenerator { inner })?.into_any())
        }
        Ok("dynamic") => {
            let r = py.detach(|| call.submit_dynamic::<RawValue>());
            Ok(Bound::new(py, ObjectRef { inner: r.cast() })?.into_any())
        }
        _ => Err(PyValueError::new_err(format!(
            "num_returns must be a positive int, \"streaming\" or \"dynamic\", not {num_returns}"
        ))),
    }
}

/// The refs a streaming generator task yields, in order, as they are made
/// (Ray's `ObjectRefGenerator`). A failure comes as one last ref whose
/// `get` raises it.
#[pyclass(frozen, module = "ferroray._ferroray", name = "ObjectRefGenerator")]
pub struct ObjectRefGenerator {
    inner: ferroray::ObjectRefGenerator<RawValue>,
}

#[pymethods]
impl ObjectRefGenerator {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next item's ref, waiting for it; `StopIteration` at the end.
    fn __next__(&self, py: Python<'_>) -> Option<ObjectRef> {
        // A clone shares the stream: waiting needs no lock of this object.
        let mut gen = self.inner.clone();
        py.detach(move || gen.next()).map(|inner| ObjectRef { inner })
    }

    /// The next item's ref within `timeout` seconds: `GetTimeout` if none
    /// came, `None` at the end.
    #[pyo3(signature = (timeout))]
    fn _next_timeout(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<ObjectRef>> {
        let timeout = seconds(timeout)?;
        let gen = self.inner.clone();
        let next = py.detach(move || gen.next_timeout(timeout)).map_err(core_err)?;
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
}

fn seconds(t: f64) -> PyResult<Duration> {
    if t >= 0.0 && t.is_finite() {
        Ok(Duration::from_secs_f64(t))
    } else {
        Err(PyValueError::new_err(format!("timeout must be a non-negative number of seconds, not {t}")))
    }
}

/// Runs the Python tasks of a worker process: `runner(pickled, module,
/// qualname, args, num_returns)` returns `("ok", [bytes, ...])` or
/// `("err", class name, message, pickled exception or None)`.
struct PyRunner {
    runner: Py<PyAny>,
    /// `gen_runner(pickled, module, qualname, args)`: an iterator of
    /// `("ok", bytes)` per yielded value, ending with `("err", ..)` if the
    /// generator raised.
    gen_runner: Py<PyAny>,
}

/// Reads every argument of a Python task as bytes.
fn raw_args(args: &mut ArgReader<'_>, task_name: &str) -> ferroray::Result<Vec<RawValue>> {
    let mut raws = Vec::with_capacity(args.remaining());
    while args.remaining() > 0 {
        let i = raws.len();
        let raw = args.next_raw()?;
        if raw.encoding() != Encoding::Raw {
            return Err(Error::Serialization(format!(
                "argument {i} of {task_name} is not a Python value (encoding {:?})",
                raw.encoding()
            )));
        }
        raws.push(raw);
    }
    Ok(raws)
}

fn py_bytes_list<'py>(py: Python<'py>, raws: &[RawValue], task_name: &str) -> ferroray::Result<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for r in raws {
        list.append(PyBytes::new(py, r.bytes()?)).map_err(|e| py_error(py, e, task_name))?;
    }
    Ok(list)
}

/// A task's error from the runner's `("err", class, text, pickled)`.
fn task_error(out: &Bound<'_, PyTuple>, task_name: &str) -> Error {
    let py = out.py();
    match out.extract::<(String, String, String, Option<Vec<u8>>)>() {
        Ok((_, type_name, message, value)) => {
            let mut err = Error::task(&type_name, message, task_name, std::process::id());
            if let Error::Task(t) = &mut err {
                t.value = value;
            }
            err
        }
        Err(e) => py_error(py, e, task_name),
    }
}

impl ForeignFunctions for PyRunner {
    fn run(
        &self,
        function: &FunctionDescriptor,
        args: &mut ArgReader<'_>,
        returns: usize,
    ) -> ferroray::Result<Vec<ReturnValue>> {
        let FunctionDescriptor::Python { module, qualname, pickled } = function else {
            return Err(Error::UnknownFunction(function.display_name().to_string()));
        };
        let task_name = args.context().name.clone();
        let raws = raw_args(args, &task_name)?;
        let outcome: Result<Vec<Vec<u8>>, Error> = Python::attach(|py| {
            let py_args = py_bytes_list(py, &raws, &task_name)?;
            let out = self
                .runner
                .call1(py, (PyBytes::new(py, pickled), module, qualname, py_args, returns))
                .map_err(|e| py_error(py, e, &task_name))?;
            let out = out.bind(py).cast::<PyTuple>().map_err(|e| py_error(py, e.into(), &task_name))?.clone();
            let tag: String = out.get_item(0).and_then(|t| t.extract()).map_err(|e| py_error(py, e, &task_name))?;
            if tag == "ok" {
                out.get_item(1).and_then(|v| v.extract::<Vec<Vec<u8>>>()).map_err(|e| py_error(py, e, &task_name))
            } else {
                Err(task_error(&out, &task_name))
            }
        });
        outcome?.iter().map(|b| encode_raw_return(b, &[])).collect()
    }

    fn run_items(
        &self,
        function: &FunctionDescriptor,
        args: &mut ArgReader<'_>,
        sink: &mut dyn ItemSink,
    ) -> ferroray::Result<()> {
        let FunctionDescriptor::Python { module, qualname, pickled } = function else {
            return Err(Error::UnknownFunction(function.display_name().to_string()));
        };
        let task_name = args.context().name.clone();
        let raws = raw_args(args, &task_name)?;
        let items: Py<PyAny> = Python::attach(|py| {
            let py_args = py_bytes_list(py, &raws, &task_name)?;
            self.gen_runner
                .call1(py, (PyBytes::new(py, pickled), module, qualname, py_args))
                .map_err(|e| py_error(py, e, &task_name))
        })?;
        drop(raws);
        loop {
            // The GIL only while Python makes the next value: the sink may
            // wait for room (backpressure) without it.
            let next: Option<Result<Vec<u8>, Error>> = Python::attach(|py| {
                let out = match items.bind(py).call_method0("__next__") {
                    Ok(out) => out,
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => return None,
                    Err(e) => return Some(Err(py_error(py, e, &task_name))),
                };
                let out = match out.cast::<PyTuple>() {
                    Ok(t) => t.clone(),
                    Err(e) => return Some(Err(py_error(py, e.into(), &task_name))),
                };
                Some(match out.get_item(0).and_then(|t| t.extract::<String>()) {
                    Ok(tag) if tag == "ok" => {
                        out.get_item(1).and_then(|v| v.extract::<Vec<u8>>()).map_err(|e| py_error(py, e, &task_name))
                    }
                    Ok(_) => Err(task_error(&out, &task_name)),
                    Err(e) => Err(py_error(py, e, &task_name)),
                })
            });
            match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(bytes)) => sink.item(encode_raw_return(&bytes, &[])?)?,
            }
        }
    }
}

/// A Python exception raised by the runner itself (not by the task, whose
/// exceptions the runner returns): a bug of the worker, reported as the
/// task's error.
fn py_error(py: Python<'_>, e: PyErr, task_name: &str) -> Error {
    let type_name = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    Error::task(&type_name, format!("in the Python worker: {e}"), task_name, std::process::id())
}

/// Serves tasks until the node goes (the process then exits).
#[pyfunction]
fn worker_main(py: Python<'_>, runner: Py<PyAny>, gen_runner: Py<PyAny>) -> PyResult<()> {
    py.detach(|| ferroray_core::worker::foreign_worker_main(Box::new(PyRunner { runner, gen_runner })))
        .map_err(core_err)
}

#[pymodule]
fn _ferroray(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_class::<ObjectRef>()?;
    m.add_class::<ObjectRefGenerator>()?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(put, m)?)?;
    m.add_function(wrap_pyfunction!(get, m)?)?;
    m.add_function(wrap_pyfunction!(wait, m)?)?;
    m.add_function(wrap_pyfunction!(cancel, m)?)?;
    m.add_function(wrap_pyfunction!(_runtime_stats, m)?)?;
    m.add_function(wrap_pyfunction!(submit, m)?)?;
    m.add_function(wrap_pyfunction!(worker_main, m)?)?;
    Ok(())
}
