//! From Ray's guide "Dynamic generators", num_returns set by the task executor:
//! with `num_returns = "dynamic"` the caller gets one ref that resolves,
//! when the task ends, to a `DynamicObjectRefGenerator` listing the refs of
//! everything the task yielded.
//!
//! `cargo run -p ferroray --example gen_dynamic`
//!
//! Ray's `split` cuts an array of random length (< 1,000,000) into
//! blocks of 1000. Here the array is a `Vec<f64>` of zeros whose length
//! comes from a small LCG seeded by the clock (no rand crate); pass a
//! number as the first argument to fix the seed.
//!
//! The dynamic ref, or the `DynamicObjectRefGenerator` it holds, can be
//! passed to another task, which iterates the refs there.

use ferroray::{DynamicObjectRefGenerator, ObjectRef};
use std::time::{SystemTime, UNIX_EPOCH};

const BLOCK_SIZE: usize = 1000;

/// Ray's `split`: yields `array` in chunks of `chunk_size`.
#[ferroray::remote(num_returns = "dynamic")]
fn split(array: Vec<f64>, chunk_size: usize) -> impl Iterator<Item = Vec<f64>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= array.len() {
            return None;
        }
        let end = (start + chunk_size).min(array.len());
        let block = array[start..end].to_vec();
        start = end;
        Some(block)
    })
}

/// Ray's `get_size`: iterates the generator's refs inside a task.
#[ferroray::remote]
fn get_size(ref_generator: DynamicObjectRefGenerator<Vec<f64>>) -> usize {
    println!("get_size got a DynamicObjectRefGenerator of {} refs", ref_generator.len());
    let mut num_elements = 0;
    for r in &ref_generator {
        let array = r.get().expect("a block");
        assert!(array.len() <= BLOCK_SIZE);
        num_elements += array.len();
    }
    num_elements
}

/// A pseudo-random number below `bound` (one step of a 64-bit LCG).
fn lcg_below(seed: u64, bound: u64) -> u64 {
    let x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (x >> 33) % bound
}

fn node_objects() -> usize {
    ferroray::runtime_stats().expect("runtime stats").node_objects
}

fn main() -> ferroray::Result<()> {
    let seed = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64);
    ferroray::init()?;

    let len = lcg_below(seed, 1_000_000) as usize;
    println!("seed {seed}: an array of {len} zeros");
    let array_ref: ObjectRef<Vec<f64>> = ferroray::put(vec![0.0f64; len])?;
    let base_objects = node_objects();

    // Returns an ObjectRef<DynamicObjectRefGenerator<Vec<f64>>>.
    let dynamic_ref = split::remote(&array_ref, BLOCK_SIZE);
    println!("{dynamic_ref:?}");

    let ref_generator = ferroray::get(&dynamic_ref)?;
    println!("DynamicObjectRefGenerator of {} refs", ref_generator.len());
    let mut num_blocks_generated = 0;
    for r in &ref_generator {
        // Each iteration gives an ObjectRef to one block.
        let block = r.get()?;
        assert!(block.len() <= BLOCK_SIZE);
        num_blocks_generated += 1;
    }
    let array_size = ferroray::get(&array_ref)?.len();
    assert_eq!(array_size, len);
    assert!(array_size <= num_blocks_generated * BLOCK_SIZE);
    assert_eq!(num_blocks_generated, len.div_ceil(BLOCK_SIZE));
    println!("Split array of size {array_size} into {num_blocks_generated} blocks of size {BLOCK_SIZE} each.");

    // The dynamic ref points to the generated refs: once it and the list
    // are gone, the blocks are freed.
    drop(ref_generator);
    drop(dynamic_ref);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node_objects() > base_objects {
        assert!(std::time::Instant::now() < deadline, "blocks not freed: {:?}", ferroray::runtime_stats());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!("after dropping dynamic_ref and its list, the {num_blocks_generated} blocks were freed");

    println!("\n-- passing the dynamic ref to another task");
    let dynamic_ref = split::remote(&array_ref, BLOCK_SIZE);
    let n = get_size::remote(&dynamic_ref).get()?;
    assert_eq!(n, array_size);
    println!("get_size(dynamic_ref) = {n}");

    println!("\n-- passing the DynamicObjectRefGenerator value (an extra get in the driver)");
    let ref_generator = dynamic_ref.get()?;
    let n = get_size::remote(ref_generator).get()?;
    assert_eq!(n, array_size);
    println!("get_size(ref_generator) = {n}");

    ferroray::shutdown();
    println!("gen_dynamic done");
    Ok(())
}
