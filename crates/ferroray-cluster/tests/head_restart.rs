//! The head killed (SIGKILL) and started again on its Redis storage while a
//! program runs work on another node: the nodes' peer links do not go
//! through the head, so a generator streaming from the other node goes on
//! and tasks sent meanwhile run there; the restarted head takes both nodes
//! back, and work placed after it runs as before.
//!
//! A detached named actor made on A before the head dies is found by its
//! name from B after the restart (the head's table of names is in Redis),
//! its calls go to A, and the name stays its own across the cluster.
//!
//! Three "machines", each a session directory of its own (as on separate
//! hosts): the head's, node A's (the program connects to it, so the head's
//! death does not take the program's node with it) and node B's (which has
//! the custom resource the work asks for). Real daemons, a real
//! `redis-server`. One test in this file: the program's session directory
//! and credentials are environment variables, which the process shares.

mod support;

use ferroray::Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{alive, run_with_timeout, wait_until, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_ferroray");

#[ferroray::remote]
fn where_am_i() -> String {
    ferroray::node_id().unwrap()
}

#[ferroray::remote]
fn slow_count(n: u64) -> impl Iterator<Item = u64> {
    (0..n).inspect(|_| std::thread::sleep(Duration::from_millis(40)))
}

/// Counts what it is given, and says where it runs.
pub struct Keeper(u64);

#[ferroray::actor]
impl Keeper {
    pub fn new(start: u64) -> Self {
        Keeper(start)
    }

    pub fn add(&mut self, n: u64) -> (u64, String) {
        self.0 += n;
        (self.0, ferroray::node_id().unwrap())
    }
}

/// On another node: the actor named "keeper", found by name, called; and
/// another actor of that name, refused. (its count, where it ran, where
/// this ran, the refusal)
#[ferroray::remote]
fn use_keeper(n: u64) -> (u64, String, String, String) {
    let keeper = ferroray::get_actor::<Keeper>("keeper").expect("found by name");
    let (count, at) = keeper.add().remote(n).get().unwrap();
    let refused = match Keeper::options().name("keeper").num_cpus(0).remote(0) {
        Ok(_) => "created".to_string(),
        Err(e) => e.to_string(),
    };
    (count, at, ferroray::node_id().unwrap(), refused)
}

/// Whether an actor named `name` is found from here.
#[ferroray::remote]
fn is_named(name: String) -> bool {
    ferroray::get_actor::<Keeper>(&name).is_ok()
}

/// A machine: a session directory.
struct Machine(PathBuf);

impl Machine {
    fn new(name: &str) -> Machine {
        let dir = std::env::temp_dir().join(format!("ferroray-head-restart-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Machine(dir)
    }

    fn ferroray(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("FERRORAY_SESSION_DIR", &self.0).env_remove("FERRORAY_TOKEN").env_remove("FERRORAY_STORAGE");
        let out = run_with_timeout(cmd);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// (node id, pid) of the one daemon recorded here.
    fn daemon(&self) -> (String, u32) {
        let f = std::fs::read_dir(self.0.join("nodes")).unwrap().flatten().next().expect("a record");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        (v["node_id"].as_str().unwrap().to_string(), v["pid"].as_u64().unwrap() as u32)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.0.exists() {
            let mut cmd = Command::new(BIN);
            cmd.args(["stop", "--grace-period", "5"]).env("FERRORAY_SESSION_DIR", &self.0);
            let _ = run_with_timeout(cmd);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `TOKEN:FINGERPRINT` from a token file (what `FERRORAY_TOKEN` takes).
fn credentials(token_file: &Path) -> String {
    let text = std::fs::read_to_string(token_file).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap();
    let fingerprint = lines.next().unwrap().strip_prefix("sha256:").unwrap();
    format!("{token}:{fingerprint}")
}

#[test]
fn a_head_restarted_on_redis_stops_nothing_that_runs_on_the_nodes() {
    let redis = RedisServer::start("head-restart");
    let url = redis.url();
    let (h, a, b) = (Machine::new("head"), Machine::new("a"), Machine::new("b"));
    let timing = ["--heartbeat-ms", "100", "--node-timeout-ms", "5000"];
    let out =
        h.ferroray(&[&["start", "--head", "--port", "0", "--num-cpus", "1", "--storage", &url][..], &timing].concat());
    let head = out.split(" at ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let port = head.rsplit_once(':').unwrap().1.to_string();
    let token_file = h.0.join("token");
    let token_path = token_file.to_string_lossy().into_owned();
    let join = |m: &Machine, cpus: &str, resources: &str| {
        m.ferroray(&[
            "start",
            "--address",
            &head,
            "--token-file",
            &token_path,
            "--num-cpus",
            cpus,
            "--resources",
            resources,
            "--heartbeat-ms",
            "100",
            "--head-timeout-ms",
            "60000",
        ]);
        m.daemon().0
    };
    let node_a = join(&a, "1", "{}");
    // Room for the stream and a task beside it.
    let node_b = join(&b, "2", r#"{"b": 2}"#);

    // The program runs on machine A.
    // SAFETY (edition 2021: not unsafe yet): the only test of this binary.
    std::env::set_var("FERRORAY_SESSION_DIR", &a.0);
    std::env::set_var("FERRORAY_TOKEN", credentials(&token_file));
    ferroray::init_with(Config::default().address("auto")).expect("connecting to A");
    assert_eq!(ferroray::node_id().unwrap(), node_a);
    wait_until("B in the view", Duration::from_secs(10), || {
        ferroray::cluster_resources().is_ok_and(|r| r.get("b") == Some(&2.0))
    });
    assert_eq!(where_am_i::options().resource("b", 1).remote().get().unwrap(), node_b);

    // A stream from B, under backpressure, a few items in.
    let mut stream = slow_count::options()
        .resource("b", 1)
        .generator_backpressure(std::num::NonZeroU32::new(2).unwrap())
        .remote(150);
    let mut seen: Vec<u64> = (0..5).map(|_| stream.next().unwrap().get().unwrap()).collect();

    // A detached actor named "keeper", on A (its creator's node).
    let keeper = Keeper::options().name("keeper").lifetime_detached().num_cpus(0).remote(100).unwrap();
    assert_eq!(keeper.add().remote(1).get().unwrap(), (101, node_a.clone()));

    // The head dies: the stream goes on, and a task sent now runs on B.
    let (_, head_pid) = h.daemon();
    unsafe { libc::kill(head_pid as i32, libc::SIGKILL) };
    wait_until("the head to die", Duration::from_secs(10), || !alive(head_pid));
    for _ in 0..40 {
        seen.push(stream.next().unwrap().get_timeout(Duration::from_secs(10)).unwrap());
    }
    let during = where_am_i::options().resource("b", 1).remote();
    assert_eq!(during.get_timeout(Duration::from_secs(10)).unwrap(), node_b);
    assert!(ferroray::cluster_resources().is_err(), "no head to ask");

    // The head starts again on its storage and port: both nodes rejoin it,
    // and the rest of the stream, and new work, run as before.
    std::fs::remove_dir_all(h.0.join("nodes")).unwrap();
    h.ferroray(&[&["start", "--head", "--port", &port, "--num-cpus", "1", "--storage", &url][..], &timing].concat());
    wait_until("both nodes back", Duration::from_secs(30), || {
        let status = h.ferroray(&["status"]);
        status.contains("Nodes: 3 alive") && status.contains(&node_a) && status.contains(&node_b)
    });
    for r in stream {
        seen.push(r.get_timeout(Duration::from_secs(10)).unwrap());
    }
    assert_eq!(seen, (0..150).collect::<Vec<_>>(), "each item once, in order");
    let after: Vec<_> = (0..10).map(|_| where_am_i::options().resource("b", 1).remote()).collect();
    for r in after {
        assert_eq!(r.get_timeout(Duration::from_secs(10)).unwrap(), node_b);
    }
    assert_eq!(ferroray::cluster_resources().unwrap()["b"], 2.0);
    // The restarted head has the name and the job from its storage.
    let status = h.ferroray(&["status"]);
    assert!(status.contains("Named actors: 1") && status.contains("Jobs: 1 running"), "{status}");
    // The program's job is in the restarted head's table, still running.
    let jobs = h.ferroray(&["list", "jobs", "--filter", "state=RUNNING"]);
    let me = std::process::id().to_string();
    assert!(
        jobs.lines().skip(1).any(|l| l.split_whitespace().nth(3) == Some(me.as_str()) && l.contains(&node_a)),
        "{jobs}"
    );

    // The restarted head still has the name: a task on B finds the actor on
    // A and calls it there, and the name is not B's to take.
    let got = use_keeper::options().resource("b", 1).remote(10).get_timeout(Duration::from_secs(30));
    if got.is_err() {
        for m in [&a, &b] {
            for f in std::fs::read_dir(m.0.join("logs")).unwrap().flatten() {
                eprintln!("==== {:?}\n{}", f.path(), std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
    }
    let (count, at, ran_on, refused) = got.unwrap();
    assert_eq!((count, at.as_str(), ran_on.as_str()), (111, node_a.as_str(), node_b.as_str()));
    assert!(refused.contains("already exists") && refused.contains(&node_a), "{refused}");
    assert_eq!(keeper.add().remote(1).get().unwrap(), (112, node_a.clone()), "one actor, its count kept");
    // Killed: its name goes with it, across the cluster.
    ferroray::kill(&keeper).unwrap();
    wait_until("the name let go", Duration::from_secs(10), || {
        !is_named::options().resource("b", 1).remote("keeper".to_string()).get_timeout(Duration::from_secs(10)).unwrap()
    });

    ferroray::shutdown();
    drop((a, b, h));
    drop(redis);
}
