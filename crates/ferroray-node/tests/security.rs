//! Who gets into a node, tried as an intruder on the same machine would:
//! another user, a process with no token, a process posing as a worker,
//! messages claiming huge counts, floods of idle connections. Each refusal
//! leaves the node serving the others.

use ferroray_common::{resources, ClusterToken, Error, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId};
use ferroray_node::{server, Node, NodeConfig, WorkerCommand};
use ferroray_protocol::{
    frame, limits, FromNode, FunctionDescriptor, ObjectValue, ReturnKind, Role, TaskSpec, ToNode, PROTOCOL_VERSION,
};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Under plain `cargo test` the tests share a process (and its stderr and
/// memory figures): one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // The node reports through `tracing`; these tests read its reports on
    // stderr (the facade installs the same kind of subscriber).
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn node_with(tune: impl FnOnce(&mut NodeConfig)) -> Node {
    // Workers the node starts never connect: these tests need none.
    let command = WorkerCommand { program: "/bin/sh".into(), args: vec!["-c".into(), "sleep 60".into()], env: vec![] };
    let mut config = NodeConfig::new(command);
    config.resources = ResourceSet::new().with(resources::CPU, 1.0);
    config.store_capacity = 1 << 20;
    config.log_to_driver = false;
    tune(&mut config);
    Node::start(config).expect("node starts")
}

fn hello(role: Role, worker_id: WorkerId, token: ClusterToken) -> ToNode {
    ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id, pid: 1, role, token }
}

fn connect(node: &Node) -> UnixStream {
    let s = server::connect_abstract(node.socket_name()).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s
}

/// The first message the node sends, or `None` if it closed the connection.
fn reply(s: &mut UnixStream) -> Option<FromNode> {
    frame::read_frame::<_, FromNode>(s).ok().flatten()
}

/// A socket client that said hello as a driver with the right token.
fn driver(node: &Node, id: u64) -> UnixStream {
    let mut s = connect(node);
    frame::write_frame(&mut s, hello(Role::Driver, WorkerId(id), node.token().clone())).unwrap();
    match reply(&mut s) {
        Some(FromNode::Welcome(_)) => s,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// The node answers a new driver and lists tasks for it.
fn still_serving(node: &Node) {
    let mut s = driver(node, WorkerId::random().0);
    frame::write_frame(&mut s, ToNode::ListTasks { req: 7 }).unwrap();
    assert!(matches!(reply(&mut s), Some(FromNode::Tasks { req: 7, .. })), "the node lists tasks");
}

fn rejection(s: &mut UnixStream) -> Error {
    match reply(s) {
        Some(FromNode::Rejected(e)) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn spec(submitter: WorkerId, seq: u64) -> TaskSpec {
    TaskSpec {
        task_id: TaskId { submitter, seq },
        function: FunctionDescriptor::Rust { name: "never::runs".into() },
        args: vec![],
        contained: vec![],
        returns: ReturnKind::Fixed(1),
        resources: ResourceSet::new().with(resources::CPU, 1.0),
        max_retries: 0,
        retry_exceptions: RetryExceptions::None,
        parent: None,
        enable_events: false,
        attempt: 0,
        actor: None,
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_wrong_token_or_a_process_posing_as_a_worker_is_refused() {
    let _serial = serial();
    let node = node_with(|_| {});
    // No token, as a driver.
    let mut s = connect(&node);
    frame::write_frame(&mut s, hello(Role::Driver, WorkerId(5), ClusterToken::zero())).unwrap();
    assert!(matches!(rejection(&mut s), Error::PermissionDenied(m) if m.contains("token")));
    // The right token, posing as a worker: this process is not one the node started.
    let mut s = connect(&node);
    frame::write_frame(&mut s, hello(Role::Worker, WorkerId(6), node.token().clone())).unwrap();
    assert!(matches!(rejection(&mut s), Error::PermissionDenied(m) if m.contains("not a worker this node started")));
    // A driver may not take a worker id in use.
    let _first = driver(&node, 77);
    let mut s = connect(&node);
    frame::write_frame(&mut s, hello(Role::Driver, WorkerId(77), node.token().clone())).unwrap();
    assert!(matches!(rejection(&mut s), Error::PermissionDenied(m) if m.contains("in use")));
    // Before the hello, a frame over the hello's size limit is refused unread.
    let mut s = connect(&node);
    s.write_all(&(limits::MAX_HELLO_FRAME + 1).to_le_bytes()).unwrap();
    assert!(matches!(rejection(&mut s), Error::Protocol(m) if m.contains("exceeds")));
    still_serving(&node);
    node.shutdown();
}

#[test]
fn a_connection_from_another_user_is_closed_before_any_message() {
    let _serial = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: switching to another user needs root");
        return;
    }
    let node = node_with(|_| {});
    // Everything the child needs is made before fork: after it, only
    // async-signal-safe calls (socket, connect, write, read, _exit).
    let mut hello_frame = Vec::new();
    frame::encode_into(&mut hello_frame, hello(Role::Driver, WorkerId(9), node.token().clone())).unwrap();
    let name = node.socket_name().as_bytes().to_vec();
    // SAFETY: a zeroed sockaddr_un is valid; the name fits (checked).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    assert!(name.len() < addr.sun_path.len());
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in name.iter().enumerate() {
        addr.sun_path[i + 1] = *b as libc::c_char;
    }
    let addr_len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
    // SAFETY: the child makes only async-signal-safe calls and leaves by _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: plain syscalls on memory prepared before the fork.
        unsafe {
            const NOBODY: libc::uid_t = 65534;
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let timeout = libc::timeval { tv_sec: 10, tv_usec: 0 };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), addr_len) != 0 {
                libc::_exit(3);
            }
            libc::write(fd, hello_frame.as_ptr().cast(), hello_frame.len());
            let mut buf = [0u8; 64];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            // 0: closed without a word; -1 with ECONNRESET: the same.
            libc::_exit(if n > 0 { 1 } else { 0 });
        }
    }
    let deadline = Instant::now() + T;
    let status = loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break status;
        }
        assert!(Instant::now() < deadline, "the other user's connection was left waiting");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(libc::WIFEXITED(status), "child status {status}");
    match libc::WEXITSTATUS(status) {
        0 => {}
        1 => panic!("the node answered a connection from another user"),
        2 => panic!("the test could not switch to the nobody user"),
        code => panic!("the other user could not even connect (exit {code})"),
    }
    still_serving(&node);
    node.shutdown();
}

#[test]
fn oversized_counts_are_refused_before_the_lock_and_the_node_serves_on() {
    let _serial = serial();
    let node = node_with(|_| {});
    let before = resident_bytes();
    let me = WorkerId(41);
    // Ten million return objects claimed in a tiny frame.
    let mut s = driver(&node, me.0);
    let mut huge = spec(me, 1);
    huge.returns = ReturnKind::Fixed(10_000_000);
    let start = Instant::now();
    frame::write_frame(&mut s, ToNode::Submit(Box::new(huge))).unwrap();
    assert!(matches!(rejection(&mut s), Error::Protocol(m) if m.contains("return objects")));
    assert!(start.elapsed() < Duration::from_secs(2), "refused at once, not after allocating");
    assert!(resident_bytes() < before + (64 << 20), "no memory taken for the claimed objects");
    // A negative resource request (it would add to what the node offers).
    let mut s = driver(&node, me.0 + 1);
    let mut negative = spec(WorkerId(me.0 + 1), 1);
    negative.resources = ResourceSet::new().with(resources::CPU, -100.0);
    frame::write_frame(&mut s, ToNode::Submit(Box::new(negative))).unwrap();
    assert!(matches!(rejection(&mut s), Error::Protocol(m) if m.contains("CPU")));
    // Too many ids in one message.
    let mut s = driver(&node, me.0 + 2);
    let id = ObjectId { task: TaskId { submitter: me, seq: 1 }, index: 0 };
    frame::write_frame(&mut s, ToNode::Subscribe(vec![id; limits::MAX_IDS + 1])).unwrap();
    assert!(matches!(rejection(&mut s), Error::Protocol(m) if m.contains("Subscribe")));
    still_serving(&node);
    node.shutdown();
}

#[test]
fn ids_must_be_the_senders_own_and_new() {
    let _serial = serial();
    let node = node_with(|_| {});
    let (me, other) = (WorkerId(51), WorkerId(52));
    // A task id naming another submitter.
    let mut s = driver(&node, me.0);
    frame::write_frame(&mut s, ToNode::Submit(Box::new(spec(other, 1)))).unwrap();
    assert!(matches!(rejection(&mut s), Error::PermissionDenied(m) if m.contains("another process")));
    // The same task id twice.
    let mut s = driver(&node, me.0);
    frame::write_frame(&mut s, ToNode::Submit(Box::new(spec(me, 1)))).unwrap();
    frame::write_frame(&mut s, ToNode::Submit(Box::new(spec(me, 1)))).unwrap();
    assert!(matches!(rejection(&mut s), Error::Protocol(m) if m.contains("already submitted")));
    // Reading an object nobody gave this connection.
    let mut owner = driver(&node, 60);
    let mine = ObjectId { task: TaskId { submitter: WorkerId(60), seq: 1 }, index: 0 };
    let value = ObjectValue::Data {
        payload: ferroray_protocol::Payload::Inline(vec![1, 2, 3]),
        encoding: ferroray_protocol::Encoding::Rust,
        contained: vec![],
    };
    frame::write_frame(&mut owner, ToNode::Put { id: mine, value }).unwrap();
    let mut snoop = driver(&node, 61);
    frame::write_frame(&mut snoop, ToNode::AddRef(vec![mine])).unwrap();
    frame::write_frame(&mut snoop, ToNode::Subscribe(vec![mine])).unwrap();
    match reply(&mut snoop) {
        Some(FromNode::ObjectReady { id, value: ObjectValue::Error(Error::PermissionDenied(_)) }) if id == mine => {}
        other => panic!("expected permission denied, got {other:?}"),
    }
    // The owner reads it.
    frame::write_frame(&mut owner, ToNode::Subscribe(vec![mine])).unwrap();
    assert!(matches!(reply(&mut owner), Some(FromNode::ObjectReady { value: ObjectValue::Data { .. }, .. })));
    // Importing (a copy under another's id, for the node's peer links) is
    // not for the socket: the connection is refused, the object unchanged.
    let mut forger = driver(&node, 62);
    let forged = ObjectValue::Data {
        payload: ferroray_protocol::Payload::Inline(vec![6, 6, 6]),
        encoding: ferroray_protocol::Encoding::Rust,
        contained: vec![],
    };
    frame::write_frame(&mut forger, ToNode::Import { id: mine, value: forged }).unwrap();
    assert!(matches!(rejection(&mut forger), Error::Protocol(m) if m.contains("imported by a node's own links")));
    frame::write_frame(&mut owner, ToNode::Subscribe(vec![mine])).unwrap();
    match reply(&mut owner) {
        Some(FromNode::ObjectReady { value: ObjectValue::Data { payload, .. }, .. }) => {
            assert_eq!(payload, ferroray_protocol::Payload::Inline(vec![1, 2, 3]))
        }
        other => panic!("expected the owner's value, got {other:?}"),
    }
    still_serving(&node);
    node.shutdown();
}

/// Raises this process's open-file limit to its hard limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

#[test]
fn a_connection_flood_leaves_the_node_serving_and_gives_its_memory_back() {
    let _serial = serial();
    let fds = raise_fd_limit();
    let node = node_with(|c| {
        c.max_connections = 64;
        c.handshake_timeout = Duration::from_millis(300);
    });
    still_serving(&node);
    let before = resident_bytes();
    // Idle connections past the cap: the cap holds, the rest are closed.
    let flood = 1000.min(fds.saturating_sub(200) as usize);
    let mut idle = Vec::new();
    for _ in 0..flood {
        match server::connect_abstract(node.socket_name()) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    // Every one of them is closed: over the cap at once, the rest at the
    // handshake deadline.
    let deadline = Instant::now() + T;
    for mut s in idle {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let mut b = [0u8; 1];
        let n = std::io::Read::read(&mut s, &mut b);
        assert!(matches!(n, Ok(0) | Err(_)), "an idle connection was kept");
    }
    still_serving(&node);
    // A burst of accepted connections, each with its read buffer and a
    // 256 KiB value the node keeps for it, then gone.
    let mut burst = Vec::new();
    for i in 0..60u64 {
        let mut s = driver(&node, 1000 + i);
        let id = ObjectId { task: TaskId { submitter: WorkerId(1000 + i), seq: 1 }, index: 0 };
        let value = ObjectValue::Data {
            payload: ferroray_protocol::Payload::Inline(vec![7; 256 << 10]),
            encoding: ferroray_protocol::Encoding::Rust,
            contained: vec![],
        };
        frame::write_frame(&mut s, ToNode::Put { id, value }).unwrap();
        frame::write_frame(&mut s, ToNode::Subscribe(vec![id])).unwrap();
        assert!(matches!(reply(&mut s), Some(FromNode::ObjectReady { .. })));
        burst.push(s);
    }
    let peak = resident_bytes();
    drop(burst);
    // The memory comes back (the node trims after a burst, once a second).
    let back = common_eventually(Duration::from_secs(10), || resident_bytes() < before + (16 << 20));
    println!(
        "flood of {flood}: resident {} MB before, {} MB at the burst's peak, {} MB after",
        before >> 20,
        peak >> 20,
        resident_bytes() >> 20
    );
    assert!(back, "resident memory {} MB after the flood, {} MB before", resident_bytes() >> 20, before >> 20);
    still_serving(&node);
    node.shutdown();
}

fn common_eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs `f` with this process's stderr going to a memory file; returns
/// what was written. Stderr comes back even if `f` panics (and what was
/// captured is printed then).
fn capture_stderr(f: impl FnOnce()) -> String {
    struct Restore {
        saved: i32,
        mem: i32,
    }
    impl Restore {
        fn read(&self) -> String {
            let mut out = String::new();
            // SAFETY: `mem` is a memfd this guard owns; the File borrows it
            // (ManuallyDrop: the guard closes it).
            let mut file = std::mem::ManuallyDrop::new(unsafe {
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(self.mem)
            });
            std::io::Seek::seek(&mut *file, std::io::SeekFrom::Start(0)).unwrap();
            std::io::Read::read_to_string(&mut *file, &mut out).unwrap();
            out
        }
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: plain syscalls on descriptors this guard owns.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
            if std::thread::panicking() {
                eprintln!("captured stderr:\n{}", self.read());
            }
            // SAFETY: as above.
            unsafe { libc::close(self.mem) };
        }
    }
    // SAFETY: plain syscalls; the guard restores fd 2.
    let guard = unsafe {
        let mem = libc::memfd_create(c"stderr".as_ptr(), 0);
        assert!(mem >= 0);
        let saved = libc::dup(2);
        libc::dup2(mem, 2);
        Restore { saved, mem }
    };
    f();
    let out = guard.read();
    drop(guard);
    out
}

#[test]
fn a_refused_peer_is_logged_once_not_per_attempt() {
    let _serial = serial();
    let node = node_with(|c| c.handshake_timeout = Duration::from_millis(100));
    let log = capture_stderr(|| {
        // Ten connections that never say hello, ten with a wrong token.
        let silent: Vec<UnixStream> = (0..10).map(|_| connect(&node)).collect();
        for mut s in silent {
            assert!(reply(&mut s).is_none(), "closed without a word");
        }
        for _ in 0..10 {
            let mut s = connect(&node);
            frame::write_frame(&mut s, hello(Role::Driver, WorkerId(5), ClusterToken::zero())).unwrap();
            assert!(matches!(rejection(&mut s), Error::PermissionDenied(_)));
        }
        still_serving(&node);
    });
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused a connection")).collect();
    assert_eq!(refusals.len(), 2, "one line per peer and reason: {refusals:?}");
    node.shutdown();
}

/// CPU time (user + system) this process has used (no file needed: the
/// test measures it while out of descriptors).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off_instead_of_spinning() {
    let _serial = serial();
    let node = node_with(|c| c.max_connections = 100_000);
    still_serving(&node);
    // SAFETY: getrlimit/setrlimit with a valid struct; restored below.
    let saved = unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim
    };
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let log = capture_stderr(|| {
        // SAFETY: as above.
        unsafe {
            let low = libc::rlimit { rlim_cur: open_now + 40, rlim_max: saved.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &low);
        }
        // Client sockets take descriptors until none is left for the
        // node's accept (each accepted connection needs one more there).
        let mut held = Vec::new();
        while let Ok(s) = server::connect_abstract(node.socket_name()) {
            held.push(s);
            if held.len() > 1000 {
                break;
            }
        }
        // The node cannot accept the pending ones: it must wait, not spin.
        let before = cpu_time();
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu_time() - before;
        assert!(used < Duration::from_millis(300), "the process used {used:?} of CPU in 1 s while out of descriptors");
        drop(held);
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
    });
    let accept_lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(accept_lines <= 2, "{accept_lines} accept errors logged: {log}");
    // With descriptors back, the node serves again (once its back-off ends).
    let deadline = Instant::now() + T;
    loop {
        let mut s = connect(&node);
        frame::write_frame(&mut s, hello(Role::Driver, WorkerId::random(), node.token().clone())).unwrap();
        if matches!(reply(&mut s), Some(FromNode::Welcome(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "the node never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.shutdown();
}
