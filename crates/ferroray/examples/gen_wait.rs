//! From Ray's guide "Ray generators", waiting for a generator without blocking a
//! thread: `completed()`, and `ferroray::wait` on generators, alone or mixed
//! with ordinary refs.
//!
//! `cargo run -p ferroray --example gen_wait`
//!
//! A generator passed to `wait` is ready when its next item is here (or its
//! stream has ended); once it is, `next` returns without blocking. `wait`
//! takes borrowed items (`&[&gen]`) and hands the same references back.
//! Refs and generators mix in one `wait` as `&dyn ferroray::Waitable`s
//! (borrowed), or, as in the loop below that keeps the unready ones, as
//! owned `ferroray::WaitItem`s (they must share the item type, so the
//! guide's `regular_task` returns a number). Ray's 5 s sleeps are 0.2 s
//! here.

use ferroray::WaitItem;
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_millis(200);

/// Yields 0..5, one every 0.2 s.
#[ferroray::remote]
fn generator_task() -> impl Iterator<Item = u64> {
    (0..5).inspect(|_| std::thread::sleep(STEP))
}

/// Sleeps as long as the generator, then returns 100.
#[ferroray::remote]
fn regular_task() -> u64 {
    for _ in 0..5 {
        std::thread::sleep(STEP);
    }
    100
}

fn main() -> ferroray::Result<()> {
    ferroray::init_with(ferroray::Config::default().num_cpus(2))?;
    let start = Instant::now();
    let secs = || start.elapsed().as_secs_f64();

    println!("-- ray.get(gen.completed()): wait until the task ends");
    let gen = generator_task::remote();
    ferroray::get(&gen.completed())?;
    assert!(gen.is_finished());
    let items: Vec<u64> = gen.map(|r| r.get()).collect::<ferroray::Result<_>>()?;
    println!("{:>5.2}s  completed() is ready: the task ended; its items: {items:?}", secs());
    assert_eq!(items, vec![0, 1, 2, 3, 4]);

    println!("\n-- ray.wait([gen]) with and without a timeout");
    let gen = generator_task::remote();
    // The first yield takes 0.2 s: with a zero timeout, nothing is ready.
    let (ready, unready) = ferroray::wait(&[&gen], 1, Some(Duration::ZERO))?;
    println!("{:>5.2}s  timeout 0, nothing is ready: ready {}, unready {}", secs(), ready.len(), unready.len());
    assert_eq!((ready.len(), unready.len()), (0, 1));
    // Without a timeout, wait returns when the next item is here.
    let (ready, unready) = ferroray::wait(&[&gen], 1, None)?;
    println!(
        "{:>5.2}s  wait without timeout: the next item is ready: ready {}, unready {}",
        secs(),
        ready.len(),
        unready.len()
    );
    assert_eq!((ready.len(), unready.len()), (1, 0));
    let r = gen.next_ready().expect("ready: next does not block");
    assert_eq!(r.get()?, 0);
    // The second yield has not happened yet.
    let (ready, unready) = ferroray::wait(&[&gen], 1, Some(Duration::ZERO))?;
    println!(
        "{:>5.2}s  timeout 0 again: the next item is not ready: ready {}, unready {}",
        secs(),
        ready.len(),
        unready.len()
    );
    assert_eq!((ready.len(), unready.len()), (0, 1));
    // Stop it (dropping it would let it run on, holding a CPU), and wait
    // until it has ended.
    let done = gen.completed();
    gen.close()?;
    assert_eq!(done.get(), Err(ferroray::Error::TaskCancelled));
    println!("{:>5.2}s  closed the generator: its task ended", secs());

    println!("\n-- ray.wait mixing a generator and a regular ref (times from the start of the loop)");
    let t0 = Instant::now();
    let mut unready: Vec<WaitItem<u64>> = vec![generator_task::remote().into(), regular_task::remote().into()];
    let mut result = Vec::new();
    while !unready.is_empty() {
        let (ready, rest) = ferroray::wait(&unready, 1, None)?;
        unready = rest;
        for r in ready {
            match r {
                WaitItem::Generator(mut g) => match g.next() {
                    Some(item) => {
                        let v = item.get()?;
                        println!("{:>5.2}s  generator item {v}", t0.elapsed().as_secs_f64());
                        result.push(v);
                        unready.push(WaitItem::Generator(g));
                    }
                    // StopIteration: the generator is done; it leaves the list.
                    None => println!("{:>5.2}s  generator ended", t0.elapsed().as_secs_f64()),
                },
                WaitItem::Ref(r) => {
                    let v = r.get()?;
                    println!("{:>5.2}s  regular task result {v}", t0.elapsed().as_secs_f64());
                    result.push(v);
                }
            }
        }
    }
    println!("result = {result:?}");
    let mut sorted = result.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4, 100]);
    // The generator's items came as they were yielded, in order.
    let gen_items: Vec<u64> = result.iter().copied().filter(|&v| v < 100).collect();
    assert_eq!(gen_items, vec![0, 1, 2, 3, 4]);
    println!("collected every generator item and the regular result with wait");

    ferroray::shutdown();
    println!("gen_wait done in {:.2}s", secs());
    Ok(())
}
