//! A program connects to a node daemon started with `ferroray start`
//! (`Config::address`): its tasks, generators, actors and large objects run
//! on the daemon's workers and store, it leaves the daemon running when it
//! shuts down, and another run connects again.
//!
//! One test in this file: the session directory is named by an environment
//! variable, which the process's threads share.

use ferroray::{Buffer, Config, Error};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferroray");

#[ferroray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[ferroray::remote]
fn worker_pid() -> u32 {
    std::process::id()
}

#[ferroray::remote]
fn count(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

#[ferroray::remote]
fn length(b: Buffer) -> usize {
    b.len()
}

pub struct Counter(i64);

#[ferroray::actor]
impl Counter {
    pub fn new(start: i64) -> Self {
        Counter(start)
    }

    pub fn incr(&mut self, by: i64) -> i64 {
        self.0 += by;
        self.0
    }
}

struct Session(PathBuf);

impl Session {
    fn ferroray(&self, args: &[&str]) -> String {
        let out = Command::new(BIN).args(args).env("FERRORAY_SESSION_DIR", &self.0).output().expect("ferroray");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        // A listing names the nodes that did not answer.
        assert!(!err.contains("no answer"), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        ferroray::shutdown();
        let _ = Command::new(BIN).args(["stop", "--grace-period", "5"]).env("FERRORAY_SESSION_DIR", &self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The worker pid of the `square` runs (all on one worker here).
fn pid_of_square(runs: &[serde_json::Value]) -> serde_json::Value {
    runs.iter().find(|e| e["name"] == "square").map(|e| e["tid"].clone()).unwrap()
}

#[test]
fn programs_connect_to_a_daemon_and_leave_it_running() {
    let dir = std::env::temp_dir().join(format!("ferroray-drivers-test-{}", std::process::id()));
    let s = Session(dir.clone());
    // SAFETY (edition 2021: not unsafe yet): the only test of this binary.
    std::env::set_var("FERRORAY_SESSION_DIR", &dir);
    let out = s.ferroray(&["start", "--head", "--port", "0", "--num-cpus", "2"]);
    let address = out.split(" at ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let daemon: u32 = out.split("pid ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();

    // What a node offers is the daemon's to say.
    let err = ferroray::init_with(Config::default().address("auto").num_cpus(4)).unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    let err = ferroray::init_with(Config::default().address("127.0.0.1:1")).unwrap_err();
    assert!(matches!(err, Error::NoCluster(_)), "{err}");
    assert!(err.to_string().contains("no node of the cluster at 127.0.0.1:1"), "{err}");

    ferroray::init_with(Config::default().address("auto")).expect("connecting");
    assert_eq!(square::remote(7).get().unwrap(), 49);
    let nodes = ferroray::nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].alive && nodes[0].is_head);
    assert_eq!(nodes[0].resources["CPU"], 2.0);
    assert!(nodes[0].resources[ferroray::OBJECT_STORE_MEMORY] > 0.0);
    let pid = worker_pid::remote().get().unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!(parent_of(pid), Some(daemon), "the daemon started the worker");
    let items: Vec<u64> = count::remote(5).map(|r| r.get().unwrap()).collect();
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    // A value in the daemon's store, written here and read by a worker.
    let big = ferroray::put(Buffer::new(vec![7u8; 8 << 20])).unwrap();
    assert_eq!(length::remote(&big).get().unwrap(), 8 << 20);
    assert_eq!(big.get().unwrap().len(), 8 << 20);
    let counter = Counter::remote(1);
    assert_eq!(counter.incr().remote(2).get().unwrap(), 3);

    // What runs where, cluster-wide, through the head (a second node
    // answers too, with nothing).
    s.ferroray(&["start", "--address", &address, "--num-cpus", "1", "--resources", r#"{"b": 3}"#]);
    let total = ferroray::cluster_resources().unwrap();
    assert_eq!((total["CPU"], total["b"]), (3.0, 3.0), "{total:?}");
    // The actor holds no CPU once placed (Ray's default); the daemons'
    // figures are as of their last heartbeat.
    let available = ferroray::available_resources().unwrap();
    assert!(available["CPU"] <= 3.0 && available["b"] == 3.0, "{available:?}");
    let tasks = s.ferroray(&["list", "tasks", "--filter", "name=square"]);
    assert!(tasks.lines().nth(1).is_some_and(|l| l.contains("FINISHED")), "{tasks}");
    let actors = s.ferroray(&["list", "actors"]);
    assert!(actors.lines().any(|l| l.contains("Counter") && l.contains("ALIVE")), "{actors}");
    let objects = s.ferroray(&["list", "objects", "--filter", "location=shared_memory"]);
    let size = |l: &str| l.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    // The buffer and its few bytes of encoding.
    assert!(objects.lines().skip(1).any(|l| (8u64 << 20..(8 << 20) + 64).contains(&size(l))), "{objects}");
    let trace = dir.join("trace.json");
    s.ferroray(&["timeline", "-o", trace.to_str().unwrap()]);
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let runs = trace["traceEvents"].as_array().unwrap();
    let square = runs.iter().find(|e| e["name"] == "square" && e["ph"] == "X").expect("square ran");
    assert_eq!(square["args"]["state"], "FINISHED");
    assert_eq!(square["tid"], pid_of_square(runs));
    drop((big, counter));
    ferroray::shutdown();

    // The daemon runs on; the workers of this program are gone.
    assert!(alive(daemon));
    let started = Instant::now();
    while alive(pid) {
        assert!(started.elapsed() < Duration::from_secs(10), "worker {pid} outlived its program");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.ferroray(&["status"]).contains("Nodes: 2 alive"));

    // Again, by the head's address: a new job on the same daemon.
    ferroray::init_with(Config::default().address(&address)).expect("connecting again");
    assert_eq!(square::remote(-3).get().unwrap(), 9);
    ferroray::shutdown();
    drop(s);
    assert!(!dir.exists());
}
