//! From Ray's guide "Ray generators", cancellation: `ferroray::cancel` works on a
//! generator as on a regular task. The generator stops at its next yield;
//! `next` then hands out a ref whose `get` is `Err(Error::TaskCancelled)`
//! (after any items already made), and then `None`.
//!
//! `cargo run -p ferroray --example gen_cancel`
//!
//! Also: cancelling a generator task still waiting for a CPU, and
//! `gen.close()`, which stops the remote task and drops the generator
//! (Ray's generators have no `close`; ferroray's do).

use ferroray::{Error, ObjectRefGenerator};
use std::time::{Duration, Instant};

/// Yields 0, 1, 2, ... every 50 ms, forever: only cancellation ends it.
#[ferroray::remote]
fn endless() -> impl Iterator<Item = u64> {
    (0..).inspect(|_| std::thread::sleep(Duration::from_millis(50)))
}

#[ferroray::remote]
fn count(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// Takes what is left of a cancelled generator: items, then its last ref.
fn drain(gen: &mut ObjectRefGenerator<u64>) -> Vec<ferroray::Result<u64>> {
    gen.by_ref().map(|r| r.get()).collect()
}

fn main() -> ferroray::Result<()> {
    // One CPU: a second generator task has to wait for the first.
    ferroray::init_with(ferroray::Config::default().num_cpus(1))?;

    println!("-- ferroray::cancel(&gen) on a running generator");
    let mut gen = endless::remote();
    let first = gen.next().expect("a first item").get()?;
    println!("next(gen) -> {first}; the task is running");
    let t = Instant::now();
    ferroray::cancel(&gen)?;
    let rest = drain(&mut gen);
    println!("after cancel ({:.2}s), the rest of the stream:", t.elapsed().as_secs_f64());
    for r in &rest {
        println!("  {r:?}");
    }
    let (last, before) = rest.split_last().expect("at least the cancelled ref");
    assert_eq!(last, &Err(Error::TaskCancelled), "the stream ends with TaskCancelled");
    // Items made before the task noticed are ordinary, in order.
    for (i, r) in before.iter().enumerate() {
        assert_eq!(r, &Ok(i as u64 + 1));
    }
    assert!(gen.next().is_none(), "then the end");
    println!("a later next(gen) gave a ref holding TaskCancelled, then None");

    println!("\n-- cancelling a generator task that has not started");
    let mut running = endless::remote();
    running.next().expect("first item").get()?; // it holds the only CPU
    let mut queued = endless::remote();
    std::thread::sleep(Duration::from_millis(100));
    assert!(queued.next_ready().is_none(), "queued behind the running one");
    ferroray::cancel(&queued)?;
    let got = drain(&mut queued);
    println!("queued generator after cancel: {got:?}");
    assert_eq!(got, vec![Err(Error::TaskCancelled)], "no items: it never ran");

    println!("\n-- gen.close() stops the remote task");
    let done = running.completed();
    let t = Instant::now();
    running.close()?;
    match done.get() {
        Err(Error::TaskCancelled) => {
            println!("close(): the endless task ended ({:.2}s): TaskCancelled", t.elapsed().as_secs_f64())
        }
        other => panic!("expected the task to end with TaskCancelled, got {other:?}"),
    }
    // Its CPU is free again.
    let after: Vec<u64> = count::remote(3).map(|r| r.get()).collect::<ferroray::Result<_>>()?;
    assert_eq!(after, vec![0, 1, 2]);
    println!("the CPU is free again: a new generator gave {after:?}");

    ferroray::shutdown();
    println!("gen_cancel done");
    Ok(())
}
