//! Cancellation: a queued task is removed; a running one is stopped
//! cooperatively (`is_cancelled`) or by force (its worker is killed and
//! replaced); recursive cancellation reaches the tasks it submitted.

mod common;

use common::{cluster_with, eventually, get, scratch_dir, T};
use ferroray::{Config, Error};
use std::path::Path;
use std::time::{Duration, Instant};

#[ferroray::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[ferroray::remote]
fn until_cancelled(marker: String) -> u64 {
    let mut n = 0;
    while !ferroray::is_cancelled() {
        std::thread::sleep(Duration::from_millis(10));
        n += 1;
    }
    std::fs::write(&marker, "saw cancellation").unwrap();
    n
}

#[ferroray::remote]
fn parent_of(marker: String) -> u64 {
    let child = until_cancelled::remote(marker);
    child.get().unwrap_or(0)
}

#[ferroray::remote]
fn pid_then_sleep(dir: String) -> u32 {
    std::fs::write(Path::new(&dir).join(std::process::id().to_string()), "").unwrap();
    std::thread::sleep(Duration::from_secs(3600));
    0
}

#[test]
fn cancelling_a_queued_task_removes_it() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let running = sleep_ms::remote(1_000);
    let queued = sleep_ms::remote(1);
    let t = Instant::now();
    ferroray::cancel(&queued).unwrap();
    assert_eq!(get(&queued), Err(Error::TaskCancelled));
    assert!(t.elapsed() < Duration::from_millis(700), "did not wait for the running task");
    assert_eq!(get(&running).unwrap(), 1_000);
    let events = ferroray::tasks().unwrap();
    assert!(!events.iter().any(|e| e.task_id == queued.id().task && e.state == ferroray::TaskState::Running));
}

#[test]
fn cancelling_a_running_task_is_seen_by_is_cancelled() {
    let _c = cluster_with(Config::default());
    let d = scratch_dir("coop");
    let marker = d.join("m").to_string_lossy().to_string();
    let r = until_cancelled::remote(marker.clone());
    std::thread::sleep(Duration::from_millis(200));
    ferroray::cancel(&r).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(eventually(T, || Path::new(&marker).exists()));
}

#[test]
fn force_cancel_kills_the_worker_and_it_is_replaced() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let d = scratch_dir("force");
    let dir = d.to_string_lossy().to_string();
    let r = pid_then_sleep::remote(dir.clone());
    assert!(eventually(T, || std::fs::read_dir(&dir).unwrap().count() == 1));
    let pid: u32 =
        std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().file_name().to_string_lossy().parse().unwrap();
    ferroray::cancel_with(&r, ferroray::CancelOptions::default().force()).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(eventually(T, || common::process_gone(pid)), "the worker was killed");
    assert_eq!(get(&sleep_ms::remote(1)).unwrap(), 1, "a new worker serves the next task");
}

#[test]
fn recursive_cancel_reaches_submitted_tasks() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let d = scratch_dir("recursive");
    let marker = d.join("child").to_string_lossy().to_string();
    let parent = parent_of::remote(marker.clone());
    std::thread::sleep(Duration::from_millis(300));
    ferroray::cancel(&parent).unwrap();
    assert_eq!(get(&parent), Err(Error::TaskCancelled));
    assert!(eventually(T, || Path::new(&marker).exists()), "the child task saw the cancellation");
}

#[test]
fn cancelling_a_put_object_is_an_error() {
    let _c = cluster_with(Config::default());
    let p = ferroray::put(1).unwrap();
    assert!(matches!(ferroray::cancel(&p), Err(Error::InvalidOption(_))));
}
