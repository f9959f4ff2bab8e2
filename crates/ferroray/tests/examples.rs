//! Runs every example program of this crate as a child process and checks
//! that it succeeds and prints what it shows.
//!
//! The examples are found beside this test binary: it is
//! `<target>/<profile>/deps/examples-HASH`, they are
//! `<target>/<profile>/examples/<name>`. `cargo test` builds them with the
//! tests; `cargo test --test examples` and `cargo nextest run --test
//! examples` do not, so an example that is missing or older than its source
//! or than the `ferroray` library is (re)built with `cargo build --example`.
//!
//! One test per example, so that nextest runs them in parallel.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Longest an example may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `<target>/<profile>`, from this test binary's path.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let dir = exe.parent().expect("test binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// When the `ferroray` library the examples link was last built (its newest
/// `deps/libferroray-HASH.rlib`; it is rebuilt whenever a crate below it
/// changes), or else this test binary's time.
fn library_mtime(profile: &Path) -> Option<SystemTime> {
    let from_deps = std::fs::read_dir(profile.join("deps"))
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libferroray-") && name.ends_with(".rlib")
        })
        .filter_map(|e| mtime(&e.path()))
        .max();
    from_deps.or_else(|| std::env::current_exe().ok().and_then(|e| mtime(&e)))
}

/// The example's binary, built first if it is missing or may be stale.
fn example_binary(name: &str) -> PathBuf {
    let profile = profile_dir();
    let bin = profile.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.rs"));
    let built = mtime(&bin);
    let newest_input = [mtime(&source), library_mtime(&profile)].into_iter().flatten().max();
    let fresh =
        matches!((built, newest_input), (Some(b), Some(i)) if b >= i) || (built.is_some() && newest_input.is_none());
    if !fresh {
        build_example(name, &profile);
    }
    assert!(bin.exists(), "example binary {} missing after building", bin.display());
    bin
}

fn build_example(name: &str, profile: &Path) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", "ferroray", "--example", name])
        .stdin(Stdio::null());
    if let Some(target_dir) = profile.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("running cargo build --example");
    assert!(out.status.success(), "cargo build --example {name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
fn drain(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut pipe = pipe;
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Kills the example and whatever it started (its own process group).
fn kill_group(child: &mut Child) {
    // SAFETY: plain kill(2) on the process group this test created.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs the example with a timeout; panics (after killing it) on timeout.
fn run(name: &str) -> Output {
    let bin = example_binary(name);
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = loop {
        match child.try_wait().expect("polling the example") {
            Some(status) => break Some(status),
            None if start.elapsed() > TIMEOUT => {
                kill_group(&mut child);
                break None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let elapsed = start.elapsed();
    // A leftover process holding the pipes must not hang the test.
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| "<output not closed 5 s after exit>".into())
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    let Some(status) = status else {
        panic!("example {name} timed out after {TIMEOUT:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    };
    Output { success: status.success(), status: status.to_string(), stdout, stderr, elapsed }
}

/// Runs the example; checks it succeeds and prints each of `expected`
/// (substrings of its stdout).
fn check(name: &str, expected: &[&str]) -> Output {
    let out = run(name);
    let report = format!(
        "example {name} ({}, {:.2} s)\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        out.elapsed.as_secs_f64(),
        out.stdout,
        out.stderr
    );
    assert!(out.success, "failed: {report}");
    for line in expected {
        assert!(out.stdout.contains(line), "missing {line:?} in the output of {report}");
    }
    println!("{report}");
    out
}

#[test]
fn tasks_basic() {
    check("tasks_basic", &["my_function::remote() returned 1"]);
}

#[test]
fn tasks_parallel() {
    check("tasks_parallel", &["4 tasks of 1.0 s each finished in", "the tasks ran in parallel"]);
}

#[test]
fn tasks_resources() {
    check(
        "tasks_resources",
        &[
            "my_function ran with num_cpus = 4, num_gpus = 2",
            "my_function ran with options().num_cpus(3.0)",
            "num_gpus = 3 is infeasible",
            "resource requirements respected",
        ],
    );
}

#[test]
fn tasks_passing_refs() {
    check(
        "tasks_passing_refs",
        &[
            "function_with_an_argument(my_function()) = 2",
            "function_with_an_argument(put(41)) = 42",
            "the second task waited for the first",
        ],
    );
}

#[test]
fn tasks_wait() {
    check(
        "tasks_wait",
        &[
            "wait returned the 200 ms task",
            "first of two: the faster task came back first",
            "completion order: results arrived as tasks finished",
            "fetched in batches of 4: [4, 4, 2]",
        ],
    );
}

#[test]
fn tasks_multiple_returns() {
    check("tasks_multiple_returns", &["return_single: one ref to (0, 1, 2)", "return_multiple: three refs to 0, 1, 2"]);
}

#[test]
fn tasks_cancel() {
    check(
        "tasks_cancel",
        &[
            "Object reference was cancelled (cooperatively",
            "Object reference was cancelled (forced",
            "Object reference was cancelled (grace 0.3 s",
            "Queued task was cancelled before it ran.",
            "all cancelled tasks gave TaskCancelled",
        ],
    );
}

#[test]
fn quick_sort() {
    check("quick_sort", &["distributed quick sort (nested tasks)", "distributed result equals the local sort"]);
}

#[test]
fn batching() {
    check("batching", &["batching speed-up:", "fine-grained and batched results are equal"]);
}

#[test]
fn anti_patterns() {
    check(
        "anti_patterns",
        &[
            "get in a loop:",
            "reduce(get(rollout))",
            "pass_via_nested_ref: 3",
            "pass_via_direct_arg: 3",
            "nested refs summed to 3; direct ref args summed to 3",
        ],
    );
}

// Ray's guides "Ray generators" and "Dynamic generators", one example per topic.

#[test]
fn gen_basic() {
    check(
        "gen_basic",
        &[
            "next(gen) -> 0  (task still running: true)",
            "next(gen) -> 1",
            "for loop -> 4",
            "items stream while the task runs",
            "the unpolled generator ran to completion on its own: [0, 1, 2, 3, 4] were all ready",
        ],
    );
}

#[test]
fn gen_errors() {
    check(
        "gen_errors",
        &[
            "ray.get(next(gen)) = 0",
            "Exception is raised when i == 1 as expected",
            "then next(gen) gives None: the stream has ended",
            "items in order: 0, then the error, then the end",
            "read_source(\"numbers\") -> [10, 11, 12]",
            "read_source(\"missing\") failed before its first item: cannot open missing",
        ],
    );
}

#[test]
fn gen_async() {
    check("gen_async", &["[t1] 4", "[t2] 4", "both consumers got [0, 1, 2, 3, 4], interleaved on one thread"]);
}

#[test]
fn gen_gc() {
    check(
        "gen_gc",
        &[
            "kept generator, task finished: store_objects = 5",
            "task finished:                  store_objects = 1",
            "ref1 is still readable: 1048576 bytes of 0",
            "after dropping ref1:            store_objects = 0, node_objects = 0, local_refs = 0",
        ],
    );
}

#[test]
fn gen_cancel() {
    check(
        "gen_cancel",
        &[
            "a later next(gen) gave a ref holding TaskCancelled, then None",
            "queued generator after cancel: [Err(TaskCancelled)]",
            "close(): the endless task ended",
            "the CPU is free again: a new generator gave [0, 1, 2]",
        ],
    );
}

#[test]
fn gen_wait() {
    check(
        "gen_wait",
        &[
            "completed() is ready: the task ended; its items: [0, 1, 2, 3, 4]",
            "timeout 0, nothing is ready: ready 0, unready 1",
            "wait without timeout: the next item is ready: ready 1, unready 0",
            "timeout 0 again: the next item is not ready: ready 0, unready 1",
            "regular task result 100",
            "collected every generator item and the regular result with wait",
        ],
    );
}

#[test]
fn gen_backpressure() {
    let out = check(
        "gen_backpressure",
        &[
            "produced 0",
            "consumed 5",
            "each item was started only after the consumer asked for the one before",
            "all 6 items were produced before the consumer took the first one",
            "Backpressure::new(0): None",
        ],
    );
    // The producer's lines come from the worker (forwarded by the node).
    assert!(out.stdout.lines().any(|l| l.starts_with("(producer pid=") && l.ends_with("produced 5")));
}

#[test]
fn gen_num_returns() {
    check(
        "gen_num_returns",
        &[
            "yielded return value 2",
            "both give 3 refs to the same 3 values of 1000 int8s",
            "ref3: error: error",
            "ref4: error: error",
            "ref1, ref2 = 0, 1; ref3: error: error",
            "ferroray reports the exception raised after the last value in every ref",
            "ref2: error: yielded more than num_returns = 2 values",
            "ref2: error: yielded 1 values but num_returns = 2",
        ],
    );
}

#[test]
fn gen_dynamic() {
    check(
        "gen_dynamic",
        &[
            "Split array of size",
            "blocks were freed",
            "get_size got a DynamicObjectRefGenerator of",
            "get_size(dynamic_ref) = ",
            "get_size(ref_generator) = ",
        ],
    );
}

/// The README's main example: streaming generators on the embedded cluster.
#[test]
fn streaming() {
    check(
        "streaming",
        &[
            "-- items arrive while the task runs",
            "error as expected: task failing_task",
            "async item 2",
            "(consumer sleeps 300 ms before reading: only 2 were produced)",
            "consumed 5",
            "ready right away: 0",
            "ready after waiting: 1; next item: 0",
            "task completed: true",
            "streaming example done",
        ],
    );
}

#[test]
fn monte_carlo_pi() {
    check("monte_carlo_pi", &["Progress: 100%", "Estimated value of π is: 3.14"]);
}

#[test]
fn actor_generators() {
    check(
        "actor_generators",
        &[
            "Actor.f yielded [0, 1, 2, 3, 4]",
            "AsyncActor.f yielded [0, 1, 2, 3, 4]",
            "ThreadedActor.f yielded [0, 1, 2, 3, 4]",
        ],
    );
}
