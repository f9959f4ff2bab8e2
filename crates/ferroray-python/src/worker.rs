//! The worker side: the core runs Python tasks and actors through
//! [`PyRunner`], which calls the methods of `ferroray._worker.Runner`.
//!
//! The runner's answers:
//! - `run`, `call`: `("ok", [(pickled, [nested refs]), ...])` or
//!   `("err", class name, message, pickled exception or None)`;
//! - `run_gen`, `call_gen`: an iterator of `("ok", pickled, [nested refs])`
//!   per yielded value, ending with one `("err", ...)` if the generator
//!   raised;
//! - `construct`: `("ok", instance)` or `("err", ...)`.
//!
//! The GIL is taken for each of those calls only: the core waits (for
//! arguments, for room in a stream) without it.

use crate::objects::{encoded, to_python};
use crate::{core_err, ObjectRef};
use ferroray::{Error, RawValue};
use ferroray_common::FunctionId;
use ferroray_core::codec::ReturnValue;
use ferroray_core::registry::{ForeignFunctions, ItemSink};
use ferroray_core::task::ArgReader;
use ferroray_core::worker::{AsyncCalls, CallReturns};
use ferroray_core::Encoding;
use ferroray_protocol::FunctionDescriptor;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::any::Any;

/// The core's runner of Python functions and actors in this process.
struct PyRunner {
    /// A `ferroray._worker.Runner`.
    runner: Py<PyAny>,
    /// Which methods of this process's actor are generators, by name (a
    /// process runs one actor, whose class does not change): asked of
    /// Python once per method, not per call.
    generator_methods: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    /// Exported functions whose bytes Python has had (it keeps the
    /// function, or the error unpickling it gave).
    loaded: std::sync::Mutex<std::collections::HashSet<FunctionId>>,
}

/// Reads every argument of a Python task as bytes.
fn raw_args(args: &mut ArgReader<'_>, task_name: &str) -> ferroray::Result<Vec<RawValue>> {
    let mut raws = Vec::with_capacity(args.remaining());
    while args.remaining() > 0 {
        let i = raws.len();
        let raw = args.next_raw()?;
        if !matches!(raw.encoding(), Encoding::Raw | Encoding::RefList | Encoding::Unit) {
            return Err(Error::Serialization(format!(
                "argument {i} of {task_name} is not a Python value (encoding {:?})",
                raw.encoding()
            )));
        }
        raws.push(raw);
    }
    Ok(raws)
}

/// The arguments for Python: bytes, or views of shared memory in place.
fn py_values<'py>(py: Python<'py>, raws: Vec<RawValue>, task_name: &str) -> ferroray::Result<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for r in raws {
        let value = to_python(py, r)?;
        list.append(value).map_err(|e| py_error(py, e, task_name))?;
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

/// A Python exception raised by the runner itself (not by the task, whose
/// exceptions the runner returns): reported as the task's error.
fn py_error(py: Python<'_>, e: PyErr, task_name: &str) -> Error {
    let type_name = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    Error::task(&type_name, format!("in the Python worker: {e}"), task_name, std::process::id())
}

/// A value the runner made: `(bytes or StoreSlot, [refs inside it])`.
fn encode_value(value: &Bound<'_, PyAny>, task_name: &str) -> ferroray::Result<ReturnValue> {
    let py = value.py();
    let (payload, nested): (Bound<'_, PyAny>, Vec<Bound<'_, ObjectRef>>) =
        value.extract().map_err(|e| py_error(py, e, task_name))?;
    encoded(&payload, &nested).map_err(|e| py_error(py, e, task_name))
}

/// `("ok", x)` gives `x`; `("err", ..)` the task's error.
fn unwrap_outcome<'py>(out: Bound<'py, PyAny>, task_name: &str) -> ferroray::Result<Bound<'py, PyAny>> {
    let py = out.py();
    let out = out.cast_into::<PyTuple>().map_err(|e| py_error(py, e.into(), task_name))?;
    let tag: String = out.get_item(0).and_then(|t| t.extract()).map_err(|e| py_error(py, e, task_name))?;
    if tag == "ok" {
        out.get_item(1).map_err(|e| py_error(py, e, task_name))
    } else {
        Err(task_error(&out, task_name))
    }
}

/// A call as the runner gets it: the descriptor's parts, the task's name
/// (for errors) and every argument's bytes.
struct Call<'f> {
    module: &'f str,
    qualname: &'f str,
    function: Function<'f>,
    task_name: String,
    raws: Vec<RawValue>,
}

/// Which function a call runs: an exported one (by id) or one whose bytes
/// the descriptor carries.
#[derive(Clone, Copy)]
enum Function<'f> {
    Exported(FunctionId),
    Inline(&'f [u8]),
}

impl<'f> Call<'f> {
    fn read(function: &'f FunctionDescriptor, args: &mut ArgReader<'_>) -> ferroray::Result<Self> {
        let (module, qualname, function) = describe(function)?;
        let task_name = args.context().name.clone();
        let raws = raw_args(args, &task_name)?;
        Ok(Call { module, qualname, function, task_name, raws })
    }
}

fn describe(function: &FunctionDescriptor) -> ferroray::Result<(&str, &str, Function<'_>)> {
    match function {
        FunctionDescriptor::Python { module, qualname, function: Some(f), .. } => {
            Ok((module, qualname, Function::Exported(*f)))
        }
        FunctionDescriptor::Python { module, qualname, function: None, pickled } => {
            Ok((module, qualname, Function::Inline(pickled)))
        }
        FunctionDescriptor::Rust { .. } => Err(Error::UnknownFunction(function.display_name().to_string())),
    }
}

impl PyRunner {
    /// The runner's `(key, pickled)` for a function: an exported one's key
    /// is its id, and its bytes go to Python only the first time (Python
    /// keeps what it unpickled, or why it could not); an inline one is its
    /// own key.
    fn function_args<'py>(
        &self,
        py: Python<'py>,
        function: Function<'_>,
    ) -> ferroray::Result<(Bound<'py, PyAny>, Option<Bound<'py, PyBytes>>)> {
        match function {
            Function::Inline(bytes) => {
                let bytes = PyBytes::new(py, bytes);
                Ok((bytes.clone().into_any(), Some(bytes)))
            }
            Function::Exported(f) => {
                let Ok(key) = (((f.exporter.0 as u128) << 64) | f.seq as u128).into_pyobject(py);
                let mut loaded = self.loaded.lock().map_err(|_| Error::Protocol("a poisoned lock".into()))?;
                if loaded.contains(&f) {
                    return Ok((key.into_any(), None));
                }
                let core = ferroray_core::global::core()?;
                let bytes = core
                    .function_bytes(f)
                    .ok_or_else(|| Error::UnknownFunction(format!("function {f} was never sent to this worker")))?;
                loaded.insert(f);
                Ok((key.into_any(), Some(PyBytes::new(py, &bytes))))
            }
        }
    }
}

/// The instance a Python actor's state holds.
fn instance(actor: &dyn Any) -> ferroray::Result<&Py<PyAny>> {
    actor.downcast_ref::<Py<PyAny>>().ok_or_else(|| Error::Protocol("this actor's state is not a Python object".into()))
}

impl ForeignFunctions for PyRunner {
    fn run(
        &self,
        function: &FunctionDescriptor,
        actor: Option<&dyn Any>,
        args: &mut ArgReader<'_>,
        returns: usize,
    ) -> ferroray::Result<Vec<ReturnValue>> {
        // `run` for a task, `call` for a method of `actor`.
        let Call { module, qualname, function, task_name, raws } = Call::read(function, args)?;
        Python::attach(|py| {
            let py_args = py_values(py, raws, &task_name)?;
            let runner = self.runner.bind(py);
            let out = match actor {
                None => {
                    let (key, pickled) = self.function_args(py, function)?;
                    runner.call_method1("run", (key, pickled, module, qualname, py_args, returns))
                }
                Some(a) => runner.call_method1("call", (instance(a)?.bind(py), qualname, py_args, returns)),
            }
            .map_err(|e| py_error(py, e, &task_name))?;
            let values = unwrap_outcome(out, &task_name)?;
            let values = values.cast_into::<PyList>().map_err(|e| py_error(py, e.into(), &task_name))?;
            values.iter().map(|v| encode_value(&v, &task_name)).collect()
        })
    }

    fn run_items(
        &self,
        function: &FunctionDescriptor,
        actor: Option<&dyn Any>,
        args: &mut ArgReader<'_>,
        sink: &mut dyn ItemSink,
    ) -> ferroray::Result<()> {
        let Call { module, qualname, function, task_name, raws } = Call::read(function, args)?;
        let items: Py<PyAny> = Python::attach(|py| {
            let py_args = py_values(py, raws, &task_name)?;
            let runner = self.runner.bind(py);
            match actor {
                None => {
                    let (key, pickled) = self.function_args(py, function)?;
                    runner.call_method1("run_gen", (key, pickled, module, qualname, py_args))
                }
                Some(a) => runner.call_method1("call_gen", (instance(a)?.bind(py), qualname, py_args)),
            }
            .map(Bound::unbind)
            .map_err(|e| py_error(py, e, &task_name))
        })?;
        loop {
            // The GIL only while Python makes the next value: the sink may
            // wait for room (backpressure) without it.
            let next: Option<ferroray::Result<ReturnValue>> = Python::attach(|py| {
                let out = match items.bind(py).call_method0("__next__") {
                    Ok(out) => out,
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => return None,
                    Err(e) => return Some(Err(py_error(py, e, &task_name))),
                };
                let out = match out.cast_into::<PyTuple>() {
                    Ok(t) => t,
                    Err(e) => return Some(Err(py_error(py, e.into(), &task_name))),
                };
                Some(match out.get_item(0).and_then(|t| t.extract::<String>()) {
                    Ok(tag) if tag == "ok" => encode_value(&out.get_slice(1, 3).into_any(), &task_name),
                    Ok(_) => Err(task_error(&out, &task_name)),
                    Err(e) => Err(py_error(py, e, &task_name)),
                })
            });
            match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(value)) => sink.item(value)?,
            }
        }
    }

    fn is_generator(&self, function: &FunctionDescriptor, actor: Option<&dyn Any>) -> bool {
        let Ok((_, qualname, function)) = describe(function) else {
            return false;
        };
        if actor.is_some() {
            if let Some(known) = self.generator_methods.lock().ok().and_then(|m| m.get(qualname).copied()) {
                return known;
            }
        }
        let answer = Python::attach(|py| {
            let runner = self.runner.bind(py);
            let answer = match actor {
                None => match self.function_args(py, function) {
                    Ok((key, pickled)) => runner.call_method1("is_generator", (key, pickled)),
                    Err(_) => return false,
                },
                Some(a) => match instance(a) {
                    Ok(obj) => runner.call_method1("is_generator_method", (obj.bind(py), qualname)),
                    Err(_) => return false,
                },
            };
            // A function that does not unpickle is no generator: `run`
            // then reports why.
            answer.and_then(|v| v.extract::<bool>()).unwrap_or(false)
        });
        if actor.is_some() {
            if let Ok(mut known) = self.generator_methods.lock() {
                known.insert(qualname.to_string(), answer);
            }
        }
        answer
    }

    fn serve_async(&self, actor: &dyn Any, calls: AsyncCalls) -> ferroray::Result<()> {
        Python::attach(|py| {
            let calls = Bound::new(py, PyAsyncCalls { calls }).map_err(|e| py_error(py, e, "an async actor"))?;
            self.runner
                .bind(py)
                .call_method1("serve_async", (instance(actor)?.bind(py), calls))
                .map(|_| ())
                .map_err(|e| py_error(py, e, "an async actor's event loop"))
        })
    }

    fn construct(
        &self,
        function: &FunctionDescriptor,
        args: &mut ArgReader<'_>,
    ) -> ferroray::Result<Box<dyn Any + Send + Sync>> {
        let Call { module, qualname, function, task_name, raws } = Call::read(function, args)?;
        Python::attach(|py| {
            let py_args = py_values(py, raws, &task_name)?;
            let (key, pickled) = self.function_args(py, function)?;
            let out = self
                .runner
                .bind(py)
                .call_method1("construct", (key, pickled, module, qualname, py_args))
                .map_err(|e| py_error(py, e, &task_name))?;
            let obj = unwrap_outcome(out, &task_name)?;
            Ok(Box::new(obj.unbind()) as Box<dyn Any + Send + Sync>)
        })
    }
}

/// An async actor's calls, as its event loop (`ferroray._worker`'s
/// `AsyncServer`) takes them: the core's `AsyncCalls`, whose docs give
/// the protocol.
#[pyclass(frozen, module = "ferroray._ferroray", name = "AsyncCalls")]
pub(crate) struct PyAsyncCalls {
    calls: AsyncCalls,
}

/// A started call as the loop gets it: token, task id (hex, and as an int
/// for the calls it makes), method name, arguments, and `num_returns` (-1
/// for a streaming or dynamic generator).
type StartedTuple<'py> = (u64, (String, u128), String, Bound<'py, PyList>, i64);

#[pymethods]
impl PyAsyncCalls {
    /// The fd to watch for readability (`loop.add_reader`).
    fn fileno(&self) -> i32 {
        self.calls.fd()
    }

    /// What happened since the last call: `(started calls, tokens of calls
    /// to cancel, [(token, go on?)] for generators that waited for room)`.
    #[allow(clippy::type_complexity)]
    fn take<'py>(&self, py: Python<'py>) -> PyResult<(Vec<StartedTuple<'py>>, Vec<u64>, Vec<(u64, bool)>)> {
        let taken = self.calls.take();
        let mut started = Vec::with_capacity(taken.started.len());
        for call in taken.started {
            let task_name = call.method.clone();
            let raws = call.args;
            let encodings_ok =
                raws.iter().position(|r| !matches!(r.encoding(), Encoding::Raw | Encoding::RefList | Encoding::Unit));
            let args = match encodings_ok {
                Some(i) => Err(Error::Serialization(format!("argument {i} of {task_name} is not a Python value"))),
                None => py_values(py, raws, &task_name),
            };
            match args {
                Ok(args) => {
                    let returns = match call.returns {
                        CallReturns::Fixed(n) => n as i64,
                        CallReturns::Items => -1,
                    };
                    let task = (call.task_id.to_string(), crate::tasks::task_int(call.task_id));
                    started.push((call.token, task, call.method, args, returns));
                }
                Err(e) => self.calls.finish(call.token, Some(Err(e))),
            }
        }
        Ok((started, taken.cancelled, taken.resumed))
    }

    /// One item of generator call `token`: `(payload, [refs])` as `dumps`
    /// makes it. True: wait until `take` resumes it. Raises when the
    /// generator must stop (then `finish(token, ("stopped",))`).
    fn item(&self, token: u64, value: Bound<'_, PyAny>) -> PyResult<bool> {
        let value = encode_value(&value, "an async generator").map_err(core_err)?;
        self.calls.item(token, value).map_err(core_err)
    }

    /// Ends call `token`: `("ok", [values])`, `("err", ...)` as the runner
    /// answers, `("cancelled",)`, or `("stopped",)` after `item` refused.
    fn finish(&self, token: u64, outcome: Bound<'_, PyAny>) {
        let task_name = "an async actor's method";
        let tag: Option<String> = outcome.get_item(0).and_then(|t| t.extract()).ok();
        let result = match tag.as_deref() {
            Some("stopped") => None,
            Some("cancelled") => Some(Err(Error::TaskCancelled)),
            _ => {
                let py = outcome.py();
                Some(unwrap_outcome(outcome, task_name).and_then(|values| {
                    let values = values.cast_into::<PyList>().map_err(|e| py_error(py, e.into(), task_name))?;
                    values.iter().map(|v| encode_value(&v, task_name)).collect()
                }))
            }
        };
        self.calls.finish(token, result);
    }
}

/// Serves tasks until the node goes (the process then exits). `runner` is
/// a `ferroray._worker.Runner`.
#[pyfunction]
pub(crate) fn worker_main(py: Python<'_>, runner: Py<PyAny>) -> PyResult<()> {
    py.detach(|| {
        ferroray_core::worker::foreign_worker_main(Box::new(PyRunner {
            runner,
            generator_methods: Default::default(),
            loaded: Default::default(),
        }))
    })
    .map_err(core_err)
}
