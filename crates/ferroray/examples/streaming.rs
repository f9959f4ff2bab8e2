//! The main example: streaming generators on an embedded local cluster.
//!
//! `cargo run --release -p ferroray --example streaming`
//!
//! A generator task hands its results back one ref at a time while it runs
//! (Ray's guide "Ray generators"), with errors in order, async consumption,
//! backpressure, and `wait` without blocking. Sleeps are 10x shorter than in
//! Ray's guide.

use std::time::{Duration, Instant};

/// Yields every 0.5 s, five times (Ray's `task`).
#[ferroray::remote]
fn task() -> impl Iterator<Item = u64> {
    (0..5).inspect(|_| {
        std::thread::sleep(Duration::from_millis(500));
    })
}

/// Fails at its second item (Ray's error-handling example).
#[ferroray::remote]
fn failing_task() -> impl Iterator<Item = Result<u64, String>> {
    (0..5).map(|i| {
        std::thread::sleep(Duration::from_millis(100));
        if i == 1 {
            Err("ValueError".to_string())
        } else {
            Ok(i)
        }
    })
}

/// Reports how far it got, to show backpressure pausing it.
#[ferroray::remote]
fn producer(n: u64) -> impl Iterator<Item = u64> {
    (0..n).inspect(|i| println!("produced {i}"))
}

#[ferroray::remote]
async fn async_task(n: u64) -> impl futures::Stream<Item = String> {
    futures::StreamExt::map(futures::stream::iter(0..n), |i| format!("async item {i}"))
}

fn main() -> ferroray::Result<()> {
    let start = Instant::now();
    ferroray::init()?;
    println!("cluster up in {:?}", start.elapsed());

    println!("\n-- items arrive while the task runs");
    let t = Instant::now();
    let gen = task::remote();
    for r in gen {
        println!("{:>6.2}s  {}", t.elapsed().as_secs_f64(), r.get()?);
    }

    println!("\n-- an error comes in order, then the stream ends");
    for r in failing_task::remote() {
        match r.get() {
            Ok(v) => println!("ok {v}"),
            Err(e) => println!("error as expected: {e}"),
        }
    }

    println!("\n-- async consumption");
    futures::executor::block_on(async {
        let mut g = async_task::remote(3);
        while let Some(r) = g.next_async().await {
            println!("{}", r.await.expect("item"));
        }
    });

    println!("\n-- backpressure 2: the producer stays at most 2 items ahead");
    let mut g = producer::options().generator_backpressure(ferroray::Backpressure::items::<2>()).remote(6);
    std::thread::sleep(Duration::from_millis(300));
    println!("(consumer sleeps 300 ms before reading: only 2 were produced)");
    for r in g.by_ref() {
        println!("consumed {}", r.get()?);
        std::thread::sleep(Duration::from_millis(50));
    }

    println!("\n-- wait on a generator without blocking");
    let g = task::remote();
    let (ready, _) = ferroray::wait(&[&g], 1, Some(Duration::ZERO))?;
    println!("ready right away: {}", ready.len());
    let (ready, _) = ferroray::wait(&[&g], 1, None)?;
    println!("ready after waiting: {}; next item: {}", ready.len(), g.next_ready().expect("ready").get()?);
    ferroray::get(&g.completed())?;
    println!("task completed: {}", g.is_finished());

    ferroray::shutdown();
    println!("\nstreaming example done in {:.2}s", start.elapsed().as_secs_f64());
    Ok(())
}
