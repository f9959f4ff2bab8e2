//! Process lifecycle: `shutdown()` and the driver's exit, even by a panic,
//! leave no worker process behind; the store is an anonymous memfd, so no
//! shared-memory file is ever left either.

mod common;

use common::{eventually, get, process_gone, T};
use std::process::Command;

#[ferroray::remote]
fn pid() -> u32 {
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::process::id()
}

fn shm_files() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn shutdown_leaves_no_worker_process() {
    let before = shm_files();
    let c = common::cluster_with(ferroray::Config::default().num_cpus(2));
    let refs: Vec<_> = (0..4).map(|_| pid::remote()).collect();
    let mut pids = ferroray::get_all(&refs).unwrap();
    pids.sort();
    pids.dedup();
    assert!(!pids.is_empty());
    let big = ferroray::put(vec![1u8; 1 << 20]).unwrap();
    drop(big);
    drop(c);
    for p in &pids {
        assert!(process_gone(*p), "worker {p} outlived shutdown");
    }
    let leftover: Vec<_> = shm_files().into_iter().filter(|f| !before.contains(f)).collect();
    assert!(leftover.is_empty(), "new files in /dev/shm: {leftover:?}");
}

/// A driver that dies without calling shutdown (run as a child process).
#[test]
fn child_driver_dies() {
    let Ok(how) = std::env::var("LIFECYCLE_CHILD") else { return };
    let out = std::env::var("LIFECYCLE_PIDS").unwrap();
    ferroray::init_with(ferroray::Config::default().num_cpus(2)).unwrap();
    let refs: Vec<_> = (0..4).map(|_| pid::remote()).collect();
    let pids = ferroray::get_all(&refs).unwrap();
    // Leave a task running, and a large object in the store.
    let _running = pid::options().remote();
    let _big = ferroray::put(vec![1u8; 1 << 20]).unwrap();
    std::fs::write(&out, pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")).unwrap();
    match how.as_str() {
        "panic" => panic!("the driver panics on purpose"),
        _ => std::process::exit(3),
    }
}

fn run_dying_driver(how: &str) {
    // Not `common::scratch_dir`: this test holds no cluster, and a cluster
    // test running beside it (plain `cargo test`) removes those when it ends.
    let dir = std::env::temp_dir().join(format!("ferroray-test-dying-{how}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pids_file = dir.join("pids");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_driver_dies", "--nocapture", "--test-threads", "1"])
        .env("LIFECYCLE_CHILD", how)
        .env("LIFECYCLE_PIDS", &pids_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let driver_pid = child.id();
    let status = child.wait_with_output().unwrap().status;
    assert!(!status.success(), "the child driver was meant to fail");
    let litter: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("ferroray-spill-{driver_pid}-")))
        .collect();
    assert!(litter.is_empty(), "the dead driver left {litter:?} in the temp directory");
    let pids: Vec<u32> = std::fs::read_to_string(&pids_file).unwrap().split(',').map(|p| p.parse().unwrap()).collect();
    assert!(!pids.is_empty());
    for p in pids {
        assert!(eventually(T, || process_gone(p)), "worker {p} outlived its driver ({how})");
    }
    // No cluster in this process: its scratch directory goes here.
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_panicking_driver_leaves_no_worker_process() {
    run_dying_driver("panic");
}

#[test]
fn an_exiting_driver_leaves_no_worker_process() {
    run_dying_driver("exit");
}

#[test]
fn a_dead_worker_is_replaced() {
    let _c = common::cluster_with(ferroray::Config::default().num_cpus(1).max_workers(1));
    let first = get(&pid::remote()).unwrap();
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    assert!(eventually(T, || process_gone(first)));
    let second = get(&pid::remote()).unwrap();
    assert_ne!(first, second);
}

#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// A driver that never calls `init` (run as a child process, so that its
/// global state is fresh): its first `remote()` starts the cluster.
#[test]
fn child_without_init() {
    if std::env::var("LIFECYCLE_AUTO_INIT").is_err() {
        return;
    }
    assert!(!ferroray::is_initialized());
    assert_eq!(add::remote(1, 2).get_timeout(T).unwrap(), 3);
    assert!(ferroray::is_initialized());
    // `put` and the other free functions find the same cluster.
    assert_eq!(ferroray::put(5i64).unwrap().get_timeout(T).unwrap(), 5);
    ferroray::shutdown();
    assert!(!ferroray::is_initialized());
    // And after a shutdown, the next use starts a cluster again, as in Ray.
    let r = ferroray::put(7i64).unwrap();
    assert_eq!(add::remote(&r, 1).get_timeout(T).unwrap(), 8);
    ferroray::shutdown();
    println!("AUTO_INIT_OK");
}

#[test]
fn the_first_use_without_init_starts_the_cluster() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_without_init", "--nocapture", "--test-threads", "1"])
        .env("LIFECYCLE_AUTO_INIT", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("AUTO_INIT_OK"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
