//! From Ray's guide "Ray generators", garbage collection of object references: a
//! ref taken from a generator is an ordinary ref; the items nobody took are
//! freed when the generator is dropped (Python: `del gen`).
//!
//! `cargo run -p ferroray --example gen_gc`
//!
//! Each item is a 1 MiB `Buffer`, so it lives in the shared-memory store and
//! `ferroray::runtime_stats().store_objects` counts it. Ray's 1 s
//! sleeps are 0.1 s here.

use ferroray::{Buffer, RuntimeStats};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Ray's task, with 1 MiB items: item i is 1 MiB of byte i.
#[ferroray::remote]
fn task() -> impl Iterator<Item = Buffer> {
    (0..5).map(|i| {
        std::thread::sleep(Duration::from_millis(100));
        Buffer::from(vec![i as u8; MIB])
    })
}

/// An ordinary task reading a ref that came from a generator.
#[ferroray::remote]
fn checksum(b: Buffer) -> u64 {
    b.iter().map(|&x| x as u64).sum()
}

fn stats() -> RuntimeStats {
    ferroray::runtime_stats().expect("runtime stats")
}

/// Polls the stats until `cond` holds (frees are asynchronous); panics after 10 s.
fn wait_for_stats(what: &str, cond: impl Fn(&RuntimeStats) -> bool) -> RuntimeStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: stats stayed at {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let base = stats();
    println!(
        "before:                         store_objects = {}, store_used = {} MiB",
        base.store_objects,
        base.store_used_bytes >> 20
    );
    assert_eq!(base.store_objects, 0);

    println!("\n-- a generator that is kept holds every item it made");
    let kept = task::remote();
    ferroray::get(&kept.completed())?;
    let s = wait_for_stats("five items stored", |s| s.store_objects == 5);
    println!(
        "kept generator, task finished: store_objects = {}, store_used = {} MiB",
        s.store_objects,
        s.store_used_bytes >> 20
    );
    drop(kept);
    let s = wait_for_stats("dropping the kept generator frees its items", |s| s.store_objects == 0);
    println!("after dropping it:              store_objects = {}", s.store_objects);

    println!("\n-- gen = task.remote(); ref1 = next(gen); del gen");
    let mut gen = task::remote();
    let ref1 = gen.next().expect("a first item");
    let done = gen.completed();
    // Dropped while the task still runs: the 4 items still to come are
    // released as they arrive; the task itself runs on to its end.
    drop(gen);
    println!("dropped the generator after taking ref1; the task runs on");
    ferroray::get(&done)?;
    let s = wait_for_stats("only ref1 stays stored", |s| s.store_objects == 1);
    println!(
        "task finished:                  store_objects = {}, store_used = {} MiB",
        s.store_objects,
        s.store_used_bytes >> 20
    );
    assert!(s.store_used_bytes < 2 * MIB as u64, "only ref1's 1 MiB is stored: {s:?}");

    // ref1 is an ordinary ref: readable here, and as another task's argument.
    let item = ref1.get()?;
    assert_eq!(item.len(), MIB);
    assert!(item.iter().all(|&b| b == 0));
    drop(item);
    let sum = checksum::remote(&ref1).get()?;
    assert_eq!(sum, 0);
    println!("ref1 is still readable: {} bytes of 0 (checksum in another task: {sum})", MIB);

    drop(ref1);
    drop(done);
    let s = wait_for_stats("everything freed", |s| s.store_objects == 0 && s.node_objects == 0 && s.local_refs == 0);
    println!(
        "after dropping ref1:            store_objects = {}, node_objects = {}, local_refs = {}",
        s.store_objects, s.node_objects, s.local_refs
    );
    println!("unconsumed items were freed with the generator; ref1 lived until it was dropped");

    ferroray::shutdown();
    println!("gen_gc done");
    Ok(())
}
