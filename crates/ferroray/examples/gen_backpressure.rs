//! Generator backpressure (a ferroray feature; Ray's experimental
//! `_generator_backpressure_num_objects`): with
//! `options().generator_backpressure(n)` the task pauses while `n` of its
//! items are not yet taken by the caller.
//!
//! `cargo run -p ferroray --example gen_backpressure`
//!
//! Ray's guide notes that a Ray generator task runs eagerly to completion,
//! unlike a local Python generator, which runs only when `next` asks. With
//! backpressure 1 the remote generator behaves like the local one: the
//! producer makes item i+1 only after the consumer took item i, so
//! "produced" and "consumed" strictly alternate. The producer's lines come
//! from the worker (prefixed `(producer pid=..)`); each item also carries
//! the wall-clock times it was started and yielded, and the consumer checks
//! the alternation from them.
//!
//! Backpressure 0 would never let the task yield: it is an `InvalidOption`
//! error, handed out as the generator's only ref.

use ferroray::Backpressure;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the epoch: the same clock in every process.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// One item: its index, and when the producer started and finished it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy)]
pub struct Item {
    i: u64,
    started_us: u64,
    yielded_us: u64,
}

/// Makes `n` items, 100 ms of work each.
#[ferroray::remote]
fn producer(n: u64) -> impl Iterator<Item = Item> {
    (0..n).map(|i| {
        let started_us = now_us();
        std::thread::sleep(Duration::from_millis(100));
        println!("produced {i}");
        Item { i, started_us, yielded_us: now_us() }
    })
}

/// What the consumer saw of one item.
struct Taken {
    item: Item,
    /// When the consumer asked for it (called `next`).
    asked_us: u64,
    /// When `next` gave it.
    got_us: u64,
}

/// Takes every item, working 50 ms on each.
fn consume(gen: ferroray::ObjectRefGenerator<Item>) -> ferroray::Result<Vec<Taken>> {
    let mut gen = gen;
    let mut out = Vec::new();
    loop {
        let asked_us = now_us();
        let Some(r) = gen.next() else { break };
        let got_us = now_us();
        let item = r.get()?;
        std::thread::sleep(Duration::from_millis(50));
        println!("consumed {}", item.i);
        out.push(Taken { item, asked_us, got_us });
    }
    Ok(out)
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    const N: u64 = 6;

    println!("-- backpressure 1: like a local generator, produce and consume alternate");
    let taken = consume(producer::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote(N))?;
    assert_eq!(taken.iter().map(|t| t.item.i).collect::<Vec<_>>(), (0..N).collect::<Vec<_>>());
    for (k, t) in taken.iter().enumerate() {
        // Item k was made before the consumer got it ...
        assert!(t.item.yielded_us <= t.got_us, "item {k} was taken before it was made");
        // ... and item k+1 was only started once the consumer asked for item k.
        if let Some(next) = taken.get(k + 1) {
            assert!(
                next.item.started_us >= t.asked_us,
                "the producer started item {} {} us before the consumer asked for item {k}",
                k + 1,
                t.asked_us - next.item.started_us
            );
        }
    }
    println!("checked from the timestamps: each item was started only after the consumer asked for the one before");
    println!("strictly alternating: produced 0, consumed 0, produced 1, consumed 1, ...");

    println!("\n-- without backpressure the task runs ahead to its end");
    let gen = producer::remote(N);
    ferroray::get(&gen.completed())?;
    let taken = consume(gen)?;
    let last_yield = taken.iter().map(|t| t.item.yielded_us).max().expect("items");
    assert!(taken.iter().all(|t| t.asked_us >= last_yield));
    println!("all {N} items were produced before the consumer took the first one");

    println!("\n-- backpressure 0 cannot be given");
    // `Backpressure::items::<0>()` does not compile; a count known only at
    // run time goes through `Backpressure::new` (or `NonZeroU32::new`).
    assert_eq!(Backpressure::new(0), None);
    println!("Backpressure::new(0): None");

    ferroray::shutdown();
    println!("gen_backpressure done");
    Ok(())
}
