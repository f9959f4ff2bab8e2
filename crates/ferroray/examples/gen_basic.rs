//! From Ray's guide "Ray generators", getting started: a generator task hands its
//! items back one ref at a time while it runs.
//!
//! `cargo run -p ferroray --example gen_basic`
//!
//! Ray's task sleeps 5 s before each of its 5 yields; here 0.5 s (10x
//! shorter), so it takes 2.5 s. `next(gen)` becomes `gen.next()` (the
//! generator is an `Iterator` of `ObjectRef`s), `ray.get(ref)` becomes
//! `ref.get()`. Each item is printed with the time it arrived: they come
//! every 0.5 s, not all at once at the end. A second call shows Ray's note
//! that a generator task runs to completion whether or not anyone polls it.

use std::time::{Duration, Instant};

/// Ray's `task`: yields 0..5, one every 0.5 s.
#[ferroray::remote]
fn task() -> impl Iterator<Item = u64> {
    (0..5).inspect(|_| std::thread::sleep(Duration::from_millis(500)))
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let start = Instant::now();
    let secs = || start.elapsed().as_secs_f64();

    let mut gen = task::remote();
    // A second generator nobody reads until the end (see below).
    let unpolled = task::remote();
    println!("task::remote() returned at once ({:.2}s): {gen:?}", secs());

    // Blocks until the first yield.
    let r = gen.next().expect("a first item");
    let first = r.get()?;
    let first_at = secs();
    let running_at_first = !gen.is_finished();
    println!("{first_at:>5.2}s  next(gen) -> {first}  (task still running: {running_at_first})");
    assert_eq!(first, 0);

    // Blocks until the second yield.
    let r = gen.next().expect("a second item");
    let second = r.get()?;
    println!("{:>5.2}s  next(gen) -> {second}", secs());
    assert_eq!(second, 1);

    // The rest, with a for loop, as they are yielded.
    let mut rest = Vec::new();
    for r in gen.by_ref() {
        let v = r.get()?;
        println!("{:>5.2}s  for loop -> {v}", secs());
        rest.push(v);
    }
    let last_at = secs();
    assert_eq!(rest, vec![2, 3, 4]);
    assert!(gen.next().is_none(), "the stream has ended");

    // The first item was there while the task still had 4 sleeps to go
    // (2 s): the last item came that much later (less some scheduling slack).
    assert!(running_at_first, "the first item arrived before the task finished");
    let ahead = last_at - first_at;
    assert!(ahead >= 1.5, "items arrived while the task ran (first {first_at:.2}s, last {last_at:.2}s)");
    println!("the first item arrived {ahead:.2}s before the last: items stream while the task runs");

    // Ray runs a generator task to completion even if nobody polls it: the
    // second task ran beside the first one, and all its items are already
    // here, so none of these `next` calls waits.
    ferroray::get(&unpolled.completed())?;
    let ready: Vec<u64> =
        std::iter::from_fn(|| unpolled.next_ready()).map(|r| r.get()).collect::<ferroray::Result<_>>()?;
    assert_eq!(ready, vec![0, 1, 2, 3, 4]);
    println!("the unpolled generator ran to completion on its own: {ready:?} were all ready");

    ferroray::shutdown();
    println!("gen_basic done in {:.2}s", secs());
    Ok(())
}
