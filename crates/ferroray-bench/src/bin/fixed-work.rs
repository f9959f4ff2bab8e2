//! A fixed amount of work, for comparing two builds by the CPU time they
//! spend on it (steadier on a noisy machine than a rate over a fixed time).
//!
//! `fixed-work tasks`: 100 rounds of 1,000 trivial tasks and `get_all`.
//! `fixed-work gen`: 20 generators of 20,000 small items, each taken and
//! dropped. `fixed-work actor`: 100 rounds of 1,000 calls of one actor's
//! method and `get_all`; `fixed-work actor-sync`: 20,000 calls one after
//! another, each waited for. Run it under `perf stat -e task-clock` (which counts the worker
//! processes too), alternating the two builds. It uses only API that older
//! builds have, so the file can be copied into another tree to measure it.

#[ferroray::remote]
fn small_value() -> i64 {
    0
}

#[ferroray::remote]
fn small_items(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// The actor of the actor workloads: a counter.
pub struct Counter {
    n: u64,
}

#[ferroray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter { n: 0 }
    }

    pub fn incr(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "tasks".into());
    ferroray::init()?;
    let warm: Vec<_> = (0..200).map(|_| small_value::remote()).collect();
    ferroray::get_all(&warm)?;
    let t = std::time::Instant::now();
    match what.as_str() {
        "gen" => {
            for _ in 0..20 {
                let mut n = 0;
                for r in small_items::remote(20_000) {
                    drop(r);
                    n += 1;
                }
                if n != 20_000 {
                    return Err(format!("a generator gave {n} items, not 20,000").into());
                }
            }
            println!("400,000 generator items in {:?}", t.elapsed());
        }
        "tasks" => {
            for _ in 0..100 {
                let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
                ferroray::get_all(&refs)?;
            }
            println!("100,000 tasks in {:?}", t.elapsed());
        }
        "actor" | "actor-sync" => {
            let counter = Counter::remote();
            counter.incr().remote().get()?;
            let t = std::time::Instant::now();
            if what == "actor" {
                for _ in 0..100 {
                    let refs: Vec<_> = (0..1000).map(|_| counter.incr().remote()).collect();
                    ferroray::get_all(&refs)?;
                }
                println!("100,000 actor calls in {:?}", t.elapsed());
            } else {
                for _ in 0..20_000 {
                    counter.incr().remote().get()?;
                }
                println!("20,000 actor calls, one at a time, in {:?}", t.elapsed());
            }
        }
        other => return Err(format!("unknown workload {other:?}: tasks, gen, actor or actor-sync").into()),
    }
    ferroray::shutdown();
    Ok(())
}
