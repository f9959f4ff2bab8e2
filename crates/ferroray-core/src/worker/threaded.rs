//! A threaded actor's executor: up to `max_concurrency` calls at once on a
//! pool of threads, `&self` methods together and a `&mut self` method
//! alone.
//!
//! The dispatcher (the process's main thread) admits calls one by one in
//! queue order, so calls start in the order they were sent:
//! 1. It takes the next call off the queue (recorded as started, so that a
//!    cancel from now on raises its flag instead of finding nothing).
//! 2. It waits until the call may run: a `&mut self` call until no call
//!    runs, a `&self` call until no `&mut self` call runs and fewer than
//!    `max_concurrency` run. Later calls wait behind it, so a `&mut self`
//!    call is never overtaken by the `&self` calls sent after it. If the
//!    call is cancelled meanwhile, it ends there (`TaskCancelled`).
//! 3. It hands the call to an idle thread, or starts one (never more than
//!    `max_concurrency`). A thread idle for `IDLE_THREAD_EXIT` exits, all
//!    but the last; the count it leaves is what step 3 reads.
//! 4. The thread runs the call, unless it was cancelled while it waited
//!    (then it reports `TaskCancelled` without running it), and gives its
//!    slot back, waking the dispatcher.
//!
//! The state's `RwLock` (see `executor::with_actor_state`) is what makes
//! shared and exclusive access sound; admission makes taking it never wait
//! on another call.

use super::executor::{is_exclusive, TaskQueue};
use super::*;

/// How often a call waiting for its turn looks at its cancel flag.
const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_millis(10);

/// A thread of the pool with no call for this long exits (one stays): a
/// burst of calls leaves no idle threads behind, each holding its stack
/// and its interpreter state (a thousand of them held 30 MB).
const IDLE_THREAD_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A call admitted and waiting for a thread.
struct Job {
    spec: TaskSpec,
    ctx: TaskContext,
    exclusive: bool,
}

#[derive(Default)]
struct Slots {
    /// Calls admitted and not finished.
    running: usize,
    /// One of them takes `&mut self` (then it is the only one).
    exclusive: bool,
    /// Admitted calls no thread has taken yet.
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// Threads started.
    threads: usize,
}

#[derive(Default)]
struct Pool {
    slots: Mutex<Slots>,
    /// A call was admitted or finished.
    changed: Condvar,
}

/// Serves the actor's calls until the process ends. Never returns.
pub(super) fn serve(queue: &Arc<TaskQueue>, core: &Arc<CoreWorker>, max_concurrency: usize) {
    let pool = Arc::new(Pool::default());
    'calls: loop {
        let (spec, ctx) = queue.next_blocking();
        let exclusive = is_exclusive(&spec);
        let mut s = pool.slots.lock();
        while !(if exclusive { s.running == 0 } else { !s.exclusive && s.running < max_concurrency }) {
            // A call cancelled while it waits for its turn ends now, not
            // when the calls before it are done (a cancel raises its flag
            // only, so it is looked at between short waits).
            if ctx.is_cancelled() {
                drop(s);
                let (task_id, attempt) = (spec.task_id, spec.attempt);
                core.release_unrun(spec);
                let _ = core.send(ToNode::TaskDone {
                    task_id,
                    attempt,
                    outcome: TaskOutcome::Failed(Error::TaskCancelled),
                });
                queue.finished(task_id);
                continue 'calls;
            }
            pool.changed.wait_for(&mut s, CANCEL_CHECK);
        }
        s.running += 1;
        s.exclusive = exclusive;
        s.jobs.push_back(Job { spec, ctx, exclusive });
        if s.jobs.len() > s.idle && s.threads < max_concurrency {
            s.threads += 1;
            let (pool, queue, core) = (pool.clone(), queue.clone(), core.clone());
            let spawned =
                std::thread::Builder::new().name("ferroray-actor".into()).spawn(move || run_jobs(&pool, &queue, &core));
            if let Err(e) = spawned {
                // No thread to run the call: the actor cannot go on. Its
                // process ends, and the node restarts it or reports it dead.
                eprintln!("ferroray: an actor cannot start a thread for its calls: {e}");
                std::process::exit(1);
            }
        }
        pool.changed.notify_all();
    }
}

/// One thread of the pool: runs admitted calls, one at a time.
fn run_jobs(pool: &Pool, queue: &TaskQueue, core: &Arc<CoreWorker>) {
    loop {
        let job = {
            let mut s = pool.slots.lock();
            let idle_since = std::time::Instant::now();
            loop {
                if let Some(job) = s.jobs.pop_front() {
                    break job;
                }
                let left = IDLE_THREAD_EXIT.saturating_sub(idle_since.elapsed());
                if left.is_zero() && s.threads > 1 {
                    // Under the lock the dispatcher starts threads by: it
                    // sees one fewer, and starts one when a call needs it.
                    s.threads -= 1;
                    return;
                }
                s.idle += 1;
                if left.is_zero() {
                    pool.changed.wait(&mut s);
                } else {
                    pool.changed.wait_for(&mut s, left);
                }
                s.idle -= 1;
            }
        };
        let task_id = job.ctx.task_id;
        if job.ctx.is_cancelled() {
            // Cancelled while it waited for its turn: it never runs.
            let attempt = job.spec.attempt;
            core.release_unrun(job.spec);
            let _ =
                core.send(ToNode::TaskDone { task_id, attempt, outcome: TaskOutcome::Failed(Error::TaskCancelled) });
        } else {
            core.run_task(job.spec, job.ctx);
        }
        queue.finished(task_id);
        let mut s = pool.slots.lock();
        s.running -= 1;
        if job.exclusive {
            s.exclusive = false;
        }
        pool.changed.notify_all();
    }
}
