//! Task options, arguments and submission.

use crate::codec::{self, ReturnValue, ShmPin, Source};
use crate::context::{self, TaskContext};
use crate::global;
use crate::object_ref::{ObjectRef, RefInner};
use crate::worker::CoreWorker;
use ferroray_common::{resources, ActorId, Error, ObjectId, ResourceSet, Result, RetryExceptions, TaskError, TaskId};
use ferroray_protocol::{ActorTask, FunctionDescriptor, Payload, ReturnKind, TaskArg, TaskSpec};
use serde::{de::DeserializeOwned, Serialize};
use std::num::NonZeroU32;
use std::sync::Arc;

/// How many times a task runs again after its worker dies (a system
/// failure; with `retry_exceptions`, also after its own error): a count, or
/// forever. Like Ray's `max_retries` (whose "forever" is `-1`).
///
/// A count converts from a `u32`, so `max_retries(3)` and
/// `max_retries(Retries::Forever)` both work, and a negative count does
/// not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retries {
    /// At most this many more attempts (0: never retried).
    Count(u32),
    /// Retried every time.
    Forever,
}

impl From<u32> for Retries {
    fn from(n: u32) -> Self {
        Retries::Count(n)
    }
}

impl Retries {
    /// The wire form: `u32::MAX` is forever, so a count stops one below.
    pub fn to_wire(self) -> u32 {
        match self {
            Retries::Forever => u32::MAX,
            Retries::Count(n) => n.min(u32::MAX - 1),
        }
    }
}

/// A streaming generator's backpressure limit: the task pauses while this
/// many yielded items are unconsumed. Never 0 (a generator that may hold no
/// item could never yield): built from a `NonZeroU32`, or with
/// [`Backpressure::items`], which refuses 0 at compile time. Like Ray's
/// `_generator_backpressure_num_objects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backpressure(NonZeroU32);

impl Backpressure {
    /// A limit of `N` items: `Backpressure::items::<4>()`; `N = 0` fails to
    /// build (a constant evaluated when the call is compiled to code, so
    /// `cargo build` reports it and `cargo check` does not).
    pub const fn items<const N: u32>() -> Self {
        Backpressure(
            const {
                match NonZeroU32::new(N) {
                    Some(n) => n,
                    None => panic!("generator backpressure must be at least 1 item"),
                }
            },
        )
    }

    /// A limit known only at run time: `None` for 0.
    pub const fn new(n: u32) -> Option<Self> {
        match NonZeroU32::new(n) {
            Some(n) => Some(Backpressure(n)),
            None => None,
        }
    }

    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl From<NonZeroU32> for Backpressure {
    fn from(n: NonZeroU32) -> Self {
        Backpressure(n)
    }
}

/// Per-call options, set by `#[remote(...)]` and overridden by `options()`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    pub num_cpus: f64,
    pub num_gpus: f64,
    pub resources: Vec<(String, f64)>,
    /// Retries after a system failure.
    pub max_retries: Retries,
    pub retry_exceptions: RetryExceptions,
    pub enable_task_events: bool,
    /// Streaming generators only: most generated-but-unconsumed items
    /// (`None`: no limit).
    pub generator_backpressure: Option<Backpressure>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            num_cpus: 1.0,
            num_gpus: 0.0,
            resources: Vec::new(),
            max_retries: Retries::Count(3),
            retry_exceptions: RetryExceptions::None,
            enable_task_events: true,
            generator_backpressure: None,
        }
    }
}

use ferroray_common::resources::check_amount;

impl TaskOptions {
    /// The resource request, or the first invalid option.
    pub fn resource_set(&self) -> Result<ResourceSet> {
        check_amount("num_cpus", self.num_cpus)?;
        check_amount("num_gpus", self.num_gpus)?;
        let mut set = ResourceSet::new().with(resources::CPU, self.num_cpus).with(resources::GPU, self.num_gpus);
        for (name, amount) in &self.resources {
            if name.is_empty() {
                return Err(Error::InvalidOption("a resource name must not be empty".into()));
            }
            check_amount(&format!("resource {name:?}"), *amount)?;
            set.set(name, *amount);
        }
        Ok(set)
    }

    /// The backpressure limit of a streaming generator, as sent (the node
    /// still refuses a 0 that reaches it over the wire).
    pub fn backpressure(&self) -> Option<u32> {
        self.generator_backpressure.map(Backpressure::get)
    }

    /// `max_retries` as sent: `u32::MAX` is forever.
    pub fn max_retries_u32(&self) -> u32 {
        self.max_retries.to_wire()
    }
}

/// The builder methods of a function's `options()`, shared by every
/// `#[remote]` expansion (which wraps a `TaskOptions` in a field `opts`).
///
/// Amounts (`num_cpus`, `num_gpus`, a resource's amount) take any
/// `impl Into<f64>`, so `num_cpus(2)` and `num_cpus(0.5)` both work;
/// `max_retries` takes an `impl Into<Retries>` (`3` or `Retries::Forever`)
/// and `generator_backpressure` an `impl Into<Backpressure>` (a
/// `NonZeroU32`, or `Backpressure::items::<4>()`), so neither can be given
/// a value without meaning. An invalid amount (negative, not finite) is
/// reported by `.remote(..)`: the returned ref's `get` fails with
/// `Error::InvalidOption`.
#[macro_export]
#[doc(hidden)]
macro_rules! __task_options_methods {
    () => {
        /// CPUs the task holds while it runs: default 1, may be fractional
        /// (`num_cpus(2)`, `num_cpus(0.5)`). Like Ray's `num_cpus`.
        pub fn num_cpus(mut self, n: impl ::core::convert::Into<f64>) -> Self {
            self.opts.num_cpus = ::core::convert::Into::into(n);
            self
        }
        /// GPUs the task holds while it runs: default 0, may be fractional.
        /// Like Ray's `num_gpus`.
        pub fn num_gpus(mut self, n: impl ::core::convert::Into<f64>) -> Self {
            self.opts.num_gpus = ::core::convert::Into::into(n);
            self
        }
        /// An amount of a custom resource (declared with
        /// `Config::resource`) the task holds while it runs; call once per
        /// resource. Like one entry of Ray's `resources={..}`.
        pub fn resource(mut self, name: &str, amount: impl ::core::convert::Into<f64>) -> Self {
            self.opts.resources.push((::std::string::ToString::to_string(name), ::core::convert::Into::into(amount)));
            self
        }
        /// Times the task is run again after its worker dies: default 3;
        /// `max_retries(0)` never, `max_retries(Retries::Forever)` always.
        /// Like Ray's `max_retries` (where forever is `-1`).
        pub fn max_retries(mut self, n: impl ::core::convert::Into<$crate::task::Retries>) -> Self {
            self.opts.max_retries = ::core::convert::Into::into(n);
            self
        }
        /// Also retry (up to `max_retries`) when the task returns `Err` or
        /// panics: default false. Like Ray's `retry_exceptions=True`.
        pub fn retry_exceptions(mut self, on: bool) -> Self {
            self.opts.retry_exceptions = if on { $crate::RetryExceptions::All } else { $crate::RetryExceptions::None };
            self
        }
        /// Retry only errors whose type name ends with one of these strings,
        /// e.g. `&["ParseIntError"]` (a suffix match on
        /// `std::any::type_name`: `"Flaky"` also matches `NotFlaky`). Replaces
        /// any earlier `retry_exceptions*` setting. Prefer
        /// [`retry_exceptions_of`](Self::retry_exceptions_of), which names
        /// the type itself. Like Ray's `retry_exceptions=[..]`.
        pub fn retry_exceptions_for(mut self, types: &[&str]) -> Self {
            self.opts.retry_exceptions =
                $crate::RetryExceptions::Types(types.iter().map(|t| ::std::string::ToString::to_string(t)).collect());
            self
        }
        /// Retry (up to `max_retries`) when the task fails with an `Err` of
        /// exactly the type `E`; call once per type, e.g.
        /// `.retry_exceptions_of::<Flaky>().retry_exceptions_of::<std::io::Error>()`.
        /// Matches `std::any::type_name::<E>()` exactly (a task that passes
        /// on a nested task's error with `?` fails with that error's type).
        /// The first call replaces a `retry_exceptions(..)` or
        /// `retry_exceptions_for(..)` setting; later calls add types. Like
        /// Ray's `retry_exceptions=[MyError, ..]`.
        pub fn retry_exceptions_of<E: ?::core::marker::Sized>(mut self) -> Self {
            self.opts.retry_exceptions.add_type::<E>();
            self
        }
        /// Streaming generators: pause the task while this many yielded
        /// items are unconsumed: default no limit. Takes a `NonZeroU32` or
        /// a `Backpressure` (`Backpressure::items::<4>()`), so 0 cannot be
        /// given. Like Ray's `_generator_backpressure_num_objects`.
        pub fn generator_backpressure(mut self, n: impl ::core::convert::Into<$crate::task::Backpressure>) -> Self {
            self.opts.generator_backpressure = ::core::option::Option::Some(::core::convert::Into::into(n));
            self
        }
        /// Streaming generators: no backpressure limit (the default; undoes
        /// an attribute's or an earlier call's `generator_backpressure`).
        pub fn no_generator_backpressure(mut self) -> Self {
            self.opts.generator_backpressure = ::core::option::Option::None;
            self
        }
        /// Record this task's state changes for `ferroray::tasks()`:
        /// default true. Like Ray's `enable_task_events`.
        pub fn enable_task_events(mut self, on: bool) -> Self {
            self.opts.enable_task_events = on;
            self
        }
    };
}

/// An argument: a value, or a ref whose value the task receives.
pub enum Arg<T> {
    Value(T),
    Ref(ObjectRef<T>),
}

/// What a remote function's parameter of type `T` accepts: a `T`, an
/// `ObjectRef<T>` or a `&ObjectRef<T>`.
#[diagnostic::on_unimplemented(
    message = "a remote function's `{T}` argument cannot be given a `{Self}`",
    label = "expected `{T}`, `ObjectRef<{T}>` or `&ObjectRef<{T}>`"
)]
pub trait IntoArg<T> {
    fn into_arg(self) -> Arg<T>;
}

impl<T> IntoArg<T> for T {
    fn into_arg(self) -> Arg<T> {
        Arg::Value(self)
    }
}
impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self)
    }
}
impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self.clone())
    }
}

/// A task being put together by a `remote()` call.
pub struct TaskCall {
    name: &'static str,
    /// The function of another language's front (`TaskCall::foreign`);
    /// `None`: the Rust function `name`.
    foreign: Option<FunctionDescriptor>,
    opts: TaskOptions,
    args: Vec<TaskArg>,
    contained: Vec<ObjectId>,
    /// Handles that must outlive the `Submit` message.
    keep: Vec<Arc<RefInner>>,
    /// Bytes of arguments sent inline so far.
    inline_bytes: usize,
    error: Option<Error>,
    core: Result<Arc<CoreWorker>>,
    /// A method call on this actor (its handle object rides in `contained`).
    actor: Option<ActorId>,
    /// The task this call is made from, when the front knows better than
    /// the thread's task context ([`TaskCall::parent`]).
    parent: Option<TaskId>,
}

/// Past this many bytes of inline arguments, further arguments become
/// objects of their own, so a task always fits in one message.
const MAX_INLINE_ARGS: usize = ferroray_protocol::limits::INLINE_ARGS;

impl TaskCall {
    pub fn new(name: &'static str, opts: TaskOptions) -> Self {
        TaskCall {
            name,
            foreign: None,
            opts,
            args: Vec::new(),
            contained: Vec::new(),
            keep: Vec::new(),
            inline_bytes: 0,
            error: None,
            core: global::core_or_init(),
            actor: None,
            parent: None,
        }
    }

    /// The task this call is made from (what a recursive cancel of that
    /// task reaches), for a front whose running call is not the thread's:
    /// the calls of an async actor of another language share one thread.
    /// By default, the task running on this thread.
    pub fn parent(mut self, parent: TaskId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// A call of a function that another language's front defines (its
    /// values are that front's bytes: see [`TaskCall::arg_raw`]).
    pub fn foreign(function: FunctionDescriptor, opts: TaskOptions) -> Self {
        let mut call = TaskCall::new("", opts);
        call.foreign = Some(function);
        call
    }

    /// The function this call runs.
    fn function(&self) -> FunctionDescriptor {
        self.foreign.clone().unwrap_or_else(|| FunctionDescriptor::Rust { name: self.name.to_string() })
    }

    /// An argument a front encoded itself ([`Encoding::Raw`]); `nested` are
    /// the refs its bytes name, kept alive while the task may run.
    pub fn arg_raw(&mut self, bytes: &[u8], nested: &[ObjectRef<crate::RawValue>]) {
        let Ok(core) = &self.core else { return };
        if self.error.is_some() {
            return;
        }
        let value = codec::encode_raw(core, bytes, nested.iter().map(|r| r.inner.clone()).collect());
        match value {
            Err(e) => self.error = Some(e),
            Ok(rv) => self.push_value(rv),
        }
    }

    /// An argument a front encoded (a [`codec::RawSlot`] it filled, say).
    pub fn arg_encoded(&mut self, value: codec::ReturnValue) {
        if self.core.is_err() || self.error.is_some() {
            return;
        }
        self.push_value(value);
    }

    /// A ref argument: the task gets its value.
    pub fn arg_ref<T>(&mut self, r: &ObjectRef<T>) {
        if self.core.is_err() || self.error.is_some() {
            return;
        }
        self.args.push(TaskArg::Ref(r.id()));
        self.keep.push(r.inner.clone());
    }

    pub fn arg<T: Serialize>(&mut self, arg: Arg<T>) {
        let Ok(core) = &self.core else { return };
        if self.error.is_some() {
            return;
        }
        match arg {
            Arg::Ref(r) => {
                self.args.push(TaskArg::Ref(r.id()));
                self.keep.push(r.inner);
            }
            Arg::Value(v) => match codec::encode(core, &v) {
                Err(e) => self.error = Some(e),
                Ok(rv) => self.push_value(rv),
            },
        }
    }

    /// An encoded argument: inline, or an object of its own when large.
    fn push_value(&mut self, rv: codec::ReturnValue) {
        let Ok(core) = &self.core else { return };
        let (value, keep) = rv.into_parts();
        match value {
            // Inline, while the task's inline arguments stay well inside one
            // message.
            ferroray_protocol::ObjectValue::Data { payload: Payload::Inline(b), encoding, contained }
                if self.inline_bytes + b.len() <= MAX_INLINE_ARGS =>
            {
                self.inline_bytes += b.len();
                self.args.push(TaskArg::Value { payload: Payload::Inline(b), encoding });
                self.contained.extend(contained);
                self.keep.extend(keep);
            }
            // A large argument becomes an object of its own (so the node can
            // pin it and hand it to the worker zero-copy).
            value => match core.put_value(value, keep) {
                Ok(inner) => {
                    self.args.push(TaskArg::Ref(inner.id));
                    self.keep.push(inner);
                }
                Err(e) => self.error = Some(e),
            },
        }
    }

    /// Makes this a method call on actor `actor`; `handle` (a hold on its
    /// handle object) keeps the actor alive until the call is done.
    pub(crate) fn on_actor(mut self, actor: ActorId, handle: Arc<RefInner>) -> Self {
        self.actor = Some(actor);
        self.contained.push(handle.id);
        self.keep.push(handle);
        self
    }

    /// Makes every ref of this call fail with `e`.
    pub(crate) fn failed(mut self, e: Error) -> Self {
        self.error.get_or_insert(e);
        self
    }

    pub(crate) fn with_options(mut self, opts: TaskOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The spec of this call (the first error met, if any), the core worker
    /// to send it with, and the handles to keep until it is sent.
    pub(crate) fn into_spec(
        self,
        returns: ReturnKind,
        actor: Option<ActorTask>,
    ) -> Result<(TaskSpec, Arc<CoreWorker>, Vec<Arc<RefInner>>)> {
        let function = self.function();
        let core = self.core?;
        if let Some(e) = self.error {
            return Err(e);
        }
        let spec = TaskSpec {
            task_id: core.next_task_id(),
            function,
            args: self.args,
            contained: self.contained,
            returns,
            resources: self.opts.resource_set()?,
            max_retries: self.opts.max_retries_u32(),
            retry_exceptions: self.opts.retry_exceptions.clone(),
            parent: self.parent.or_else(|| context::current().map(|c| c.task_id)),
            enable_events: self.opts.enable_task_events,
            attempt: 0,
            actor,
        };
        Ok((spec, core, self.keep))
    }

    /// Submits the task; one handle per return object. An invalid call still
    /// gives handles: their `get` returns the error.
    pub fn submit(mut self, returns: ReturnKind) -> Vec<Arc<RefInner>> {
        let function = self.function();
        // No cluster, and none could be started (see `global::core_or_init`):
        // the refs hand out why, from a core worker connected to nothing.
        let core = match self.core {
            Ok(c) => c,
            Err(e) => {
                let core = CoreWorker::detached(&e.to_string())
                    .unwrap_or_else(|| panic!("cannot submit task {}: {e}", function.display_name()));
                self.error = Some(e);
                core
            }
        };
        let task_id = core.next_task_id();
        let returns = match (returns, self.opts.backpressure()) {
            (ReturnKind::Streaming { .. }, backpressure) => ReturnKind::Streaming { backpressure },
            (_, Some(_)) => {
                self.error.get_or_insert(Error::InvalidOption(
                    "generator_backpressure applies only to streaming generators, not to fixed or dynamic returns"
                        .into(),
                ));
                returns
            }
            (_, None) => returns,
        };
        // A method call holds no resources (it runs inside its actor's
        // process) and is retried by the actor's `max_task_retries`.
        let actor = self.actor.map(|actor| ActorTask::Call { actor });
        let checked = self.error.map_or(Ok(()), Err).and_then(|_| match actor {
            Some(_) => Ok((ResourceSet::new(), 0)),
            None => Ok((self.opts.resource_set()?, self.opts.max_retries_u32())),
        });
        let spec = checked.map(|(resources, max_retries)| TaskSpec {
            task_id,
            function,
            args: self.args,
            contained: self.contained,
            returns,
            resources,
            max_retries,
            retry_exceptions: self.opts.retry_exceptions.clone(),
            parent: self.parent.or_else(|| context::current().map(|c| c.task_id)),
            enable_events: self.opts.enable_task_events,
            attempt: 0,
            actor,
        });
        let refs = core.submit(task_id, returns, spec);
        drop(self.keep);
        refs
    }

    pub fn submit_one<T>(self) -> ObjectRef<T> {
        let mut refs = self.submit(ReturnKind::Fixed(1));
        ObjectRef::from_inner(refs.remove(0))
    }

    pub fn submit_many(self, n: u32) -> Vec<Arc<RefInner>> {
        self.submit(ReturnKind::Fixed(n))
    }

    /// Submits a streaming generator task.
    pub fn submit_streaming<T>(self) -> crate::ObjectRefGenerator<T> {
        let mut refs = self.submit(ReturnKind::Streaming { backpressure: None });
        crate::ObjectRefGenerator::new(refs.remove(0))
    }

    /// Submits a generator task whose items come as one list at the end.
    pub fn submit_dynamic<T>(self) -> ObjectRef<crate::DynamicObjectRefGenerator<T>> {
        let mut refs = self.submit(ReturnKind::Dynamic);
        ObjectRef::from_inner(refs.remove(0))
    }
}

/// Reads a task's arguments in order, as the worker runs it.
pub struct ArgReader<'a> {
    pub(crate) core: &'a Arc<CoreWorker>,
    pub(crate) args: std::vec::IntoIter<TaskArg>,
    pub(crate) position: usize,
    /// The running task (its name is the function's, for errors).
    pub(crate) ctx: &'a TaskContext,
}

impl ArgReader<'_> {
    /// The task these arguments are for.
    pub fn context(&self) -> &TaskContext {
        self.ctx
    }

    pub fn next_arg<T: DeserializeOwned>(&mut self) -> Result<T> {
        let (i, source) = self.next_source()?;
        codec::decode(&source)
            .map_err(|e| Error::Serialization(format!("argument {i} of {} does not decode: {e}", self.ctx.name)))
    }

    /// The next argument's bytes as stored, for a front that decodes values
    /// itself (a shared-memory value is a view, pinned while it lives).
    pub fn next_raw(&mut self) -> Result<crate::RawValue> {
        self.next_source().map(|(_, source)| crate::RawValue::from_source(source))
    }

    /// The next argument's position and where its bytes are.
    fn next_source(&mut self) -> Result<(usize, Source)> {
        let i = self.position;
        self.position += 1;
        let arg = self
            .args
            .next()
            .ok_or_else(|| Error::Serialization(format!("{} takes more arguments than were sent", self.ctx.name)))?;
        self.source(i, arg).map(|s| (i, s))
    }

    /// Where argument `i`'s bytes are.
    fn source(&self, i: usize, arg: TaskArg) -> Result<Source> {
        Ok(match arg {
            TaskArg::Value { payload: Payload::Inline(b), encoding }
            | TaskArg::Object { payload: Payload::Inline(b), encoding, .. } => Source::Inline(Arc::new(b), encoding),
            TaskArg::Object { id, payload: Payload::Shm { offset, len }, encoding } => Source::Shm(
                Arc::new(ShmPin { id, offset, len, arena: self.core.arena().clone(), core: Arc::downgrade(self.core) }),
                encoding,
            ),
            TaskArg::Ref(id) => {
                // Left as a ref by the node (too much inline data for one
                // message): fetch it. The node pins it for the task.
                let hold = RefInner::borrowed(self.core, id);
                let r = self.core.get_source(id, None);
                drop(hold);
                return r.map_err(|e| Error::Serialization(format!("argument {i} of {}: {e}", self.ctx.name)));
            }
            TaskArg::Value { payload: Payload::Shm { .. }, .. } => {
                return Err(Error::Protocol(format!("argument {i} of {} was not resolved", self.ctx.name)))
            }
        })
    }

    /// How many arguments are left to read.
    pub fn remaining(&self) -> usize {
        self.args.len()
    }

    /// Checks that every argument sent was read.
    pub fn finish(&mut self) -> Result<()> {
        match self.args.len() {
            0 => Ok(()),
            n => Err(Error::Serialization(format!("{} got {n} more arguments than it takes", self.ctx.name))),
        }
    }
}

/// Encodes one return value (used by `#[remote]` expansions).
pub fn encode_return<T: Serialize>(v: &T) -> Result<ReturnValue> {
    codec::encode(&*global::core()?, v)
}

/// Encodes one yielded item (used by `#[remote]` expansions): a value with
/// refs inside also gets the fingerprint a retry's replay is checked by,
/// with each ref replaced by its ordinal (a retry makes new ids).
pub fn encode_item<T: Serialize>(v: &T) -> Result<ReturnValue> {
    let mut value = codec::encode(&*global::core()?, v)?;
    if value.has_refs() {
        value.set_digest(codec::placeholder_digest(v));
    }
    Ok(value)
}

/// Turns an `Err` returned by a task into the task's error: its type name
/// and message only (for an error type that is not serializable).
pub fn app_error<E: std::fmt::Display>(e: &E) -> Error {
    Error::task(std::any::type_name::<E>(), e.to_string(), &context::task_name(), std::process::id())
}

/// [`app_error`], also carrying the error value (`TaskError::encode_value`:
/// encoded like every other value, up to `TaskError::MAX_VALUE_BYTES`) so
/// that the caller can have it back with `Error::downcast_task_error::<E>()`.
pub fn app_error_with_value<E: std::fmt::Display + Serialize>(e: &E) -> Error {
    let mut err = app_error(e);
    if let Error::Task(t) = &mut err {
        t.value = TaskError::encode_value(e);
    }
    err
}

/// A `ferroray::Error` returned by a task (a nested task's failure passed
/// on with `?`): kept as the same variant (see `Error::raised_by_task`).
pub fn reraise_error(e: &Error) -> Error {
    e.clone().raised_by_task(&context::task_name(), std::process::id())
}

/// How a `#[remote]` expansion turns the `Err(e)` a task returned into the
/// task's error, chosen by `e`'s type without specialization (autoref
/// dispatch: the expansion calls `(&&ErrorProbe(&e)).__ferroray_task_error()`
/// on a concrete type, and method lookup takes the first of these that
/// applies):
/// 1. [`ViaFerrorayError`]: `E` is `ferroray::Error`: [`reraise_error`];
/// 2. [`ViaSerialize`]: `E: Serialize + Display`: [`app_error_with_value`];
/// 3. [`ViaDisplay`]: any `E: Display`: [`app_error`] (name and message).
///
/// So a task's error type needs only `Display`, as before, and one that is
/// also `Serialize` can be recovered as itself.
pub struct ErrorProbe<'a, E>(pub &'a E);

impl<E> Clone for ErrorProbe<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for ErrorProbe<'_, E> {}

/// See [`ErrorProbe`].
pub trait ViaFerrorayError {
    fn __ferroray_task_error(&self) -> Error;
}
impl ViaFerrorayError for &ErrorProbe<'_, Error> {
    fn __ferroray_task_error(&self) -> Error {
        reraise_error(self.0)
    }
}

/// See [`ErrorProbe`].
pub trait ViaSerialize {
    fn __ferroray_task_error(&self) -> Error;
}
impl<E: std::fmt::Display + Serialize> ViaSerialize for ErrorProbe<'_, E> {
    fn __ferroray_task_error(&self) -> Error {
        app_error_with_value(self.0)
    }
}

/// See [`ErrorProbe`].
pub trait ViaDisplay<E> {
    fn __ferroray_task_error(self) -> Error
    where
        E: std::fmt::Display;
}
impl<E> ViaDisplay<E> for ErrorProbe<'_, E> {
    fn __ferroray_task_error(self) -> Error
    where
        E: std::fmt::Display,
    {
        app_error(self.0)
    }
}

/// A typed ref from a handle (used by `#[remote]` expansions with `num_returns`).
pub fn typed_ref<T>(inner: Arc<RefInner>) -> ObjectRef<T> {
    ObjectRef::from_inner(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No cluster and nothing that can start one (no `ferroray` facade in
    /// this test binary): `remote()` does not panic, its ref holds the error.
    #[test]
    fn submitting_without_a_cluster_gives_the_error_through_the_ref() {
        assert!(!global::is_set());
        let r: ObjectRef<i64> = TaskCall::new("f", TaskOptions::default()).submit_one();
        assert_eq!(r.get(), Err(Error::NotInitialized));
        let mut g = TaskCall::new("g", TaskOptions::default()).submit_streaming::<u64>();
        assert_eq!(g.next().map(|r| r.get()), Some(Err(Error::NotInitialized)));
    }
}
