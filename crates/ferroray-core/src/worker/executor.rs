//! The executor seam ([`Executor`]) and the worker's executor: tasks the
//! node sent to this worker run here, reporting values, items and failures
//! back. A task worker and a serial actor run one task at a time on the
//! process's main thread. An actor created threaded or async switches,
//! once its constructor has run, to a pool of threads ([`super::threaded`])
//! or an event loop ([`super::async_exec`]) for the rest of its process's
//! life; all three take tasks from one [`TaskQueue`].

use super::*;
use crate::actor_state::{ActorState, AsyncStateCell, StateRef};
use crate::registry::MethodRun;
use ferroray_common::ActorId;
use ferroray_protocol::{ActorExecutor, ActorTask};
use parking_lot::MutexGuard;
use std::any::Any;
use std::cell::RefCell;
use std::sync::OnceLock;

/// The actor this process runs (set by its constructor; an actor's process
/// runs only that actor).
static ACTOR: OnceLock<ActorId> = OnceLock::new();

/// The actor this process runs, once its constructor has run.
pub fn current_actor() -> Option<ActorId> {
    ACTOR.get().copied()
}

/// A threaded actor's state, shared by the threads of its pool.
static SHARED_STATE: OnceLock<RwLock<Box<dyn Any + Send + Sync>>> = OnceLock::new();

thread_local! {
    /// A serial actor's state: the thread that runs the calls owns it, so
    /// it need not be `Send`.
    static ACTOR_STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// An async actor's state, on its event-loop thread.
    pub(super) static ASYNC_STATE: RefCell<Option<AsyncStateCell>> = const { RefCell::new(None) };
    /// The call on this thread that asked for `exit_actor()` (by task: an
    /// async actor's calls interleave on one thread, and the actor ends
    /// after the call that asked, not after whichever ends first).
    static EXIT_REQUESTED: std::cell::Cell<Option<TaskId>> = const { std::cell::Cell::new(None) };
}

/// Ends the actor whose method calls this once the call returns: its
/// result is delivered, calls waiting for the actor fail with
/// `ActorDied { cause: Exited }`, and it does not restart. Ray's
/// `ray.actor.exit_actor()`. An error outside an actor's method.
pub fn exit_actor() -> Result<()> {
    match context::current() {
        Some(ctx) if ACTOR.get().is_some() => {
            EXIT_REQUESTED.set(Some(ctx.task_id));
            Ok(())
        }
        _ => Err(Error::InvalidOption("exit_actor is for an actor's own methods".into())),
    }
}

/// Runs `f` on the actor's state: shared or exclusive access to a threaded
/// actor's (its pool admits the calls so that the lock is free), exclusive
/// access to a serial actor's (one call at a time).
fn with_actor_state<R>(exclusive: bool, f: impl FnOnce(StateRef<'_>) -> Result<R>) -> Result<R> {
    if let Some(shared) = SHARED_STATE.get() {
        return if exclusive {
            let mut state = shared.write();
            f(StateRef::Exclusive(&mut **state))
        } else {
            let state = shared.read();
            f(StateRef::Shared(&**state))
        };
    }
    ACTOR_STATE.with(|s| match s.borrow_mut().as_mut() {
        Some(state) => f(StateRef::Exclusive(state.as_mut())),
        None => Err(Error::Protocol("an actor method arrived before the actor was created".into())),
    })
}

/// Runs `f` with the actor's state for a method call of a foreign actor
/// (`on_actor`), or with none for a task.
fn foreign_state<R>(on_actor: bool, f: impl FnOnce(Option<&dyn Any>) -> Result<R>) -> Result<R> {
    if on_actor {
        with_actor_state(false, |state| f(Some(state.any())))
    } else {
        f(None)
    }
}

/// Keeps the state a constructor made where the actor's executor reads it.
/// A foreign front's async actor keeps it shared: the front's event loop
/// gets it once (`foreign_async`).
fn install_state(executor: ActorExecutor, state: ActorState, class: &str, foreign: bool) -> Result<()> {
    match (executor, state) {
        (ActorExecutor::Async, ActorState::Shared(state)) if foreign => {
            if SHARED_STATE.set(RwLock::new(state)).is_err() {
                return Err(Error::Protocol("an actor was created twice in one process".into()));
            }
        }
        (ActorExecutor::Serial, state) => ACTOR_STATE.with(|s| *s.borrow_mut() = Some(state.into_local())),
        (ActorExecutor::Threaded, ActorState::Shared(state)) => {
            if SHARED_STATE.set(RwLock::new(state)).is_err() {
                return Err(Error::Protocol("an actor was created twice in one process".into()));
            }
        }
        (ActorExecutor::Threaded, ActorState::Local(_)) => {
            return Err(Error::InvalidOption(format!(
                "actor {class} has max_concurrency > 1, so its state is shared by threads and must be Send + Sync"
            )))
        }
        (ActorExecutor::Async, state) => {
            // Never leaves this thread (see `AsyncStateCell`).
            #[allow(clippy::arc_with_non_send_sync)]
            let cell: AsyncStateCell = Arc::new(tokio::sync::RwLock::new(state.into_local()));
            ASYNC_STATE.with(|s| *s.borrow_mut() = Some(cell));
        }
    }
    Ok(())
}

/// Whether the actor method `spec` calls takes `&mut self` (an unknown
/// function counts as exclusive: it runs alone, to report its error).
pub(super) fn is_exclusive(spec: &TaskSpec) -> bool {
    match &spec.function {
        FunctionDescriptor::Rust { name } => match registry::lookup(name) {
            Ok(registry::RemoteFunction { invoke: Invoke::Method { exclusive, .. }, .. }) => *exclusive,
            _ => true,
        },
        // Python methods have no `&mut self`: all of them may run together
        // (up to the actor's `max_concurrency`), as in Ray.
        FunctionDescriptor::Python { .. } => false,
    }
}

/// How a worker runs the tasks its node sends it. Every executor takes its
/// tasks from a [`TaskQueue`], in four steps:
/// 1. `push`: a task from the node (`Execute`) is queued, in order.
/// 2. `take_queued`: the node takes back tasks that have not started
///    (`Revoke`, when the worker blocks); they are removed and returned.
/// 3. `cancel`: a task still queued is removed and returned (it never
///    runs); a started one has its context's cancel flag raised (and an
///    async call's future is dropped). This is one step with respect to a
///    task starting, so a cancel never falls between a task leaving the
///    queue and being recorded as started.
/// 4. `serve`: runs the tasks until the process ends, each through
///    [`CoreWorker::run_task`] (or an async actor's `run_call`) with its
///    context (passed, so that an executor running several calls on one
///    thread can give each its own).
pub(super) trait Executor: Send + Sync {
    fn push(&self, spec: TaskSpec);
    fn take_queued(&self, ids: &[TaskId]) -> Vec<TaskSpec>;
    fn cancel(&self, task_id: TaskId) -> Option<TaskSpec>;
    fn serve(&self, core: &Arc<CoreWorker>);
}

/// A task taken off the queue and not finished.
struct Started {
    ctx: TaskContext,
    /// Drops an async call's future (a cancel of a call on an async actor).
    abort: Option<futures::future::AbortHandle>,
}

#[derive(Default)]
struct QueueState {
    /// Tasks sent and not started, in order.
    tasks: VecDeque<TaskSpec>,
    /// Taken off `tasks` and not finished: one on a serial executor, up to
    /// `max_concurrency` on the others. A started call may still wait for
    /// its turn (a free thread, the state's lock): it runs only if not
    /// cancelled by then.
    started: Vec<Started>,
}

/// The tasks of one worker, shared by the thread that receives them (the
/// link's reader) and the ones that run them.
/// Who else hears of a queue's changes (a foreign async actor's loop,
/// which waits on its own signal, not on the queue).
pub(super) trait QueueEvents: Send + Sync {
    /// A task was queued.
    fn pushed(&self);
    /// A started task's cancel flag was raised.
    fn cancelled(&self, task_id: TaskId);
}

#[derive(Default)]
pub(super) struct TaskQueue {
    state: Mutex<QueueState>,
    /// Wakes a waiting serial or threaded dispatcher.
    ready: Condvar,
    /// Wakes an async actor's event loop.
    arrived: tokio::sync::Notify,
    /// Counts the tasks pushed: an idle dispatcher watches it before it
    /// sleeps (`ferroray_common::spin`).
    pushed: AtomicU64,
    /// Told of pushes and cancels, once set.
    events: OnceLock<Arc<dyn QueueEvents>>,
}

impl TaskQueue {
    /// The next task, recorded as started in the same step (see step 3).
    /// With `abortable`, the registration that lets a cancel drop its future.
    fn start_next(
        q: &mut QueueState,
        abortable: bool,
    ) -> Option<(TaskSpec, TaskContext, Option<futures::future::AbortRegistration>)> {
        let spec = q.tasks.pop_front()?;
        let ctx = TaskContext {
            task_id: spec.task_id,
            name: spec.name().to_string(),
            cancelled: Arc::new(AtomicBool::new(false)),
        };
        let (abort, registration) = if abortable {
            let (h, r) = futures::future::AbortHandle::new_pair();
            (Some(h), Some(r))
        } else {
            (None, None)
        };
        q.started.push(Started { ctx: ctx.clone(), abort });
        Some((spec, ctx, registration))
    }

    /// Waits for the next task (serial and threaded dispatchers).
    pub(super) fn next_blocking(&self) -> (TaskSpec, TaskContext) {
        let mut q = self.state.lock();
        let mut spin = Spin::new();
        let mut trimmed = false;
        loop {
            if let Some((spec, ctx, _)) = Self::start_next(&mut q, false) {
                return (spec, ctx);
            }
            if spin.available() {
                // Read under the lock: a push after the look above bumps it.
                let seen = self.pushed.load(Ordering::Acquire);
                MutexGuard::unlocked(&mut q, || {
                    spin.until(None, || self.pushed.load(Ordering::Acquire) != seen);
                });
                continue;
            }
            if trimmed {
                self.ready.wait(&mut q);
            } else if self.ready.wait_for(&mut q, IDLE_TRIM).timed_out() {
                // Quiet: what the heap holds free goes back to the system,
                // once per quiet spell (not under the lock: a push may come).
                MutexGuard::unlocked(&mut q, trim_heap);
                trimmed = true;
            }
        }
    }

    /// Waits for the next task without blocking the thread (an async
    /// actor's event loop).
    pub(super) async fn next_async(&self) -> (TaskSpec, TaskContext, futures::future::AbortRegistration) {
        loop {
            // `Notify` keeps a wake-up that comes between this check and
            // the wait below.
            if let Some((spec, ctx, Some(r))) = Self::start_next(&mut self.state.lock(), true) {
                return (spec, ctx, r);
            }
            self.arrived.notified().await;
        }
    }

    /// The next task, recorded as started in the same step, if one is
    /// queued (a foreign async actor's loop, which admits calls itself).
    pub(super) fn try_start(&self) -> Option<(TaskSpec, TaskContext)> {
        Self::start_next(&mut self.state.lock(), false).map(|(spec, ctx, _)| (spec, ctx))
    }

    /// From now on `events` hears of pushes and cancels.
    pub(super) fn set_events(&self, events: Arc<dyn QueueEvents>) {
        let _ = self.events.set(events);
    }

    /// A started task is done (or was dropped by its cancel).
    pub(super) fn finished(&self, task_id: TaskId) {
        self.state.lock().started.retain(|s| s.ctx.task_id != task_id);
    }
}

/// A worker sent no new task for this long gives its free heap back (as
/// long as the node's default idle timeout, `NodeConfig::idle_worker_timeout`).
const IDLE_TRIM: std::time::Duration = std::time::Duration::from_millis(500);

/// Returns the free memory of the heap's arenas to the system: glibc keeps
/// it otherwise (an async actor that ran thousands of calls at once held
/// 6 MB of it).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: takes no pointer; glibc locks each arena while trimming it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs the tasks of a worker process; see [`TaskQueue`].
#[derive(Default, Clone)]
pub(super) struct QueueExecutor(Arc<TaskQueue>);

impl Executor for QueueExecutor {
    fn push(&self, spec: TaskSpec) {
        self.0.state.lock().tasks.push_back(spec);
        self.0.pushed.fetch_add(1, Ordering::Release);
        self.0.ready.notify_one();
        self.0.arrived.notify_one();
        if let Some(events) = self.0.events.get() {
            events.pushed();
        }
    }

    fn take_queued(&self, ids: &[TaskId]) -> Vec<TaskSpec> {
        let mut q = self.0.state.lock();
        let mut taken = Vec::new();
        q.tasks.retain(|t| {
            let hit = ids.contains(&t.task_id);
            if hit {
                taken.push(t.clone());
            }
            !hit
        });
        taken
    }

    fn cancel(&self, task_id: TaskId) -> Option<TaskSpec> {
        // Under the queue's lock, under which a task leaves the queue and
        // is recorded as started.
        let mut q = self.0.state.lock();
        if let Some(at) = q.tasks.iter().position(|t| t.task_id == task_id) {
            return q.tasks.remove(at);
        }
        let s = q.started.iter().find(|s| s.ctx.task_id == task_id)?;
        s.ctx.cancelled.store(true, Ordering::Relaxed);
        if let Some(abort) = &s.abort {
            abort.abort();
        }
        drop(q);
        // Outside the queue's lock: the listener takes its own. The call
        // may finish first; the listener then finds nothing to cancel.
        if let Some(events) = self.0.events.get() {
            events.cancelled(task_id);
        }
        None
    }

    fn serve(&self, core: &Arc<CoreWorker>) {
        loop {
            let (spec, ctx) = self.0.next_blocking();
            // An actor's creation decides how its calls run from then on.
            let switch = match &spec.actor {
                Some(ActorTask::Create(a)) => Some((a.executor, a.max_concurrency as usize)),
                _ => None,
            };
            test_hooks::start_delay();
            let task_id = ctx.task_id;
            core.run_task(spec, ctx);
            self.0.finished(task_id);
            match switch {
                Some((ActorExecutor::Threaded, n)) if SHARED_STATE.get().is_some() => {
                    return super::threaded::serve(&self.0, core, n);
                }
                Some((ActorExecutor::Async, n)) if ASYNC_STATE.with(|s| s.borrow().is_some()) => {
                    return super::async_exec::serve(self.0.clone(), core, n);
                }
                Some((ActorExecutor::Async, n)) => {
                    if let (Some(runner), Some(state)) = (registry::foreign(), SHARED_STATE.get()) {
                        let state = state.read();
                        super::foreign_async::serve(self.0.clone(), core, n, runner, &**state);
                    }
                }
                _ => {}
            }
        }
    }
}

impl CoreWorker {
    /// A task given back without running: release the pins the node took
    /// for its shared-memory arguments.
    pub(super) fn release_unrun(&self, spec: TaskSpec) {
        for arg in spec.args {
            if let ferroray_protocol::TaskArg::Object { id, payload: Payload::Shm { .. }, .. } = arg {
                self.unpin(id);
            }
        }
    }

    /// Serves the tasks the node sends, until the process ends (workers).
    pub(super) fn run_queue(self: &Arc<Self>) {
        if let Some(exec) = &self.exec {
            exec.serve(self);
        }
    }

    /// Runs one task to its end and reports the outcome (worker processes).
    pub(super) fn run_task(self: &Arc<Self>, spec: TaskSpec, ctx: TaskContext) {
        self.lent.store(false, Ordering::Relaxed);
        context::set(Some(ctx.clone()));
        let (task_id, attempt) = (spec.task_id, spec.attempt);
        let expected = spec.returns.static_count() as usize;
        let returns = spec.returns;
        // A function of another language's front runs through the runner
        // that front installed in this process (a Python worker's).
        let foreign = match &spec.function {
            FunctionDescriptor::Python { .. } => registry::foreign(),
            FunctionDescriptor::Rust { .. } => None,
        };
        let function = match &spec.function {
            FunctionDescriptor::Rust { name } => registry::lookup(name),
            FunctionDescriptor::Python { qualname, .. } => Err(Error::UnknownFunction(qualname.clone())),
        };
        let descriptor = spec.function;
        let mut reader = ArgReader { core: self, args: spec.args.into_iter(), position: 0, ctx: &ctx };
        let invoke = function.map(|f| &f.invoke);
        // A panic in an actor method ends the actor's process (its state may
        // be half-updated) before anything is reported: the node restarts
        // the actor or reports it dead, as for a crash.
        let is_method = matches!(invoke, Ok(Invoke::Method { .. }));
        let executor = match &spec.actor {
            Some(ActorTask::Create(a)) => a.executor,
            _ => ActorExecutor::Serial,
        };
        let guarded = |body: &mut dyn FnMut() -> Result<Vec<ReturnValue>>| match catch_unwind(AssertUnwindSafe(body)) {
            Ok(r) => r,
            Err(_) if is_method => std::process::exit(101),
            Err(panic) => Err(Error::task("panic", panic_message(&panic), &ctx.name, std::process::id())),
        };
        // Items go to a sink; a streaming or dynamic generator reports its
        // end itself (then `None`), a fixed one gives its values.
        let drive_items = |reader: &mut ArgReader<'_>,
                           body: &mut dyn FnMut(&mut ArgReader<'_>, &mut dyn ItemSink) -> Result<()>|
         -> Option<Result<Vec<ReturnValue>>> {
            match returns {
                ReturnKind::Fixed(n) => {
                    let mut sink = FixedSink::new(n as usize);
                    let r = guarded(&mut || {
                        body(reader, &mut sink)?;
                        reader.finish()?;
                        Ok(Vec::new())
                    });
                    Some(sink.finish(r.err(), &ctx.name))
                }
                // Streaming and dynamic returns both report each item as it
                // comes; the node hands them out, or makes the list at the end.
                ReturnKind::Streaming { .. } | ReturnKind::Dynamic => {
                    let backpressure = matches!(returns, ReturnKind::Streaming { backpressure: Some(_) });
                    let mut sink = StreamSink {
                        core: self,
                        task_id,
                        attempt,
                        next: 0,
                        backpressure,
                        gone: false,
                        cancelled: ctx.cancelled.clone(),
                    };
                    if sink.backpressure {
                        self.state.lock().acks.insert(task_id, Acks::default());
                    }
                    let r = guarded(&mut || {
                        body(reader, &mut sink)?;
                        reader.finish()?;
                        Ok(Vec::new())
                    });
                    self.state.lock().acks.remove(&task_id);
                    let outcome = match r {
                        Ok(_) => TaskOutcome::Streamed { items: sink.next },
                        Err(e) => TaskOutcome::Failed(e),
                    };
                    let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome });
                    None
                }
            }
        };
        let result = match invoke {
            Err(_) if foreign.is_some() => {
                let runner = foreign.expect("checked");
                let on_actor = matches!(spec.actor, Some(ActorTask::Call { .. }));
                if let Some(ActorTask::Create(_)) = &spec.actor {
                    Some(guarded(&mut || {
                        let state = runner.construct(&descriptor, &mut reader)?;
                        reader.finish()?;
                        install_state(executor, ActorState::Shared(state), &ctx.name, true)?;
                        let _ = ACTOR.set(ActorId(task_id));
                        Ok(vec![codec::encode(self, &())?])
                    }))
                } else {
                    // A generator also with fixed returns: values yielded
                    // before a failure stay readable (the core's sinks).
                    let generator = match returns {
                        ReturnKind::Fixed(_) => {
                            foreign_state(on_actor, |a| Ok(runner.is_generator(&descriptor, a))).unwrap_or(false)
                        }
                        ReturnKind::Streaming { .. } | ReturnKind::Dynamic => true,
                    };
                    if generator {
                        drive_items(&mut reader, &mut |r, sink| {
                            foreign_state(on_actor, |a| runner.run_items(&descriptor, a, r, sink))
                        })
                    } else {
                        Some(guarded(&mut || {
                            foreign_state(on_actor, |a| {
                                let values = runner.run(&descriptor, a, &mut reader, expected)?;
                                reader.finish()?;
                                Ok(values)
                            })
                        }))
                    }
                }
            }
            Err(e) => Some(Err(e)),
            Ok(Invoke::Values(f)) => Some(guarded(&mut || {
                let values = f(&mut reader)?;
                reader.finish()?;
                Ok(values)
            })),
            Ok(Invoke::Items(f)) => drive_items(&mut reader, &mut |r, sink| f(r, sink)),
            Ok(Invoke::Construct(f)) => Some(guarded(&mut || {
                let state = f(&mut reader)?;
                reader.finish()?;
                install_state(executor, state, &ctx.name, false)?;
                let _ = ACTOR.set(ActorId(task_id));
                Ok(vec![codec::encode(self, &())?])
            })),
            Ok(Invoke::Method { exclusive, run: MethodRun::Values(f) }) => Some(guarded(&mut || {
                with_actor_state(*exclusive, |state| {
                    let values = f(state, &mut reader)?;
                    reader.finish()?;
                    Ok(values)
                })
            })),
            Ok(Invoke::Method { exclusive, run: MethodRun::Items(f) }) => {
                drive_items(&mut reader, &mut |r, sink| with_actor_state(*exclusive, |state| f(state, r, sink)))
            }
            Ok(Invoke::Method { run: MethodRun::AsyncValues(_) | MethodRun::AsyncItems(_), .. }) => {
                Some(Err(Error::Protocol("an async actor's method arrived on a synchronous executor".into())))
            }
        };
        let Some(result) = result else {
            drop(reader);
            context::set(None);
            self.exit_if_requested(task_id);
            return;
        };
        drop(reader);
        self.report(task_id, attempt, expected, result, &ctx.name);
        context::set(None);
        self.exit_if_requested(task_id);
    }

    /// Sends a finished task's outcome: its `expected` values, or its error.
    pub(super) fn report(
        &self,
        task_id: TaskId,
        attempt: u32,
        expected: usize,
        result: Result<Vec<ReturnValue>>,
        name: &str,
    ) {
        let (outcome, keep) = match result {
            Ok(values) if values.len() == expected => {
                let (vals, keeps): (Vec<_>, Vec<_>) = values.into_iter().map(ReturnValue::into_parts).unzip();
                (TaskOutcome::Returned(vals), keeps)
            }
            Ok(values) => (
                TaskOutcome::Failed(Error::task(
                    "ferroray::ReturnCountMismatch",
                    format!("returned {} values, expected {expected}", values.len()),
                    name,
                    std::process::id(),
                )),
                vec![],
            ),
            Err(e) => (TaskOutcome::Failed(e), vec![]),
        };
        if let Err(e) = self.send(ToNode::TaskDone { task_id, attempt, outcome }) {
            // The results could not be sent (too large for one message, say):
            // report that instead of leaving the caller waiting.
            let e = Error::task("ferroray::ResultsNotSent", e.to_string(), name, std::process::id());
            let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome: TaskOutcome::Failed(e) });
        }
        drop(keep);
    }

    /// After a call that asked for `exit_actor()` (its result sent): the
    /// node ends the actor (and closes this connection; the process exits).
    pub(super) fn exit_if_requested(&self, task_id: TaskId) {
        if EXIT_REQUESTED.get() == Some(task_id) {
            EXIT_REQUESTED.set(None);
            if let Some(actor) = ACTOR.get().copied() {
                let _ = self.send(ToNode::TerminateActor { actor });
            }
        }
    }
}

/// Keeps a generator's values as the task's `n` fixed return values.
pub(super) struct FixedSink {
    values: Vec<ReturnValue>,
    n: usize,
    overflow: bool,
}

impl ItemSink for FixedSink {
    fn item(&mut self, value: ReturnValue) -> Result<()> {
        if self.values.len() == self.n {
            self.overflow = true;
            return Err(Error::InvalidOption(String::new()));
        }
        self.values.push(value);
        Ok(())
    }
}

impl FixedSink {
    pub(super) fn new(n: usize) -> Self {
        FixedSink { values: Vec::new(), n, overflow: false }
    }

    /// Values yielded before a failure stay readable; the refs after them
    /// hold the error. Yielding more or fewer than `n` values is an error too
    /// (in every ref when there were more: the caller asked for exactly `n`).
    pub(super) fn finish(mut self, error: Option<Error>, name: &str) -> Result<Vec<ReturnValue>> {
        let pid = std::process::id();
        let got = self.values.len();
        let count_error = |what: String| Error::task("ferroray::NumReturnsMismatch", what, name, pid);
        if self.overflow {
            let e = count_error(format!("yielded more than num_returns = {} values", self.n));
            return Ok((0..self.n).map(|_| ReturnValue::error(e.clone())).collect());
        }
        if let Some(e) = &error {
            if got == self.n {
                // It failed after making every value: that is still a failed
                // task, not a success (Ray drops this error silently).
                let cause = match e {
                    Error::Task(t) => t.message.clone(),
                    other => other.to_string(),
                };
                let e = count_error(format!("failed after yielding all {} values: {cause}", self.n));
                return Ok((0..self.n).map(|_| ReturnValue::error(e.clone())).collect());
            }
        }
        let error = match error {
            Some(e) => Some(e),
            None if got < self.n => Some(count_error(format!("yielded {got} values but num_returns = {}", self.n))),
            None => None,
        };
        if let Some(e) = error {
            self.values.extend((got..self.n).map(|_| ReturnValue::error(e.clone())));
        }
        Ok(self.values)
    }
}

/// Reports each value to the owner as it is yielded.
struct StreamSink<'a> {
    core: &'a Arc<CoreWorker>,
    task_id: TaskId,
    attempt: u32,
    next: u32,
    backpressure: bool,
    /// The owner dropped the stream: no more acknowledgements to wait for.
    gone: bool,
    /// The task's cancel flag (read here, not from the thread: the sink
    /// may be driven from a future among others).
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl ItemSink for StreamSink<'_> {
    fn item(&mut self, value: ReturnValue) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::TaskCancelled);
        }
        let index = self.next;
        let digest = value.digest(self.core.arena());
        let (value, keep) = value.into_parts();
        self.core.send(ToNode::ReportItem { task_id: self.task_id, attempt: self.attempt, index, value, digest })?;
        drop(keep);
        self.next += 1;
        if !self.backpressure || self.gone {
            return Ok(());
        }
        // Paused until the owner has room (or is gone, or we are cancelled).
        // A pause longer than a moment counts as blocked: the CPU is lent
        // back and tasks queued behind this one go elsewhere.
        let paused_at = Instant::now();
        let mut blocked = BlockedGuard::new(self.core);
        let mut st = self.core.state.lock();
        loop {
            // The cancel first: a cancelled generator's held acknowledgement
            // is answered `gone` just after its `CancelRunning`.
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(Error::TaskCancelled);
            }
            if let Some(a) = st.acks.get(&self.task_id) {
                if a.gone {
                    self.gone = true;
                    return Ok(());
                }
                if a.acked.contains(&index) {
                    return Ok(());
                }
            }
            if let Some(reason) = &st.disconnected {
                return Err(Error::Disconnected(reason.clone()));
            }
            if !blocked.is_blocked() && paused_at.elapsed() >= Duration::from_millis(5) {
                drop(st);
                blocked.block();
                st = self.core.state.lock();
                continue;
            }
            let nap = Duration::from_millis(if blocked.is_blocked() { 500 } else { 5 });
            self.core.wait_for_any(&mut st, Some(Instant::now() + nap), &mut blocked.spin);
        }
    }
}

impl Drop for ArgReader<'_> {
    fn drop(&mut self) {
        for arg in self.args.by_ref() {
            if let ferroray_protocol::TaskArg::Object { id, payload: Payload::Shm { .. }, .. } = arg {
                self.core.unpin(id);
            }
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Test-only delays that widen race windows, read once from the environment
/// (unset outside tests: one load of an initialised `OnceLock` per task).
mod test_hooks {
    use std::sync::OnceLock;
    use std::time::Duration;

    fn read(name: &str) -> Option<Duration> {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis)
    }

    /// `FERRORAY_TEST_START_DELAY_MS`: a pause between taking a task off the
    /// queue and running it (where a cancel used to be lost).
    pub(super) fn start_delay() {
        static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
        if let Some(d) = DELAY.get_or_init(|| read("FERRORAY_TEST_START_DELAY_MS")) {
            std::thread::sleep(*d);
        }
    }
}
