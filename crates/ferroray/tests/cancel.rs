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

/// An async task: its future carries the task's context and sees the
/// cancel between awaits.
#[ferroray::remote]
async fn until_cancelled_async(marker: String) -> u64 {
    let mut n = 0;
    while !ferroray::is_cancelled() {
        tokio::time::sleep(Duration::from_millis(10)).await;
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
fn cancelling_a_running_async_task_is_seen_by_its_future() {
    let _c = cluster_with(Config::default());
    let d = scratch_dir("coop-async");
    let marker = d.join("m").to_string_lossy().to_string();
    let r = until_cancelled_async::remote(marker.clone());
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

#[ferroray::remote]
fn pid_then_until_cancelled(dir: String) -> u32 {
    std::fs::write(Path::new(&dir).join(std::process::id().to_string()), "").unwrap();
    while !ferroray::is_cancelled() {
        std::thread::sleep(Duration::from_millis(10));
    }
    1
}

/// Submits a child that never checks `is_cancelled`, and waits for it.
#[ferroray::remote]
fn parent_of_sleeper(dir: String) -> u32 {
    pid_then_sleep::remote(dir).get().unwrap_or(0)
}

/// The pid a task wrote as a file name in `dir` (waits for it).
fn written_pid(dir: &str) -> u32 {
    assert!(eventually(T, || std::fs::read_dir(dir).unwrap().count() == 1));
    std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().file_name().to_string_lossy().parse().unwrap()
}

const GRACE: Duration = Duration::from_millis(400);

#[test]
fn a_grace_period_ends_in_a_kill_for_a_task_that_never_checks() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let d = scratch_dir("grace-kill");
    let dir = d.to_string_lossy().to_string();
    let r = pid_then_sleep::remote(dir.clone());
    let pid = written_pid(&dir);
    let t = Instant::now();
    ferroray::cancel_with(&r, ferroray::CancelOptions::default().grace(GRACE)).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(t.elapsed() >= GRACE, "killed before its grace ended: {:?}", t.elapsed());
    assert!(eventually(T, || common::process_gone(pid)), "the worker was killed after the grace");
    assert_eq!(get(&sleep_ms::remote(1)).unwrap(), 1, "a new worker serves the next task");
}

#[test]
fn a_task_that_checks_ends_cooperatively_within_its_grace() {
    let _c = cluster_with(Config::default().num_cpus(1));
    let d = scratch_dir("grace-coop");
    let dir = d.to_string_lossy().to_string();
    let r = pid_then_until_cancelled::remote(dir.clone());
    let pid = written_pid(&dir);
    let grace = Duration::from_millis(1_500);
    let t = Instant::now();
    ferroray::cancel_with(&r, ferroray::CancelOptions::default().grace(grace)).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(t.elapsed() < grace, "it ended by itself, before the grace: {:?}", t.elapsed());
    // Past the grace (and the 200 ms the node may be late): not killed.
    std::thread::sleep(grace + Duration::from_millis(500) - t.elapsed().min(grace));
    assert!(!common::process_gone(pid), "the worker of a task that ended cooperatively was killed");
    assert_eq!(get(&sleep_ms::remote(1)).unwrap(), 1);
}

#[test]
fn a_recursive_grace_period_reaches_a_child_that_never_checks() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let d = scratch_dir("grace-recursive");
    let dir = d.to_string_lossy().to_string();
    let parent = parent_of_sleeper::remote(dir.clone());
    let child_pid = written_pid(&dir);
    let t = Instant::now();
    ferroray::cancel_with(&parent, ferroray::CancelOptions::default().grace(GRACE)).unwrap();
    assert_eq!(get(&parent), Err(Error::TaskCancelled));
    assert!(eventually(T, || common::process_gone(child_pid)), "the child was killed after the grace");
    assert!(t.elapsed() >= GRACE, "the child was killed before its grace ended: {:?}", t.elapsed());
}

#[test]
fn an_endless_grace_is_a_plain_cooperative_cancel() {
    let _c = cluster_with(Config::default());
    let d = scratch_dir("grace-endless");
    let marker = d.join("m").to_string_lossy().to_string();
    let r = until_cancelled::remote(marker.clone());
    std::thread::sleep(Duration::from_millis(100));
    ferroray::cancel_with(&r, ferroray::CancelOptions::default().grace(Duration::MAX)).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(eventually(T, || Path::new(&marker).exists()));
    assert_eq!(get(&sleep_ms::remote(1)).unwrap(), 1, "the node still serves");
}
