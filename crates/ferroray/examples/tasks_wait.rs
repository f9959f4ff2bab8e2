//! Ray tasks overview, "Waiting for Partial Results", with the patterns
//! "Processing Results in Submission Order" (use `wait` to process them in
//! completion order) and "Fetching Too Many Objects at Once" (fetch in
//! batches).
//!
//! Scaled down: the document's 10 s sleeps become 0.2 s to 1 s.
//!
//! Run with `cargo run -p ferroray --example tasks_wait`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[ferroray::remote]
fn slow_function(sleep_ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(sleep_ms));
    sleep_ms
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Sleeps, then says which task it is and when it finished.
#[ferroray::remote]
fn f(i: usize, sleep_ms: u64) -> (usize, u64) {
    std::thread::sleep(Duration::from_millis(sleep_ms));
    (i, now_us())
}

#[ferroray::remote]
fn return_big_object(i: usize) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(10 * i as u64));
    vec![i as u8; 256 * 1024]
}

fn main() -> ferroray::Result<()> {
    // Ten CPUs so that ten sleeping tasks run at once.
    ferroray::init_with(ferroray::Config::default().num_cpus(10))?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    first_of_two()?;
    completion_order()?;
    batches()?;
    Ok(())
}

/// `wait(refs, 1, None)` returns as soon as one task has finished.
fn first_of_two() -> ferroray::Result<()> {
    let start = Instant::now();
    let object_refs = vec![slow_function::remote(1000), slow_function::remote(200)];
    // Return as soon as one of the tasks finished execution.
    let (ready_refs, remaining_refs) = ferroray::wait(&object_refs, 1, None)?;
    let waited = start.elapsed();
    assert_eq!(ready_refs, vec![object_refs[1].clone()]);
    assert_eq!(remaining_refs, vec![object_refs[0].clone()]);
    println!("wait returned the 200 ms task after {:.2} s: {}", waited.as_secs_f64(), ready_refs[0].get()?);
    assert!(waited < Duration::from_millis(1000), "{waited:?}");

    // With a timeout, wait may return fewer than asked for.
    let (ready, not_ready) = ferroray::wait(&remaining_refs, 1, Some(Duration::from_millis(10)))?;
    assert!(ready.is_empty());
    assert_eq!(not_ready.len(), 1);
    println!("wait with a 10 ms timeout: 0 ready, 1 not ready");
    assert_eq!(remaining_refs[0].get()?, 1000);
    println!("first of two: the faster task came back first");
    Ok(())
}

/// Process results as they complete instead of in submission order.
fn completion_order() -> ferroray::Result<()> {
    let sleeps_ms = [500u64, 100, 900, 300, 0, 700, 200, 800, 400, 600];
    let refs: Vec<_> = sleeps_ms.iter().enumerate().map(|(i, &ms)| f::remote(i, ms)).collect();
    let mut unfinished = refs;
    let mut order = Vec::new();
    let mut finish_times = Vec::new();
    while !unfinished.is_empty() {
        let (finished, rest) = ferroray::wait(&unfinished, 1, None)?;
        unfinished = rest;
        assert_eq!(finished.len(), 1);
        let (i, finished_at) = finished[0].get()?;
        // process(result)
        order.push(i);
        finish_times.push(finished_at);
    }
    println!(
        "processed in completion order: {:?} (sleeps {:?} ms)",
        order,
        order.iter().map(|&i| sleeps_ms[i]).collect::<Vec<_>>()
    );
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..sleeps_ms.len()).collect::<Vec<_>>());
    // Each result came after the one before it had finished. (20 ms of slack
    // for the worker's clock reading and its message to the node; the
    // sleeps are 100 ms apart.)
    for w in finish_times.windows(2) {
        assert!(w[1] + 20_000 >= w[0], "results not in completion order: {order:?} finished at {finish_times:?}");
    }
    if order != (0..sleeps_ms.len()).collect::<Vec<_>>() {
        println!("(submission order would have been 0..10)");
    }
    println!("completion order: results arrived as tasks finished");
    Ok(())
}

/// Fetch many objects a batch at a time instead of all at once.
fn batches() -> ferroray::Result<()> {
    const BATCH_SIZE: usize = 4;
    let mut object_refs: Vec<_> = (0..10).map(return_big_object::remote).collect();
    let mut batch_sizes = Vec::new();
    let mut seen = Vec::new();
    while !object_refs.is_empty() {
        let n = BATCH_SIZE.min(object_refs.len());
        let (ready_object_refs, rest) = ferroray::wait(&object_refs, n, None)?;
        object_refs = rest;
        let results = ferroray::get_all(&ready_object_refs)?;
        // process_results(results)
        batch_sizes.push(results.len());
        for r in &results {
            assert_eq!(r.len(), 256 * 1024);
            seen.push(r[0] as usize);
        }
        // `results` is dropped here, before the next batch is fetched.
    }
    println!("fetched in batches of {BATCH_SIZE}: {batch_sizes:?}");
    assert_eq!(batch_sizes, vec![4, 4, 2]);
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    println!("batches: all 10 objects processed");
    Ok(())
}
