//! Seed 003's memory pattern, measured: a task returning 20 large values as
//! one list peaks at all of them; the generator version stays under three
//! values' size. Runs the `generator_memory` example's code at 20 x 32 MB.

#[path = "../examples/generator_memory.rs"]
mod generator_memory;

#[test]
fn a_generator_worker_holds_one_value_at_a_time() {
    let size = 32usize << 20;
    let (list_peak, gen_peak) = generator_memory::run(20, size).expect("both variants run");
    assert!(list_peak >= 20 * size as u64, "the list version holds every value: {list_peak}");
    assert!(gen_peak < 3 * size as u64, "the generator version holds at most ~2 values: {gen_peak}");
}
