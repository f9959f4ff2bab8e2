//! Actors: creating one from a pickled class, the `ActorHandle` class (its
//! calls, `kill`, passing it on), and `get_actor`.
//!
//! A Python actor runs on the core's serial executor, or on its threaded
//! one when `max_concurrency` is above 1; every method may run beside any
//! other (Python has no `&mut self`). An async actor (a class with an
//! `async def` method) runs its calls on one asyncio event loop in its
//! process (`ferroray._worker.AsyncServer`), as Ray does.

use crate::core_err;
use crate::objects::ObjectRef;
use crate::tasks::{add_args, backpressure, retries, Returns};
use ferroray::RawValue;
use ferroray_core::task::{TaskCall, TaskOptions};
use ferroray_core::{ActorKind, ActorOptions, RawActorHandle};
use ferroray_protocol::FunctionDescriptor;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// A handle to an actor (the core's untyped handle): counted like a ref, so
/// the actor ends when the last handle anywhere is gone.
#[pyclass(frozen, module = "ferroray._ferroray", name = "ActorHandle")]
pub struct ActorHandle {
    raw: RawActorHandle,
}

#[pymethods]
impl ActorHandle {
    /// Calls `method` with `args` (as a task's); returns as `submit` does.
    #[pyo3(signature = (method, args, num_returns, backpressure=None, parent=None))]
    fn _call<'py>(
        &self,
        py: Python<'py>,
        method: String,
        args: Vec<Bound<'py, PyAny>>,
        num_returns: Bound<'py, PyAny>,
        backpressure: Option<i64>,
        parent: Option<u128>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let returns = Returns::parse(&num_returns)?;
        let opts = TaskOptions { generator_backpressure: self::backpressure(backpressure)?, ..TaskOptions::default() };
        let function = FunctionDescriptor::Python {
            module: self.raw.class().to_string(),
            qualname: method,
            function: None,
            pickled: Vec::new(),
        };
        let mut call = self.raw.call_foreign(function, opts);
        if let Some(parent) = parent {
            call = call.parent(crate::tasks::task_id(parent));
        }
        add_args(&mut call, &args)?;
        returns.submit(py, call)
    }

    /// Ends the actor now; with `no_restart` false it may restart.
    fn _kill(&self, py: Python<'_>, no_restart: bool) -> PyResult<()> {
        py.detach(|| self.raw.kill(no_restart)).map_err(core_err)
    }

    /// Ends the actor once the calls made to it are done.
    fn _terminate(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.raw.terminate()).map_err(core_err)
    }

    /// The actor's class (`module.Qualname`).
    fn _class_name(&self) -> String {
        self.raw.class().to_string()
    }

    /// The method table its creator kept with the actor (pickled; empty
    /// for a handle that travelled in a value).
    fn _methods<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.raw.front())
    }

    /// The actor's id as hex.
    fn _actor_id(&self) -> Option<String> {
        self.raw.id().map(|id| id.to_string())
    }

    /// Travels as its handle object's ref (counted where it lands).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let handle = self.raw.handle().map_err(core_err)?;
        let handle = Bound::new(py, ObjectRef { inner: handle.clone().cast::<RawValue>() })?;
        let make = py.import("ferroray._ferroray")?.getattr("_actor_from_handle")?;
        let args = (handle, self.raw.class()).into_pyobject(py)?.into_any();
        PyTuple::new(py, [make, args])
    }
}

/// A handle from the ref of its handle object and its class's name.
#[pyfunction]
pub(crate) fn _actor_from_handle(handle: Bound<'_, ObjectRef>, class: &str) -> ActorHandle {
    ActorHandle { raw: RawActorHandle::from_handle(handle.get().inner.clone().cast(), class) }
}

/// Creates an actor of the pickled class; it starts in the background.
#[pyfunction]
#[pyo3(signature = (class_function, module, qualname, args, name, detached, max_restarts, max_task_retries, max_concurrency, num_cpus, num_gpus, resources, asynchronous=false, methods=Vec::new(), parent=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_actor(
    py: Python<'_>,
    class_function: u128,
    module: String,
    qualname: String,
    args: Vec<Bound<'_, PyAny>>,
    name: Option<String>,
    detached: bool,
    max_restarts: i64,
    max_task_retries: i64,
    max_concurrency: u32,
    num_cpus: f64,
    num_gpus: f64,
    resources: Vec<(String, f64)>,
    asynchronous: bool,
    methods: Vec<u8>,
    parent: Option<u128>,
) -> PyResult<ActorHandle> {
    let class = format!("{module}.{qualname}");
    let opts = ActorOptions {
        name,
        detached,
        max_restarts: retries("max_restarts", max_restarts)?,
        max_task_retries: retries("max_task_retries", max_task_retries)?,
        max_concurrency: Some(max_concurrency),
        num_cpus,
        num_gpus,
        resources,
        front: methods,
    };
    let function = Some(crate::tasks::function_id(class_function));
    let mut call = TaskCall::foreign(
        FunctionDescriptor::Python { module, qualname, function, pickled: Vec::new() },
        TaskOptions::default(),
    );
    if let Some(parent) = parent {
        call = call.parent(crate::tasks::task_id(parent));
    }
    add_args(&mut call, &args)?;
    // Python state is shared by threads under the GIL; an async class's
    // calls run on one asyncio event loop that takes them from the core
    // (`ferroray_core::worker::AsyncCalls`).
    let kind = ActorKind { asynchronous, shareable: true };
    let raw = py.detach(|| call.create_actor(&class, &opts, kind)).map_err(core_err)?;
    Ok(ActorHandle { raw })
}

/// The live actor named `name`.
#[pyfunction]
pub(crate) fn get_actor(py: Python<'_>, name: String) -> PyResult<ActorHandle> {
    let raw = py.detach(|| ferroray_core::get_actor_raw(&name)).map_err(core_err)?;
    Ok(ActorHandle { raw })
}
