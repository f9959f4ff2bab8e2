//! Ray tasks overview, "Pattern: Using Nested Tasks for Nested
//! Parallelism": a quick sort whose task calls itself remotely for both
//! halves and then gets them (a `get` inside a task: the blocked task lends
//! its CPU back so that its children can run).
//!
//! Scaled down: the document sorts locally below 200,000 elements; here
//! below 20,000, on 200,000 pseudo-random numbers, so that there are a few
//! levels of nested tasks and it still runs in a moment.
//!
//! Run with `cargo run -p ferroray --example quick_sort`.

use std::time::Instant;

/// Below this many elements a task sorts locally (avoids over-parallelizing).
const THRESHOLD: usize = 20_000;
const N: usize = 200_000;

fn partition(mut collection: Vec<i64>) -> (Vec<i64>, i64, Vec<i64>) {
    let pivot = collection.pop().expect("partition of an empty collection");
    let mut greater = Vec::new();
    let mut lesser = Vec::new();
    for element in collection {
        if element > pivot {
            greater.push(element);
        } else {
            lesser.push(element);
        }
    }
    (lesser, pivot, greater)
}

#[ferroray::remote]
fn quick_sort_distributed(collection: Vec<i64>) -> ferroray::Result<Vec<i64>> {
    // Use a threshold to avoid over-parallelizing.
    if collection.len() <= THRESHOLD {
        let mut sorted = collection;
        sorted.sort();
        return Ok(sorted);
    }
    let (lesser, pivot, greater) = partition(collection);
    let lesser = quick_sort_distributed::remote(lesser);
    let greater = quick_sort_distributed::remote(greater);
    let mut result = lesser.get()?;
    result.push(pivot);
    result.extend(greater.get()?);
    Ok(result)
}

/// The same sort without tasks, to compare with.
fn quick_sort_local(collection: Vec<i64>) -> Vec<i64> {
    if collection.len() <= THRESHOLD {
        let mut sorted = collection;
        sorted.sort();
        return sorted;
    }
    let (lesser, pivot, greater) = partition(collection);
    let mut result = quick_sort_local(lesser);
    result.push(pivot);
    result.extend(quick_sort_local(greater));
    result
}

/// Pseudo-random numbers from a linear congruential generator (Knuth's
/// MMIX constants), in 0..1_000_000_000.
fn lcg_numbers(n: usize, mut seed: u64) -> Vec<i64> {
    (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % 1_000_000_000) as i64
        })
        .collect()
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    let unsorted = lcg_numbers(N, 42);

    let start = Instant::now();
    let mut expected = unsorted.clone();
    expected.sort();
    println!("std sort of {N} numbers: {:.3} s", start.elapsed().as_secs_f64());

    let start = Instant::now();
    let local = quick_sort_local(unsorted.clone());
    println!("local quick sort: {:.3} s", start.elapsed().as_secs_f64());
    assert_eq!(local, expected);

    let start = Instant::now();
    let distributed = quick_sort_distributed::remote(unsorted).get()?;
    println!("distributed quick sort (nested tasks): {:.3} s", start.elapsed().as_secs_f64());
    assert_eq!(distributed.len(), N);
    assert_eq!(distributed, expected);

    let nested = ferroray::tasks()?
        .iter()
        .filter(|e| e.name.ends_with("quick_sort_distributed") && e.state == ferroray::TaskState::Finished)
        .count();
    println!("{nested} quick_sort_distributed tasks ran");
    assert!(nested > 1);
    println!("distributed result equals the local sort");
    Ok(())
}
