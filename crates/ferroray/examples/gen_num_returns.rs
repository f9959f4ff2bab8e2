//! From Ray's guide "Dynamic generators", num_returns set by the caller: a task
//! with `num_returns = N` can be written as a generator that yields its N
//! values one at a time instead of returning them all at once.
//!
//! `cargo run -p ferroray --example gen_num_returns`
//!
//! In Rust the number of returns is part of the function's type (the
//! caller gets a tuple of N refs), so it is fixed in the attribute:
//! `#[ferroray::remote(num_returns = 3)]`; Ray's `options(num_returns=x)`
//! becomes one function per count. The values are small here (Ray's
//! are 100 MB arrays; see the `generator_memory` example for the memory
//! saving).
//!
//! Exceptions: values yielded before a failure stay readable and the
//! remaining refs hold the error; with `num_returns = "dynamic"` the error
//! is one extra final ref. Yielding more values than `num_returns` is an
//! error in every ref (Ray only logs it: its known bug, issue 28689).

use ferroray::Error;

/// Deterministic "random" int8 values (a small LCG), `size` of them.
fn random_values(seed: u64, size: usize) -> Vec<i8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..size)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 127) as i8
        })
        .collect()
}

/// Ray's `large_values`: all return values built, then returned together.
#[ferroray::remote(num_returns = 3)]
fn large_values(size: usize) -> (Vec<i8>, Vec<i8>, Vec<i8>) {
    (random_values(0, size), random_values(1, size), random_values(2, size))
}

/// Ray's `large_values_generator`: the same values, yielded one at a time.
#[ferroray::remote(num_returns = 3)]
fn large_values_generator(size: usize) -> impl Iterator<Item = Vec<i8>> {
    // Each line is printed once the value before it was handed over, as
    // Ray's print after `yield`.
    (0..=3u64).map_while(move |i| {
        if i > 0 {
            println!("yielded return value {}", i - 1);
        }
        (i < 3).then(|| random_values(i, size))
    })
}

/// Ray's `generator`: yields 0 and 1, then raises.
fn generator_body() -> impl Iterator<Item = Result<u64, String>> {
    vec![Ok(0), Ok(1), Err("error".to_string())].into_iter()
}

/// `generator.options(num_returns=4)`.
#[ferroray::remote(num_returns = 4)]
fn generator4() -> impl Iterator<Item = Result<u64, String>> {
    generator_body()
}

/// `generator` as a streaming generator; `options().num_returns_dynamic()`
/// makes it `num_returns="dynamic"`.
#[ferroray::remote]
fn generator() -> impl Iterator<Item = Result<u64, String>> {
    generator_body()
}

/// `generator.options(num_returns=2)`: it yields its 2 values, then raises.
#[ferroray::remote(num_returns = 2)]
fn generator2() -> impl Iterator<Item = Result<u64, String>> {
    generator_body()
}

/// Yields `n` values where 2 are expected.
#[ferroray::remote(num_returns = 2)]
fn yields_n(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

fn task_message(r: ferroray::Result<u64>) -> String {
    match r {
        Err(Error::Task(e)) => e.message,
        other => panic!("expected the task's error, got {other:?}"),
    }
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    const SIZE: usize = 1000;

    println!("-- num_returns = 3: a list of values, or a generator; the caller's code is the same");
    let (a, b, c) = large_values::remote(SIZE);
    let listed = (a.get()?, b.get()?, c.get()?);
    let (a, b, c) = large_values_generator::remote(SIZE);
    let generated = (a.get()?, b.get()?, c.get()?);
    assert_eq!(listed, generated);
    assert!(generated.0.len() == SIZE && generated.0 != generated.1);
    println!("both give 3 refs to the same 3 values of {SIZE} int8s");

    println!("\n-- an exception after 2 values, num_returns = 4");
    let (ref1, ref2, ref3, ref4) = generator4::remote();
    assert_eq!((ref1.get()?, ref2.get()?), (0, 1));
    println!("ref1, ref2 = {:?}, {:?}", ref1.get()?, ref2.get()?);
    // All remaining refs hold the error.
    for (name, r) in [("ref3", ref3), ("ref4", ref4)] {
        let m = task_message(r.get());
        println!("{name}: error: {m}");
        assert_eq!(m, "error");
    }

    println!("\n-- the same with num_returns = \"dynamic\": the error is the final ref");
    let dynamic_ref = generator::options().num_returns_dynamic().remote();
    let ref_generator = dynamic_ref.get()?;
    let [ref1, ref2, ref3]: [ferroray::ObjectRef<u64>; 3] =
        ref_generator.into_iter().collect::<Vec<_>>().try_into().expect("exactly 3 refs");
    assert_eq!((ref1.get()?, ref2.get()?), (0, 1));
    let m = task_message(ref3.get());
    println!("ref1, ref2 = 0, 1; ref3: error: {m}");
    assert_eq!(m, "error");

    println!("\n-- Ray's num_returns = 2: 2 values, then the exception");
    // Ray stores the 2 values and only logs the exception (its known bug:
    // the error has no ref left to go to). ferroray does not drop it: the
    // task failed, so both refs hold the error.
    let (ref1, ref2) = generator2::remote();
    for (name, r) in [("ref1", ref1), ("ref2", ref2)] {
        let m = task_message(r.get());
        println!("{name}: error: {m}");
        assert!(m.contains("failed after yielding all 2 values: error"), "{m}");
    }
    println!("ferroray reports the exception raised after the last value in every ref");

    println!("\n-- yielding more values than num_returns (Ray's known bug: only logged)");
    let (ref1, ref2) = yields_n::remote(3);
    for (name, r) in [("ref1", ref1), ("ref2", ref2)] {
        let m = task_message(r.get());
        println!("{name}: error: {m}");
        assert!(m.contains("more than num_returns = 2"), "{m}");
    }
    println!("ferroray reports it in every ref");
    let (ref1, ref2) = yields_n::remote(1);
    assert_eq!(ref1.get()?, 0);
    let m = task_message(ref2.get());
    println!("and too few: ref1 = 0, ref2: error: {m}");
    assert!(m.contains("yielded 1 values but num_returns = 2"), "{m}");

    ferroray::shutdown();
    println!("gen_num_returns done");
    Ok(())
}
