//! Ray tasks overview: "Ray tasks are executed in parallel". Four
//! `slow_function` tasks launched in a loop finish together.
//!
//! Scaled down: the document sleeps 10 s per task; here 1 s.
//!
//! Run with `cargo run -p ferroray --example tasks_parallel`.

use std::time::{Duration, Instant};

/// Sleep of each task (the document's 10 s, scaled to 1 s).
const SLEEP: Duration = Duration::from_secs(1);

#[ferroray::remote]
fn slow_function() -> i64 {
    std::thread::sleep(SLEEP);
    1
}

fn main() -> ferroray::Result<()> {
    // Four CPUs, so that four one-CPU tasks can run at the same time (they
    // only sleep, so this holds on a machine with fewer cores too).
    ferroray::init_with(ferroray::Config::default().num_cpus(4))?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    let start = Instant::now();
    let mut refs = Vec::new();
    for _ in 0..4 {
        // This doesn't block.
        refs.push(slow_function::remote());
    }
    let submitted = start.elapsed();
    println!("submitted 4 tasks in {submitted:?}");
    assert!(submitted < SLEEP, "remote() should not wait for the task ({submitted:?})");

    let results = ferroray::get_all(&refs)?;
    let elapsed = start.elapsed();
    assert_eq!(results, vec![1, 1, 1, 1]);
    println!("4 tasks of {:.1} s each finished in {:.2} s", SLEEP.as_secs_f64(), elapsed.as_secs_f64());
    // Sequentially they would take 4 s.
    assert!(elapsed < Duration::from_secs(3), "the tasks did not run in parallel: {elapsed:?}");
    println!("the tasks ran in parallel");
    Ok(())
}
