//! Remote functions by name.
//!
//! `#[remote]` adds one [`RemoteFunction`] per function to
//! [`REMOTE_FUNCTIONS`], a slice the linker assembles: nothing runs at
//! start-up, so the table is complete even before `main`.
//! `#[actor]` adds its constructor (`Class::new`) and each method
//! (`Class::method`) the same way. Functions of another language's front
//! (Python) run through the [`ForeignFunctions`] runner that front installs
//! in its worker processes.

use crate::actor_state::{ActorState, StateGuard, StateRef};
use crate::codec::ReturnValue;
use crate::task::ArgReader;
use crate::worker::AsyncItemSink;
use ferroray_common::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

/// How a worker runs a function.
pub enum Invoke {
    /// A plain function: arguments in, all return values out at the end.
    Values(fn(&mut ArgReader<'_>) -> Result<Vec<ReturnValue>>),
    /// A generator: each yielded value goes to the sink as it is made.
    Items(fn(&mut ArgReader<'_>, &mut dyn ItemSink) -> Result<()>),
    /// An actor's constructor: makes the actor's state.
    Construct(fn(&mut ArgReader<'_>) -> Result<ActorState>),
    /// An actor method, run on the actor's state.
    Method {
        /// It takes `&mut self`: it runs alone, never beside another call.
        exclusive: bool,
        run: MethodRun,
    },
}

/// The future of an async actor's call: it owns what it uses (arguments,
/// its [`StateGuard`]) and stays on the actor's event-loop thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// How an actor method runs: synchronously on a serial or threaded actor,
/// as a future on an async actor (an actor with any `async fn` method, all
/// of whose methods then run on its event loop).
pub enum MethodRun {
    /// Gives its values at the end.
    Values(fn(StateRef<'_>, &mut ArgReader<'_>) -> Result<Vec<ReturnValue>>),
    /// A generator: each yielded value goes to the sink as it is made.
    Items(fn(StateRef<'_>, &mut ArgReader<'_>, &mut dyn ItemSink) -> Result<()>),
    /// Reads its arguments, then gives the future of its values.
    AsyncValues(fn(StateGuard, &mut ArgReader<'_>) -> Result<ValuesFuture>),
    /// Reads its arguments, then gives the future that yields to the sink
    /// (which waits for room without blocking the event loop).
    AsyncItems(fn(StateGuard, &mut ArgReader<'_>, AsyncItemSink) -> Result<ItemsFuture>),
}

/// An async method's future of values.
pub type ValuesFuture = LocalFuture<Result<Vec<ReturnValue>>>;
/// An async generator method's future (its items go to the sink).
pub type ItemsFuture = LocalFuture<Result<()>>;

/// Where a generator's items go: reported to the owner one by one
/// (streaming, dynamic) or kept as the task's fixed return values.
pub trait ItemSink {
    /// Takes one yielded value. An error (the task was cancelled or closed,
    /// or more values than `num_returns`) stops the generator.
    fn item(&mut self, value: ReturnValue) -> Result<()>;
}

/// Runs the functions and actors of another language's front (a Python
/// worker's), installed once per process by that front's worker entry.
/// Arguments are read with `ArgReader::next_raw`, all of them.
pub trait ForeignFunctions: Send + Sync {
    /// Runs `function` and gives its `returns` values; `actor` is the
    /// actor's state (what [`construct`](Self::construct) made) for a method
    /// call, `None` for a task.
    fn run(
        &self,
        function: &ferroray_protocol::FunctionDescriptor,
        actor: Option<&dyn std::any::Any>,
        args: &mut ArgReader<'_>,
        returns: usize,
    ) -> Result<Vec<ReturnValue>>;

    /// Runs generator `function` (a streaming or dynamic call): each value
    /// it yields goes to `sink` as it is made; an error from the sink (the
    /// call was cancelled or closed) stops it.
    fn run_items(
        &self,
        function: &ferroray_protocol::FunctionDescriptor,
        actor: Option<&dyn std::any::Any>,
        args: &mut ArgReader<'_>,
        sink: &mut dyn ItemSink,
    ) -> Result<()>;

    /// Whether `function` (a method of `actor`'s class, when given) is a
    /// generator: a call of one with a fixed `num_returns` then runs through
    /// [`run_items`](Self::run_items), so values yielded before a failure
    /// stay readable, as for Rust generators.
    fn is_generator(&self, function: &ferroray_protocol::FunctionDescriptor, actor: Option<&dyn std::any::Any>)
        -> bool;

    /// Makes an actor's state: runs the class `function` names on `args`.
    /// The state is shared by the actor's calls (on several threads for a
    /// threaded actor).
    fn construct(
        &self,
        function: &ferroray_protocol::FunctionDescriptor,
        args: &mut ArgReader<'_>,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>>;

    /// Runs an async actor's event loop on this thread for the rest of the
    /// process's life, taking the calls of `actor` (what `construct` made)
    /// from `calls` (see [`AsyncCalls`](crate::worker::AsyncCalls) for the
    /// protocol). Returns only if the loop itself fails.
    fn serve_async(&self, actor: &dyn std::any::Any, calls: crate::worker::AsyncCalls) -> Result<()> {
        let _ = (actor, calls);
        Err(Error::InvalidOption("this front has no async actors".into()))
    }
}

static FOREIGN: OnceLock<Box<dyn ForeignFunctions>> = OnceLock::new();

/// Installs this process's runner of foreign functions; the first one
/// stays.
pub fn set_foreign(runner: Box<dyn ForeignFunctions>) -> Result<()> {
    FOREIGN.set(runner).map_err(|_| Error::InvalidOption("a runner of foreign functions is already installed".into()))
}

/// The runner [`set_foreign`] installed, if any.
pub fn foreign() -> Option<&'static dyn ForeignFunctions> {
    FOREIGN.get().map(|b| &**b)
}

pub struct RemoteFunction {
    /// `module::path::name`, the same in the driver and the worker.
    pub name: &'static str,
    pub invoke: Invoke,
}

#[linkme::distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

/// The function registered under `name`. Two functions registered under one
/// name (possible for a `#[remote]` inside a `mod` that is itself inside a
/// function body: `module_path!` skips the function) are an error naming
/// the clash, never a silent pick of one of them.
pub fn lookup(name: &str) -> Result<&'static RemoteFunction> {
    /// `None` marks a name registered more than once.
    static TABLE: OnceLock<HashMap<&'static str, Option<&'static RemoteFunction>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for f in REMOTE_FUNCTIONS.iter() {
            table.entry(f.name).and_modify(|e| *e = None).or_insert(Some(f));
        }
        table
    });
    match table.get(name) {
        Some(Some(f)) => Ok(f),
        Some(None) => {
            Err(Error::InvalidOption(format!("two remote functions are registered as {name}: rename one of them")))
        }
        None => Err(Error::UnknownFunction(name.to_string())),
    }
}

/// An async actor method's future of values, boxed (used by `#[actor]`
/// expansions: the bound gives the `async` block its output type).
pub fn local_values(f: impl Future<Output = Result<Vec<ReturnValue>>> + 'static) -> ValuesFuture {
    Box::pin(f)
}

/// An async actor generator method's future, boxed (see [`local_values`]).
pub fn local_items(f: impl Future<Output = Result<()>> + 'static) -> ItemsFuture {
    Box::pin(f)
}
