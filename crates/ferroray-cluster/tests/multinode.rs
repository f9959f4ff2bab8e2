//! A program connected to one node daemon runs tasks on others (peer
//! links): placed by custom resources, with large arguments and results
//! moved between the nodes' stores, generators streamed back under
//! backpressure, spillback when the program's node is full, a task that no
//! node can run yet waiting for one to join, a node killed in the
//! middle of a generator (the stream completes, each item once), and large
//! results left on the node that made them until read, made again by
//! their task when that node is killed first.
//!
//! Another program (a changed copy of this executable) runs on the same
//! nodes at the same time, in workers of its own.
//!
//! Head and nodes are `ferroray start` daemons, each a process with its own
//! store and ports on loopback. One test in this file (and the other
//! program's part, run only by it): the session directory is named by an
//! environment variable, which the process's threads share.

use ferroray::{Buffer, Config, ObjectRef};
use ferroray_common::ClusterToken;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferroray");

#[ferroray::remote]
fn where_am_i() -> String {
    ferroray::node_id().unwrap()
}

/// Where it runs: the node, and the executable of its worker process.
#[ferroray::remote]
fn worker_exe() -> (String, String) {
    (ferroray::node_id().unwrap(), std::env::current_exe().unwrap().display().to_string())
}

/// The second program of `tasks_objects_and_streams_cross_nodes`, run by it
/// from a changed copy of this executable (another program) while it is
/// connected itself: not a test of its own.
#[test]
#[ignore = "run by tasks_objects_and_streams_cross_nodes as another program"]
fn another_program() {
    if std::env::var_os("FERRORAY_SESSION_DIR").is_none() {
        return;
    }
    ferroray::init_with(Config::default().address("auto")).expect("connecting");
    let (here, here_exe) = worker_exe::remote().get().unwrap();
    let (there, there_exe) = worker_exe::options().resource("b", 1).remote().get().unwrap();
    let on_b: Vec<_> = (0..20).map(|i| square::options().resource("b", 1).remote(i)).collect();
    let sum: i64 = on_b.into_iter().map(|r| r.get().unwrap()).sum();
    println!("another program: {here} {here_exe} {there} {there_exe} {sum}");
    ferroray::shutdown();
}

#[ferroray::remote]
fn checksum(b: Buffer) -> (usize, u64) {
    (b.len(), b.iter().map(|x| u64::from(*x)).sum())
}

#[ferroray::remote]
fn make(n: usize) -> Buffer {
    Buffer::new(vec![3u8; n])
}

#[ferroray::remote]
fn square(x: i64) -> i64 {
    x * x
}

/// Yields `0..n` slowly, and writes the id of the node it runs on to
/// `mark` (a side channel: the items must be the same on every attempt).
#[ferroray::remote]
fn slow_count(n: u64, mark: String) -> impl Iterator<Item = u64> {
    let _ = std::fs::write(&mark, ferroray::node_id().unwrap());
    (0..n).inspect(|_| std::thread::sleep(Duration::from_millis(50)))
}

/// `n` bytes of 7, and the node it ran on; each run appends that node's
/// id to `mark` (a line per run).
#[ferroray::remote]
fn made_where(n: usize, mark: String) -> (Buffer, String) {
    use std::io::Write;
    let here = ferroray::node_id().unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&mark).unwrap();
    writeln!(f, "{here}").unwrap();
    (Buffer::new(vec![7u8; n]), here)
}

/// `n` items of `size` bytes of `i`; the first attempt (the one that makes
/// `mark`) dies after two.
#[ferroray::remote]
fn chunks_crash_once(n: usize, size: usize, mark: String) -> impl Iterator<Item = Buffer> {
    let first = std::fs::OpenOptions::new().write(true).create_new(true).open(&mark).is_ok();
    (0..n).map(move |i| {
        if first && i == 2 {
            // Its two items reported first.
            std::thread::sleep(Duration::from_millis(300));
            std::process::exit(3);
        }
        Buffer::new(vec![i as u8; size])
    })
}

#[ferroray::remote]
fn length_where(made: (Buffer, String)) -> (usize, String) {
    (made.0.len(), ferroray::node_id().unwrap())
}

#[ferroray::remote]
fn chunks(n: usize, size: usize) -> impl Iterator<Item = Buffer> {
    (0..n).map(move |i| Buffer::new(vec![i as u8; size]))
}

/// Calls the actor it is given, twice: where the actor ran, its count, and
/// where this ran.
#[ferroray::remote]
fn call_where(w: ferroray::ActorHandle<Where>) -> (String, u32, String) {
    w.node().remote().get().unwrap();
    let (at, n) = w.node().remote().get().unwrap();
    (at, n, ferroray::node_id().unwrap())
}

/// Calls the actor it is given `n` times, each waited for: how many
/// answered, and the errors of those that did not (each within its
/// timeout: none may hang).
#[ferroray::remote]
fn hammer(w: ferroray::ActorHandle<Where>, n: u32) -> (u32, Vec<String>) {
    let mut ok = 0;
    let mut errors = Vec::new();
    for _ in 0..n {
        match w.node().remote().get_timeout(Duration::from_secs(10)) {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    (ok, errors)
}

/// Makes a detached `Keeper` named `name` on the node with resource "e"
/// (sent there by this node) and has it keep `w`; where this ran.
#[ferroray::remote]
fn keep_on_e(name: String, w: ferroray::ActorHandle<Where>) -> String {
    let keeper = Keeper::options().name(&name).lifetime_detached().resource("e", 0.1).remote().unwrap();
    assert!(keeper.keep().remote(w).get().unwrap());
    ferroray::node_id().unwrap()
}

/// Tries to make a detached actor named `name` here: whether it did, and
/// where this ran.
#[ferroray::remote]
fn make_named(name: String, at: u64) -> (bool, String) {
    // Start together: the creations race.
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() < u128::from(at) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let made = Where::options().name(&name).lifetime_detached().num_cpus(0).remote();
    if let Err(e) = &made {
        assert!(e.to_string().contains("already exists"), "{e}");
    }
    (made.is_ok(), ferroray::node_id().unwrap())
}

#[ferroray::remote]
fn sleepy(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    ferroray::node_id().unwrap()
}

/// Where it runs, and the sum of the values its refs name (read there).
#[ferroray::remote]
fn sum_nested(refs: Vec<ObjectRef<i64>>) -> (String, i64) {
    (ferroray::node_id().unwrap(), refs.iter().map(|r| r.get().unwrap()).sum())
}

/// Follows refs two deep to buffers, and sums their bytes.
#[ferroray::remote]
fn sum_deep(outer: Vec<ObjectRef<Vec<ObjectRef<Buffer>>>>) -> u64 {
    let mut total = 0;
    for inner in outer {
        for b in inner.get().unwrap() {
            total += b.get().unwrap().iter().map(|x| u64::from(*x)).sum::<u64>();
        }
    }
    total
}

/// Whether each ref names a value (an error stays the ref's, not the task's).
#[ferroray::remote]
fn readable(refs: Vec<ObjectRef<i64>>) -> Vec<bool> {
    refs.iter().map(|r| r.get().is_ok()).collect()
}

#[ferroray::remote]
fn fails() -> i64 {
    panic!("on purpose")
}

/// Puts `n` buffers of `size` bytes where it runs and returns refs to them,
/// one of them also inside a value of its own.
#[ferroray::remote]
fn put_there(n: usize, size: usize) -> (Vec<ObjectRef<Buffer>>, ObjectRef<Vec<ObjectRef<Buffer>>>) {
    let refs: Vec<ObjectRef<Buffer>> =
        (0..n).map(|i| ferroray::put(Buffer::new(vec![i as u8 + 1; size])).unwrap()).collect();
    let wrapped = ferroray::put(vec![refs[0].clone()]).unwrap();
    (refs, wrapped)
}

/// Yields refs to buffers it puts where it runs, one of them twice.
#[ferroray::remote]
fn put_items(n: usize, size: usize) -> impl Iterator<Item = Vec<ObjectRef<Buffer>>> {
    let first = ferroray::put(Buffer::new(vec![9u8; size])).unwrap();
    (0..n).map(move |i| vec![first.clone(), ferroray::put(Buffer::new(vec![i as u8; size])).unwrap()])
}

/// Counts its calls and says where it runs.
pub struct Where(u32);

#[ferroray::actor]
impl Where {
    pub fn new() -> Self {
        Where(0)
    }

    pub fn node(&mut self) -> (String, u32) {
        self.0 += 1;
        (ferroray::node_id().unwrap(), self.0)
    }
}

/// Keeps a handle of another node's actor, to call it later.
pub struct Keeper(Option<ferroray::ActorHandle<Where>>);

#[ferroray::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper(None)
    }

    pub fn keep(&mut self, w: ferroray::ActorHandle<Where>) -> bool {
        self.0 = Some(w);
        true
    }

    /// Where the kept actor runs and its count, or why not.
    pub fn call_kept(&mut self) -> Result<(String, u32), String> {
        let w = self.0.as_ref().ok_or("nothing kept")?;
        w.node().remote().get_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())
    }

    pub fn forget(&mut self) -> bool {
        self.0 = None;
        true
    }
}

struct Session(PathBuf);

impl Session {
    fn ferroray(&self, args: &[&str]) -> String {
        let out = Command::new(BIN).args(args).env("FERRORAY_SESSION_DIR", &self.0).output().expect("ferroray");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a node joined to `head` with 1 CPU, `resources` and `extra`
    /// options; its node id.
    fn node(&self, head: &str, resources: &str, extra: &[&str]) -> String {
        let before = self.records();
        let mut args = vec!["start", "--address", head, "--num-cpus", "1", "--resources", resources];
        args.extend_from_slice(&["--heartbeat-ms", "200"]);
        args.extend_from_slice(extra);
        self.ferroray(&args);
        self.records().into_iter().find(|r| !before.contains(r)).expect("a new record").0
    }

    /// (node id, daemon pid) of every daemon recorded.
    fn records(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for f in std::fs::read_dir(self.0.join("nodes")).into_iter().flatten().flatten() {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            out.push((v["node_id"].as_str().unwrap().to_string(), v["pid"].as_u64().unwrap() as u32));
        }
        out
    }

    fn pid_of(&self, node: &str) -> u32 {
        self.records().into_iter().find(|(n, _)| n == node).expect("recorded").1
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        ferroray::shutdown();
        let _ = Command::new(BIN).args(["stop", "--grace-period", "5"]).env("FERRORAY_SESSION_DIR", &self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The actor `keeper` keeps (`actor_id`, made on node `at`) answers it
/// though no other handle is left; once the keeper lets go, the actor ends.
/// The keeper is killed after.
fn kept_until_let_go(s: &Session, keeper: &ferroray::ActorHandle<Keeper>, actor_id: &str, at: &str) {
    let called = keeper.call_kept().remote().get();
    assert_eq!(called.expect("alive while a handle is kept"), (at.to_string(), 1));
    assert!(keeper.forget().remote().get().unwrap());
    wait_for("the kept actor to end", Duration::from_secs(20), || {
        let listed = s.ferroray(&["list", "actors", "--filter", &format!("actor_id={actor_id}")]);
        listed.lines().skip(1).all(|l| l.contains("DEAD"))
    });
    ferroray::kill(keeper).unwrap();
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a peer link to `node` (found in the head's view, its certificate
/// pinned) with `token`; the answer to the hello: "welcome" or the refusal.
fn peer_hello(s: &Session, node: &str, token: ClusterToken) -> String {
    use ferroray_cluster::peer::{FromPeer, FromPeerKind, PeerHello, ToPeer, ToPeerKind, PEER_PROTOCOL_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let credentials = ferroray_cluster::session::read_token(&s.0.join("token")).unwrap();
    let view = ferroray_cluster::client::view_blocking(&head_address(s), &credentials).unwrap();
    let desc =
        view.nodes.iter().filter_map(|n| n.desc.clone()).find(|d| format!("{:016x}", d.node_id) == node).unwrap();
    let fingerprint = ferroray_cluster::tls::Fingerprint(desc.peer_fingerprint.as_slice().try_into().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let connector = tokio_rustls::TlsConnector::from(ferroray_cluster::tls::client_config(fingerprint).unwrap());
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", desc.peer_port as u16)).await.unwrap();
        let mut tls = connector.connect(ferroray_cluster::tls::head_name(), tcp).await.unwrap();
        let hello = PeerHello {
            protocol: PEER_PROTOCOL_VERSION,
            token: token.as_bytes().to_vec(),
            from_node: 1,
            ..Default::default()
        };
        let mut buf = Vec::new();
        ferroray_protocol::frame::encode_into(&mut buf, ToPeer { kind: Some(ToPeerKind::Hello(hello)) }).unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.flush().await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;
        match ferroray_protocol::frame::read_frame::<_, FromPeer>(&mut &reply[..]).unwrap() {
            Some(FromPeer { kind: Some(FromPeerKind::Rejected(why)) }) => why,
            Some(FromPeer { kind: Some(FromPeerKind::Welcome(_)) }) => "welcome".into(),
            other => panic!("{other:?}"),
        }
    })
}

fn head_address(s: &Session) -> String {
    let text = std::fs::read_to_string(std::fs::read_dir(s.0.join("nodes")).unwrap().flatten().next().unwrap().path());
    let v: serde_json::Value = serde_json::from_str(&text.unwrap()).unwrap();
    v["head"].as_str().unwrap().to_string()
}

fn read_mark(mark: &Path) -> String {
    std::fs::read_to_string(mark).unwrap_or_default()
}

#[test]
fn tasks_objects_and_streams_cross_nodes() {
    let dir = std::env::temp_dir().join(format!("ferroray-multinode-test-{}", std::process::id()));
    let s = Session(dir.clone());
    // SAFETY (edition 2021: not unsafe yet): the only test of this binary.
    std::env::set_var("FERRORAY_SESSION_DIR", &dir);
    let store = (3u64 << 30).to_string();
    let out = s.ferroray(&[
        "start",
        "--head",
        "--port",
        "0",
        "--num-cpus",
        "1",
        "--heartbeat-ms",
        "200",
        "--node-timeout-ms",
        "4000",
        "--object-store-memory",
        &store,
    ]);
    let head_addr = out.split(" at ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let head = s.records()[0].0.clone();
    ferroray::init_with(Config::default().address("auto")).expect("connecting");
    assert_eq!(ferroray::node_id().unwrap(), head);

    // A task no node can run yet waits, and runs when a node that can joins.
    let early = where_am_i::options().resource("b", 1).remote();
    std::thread::sleep(Duration::from_millis(300));
    let b = s.node(&head_addr, r#"{"b": 1}"#, &[]);
    assert_eq!(early.get_timeout(Duration::from_secs(20)).unwrap(), b);

    // Placed by custom resources; plain tasks stay here.
    assert_eq!(where_am_i::remote().get().unwrap(), head);
    let on_b: Vec<_> = (0..20).map(|i| square::options().resource("b", 1).remote(i)).collect();
    let got: Vec<i64> = on_b.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, (0..20).map(|i| i * i).collect::<Vec<_>>());

    // Another program (a changed copy of this executable) runs on the same
    // nodes at once, in workers of its own: here from its file, on B from
    // the copy shipped by its hash; this program's workers are untouched.
    let (_, mine_there) = worker_exe::options().resource("b", 1).remote().get().unwrap();
    let other = dir.join("another-program");
    std::fs::copy(std::env::current_exe().unwrap(), &other).unwrap();
    {
        use std::io::Write;
        // Bytes after the ELF image change its hash, not what it runs.
        let mut f = std::fs::OpenOptions::new().append(true).open(&other).unwrap();
        f.write_all(b"another program").unwrap();
    }
    let mut child = Command::new(&other)
        .args(["--exact", "another_program", "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env("FERRORAY_SESSION_DIR", &dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the other program", Duration::from_secs(60), || child.try_wait().unwrap().is_some());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let line =
        text.lines().find_map(|l| Some(l.split_once("another program: ")?.1)).unwrap_or_else(|| panic!("{text}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f[0], f[1], f[2], f[4]), (head.as_str(), other.to_str().unwrap(), b.as_str(), "2470"), "{line}");
    assert!(f[3] != mine_there && f[3].contains("/exe/"), "its own executable on B: {line} (mine: {mine_there})");
    assert_eq!(worker_exe::options().resource("b", 1).remote().get().unwrap(), (b.clone(), mine_there));
    let (_, mine_here) = worker_exe::remote().get().unwrap();
    assert_eq!(mine_here, std::env::current_exe().unwrap().display().to_string());

    // A large argument goes to B's store, a large result comes back.
    let big = ferroray::put(Buffer::new(vec![1u8; 64 << 20])).unwrap();
    let sum = checksum::options().resource("b", 1).remote(&big).get().unwrap();
    assert_eq!(sum, (64 << 20, 64 << 20));
    let made = make::options().resource("b", 1).remote(48 << 20).get().unwrap();
    assert_eq!((made.len(), made[0], made[(48 << 20) - 1]), (48 << 20, 3, 3));

    // Tasks reading one object on B share one transfer: B keeps a copy
    // (one object of that size there) for the tasks after the first.
    let shared = ferroray::put(Buffer::new(vec![5u8; 32 << 20])).unwrap();
    let sums: Vec<_> = (0..6).map(|_| checksum::options().resource("b", 1).remote(&shared)).collect();
    for r in sums {
        assert_eq!(r.get().unwrap(), (32 << 20, 5 * (32 << 20)));
    }
    let listed = s.ferroray(&["list", "objects", "--filter", &format!("node_id={b}")]);
    let size = |l: &str| l.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let copies = listed.lines().skip(1).filter(|l| (32u64 << 20..(32 << 20) + 64).contains(&size(l))).count();
    assert_eq!(copies, 1, "{listed}");
    // So do tasks reading one object through refs in their arguments.
    let named = ferroray::put(Buffer::new(vec![1u8; 24 << 20])).unwrap();
    let sums: Vec<_> = (0..6)
        .map(|_| sum_deep::options().resource("b", 1).remote(vec![ferroray::put(vec![named.clone()]).unwrap()]))
        .collect();
    for r in sums {
        assert_eq!(r.get().unwrap(), 24 << 20);
    }
    let listed = s.ferroray(&["list", "objects", "--filter", &format!("node_id={b}")]);
    let copies = listed.lines().skip(1).filter(|l| (24u64 << 20..(24 << 20) + 64).contains(&size(l))).count();
    assert_eq!(copies, 1, "{listed}");
    assert!(listed.contains(&named.id().to_string()), "kept under its own id: {listed}");

    // 1 GiB to B and its checksum back; the bytes leave this node's store
    // once the ref is dropped.
    let huge = ferroray::put(Buffer::new(vec![2u8; 1 << 30])).unwrap();
    let started = Instant::now();
    let sum = checksum::options().resource("b", 1).remote(&huge).get().unwrap();
    assert_eq!(sum, (1 << 30, 2 << 30));
    eprintln!("1 GiB to another node and summed there: {:?}", started.elapsed());
    drop(huge);

    // Refs inside arguments: the objects they name (nested at any depth, a
    // result not made yet, large or small, failed) are read on B.
    let slow = sleepy::remote(300);
    let pending = square::remote(4);
    drop(slow);
    let (at, total) = sum_nested::options()
        .resource("b", 1)
        .remote(vec![ferroray::put(1i64).unwrap(), ferroray::put(2i64).unwrap(), pending])
        .get_timeout(Duration::from_secs(20))
        .unwrap();
    assert_eq!((at, total), (b.clone(), 19));
    let buffers: Vec<ObjectRef<Buffer>> =
        (0..3).map(|i| ferroray::put(Buffer::new(vec![i as u8; 16 << 20])).unwrap()).collect();
    let outer = vec![ferroray::put(buffers.clone()).unwrap(), ferroray::put(vec![buffers[2].clone()]).unwrap()];
    let deep = sum_deep::options().resource("b", 1).remote(outer).get_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(deep, (16 << 20) * (1 + 2 + 2));
    let flags = readable::options()
        .resource("b", 1)
        .remote(vec![fails::remote(), ferroray::put(5i64).unwrap()])
        .get_timeout(Duration::from_secs(20))
        .unwrap();
    assert_eq!(flags, vec![false, true]);
    // Refs inside a result: what B put comes here with it, and goes back
    // to B as an argument.
    let (made, wrapped) =
        put_there::options().resource("b", 1).remote(3, 8 << 20).get_timeout(Duration::from_secs(30)).unwrap();
    let firsts: Vec<u8> = made.iter().map(|r| r.get().unwrap()[0]).collect();
    assert_eq!(firsts, vec![1, 2, 3]);
    assert_eq!(wrapped.get().unwrap()[0].get().unwrap().len(), 8 << 20);
    // (Shared-memory objects sent there as refs stay in B's cache of
    // copies, as arguments do; the rest must go once read.)
    let mut ids: Vec<String> = Vec::new();
    // Refs inside a generator's items come with their objects too.
    let mut firsts = Vec::new();
    for item in put_items::options().resource("b", 1).remote(5, 4 << 20) {
        let refs = item.get_timeout(Duration::from_secs(20)).unwrap();
        let (a, b2) = (refs[0].get().unwrap(), refs[1].get().unwrap());
        assert_eq!((a.len(), a[0], b2.len()), (4 << 20, 9, 4 << 20));
        firsts.push(b2[0]);
        ids.extend(refs.iter().map(|r| r.id().to_string()));
    }
    assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
    let back = sum_deep::options().resource("b", 1).remote(vec![ferroray::put(made).unwrap()]).get().unwrap();
    assert_eq!(back, (8 << 20) * (1 + 2 + 3));
    // Many at once, every fourth cancelled as it is sent (while its refs
    // are gathered, on its way, or running): each ends once, with its sum
    // or as cancelled.
    let small = ferroray::put(7i64).unwrap();
    ids.push(small.id().to_string());
    let runs: Vec<_> = (0..40i64)
        .map(|i| {
            let r = sum_nested::options().resource("b", 1).remote(vec![small.clone(), square::remote(i)]);
            if i % 4 == 0 {
                ferroray::cancel(&r).unwrap();
            }
            (i, r)
        })
        .collect();
    for (i, r) in runs {
        match r.get_timeout(Duration::from_secs(30)) {
            Ok((at, total)) => assert_eq!((at, total), (b.clone(), 7 + i * i)),
            Err(e) => assert!(i % 4 == 0 && matches!(e, ferroray::Error::TaskCancelled), "{i}: {e}"),
        }
    }
    // B keeps no copy of what crossed once the tasks that read it ended
    // (small objects named in arguments, and what B made and sent here),
    // but for its bounded cache of shared-memory ones.
    let here = s.ferroray(&["list", "objects", "--filter", &format!("node_id={head}")]);
    assert!(here.contains(&small.id().to_string()), "listed by id: {here}");
    wait_for("B to let its copies go", Duration::from_secs(10), || {
        let listed = s.ferroray(&["list", "objects", "--filter", &format!("node_id={b}")]);
        ids.iter().all(|id| !listed.contains(id.as_str()))
    });

    // A peer link opened with a wrong token is refused (and logged there).
    assert_eq!(peer_hello(&s, &b, ClusterToken::random().unwrap()), "wrong cluster token");
    // (The node logs it after it answers.)
    let log = dir.join("logs").join(format!("{}.log", s.pid_of(&b)));
    wait_for("the refusal in the node's log", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("wrong cluster token")
    });

    // A generator on B streams back in order, under backpressure, with
    // large items too.
    let mark = dir.join("mark");
    let items: Vec<u64> = slow_count::options()
        .resource("b", 1)
        .generator_backpressure(std::num::NonZeroU32::new(2).unwrap())
        .remote(10, mark.to_string_lossy().into_owned())
        .map(|r| r.get().unwrap())
        .collect();
    assert_eq!(items, (0..10).collect::<Vec<_>>());
    assert_eq!(read_mark(&mark), b);
    let sizes: Vec<(usize, u8)> = chunks::options()
        .resource("b", 1)
        .remote(4, 8 << 20)
        .map(|r| {
            let b = r.get().unwrap();
            (b.len(), b[0])
        })
        .collect();
    assert_eq!(sizes, vec![(8 << 20, 0), (8 << 20, 1), (8 << 20, 2), (8 << 20, 3)]);

    // Spillback: with this node's one CPU taken, CPU tasks go to B too.
    let runs: Vec<_> = (0..4).map(|_| sleepy::remote(400)).collect();
    let ran: Vec<String> = runs.into_iter().map(|r| r.get().unwrap()).collect();
    assert!(ran.contains(&head) && ran.contains(&b), "{ran:?}");

    // An actor's handle passed to a task on B: its calls come back to the
    // actor here, in order, and its state is the one actor's.
    let local = Where::options().num_cpus(0).remote().unwrap();
    assert_eq!(local.node().remote().get().unwrap(), (head.clone(), 1));
    let (at, n, ran) = call_where::options().resource("b", 1).remote(local.clone()).get().unwrap();
    assert_eq!((at.as_str(), n, ran.as_str()), (head.as_str(), 3, b.as_str()));
    assert_eq!(local.node().remote().get().unwrap(), (head.clone(), 4));
    ferroray::kill(&local).unwrap();

    // A handle kept on B keeps the actor alive after this node's are gone
    // (as Ray's borrowers do); once B lets it go, the actor ends.
    let lent = Where::options().num_cpus(0).remote().unwrap();
    let lent_id = lent.id().unwrap().to_string();
    let keeper = Keeper::options().resource("b", 0.1).remote().unwrap();
    assert!(keeper.keep().remote(lent.clone()).get().unwrap());
    drop(lent);
    std::thread::sleep(Duration::from_millis(500));
    kept_until_let_go(&s, &keeper, &lent_id, &head);

    // Calls from B and from here racing a kill: each answers or fails with
    // the actor's death, none hangs, and once it is dead every call fails.
    for round in 0..3 {
        let target = Where::options().num_cpus(0).remote().unwrap();
        target.node().remote().get().unwrap();
        let far: Vec<_> = (0..2).map(|_| hammer::options().resource("b", 0.1).remote(target.clone(), 40)).collect();
        let near = hammer::options().num_cpus(0).remote(target.clone(), 40);
        std::thread::sleep(Duration::from_millis(20 + 30 * round));
        ferroray::kill(&target).unwrap();
        for r in far.into_iter().chain([near]) {
            let (ok, errors) = r.get_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(ok as usize + errors.len(), 40);
            assert!(errors.iter().all(|e| e.contains("is dead")), "{errors:?}");
        }
        assert!(target.node().remote().get_timeout(Duration::from_secs(10)).is_err());
    }

    // Creations of one name racing on two nodes, several rounds: exactly
    // one actor gets it each time, and the others are told it exists.
    for round in 0..5 {
        let name = format!("race-{round}");
        let at = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap()
            + Duration::from_millis(300))
        .as_millis() as u64;
        let tries: Vec<_> = (0..4)
            .map(|i| match i % 2 {
                0 => make_named::options().num_cpus(0).remote(name.clone(), at),
                _ => make_named::options().num_cpus(0).resource("b", 0.1).remote(name.clone(), at),
            })
            .collect();
        let got: Vec<(bool, String)> =
            tries.into_iter().map(|r| r.get_timeout(Duration::from_secs(20)).unwrap()).collect();
        assert_eq!(got.iter().filter(|(made, _)| *made).count(), 1, "{got:?}");
        assert!(got.iter().any(|(_, at)| *at == b) && got.iter().any(|(_, at)| *at == head), "{got:?}");
        let winner = ferroray::get_actor::<Where>(&name).unwrap();
        ferroray::kill(&winner).unwrap();
    }

    // A node killed mid-stream: the generator runs again on C and the
    // stream completes with each item once. C keeps TLS on its links
    // between loopback addresses, which B (like the others) does not.
    let c = s.node(&head_addr, r#"{"b": 1}"#, &["--tls-on-loopback"]);
    let log_of = |pid: u32| std::fs::read_to_string(dir.join("logs").join(format!("{pid}.log"))).unwrap();
    let (b_pid, c_pid) = (s.pid_of(&b), s.pid_of(&c));
    wait_for("C in the view", Duration::from_secs(10), || ferroray::cluster_resources().unwrap()["b"] == 2.0);
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::remove_file(&mark);
    let mut stream = slow_count::options()
        .resource("b", 1)
        .generator_backpressure(std::num::NonZeroU32::new(2).unwrap())
        .remote(40, mark.to_string_lossy().into_owned());
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(stream.next().unwrap().get().unwrap());
    }
    let first = read_mark(&mark);
    assert!(first == b || first == c, "ran on {first}");
    let victim = s.pid_of(&first);
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    for r in stream {
        seen.push(r.get_timeout(Duration::from_secs(30)).unwrap());
    }
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    let second = read_mark(&mark);
    assert!(second != first && (second == b || second == c), "ran again on {second}");
    // The head's node linked to both: plainly to B, with TLS to C.
    let (b_log, c_log) = (log_of(b_pid), log_of(c_pid));
    assert!(b_log.contains(&format!("node {head} sends this node tasks (plain TCP")), "{b_log}");
    assert!(c_log.contains(&format!("node {head} sends this node tasks (TLS)")), "{c_log}");

    // The node that made objects, SIGKILLed: nothing this program refers
    // to lived only there (results and what they name came here with them),
    // so nothing needs making again.
    let e = s.node(&head_addr, r#"{"e": 1}"#, &[]);
    wait_for("E in the view", Duration::from_secs(10), || {
        ferroray::cluster_resources().unwrap().get("e") == Some(&1.0)
    });
    // A borrower's borrower: a task on a node of resource b (B's survivor
    // above) hands this node's actor's handle on to a keeper it makes on E,
    // and ends; this node drops its own. That node's link to E holds its
    // proxy while E's lives, and that proxy keeps this node's link there
    // holding the actor: it answers the keeper's call, and ends once the
    // keeper lets go.
    let passed = Where::options().num_cpus(0).remote().unwrap();
    let passed_id = passed.id().unwrap().to_string();
    let made_on = keep_on_e::options().resource("b", 1).remote("far-keeper".to_string(), passed.clone());
    let on = made_on.get().unwrap();
    assert!(on != head && on != e, "ran on {on}: a node of resource b");
    drop(passed);
    std::thread::sleep(Duration::from_millis(800));
    let keeper = ferroray::get_actor::<Keeper>("far-keeper").unwrap();
    kept_until_let_go(&s, &keeper, &passed_id, &head);

    let (made_on_e, _) = put_there::options().resource("e", 1).remote(2, 4 << 20).get().unwrap();
    unsafe { libc::kill(s.pid_of(&e) as i32, libc::SIGKILL) };
    wait_for("E declared dead", Duration::from_secs(20), || {
        ferroray::nodes().unwrap().iter().any(|n| n.node_id == e && !n.alive)
    });
    let firsts: Vec<u8> = made_on_e.iter().map(|r| r.get_timeout(Duration::from_secs(5)).unwrap()[0]).collect();
    assert_eq!(firsts, vec![1, 2]);

    // Large results stay on the node that made them (listed here as on a
    // peer) until read. That node SIGKILLed first: the one whose task may
    // run again is made again once a node that can run it joins (its
    // readers wait); the other is lost, naming the node.
    let f = s.node(&head_addr, r#"{"f": 1}"#, &[]);
    wait_for("F in the view", Duration::from_secs(10), || {
        ferroray::cluster_resources().unwrap().get("f") == Some(&1.0)
    });
    let runs = dir.join("made-where");
    let runs_arg = runs.to_string_lossy().into_owned();
    let again = made_where::options().resource("f", 1).max_retries(1).remote(8 << 20, runs_arg.clone());
    let lost = made_where::options().resource("f", 1).max_retries(0).remote(8 << 20, runs_arg.clone());
    let on_peer = || {
        let listed = s.ferroray(&["list", "objects", "--filter", &format!("node_id={head}")]);
        listed.lines().filter(|l| l.split_whitespace().nth(1) == Some("ON_PEER")).count()
    };
    wait_for("both results left on F", Duration::from_secs(20), || on_peer() == 2);
    assert_eq!(read_mark(&runs).lines().collect::<Vec<_>>(), vec![f.as_str(), f.as_str()]);
    // A task reading one runs where it is, which has room: nothing moves.
    let (n, ran) = length_where::remote(&again).get().unwrap();
    assert_eq!((n, ran.as_str()), (8 << 20, f.as_str()));
    assert_eq!(on_peer(), 2);
    // A generator's large items stay there too.
    let items: Vec<ObjectRef<Buffer>> = chunks::options().resource("f", 1).max_retries(1).remote(3, 2 << 20).collect();
    assert_eq!(items.len(), 3);
    wait_for("the items left on F", Duration::from_secs(20), || on_peer() == 5);
    unsafe { libc::kill(s.pid_of(&f) as i32, libc::SIGKILL) };
    match lost.get_timeout(Duration::from_secs(20)) {
        Err(ferroray::Error::ObjectLost(m)) => assert!(m.contains(&f) && m.contains("no retries left"), "{m}"),
        other => panic!("{:?}", other.map(|(b, at)| (b.len(), at))),
    }
    let f2 = s.node(&head_addr, r#"{"f": 1}"#, &[]);
    let (bytes, at) = again.get_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((bytes.len(), bytes[0], bytes[(8 << 20) - 1], at.as_str()), (8 << 20, 7, 7, f2.as_str()));
    assert_eq!(read_mark(&runs).lines().collect::<Vec<_>>(), vec![f.as_str(), f.as_str(), f2.as_str()]);
    // The generator ran again on F2, replayed against what it yielded.
    for (i, r) in items.iter().enumerate() {
        let b = r.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!((b.len(), b[0], b[(2 << 20) - 1]), (2 << 20, i as u8, i as u8));
    }
    assert_eq!(on_peer(), 0, "read here: nothing is left on a peer");
    // A generator's attempt dies after two large items, and its retry runs
    // on the same node (the only one of resource f): the items the first
    // attempt left there stay the ones kept, and every item reads back.
    let crash_mark = dir.join("crash-once").to_string_lossy().into_owned();
    let items: Vec<ObjectRef<Buffer>> =
        chunks_crash_once::options().resource("f", 1).max_retries(1).remote(4, 2 << 20, crash_mark).collect();
    assert_eq!(items.len(), 4);
    for (i, r) in items.iter().enumerate() {
        let b = r.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!((b.len(), b[0], b[(2 << 20) - 1]), (2 << 20, i as u8, i as u8));
    }
    drop(items);
    wait_for("nothing left on F2", Duration::from_secs(10), || on_peer() == 0);

    // A result left on F2 read by a task only the other node of resource
    // b can run: that node reads it from F2 itself (here it stays on a
    // peer, never pulled here), and it reads back here after.
    let big = made_where::options().resource("f", 1).remote(8 << 20, runs_arg.clone());
    // Waited for without fetching: ready once made, and it stays there.
    let (ready, _) = ferroray::wait_made(std::slice::from_ref(&big), 1, Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(on_peer(), 1);
    let (n, ran) = length_where::options().resource("b", 1).remote(&big).get_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((n, ran.as_str()), (8 << 20, second.as_str()));
    assert_eq!(on_peer(), 1, "read there from F2: nothing came here");
    let (bytes, at) = big.get_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((bytes.len(), bytes[(8 << 20) - 1], at.as_str()), (8 << 20, 7, f2.as_str()));
    assert_eq!(on_peer(), 0);
    let f2_log = std::fs::read_to_string(dir.join("logs").join(format!("{}.log", s.pid_of(&f2)))).unwrap();
    assert!(f2_log.contains(&format!("node {second} sends this node tasks")), "{f2_log}");
    // The node keeping a result SIGKILLed as a task on a third node comes
    // to read it: the result is made again on a node that joins, and the
    // task reads it from there (whether its first read failed there, or
    // it waited for the result here).
    let k = s.node(&head_addr, r#"{"k": 1}"#, &[]);
    wait_for("K in the view", Duration::from_secs(10), || {
        ferroray::cluster_resources().unwrap().get("k") == Some(&1.0)
    });
    let kept = made_where::options().resource("k", 1).max_retries(2).remote(8 << 20, runs_arg.clone());
    let (ready, _) = ferroray::wait_made(std::slice::from_ref(&kept), 1, Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ready.len(), 1);
    unsafe { libc::kill(s.pid_of(&k) as i32, libc::SIGKILL) };
    let reader = length_where::options().resource("b", 1).remote(&kept);
    let k2 = s.node(&head_addr, r#"{"k": 1}"#, &[]);
    let (n, ran) = reader.get_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!((n, ran.as_str()), (8 << 20, second.as_str()));
    let (bytes, at) = kept.get_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((bytes.len(), at.as_str()), (8 << 20, k2.as_str()));

    // An actor on another node: its calls go there; that node killed, it
    // restarts on a node that has room for it (its state fresh), and a
    // call sent meanwhile runs there on its retry.
    let d = s.node(&head_addr, r#"{"b": 1}"#, &[]);
    wait_for("D in the view", Duration::from_secs(10), || ferroray::cluster_resources().unwrap()["b"] == 2.0);
    std::thread::sleep(Duration::from_millis(500));
    let w = Where::options().resource("b", 1).max_restarts(1).max_task_retries(1).remote().unwrap();
    let (at, n) = w.node().remote().get().unwrap();
    assert!((at == second || at == d) && n == 1, "{at} {n}");
    assert_eq!(w.node().remote().get().unwrap(), (at.clone(), 2));
    unsafe { libc::kill(s.pid_of(&at) as i32, libc::SIGKILL) };
    let (again, n) = w.node().remote().get_timeout(Duration::from_secs(30)).unwrap();
    assert!(again != at && (again == second || again == d) && n == 1, "{again} {n} (was on {at})");
    ferroray::kill(&w).unwrap();
    assert!(w.node().remote().get_timeout(Duration::from_secs(10)).is_err());

    // This program is a job of the cluster's, running, with its command line.
    let jobs = s.ferroray(&["list", "jobs", "--filter", "state=RUNNING"]);
    let me = std::process::id().to_string();
    let row = jobs.lines().skip(1).find(|l| l.split_whitespace().nth(3) == Some(me.as_str()));
    assert!(row.is_some_and(|r| r.contains("multinode") && r.contains(&head)), "{jobs}");
    let status = s.ferroray(&["status"]);
    assert!(status.contains("Jobs: 1 running"), "{status}");

    ferroray::shutdown();
    // Gone with it: finished.
    wait_for("the job finished", Duration::from_secs(10), || {
        let jobs = s.ferroray(&["list", "jobs", "--filter", "state=FINISHED"]);
        jobs.lines().skip(1).any(|l| l.split_whitespace().nth(3) == Some(me.as_str()))
    });
    drop(s);
    assert!(!dir.exists());
}
