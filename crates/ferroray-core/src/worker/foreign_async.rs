//! An async actor of another language's front (Python's `async def`
//! methods): the front runs its own event loop on the process's main thread
//! and takes the actor's calls from [`AsyncCalls`] in batches, so a call
//! costs no thread hand-off.
//!
//! The protocol between the core and the front's loop:
//! 1. The core raises a signal on [`AsyncCalls::fd`] (a socket that turns
//!    readable, which the loop watches) when there is something to take: a
//!    call arrived, a running call was cancelled, a generator waiting for
//!    room may go on, or a slot freed up. Signals coalesce: one byte until
//!    the next `take`.
//! 2. The loop, woken on the fd, calls [`AsyncCalls::take`]. It clears the
//!    signal before it looks at anything (a signal raised after that is a
//!    new wake-up, so none is missed), then admits queued calls up to
//!    `max_concurrency`, each recorded as started in the queue in the same
//!    step as it leaves it (so a cancel from then on raises its flag
//!    instead of finding nothing), with its arguments read; it hands them
//!    over with the cancelled calls and the generators that may go on.
//! 3. The loop runs each call as a task of its own. A generator gives each
//!    item to [`AsyncCalls::item`], which reports it to the owner (or keeps
//!    it, for a fixed `num_returns`). With backpressure the answer may be
//!    "wait": the generator is resumed by a later `take` once the owner has
//!    room (its acknowledgement wakes the signal), or stopped.
//! 4. The loop ends each call with [`AsyncCalls::finish`], which reports
//!    the outcome and frees the call's slot (raising the signal when calls
//!    wait behind `max_concurrency`).
//! 5. A cancel of a started call raises its flag (under the queue's lock,
//!    see `Executor::cancel`) and is then handed to the loop (step 2),
//!    which cancels the call's task; the call ends `TaskCancelled` whatever
//!    it returns (items reported before stay readable). A cancel that comes
//!    after `finish` finds no call and is dropped.
//!
//! Only the loop's thread calls `take`, `item` and `finish`; the link's
//! reader thread raises the signal (a push, a cancel, an acknowledgement).

use super::executor::{FixedSink, QueueEvents, TaskQueue};
use super::*;
use crate::registry::ForeignFunctions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// The loop's wake-up: a socket pair whose read end turns readable when
/// raised.
struct Signal {
    rx: UnixStream,
    tx: UnixStream,
    /// A byte is on its way (or unread): raising again writes nothing.
    raised: AtomicBool,
}

impl Signal {
    fn new() -> Result<Self> {
        let (rx, tx) = UnixStream::pair().map_err(|e| Error::Io(format!("an async actor's signal: {e}")))?;
        for s in [&rx, &tx] {
            s.set_nonblocking(true).map_err(|e| Error::Io(format!("an async actor's signal: {e}")))?;
        }
        Ok(Signal { rx, tx, raised: AtomicBool::new(false) })
    }

    fn raise(&self) {
        if !self.raised.swap(true, Ordering::SeqCst) {
            // A full buffer (impossible: one byte at a time) or a closed
            // pair (the process is ending) loses nothing that matters.
            let _ = (&self.tx).write(&[1]);
        }
    }

    /// Drains the byte, then lowers the flag: a `raise` between the two
    /// wrote nothing, but what it announced was made visible before it, so
    /// the `take` that follows sees it.
    fn clear(&self) {
        let mut buf = [0u8; 16];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
        self.raised.store(false, Ordering::SeqCst);
    }
}

impl std::task::Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.raise();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raise();
    }
}

/// Where a running call's results go.
enum Out {
    /// Values at the end (`num_returns` fixed, not a generator so far).
    Values,
    /// A generator with a fixed `num_returns`: its items are kept as the
    /// call's values.
    Fixed(FixedSink),
    /// A streaming or dynamic generator: each item is reported as it comes.
    Stream {
        reported: u32,
        backpressure: bool,
        /// The owner dropped the stream: no acknowledgements to wait for.
        gone: bool,
    },
}

/// A call the loop runs.
struct Running {
    attempt: u32,
    ctx: TaskContext,
    /// Values a fixed `num_returns` call must give.
    expected: usize,
    out: Out,
    /// Why `item` or a resume stopped the generator (the outcome it ends
    /// with, unless the sink decides otherwise).
    stopped: Option<Error>,
    /// The index of the item whose acknowledgement the generator waits for.
    waiting: Option<u32>,
}

#[derive(Default)]
struct Calls {
    running: FxHashMap<u64, Running>,
    next_token: u64,
    /// Started calls cancelled since the last `take`.
    cancelled: Vec<TaskId>,
}

struct Shared {
    core: Arc<CoreWorker>,
    queue: Arc<TaskQueue>,
    max_concurrency: usize,
    signal: Arc<Signal>,
    calls: Mutex<Calls>,
}

impl QueueEvents for Shared {
    fn pushed(&self) {
        self.signal.raise();
    }

    fn cancelled(&self, task_id: TaskId) {
        self.calls.lock().cancelled.push(task_id);
        self.signal.raise();
    }
}

/// What a call returns, as the front runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallReturns {
    /// `n` values (a generator's items become them).
    Fixed(usize),
    /// A streaming or dynamic generator: items one by one.
    Items,
}

/// A call admitted by [`AsyncCalls::take`], for the front to run.
pub struct StartedCall {
    /// Names the call in `item` and `finish`.
    pub token: u64,
    pub task_id: TaskId,
    /// The method's name.
    pub method: String,
    pub args: Vec<crate::RawValue>,
    pub returns: CallReturns,
}

/// What [`AsyncCalls::take`] hands over.
#[derive(Default)]
pub struct Taken {
    pub started: Vec<StartedCall>,
    /// Running calls to cancel.
    pub cancelled: Vec<u64>,
    /// Generators that waited for room: go on (`true`) or stop (`false`:
    /// `finish` then reports why).
    pub resumed: Vec<(u64, bool)>,
}

/// An async actor's calls as its front's event loop takes them; see the
/// module's protocol.
pub struct AsyncCalls {
    shared: Arc<Shared>,
}

impl AsyncCalls {
    /// The fd to watch for readability: then call [`take`](Self::take).
    pub fn fd(&self) -> RawFd {
        self.shared.signal.rx.as_raw_fd()
    }

    /// Clears the signal and hands over what happened since the last
    /// `take` (step 2).
    pub fn take(&self) -> Taken {
        let sh = &*self.shared;
        sh.signal.clear();
        let mut taken = Taken::default();
        let waker = std::task::Waker::from(sh.signal.clone());
        {
            let mut calls = sh.calls.lock();
            let cancelled = std::mem::take(&mut calls.cancelled);
            for task_id in cancelled {
                if let Some((token, _)) = calls.running.iter().find(|(_, r)| r.ctx.task_id == task_id) {
                    taken.cancelled.push(*token);
                }
            }
            for (token, r) in calls.running.iter_mut() {
                let Some(index) = r.waiting else { continue };
                let gone = match room(&sh.core, r.ctx.task_id, index, &r.ctx, &waker) {
                    None => continue,
                    Some(Ok(gone)) => gone,
                    Some(Err(e)) => {
                        r.stopped = Some(e);
                        r.waiting = None;
                        taken.resumed.push((*token, false));
                        continue;
                    }
                };
                if let Out::Stream { gone: g, .. } = &mut r.out {
                    *g |= gone;
                }
                r.waiting = None;
                taken.resumed.push((*token, true));
            }
        }
        loop {
            if sh.calls.lock().running.len() >= sh.max_concurrency {
                break;
            }
            let Some((spec, ctx)) = sh.queue.try_start() else { break };
            if let Some(call) = self.admit(spec, ctx) {
                taken.started.push(call);
            }
        }
        taken
    }

    /// Records a call as running and reads its arguments; a call that
    /// cannot run (its arguments do not read) ends here with the error.
    fn admit(&self, spec: TaskSpec, ctx: TaskContext) -> Option<StartedCall> {
        let sh = &*self.shared;
        let (task_id, attempt) = (spec.task_id, spec.attempt);
        let (expected, returns, out) = match spec.returns {
            ReturnKind::Fixed(n) => (n as usize, CallReturns::Fixed(n as usize), Out::Values),
            ReturnKind::Streaming { backpressure } => {
                let backpressure = backpressure.is_some();
                if backpressure {
                    sh.core.state.lock().acks.insert(task_id, Acks::default());
                }
                (0, CallReturns::Items, Out::Stream { reported: 0, backpressure, gone: false })
            }
            ReturnKind::Dynamic => {
                (0, CallReturns::Items, Out::Stream { reported: 0, backpressure: false, gone: false })
            }
        };
        let method = match &spec.function {
            FunctionDescriptor::Python { qualname, .. } => Ok(qualname.clone()),
            FunctionDescriptor::Rust { name } => Err(Error::UnknownFunction(name.clone())),
        };
        let mut reader = ArgReader { core: &sh.core, args: spec.args.into_iter(), position: 0, ctx: &ctx };
        let read = method.and_then(|method| {
            let mut args = Vec::with_capacity(reader.remaining());
            while reader.remaining() > 0 {
                args.push(reader.next_raw()?);
            }
            Ok((method, args))
        });
        drop(reader);
        let token = {
            let mut calls = sh.calls.lock();
            let token = calls.next_token;
            calls.next_token += 1;
            calls.running.insert(token, Running { attempt, ctx, expected, out, stopped: None, waiting: None });
            token
        };
        match read {
            Ok((method, args)) => Some(StartedCall { token, task_id, method, args, returns }),
            Err(e) => {
                self.finish(token, Some(Err(e)));
                None
            }
        }
    }

    /// Takes one item of generator call `token` (step 3): `Ok(false)` to go
    /// on, `Ok(true)` to wait for a `take` that resumes it, an error to
    /// stop (the call was cancelled, made more than its `num_returns`
    /// values, or the node is gone; `finish` then reports that).
    pub fn item(&self, token: u64, value: ReturnValue) -> Result<bool> {
        let sh = &*self.shared;
        let mut calls = sh.calls.lock();
        let Some(r) = calls.running.get_mut(&token) else {
            return Err(Error::Protocol(format!("no running call {token}")));
        };
        let stop = |r: &mut Running, e: Error| {
            r.stopped = Some(e.clone());
            Err(e)
        };
        if r.ctx.is_cancelled() {
            return stop(r, Error::TaskCancelled);
        }
        if matches!(r.out, Out::Values) {
            // A generator method called with a fixed `num_returns`.
            r.out = Out::Fixed(FixedSink::new(r.expected));
        }
        let (task_id, attempt) = (r.ctx.task_id, r.attempt);
        let index = match &mut r.out {
            Out::Values => unreachable!("replaced above"),
            Out::Fixed(sink) => {
                return match sink.item(value) {
                    Ok(()) => Ok(false),
                    Err(e) => stop(r, e),
                }
            }
            Out::Stream { reported, .. } => *reported,
        };
        // Sent without the lock: only this thread changes this call.
        drop(calls);
        let digest = value.digest(sh.core.arena());
        let (value, keep) = value.into_parts();
        let sent = sh.core.send(ToNode::ReportItem { task_id, attempt, index, value, digest });
        drop(keep);
        let mut calls = sh.calls.lock();
        let Some(r) = calls.running.get_mut(&token) else {
            return Err(Error::Protocol(format!("no running call {token}")));
        };
        if let Err(e) = sent {
            return stop(r, e);
        }
        let Out::Stream { reported, backpressure, gone } = &mut r.out else { unreachable!("a stream above") };
        *reported = index + 1;
        if !*backpressure || *gone {
            return Ok(false);
        }
        let waker = std::task::Waker::from(sh.signal.clone());
        match room(&sh.core, task_id, index, &r.ctx, &waker) {
            None => {
                r.waiting = Some(index);
                Ok(true)
            }
            Some(Ok(now_gone)) => {
                *gone |= now_gone;
                Ok(false)
            }
            Some(Err(e)) => stop(r, e),
        }
    }

    /// Ends call `token` with `result` (step 4): its values (none for a
    /// generator), or its error. `None` for a generator that `item` or a
    /// resume stopped: the reason recorded then is the outcome.
    pub fn finish(&self, token: u64, result: Option<Result<Vec<ReturnValue>>>) {
        let sh = &*self.shared;
        let (r, full) = {
            let mut calls = sh.calls.lock();
            let full = calls.running.len() >= sh.max_concurrency;
            match calls.running.remove(&token) {
                Some(r) => (r, full),
                None => return,
            }
        };
        let task_id = r.ctx.task_id;
        let result = match result {
            _ if r.ctx.is_cancelled() => Err(Error::TaskCancelled),
            Some(result) => result,
            None => Err(r.stopped.unwrap_or(Error::TaskCancelled)),
        };
        match r.out {
            Out::Values => sh.core.report(task_id, r.attempt, r.expected, result, &r.ctx.name),
            Out::Fixed(sink) => {
                let values = sink.finish(result.err(), &r.ctx.name);
                sh.core.report(task_id, r.attempt, r.expected, values, &r.ctx.name);
            }
            Out::Stream { reported, backpressure, .. } => {
                if backpressure {
                    sh.core.state.lock().acks.remove(&task_id);
                }
                let outcome = match result {
                    Ok(_) => TaskOutcome::Streamed { items: reported },
                    Err(e) => TaskOutcome::Failed(e),
                };
                let _ = sh.core.send(ToNode::TaskDone { task_id, attempt: r.attempt, outcome });
            }
        }
        sh.queue.finished(task_id);
        sh.core.exit_if_requested(task_id);
        if full {
            // Calls may wait behind the limit.
            sh.signal.raise();
        }
    }
}

/// Whether a generator that reported item `index` may go on: `Some(Ok(gone))`
/// (`gone`: the owner dropped the stream), `Some(Err)` to stop, `None` to
/// wait (`waker` is then registered for the acknowledgement; a cancel or a
/// lost connection wakes it too).
fn room(
    core: &CoreWorker,
    task_id: TaskId,
    index: u32,
    ctx: &TaskContext,
    waker: &std::task::Waker,
) -> Option<Result<bool>> {
    // The cancel first, as for a blocking generator.
    if ctx.is_cancelled() {
        return Some(Err(Error::TaskCancelled));
    }
    let mut st = core.state.lock();
    if let Some(reason) = &st.disconnected {
        return Some(Err(Error::Disconnected(reason.clone())));
    }
    match st.acks.get_mut(&task_id) {
        Some(a) if a.gone => Some(Ok(true)),
        Some(a) if a.acked.contains(&index) => Some(Ok(false)),
        Some(a) => {
            if !a.wakers.iter().any(|w| w.will_wake(waker)) {
                a.wakers.push(waker.clone());
            }
            None
        }
        None => Some(Ok(false)),
    }
}

/// Serves a foreign async actor's calls until the process ends: the front's
/// loop runs on this thread. Never returns.
pub(super) fn serve(
    queue: Arc<TaskQueue>,
    core: &Arc<CoreWorker>,
    max_concurrency: usize,
    runner: &dyn ForeignFunctions,
    actor: &dyn std::any::Any,
) -> ! {
    let signal = match Signal::new() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("ferroray: an async actor cannot start its event loop: {e}");
            std::process::exit(1);
        }
    };
    let shared = Arc::new(Shared {
        core: core.clone(),
        queue: queue.clone(),
        max_concurrency: max_concurrency.max(1),
        signal,
        calls: Mutex::new(Calls::default()),
    });
    queue.set_events(shared.clone());
    // Calls queued before the events were set are taken at the loop's
    // first `take`.
    shared.signal.raise();
    let outcome = runner.serve_async(actor, AsyncCalls { shared });
    // The loop never ends on its own: the actor's state is gone with it,
    // so the process ends (the node restarts the actor or reports it dead).
    eprintln!(
        "ferroray: an async actor's event loop ended: {}",
        outcome.err().map(|e| e.to_string()).unwrap_or_default()
    );
    std::process::exit(1);
}
