use std::time::{Duration, Instant};

#[ferroray::remote]
fn count(n: u64, ms: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |i| {
        std::thread::sleep(Duration::from_millis(ms));
        i
    })
}

#[ferroray::remote]
fn failing(n: u64) -> impl Iterator<Item = Result<u64, String>> {
    (0..n).map(|i| if i == 2 { Err("boom at 2".to_string()) } else { Ok(i) })
}

#[ferroray::remote(num_returns = 3)]
fn three_items() -> impl Iterator<Item = i32> {
    vec![1, 2, 3].into_iter()
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let t = Instant::now();
    for r in count::remote(5, 100) {
        println!("{:?} item {}", t.elapsed(), r.get()?);
    }
    let g = failing::remote(5);
    for r in g {
        println!("failing -> {:?}", r.get());
    }
    let (a, b, c) = three_items::remote();
    println!("{:?} {:?} {:?}", a.get(), b.get(), c.get());
    let d = count::options().num_returns_dynamic().remote(4, 0);
    let list = d.get()?;
    println!("dynamic {:?}", list.iter().map(|r| r.get()).collect::<Vec<_>>());
    let t = Instant::now();
    let n = 20000u64;
    let mut k = 0;
    for r in count::remote(n, 0) {
        let _ = r;
        k += 1;
    }
    println!("{k} items in {:?} = {:.0}/s", t.elapsed(), n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    let n = 5000u64;
    for r in count::options().generator_backpressure(1).remote(n, 0) {
        let _ = r;
    }
    println!("bp1 {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    println!("{:?}", ferroray::runtime_stats()?);
    ferroray::shutdown();
    Ok(())
}
