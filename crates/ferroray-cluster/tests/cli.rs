//! The `ferroray` command with real daemons: a head and nodes as separate
//! processes on this machine, each with its own store, joined over TLS.
//! Every test uses a session directory of its own and removes it, with
//! every daemon, however it ends. The test of `--storage` starts a real
//! `redis-server` (`support`).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{alive, run_with_timeout, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_ferroray");

/// A session directory, and `ferroray stop` plus its removal on drop.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ferroray-cli-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Cluster { dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env("FERRORAY_SESSION_DIR", &self.dir).env_remove("FERRORAY_TOKEN").env_remove("FERRORAY_STORAGE");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args))
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Starts the head on a free port (unless `extra` names one); its
    /// address.
    fn head(&self, extra: &[&str]) -> String {
        let mut args = vec!["start", "--head"];
        if !extra.contains(&"--port") {
            args.extend(["--port", "0"]);
        }
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let line = out.lines().find(|l| l.starts_with("Started the head")).expect("the ready message");
        line.split(" at ").nth(1).unwrap().split(' ').next().unwrap().to_string()
    }

    /// Starts a node that joins `head`; its pid.
    fn node(&self, head: &str, extra: &[&str]) -> u32 {
        let mut args = vec!["start", "--address", head];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let line = out.lines().find(|l| l.starts_with("Started node")).expect("the ready message");
        line.split("(pid ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap()
    }

    /// The fingerprint line of the head's token file, without `sha256:`.
    fn fingerprint(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("token")).unwrap();
        text.lines().nth(1).unwrap().strip_prefix("sha256:").unwrap().to_string()
    }

    /// Everything the daemons logged so far.
    fn logs(&self) -> String {
        std::fs::read_dir(self.dir.join("logs"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }

    /// The head's pid, from the status.
    fn head_pid(&self) -> u32 {
        let status = self.ok(&["status"]);
        let line = status.lines().find(|l| l.contains("head")).expect("the head in the status");
        line.split("pid ").nth(1).and_then(|p| p.split_whitespace().next()).unwrap().parse().unwrap()
    }

    fn list(&self, filter: &str) -> Vec<String> {
        self.ok(&["list", "nodes", "--filter", filter]).lines().skip(1).map(str::to_string).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = self.run(&["stop", "--grace-period", "5"]);
        }
        let leftover = self.dir.exists();
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert!(!leftover, "stop left the session directory behind");
        }
    }
}

#[test]
fn a_head_and_two_nodes_form_a_cluster_and_stop_together() {
    let c = Cluster::new("form");
    let head = c.head(&["--num-cpus", "2", "--heartbeat-ms", "100", "--node-timeout-ms", "2000"]);
    let a = c.node(&head, &["--num-cpus", "1", "--resources", r#"{"a": 2}"#, "--object-store-memory", "50000000"]);
    let b = c.node(&head, &["--num-cpus", "3", "--num-gpus", "1", "--object-store-memory", "60000000"]);
    assert_ne!(a, b);

    let status = c.ok(&["status"]);
    assert!(status.contains("Nodes: 3 alive, 0 dead"), "{status}");
    assert!(status.contains("0.0/6.0 CPU"), "{status}");
    assert!(status.contains("0.0/1.0 GPU"), "{status}");
    assert!(status.contains("0.0/2.0 a"), "{status}");
    assert!(status.contains(&format!("pid {a}")) && status.contains(&format!("pid {b}")), "{status}");

    let nodes = c.list("is_head=false");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().any(|l| l.contains(&a.to_string()) && l.contains("a=2/2")), "{nodes:?}");
    assert_eq!(c.list("state=alive").len(), 3);
    assert_eq!(c.list("state=dead").len(), 0);

    // Asking the head by its address, with the token in a file.
    let token = c.dir.join("token");
    let status = c.ok(&["status", "--address", &head, "--token-file", token.to_str().unwrap()]);
    assert!(status.contains("Nodes: 3 alive"), "{status}");

    let stopped = c.ok(&["stop"]);
    assert_eq!(stopped.matches("Stopped").count(), 3, "{stopped}");
    assert!(!alive(a) && !alive(b));
    assert!(!c.dir.exists(), "stop removes the session directory");
    let out = c.run(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster was started"));
}

#[test]
fn a_wrong_token_is_refused_and_logged() {
    let c = Cluster::new("token");
    let head = c.head(&[]);
    let mut cmd = c.cmd(&["start", "--address", &head]);
    cmd.env("FERRORAY_TOKEN", format!("{}:{}", "00".repeat(32), c.fingerprint()));
    let out = run_with_timeout(cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong cluster token"), "{err}");
    let head_pid = std::fs::read_dir(c.dir.join("nodes")).unwrap().count();
    assert_eq!(head_pid, 1, "only the head is recorded");
    let logs = c.logs();
    assert!(logs.contains("refused a connection from 127.0.0.1") && logs.contains("wrong cluster token"), "{logs}");
    // The right token with another fingerprint: the caller refuses the head
    // (as it would a man in the middle), and sends no token.
    let token = std::fs::read_to_string(c.dir.join("token")).unwrap().lines().next().unwrap().to_string();
    let mut cmd = c.cmd(&["status"]);
    cmd.env("FERRORAY_TOKEN", format!("{token}:{}", "11".repeat(32)));
    let out = run_with_timeout(cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not the one in the token file"), "{err}");
    // A peer that does not speak TLS: refused and logged, and the head
    // serves on.
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(&head).unwrap();
        plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        plain.write_all(&[4, 0, 0, 0, 8, 1, 18, 0]).unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(answer.is_empty() || answer[0] == 21, "at most a TLS alert: {answer:?}");
    }
    wait_until("the plain peer's refusal logged", Duration::from_secs(10), || c.logs().contains("tls:"));
    assert!(c.ok(&["status"]).contains("Nodes: 1 alive"));
    // A token file others may read is refused before it is used.
    let loose = c.dir.join("loose-token");
    std::fs::copy(c.dir.join("token"), &loose).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&loose).unwrap().permissions(), 0o644);
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = c.run(&["status", "--token-file", loose.to_str().unwrap()]);
    std::fs::remove_file(&loose).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by nobody else"));
}

#[test]
fn a_killed_node_is_declared_dead_within_the_timeout() {
    let c = Cluster::new("kill");
    let (heartbeat, timeout) = (100, 1000);
    let head = c.head(&["--heartbeat-ms", &heartbeat.to_string(), "--node-timeout-ms", &timeout.to_string()]);
    let doomed = c.node(&head, &[]);
    let stays = c.node(&head, &[]);
    assert_eq!(c.list("state=alive").len(), 3);
    unsafe { libc::kill(doomed as i32, libc::SIGKILL) };
    let took = wait_until("the killed node declared dead", Duration::from_secs(10), || c.list("state=dead").len() == 1);
    // Up to the timeout after its last heartbeat, plus a sweep's period and
    // the polling here.
    assert!(took < Duration::from_millis(timeout + 2 * heartbeat + 1000), "took {took:?}");
    let status = c.ok(&["status"]);
    assert!(status.contains("no heartbeat for 1000 ms"), "{status}");
    assert!(status.contains("Nodes: 2 alive, 1 dead"), "{status}");
    assert!(alive(stays));
}

#[test]
fn a_stopped_node_leaves_at_once() {
    let c = Cluster::new("leave");
    let head = c.head(&["--node-timeout-ms", "60000"]);
    let node = c.node(&head, &[]);
    unsafe { libc::kill(node as i32, libc::SIGTERM) };
    wait_until("the node to exit", Duration::from_secs(10), || !alive(node));
    let dead = c.list("state=dead");
    assert_eq!(dead.len(), 1, "declared dead at once, not after a minute: {dead:?}");
    assert!(c.ok(&["status"]).contains("DEAD (stopped)"));
}

#[test]
fn a_node_whose_head_is_gone_stops_by_itself() {
    let c = Cluster::new("orphan");
    let head = c.head(&["--heartbeat-ms", "100", "--node-timeout-ms", "1000"]);
    let node = c.node(&head, &["--head-timeout-ms", "1000"]);
    let head_pid = c.head_pid();
    unsafe { libc::kill(head_pid as i32, libc::SIGKILL) };
    wait_until("the orphaned node to stop", Duration::from_secs(15), || !alive(node));
}

/// Addresses other than loopback are allowed now that links are TLS: a head
/// on every interface, joined by a node that has a copy of the token file
/// (as another machine would), and asked with the token in the environment.
/// Nothing here connects anywhere but this machine.
#[test]
fn a_head_on_every_interface_is_joined_with_a_copied_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::new("anywhere");
    let head = c.head(&["--node-ip-address", "0.0.0.0"]);
    assert!(head.starts_with("0.0.0.0:"), "{head}");
    for f in ["token", "head.crt", "head.key"] {
        let mode = std::fs::metadata(c.dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let port = head.rsplit_once(':').unwrap().1;
    let copy = c.dir.join("copied-token");
    std::fs::copy(c.dir.join("token"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = c.node(&format!("127.0.0.1:{port}"), &["--token-file", copy.to_str().unwrap()]);
    std::fs::remove_file(&copy).unwrap();
    let text = std::fs::read_to_string(c.dir.join("token")).unwrap();
    let env = format!("{}:{}", text.lines().next().unwrap(), c.fingerprint());
    let mut cmd = c.cmd(&["status", "--address", &format!("127.0.0.1:{port}")]);
    cmd.env("FERRORAY_TOKEN", env);
    let out = run_with_timeout(cmd);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}{}", String::from_utf8_lossy(&out.stderr));
    assert!(status.contains("Nodes: 2 alive") && status.contains(&format!("pid {node}")), "{status}");
    // A token file from before TLS (a token alone) is refused with the reason.
    let old = c.dir.join("old-token");
    std::fs::write(&old, text.lines().next().unwrap()).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = c.run(&["status", "--token-file", old.to_str().unwrap()]);
    std::fs::remove_file(&old).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no head certificate fingerprint"));
}

#[test]
fn bad_options_are_clear_errors() {
    let c = Cluster::new("options");
    let fails = |args: &[&str], expect: &str| {
        let out = c.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expect), "{args:?}: {err}");
    };
    fails(&["start", "--head", "--resources", "{a: 1}"], "--resources");
    fails(&["start", "--head", "--resources", r#"{"CPU": 1}"#], "--num-cpus");
    fails(&["start", "--head", "--num-cpus=-1"], "num-cpus");
    fails(&["start", "--address", "127.0.0.1"], "expected HOST:PORT");
    fails(&["start", "--address", ":6390"], "expected HOST:PORT");
    fails(&["start", "--head", "--storage", "http://127.0.0.1:6379"], "expected redis://HOST:PORT");
    fails(&["start", "--address", "127.0.0.1:1", "--storage", "redis://127.0.0.1:1"], "--storage is the head's");
    // Storage where nothing listens: the start fails, naming it.
    let url = format!("redis://127.0.0.1:{}", support::free_port());
    fails(&["start", "--head", "--port", "0", "--storage", &url], &format!("cannot reach the storage at {url}: "));
    // The same from the environment (which keeps a password out of `ps`).
    let mut cmd = c.cmd(&["start", "--head", "--port", "0"]);
    cmd.env("FERRORAY_STORAGE", &url);
    let out = run_with_timeout(cmd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot reach the storage at {url}: ")));
    fails(&["start", "--head", "--heartbeat-ms", "1000", "--node-timeout-ms", "1500"], "at least twice");
    fails(&["start"], "--head");
    fails(&["list", "nodes", "--filter", "colour=red"], "unknown key");
    fails(&["start", "--address", "127.0.0.1:1"], "no cluster was started");
    // With a head, a second one is refused, and a node for a port nobody
    // listens on says so.
    let _head = c.head(&[]);
    fails(&["start", "--head", "--port", "0"], "already running");
    fails(&["start", "--address", "127.0.0.1:1"], "cannot reach the head");
}

/// A head with `--storage` killed and started again on the same storage and
/// port: it has the same token and certificate, the nodes that were alive
/// rejoin it (alive past one node timeout from the restart), the node that
/// had stopped stays dead, and the old head's node is dead. Then Redis goes
/// away: the head logs it and serves on from memory.
#[test]
fn a_head_restarted_on_its_storage_takes_its_nodes_back() {
    let mut redis = support::RedisServer::start("restart");
    let c = Cluster::new("restart");
    let url = redis.url();
    let timeout = Duration::from_millis(5000);
    let timing = ["--heartbeat-ms", "100", "--node-timeout-ms", "5000", "--storage", &url];
    let head = c.head(&timing);
    let port = head.rsplit_once(':').unwrap().1.to_string();
    let fingerprint = c.fingerprint();
    let a = c.node(&head, &["--head-timeout-ms", "30000"]);
    let b = c.node(&head, &["--head-timeout-ms", "30000"]);
    let gone = c.node(&head, &[]);
    unsafe { libc::kill(gone as i32, libc::SIGTERM) };
    wait_until("the stopped node to leave", Duration::from_secs(10), || !alive(gone));
    assert!(c.ok(&["status"]).contains("Nodes: 3 alive, 1 dead"));

    let old_head = c.head_pid();
    unsafe { libc::kill(old_head as i32, libc::SIGKILL) };
    wait_until("the head to die", Duration::from_secs(10), || !alive(old_head));
    let restarted = Instant::now();
    let again = c.head(&[&timing[..], &["--port", &port]].concat());
    assert_eq!(again, head);
    assert_eq!(c.fingerprint(), fingerprint, "the same certificate, so the nodes trust it");
    let logs = c.logs();
    assert!(logs.contains(&format!("the control store is in {url}: 2 node(s) alive there")), "{logs}");
    // Past the grace of one node timeout, both nodes are alive: they rejoined.
    wait_until("both nodes back, past the timeout", Duration::from_secs(30), || {
        restarted.elapsed() > timeout + Duration::from_millis(500)
            && c.ok(&["status"]).contains("Nodes: 3 alive, 2 dead")
    });
    assert!(restarted.elapsed() < timeout + Duration::from_secs(10), "took {:?}", restarted.elapsed());
    let status = c.ok(&["status"]);
    assert!(status.contains(&format!("pid {a}")) && status.contains(&format!("pid {b}")), "{status}");
    assert!(status.contains("DEAD (stopped)") && status.contains("DEAD (its head restarted)"), "{status}");
    assert!(alive(a) && alive(b));
    let logs = c.logs();
    assert_eq!(logs.matches(&format!("joined the head at {head} again")).count(), 2, "{logs}");

    // Redis goes away: logged, and the head serves on from memory.
    redis.kill();
    unsafe { libc::kill(b as i32, libc::SIGTERM) };
    wait_until("the storage failure logged", Duration::from_secs(10), || {
        c.logs().contains(&format!("the storage at {url} fails"))
    });
    let status = c.ok(&["status"]);
    assert!(status.contains("Nodes: 2 alive, 3 dead"), "{status}");
}
