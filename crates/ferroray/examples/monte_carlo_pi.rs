//! From Ray's getting-started guide: estimating π with Monte Carlo sampling,
//! tasks reporting their progress to an actor.
//!
//! `cargo run --release -p ferroray --example monte_carlo_pi`
//!
//! Ray's `ProgressActor` becomes a `#[ferroray::actor]`; its handle is passed
//! to every sampling task, which reports to it every 100,000 samples. The
//! driver polls the actor until every sample is in, then adds up the tasks'
//! results. Ray samples 10 x 10,000,000 points; here 10 x 1,000,000 (the
//! example runs in the test suite, in a debug build), with a tiny
//! xorshift generator instead of Python's `random`.

use ferroray::ActorHandle;
use std::collections::HashMap;
use std::time::Duration;

const NUM_SAMPLING_TASKS: u64 = 10;
const NUM_SAMPLES_PER_TASK: u64 = 1_000_000;
const TOTAL_NUM_SAMPLES: u64 = NUM_SAMPLING_TASKS * NUM_SAMPLES_PER_TASK;

/// Ray's `ProgressActor`: how many samples each task has done.
pub struct ProgressActor {
    total_num_samples: u64,
    num_samples_completed_per_task: HashMap<u64, u64>,
}

#[ferroray::actor]
impl ProgressActor {
    pub fn new(total_num_samples: u64) -> Self {
        ProgressActor { total_num_samples, num_samples_completed_per_task: HashMap::new() }
    }

    pub fn report_progress(&mut self, task_id: u64, num_samples_completed: u64) {
        self.num_samples_completed_per_task.insert(task_id, num_samples_completed);
    }

    pub fn get_progress(&self) -> f64 {
        self.num_samples_completed_per_task.values().sum::<u64>() as f64 / self.total_num_samples as f64
    }
}

/// Ray's `sampling_task`: points in the unit circle out of `num_samples`.
#[ferroray::remote]
fn sampling_task(num_samples: u64, task_id: u64, progress_actor: ActorHandle<ProgressActor>) -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (task_id + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut num_inside = 0;
    for i in 0..num_samples {
        let (x, y) = (uniform(), uniform());
        if x.hypot(y) <= 1.0 {
            num_inside += 1;
        }
        // Report progress every 100,000 samples.
        if (i + 1) % 100_000 == 0 {
            let _ = progress_actor.report_progress().remote(task_id, i + 1);
        }
    }
    // Report the final progress.
    let _ = progress_actor.report_progress().remote(task_id, num_samples);
    num_inside
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    // Create the progress actor.
    let progress_actor = ProgressActor::remote(TOTAL_NUM_SAMPLES);
    // Create and execute all sampling tasks in parallel.
    let results: Vec<_> = (0..NUM_SAMPLING_TASKS)
        .map(|i| sampling_task::remote(NUM_SAMPLES_PER_TASK, i, progress_actor.clone()))
        .collect();
    // Query progress periodically.
    loop {
        let progress = progress_actor.get_progress().remote().get()?;
        println!("Progress: {}%", (progress * 100.0) as u64);
        if progress >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Get all the sampling tasks' results and calculate π.
    let total_num_inside: u64 = ferroray::get_all(&results)?.into_iter().sum();
    let pi = (total_num_inside * 4) as f64 / TOTAL_NUM_SAMPLES as f64;
    println!("Estimated value of π is: {pi}");
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi} is not close to π");
    ferroray::shutdown();
    Ok(())
}
