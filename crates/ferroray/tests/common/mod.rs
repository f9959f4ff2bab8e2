//! Helpers shared by the integration tests.
//!
//! Each test starts its own embedded cluster with [`cluster`] and stops it
//! when the guard drops. Under nextest every test is its own process; under
//! plain `cargo test` tests of one binary share a process, so the guard also
//! holds a lock that runs them one at a time.
#![allow(dead_code)]

use ferroray::{Config, ObjectRef};
use serde::de::DeserializeOwned;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest any single wait in a test may take.
pub const T: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Cluster {
    _lock: MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        ferroray::shutdown();
        // The workers are gone: nothing writes to the scratch directories.
        for d in SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Scratch directories made during the test, removed with its cluster.
static SCRATCH: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// For a test that starts (or fails to start) the runtime itself: one at a
/// time with the cluster tests, which share the process's runtime under
/// plain `cargo test`.
pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn cluster() -> Cluster {
    cluster_with(Config::default())
}

pub fn cluster_with(config: Config) -> Cluster {
    let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ferroray::init_with(config).expect("init");
    Cluster { _lock: lock }
}

/// `get` with the test timeout.
pub fn get<T: DeserializeOwned>(r: &ObjectRef<T>) -> ferroray::Result<T> {
    r.get_timeout(T)
}

/// Polls `cond` until it holds or `timeout` passes; true if it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie nobody will run again).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// A fresh directory for marker files shared with workers; removed when the
/// test's cluster is dropped (so only for tests that hold a cluster).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferroray-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).push(d.clone());
    d
}

/// Pids of the workers that ran tasks, from the task events.
pub fn worker_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = ferroray::tasks().expect("tasks").iter().filter_map(|e| e.worker_pid).collect();
    pids.sort();
    pids.dedup();
    pids
}

/// `futures::executor::block_on` with the test timeout: panics if `f` is
/// not done within [`T`] (the timer thread ends as soon as `f` is).
pub fn block_on<F: std::future::IntoFuture>(f: F) -> F::Output {
    let f = std::pin::pin!(f.into_future());
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (fire, timer) = futures::channel::oneshot::channel::<()>();
    let t = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(T) {
            let _ = fire.send(());
        }
    });
    let r = futures::executor::block_on(futures::future::select(f, timer));
    drop(done);
    let _ = t.join();
    match r {
        futures::future::Either::Left((v, _)) => v,
        futures::future::Either::Right(_) => panic!("not done within {T:?}"),
    }
}
