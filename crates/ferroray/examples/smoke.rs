use std::time::{Duration, Instant};

#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ferroray::remote(num_returns = 3)]
fn three() -> (i64, String, Vec<u8>) {
    (1, "two".into(), vec![3])
}

#[ferroray::remote]
fn hello(x: i64) -> String {
    println!("hello from the worker {x}");
    format!("x={x}")
}

fn main() -> ferroray::Result<()> {
    let t = Instant::now();
    ferroray::init()?;
    let r = add::remote(1, 2);
    println!("first result {} after {:?}", r.get()?, t.elapsed());
    let s = add::remote(&r, 10);
    assert_eq!(s.get()?, 13);
    let (a, b, c) = three::remote();
    println!("{} {} {:?}", a.get()?, b.get()?, c.get()?);
    println!("{}", hello::remote(5).get()?);
    let big = ferroray::put(vec![7u8; 64 << 20])?;
    let t2 = Instant::now();
    let v = big.get()?;
    println!("big {} bytes in {:?}", v.len(), t2.elapsed());
    let n = 2000;
    let t3 = Instant::now();
    for i in 0..n {
        add::remote(i, 1).get()?;
    }
    println!("sync tasks/s {:.0}", n as f64 / t3.elapsed().as_secs_f64());
    let t4 = Instant::now();
    let refs: Vec<_> = (0..n).map(|i| add::remote(i, 1)).collect();
    let all = ferroray::get_all(&refs)?;
    assert_eq!(all[10], 11);
    println!("async tasks/s {:.0}", n as f64 / t4.elapsed().as_secs_f64());
    let _ = r.get_timeout(Duration::from_millis(5));
    println!("{:?}", ferroray::runtime_stats()?);
    ferroray::shutdown();
    Ok(())
}
