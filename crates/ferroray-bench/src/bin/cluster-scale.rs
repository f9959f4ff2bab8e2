//! How the cluster's control plane grows with nodes: node daemons started on
//! this machine with small stores, joined to one head, measured at rest.
//!
//! For each cluster size it starts a head and nodes with the `ferroray`
//! binary (built beside this one: `cargo build --release -p ferroray-cluster
//! -p ferroray-bench`), waits until every node is alive in the head's view,
//! then measures over a window: the head's CPU time and resident memory, a
//! node daemon's (mean), the time `ferroray status` takes, and the time from
//! a node's SIGKILL to the head's verdict. Then this program connects to the
//! head as a driver and runs `--tasks` trivial tasks (1 CPU each), which the
//! head's node places on the nodes with room (spillback over peer links):
//! their throughput, how many nodes ran them, and the CPU time the head and
//! a node (mean) spent. Everything it starts is stopped, and its session
//! directory removed.
//!
//! ```sh
//! cargo build --release -p ferroray-cluster -p ferroray-bench
//! target/release/cluster-scale --nodes 1,4,16,32
//! ```

#[path = "../daemons.rs"]
mod daemons;
use clap::Parser;
use daemons::Session;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Cluster sizes to measure, head included
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
    nodes: Vec<usize>,
    /// Seconds each size is measured at rest
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// The heads' heartbeat interval and node timeout, ms
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 2000)]
    node_timeout_ms: u64,
    /// Tasks run across the cluster at each size (0: none)
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
}

/// The node it ran on, as a number (its id is 16 hex digits).
#[ferroray::remote]
fn noop() -> u64 {
    u64::from_str_radix(&ferroray::node_id().unwrap(), 16).unwrap()
}

/// Runs `tasks` tasks from this process, connected to the head of `dir`:
/// (tasks per second, distinct nodes that ran them, head CPU s, node CPU s
/// mean) for the tasks alone (after a warm-up that opens every link).
fn run_tasks(dir: &Path, tasks: u64, pids: &[u32], hz: f64) -> (f64, usize, f64, f64) {
    std::env::set_var("FERRORAY_SESSION_DIR", dir);
    ferroray::init_with(ferroray::Config::default().address("auto")).expect("connecting to the head");
    let warm: Vec<_> = (0..pids.len() * 8).map(|_| noop::remote()).collect();
    for r in warm {
        r.get().expect("a warm-up task");
    }
    let before: Vec<u64> = pids.iter().map(|p| usage(*p).0).collect();
    let t = Instant::now();
    let refs: Vec<_> = (0..tasks).map(|_| noop::remote()).collect();
    let mut nodes = std::collections::HashSet::new();
    for r in refs {
        nodes.insert(r.get().expect("a task"));
    }
    let elapsed = t.elapsed().as_secs_f64();
    let after: Vec<u64> = pids.iter().map(|p| usage(*p).0).collect();
    ferroray::shutdown();
    let cpu = |i: usize| (after[i] - before[i]) as f64 / hz;
    let node_cpu =
        if pids.len() > 1 { (1..pids.len()).map(cpu).sum::<f64>() / (pids.len() - 1) as f64 } else { f64::NAN };
    (tasks as f64 / elapsed, nodes.len(), cpu(0), node_cpu)
}

/// CPU ticks (user + system) and resident kB of a process.
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn pids(out: &str) -> Vec<u32> {
    out.lines().skip(1).filter_map(|l| l.split_whitespace().nth(3).and_then(|p| p.parse().ok())).collect()
}

fn main() {
    let args = Args::parse();
    let bin = std::env::current_exe().expect("own path").parent().expect("a directory").join("ferroray");
    assert!(Path::new(&bin).exists(), "{} is missing: cargo build --release -p ferroray-cluster", bin.display());
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "nodes\thead CPU %\thead RSS MB\tnode CPU % (mean)\tnode RSS MB (mean)\tstatus ms\tdead node detected after ms\t\
         tasks/s\tnodes that ran tasks\thead CPU s (tasks)\tnode CPU s (tasks, mean)"
    );
    for &n in &args.nodes {
        let dir = std::env::temp_dir().join(format!("ferroray-cluster-scale-{}-{n}", std::process::id()));
        let s = Session { dir, bin: bin.clone() };
        let hb = args.heartbeat_ms.to_string();
        let timeout = args.node_timeout_ms.to_string();
        let head = s.start_head(16 << 20, &["--heartbeat-ms", &hb, "--node-timeout-ms", &timeout]);
        let store = (16u64 << 20).to_string();
        for _ in 1..n {
            s.run(&["start", "--address", &head, "--num-cpus", "1", "--object-store-memory", &store]);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let listed = loop {
            let out = s.run(&["list", "nodes", "--filter", "state=alive"]);
            if out.lines().count() > n {
                break out;
            }
            assert!(Instant::now() < deadline, "not all {n} nodes alive: {out}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let all = pids(&listed);
        // The head is listed first.
        let nodes = all[1..].to_vec();
        let before: Vec<(u64, u64)> = all.iter().map(|p| usage(*p)).collect();
        std::thread::sleep(Duration::from_secs_f64(args.window));
        let after: Vec<(u64, u64)> = all.iter().map(|p| usage(*p)).collect();
        let cpu = |i: usize| (after[i].0 - before[i].0) as f64 / hz / args.window * 100.0;
        let head_cpu = cpu(0);
        let head_rss = after[0].1 as f64 / 1024.0;
        let (node_cpu, node_rss) = if nodes.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let k = nodes.len() as f64;
            (
                (1..all.len()).map(cpu).sum::<f64>() / k,
                (1..all.len()).map(|i| after[i].1 as f64).sum::<f64>() / k / 1024.0,
            )
        };
        let t = Instant::now();
        s.run(&["status"]);
        let status_ms = t.elapsed().as_secs_f64() * 1000.0;
        let (rate, ran_on, head_task_cpu, node_task_cpu) =
            if args.tasks > 0 { run_tasks(&s.dir, args.tasks, &all, hz) } else { (f64::NAN, 0, f64::NAN, f64::NAN) };
        let detect = match nodes.last() {
            None => "-".to_string(),
            Some(victim) => {
                unsafe { libc::kill(*victim as i32, libc::SIGKILL) };
                let t = Instant::now();
                loop {
                    let dead = s.run(&["list", "nodes", "--filter", "state=dead"]);
                    if dead.lines().count() > 1 {
                        break format!("{:.0}", t.elapsed().as_secs_f64() * 1000.0);
                    }
                    assert!(t.elapsed() < Duration::from_secs(60), "the killed node was never declared dead");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        println!(
            "{n}\t{head_cpu:.2}\t{head_rss:.1}\t{node_cpu:.2}\t{node_rss:.1}\t{status_ms:.1}\t{detect}\t{rate:.0}\t\
             {ran_on}\t{head_task_cpu:.2}\t{node_task_cpu:.3}"
        );
        drop(s);
    }
}
