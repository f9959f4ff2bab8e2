//! Ray tasks overview, "Anti-pattern: Over-parallelizing with Too
//! Fine-grained Tasks": one task per number costs more than the work;
//! batching makes each task do meaningful work.
//!
//! Run with `cargo run -p ferroray --example batching`.

use std::time::Instant;

const N: i64 = 10_000;
const BATCH_SIZE: usize = 1_000;

#[ferroray::remote]
fn remote_double(number: i64) -> i64 {
    number * 2
}

#[ferroray::remote]
fn remote_double_batch(numbers: Vec<i64>) -> Vec<i64> {
    numbers.iter().map(|number| number * 2).collect()
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    let numbers: Vec<i64> = (0..N).collect();

    let start = Instant::now();
    let sequential: Vec<i64> = numbers.iter().map(|n| n * 2).collect();
    let t_sequential = start.elapsed();

    // Warm up the worker pool so that neither measurement pays for it.
    ferroray::get_all(&[remote_double::remote(0), remote_double::remote(1)])?;

    // Anti-pattern: overhead dominates.
    let start = Instant::now();
    let doubled_number_refs: Vec<_> = numbers.iter().map(|&n| remote_double::remote(n)).collect();
    let fine_grained = ferroray::get_all(&doubled_number_refs)?;
    let t_fine = start.elapsed();

    // Better: batches of BATCH_SIZE numbers per task.
    let start = Instant::now();
    let mut doubled_batch_refs = Vec::new();
    for batch in numbers.chunks(BATCH_SIZE) {
        doubled_batch_refs.push(remote_double_batch::remote(batch.to_vec()));
    }
    let batched: Vec<i64> = ferroray::get_all(&doubled_batch_refs)?.into_iter().flatten().collect();
    let t_batched = start.elapsed();

    assert_eq!(fine_grained, sequential);
    assert_eq!(batched, sequential);
    assert_eq!(doubled_batch_refs.len(), N as usize / BATCH_SIZE);

    println!("sequential, no tasks:       {:>9.4} s", t_sequential.as_secs_f64());
    println!("{N} tasks of one number:  {:>9.4} s", t_fine.as_secs_f64());
    println!("{} tasks of {BATCH_SIZE} numbers:    {:>9.4} s", doubled_batch_refs.len(), t_batched.as_secs_f64());
    println!("batching speed-up: {:.1}x", t_fine.as_secs_f64() / t_batched.as_secs_f64().max(1e-9));
    println!("fine-grained and batched results are equal");
    Ok(())
}
