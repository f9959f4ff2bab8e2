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

/// A stress test's bounds: at most `iterations` rounds and `secs` seconds,
/// both multiplied by `FERRORAY_STRESS_SCALE` (default 1) for long local runs.
fn stress_budget(iterations: u64, secs: u64) -> (u64, Instant) {
    let scale: u64 = std::env::var("FERRORAY_STRESS_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    (iterations * scale, Instant::now() + Duration::from_secs(secs * scale))
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
    let g = endless::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote();
    assert!(eventually(T, || has_event(g.task_id(), TaskState::Running)));
    std::thread::sleep(Duration::from_millis(100));
    ferroray::cancel(&g).unwrap();
    let (_, err) = drain(g, 10);
    assert_eq!(err, Some(Error::TaskCancelled));
}

#[test]
fn close_as_the_generator_starts_stops_the_producer() {
    let _c = cluster_with(slow_start(400).num_cpus(1));
    let g = endless::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote();
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
    let g = endless::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote();
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
    let (iterations, end) = stress_budget(3_000, 6);
    let (mut fresh, mut piped, mut gens) = (0, 0, 0);
    for i in 0..iterations {
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
                let g = endless::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote();
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

// ---------------------------------------------------------------- 2: force-cancel

fn running_pid(task: ferroray::TaskId) -> Option<u32> {
    ferroray::tasks().unwrap().iter().find(|e| e.task_id == task && e.state == TaskState::Running)?.worker_pid
}

#[test]
fn a_force_cancel_racing_with_completion_kills_only_the_cancelled_task() {
    // The kill reaches the worker only after `a` has finished there: the
    // worker must take nothing more meanwhile, and `b`, queued behind `a` on
    // it, must not pay for `a`'s death.
    let _c = cluster_with(Config::default().num_cpus(1).test_kill_delay(Duration::from_millis(700)));
    let a = sleep_ms::remote(300);
    let b = sleep_ms::options().max_retries(0).remote(1_000);
    assert!(eventually(T, || running_pid(a.id().task).is_some()));
    let doomed = running_pid(a.id().task).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    ferroray::cancel_with(&a, ferroray::CancelOptions::default().force().recursive(false)).unwrap();
    assert_eq!(get(&a), Err(Error::TaskCancelled));
    assert_eq!(get(&b), Ok(1_000), "b does not pay for a's kill");
    assert!(eventually(T, || common::process_gone(doomed)), "the doomed worker was killed");
    let events = ferroray::tasks().unwrap();
    let b_events: Vec<_> = events.iter().filter(|e| e.task_id == b.id().task).collect();
    assert!(!b_events.iter().any(|e| e.state == TaskState::Running && e.worker_pid == Some(doomed)), "{b_events:?}");
    assert!(!b_events.iter().any(|e| matches!(e.state, TaskState::Failed | TaskState::Retrying)), "{b_events:?}");
    // Only the one pid was killed: the next tasks run.
    assert_eq!(get(&sleep_ms::remote(1)), Ok(1));
}

/// Force-cancels a short task about when it finishes, with a task that may
/// not be retried queued behind it on the same worker: that task always
/// succeeds.
#[test]
fn stress_force_cancel_at_completion() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let (iterations, end) = stress_budget(1_500, 6);
    let (mut runs, mut cancelled) = (0, 0);
    for i in 0..iterations {
        if Instant::now() >= end {
            break;
        }
        let a = sleep_ms::remote(i % 3);
        let b = sleep_ms::options().max_retries(0).remote(0);
        std::thread::sleep(Duration::from_micros(500 * (i % 5)));
        ferroray::cancel_with(&a, ferroray::CancelOptions::default().force().recursive(false)).unwrap();
        match get(&a) {
            Ok(_) => {}
            Err(Error::TaskCancelled) => cancelled += 1,
            Err(e) => panic!("iteration {i}: a failed with {e}"),
        }
        assert_eq!(get(&b), Ok(0), "iteration {i}: b paid for a's kill");
        runs += 1;
    }
    eprintln!("force-cancel at completion: {runs} runs, {cancelled} cancelled");
    assert!(runs >= 10);
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_tasks == 0));
}

#[ferroray::remote]
fn count_to(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// Kills workers whose generator is paused by backpressure, while other
/// generators stream beside them: the killed ones end cancelled, the others
/// deliver every item exactly once.
#[test]
fn stress_kill_while_paused() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let (iterations, end) = stress_budget(600, 6);
    let mut runs = 0;
    for i in 0..iterations {
        if Instant::now() >= end {
            break;
        }
        let victim = endless::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote();
        let other =
            count_to::options().generator_backpressure(ferroray::Backpressure::items::<2>()).max_retries(0).remote(20);
        let first = victim.next_timeout(T).unwrap().unwrap();
        assert_eq!(get(&first), Ok(0));
        std::thread::sleep(Duration::from_micros(300 * (i % 7)));
        ferroray::cancel_with(&victim, ferroray::CancelOptions::default().force().recursive(false)).unwrap();
        let (_, err) = drain(victim, 10);
        assert_eq!(err, Some(Error::TaskCancelled), "iteration {i}");
        let got: Vec<u64> = other.map(|r| get(&r).unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>(), "iteration {i}");
        runs += 1;
    }
    eprintln!("kill while paused: {runs} runs");
    assert!(runs >= 5);
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_tasks == 0));
}

// ---------------------------------------------------------------- 3: replays of refs

#[ferroray::remote]
fn times_ten(v: u64) -> u64 {
    v * 10
}

/// Yields `(v, ref to v * 10)`, the ref from `put` or from a sub-task in
/// turn. The first attempt's worker dies at item `crash_at`; the retry
/// yields `v + shift` (a different value) or, with `extra_ref`, one more ref per item.
fn yield_refs(
    dir: String,
    n: u64,
    crash_at: u64,
    shift: u64,
    extra_ref: bool,
) -> impl Iterator<Item = (u64, Vec<ObjectRef<u64>>)> {
    let marker = Path::new(&dir).join("crashed");
    let first = !marker.exists();
    (0..n).map(move |i| {
        if first && i == crash_at {
            std::fs::write(&marker, "").unwrap();
            std::process::exit(1);
        }
        let v = if first { i } else { i + shift };
        let r = if i % 2 == 0 { ferroray::put(v * 10).unwrap() } else { times_ten::remote(v) };
        let mut refs = vec![r];
        if extra_ref && !first {
            refs.push(ferroray::put(0).unwrap());
        }
        (v, refs)
    })
}

#[ferroray::remote]
fn refs_gen(
    dir: String,
    n: u64,
    crash_at: u64,
    shift: u64,
    extra_ref: bool,
) -> impl Iterator<Item = (u64, Vec<ObjectRef<u64>>)> {
    yield_refs(dir, n, crash_at, shift, extra_ref)
}

/// The same item twice in a row, then a different one: the ordinals tell
/// `[a, a]` from `[a, b]`.
#[ferroray::remote]
fn same_or_two(dir: String) -> impl Iterator<Item = Vec<ObjectRef<u64>>> {
    let marker = Path::new(&dir).join("crashed");
    let first = !marker.exists();
    (0..3u64).map(move |i| {
        if first && i == 2 {
            std::fs::write(&marker, "").unwrap();
            std::process::exit(1);
        }
        let a = ferroray::put(i).unwrap();
        if first || i == 1 {
            vec![a.clone(), a]
        } else {
            vec![a, ferroray::put(i).unwrap()]
        }
    })
}

fn check_refs(items: Vec<ferroray::Result<(u64, Vec<ObjectRef<u64>>)>>, n: u64) {
    assert_eq!(items.len() as u64, n, "every item once");
    for (i, item) in items.into_iter().enumerate() {
        let (v, refs) = item.unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(v, i as u64);
        assert_eq!(refs.len(), 1);
        assert_eq!(get(&refs[0]), Ok(v * 10), "item {i}");
    }
}

#[test]
fn a_retried_generator_of_refs_continues_its_stream() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let d = scratch_dir("races-refs");
    let dir = d.to_string_lossy().to_string();
    let g = refs_gen::remote(dir, 6, 3, 0, false);
    let items: Vec<_> = g.map(|r| get(&r)).collect();
    check_refs(items, 6);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_retried_dynamic_generator_of_refs_continues_its_list() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let d = scratch_dir("races-dyn-refs");
    let dir = d.to_string_lossy().to_string();
    let list = get(&refs_gen::options().num_returns_dynamic().remote(dir, 6, 3, 0, false)).unwrap();
    let items: Vec<_> = list.iter().map(get).collect();
    check_refs(items, 6);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_retry_that_yields_other_data_or_other_refs_is_still_a_mismatch() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let mismatch = |got: &[ferroray::Result<Vec<ObjectRef<u64>>>], at: usize| {
        assert!(
            matches!(got.last(), Some(Err(Error::ReplayMismatch(m))) if m.contains(&format!("different value at index {at}"))),
            "{got:?}"
        );
    };
    // Other data beside the refs.
    let d = scratch_dir("races-refs-data");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> = refs_gen::remote(dir, 5, 2, 100, false).map(|r| get(&r).map(|(_, refs)| refs)).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    mismatch(&got, 0);
    let _ = std::fs::remove_dir_all(&d);
    // One more ref per item.
    let d = scratch_dir("races-refs-count");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> = refs_gen::remote(dir, 5, 2, 0, true).map(|r| get(&r).map(|(_, refs)| refs)).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    mismatch(&got, 0);
    let _ = std::fs::remove_dir_all(&d);
    // The same ref twice where there were two different ones.
    let d = scratch_dir("races-refs-pattern");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> = same_or_two::remote(dir).map(|r| get(&r)).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    mismatch(&got, 0);
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------- 4: nested consumers

/// Awaits the items of a generator it started (a `Stream`).
#[ferroray::remote]
async fn async_consumer(n: u64) -> u64 {
    use futures::StreamExt;
    let mut g = count_to::remote(n);
    let mut sum = 0;
    while let Some(r) = StreamExt::next(&mut g).await {
        sum += r.get().unwrap();
    }
    sum
}

/// Polls a generator it started without ever blocking: `next_ready`, or
/// `wait` with a zero timeout first.
#[ferroray::remote]
fn polling_consumer(n: u64, with_wait: bool) -> u64 {
    let g = count_to::remote(n);
    let mut sum = 0;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if with_wait {
            let (ready, _) = ferroray::wait(std::slice::from_ref(&g), 1, Some(Duration::ZERO)).unwrap();
            if ready.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        match g.next_ready() {
            Some(r) => sum += r.get().unwrap(),
            None if g.is_finished() => return sum,
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    u64::MAX
}

const FIVE_SECONDS: Duration = Duration::from_secs(5);

#[test]
fn an_async_task_awaiting_its_own_generator_lends_its_cpu() {
    let _c = cluster_with(Config::default().num_cpus(1));
    assert_eq!(async_consumer::remote(10).get_timeout(FIVE_SECONDS), Ok(45));
}

#[test]
fn two_async_consumers_on_two_cpus_do_not_deadlock() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let a = async_consumer::remote(10);
    let b = async_consumer::remote(20);
    assert_eq!(a.get_timeout(FIVE_SECONDS), Ok(45));
    assert_eq!(b.get_timeout(FIVE_SECONDS), Ok(190));
}

#[test]
fn a_task_polling_its_generator_with_next_ready_or_wait_zero_does_not_deadlock() {
    let _c = cluster_with(Config::default().num_cpus(1));
    assert_eq!(polling_consumer::remote(10, false).get_timeout(FIVE_SECONDS), Ok(45));
    assert_eq!(polling_consumer::remote(10, true).get_timeout(FIVE_SECONDS), Ok(45));
}

// ---------------------------------------------------------------- pool, is_ready, stats

#[test]
fn paused_generators_stay_within_max_workers_and_idle_workers_exit() {
    let cfg = Config::default().num_cpus(2).max_workers(4).idle_worker_timeout(Duration::from_millis(300));
    let _c = cluster_with(cfg);
    let gens: Vec<_> = (0..20)
        .map(|_| count_to::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote(3))
        .collect();
    // Each one started pauses at once (nobody consumes): no more than
    // max_workers processes however long they stay paused.
    let end = Instant::now() + Duration::from_millis(1_500);
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(ferroray::runtime_stats().unwrap().workers);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 4, "{most} workers for paused generators with max_workers(4)");
    // Consumed in order, every one runs in turn (they start in the order
    // they were submitted, even after being taken back from paused workers).
    for (i, g) in gens.into_iter().enumerate() {
        let mut got = Vec::new();
        loop {
            match g.next_timeout(Duration::from_secs(5)) {
                Ok(Some(r)) => got.push(get(&r).unwrap()),
                Ok(None) => break,
                Err(e) => panic!("generator {i}: {e} after {got:?}"),
            }
        }
        assert_eq!(got, vec![0, 1, 2]);
    }
    // Idle beyond the steady size (2 CPUs): they exit.
    assert!(
        eventually(Duration::from_secs(5), || ferroray::runtime_stats().unwrap().workers <= 2),
        "{} workers left",
        ferroray::runtime_stats().unwrap().workers
    );
    eprintln!("most workers while paused: {most}");
}

#[test]
fn is_ready_turns_true_on_the_driver_without_a_get() {
    let _c = cluster_with(Config::default());
    let r = sleep_ms::remote(50);
    assert!(!r.is_ready());
    assert!(eventually(Duration::from_secs(10), || r.is_ready()), "never ready");
    assert_eq!(get(&r), Ok(50));
}

#[test]
fn runtime_stats_counts_streams() {
    let _c = cluster_with(Config::default());
    assert_eq!(ferroray::runtime_stats().unwrap().node_streams, 0);
    let g = endless::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote();
    let done = count_to::remote(3);
    assert_eq!(ferroray::runtime_stats().unwrap().node_streams, 2);
    assert_eq!(done.map(|r| get(&r).unwrap()).sum::<u64>(), 3);
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_streams == 1));
    g.close().unwrap();
    assert!(eventually(T, || ferroray::runtime_stats().unwrap().node_streams == 0), "the closed stream was left");
}
