//! `ferroray-bench`: Ray's `ray microbenchmark` rows, run against ferroray,
//! with a Unix-socket ping-pong baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p ferroray-bench                  # full run, ~50 s
//! cargo run --release -p ferroray-bench -- --quick       # ~10 s
//! cargo run --release -p ferroray-bench -- --json out.json
//! ```
//!
//! Every row is a rate, a time or a size, with its ratio to Ray 2.60 on this
//! machine and to ferroray's target (docs/benchmarks.md). Ratios are always
//! "x better": above 1 means ferroray is ahead of Ray / the target is met,
//! whether the row is a rate (higher is better) or a time or size (lower is
//! better).
//!
//! Some rows need a fresh process (init time, idle memory, the ping-pong
//! peer): the program runs itself again with a hidden flag. Those child modes
//! are dispatched first thing in `main`. Workers of the runtime are this same
//! executable too, but they are recognised (by an environment variable)
//! before `main` runs and never reach it.

use clap::Parser;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

// ---------------------------------------------------------------------------
// Reference figures
// ---------------------------------------------------------------------------

/// Ray 2.60 on this machine (2 cores, 24 GiB): its own `ray microbenchmark`
/// and a side-by-side script of the same workloads, as recorded in
/// `docs/benchmarks.md` ("Reference figures").
mod ray_2_60 {
    /// `single client tasks sync`, tasks/s.
    pub const TASKS_SYNC: f64 = 630.0;
    /// `single client tasks async`, tasks/s.
    pub const TASKS_ASYNC: f64 = 2_235.0;
    /// `single client put calls`, calls/s.
    pub const PUT_CALLS: f64 = 2_384.0;
    /// `single client get calls`, calls/s.
    pub const GET_CALLS: f64 = 14_790.0;
    /// `single client wait 1k refs`, rounds/s (one round: submit 1,000 tasks,
    /// then `ray.wait(not_ready)` with num_returns=1 until none is left).
    pub const WAIT_1K: f64 = 1.8;
    /// `ray.init()` to the first result: 2,900 to 3,800 ms measured; midpoint.
    pub const INIT_MS: f64 = 3_300.0;
    /// Runtime resident memory when idle: ~2 GB.
    pub const IDLE_MB: f64 = 2_000.0;
    // `single client put gigabytes`: not measured on this machine; no ratio.
    /// Streaming generator items, small, no backpressure, items/s.
    pub const GEN_ITEMS: f64 = 12_800.0;
    /// The same with `_generator_backpressure_num_objects=1`, items/s.
    pub const GEN_ITEMS_BP1: f64 = 1_750.0;
    /// Fresh generator tasks taken to their first item, per second.
    pub const GEN_FIRST_ITEM: f64 = 408.0;
    /// 8 generator items of 100 MB, MB/s.
    pub const GEN_LARGE_MB_S: f64 = 530.0;
    /// 1,300-1,800 calls/s measured here; the middle.
    pub const ACTOR_SYNC: f64 = 1_550.0;
    /// 5,000-10,000 calls/s with 1,000 in flight; the middle.
    pub const ACTOR_ASYNC: f64 = 7_500.0;
    /// 15,000-20,000 items/s; the middle.
    pub const ACTOR_GEN_ITEMS: f64 = 17_500.0;
    /// 2.8 actors created and called per second.
    pub const ACTOR_CREATION: f64 = 2.8;
    /// 1,000 calls in flight on an async actor: 3,200 calls/s.
    pub const ASYNC_ACTOR_ASYNC: f64 = 3_200.0;
    /// An async actor's generator method: 4,000 items/s.
    pub const ASYNC_ACTOR_GEN_ITEMS: f64 = 4_000.0;
}

/// ferroray's targets (`docs/benchmarks.md`, reference figures).
mod target {
    pub const TASKS_SYNC: f64 = 10_000.0;
    pub const TASKS_ASYNC: f64 = 50_000.0;
    pub const PUT_CALLS: f64 = 100_000.0;
    pub const GET_CALLS: f64 = 100_000.0;
    pub const WAIT_1K: f64 = 100.0;
    /// Upper bound, ms.
    pub const INIT_MS: f64 = 100.0;
    /// Upper bound, MB.
    pub const IDLE_MB: f64 = 100.0;
    pub const GEN_ITEMS: f64 = 130_000.0;
    pub const GEN_ITEMS_BP1: f64 = 17_500.0;
    pub const GEN_FIRST_ITEM: f64 = 4_000.0;
    pub const GEN_LARGE_MB_S: f64 = 5_000.0;
    pub const ACTOR_SYNC: f64 = 18_000.0;
    pub const ACTOR_ASYNC: f64 = 100_000.0;
    pub const ACTOR_GEN_ITEMS: f64 = 200_000.0;
    pub const ACTOR_CREATION: f64 = 28.0;
    pub const ASYNC_ACTOR_ASYNC: f64 = 32_000.0;
    pub const ASYNC_ACTOR_GEN_ITEMS: f64 = 40_000.0;
}

const MIB: f64 = 1024.0 * 1024.0;

// Row names (Ray's where Ray has the row).
const ROW_PINGPONG: &str = "unix socket ping-pong";
const ROW_TASKS_SYNC: &str = "single client tasks sync";
const ROW_TASKS_ASYNC: &str = "single client tasks async";
const ROW_PUT_CALLS: &str = "single client put calls";
const ROW_GET_CALLS: &str = "single client get calls";
const ROW_PUT_GB: &str = "single client put gigabytes";
const ROW_WAIT_1K: &str = "single client wait 1k refs";
const ROW_WAIT_1K_READY: &str = "single client wait 1k ready refs";
const ROW_GEN_ITEMS: &str = "single client generator items";
const ROW_GEN_ITEMS_BP1: &str = "single client generator items backpressure 1";
const ROW_GEN_FIRST: &str = "fresh generator task to first item";
const ROW_GEN_LARGE: &str = "generator 8 x 100 MB items";
const ROW_ACTOR_SYNC: &str = "1:1 actor calls sync";
const ROW_ACTOR_ASYNC: &str = "1:1 actor calls async";
const ROW_ACTOR_GEN: &str = "actor generator items";
const ROW_ACTOR_CREATION: &str = "actor creation to first result";
const ROW_ASYNC_ACTOR_ASYNC: &str = "1:1 async-actor calls async";
const ROW_ASYNC_ACTOR_GEN: &str = "async actor generator items";
const ROW_INIT: &str = "init to first result";
const ROW_IDLE: &str = "idle runtime resident memory";
const ROW_WIRE_EXECUTE: &str = "wire execute encode+decode";
const ROW_WIRE_TASK_DONE: &str = "wire task done encode+decode";

/// Every row, in the order the program measures and prints them.
const ALL_ROWS: &[&str] = &[
    ROW_PINGPONG,
    ROW_TASKS_SYNC,
    ROW_TASKS_ASYNC,
    ROW_PUT_CALLS,
    ROW_GET_CALLS,
    ROW_PUT_GB,
    ROW_WAIT_1K,
    ROW_WAIT_1K_READY,
    ROW_GEN_ITEMS,
    ROW_GEN_ITEMS_BP1,
    ROW_GEN_FIRST,
    ROW_GEN_LARGE,
    ROW_ACTOR_SYNC,
    ROW_ACTOR_ASYNC,
    ROW_ACTOR_GEN,
    ROW_ASYNC_ACTOR_ASYNC,
    ROW_ASYNC_ACTOR_GEN,
    ROW_ACTOR_CREATION,
    ROW_INIT,
    ROW_IDLE,
];

/// Rows run only when `--only` names them: measurements of one layer, not
/// of the runtime.
const EXTRA_ROWS: &[&str] = &[ROW_WIRE_EXECUTE, ROW_WIRE_TASK_DONE];

// ---------------------------------------------------------------------------
// Remote functions
// ---------------------------------------------------------------------------

/// Ray's `small_value` (which returns `b"ok"`): the trivial task.
#[ferroray::remote]
fn small_value() -> i64 {
    0
}

/// A stream of small items.
#[ferroray::remote]
fn small_items(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// A stream of `n` large items: one buffer, made once per worker process and
/// yielded `n` times (each yield is stored anew; making the data is not what
/// is measured).
#[ferroray::remote]
fn large_items(n: u64, len: usize) -> impl Iterator<Item = ferroray::Buffer> {
    static DATA: std::sync::Mutex<Option<ferroray::Buffer>> = std::sync::Mutex::new(None);
    let data = {
        let mut d = DATA.lock().unwrap_or_else(|e| e.into_inner());
        match d.as_ref() {
            Some(b) if b.len() == len => b.clone(),
            _ => d.insert(ferroray::Buffer::from(vec![7u8; len])).clone(),
        }
    };
    (0..n).map(move |_| data.clone())
}

/// The actor of the actor rows: a counter.
pub struct BenchActor {
    n: u64,
}

#[ferroray::actor]
impl BenchActor {
    pub fn new() -> Self {
        BenchActor { n: 0 }
    }

    pub fn incr(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    pub fn items(&self, n: u64) -> impl Iterator<Item = u64> {
        0..n
    }
}

/// The actor of the async-actor rows: the same counter, with async
/// methods (so its calls run on an event loop and interleave).
pub struct BenchAsyncActor {
    n: u64,
}

#[ferroray::actor]
impl BenchAsyncActor {
    pub fn new() -> Self {
        BenchAsyncActor { n: 0 }
    }

    pub async fn incr(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    pub async fn items(&self, n: u64) -> impl futures::Stream<Item = u64> {
        futures::stream::iter(0..n)
    }
}

/// The first task of the init probe (as in the README example).
#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// The process a task runs in (to check that the init probe's tasks run in a
/// worker, not in the driver).
#[ferroray::remote]
fn worker_pid() -> u32 {
    std::process::id()
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Parser, Debug)]
#[command(
    name = "ferroray-bench",
    about = "Ray-style microbenchmarks of ferroray, compared with Ray 2.60 and the targets"
)]
struct Args {
    /// Short run (~10 s): fewer and shorter trials, for tests and quick checks.
    #[arg(long)]
    quick: bool,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Run only the rows whose name contains one of these (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "TEXT")]
    only: Vec<String>,

    /// Size of one `put gigabytes` buffer, in MiB (Ray's row puts 800 MiB).
    #[arg(long, default_value_t = 100, value_name = "MIB")]
    put_mib: usize,

    /// Fresh processes for `init to first result` (default 5, quick 3).
    #[arg(long, value_name = "N")]
    init_runs: Option<usize>,

    /// Child mode: init, run one task, print the time, exit.
    #[arg(long, hide = true)]
    init_probe: bool,

    /// Child mode: init, run tasks, idle, print the process tree's memory.
    #[arg(long, hide = true)]
    idle_probe: bool,

    /// Child mode: how long the idle probe stays idle before measuring (ms).
    #[arg(long, hide = true, default_value_t = 2000)]
    idle_ms: u64,

    /// Child mode: echo peer of the ping-pong baseline, connecting to PATH.
    #[arg(long, hide = true, value_name = "PATH")]
    pingpong_peer: Option<PathBuf>,
}

/// How long each rate row runs.
#[derive(Clone, Copy)]
struct Plan {
    trials: usize,
    trial: Duration,
    warmup: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan { trials: 2, trial: Duration::from_millis(400), warmup: Duration::from_millis(100) }
        } else {
            Plan { trials: 3, trial: Duration::from_millis(1500), warmup: Duration::from_millis(300) }
        }
    }

    /// The same plan with trials `k` times as long.
    fn scaled(self, k: f64) -> Self {
        Plan { trials: self.trials, trial: self.trial.mul_f64(k), warmup: self.warmup.mul_f64(k) }
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

#[derive(Serialize, Clone, Debug)]
struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    /// Rates: true. Times and sizes: false.
    higher_is_better: bool,
    /// Ray 2.60 on this machine (constant), if known.
    ray_2_60: Option<f64>,
    /// How many times better than Ray 2.60 (>1: ferroray is better).
    x_better_than_ray_2_60: Option<f64>,
    /// The target value.
    target: Option<f64>,
    /// value vs target as "x better" (>=1: target met).
    x_of_target: Option<f64>,
    /// The baseline row this one is compared with, if any.
    baseline: Option<String>,
    /// value / baseline value (a fraction of the ceiling).
    fraction_of_baseline: Option<f64>,
    /// What was measured, in one sentence.
    measures: &'static str,
    /// Per-trial values; `value` is their median.
    trials: Vec<f64>,
    /// Anything else worth keeping.
    details: Map<String, Value>,
}

impl Row {
    fn new(name: &str, unit: &'static str, higher_is_better: bool, measures: &'static str, trials: Vec<f64>) -> Self {
        Row {
            name: name.to_string(),
            value: median(&trials),
            unit,
            higher_is_better,
            ray_2_60: None,
            x_better_than_ray_2_60: None,
            target: None,
            x_of_target: None,
            baseline: None,
            fraction_of_baseline: None,
            measures,
            trials,
            details: Map::new(),
        }
    }

    /// "x better" of `self.value` against `reference`.
    fn better(&self, reference: f64) -> Option<f64> {
        if self.value <= 0.0 || reference <= 0.0 || !self.value.is_finite() {
            return None;
        }
        Some(if self.higher_is_better { self.value / reference } else { reference / self.value })
    }

    fn ray(mut self, v: f64) -> Self {
        self.ray_2_60 = Some(v);
        self.x_better_than_ray_2_60 = self.better(v);
        self
    }

    fn target(mut self, v: f64) -> Self {
        self.target = Some(v);
        self.x_of_target = self.better(v);
        self
    }

    fn detail(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.details.insert(k.to_string(), v.into());
        self
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Runs `f` for a warm-up, then for `plan.trials` trials of `plan.trial`
/// each; `f` returns how many units one call did. Gives units/s per trial.
fn measure(plan: Plan, mut f: impl FnMut() -> Res<f64>) -> Res<Vec<f64>> {
    let t = Instant::now();
    loop {
        f()?;
        if t.elapsed() >= plan.warmup {
            break;
        }
    }
    let mut rates = Vec::with_capacity(plan.trials);
    for _ in 0..plan.trials {
        let t = Instant::now();
        let mut units = 0.0;
        let elapsed = loop {
            units += f()?;
            let e = t.elapsed();
            if e >= plan.trial {
                break e;
            }
        };
        rates.push(units / elapsed.as_secs_f64());
    }
    Ok(rates)
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

fn main() {
    let args = Args::parse();
    let r = if args.init_probe {
        init_probe()
    } else if args.idle_probe {
        idle_probe(Duration::from_millis(args.idle_ms))
    } else if let Some(p) = &args.pingpong_peer {
        pingpong_peer(p)
    } else {
        run(&args)
    };
    if let Err(e) = r {
        eprintln!("ferroray-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res<()> {
    if args.put_mib == 0 {
        return Err("--put-mib must be at least 1".into());
    }
    let named = |name: &str| args.only.iter().any(|o| name.contains(o.as_str()));
    let wanted = |name: &str| {
        if EXTRA_ROWS.contains(&name) {
            named(name)
        } else {
            args.only.is_empty() || named(name)
        }
    };
    if !args.only.is_empty() && !ALL_ROWS.iter().chain(EXTRA_ROWS).any(|r| wanted(r)) {
        let all: Vec<&str> = ALL_ROWS.iter().chain(EXTRA_ROWS).copied().collect();
        return Err(format!("--only matches no row; the rows are: {}", all.join(", ")).into());
    }
    let plan = Plan::new(args.quick);
    let load_before = loadavg();
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();

    let progress = |name: &str| {
        eprintln!("[{:>5.1}s] {name}", started.elapsed().as_secs_f64());
    };

    // The baseline first, before the runtime has any thread or worker.
    if wanted(ROW_PINGPONG) {
        progress(ROW_PINGPONG);
        rows.push(bench_pingpong(plan)?);
    }

    let in_process = [
        ROW_TASKS_SYNC,
        ROW_TASKS_ASYNC,
        ROW_PUT_CALLS,
        ROW_GET_CALLS,
        ROW_PUT_GB,
        ROW_WAIT_1K,
        ROW_WAIT_1K_READY,
        ROW_GEN_ITEMS,
        ROW_GEN_ITEMS_BP1,
        ROW_GEN_FIRST,
        ROW_GEN_LARGE,
        ROW_ACTOR_SYNC,
        ROW_ACTOR_ASYNC,
        ROW_ACTOR_GEN,
        ROW_ASYNC_ACTOR_ASYNC,
        ROW_ASYNC_ACTOR_GEN,
        ROW_ACTOR_CREATION,
    ];
    if in_process.iter().any(|r| wanted(r)) {
        ferroray::init()?;
        // Start the workers before anything is timed.
        let warm: Vec<_> = (0..200).map(|_| small_value::remote()).collect();
        ferroray::get_all(&warm)?;
        drop(warm);

        if wanted(ROW_TASKS_SYNC) {
            progress(ROW_TASKS_SYNC);
            rows.push(bench_tasks_sync(plan)?);
        }
        if wanted(ROW_TASKS_ASYNC) {
            progress(ROW_TASKS_ASYNC);
            rows.push(bench_tasks_async(plan)?);
        }
        if wanted(ROW_PUT_CALLS) {
            progress(ROW_PUT_CALLS);
            rows.push(bench_put_calls(plan.scaled(0.7))?);
        }
        if wanted(ROW_GET_CALLS) {
            progress(ROW_GET_CALLS);
            rows.push(bench_get_calls(plan.scaled(0.7))?);
        }
        if wanted(ROW_PUT_GB) {
            progress(ROW_PUT_GB);
            rows.push(bench_put_gigabytes(plan, args.put_mib)?);
        }
        if wanted(ROW_WAIT_1K) {
            progress(ROW_WAIT_1K);
            rows.push(bench_wait_1k(plan)?);
        }
        if wanted(ROW_WAIT_1K_READY) {
            progress(ROW_WAIT_1K_READY);
            rows.push(bench_wait_1k_ready(plan.scaled(0.7))?);
        }
        if wanted(ROW_GEN_ITEMS) {
            progress(ROW_GEN_ITEMS);
            rows.push(bench_gen_items(plan, None)?);
        }
        if wanted(ROW_GEN_ITEMS_BP1) {
            progress(ROW_GEN_ITEMS_BP1);
            rows.push(bench_gen_items(plan.scaled(0.7), Some(ferroray::Backpressure::items::<1>()))?);
        }
        if wanted(ROW_GEN_FIRST) {
            progress(ROW_GEN_FIRST);
            rows.push(bench_gen_first_item(plan.scaled(0.7))?);
        }
        if wanted(ROW_GEN_LARGE) {
            progress(ROW_GEN_LARGE);
            rows.push(bench_gen_large(plan, if args.quick { 16 << 20 } else { 100_000_000 })?);
        }
        let actor_rows = [ROW_ACTOR_SYNC, ROW_ACTOR_ASYNC, ROW_ACTOR_GEN];
        if actor_rows.iter().any(|r| wanted(r)) {
            let actor = BenchActor::remote();
            actor.incr().remote().get()?;
            if wanted(ROW_ACTOR_SYNC) {
                progress(ROW_ACTOR_SYNC);
                rows.push(bench_actor_sync(plan, &actor)?);
            }
            if wanted(ROW_ACTOR_ASYNC) {
                progress(ROW_ACTOR_ASYNC);
                rows.push(bench_actor_async(plan, &actor)?);
            }
            if wanted(ROW_ACTOR_GEN) {
                progress(ROW_ACTOR_GEN);
                rows.push(bench_actor_gen(plan, &actor)?);
            }
        }
        if [ROW_ASYNC_ACTOR_ASYNC, ROW_ASYNC_ACTOR_GEN].iter().any(|r| wanted(r)) {
            let actor = BenchAsyncActor::remote();
            actor.incr().remote().get()?;
            if wanted(ROW_ASYNC_ACTOR_ASYNC) {
                progress(ROW_ASYNC_ACTOR_ASYNC);
                rows.push(bench_async_actor_async(plan, &actor)?);
            }
            if wanted(ROW_ASYNC_ACTOR_GEN) {
                progress(ROW_ASYNC_ACTOR_GEN);
                rows.push(bench_async_actor_gen(plan, &actor)?);
            }
        }
        if wanted(ROW_ACTOR_CREATION) {
            progress(ROW_ACTOR_CREATION);
            rows.push(bench_actor_creation(plan.scaled(0.7))?);
        }
        let stats = ferroray::runtime_stats()?;
        ferroray::shutdown();
        eprintln!("runtime after the in-process rows: {stats:?}");
    }

    if wanted(ROW_WIRE_EXECUTE) {
        progress(ROW_WIRE_EXECUTE);
        rows.push(wire::bench_execute(plan)?);
    }
    if wanted(ROW_WIRE_TASK_DONE) {
        progress(ROW_WIRE_TASK_DONE);
        rows.push(wire::bench_task_done(plan)?);
    }

    if wanted(ROW_INIT) {
        progress(ROW_INIT);
        let runs = args.init_runs.unwrap_or(if args.quick { 3 } else { 5 }).max(1);
        rows.push(bench_init(runs)?);
    }
    if wanted(ROW_IDLE) {
        progress(ROW_IDLE);
        rows.push(bench_idle_memory(if args.quick { 500 } else { 2000 })?);
    }

    // tasks sync against the ceiling measured in this run.
    let pingpong = rows.iter().find(|r| r.name == ROW_PINGPONG).map(|r| r.value);
    if let (Some(pp), Some(row)) = (pingpong, rows.iter_mut().find(|r| r.name == ROW_TASKS_SYNC)) {
        if pp > 0.0 {
            row.baseline = Some(ROW_PINGPONG.to_string());
            row.fraction_of_baseline = Some(row.value / pp);
        }
    }

    let total = started.elapsed();
    eprintln!("[{:>5.1}s] done", total.as_secs_f64());
    print_table(&rows);
    for r in rows.iter().filter(|r| r.details.contains_key("derived_ns")) {
        println!(
            "{}: {:.0} ns direct, {:.0} ns through the wire structs, per message ({:.2}x), in the same run.",
            r.name,
            r.details["direct_ns"].as_f64().unwrap_or(f64::NAN),
            r.details["derived_ns"].as_f64().unwrap_or(f64::NAN),
            r.details["derived_over_direct"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let load_after = loadavg();
    if let (Some(b), Some(a)) = (load_before, load_after) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!("load average (1 min): {b:.2} before, {a:.2} after, on {cpus} CPUs.");
        if b.max(a) > 0.5 * cpus + 1.0 {
            println!("note: the machine was busy with other work; rates are noisy.");
        }
    }

    if let Some(path) = &args.json {
        let doc = json!({
            "benchmark": "ferroray-bench",
            "date_utc": utc_now(),
            "quick": args.quick,
            "total_seconds": total.as_secs_f64(),
            "machine": machine_info(),
            "loadavg_1min_before": load_before,
            "loadavg_1min_after": loadavg(),
            "ratio_convention": "x_better_than_ray_2_60 and x_of_target are 'x better': \
                above 1 means ferroray is better / meets the target, for rates \
                (value/reference) and for times and sizes (reference/value) alike; \
                fraction_of_baseline is value / baseline value",
            "ray_2_60_source": "docs/benchmarks.md, reference figures: Ray 2.60's `ray microbenchmark` and a \
                side-by-side script on a 2-core, 24 GiB machine like this one",
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rows measured in this process
// ---------------------------------------------------------------------------

/// The wire rows: one message encoded into a frame body and decoded back,
/// by the direct path (what frames use) and through the wire structs (the
/// path every message took before), alternately in the same process, so
/// the ratio holds however busy the machine is.
mod wire {
    use super::{median, Plan, Res, Row, ROW_WIRE_EXECUTE, ROW_WIRE_TASK_DONE};
    use ferroray_common::{resources, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId};
    use ferroray_protocol::frame::paths;
    use ferroray_protocol::{
        Encoding, FromNode, FunctionDescriptor, ObjectValue, Payload, ReturnKind, TaskArg, TaskOutcome, TaskSpec,
        ToNode, WireMessage,
    };
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    fn tid(seq: u64) -> TaskId {
        TaskId { submitter: WorkerId(0x0001_0000_0000_0002), seq }
    }

    /// A task as the driver sends it: two small arguments (as `add(a, b)`),
    /// one return, one CPU.
    fn spec() -> TaskSpec {
        let arg =
            |v: i64| TaskArg::Value { payload: Payload::Inline(v.to_le_bytes().to_vec()), encoding: Encoding::Rust };
        TaskSpec {
            task_id: tid(12_345),
            function: FunctionDescriptor::Rust { name: "ferroray_bench::add".into() },
            args: vec![arg(1), arg(2)],
            contained: vec![],
            returns: ReturnKind::Fixed(1),
            resources: ResourceSet::new().with(resources::CPU, 1.0),
            max_retries: 3,
            retry_exceptions: RetryExceptions::None,
            parent: None,
            enable_events: true,
            attempt: 0,
            actor: None,
        }
    }

    /// ns per round trip of `msg` (clone, encode, decode, drop) for each
    /// path, and for the clone and drop alone.
    fn rounds<M: WireMessage + Clone>(plan: Plan, msg: &M) -> Res<(Vec<f64>, Vec<f64>, f64)> {
        let mut buf = Vec::with_capacity(4096);
        let mut run = |direct: bool, span: Duration| -> Res<f64> {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < span {
                for _ in 0..256 {
                    buf.clear();
                    let back: M = if direct {
                        paths::encode_direct(msg.clone(), &mut buf);
                        paths::decode_direct(&buf)?
                    } else {
                        paths::encode_derived(msg.clone(), &mut buf);
                        paths::decode_derived(&buf)?
                    };
                    black_box(back);
                }
                n += 256;
            }
            Ok(t.elapsed().as_nanos() as f64 / n as f64)
        };
        let slice = plan.trial / 8;
        run(true, plan.warmup)?;
        run(false, plan.warmup)?;
        let (mut direct, mut derived) = (vec![], vec![]);
        for _ in 0..plan.trials * 4 {
            direct.push(run(true, slice)?);
            derived.push(run(false, slice)?);
        }
        let t = Instant::now();
        let n = 200_000;
        for _ in 0..n {
            black_box(black_box(msg).clone());
        }
        Ok((direct, derived, t.elapsed().as_nanos() as f64 / n as f64))
    }

    fn row<M: WireMessage + Clone>(plan: Plan, name: &str, what: &'static str, msg: &M) -> Res<Row> {
        let (direct, derived, clone) = rounds(plan, msg)?;
        // Per message: the round trip less the clone and drop of the
        // message it starts from.
        let net = |v: &[f64]| (median(v) - clone).max(1.0);
        let (d, w) = (net(&direct), net(&derived));
        let mut bytes = Vec::new();
        paths::encode_direct(msg.clone(), &mut bytes);
        Ok(Row::new(name, "ns", false, what, direct.iter().map(|v| (v - clone).max(1.0)).collect())
            .detail("direct_ns", d)
            .detail("derived_ns", w)
            .detail("derived_over_direct", w / d)
            .detail("clone_ns", clone)
            .detail("body_bytes", bytes.len())
            .detail("derived_trials_ns", derived.iter().map(|v| (v - clone).max(1.0)).collect::<Vec<_>>()))
    }

    pub fn bench_execute(plan: Plan) -> Res<Row> {
        let msg = FromNode::Execute(Box::new(spec()));
        row(
            plan,
            ROW_WIRE_EXECUTE,
            "encode and decode FromNode::Execute of a two-argument task (the direct path)",
            &msg,
        )
    }

    pub fn bench_task_done(plan: Plan) -> Res<Row> {
        let value = ObjectValue::Data {
            payload: Payload::Inline(3i64.to_le_bytes().to_vec()),
            encoding: Encoding::Rust,
            contained: Vec::<ObjectId>::new(),
        };
        let msg = ToNode::TaskDone { task_id: tid(12_345), attempt: 0, outcome: TaskOutcome::Returned(vec![value]) };
        row(plan, ROW_WIRE_TASK_DONE, "encode and decode ToNode::TaskDone with one small value (the direct path)", &msg)
    }
}

fn bench_tasks_sync(plan: Plan) -> Res<Row> {
    let trials = measure(plan.scaled(1.3), || {
        small_value::remote().get()?;
        Ok(1.0)
    })?;
    Ok(Row::new(
        ROW_TASKS_SYNC,
        "tasks/s",
        true,
        "submit one trivial task and get its result, repeated (one task in flight)",
        trials,
    )
    .ray(ray_2_60::TASKS_SYNC)
    .target(target::TASKS_SYNC))
}

fn bench_tasks_async(plan: Plan) -> Res<Row> {
    let trials = measure(plan.scaled(1.3), || {
        let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
        let v = ferroray::get_all(&refs)?;
        debug_assert_eq!(v.len(), 1000);
        Ok(1000.0)
    })?;
    Ok(Row::new(
        ROW_TASKS_ASYNC,
        "tasks/s",
        true,
        "submit 1,000 trivial tasks, get_all their results, repeated",
        trials,
    )
    .ray(ray_2_60::TASKS_ASYNC)
    .target(target::TASKS_ASYNC))
}

/// Items of one small-item generator per second, read as they come.
fn bench_gen_items(plan: Plan, backpressure: Option<ferroray::Backpressure>) -> Res<Row> {
    let per_task: u64 = if backpressure.is_some() { 2_000 } else { 20_000 };
    let trials = measure(plan, || {
        let mut opts = small_items::options();
        if let Some(n) = backpressure {
            opts = opts.generator_backpressure(n);
        }
        let mut n = 0u64;
        for r in opts.remote(per_task) {
            drop(r);
            n += 1;
        }
        if n != per_task {
            return Err(format!("generator gave {n} items, not {per_task}").into());
        }
        Ok(n as f64)
    })?;
    let (name, ray, goal, what) = match backpressure {
        None => (
            ROW_GEN_ITEMS,
            ray_2_60::GEN_ITEMS,
            target::GEN_ITEMS,
            "one generator task yielding 20,000 small items, each taken with next as it comes (no backpressure)",
        ),
        Some(_) => (
            ROW_GEN_ITEMS_BP1,
            ray_2_60::GEN_ITEMS_BP1,
            target::GEN_ITEMS_BP1,
            "one generator task yielding 2,000 small items with backpressure 1 (at most one unconsumed item)",
        ),
    };
    Ok(Row::new(name, "items/s", true, what, trials).ray(ray).target(goal))
}

/// Fresh generator tasks per second, each taken to its first item.
fn bench_gen_first_item(plan: Plan) -> Res<Row> {
    let trials = measure(plan, || {
        let mut g = small_items::remote(1);
        let first = g.next().ok_or("no first item")?;
        drop(first);
        drop(g);
        Ok(1.0)
    })?;
    Ok(Row::new(
        ROW_GEN_FIRST,
        "tasks/s",
        true,
        "submit a generator task and take its first item, repeated (one at a time)",
        trials,
    )
    .ray(ray_2_60::GEN_FIRST_ITEM)
    .target(target::GEN_FIRST_ITEM))
}

fn bench_actor_sync(plan: Plan, actor: &ferroray::ActorHandle<BenchActor>) -> Res<Row> {
    let trials = measure(plan.scaled(1.3), || {
        actor.incr().remote().get()?;
        Ok(1.0)
    })?;
    Ok(Row::new(ROW_ACTOR_SYNC, "calls/s", true, "call a method of one actor and get its result, repeated", trials)
        .ray(ray_2_60::ACTOR_SYNC)
        .target(target::ACTOR_SYNC))
}

/// Trials of 1,000 calls made at once and then `get_all` (calls/s).
fn calls_in_flight(plan: Plan, call: impl Fn() -> ferroray::ObjectRef<u64>) -> Res<Vec<f64>> {
    measure(plan.scaled(1.3), || {
        let refs: Vec<_> = (0..1000).map(|_| call()).collect();
        ferroray::get_all(&refs)?;
        Ok(1000.0)
    })
}

/// Trials of a generator call whose items are each read as they come
/// (items/s), and the items per call.
fn items_as_they_come(plan: Plan, gen: impl Fn(u64) -> ferroray::ObjectRefGenerator<u64>) -> Res<(Vec<f64>, u64)> {
    let n = if plan.trial < Duration::from_millis(500) { 2_000 } else { 10_000 };
    let trials = measure(plan, || {
        let mut got = 0u64;
        for r in gen(n) {
            r.get()?;
            got += 1;
        }
        Ok(got as f64)
    })?;
    Ok((trials, n))
}

fn bench_actor_async(plan: Plan, actor: &ferroray::ActorHandle<BenchActor>) -> Res<Row> {
    let trials = calls_in_flight(plan, || actor.incr().remote())?;
    Ok(Row::new(
        ROW_ACTOR_ASYNC,
        "calls/s",
        true,
        "make 1,000 method calls on one actor, get_all their results, repeated",
        trials,
    )
    .ray(ray_2_60::ACTOR_ASYNC)
    .target(target::ACTOR_ASYNC))
}

fn bench_actor_gen(plan: Plan, actor: &ferroray::ActorHandle<BenchActor>) -> Res<Row> {
    let (trials, n) = items_as_they_come(plan, |n| actor.items().remote(n))?;
    Ok(Row::new(
        ROW_ACTOR_GEN,
        "items/s",
        true,
        "a generator method streaming small items, each read as it comes",
        trials,
    )
    .ray(ray_2_60::ACTOR_GEN_ITEMS)
    .target(target::ACTOR_GEN_ITEMS)
    .detail("items_per_call", n))
}

fn bench_async_actor_async(plan: Plan, actor: &ferroray::ActorHandle<BenchAsyncActor>) -> Res<Row> {
    let trials = calls_in_flight(plan, || actor.incr().remote())?;
    Ok(Row::new(
        ROW_ASYNC_ACTOR_ASYNC,
        "calls/s",
        true,
        "make 1,000 calls of an async method on one async actor, get_all their results, repeated",
        trials,
    )
    .ray(ray_2_60::ASYNC_ACTOR_ASYNC)
    .target(target::ASYNC_ACTOR_ASYNC))
}

fn bench_async_actor_gen(plan: Plan, actor: &ferroray::ActorHandle<BenchAsyncActor>) -> Res<Row> {
    let (trials, n) = items_as_they_come(plan, |n| actor.items().remote(n))?;
    Ok(Row::new(
        ROW_ASYNC_ACTOR_GEN,
        "items/s",
        true,
        "an async generator method of an async actor streaming small items, each read as it comes",
        trials,
    )
    .ray(ray_2_60::ASYNC_ACTOR_GEN_ITEMS)
    .target(target::ASYNC_ACTOR_GEN_ITEMS)
    .detail("items_per_call", n))
}

fn bench_actor_creation(plan: Plan) -> Res<Row> {
    let trials = measure(plan, || {
        let actor = BenchActor::remote();
        actor.incr().remote().get()?;
        Ok(1.0)
    })?;
    Ok(Row::new(
        ROW_ACTOR_CREATION,
        "actors/s",
        true,
        "create an actor (a process of its own) and get the result of its first call, repeated",
        trials,
    )
    .ray(ray_2_60::ACTOR_CREATION)
    .target(target::ACTOR_CREATION))
}

/// MB/s of a generator streaming 8 large items, each read (zero-copy) and dropped.
fn bench_gen_large(plan: Plan, len: usize) -> Res<Row> {
    let mb = len as f64 / 1e6;
    let trials = measure(plan, || {
        let mut n = 0;
        for r in large_items::remote(8, len) {
            let b = r.get()?;
            if b.len() != len || b[len / 2] != 7 {
                return Err("a large generator item came back wrong".into());
            }
            n += 1;
        }
        if n != 8 {
            return Err(format!("got {n} large items, not 8").into());
        }
        Ok(8.0 * mb)
    })?;
    Ok(Row::new(
        ROW_GEN_LARGE,
        "MB/s",
        true,
        "a generator yielding 8 items of 100 MB (one buffer, stored anew each time), each read and dropped; MB = 1e6 bytes",
        trials,
    )
    .detail("item_bytes", len as u64)
    .ray(ray_2_60::GEN_LARGE_MB_S)
    .target(target::GEN_LARGE_MB_S))
}

fn bench_put_calls(plan: Plan) -> Res<Row> {
    let trials = measure(plan, || {
        let r = ferroray::put(0i64)?;
        drop(r);
        Ok(1.0)
    })?;
    Ok(Row::new(ROW_PUT_CALLS, "calls/s", true, "ferroray::put(0i64), the ref dropped at once, repeated", trials)
        .ray(ray_2_60::PUT_CALLS)
        .target(target::PUT_CALLS))
}

fn bench_get_calls(plan: Plan) -> Res<Row> {
    let r = ferroray::put(0i64)?;
    let trials = measure(plan, || {
        let v = r.get()?;
        debug_assert_eq!(v, 0);
        Ok(1.0)
    })?;
    Ok(Row::new(ROW_GET_CALLS, "calls/s", true, "get of one small ready object (a put i64), repeated", trials)
        .ray(ray_2_60::GET_CALLS)
        .target(target::GET_CALLS))
}

fn bench_put_gigabytes(plan: Plan, mib: usize) -> Res<Row> {
    let len = mib << 20;
    let gb = len as f64 / 1e9;
    // The same data as a Buffer (serialized as one byte string: a memcpy)
    // and as a Vec<u8> (serde sees a sequence of u8).
    let vec: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let buf = ferroray::Buffer::from(vec.clone());

    let buffer_trials = measure(plan, || {
        let r = ferroray::put(buf.clone())?;
        drop(r);
        Ok(gb)
    })?;
    let vec_trials = measure(plan, || {
        let r = ferroray::put(&vec)?;
        drop(r);
        Ok(gb)
    })?;
    // One read back, to check the buffer round-trips (not timed).
    let check = ferroray::put(buf.clone())?.get()?;
    if check.len() != len || check[len - 1] != buf[len - 1] {
        return Err("put gigabytes: the buffer read back differs".into());
    }
    let zero_copy_get = check.is_shared_memory();
    drop(check);
    // Ceilings for the same size, outside the runtime.
    let (hot, fresh) = memcpy_ceilings(plan, &vec)?;

    let (b, v) = (median(&buffer_trials), median(&vec_trials));
    let (trials, winner) =
        if b >= v { (buffer_trials.clone(), "ferroray::Buffer") } else { (vec_trials.clone(), "Vec<u8>") };
    Ok(Row::new(
        ROW_PUT_GB,
        "GB/s",
        true,
        "ferroray::put of one large byte buffer (the faster of Buffer and Vec<u8>), \
         the ref dropped at once, repeated; GB = 1e9 bytes",
        trials,
    )
    .detail("buffer_mib", mib as u64)
    .detail("faster_type", winner)
    .detail("buffer_gb_per_s", b)
    .detail("buffer_trials", buffer_trials)
    .detail("vec_u8_gb_per_s", v)
    .detail("vec_u8_trials", vec_trials)
    .detail("get_is_zero_copy_view", zero_copy_get)
    .detail("memcpy_hot_gb_per_s", hot)
    .detail("memcpy_fresh_shm_pages_gb_per_s", fresh)
    .detail(
        "ray_note",
        "Ray's row puts np.zeros(100 * 1024 * 1024, dtype=np.int64) (800 MiB) and \
         counts 0.8 GB per call; its figure on this machine is not known",
    ))
}

/// GB/s of a plain memcpy of `src` into memory already touched (hot), and
/// into fresh pages of a shared memfd mapping whose pages are released after
/// each copy (what a store that punches holes in freed objects pays).
fn memcpy_ceilings(plan: Plan, src: &[u8]) -> Res<(f64, f64)> {
    let gb = src.len() as f64 / 1e9;
    let plan = plan.scaled(0.3);
    let mut dst = vec![1u8; src.len()];
    let hot = median(&measure(plan, || {
        dst.copy_from_slice(std::hint::black_box(src));
        std::hint::black_box(&dst);
        Ok(gb)
    })?);
    drop(dst);
    // SAFETY: plain syscalls on a memfd and a mapping owned here; the
    // mapping is unmapped before the fd is closed and never escapes.
    let fresh = unsafe {
        let fd = libc::memfd_create(c"ferroray-bench".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let len = src.len();
        let r = (|| -> Res<f64> {
            if libc::ftruncate(fd, len as libc::off_t) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            let rates = measure(plan, || {
                let p =
                    libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
                if p == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error().into());
                }
                std::ptr::copy_nonoverlapping(src.as_ptr(), p as *mut u8, len);
                libc::munmap(p, len);
                libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, len as libc::off_t);
                Ok(gb)
            })?;
            Ok(median(&rates))
        })();
        libc::close(fd);
        r?
    };
    Ok((hot, fresh))
}

fn bench_wait_1k(plan: Plan) -> Res<Row> {
    // Ray's `single client wait 1k refs` (ray/_private/ray_perf.py): one
    // round submits 1,000 tasks, then calls ray.wait(not_ready) (num_returns
    // 1) until nothing is left: 1,000 wait calls over a shrinking list.
    let mut wait_calls = 0u64;
    let trials = measure(plan.scaled(1.3), || {
        let mut not_ready: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
        while !not_ready.is_empty() {
            let (ready, rest) = ferroray::wait(&not_ready, 1, None)?;
            if ready.is_empty() {
                return Err("wait(num_returns=1, no timeout) returned nothing".into());
            }
            not_ready = rest;
            wait_calls += 1;
        }
        Ok(1.0)
    })?;
    Ok(Row::new(
        ROW_WAIT_1K,
        "rounds/s",
        true,
        "Ray's row: submit 1,000 tasks, then wait(not_ready, num_returns=1) until all \
         are ready (about 1,000 wait calls over a shrinking list); rounds per second",
        trials,
    )
    .ray(ray_2_60::WAIT_1K)
    .target(target::WAIT_1K)
    .detail("wait_calls_total", wait_calls))
}

fn bench_wait_1k_ready(plan: Plan) -> Res<Row> {
    let refs: Vec<_> = (0..1000i64).map(ferroray::put).collect::<ferroray::Result<_>>()?;
    let trials = measure(plan, || {
        let (ready, rest) = ferroray::wait(&refs, 1000, None)?;
        if ready.len() != 1000 || !rest.is_empty() {
            return Err(format!("wait on 1,000 ready refs gave {} ready, {} not ready", ready.len(), rest.len()).into());
        }
        Ok(1.0)
    })?;
    Ok(Row::new(
        ROW_WAIT_1K_READY,
        "calls/s",
        true,
        "ferroray::wait(&refs, 1000, None) on 1,000 ready (put) refs, repeated",
        trials,
    )
    .target(target::WAIT_1K)
    .detail("note", "not Ray's workload (see single client wait 1k refs), so no Ray ratio"))
}

// ---------------------------------------------------------------------------
// Unix-socket ping-pong baseline
// ---------------------------------------------------------------------------

fn bench_pingpong(plan: Plan) -> Res<Row> {
    let path = std::env::temp_dir().join(format!(
        "ferroray-bench-{}-{}.sock",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos()
    ));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let mut child =
        Command::new(std::env::current_exe()?).arg("--pingpong-peer").arg(&path).stdin(Stdio::null()).spawn()?;
    let accepted = accept_within(&listener, Duration::from_secs(10));
    let _ = std::fs::remove_file(&path);
    let mut sock = match accepted {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let result = measure(plan.scaled(0.7), || {
        let mut b = [7u8; 1];
        sock.write_all(&b)?;
        sock.read_exact(&mut b)?;
        Ok(1.0)
    });
    drop(sock); // the peer sees EOF and exits
    let _ = child.wait();
    Ok(Row::new(
        ROW_PINGPONG,
        "round trips/s",
        true,
        "baseline: two processes, 1-byte request and 1-byte reply over a Unix stream \
         socket, blocking read/write; the ceiling for tasks sync",
        result?,
    ))
}

fn accept_within(listener: &UnixListener, limit: Duration) -> Res<UnixStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err("the ping-pong peer did not connect within 10 s".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Child mode: echo every byte until EOF.
fn pingpong_peer(path: &Path) -> Res<()> {
    // SAFETY: plain syscall; the peer should not outlive the benchmark.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let mut s = UnixStream::connect(path)?;
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => s.write_all(&b)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// init to first result (fresh processes)
// ---------------------------------------------------------------------------

const INIT_TAG: &str = "FERRORAY_BENCH_INIT_MS";
const SHUTDOWN_TAG: &str = "FERRORAY_BENCH_SHUTDOWN_MS";
const IDLE_TAG: &str = "FERRORAY_BENCH_IDLE";
const REMOTE_TAG: &str = "FERRORAY_BENCH_TASK_IN_WORKER";

/// Child mode: the time from before `init` to the first result.
fn init_probe() -> Res<()> {
    let t0 = Instant::now();
    ferroray::init()?;
    let v = add::remote(1, 2).get()?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if v != 3 {
        return Err(format!("add(1, 2) gave {v}").into());
    }
    println!("{INIT_TAG} {ms}");
    let pid = worker_pid::remote().get()?;
    println!("{REMOTE_TAG} {}", pid != std::process::id());
    std::io::stdout().flush()?;
    let t1 = Instant::now();
    ferroray::shutdown();
    println!("{SHUTDOWN_TAG} {}", t1.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

fn run_child(args: &[&str], limit: Duration) -> Res<(String, Duration)> {
    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = String::new();
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    // Read on a thread so that a hung child can be killed at the limit.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("child {args:?} did not finish within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = t.elapsed();
    out.push_str(&reader.join().map_err(|_| "reader thread panicked")?);
    if !status.success() {
        return Err(format!("child {args:?} failed ({status}); output: {out}").into());
    }
    Ok((out, wall))
}

fn tagged<'a>(out: &'a str, tag: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(tag).map(|rest| rest.trim()))
}

fn bench_init(runs: usize) -> Res<Row> {
    let mut init_ms = Vec::new();
    let mut wall_ms = Vec::new();
    let mut shutdown_ms = Vec::new();
    for _ in 0..runs {
        let (out, wall) = run_child(&["--init-probe"], Duration::from_secs(60))?;
        let ms: f64 =
            tagged(&out, INIT_TAG).ok_or_else(|| format!("init probe printed no {INIT_TAG}: {out:?}"))?.parse()?;
        init_ms.push(ms);
        wall_ms.push(wall.as_secs_f64() * 1e3);
        if let Some(s) = tagged(&out, SHUTDOWN_TAG).and_then(|s| s.parse::<f64>().ok()) {
            shutdown_ms.push(s);
        }
        if tagged(&out, REMOTE_TAG) != Some("true") {
            return Err(format!("init probe: the task did not run in a worker process: {out:?}").into());
        }
    }
    Ok(Row::new(
        ROW_INIT,
        "ms",
        false,
        "fresh process each run: from before ferroray::init() to the value of the first \
         add::remote(1, 2).get(); median of the runs",
        init_ms,
    )
    .ray(ray_2_60::INIT_MS)
    .target(target::INIT_MS)
    .detail("runs", runs as u64)
    .detail("process_wall_ms_median", median(&wall_ms))
    .detail("process_wall_ms", wall_ms)
    .detail("shutdown_ms", shutdown_ms)
    .detail("ray_note", "Ray 2.60 measured 2,900 to 3,800 ms here; 3,300 ms used for the ratio"))
}

// ---------------------------------------------------------------------------
// Idle resident memory (fresh process)
// ---------------------------------------------------------------------------

/// Child mode: start the runtime, run tasks so workers exist, go idle, then
/// print the memory of this process and all its descendants.
fn idle_probe(idle: Duration) -> Res<()> {
    ferroray::init()?;
    let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
    ferroray::get_all(&refs)?;
    drop(refs);
    for _ in 0..100 {
        small_value::remote().get()?;
    }
    let small = ferroray::put(0i64)?;
    small.get()?;
    drop(small);
    let workers = ferroray::runtime_stats()?.workers;
    std::thread::sleep(idle);
    let tree = process_tree_memory(std::process::id())?;
    let mut v = tree.to_json();
    v["runtime_workers"] = json!(workers);
    println!("{IDLE_TAG} {}", serde_json::to_string(&v)?);
    std::io::stdout().flush()?;
    ferroray::shutdown();
    Ok(())
}

fn bench_idle_memory(idle_ms: u64) -> Res<Row> {
    let idle_arg = idle_ms.to_string();
    let (out, _) = run_child(&["--idle-probe", "--idle-ms", &idle_arg], Duration::from_secs(120))?;
    let line = tagged(&out, IDLE_TAG).ok_or_else(|| format!("idle probe printed no {IDLE_TAG}: {out:?}"))?;
    let v: Value = serde_json::from_str(line)?;
    let rss_mb = v["rss_total_mb"].as_f64().ok_or("idle probe: no rss_total_mb")?;
    let mut row = Row::new(
        ROW_IDLE,
        "MB",
        false,
        "fresh process: init, 1,100 tasks (so workers exist), idle, then the sum of \
         VmRSS of the driver and all its descendant processes (MB = MiB)",
        vec![rss_mb],
    )
    .ray(ray_2_60::IDLE_MB)
    .target(target::IDLE_MB)
    .detail("idle_ms_before_measuring", idle_ms);
    if let Value::Object(m) = v {
        for (k, val) in m {
            row.details.insert(k, val);
        }
    }
    Ok(row)
}

#[derive(Default, Debug)]
struct ProcMem {
    pid: u32,
    comm: String,
    rss_kb: u64,
    rss_anon_kb: u64,
    rss_file_kb: u64,
    rss_shmem_kb: u64,
    pss_kb: Option<u64>,
}

struct TreeMem {
    procs: Vec<ProcMem>,
}

impl TreeMem {
    fn to_json(&self) -> Value {
        let mb = |kb: u64| kb as f64 * 1024.0 / MIB;
        let sum = |f: &dyn Fn(&ProcMem) -> u64| self.procs.iter().map(f).sum::<u64>();
        let pss: Option<u64> = self.procs.iter().map(|p| p.pss_kb).sum();
        let driver = self.procs.first();
        json!({
            "rss_total_mb": mb(sum(&|p| p.rss_kb)),
            "rss_anon_total_mb": mb(sum(&|p| p.rss_anon_kb)),
            "rss_file_total_mb": mb(sum(&|p| p.rss_file_kb)),
            "rss_shmem_total_mb": mb(sum(&|p| p.rss_shmem_kb)),
            "pss_total_mb": pss.map(mb),
            "driver_rss_mb": driver.map(|p| mb(p.rss_kb)),
            "processes": self.procs.len(),
            "per_process": self.procs.iter().map(|p| json!({
                "pid": p.pid,
                "comm": p.comm,
                "rss_mb": mb(p.rss_kb),
                "pss_mb": p.pss_kb.map(mb),
            })).collect::<Vec<_>>(),
        })
    }
}

/// `root` and all its descendants (by walking every /proc/PID/stat's ppid),
/// root first.
fn process_tree_memory(root: u32) -> Res<TreeMem> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let _state = f.next();
        if let Some(ppid) = f.next().and_then(|s| s.parse::<u32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut order = vec![root];
    let mut i = 0;
    while i < order.len() {
        if let Some(c) = children.get(&order[i]) {
            order.extend(c.iter().copied());
        }
        i += 1;
    }
    let mut procs = Vec::new();
    for pid in order {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        let comm = status.lines().find_map(|l| l.strip_prefix("Name:")).unwrap_or("").trim().to_string();
        let pss_kb = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        });
        procs.push(ProcMem {
            pid,
            comm,
            rss_kb: field("VmRSS:"),
            rss_anon_kb: field("RssAnon:"),
            rss_file_kb: field("RssFile:"),
            rss_shmem_kb: field("RssShmem:"),
            pss_kb,
        });
    }
    if procs.is_empty() {
        return Err(format!("cannot read /proc/{root}/status").into());
    }
    Ok(TreeMem { procs })
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 1000.0 {
        // thousands separators
        let s = format!("{:.0}", v);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => String::new(),
        Some(r) if r >= 100.0 => format!("{r:.0}x"),
        Some(r) if r >= 10.0 => format!("{r:.1}x"),
        Some(r) => format!("{r:.2}x"),
    }
}

fn print_table(rows: &[Row]) {
    let header = ["row", "value", "unit", "Ray 2.60", "x better than Ray", "target", "x of target", "vs ping-pong"];
    let mut lines: Vec<[String; 8]> = Vec::new();
    for r in rows {
        let target = r.target.map(|t| if r.higher_is_better { fmt_value(t) } else { format!("< {}", fmt_value(t)) });
        lines.push([
            r.name.clone(),
            fmt_value(r.value),
            r.unit.to_string(),
            r.ray_2_60.map(fmt_value).unwrap_or_default(),
            fmt_ratio(r.x_better_than_ray_2_60),
            target.unwrap_or_default(),
            fmt_ratio(r.x_of_target),
            r.fraction_of_baseline.map(|f| format!("{:.0}%", f * 100.0)).unwrap_or_default(),
        ]);
    }
    let mut w = header.map(str::len);
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let right = [false, true, false, true, true, true, true, true];
    let fmt_line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if right[i] {
                s.push_str(&format!(" {}{} |", " ".repeat(pad), c));
            } else {
                s.push_str(&format!(" {}{} |", c, " ".repeat(pad)));
            }
        }
        s
    };
    println!("{}", fmt_line(&header.map(String::from)));
    let mut sep = String::from("|");
    for (i, n) in w.iter().enumerate() {
        if right[i] {
            sep.push_str(&format!(" {}: |", "-".repeat(n - 1)));
        } else {
            sep.push_str(&format!(" {} |", "-".repeat(*n)));
        }
    }
    println!("{sep}");
    for l in &lines {
        println!("{}", fmt_line(l));
    }
    println!();
    println!(
        "\"x better\": above 1 = ferroray ahead (rates: value/reference; ms and MB: \
         reference/value). \"vs ping-pong\": tasks sync as a share of the socket ceiling."
    );
    for r in rows {
        if r.name == ROW_PUT_GB {
            let get = |k: &str| r.details.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            println!(
                "put gigabytes: {} MiB per put; Buffer {:.2} GB/s, Vec<u8> {:.2} GB/s; \
                 plain memcpy: {:.1} GB/s into touched memory, {:.2} GB/s into fresh shm pages (map, copy, unmap, punch).",
                r.details.get("buffer_mib").and_then(Value::as_u64).unwrap_or(0),
                get("buffer_gb_per_s"),
                get("vec_u8_gb_per_s"),
                get("memcpy_hot_gb_per_s"),
                get("memcpy_fresh_shm_pages_gb_per_s"),
            );
        }
        if r.name == ROW_IDLE {
            let get = |k: &str| r.details.get(k).and_then(Value::as_f64);
            println!(
                "idle memory: {} processes; driver {:.1} MB; PSS total {} MB; shmem in RSS {:.1} MB.",
                r.details.get("processes").and_then(Value::as_u64).unwrap_or(0),
                get("driver_rss_mb").unwrap_or(0.0),
                get("pss_total_mb").map_or("?".into(), |v| format!("{v:.1}")),
                get("rss_shmem_total_mb").unwrap_or(0.0),
            );
        }
        if r.name == ROW_INIT {
            println!(
                "init: per run {:?} ms; whole child process (exec to exit) median {:.1} ms.",
                r.trials.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
                r.details.get("process_wall_ms_median").and_then(Value::as_f64).unwrap_or(0.0),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Machine and date
// ---------------------------------------------------------------------------

fn machine_info() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).ok();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": mem_kb.map(|k| k as f64 / MIB),
        "kernel": kernel,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "debug_build": cfg!(debug_assertions),
    })
}

/// The 1-minute load average.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// "YYYY-MM-DDTHH:MM:SSZ" from the system clock.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_point_the_right_way() {
        let fast = Row::new("r", "tasks/s", true, "", vec![2000.0]).ray(1000.0);
        assert_eq!(fast.x_better_than_ray_2_60, Some(2.0));
        let quick_init = Row::new("t", "ms", false, "", vec![50.0]).ray(3300.0).target(100.0);
        assert_eq!(quick_init.x_better_than_ray_2_60, Some(66.0));
        assert_eq!(quick_init.x_of_target, Some(2.0));
    }

    #[test]
    fn median_and_format() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(fmt_value(1_234_567.4), "1,234,567");
        assert_eq!(fmt_value(12.345), "12.3");
        assert!(utc_now().ends_with('Z'));
    }

    #[test]
    fn finds_own_process() {
        let t = process_tree_memory(std::process::id()).unwrap();
        assert_eq!(t.procs[0].pid, std::process::id());
        assert!(t.procs[0].rss_kb > 0);
    }
}
