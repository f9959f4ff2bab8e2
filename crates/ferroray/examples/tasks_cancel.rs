//! Ray tasks overview, "Cancelling Tasks": `cancel` on a task's ref; its
//! `get` then gives `Error::TaskCancelled`.
//!
//! - A running task is told to stop: it sees `is_cancelled()` turn true
//!   (cooperative cancellation; Rust cannot interrupt a thread).
//! - A task that never checks is stopped with `force = true`: its worker
//!   process is killed (and replaced).
//! - Beyond Ray, a grace period: asked first, killed only if it still runs
//!   after the grace (`CancelOptions::default().grace(..)`).
//! - A task still waiting for resources is simply dropped.
//!
//! Scaled down: the document's "sleep 10e6 s" becomes a loop that stops when
//! cancelled, or an hour-long sleep that only `force` ends.
//!
//! Run with `cargo run -p ferroray --example tasks_cancel`.

use ferroray::{Error, ObjectRef, TaskState};
use std::time::{Duration, Instant};

/// Sleeps "forever", but checks for cancellation every 50 ms.
#[ferroray::remote]
fn blocking_operation() {
    while !ferroray::is_cancelled() {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("blocking_operation saw is_cancelled() and stops");
}

/// Sleeps without ever checking: only a forced cancel ends it.
#[ferroray::remote]
fn uninterruptible_operation() {
    std::thread::sleep(Duration::from_secs(3600));
}

#[ferroray::remote]
fn my_function() -> i64 {
    1
}

fn main() -> ferroray::Result<()> {
    ferroray::init_with(ferroray::Config::default().num_cpus(2))?;
    let result = run();
    ferroray::shutdown();
    result
}

/// Waits until the task that makes `r` is running on a worker.
fn wait_until_running<T>(r: &ObjectRef<T>) -> ferroray::Result<()> {
    let task = r.id().task;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ferroray::tasks()?.iter().any(|e| e.task_id == task && e.state == TaskState::Running) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("task {task:?} did not start");
}

fn run() -> ferroray::Result<()> {
    // Cooperative: the running task notices and returns.
    let obj_ref = blocking_operation::remote();
    wait_until_running(&obj_ref)?;
    let start = Instant::now();
    ferroray::cancel(&obj_ref)?;
    match obj_ref.get() {
        Err(Error::TaskCancelled) => {
            println!("Object reference was cancelled (cooperatively, in {:.2} s).", start.elapsed().as_secs_f64())
        }
        other => panic!("expected TaskCancelled, got {other:?}"),
    }

    // Forced: the worker running the task is killed.
    let obj_ref = uninterruptible_operation::remote();
    wait_until_running(&obj_ref)?;
    let start = Instant::now();
    ferroray::cancel_with(&obj_ref, ferroray::CancelOptions::default().force())?;
    match obj_ref.get() {
        Err(Error::TaskCancelled) => {
            println!("Object reference was cancelled (forced, in {:.2} s).", start.elapsed().as_secs_f64())
        }
        other => panic!("expected TaskCancelled, got {other:?}"),
    }

    // A grace period: asked first, killed once the grace is over (a task
    // that checks `is_cancelled()` would have ended before it).
    let obj_ref = uninterruptible_operation::remote();
    wait_until_running(&obj_ref)?;
    let start = Instant::now();
    ferroray::cancel_with(&obj_ref, ferroray::CancelOptions::default().grace(Duration::from_millis(300)))?;
    match obj_ref.get() {
        Err(Error::TaskCancelled) => {
            println!("Object reference was cancelled (grace 0.3 s, killed in {:.2} s).", start.elapsed().as_secs_f64())
        }
        other => panic!("expected TaskCancelled, got {other:?}"),
    }

    // Queued: both CPUs are taken, so the third task waits; cancelling it
    // drops it before it ever runs.
    let hog1 = blocking_operation::remote();
    let hog2 = blocking_operation::remote();
    wait_until_running(&hog1)?;
    wait_until_running(&hog2)?;
    let queued = my_function::remote();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!queued.is_ready());
    ferroray::cancel(&queued)?;
    match queued.get() {
        Err(Error::TaskCancelled) => println!("Queued task was cancelled before it ran."),
        other => panic!("expected TaskCancelled, got {other:?}"),
    }
    let never_ran = !ferroray::tasks()?.iter().any(|e| e.task_id == queued.id().task && e.state == TaskState::Running);
    assert!(never_ran, "the cancelled queued task ran");
    ferroray::cancel(&hog1)?;
    ferroray::cancel(&hog2)?;
    assert!(matches!(hog1.get(), Err(Error::TaskCancelled)));
    assert!(matches!(hog2.get(), Err(Error::TaskCancelled)));

    // The cluster goes on working (the killed worker was replaced).
    assert_eq!(my_function::remote().get()?, 1);
    println!("all cancelled tasks gave TaskCancelled");
    Ok(())
}
