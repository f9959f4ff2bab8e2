//! From Ray's guide "using generators to reduce heap memory": a task that returns
//! many large values as one list holds them all at once; the generator
//! version holds one at a time.
//!
//! `cargo run --release -p ferroray --example generator_memory [-- COUNT MB]`
//! (default 20 values of 100 MB). Each variant runs on a fresh cluster and
//! the worker's peak resident memory (VmHWM) is read from /proc.

use ferroray::{Buffer, Config, TaskState};

/// A value whose every page is written (so it really occupies memory).
fn large_value(i: usize, size: usize) -> Buffer {
    let mut v = vec![0u8; size];
    for (j, b) in v.iter_mut().enumerate().step_by(4096) {
        *b = (i + j) as u8 | 1;
    }
    Buffer::from(v)
}

#[ferroray::remote]
fn large_values(count: usize, size: usize) -> Vec<Buffer> {
    (0..count).map(|i| large_value(i, size)).collect()
}

#[ferroray::remote]
fn large_values_generator(count: usize, size: usize) -> impl Iterator<Item = Buffer> {
    // Each line is printed once the value before it was handed over, as
    // Ray's print after `yield`.
    (0..=count).map_while(move |i| {
        if i > 0 {
            println!("yielded return value {}", i - 1);
        }
        (i < count).then(|| large_value(i, size))
    })
}

/// Peak resident memory of the worker that ran `task`, in bytes.
fn worker_peak(task: ferroray::TaskId) -> ferroray::Result<u64> {
    let pid = ferroray::tasks()?
        .into_iter()
        .find(|e| e.task_id == task && e.state == TaskState::Running)
        .and_then(|e| e.worker_pid)
        .ok_or_else(|| ferroray::Error::Protocol("no worker recorded for the task".into()))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(ferroray::Error::io)?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(kb * 1024)
}

fn config(count: usize, size: usize) -> Config {
    // Room for every value at once in shared memory (the memfd is sparse).
    Config::default().num_cpus(1).object_store_memory((2 * count * size + (64 << 20)) as u64)
}

pub fn run(count: usize, size: usize) -> ferroray::Result<(u64, u64)> {
    let mb = |b: u64| b / (1 << 20);
    println!("Using normal functions...");
    ferroray::init_with(config(count, size))?;
    let list = large_values::remote(count, size);
    let values = list.get()?;
    assert_eq!(values.len(), count);
    drop(values);
    let list_peak = worker_peak(list.id().task)?;
    println!("  worker peak resident memory: {} MB for {count} values of {} MB", mb(list_peak), size >> 20);
    drop(list);
    ferroray::shutdown();

    println!("Using generators...");
    ferroray::init_with(config(count, size))?;
    let gen = large_values_generator::remote(count, size);
    let task = gen.task_id();
    let mut n = 0;
    for r in gen {
        let v = r.get()?;
        assert_eq!(v.len(), size);
        n += 1;
    }
    assert_eq!(n, count);
    let gen_peak = worker_peak(task)?;
    println!("  worker peak resident memory: {} MB for {count} values of {} MB", mb(gen_peak), size >> 20);
    ferroray::shutdown();
    Ok((list_peak, gen_peak))
}

#[allow(dead_code)]
fn main() -> ferroray::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let count = args.first().copied().unwrap_or(20);
    let size = args.get(1).copied().unwrap_or(100) << 20;
    let (list_peak, gen_peak) = run(count, size)?;
    assert!(gen_peak < 3 * size as u64, "the generator worker held more than 3 values");
    println!("Success! generator peak is {:.1}x lower", list_peak as f64 / gen_peak.max(1) as f64);
    Ok(())
}
