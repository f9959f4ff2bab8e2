//! Fault tolerance: a worker killed with SIGKILL mid-task is replaced and the
//! task retried up to `max_retries` (default 3), then fails with
//! `WorkerCrashed`; application errors are retried only with
//! `retry_exceptions`.

mod common;

use common::{cluster, get, scratch_dir};
use ferroray::Error;
use std::path::Path;

fn attempts(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Records the attempt, then dies by SIGKILL on the first `deaths` attempts.
#[ferroray::remote]
fn die_first(dir: String, deaths: usize) -> usize {
    let n = attempts(&dir);
    std::fs::write(Path::new(&dir).join(format!("attempt-{n}")), std::process::id().to_string()).unwrap();
    if n < deaths {
        // SAFETY: killing our own process on purpose.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    n + 1
}

#[derive(Debug)]
pub struct Flaky(usize);
impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flaky attempt {}", self.0)
    }
}

/// Fails with an application error on the first `failures` attempts.
#[ferroray::remote]
fn fail_first(dir: String, failures: usize) -> Result<usize, Flaky> {
    let n = attempts(&dir);
    std::fs::write(Path::new(&dir).join(format!("attempt-{n}")), "").unwrap();
    if n < failures {
        Err(Flaky(n))
    } else {
        Ok(n + 1)
    }
}

#[ferroray::remote]
fn wait_to_be_killed(dir: String) -> u32 {
    let first = attempts(&dir) == 0;
    std::fs::write(Path::new(&dir).join(format!("pid-{}", std::process::id())), "").unwrap();
    if first {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    std::process::id()
}

#[test]
fn a_killed_worker_is_replaced_and_the_task_retried() {
    let _c = cluster();
    let d = scratch_dir("kill-retry");
    let dir = d.to_string_lossy().to_string();
    assert_eq!(get(&die_first::remote(dir.clone(), 2)).unwrap(), 3, "two deaths, third attempt succeeds");
    assert_eq!(attempts(&dir), 3);
}

#[test]
fn retries_exhausted_give_worker_crashed() {
    let _c = cluster();
    let d = scratch_dir("kill-exhaust");
    let dir = d.to_string_lossy().to_string();
    let err = get(&die_first::options().max_retries(2).remote(dir.clone(), 100)).unwrap_err();
    assert!(matches!(err, Error::WorkerCrashed { ref task, .. } if task == "die_first"), "{err}");
    assert_eq!(attempts(&dir), 3, "one attempt and two retries");
    let d0 = scratch_dir("kill-noretry");
    let dir0 = d0.to_string_lossy().to_string();
    let err = get(&die_first::options().max_retries(0).remote(dir0.clone(), 100)).unwrap_err();
    assert!(matches!(err, Error::WorkerCrashed { .. }), "{err}");
    assert_eq!(attempts(&dir0), 1);
    // Default max_retries is 3: four attempts in all.
    let d3 = scratch_dir("kill-default");
    let dir3 = d3.to_string_lossy().to_string();
    assert!(get(&die_first::remote(dir3.clone(), 100)).is_err());
    assert_eq!(attempts(&dir3), 4);
}

#[test]
fn a_worker_killed_from_outside_mid_task_is_retried() {
    let _c = cluster();
    let d = scratch_dir("kill-outside");
    let dir = d.to_string_lossy().to_string();
    let r = wait_to_be_killed::remote(dir.clone());
    assert!(common::eventually(common::T, || attempts(&dir) == 1));
    let victim: i32 = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().file_name().to_string_lossy()
        ["pid-".len()..]
        .parse()
        .unwrap();
    // SAFETY: a worker process this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let pid = get(&r).unwrap();
    assert_ne!(pid as i32, victim, "the retry ran on a new worker");
}

#[test]
fn application_errors_are_retried_only_with_retry_exceptions() {
    let _c = cluster();
    let d = scratch_dir("app-noretry");
    let dir = d.to_string_lossy().to_string();
    let err = get(&fail_first::remote(dir.clone(), 2)).unwrap_err();
    assert!(matches!(&err, Error::Task(t) if t.message == "flaky attempt 0"), "{err}");
    assert_eq!(attempts(&dir), 1, "no retry without retry_exceptions");

    let d = scratch_dir("app-retry");
    let dir = d.to_string_lossy().to_string();
    assert_eq!(get(&fail_first::options().retry_exceptions(true).remote(dir.clone(), 2)).unwrap(), 3);

    let d = scratch_dir("app-retry-types");
    let dir = d.to_string_lossy().to_string();
    assert_eq!(get(&fail_first::options().retry_exceptions_for(&["Flaky"]).remote(dir.clone(), 1)).unwrap(), 2);
    let d = scratch_dir("app-retry-other");
    let dir = d.to_string_lossy().to_string();
    assert!(get(&fail_first::options().retry_exceptions_for(&["IoError"]).remote(dir.clone(), 1)).is_err());
    assert_eq!(attempts(&dir), 1);
}

/// Ray's `max_retries=-1`, typed: retried past the default 3.
#[ferroray::remote(max_retries = "forever")]
fn die_first_forever(dir: String, deaths: usize) -> usize {
    die_first(dir, deaths)
}

#[test]
fn retries_forever_outlast_the_default() {
    let _c = cluster();
    let d = scratch_dir("kill-forever");
    let dir = d.to_string_lossy().to_string();
    let r = die_first::options().max_retries(ferroray::Retries::Forever).remote(dir.clone(), 5);
    assert_eq!(get(&r).unwrap(), 6, "five deaths, sixth attempt succeeds");
    let d2 = scratch_dir("kill-forever-attr");
    let dir2 = d2.to_string_lossy().to_string();
    assert_eq!(get(&die_first_forever::remote(dir2, 4)).unwrap(), 5);
}

#[ferroray::remote(max_retries = 0)]
fn abort_now() -> u32 {
    std::process::abort()
}

#[ferroray::remote(max_retries = 0)]
fn exit_with(code: i32) -> u32 {
    std::process::exit(code)
}

fn crash_detail(err: Error) -> String {
    match err {
        Error::WorkerCrashed { detail, .. } => detail,
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
}

#[test]
fn a_crashed_workers_error_says_how_it_died() {
    let _c = cluster();
    let detail = crash_detail(get(&abort_now::remote()).unwrap_err());
    assert!(detail.contains("killed by signal 6 (SIGABRT)"), "{detail}");
    let detail = crash_detail(get(&exit_with::remote(3)).unwrap_err());
    assert!(detail.contains("exited with code 3"), "{detail}");
    let d = scratch_dir("kill-detail");
    let dir = d.to_string_lossy().to_string();
    let detail = crash_detail(get(&die_first::options().max_retries(0).remote(dir, 1)).unwrap_err());
    assert!(detail.contains("killed by signal 9 (SIGKILL)"), "{detail}");
}
