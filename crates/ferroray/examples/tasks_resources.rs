//! Ray tasks overview, "Specifying Resource Requirements": a task declares
//! the CPUs, GPUs and custom resources it holds while it runs; `options()`
//! overrides the declaration per call. The scheduler starts a task only when
//! its resources are free.
//!
//! Run with `cargo run -p ferroray --example tasks_resources`.

use std::time::{Duration, Instant};

// Specify required resources.
#[ferroray::remote(num_cpus = 4, num_gpus = 2)]
fn my_function() -> i64 {
    1
}

/// Holds one unit of the custom resource "disk" (attribute form).
#[ferroray::remote(resources = [("disk", 1.0)])]
fn write_to_disk(i: i64, sleep_ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(sleep_ms));
    i
}

/// No custom resource declared: given one per call with `options()`.
#[ferroray::remote]
fn read_from_disk(i: i64, sleep_ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(sleep_ms));
    i
}

fn main() -> ferroray::Result<()> {
    // A node that has enough of everything: 4 CPUs, 2 GPUs and 2 "disk".
    ferroray::init_with(ferroray::Config::default().num_cpus(4).num_gpus(2).resource("disk", 2.0))?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    // Declared requirements: 4 CPUs and 2 GPUs.
    assert_eq!(my_function::remote().get()?, 1);
    println!("my_function ran with num_cpus = 4, num_gpus = 2");

    // Override the default resource requirements.
    assert_eq!(my_function::options().num_cpus(3.0).remote().get()?, 1);
    println!("my_function ran with options().num_cpus(3.0)");

    // Custom resource: the node has 2 "disk", each task holds 1, so at most
    // two run at once although there are 4 CPUs: three tasks of 400 ms take
    // at least two rounds.
    let sleep_ms = 400;
    let start = Instant::now();
    let refs = vec![
        write_to_disk::remote(0, sleep_ms),
        write_to_disk::remote(1, sleep_ms),
        read_from_disk::options().resource("disk", 1.0).remote(2, sleep_ms),
    ];
    assert_eq!(ferroray::get_all(&refs)?, vec![0, 1, 2]);
    let elapsed = start.elapsed();
    println!("3 tasks holding disk = 1 each (node has disk = 2) took {:.2} s", elapsed.as_secs_f64());
    assert!(elapsed >= Duration::from_millis(2 * sleep_ms), "more than two disk tasks ran at once: {elapsed:?}");

    // Without the custom resource, the same three tasks run together.
    let start = Instant::now();
    let refs: Vec<_> = (0..3).map(|i| read_from_disk::remote(i, sleep_ms)).collect();
    assert_eq!(ferroray::get_all(&refs)?, vec![0, 1, 2]);
    println!("3 tasks without disk took {:.2} s", start.elapsed().as_secs_f64());

    // A task that asks for more than the cluster has can never run.
    let too_big = my_function::options().num_gpus(3.0).remote();
    match too_big.get_timeout(Duration::from_secs(10)) {
        Err(ferroray::Error::Infeasible(msg)) => println!("num_gpus = 3 is infeasible: {msg}"),
        other => panic!("expected Infeasible, got {other:?}"),
    }
    println!("resource requirements respected");
    Ok(())
}
