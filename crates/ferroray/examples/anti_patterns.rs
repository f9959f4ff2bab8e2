//! Ray tasks overview, the anti-patterns around `get`:
//! - calling `get` in a loop (no parallelism) instead of on a list;
//! - calling `get` unnecessarily (download, then upload again) instead of
//!   passing the ref on;
//! - calling `get` on refs nested in a task's arguments instead of passing
//!   them as direct arguments, which the runtime resolves.
//!
//! Scaled down: tasks sleep 100 ms and the rollout is 8 MB.
//!
//! Run with `cargo run -p ferroray --example anti_patterns`.

use ferroray::ObjectRef;
use std::time::{Duration, Instant};

const TASK_SLEEP: Duration = Duration::from_millis(100);
const NUM_TASKS: i64 = 8;

#[ferroray::remote]
fn f(i: i64) -> i64 {
    std::thread::sleep(TASK_SLEEP);
    i * i
}

#[ferroray::remote]
fn generate_rollout() -> Vec<f64> {
    (0..1_000_000).map(|i| i as f64).collect()
}

#[ferroray::remote]
fn reduce(rollout: Vec<f64>) -> f64 {
    rollout.iter().sum()
}

#[ferroray::remote]
fn one() -> i64 {
    1
}

/// Anti-pattern: the refs arrive unresolved, and the task blocks in `get`.
#[ferroray::remote]
fn pass_via_nested_ref(refs: Vec<ObjectRef<i64>>) -> ferroray::Result<i64> {
    let sum: i64 = ferroray::get_all(&refs)?.iter().sum();
    println!("pass_via_nested_ref: {sum}");
    Ok(sum)
}

/// Better: refs given as direct arguments arrive as their values.
#[ferroray::remote]
fn pass_via_direct_arg(a: i64, b: i64, c: i64) -> i64 {
    let sum = a + b + c;
    println!("pass_via_direct_arg: {sum}");
    sum
}

fn main() -> ferroray::Result<()> {
    ferroray::init_with(ferroray::Config::default().num_cpus(4))?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    get_in_a_loop()?;
    unnecessary_get()?;
    nested_refs()?;
    Ok(())
}

fn get_in_a_loop() -> ferroray::Result<()> {
    // Warm up the worker pool so that both measurements find it ready.
    ferroray::get_all(&(0..4).map(f::remote).collect::<Vec<_>>())?;

    // Anti-pattern: no parallelism, waits for each task in turn.
    let start = Instant::now();
    let mut sequential_returns = Vec::new();
    for i in 0..NUM_TASKS {
        sequential_returns.push(f::remote(i).get()?);
    }
    let t_loop = start.elapsed();

    // Better: all tasks execute in parallel.
    let start = Instant::now();
    let mut refs = Vec::new();
    for i in 0..NUM_TASKS {
        refs.push(f::remote(i));
    }
    let parallel_returns = ferroray::get_all(&refs)?;
    let t_list = start.elapsed();

    assert_eq!(sequential_returns, parallel_returns);
    println!(
        "get in a loop: {:.2} s; get of a list: {:.2} s ({NUM_TASKS} tasks of {} ms, 4 CPUs)",
        t_loop.as_secs_f64(),
        t_list.as_secs_f64(),
        TASK_SLEEP.as_millis()
    );
    // The loop cannot be faster than the tasks one after another.
    assert!(t_loop >= TASK_SLEEP * NUM_TASKS as u32);
    Ok(())
}

fn unnecessary_get() -> ferroray::Result<()> {
    // Anti-pattern: downloads the result, then uploads it again.
    let start = Instant::now();
    let rollout = generate_rollout::remote().get()?;
    let reduced_via_value = reduce::remote(rollout).get()?;
    let t_value = start.elapsed();

    // Better: pass the ref; the object stays in the object store.
    let start = Instant::now();
    let rollout_obj_ref = generate_rollout::remote();
    let reduced = reduce::remote(&rollout_obj_ref).get()?;
    let t_ref = start.elapsed();

    assert_eq!(reduced, reduced_via_value);
    assert_eq!(reduced, 499_999_500_000.0);
    println!(
        "reduce(get(rollout)): {:.3} s; reduce(rollout ref): {:.3} s; sum {reduced}",
        t_value.as_secs_f64(),
        t_ref.as_secs_f64()
    );
    Ok(())
}

fn nested_refs() -> ferroray::Result<()> {
    let refs: Vec<ObjectRef<i64>> = (0..3).map(|_| one::remote()).collect();
    let nested = pass_via_nested_ref::remote(refs).get()?;

    let [a, b, c] = [one::remote(), one::remote(), one::remote()];
    let direct = pass_via_direct_arg::remote(a, b, c).get()?;

    assert_eq!(nested, 3);
    assert_eq!(direct, 3);
    println!("nested refs summed to {nested}; direct ref args summed to {direct}");
    Ok(())
}
