//! An async actor's executor: its calls are futures on one event loop (the
//! process's main thread: a tokio current-thread runtime and a `LocalSet`),
//! interleaving at `.await`, up to `max_concurrency` at once.
//!
//! The loop admits calls one by one in queue order, so calls start in the
//! order they were sent:
//! 1. It takes the next call off the queue (recorded as started, with the
//!    handle that lets a cancel drop its future).
//! 2. It takes a permit of `max_concurrency`, then the state's lock: read
//!    access for a `&self` method, write access for a `&mut self` one
//!    (tokio's lock is fair, so a waiting writer is not overtaken by later
//!    readers). Later calls wait behind it. If the call is cancelled
//!    meanwhile, it ends there (`TaskCancelled`).
//! 3. It spawns the call's future, which owns the lock's guard until it
//!    ends: a `&mut self` method stays exclusive across its awaits.
//! 4. A cancel drops the future at its next await (or before it starts)
//!    and the call reports `TaskCancelled`; a generator's items reported
//!    before stay readable.
//!
//! Nothing on the loop blocks its thread: a generator waits for room
//! through [`AsyncItemSink`], and `ObjectRef`s are awaited.

use super::executor::{is_exclusive, TaskQueue, ASYNC_STATE};
use super::*;
use crate::actor_state::StateGuard;
use crate::registry::MethodRun;
use futures::future::{AbortRegistration, Abortable};
use futures::FutureExt;
use std::cell::Cell;
use std::rc::Rc;

/// Serves the actor's calls until the process ends. Never returns.
pub(super) fn serve(queue: Arc<TaskQueue>, core: &Arc<CoreWorker>, max_concurrency: usize) {
    let Some(state) = ASYNC_STATE.with(|s| s.borrow().clone()) else {
        return;
    };
    let core = core.clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(max_concurrency));
    let local = tokio::task::LocalSet::new();
    crate::async_rt::block_on(local.run_until(async move {
        loop {
            let (spec, ctx, abort) = queue.next_async().await;
            let exclusive = is_exclusive(&spec);
            let (state, permits) = (state.clone(), permits.clone());
            let turn = async move {
                let permit = permits.acquire_owned().await.ok()?;
                let guard = if exclusive {
                    StateGuard::Write(state.write_owned().await)
                } else {
                    StateGuard::Read(state.read_owned().await)
                };
                Some((permit, guard))
            };
            let Some((permit, guard)) = until_cancelled(turn, &ctx).await else {
                // Cancelled while it waited for its turn: it ends now.
                let (task_id, attempt) = (spec.task_id, spec.attempt);
                core.release_unrun(spec);
                let outcome = TaskOutcome::Failed(Error::TaskCancelled);
                let _ = core.send(ToNode::TaskDone { task_id, attempt, outcome });
                queue.finished(task_id);
                continue;
            };
            let (core, queue) = (core.clone(), queue.clone());
            tokio::task::spawn_local(async move {
                let task_id = ctx.task_id;
                core.run_call(spec, ctx, guard, abort).await;
                queue.finished(task_id);
                drop(permit);
            });
        }
    }));
}

/// `turn` (a call's permit and lock guard), or `None` once the call is
/// cancelled first. The same `turn` future is polled throughout, so the
/// call keeps its place in the lock's queue; a cancel raises a flag only,
/// so it is looked at between short sleeps.
async fn until_cancelled<T>(turn: impl std::future::Future<Output = Option<T>>, ctx: &TaskContext) -> Option<T> {
    let mut turn = std::pin::pin!(turn);
    loop {
        if ctx.is_cancelled() {
            return None;
        }
        tokio::select! {
            biased;
            got = &mut turn => return got,
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

impl CoreWorker {
    /// Runs one call of an async actor to its end and reports its outcome.
    async fn run_call(self: &Arc<Self>, spec: TaskSpec, ctx: TaskContext, guard: StateGuard, abort: AbortRegistration) {
        let (task_id, attempt) = (spec.task_id, spec.attempt);
        if ctx.is_cancelled() {
            // Cancelled while it waited for its turn: it never runs.
            self.release_unrun(spec);
            let _ =
                self.send(ToNode::TaskDone { task_id, attempt, outcome: TaskOutcome::Failed(Error::TaskCancelled) });
            return;
        }
        let expected = spec.returns.static_count() as usize;
        let returns = spec.returns;
        let run = match &spec.function {
            FunctionDescriptor::Rust { name } => registry::lookup(name).and_then(|f| match &f.invoke {
                Invoke::Method { run: run @ (MethodRun::AsyncValues(_) | MethodRun::AsyncItems(_)), .. } => Ok(run),
                _ => Err(Error::Protocol(format!("{name} is not a method of an async actor"))),
            }),
            FunctionDescriptor::Python { qualname, .. } => Err(Error::UnknownFunction(qualname.clone())),
        };
        // The arguments are read before the future starts, with the task's
        // context current (a nested ref's fetch lends nothing: actors hold
        // no lease).
        context::set(Some(ctx.clone()));
        let mut reader = ArgReader { core: self, args: spec.args.into_iter(), position: 0, ctx: &ctx };
        let mut streamed = None;
        // A panic here (a user's `Deserialize`, say) ends the process as a
        // panic in the call does: nothing is reported, the node restarts the
        // actor or reports it dead (a task dropped by the loop would leave
        // its caller waiting).
        let made = catch_unwind(AssertUnwindSafe(|| match run {
            Err(e) => Err(e),
            Ok(MethodRun::AsyncValues(f)) => f(guard, &mut reader),
            Ok(MethodRun::AsyncItems(f)) => match returns {
                ReturnKind::Streaming { backpressure } => {
                    let sink = AsyncItemSink {
                        core: self.clone(),
                        task_id,
                        attempt,
                        reported: Rc::new(Cell::new(0)),
                        backpressure: backpressure.is_some(),
                        gone: false,
                        cancelled: ctx.cancelled.clone(),
                    };
                    streamed = Some(sink.reported.clone());
                    if sink.backpressure {
                        self.state.lock().acks.insert(task_id, Acks::default());
                    }
                    f(guard, &mut reader, sink).map(|fut| -> crate::registry::ValuesFuture {
                        Box::pin(async move { fut.await.map(|()| Vec::new()) })
                    })
                }
                _ => Err(Error::InvalidOption("an actor's generator method streams its items".into())),
            },
            Ok(MethodRun::Values(_) | MethodRun::Items(_)) => {
                Err(Error::Protocol("a synchronous method on an async actor's event loop".into()))
            }
        }))
        .unwrap_or_else(|_| std::process::exit(101))
        .and_then(|fut| reader.finish().map(|()| fut));
        drop(reader);
        context::set(None);
        let result = match made {
            Err(e) => Err(e),
            Ok(fut) => {
                let fut = context::scope(ctx.clone(), AssertUnwindSafe(fut).catch_unwind());
                match Abortable::new(fut, abort).await {
                    Err(futures::future::Aborted) => Err(Error::TaskCancelled),
                    // A panic in a method ends the actor's process (its
                    // state may be half-updated) before anything is
                    // reported: the node restarts it or reports it dead.
                    Ok(Err(_panic)) => std::process::exit(101),
                    Ok(Ok(r)) => r,
                }
            }
        };
        match streamed {
            Some(reported) => {
                self.state.lock().acks.remove(&task_id);
                let outcome = match result {
                    Ok(_) => TaskOutcome::Streamed { items: reported.get() },
                    Err(e) => TaskOutcome::Failed(e),
                };
                let _ = self.send(ToNode::TaskDone { task_id, attempt, outcome });
            }
            None => self.report(task_id, attempt, expected, result, &ctx.name),
        }
        self.exit_if_requested(task_id);
    }
}

/// Where an async actor's generator method puts its items: reported to the
/// owner one by one; with backpressure, [`item`](Self::item) waits for room
/// without blocking the event loop (other calls go on meanwhile).
pub struct AsyncItemSink {
    core: Arc<CoreWorker>,
    task_id: TaskId,
    attempt: u32,
    /// Items reported so far (read by the executor after the future ends,
    /// also when a cancel dropped it).
    reported: Rc<Cell<u32>>,
    backpressure: bool,
    /// The owner dropped the stream: no more acknowledgements to wait for.
    gone: bool,
    cancelled: Arc<AtomicBool>,
}

impl AsyncItemSink {
    /// Reports one yielded value; with backpressure, returns once the owner
    /// has room for more. An error (cancelled, connection lost) stops the
    /// generator.
    pub async fn item(&mut self, value: ReturnValue) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::TaskCancelled);
        }
        let index = self.reported.get();
        let digest = value.digest(self.core.arena());
        let (value, keep) = value.into_parts();
        self.core.send(ToNode::ReportItem { task_id: self.task_id, attempt: self.attempt, index, value, digest })?;
        drop(keep);
        self.reported.set(index + 1);
        if !self.backpressure || self.gone {
            return Ok(());
        }
        std::future::poll_fn(|cx| {
            // The cancel first, as for a blocking generator.
            if self.cancelled.load(Ordering::Relaxed) {
                return Poll::Ready(Err(Error::TaskCancelled));
            }
            let mut st = self.core.state.lock();
            if let Some(reason) = &st.disconnected {
                return Poll::Ready(Err(Error::Disconnected(reason.clone())));
            }
            match st.acks.get_mut(&self.task_id) {
                Some(a) if a.gone => {
                    self.gone = true;
                    Poll::Ready(Ok(()))
                }
                Some(a) if a.acked.contains(&index) => Poll::Ready(Ok(())),
                Some(a) => {
                    // Woken by the acknowledgement, a cancel or a lost
                    // connection (all under the state's lock).
                    a.wakers.push(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(Ok(())),
            }
        })
        .await
    }
}
