//! Resource-aware scheduling: CPUs, GPUs and custom resources are held while
//! a task runs; a task that can never fit fails at once; nested tasks that
//! block in `get` lend their CPU back instead of deadlocking.

mod common;

use common::{cluster_with, get};
use ferroray::{Config, Error};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Sleeps and reports when it ran.
#[ferroray::remote]
fn span(ms: u64) -> (u128, u128) {
    let start = now_ms();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now_ms())
}

#[ferroray::remote]
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = fib::remote(n - 1);
    let b = fib::remote(n - 2);
    a.get().expect("fib n-1") + b.get().expect("fib n-2")
}

fn overlaps(spans: &[(u128, u128)]) -> bool {
    spans.iter().enumerate().any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1))
}

#[test]
fn a_task_runs_only_where_its_resources_are_free() {
    let _c = cluster_with(Config::default().num_cpus(2).num_gpus(1).resource("disk", 1.0));
    // Two CPU tasks fit side by side.
    let both: Vec<_> = (0..2).map(|_| span::remote(300)).collect();
    assert!(overlaps(&ferroray::get_all(&both).unwrap()), "two 1-CPU tasks on 2 CPUs run at once");
    // A 2-CPU task leaves no room for another.
    let wide: Vec<_> = (0..3).map(|_| span::options().num_cpus(2.0).remote(150)).collect();
    assert!(!overlaps(&ferroray::get_all(&wide).unwrap()), "2-CPU tasks on 2 CPUs run one at a time");
    // One GPU: one at a time.
    let gpu: Vec<_> = (0..3).map(|_| span::options().num_cpus(0.0).num_gpus(1.0).remote(150)).collect();
    assert!(!overlaps(&ferroray::get_all(&gpu).unwrap()));
    // One unit of a custom resource: one at a time.
    let disk: Vec<_> = (0..3).map(|_| span::options().num_cpus(0.0).resource("disk", 1.0).remote(150)).collect();
    assert!(!overlaps(&ferroray::get_all(&disk).unwrap()));
    // Fractions add up: four half-CPU tasks run at once on 2 CPUs.
    let halves: Vec<_> = (0..4).map(|_| span::options().num_cpus(0.5).remote(300)).collect();
    let spans = ferroray::get_all(&halves).unwrap();
    let first_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(spans.iter().all(|s| s.0 < first_end), "4 x 0.5 CPU on 2 CPUs all start before any ends: {spans:?}");
}

#[test]
fn a_task_that_can_never_fit_fails_at_submission() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let t = Instant::now();
    for r in [
        span::options().num_cpus(3.0).remote(1),
        span::options().num_gpus(1.0).remote(1),
        span::options().resource("tpu", 1.0).remote(1),
    ] {
        match r.get_timeout(Duration::from_secs(5)) {
            Err(Error::Infeasible(msg)) => assert!(msg.contains("span"), "{msg}"),
            other => panic!("expected Infeasible, got {other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(2), "infeasible tasks must not wait");
    // The node goes on serving feasible work.
    assert!(get(&span::remote(1)).unwrap().0 > 0);
}

#[test]
fn nested_tasks_that_block_in_get_do_not_deadlock_on_two_cpus() {
    let _c = cluster_with(Config::default().num_cpus(2));
    assert_eq!(get(&fib::remote(7)).unwrap(), 13);
}

#[ferroray::remote]
fn chain(depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    // With one CPU the child cannot start: it may be queued behind this very
    // task on this worker, and must be taken back when this task blocks.
    chain::remote(depth - 1).get().expect("child") + 1
}

#[test]
fn a_task_queued_behind_a_blocked_parent_is_taken_back() {
    let _c = cluster_with(Config::default().num_cpus(1).max_workers(1));
    let t = Instant::now();
    assert_eq!(get(&chain::remote(4)).unwrap(), 4);
    assert!(t.elapsed() < Duration::from_secs(10));
    // Pipelined tasks behind a busy worker still all run, in order of submission.
    let refs: Vec<_> = (0..50).map(|i| span::remote(i % 3)).collect();
    assert_eq!(ferroray::get_all(&refs).unwrap().len(), 50);
}

#[test]
fn a_task_queued_behind_a_long_one_moves_to_a_worker_that_frees_up() {
    let _c = cluster_with(Config::default().num_cpus(2));
    // Both workers up.
    ferroray::get_all(&[span::remote(50), span::remote(50)]).unwrap();
    let long = span::remote(1500);
    let short = span::remote(100);
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let queued = span::remote(100);
    get(&queued).unwrap();
    assert!(t.elapsed() < Duration::from_millis(900), "waited {:?} behind the long task", t.elapsed());
    get(&short).unwrap();
    get(&long).unwrap();
    // Pipelined tasks are recorded as running only when they start.
    let events = ferroray::tasks().unwrap();
    let started = |r: &ferroray::ObjectRef<(u128, u128)>| {
        events.iter().find(|e| e.task_id == r.id().task && e.state == ferroray::TaskState::Running).map(|e| e.time_us)
    };
    let (q_start, _) = get(&queued).unwrap();
    let recorded = started(&queued).unwrap() as u128 / 1000;
    assert!(recorded <= q_start + 5, "recorded running at {recorded} ms, started at {q_start} ms");
}

#[test]
fn nested_blocking_calls_stop_at_the_process_cap_and_wait() {
    let cap = 3;
    let _c = cluster_with(Config::default().num_cpus(1).max_workers(1).max_worker_processes(cap));
    // Within the cap: three levels, three processes.
    assert_eq!(get(&chain::remote(2)).unwrap(), 2);
    // Deeper than the cap: the levels past it wait for a worker, and no
    // more processes start (before the cap, 1,000 levels made 1,000).
    let deep = chain::remote(6);
    assert!(matches!(deep.get_timeout(Duration::from_secs(2)), Err(Error::GetTimeout)));
    let workers = ferroray::runtime_stats().unwrap().workers;
    assert!(workers <= cap, "{workers} worker processes, cap {cap}");
    ferroray::cancel_with(&deep, ferroray::CancelOptions::default().force()).unwrap();
}

#[test]
fn the_process_cap_may_not_be_below_max_workers() {
    let _serial = common::serial();
    let r = ferroray::init_with(Config::default().max_workers(8).max_worker_processes(4));
    assert!(matches!(r, Err(Error::InvalidOption(m)) if m.contains("max_worker_processes")));
    assert!(!ferroray::is_initialized());
}
