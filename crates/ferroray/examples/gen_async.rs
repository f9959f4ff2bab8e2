//! From Ray's guide "Ray generators", with asyncio: `gen.next_async().await` takes
//! the next item without blocking a thread (an `ObjectRefGenerator` is also
//! a `futures::Stream`), and a ref is awaited with `r.await`.
//!
//! `cargo run -p ferroray --example gen_async`
//!
//! Python's `async for ref in task.remote(): await ref` becomes
//! `while let Some(r) = gen.next_async().await { r.await }` (`gen.next()` is
//! the blocking spelling, as `next(gen)` is in Python), and `asyncio.run` /
//! `asyncio.gather` become `futures::executor::block_on` /
//! `futures::future::join`. Ray's 1 s sleeps are 0.1 s here.
//!
//! The second part is Ray's two concurrent consumers: both run on one
//! thread, and their items interleave, because awaiting one generator's next
//! item lets the other make progress.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Ray's task: yields 0..5, one every 0.1 s.
#[ferroray::remote]
fn task() -> impl Iterator<Item = u64> {
    (0..5).inspect(|_| std::thread::sleep(Duration::from_millis(100)))
}

/// Ray's `async_task`: consumes one generator, noting each item.
async fn async_task(name: &str, start: Instant, log: &RefCell<Vec<(String, u64)>>) -> Vec<u64> {
    let mut got = Vec::new();
    let mut gen = task::remote();
    while let Some(r) = gen.next_async().await {
        let v = r.await.expect("an item");
        println!("{:>5.2}s  [{name}] {v}", start.elapsed().as_secs_f64());
        log.borrow_mut().push((name.to_string(), v));
        got.push(v);
    }
    got
}

fn main() -> ferroray::Result<()> {
    ferroray::init_with(ferroray::Config::default().num_cpus(2))?;

    println!("-- async for ref in task.remote(): print(await ref)");
    let got = futures::executor::block_on(async {
        let mut out = Vec::new();
        let mut gen = task::remote();
        while let Some(r) = gen.next_async().await {
            let v = r.await.expect("an item");
            println!("{v}");
            out.push(v);
        }
        // The stream can end just before the task has handed its CPU back;
        // wait for that, so that the two tasks below both start at once.
        gen.completed().await.expect("the task ended");
        out
    });
    assert_eq!(got, vec![0, 1, 2, 3, 4]);

    println!("\n-- two async consumers at once: asyncio.gather(async_task(), async_task())");
    let start = Instant::now();
    let log = RefCell::new(Vec::new());
    let (a, b) = futures::executor::block_on(futures::future::join(
        async_task("t1", start, &log),
        async_task("t2", start, &log),
    ));
    let took = start.elapsed().as_secs_f64();
    assert_eq!(a, vec![0, 1, 2, 3, 4]);
    assert_eq!(b, vec![0, 1, 2, 3, 4]);
    let log = log.into_inner();
    let position = |name: &str, v: u64| log.iter().position(|(n, x)| n == name && *x == v).expect("logged");
    // Interleaved: each consumer got an item before the other one had finished.
    assert!(position("t2", 0) < position("t1", 4), "t2 started before t1 finished: {log:?}");
    assert!(position("t1", 0) < position("t2", 4), "t1 started before t2 finished: {log:?}");
    println!(
        "both consumers got [0, 1, 2, 3, 4], interleaved on one thread, in {took:.2}s \
         (one after the other would take at least 1.0s)"
    );

    ferroray::shutdown();
    println!("gen_async done");
    Ok(())
}
