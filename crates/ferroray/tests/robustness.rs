//! Corner cases of pipelining and message limits: nothing hangs, nothing
//! leaks, and nobody pays for another task's failure.

mod common;

use common::{cluster_with, eventually, get, scratch_dir, T};
use ferroray::{Buffer, Config, Error};
use serde::{Serialize, Serializer};
use std::path::Path;
use std::time::Duration;

#[ferroray::remote]
fn sleep_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[ferroray::remote]
fn pid_file_then_sleep(dir: String) -> u32 {
    std::fs::write(Path::new(&dir).join(std::process::id().to_string()), "").unwrap();
    std::thread::sleep(Duration::from_secs(3600));
    0
}

#[ferroray::remote]
fn total(a: Vec<u8>, b: Vec<u8>, c: Vec<u8>, d: Vec<u8>, e: Vec<u8>) -> usize {
    a.len() + b.len() + c.len() + d.len() + e.len()
}

#[ferroray::remote(num_returns = 5)]
#[allow(clippy::type_complexity)]
fn five_big(len: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    (vec![1; len], vec![2; len], vec![3; len], vec![4; len], vec![5; len])
}

/// Always fails to serialize.
#[derive(serde::Deserialize, Debug)]
pub struct Unsendable;
impl Serialize for Unsendable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot be sent"))
    }
}

#[ferroray::remote(num_returns = 2)]
fn big_then_unsendable() -> (Buffer, Unsendable) {
    (Buffer::from(vec![9u8; 4 << 20]), Unsendable)
}

#[test]
fn force_cancelling_a_queued_task_spares_the_running_one() {
    let _c = cluster_with(Config::default().num_cpus(1).max_workers(1));
    let first_pid = get(&sleep_pid::remote(1)).unwrap();
    let running = sleep_pid::remote(400);
    let queued = sleep_pid::remote(1);
    std::thread::sleep(Duration::from_millis(50));
    ferroray::cancel_with(&queued, ferroray::CancelOptions::default().force()).unwrap();
    assert_eq!(get(&queued), Err(Error::TaskCancelled));
    assert_eq!(get(&running).unwrap(), first_pid, "the running task finished on its worker");
}

#[test]
fn tasks_queued_on_a_dead_worker_run_elsewhere_without_spending_a_retry() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let d = scratch_dir("queued-dead");
    let dir = d.to_string_lossy().to_string();
    let doomed = pid_file_then_sleep::options().max_retries(0).remote(dir.clone());
    let queued: Vec<_> = (0..2).map(|_| sleep_pid::options().max_retries(0).remote(1)).collect();
    assert!(eventually(T, || std::fs::read_dir(&dir).unwrap().count() == 1));
    let pid: i32 =
        std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().file_name().to_string_lossy().parse().unwrap();
    // SAFETY: a worker this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(matches!(get(&doomed), Err(Error::WorkerCrashed { .. })));
    for q in &queued {
        let ran_on = get(q).expect("a queued task is not failed by its worker's death");
        assert_ne!(ran_on as i32, pid);
    }
}

#[test]
fn many_inline_arguments_still_fit_in_one_message() {
    let _c = cluster_with(Config::default().inline_threshold(15 << 20));
    let a = vec![1u8; 14 << 20];
    let r = total::remote(a.clone(), a.clone(), a.clone(), a.clone(), a.clone());
    assert_eq!(get(&r).unwrap(), 5 * (14 << 20));
}

#[test]
fn results_too_large_for_one_message_are_an_error_not_a_hang() {
    let _c = cluster_with(Config::default().inline_threshold(15 << 20));
    let (a, ..) = five_big::remote(14 << 20);
    match a.get_timeout(T) {
        Err(Error::Task(t)) => assert!(t.type_name.contains("ResultsNotSent"), "{t:?}"),
        other => panic!("expected a task error, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn shared_memory_of_a_task_that_fails_after_writing_it_is_freed() {
    let _c = cluster_with(Config::default());
    let (a, b) = big_then_unsendable::remote();
    assert!(matches!(get(&a), Err(Error::Serialization(m)) if m.contains("does not encode")));
    assert!(get(&b).is_err());
    drop((a, b));
    assert!(
        eventually(T, || ferroray::runtime_stats().unwrap().store_used_bytes == 0),
        "{:?}",
        ferroray::runtime_stats()
    );
}

#[test]
fn an_inline_threshold_above_16_mib_is_rejected() {
    let _serial = common::serial();
    assert!(matches!(ferroray::init_with(Config::default().inline_threshold(32 << 20)), Err(Error::InvalidOption(_))));
}
