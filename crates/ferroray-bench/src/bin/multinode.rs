//! Work across nodes on one machine: a head daemon and a second node
//! daemon, a driver connected to the head, and tasks, values and generator
//! items moved over the nodes' peer link; and a third node daemon reading a
//! value the second made.
//!
//! It starts the head (1 CPU, no custom resource), a node (resource `b`, as
//! many CPUs as the machine has, a 3 GiB store) and a third (resource `c`,
//! 1 CPU, a 3 GiB store) with the `ferroray`
//! binary built beside this one, in a session directory of its own, connects
//! to the head as a driver and measures, each row repeated (the median is
//! reported), each trial after a second's pause so that what the row
//! before left behind (1 GiB freed) is not timed in it:
//!
//! - tasks across nodes: `--tasks` trivial tasks pinned to the other node
//!   (`resource("b", 1)`), all submitted, then all gathered; and the round
//!   trip of one such task;
//! - a `--transfer-mib` `Buffer` put on the driver's node and passed to a
//!   task on the other node (which returns its length), and a value of that
//!   size made on the other node and fetched by the driver; the first of
//!   each, into stores never written, is timed once before the trials and
//!   printed apart (the trials move values into stores in use);
//! - a streaming generator on the other node yielding `--items` small items,
//!   each taken by the driver;
//! - a value of `--transfer-mib` made on the other node (left in its store),
//!   waited for without fetching (`wait_made`), then read by a task on a
//!   third node (resource `c`, 1 CPU, a 3 GiB store), which reads it
//!   straight from the node that made it; before each trial the third
//!   node reads a value of the same size once, untimed, so that the timed
//!   one lands in pages its store has in use.
//!
//! In the same run it measures the loopback ceilings the transfer rows are
//! read against: one TCP stream over 127.0.0.1 moving the same number of
//! bytes in 4 MiB writes, and the same through TLS 1.3 (rustls, `ring`
//! provider, one current-thread tokio runtime per side, as a peer link
//! runs), and a model of the peer link's blob path on that stream (the
//! copies it makes, see [`tls_ceiling`]). For each cluster row it prints
//! the CPU seconds the head daemon, the node daemon and the driver spent.
//! The daemons are stopped and the session directory removed when it
//! ends, panics included.
//!
//! ```sh
//! cargo build --release -p ferroray-cluster --bin ferroray -p ferroray-bench --bin multinode
//! target/release/multinode                      # the table
//! target/release/multinode --json               # JSON on stdout instead
//! target/release/multinode --ray ray.json       # with ratios to ray_multinode.py's JSON
//! target/release/multinode --only argument       # one row (e.g. under perf)
//! ```

#[path = "../daemons.rs"]
mod daemons;
use clap::Parser;
use daemons::Session;
use ferroray::{Buffer, Config};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Print JSON on stdout instead of the table
    #[arg(long)]
    json: bool,
    /// Trials per row (the median is reported)
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Tasks per trial of the task row
    #[arg(long, default_value_t = 5_000)]
    tasks: usize,
    /// Round trips per trial of the latency row
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
    /// Size of the transferred values, MiB
    #[arg(long, default_value_t = 1024)]
    transfer_mib: usize,
    /// Items per trial of the generator row
    #[arg(long, default_value_t = 10_000)]
    items: u64,
    /// CPUs (and `b` resource) of the second node; default: this machine's
    #[arg(long)]
    node_cpus: Option<usize>,
    /// Only the rows whose name contains one of these words (comma
    /// separated: `tasks`, `round`, `argument`, `result`, `generator`, `third`,
    /// `ceiling`, `model`); for profiling one path
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// JSON written by `ray_multinode.py --json`: adds the ratios
    #[arg(long)]
    ray: Option<PathBuf>,
    /// Start the daemons with `--tls-on-loopback`: their link uses TLS
    /// rather than plain TCP between loopback addresses
    #[arg(long)]
    tls_on_loopback: bool,
}

#[ferroray::remote]
fn echo(x: u64) -> u64 {
    x
}

#[ferroray::remote]
fn length(b: Buffer) -> usize {
    b.len()
}

#[ferroray::remote]
fn make(n: usize) -> Buffer {
    Buffer::new(vec![3u8; n])
}

#[ferroray::remote]
fn small_items(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

#[ferroray::remote]
fn where_am_i() -> String {
    ferroray::node_id().unwrap()
}

struct Row {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    trials: Vec<f64>,
    /// CPU time spent in its trials, summed (the cluster rows).
    cpu: Option<CpuSpent>,
}

impl Args {
    fn wants(&self, row: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| row.contains(w.as_str()))
    }
}

impl Row {
    fn median(&self) -> f64 {
        median(&self.trials)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn gb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn progress(msg: &str) {
    eprintln!("[multinode] {msg}");
}

// ---- the loopback ceilings ----

const WRITE: usize = 4 << 20;

/// One TCP stream over loopback: `total` bytes in 4 MiB writes, read in
/// 4 MiB reads on another thread; from the first write to the last byte read.
fn tcp_ceiling(total: usize) -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; WRITE];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended early");
            got += n;
        }
        Instant::now()
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let data = vec![1u8; WRITE];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = WRITE.min(total - sent);
        s.write_all(&data[..n]).unwrap();
        sent += n;
    }
    let end = reader.join().unwrap();
    end - t
}

/// The same through TLS 1.3 with rustls' `ring` provider, each side a
/// current-thread tokio runtime on a thread of its own (as each daemon
/// runs its peer links), writes of 4 MiB each flushed (as a peer link's
/// frames are). The handshake is not timed.
///
/// With `link_copies`, each side also makes the copies a peer link's blob
/// frames make today (a model of `crates/ferroray-cluster/src/peer.rs`, to
/// see what they cost): the sender copies each 4 MiB chunk out (`to_vec`)
/// and into a frame buffer (the encoding) before writing it; the receiver
/// reads the frame into a body buffer, copies it out (the decoding) and
/// then into fresh pages of a shared mapping (the store allocation, each
/// page faulted in by the copy).
fn tls_ceiling(total: usize, link_copies: bool) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["ferroray-bench".to_string()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        rt().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut s = acceptor.accept(tcp).await.unwrap();
            let mut buf = vec![0u8; WRITE];
            // The handshake is done once the first byte comes.
            let mut got = s.read(&mut buf).await.unwrap();
            let _ = ready_tx.send(());
            if !link_copies {
                while got < total {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the stream ended early");
                    got += n;
                }
                return Instant::now();
            }
            let store = SharedPages::new(total);
            while got < total {
                let n = WRITE.min(total - got);
                s.read_exact(&mut buf[..n]).await.unwrap();
                let decoded = std::hint::black_box(buf[..n].to_vec());
                store.write(got, &decoded);
                got += n;
            }
            let end = Instant::now();
            drop(store);
            end
        })
    });
    let start = rt().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = pki_types::ServerName::try_from("ferroray-bench").unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        s.write_all(&[1u8]).await.unwrap();
        s.flush().await.unwrap();
        ready_rx.recv().unwrap();
        let data = vec![1u8; WRITE];
        let mut frame = Vec::with_capacity(WRITE + 64);
        let t = Instant::now();
        let mut sent = 1;
        while sent < total {
            let n = WRITE.min(total - sent);
            if link_copies {
                let chunk = std::hint::black_box(data[..n].to_vec());
                frame.clear();
                frame.extend_from_slice(&chunk);
                s.write_all(std::hint::black_box(&frame)).await.unwrap();
            } else {
                s.write_all(&data[..n]).await.unwrap();
            }
            s.flush().await.unwrap();
            sent += n;
        }
        // Keep the stream open until the reader has it all.
        (t, s)
    });
    let end = reader.join().unwrap();
    drop(start.1);
    end - start.0
}

/// A fresh shared anonymous mapping (shmem pages, as the store's), unmapped
/// on drop.
struct SharedPages {
    at: *mut u8,
    len: usize,
}

impl SharedPages {
    fn new(len: usize) -> SharedPages {
        // SAFETY: a new mapping of our own; checked below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(at != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        SharedPages { at: at.cast(), len }
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len);
        // SAFETY: in bounds (above), and only this thread uses the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.at.add(offset), bytes.len()) };
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        // SAFETY: our mapping, unused from here on.
        unsafe { libc::munmap(self.at.cast(), self.len) };
    }
}

// ---- where the CPU time goes ----

/// CPU ticks (user + system) of a process, its threads included.
fn proc_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Busy and total ticks of the whole machine, all CPUs.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The CPU seconds spent during one timed section: the head daemon, the
/// node daemon, this driver, and the whole machine (busy, of what the
/// wall time offers on all CPUs).
#[derive(Default, Clone, Copy)]
struct CpuSpent {
    wall: f64,
    head: f64,
    node: f64,
    driver: f64,
    machine_busy: f64,
    machine_total: f64,
}

struct CpuProbe {
    head: u32,
    node: u32,
}

impl CpuProbe {
    fn snapshot(&self) -> [u64; 5] {
        let (busy, total) = machine_ticks();
        [proc_ticks(self.head), proc_ticks(self.node), proc_ticks(std::process::id()), busy, total]
    }

    fn spent(&self, before: [u64; 5], wall: Duration) -> CpuSpent {
        let after = self.snapshot();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let d = |i: usize| after[i].saturating_sub(before[i]) as f64 / hz;
        CpuSpent {
            wall: wall.as_secs_f64(),
            head: d(0),
            node: d(1),
            driver: d(2),
            machine_busy: d(3),
            machine_total: d(4),
        }
    }
}

impl std::ops::AddAssign for CpuSpent {
    fn add_assign(&mut self, o: CpuSpent) {
        self.wall += o.wall;
        self.head += o.head;
        self.node += o.node;
        self.driver += o.driver;
        self.machine_busy += o.machine_busy;
        self.machine_total += o.machine_total;
    }
}

/// The daemons' pids from the session's records: (the head's, the node's
/// that runs the pinned tasks).
fn daemon_pids(dir: &Path, head: &str, node: &str) -> (u32, u32) {
    let (mut h, mut n) = (0, 0);
    for f in std::fs::read_dir(dir.join("nodes")).into_iter().flatten().flatten() {
        let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(f.path()).unwrap_or_default()) else {
            continue;
        };
        let pid = v["pid"].as_u64().unwrap_or(0) as u32;
        if v["node_id"].as_str() == Some(head) {
            h = pid;
        } else if v["node_id"].as_str() == Some(node) {
            n = pid;
        }
    }
    (h, n)
}

// ---- the cluster ----

fn start_cluster(bin: &Path, node_cpus: usize, tls_on_loopback: bool) -> Session {
    let dir = std::env::temp_dir().join(format!("ferroray-multinode-bench-{}", std::process::id()));
    let s = Session { dir, bin: bin.to_path_buf() };
    let tls: &[&str] = if tls_on_loopback { &["--tls-on-loopback"] } else { &[] };
    let head = s.start_head(3 << 30, &[&["--heartbeat-ms", "200"], tls].concat());
    let store = (3u64 << 30).to_string();
    let cpus = node_cpus.to_string();
    let resources = format!(r#"{{"b": {node_cpus}}}"#);
    let mut args = vec!["start", "--address", &head, "--num-cpus", &cpus, "--resources", &resources];
    args.extend_from_slice(&["--object-store-memory", &store, "--heartbeat-ms", "200"]);
    args.extend_from_slice(tls);
    s.run(&args);
    // The third node, for the row read there.
    let mut args = vec!["start", "--address", &head, "--num-cpus", "1", "--resources", r#"{"c": 1}"#];
    args.extend_from_slice(&["--object-store-memory", &store, "--heartbeat-ms", "200"]);
    args.extend_from_slice(tls);
    s.run(&args);
    s
}

/// Runs the cluster rows into `rows`; the CPU time spent in each (the same
/// order), summed over its trials.
/// Pause before each timed row (`ray_multinode.py` pauses as long).
const SETTLE: Duration = Duration::from_secs(1);

/// And the first transfer each way (`Measured::first`).
fn measure(args: &Args, dir: &Path, rows: &mut Vec<Row>) -> Measured {
    let mut row = |name, unit, higher_is_better| {
        rows.push(Row { name, unit, higher_is_better, trials: Vec::new(), cpu: None });
        rows.len() - 1
    };
    let tasks = row("tasks across nodes", "tasks/s", true);
    let rtt = row("remote task round trip", "ms", false);
    let arg_in = row("transfer: argument to the other node", "GB/s", true);
    let result_back = row("transfer: result from the other node", "GB/s", true);
    let gen = row("generator items from the other node", "items/s", true);
    let third = row("transfer: result read on a third node", "GB/s", true);

    // The node is in the view once its `b` is.
    let here = ferroray::node_id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let has = |r: &str| ferroray::cluster_resources().unwrap().get(r).copied().unwrap_or(0.0) >= 1.0;
    while !has("b") || !has("c") {
        assert!(Instant::now() < deadline, "the other nodes never joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And in the driver's node's view of its peers (the next heartbeat).
    std::thread::sleep(Duration::from_millis(500));
    let there = where_am_i::options().resource("b", 1).remote().get().unwrap();
    assert_ne!(here, there, "the pinned task ran on the driver's node");
    progress(&format!("driver on {here}, pinned tasks on {there}"));

    // Warm-up: the link, the executable shipped, workers started.
    let warm: Vec<_> = (0..200).map(|i| echo::options().resource("b", 1).remote(i)).collect();
    ferroray::get_all(&warm).unwrap();
    let items: Vec<u64> = small_items::options().resource("b", 1).remote(10).map(|r| r.get().unwrap()).collect();
    assert_eq!(items, (0..10).collect::<Vec<_>>());

    // The first 1 GiB each way lands in pages never written, which the
    // kernel zeroes as the copy first touches them: timed once here, apart
    // from the rows, whose trials move values into stores in use (as
    // `ray_multinode.py` does).
    let bytes = args.transfer_mib << 20;
    let first = (args.wants("argument") || args.wants("result")).then(|| {
        let big = ferroray::put(Buffer::new(vec![1u8; bytes])).unwrap();
        std::thread::sleep(SETTLE);
        let t = Instant::now();
        assert_eq!(length::options().resource("b", 1).remote(&big).get().unwrap(), bytes);
        let argument = gb_per_s(bytes, t.elapsed());
        drop(big);
        std::thread::sleep(SETTLE);
        let t = Instant::now();
        assert_eq!(make::options().resource("b", 1).remote(bytes).get().unwrap().len(), bytes);
        (argument, gb_per_s(bytes, t.elapsed()))
    });

    let (head_pid, node_pid) = daemon_pids(dir, &here, &there);
    let probe = CpuProbe { head: head_pid, node: node_pid };
    let mut cpu = vec![CpuSpent::default(); rows.len()];
    // Times `work` (after `setup`, untimed) into row `i`'s CPU account; the
    // row's trial value from what `work` returns and the wall time.
    let mut timed = |i: usize, rows: &mut Vec<Row>, work: &mut dyn FnMut() -> Box<dyn FnOnce(Duration) -> f64>| {
        if !args.wants(rows[i].name) {
            return;
        }
        // What the row before left behind (1 GiB values freed, pages given
        // back) is not timed in this one.
        std::thread::sleep(SETTLE);
        let before = probe.snapshot();
        let t = Instant::now();
        let value = work();
        let d = t.elapsed();
        cpu[i] += probe.spent(before, d);
        rows[i].trials.push(value(d));
    };
    for trial in 0..args.repeats {
        timed(tasks, rows, &mut || {
            let refs: Vec<_> = (0..args.tasks as u64).map(|i| echo::options().resource("b", 1).remote(i)).collect();
            assert_eq!(ferroray::get_all(&refs).unwrap().len(), args.tasks);
            let n = args.tasks as f64;
            Box::new(move |d| n / d.as_secs_f64())
        });
        timed(rtt, rows, &mut || {
            let mut rt = Vec::with_capacity(args.round_trips);
            for i in 0..args.round_trips as u64 {
                let t = Instant::now();
                assert_eq!(echo::options().resource("b", 1).remote(i).get().unwrap(), i);
                rt.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let m = median(&rt);
            Box::new(move |_| m)
        });
        if args.wants(rows[arg_in].name) {
            // A fresh value each trial, so that no node can have it already;
            // put before the clock starts.
            let big = ferroray::put(Buffer::new(vec![1u8; bytes])).unwrap();
            timed(arg_in, rows, &mut || {
                assert_eq!(length::options().resource("b", 1).remote(&big).get().unwrap(), bytes);
                Box::new(move |d| gb_per_s(bytes, d))
            });
        }
        timed(result_back, rows, &mut || {
            let made = make::options().resource("b", 1).remote(bytes).get().unwrap();
            assert_eq!(made.len(), bytes);
            Box::new(move |d| gb_per_s(bytes, d))
        });
        timed(gen, rows, &mut || {
            let mut n = 0u64;
            for r in small_items::options().resource("b", 1).remote(args.items) {
                assert_eq!(r.get().unwrap(), n);
                n += 1;
            }
            assert_eq!(n, args.items);
            Box::new(move |d| n as f64 / d.as_secs_f64())
        });
        if args.wants(rows[third].name) {
            // Made there and waited for without fetching, untimed; the
            // third node's store warmed by a read of the same size first.
            let made_there = || {
                let made = make::options().resource("b", 1).remote(bytes);
                let (ready, _) = ferroray::wait_made(std::slice::from_ref(&made), 1, None).unwrap();
                assert_eq!(ready.len(), 1);
                made
            };
            let warm = made_there();
            assert_eq!(length::options().resource("c", 1).remote(&warm).get().unwrap(), bytes);
            drop(warm);
            let made = made_there();
            timed(third, rows, &mut || {
                assert_eq!(length::options().resource("c", 1).remote(&made).get().unwrap(), bytes);
                Box::new(move |d| gb_per_s(bytes, d))
            });
        }
        progress(&format!("trial {} of {} done", trial + 1, args.repeats));
    }
    Measured { cpu, first }
}

/// What `measure` gives besides its rows.
struct Measured {
    /// The CPU time spent in each row (in `rows`' order), over its trials.
    cpu: Vec<CpuSpent>,
    /// GB/s of the first argument and result moved, into stores never
    /// written, before the trials.
    first: Option<(f64, f64)>,
}

/// A result of the same size made on the driver's own node (a task on the
/// head), for reading the result row: what making it costs without a link.
fn local_make(bytes: usize, repeats: usize) -> f64 {
    let mut v = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let made = make::remote(bytes).get().unwrap();
        let d = t.elapsed();
        assert_eq!(made.len(), bytes);
        v.push(gb_per_s(bytes, d));
    }
    median(&v)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args = Args::parse();
    let bin = std::env::current_exe().expect("own path").parent().expect("a directory").join("ferroray");
    assert!(bin.exists(), "{} is missing: cargo build --release -p ferroray-cluster --bin ferroray", bin.display());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let node_cpus = args.node_cpus.unwrap_or(cpus);
    let ray: Option<Value> = args
        .ray
        .as_ref()
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("reading the Ray JSON")).expect("the Ray JSON"));
    let bytes = args.transfer_mib << 20;
    let load_before = load();

    progress(&format!("loopback ceilings, {} MiB each", args.transfer_mib));
    let mut rows = Vec::new();
    let mut tcp = Row { name: "loopback TCP ceiling", unit: "GB/s", higher_is_better: true, trials: vec![], cpu: None };
    let mut tls =
        Row { name: "loopback TLS 1.3 ceiling", unit: "GB/s", higher_is_better: true, trials: vec![], cpu: None };
    let mut model = Row {
        name: "loopback TLS 1.3 with the link's copies (model)",
        unit: "GB/s",
        higher_is_better: true,
        trials: vec![],
        cpu: None,
    };
    for _ in 0..args.repeats {
        if args.wants(tcp.name) {
            tcp.trials.push(gb_per_s(bytes, tcp_ceiling(bytes)));
        }
        if args.wants(tls.name) {
            tls.trials.push(gb_per_s(bytes, tls_ceiling(bytes, false)));
        }
        if args.wants(model.name) {
            model.trials.push(gb_per_s(bytes, tls_ceiling(bytes, true)));
        }
    }

    let mut local = f64::NAN;
    let mut first = None;
    if ["tasks", "round", "argument", "result", "generator", "third"].iter().any(|w| args.wants(w)) {
        progress(&format!(
            "starting a head (1 CPU), a node ({node_cpus} CPUs, b={node_cpus}, 3 GiB store) and a third (1 CPU, c=1)"
        ));
        let session = start_cluster(&bin, node_cpus, args.tls_on_loopback);
        std::env::set_var("FERRORAY_SESSION_DIR", &session.dir);
        ferroray::init_with(Config::default().address("auto")).expect("connecting to the head");
        let measured = measure(&args, &session.dir, &mut rows);
        for (r, c) in rows.iter_mut().zip(measured.cpu) {
            r.cpu = Some(c);
        }
        first = measured.first;
        if args.wants("result") {
            local = local_make(bytes, args.repeats);
        }
        ferroray::shutdown();
        drop(session);
    }
    rows.push(tcp);
    rows.push(tls);
    rows.push(model);
    rows.retain(|r| !r.trials.is_empty());
    let load_after = load();

    let ceiling = |name: &str| rows.iter().find(|r| r.name == name).map_or(f64::NAN, Row::median);
    let (tcp_gbs, tls_gbs) = (ceiling("loopback TCP ceiling"), ceiling("loopback TLS 1.3 ceiling"));
    let ray_value = |name: &str| -> Option<f64> {
        ray.as_ref()?["rows"].as_array()?.iter().find(|r| r["name"] == name)?["value"].as_f64()
    };
    let x_ray = |r: &Row| ray_value(r.name).map(|v| if r.higher_is_better { r.median() / v } else { v / r.median() });

    if args.json {
        let cpu_json: Vec<Value> = rows
            .iter()
            .filter_map(|r| Some((r, r.cpu?)))
            .map(|(r, c)| {
                json!({
                    "row": r.name, "wall": c.wall, "head_daemon": c.head, "node_daemon": c.node,
                    "driver": c.driver, "machine_busy": c.machine_busy, "machine_total": c.machine_total,
                })
            })
            .collect();
        let out = json!({
            "machine": {
                "cpus": cpus,
                "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            },
            "load_before": load_before,
            "load_after": load_after,
            "node_cpus": node_cpus,
            "tasks": args.tasks,
            "transfer_bytes": bytes,
            "items": args.items,
            "local_make_gb_per_s": local,
            "first_transfer_gb_per_s": first.map(|(a, r)| json!({"argument": a, "result": r})),
            "cpu_seconds_by_row": cpu_json,
            "rows": rows.iter().map(|r| {
                let transfer = r.name.starts_with("transfer");
                json!({
                    "name": r.name,
                    "unit": r.unit,
                    "higher_is_better": r.higher_is_better,
                    "value": r.median(),
                    "trials": r.trials,
                    "ray_2_60": ray_value(r.name),
                    "x_better_than_ray_2_60": x_ray(r),
                    "fraction_of_tcp_ceiling": transfer.then(|| r.median() / tcp_gbs),
                    "fraction_of_tls_ceiling": transfer.then(|| r.median() / tls_gbs),
                })
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    println!("row\tvalue\tunit\tRay 2.60\tx Ray\tof TCP ceiling\tof TLS ceiling\ttrials");
    for r in &rows {
        let transfer = r.name.starts_with("transfer");
        let frac = |c: f64| if transfer { format!("{:.0}%", r.median() / c * 100.0) } else { "-".into() };
        let trials = r.trials.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>().join(" ");
        println!(
            "{}\t{:.3}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.name,
            r.median(),
            r.unit,
            ray_value(r.name).map_or("-".into(), |v| format!("{v:.3}")),
            x_ray(r).map_or("-".into(), |x| format!("{x:.1}x")),
            frac(tcp_gbs),
            frac(tls_gbs),
            trials
        );
    }
    if let Some((a, r)) = first {
        let of_ray = |key: &str| {
            ray.as_ref()
                .and_then(|v| v["first_transfer_gb_per_s"][key].as_f64())
                .map_or(String::new(), |v| format!(" (Ray 2.60: {v:.3})"))
        };
        println!(
            "(the first {} MiB argument and result, into stores never written, before the trials: {a:.3}{} and \
             {r:.3}{} GB/s)",
            args.transfer_mib,
            of_ray("argument"),
            of_ray("result")
        );
    }
    if !local.is_nan() {
        println!("(a {} MiB result made on the driver's own node: {local:.3} GB/s)", args.transfer_mib);
    }
    if rows.iter().any(|r| r.cpu.is_some()) {
        println!("CPU seconds by row, all trials summed:");
    }
    for (r, c) in rows.iter().filter_map(|r| Some((r, r.cpu?))) {
        println!(
            "  {}: {:.2} s wall; CPU s: head daemon {:.2}, node daemon {:.2}, driver {:.2}, whole machine {:.2} busy \
             of {:.2}",
            r.name, c.wall, c.head, c.node, c.driver, c.machine_busy, c.machine_total
        );
    }
    println!("(load average before {load_before}, after {load_after}; GB = 10^9 bytes)");
}
