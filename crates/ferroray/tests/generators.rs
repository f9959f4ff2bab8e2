//! Streaming generators: declaring them, the `ObjectRefGenerator` handle,
//! the streaming protocol (items while the task runs, in order, exactly once
//! across retries), errors in order, backpressure, drop and GC, wait and
//! cancel, and generators with fixed and dynamic returns.

mod common;

use common::{cluster_with, eventually, get, scratch_dir, T};
use ferroray::{Buffer, Config, DynamicObjectRefGenerator, Error, ObjectRef, ObjectRefGenerator, WaitItem};
use std::path::Path;
use std::time::{Duration, Instant};

fn cluster() -> common::Cluster {
    cluster_with(Config::default().num_cpus(2))
}

fn mark(dir: &str, name: impl std::fmt::Display) {
    std::fs::write(Path::new(dir).join(name.to_string()), "").unwrap();
}

fn count_marks(dir: &str, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count())
        .unwrap_or(0)
}

#[ferroray::remote]
fn count(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

#[ferroray::remote]
fn slow_count(n: u64, ms: u64) -> impl Iterator<Item = u64> {
    (0..n).inspect(move |_| {
        std::thread::sleep(Duration::from_millis(ms));
    })
}

/// Yields item 0, then waits for the test to create `go` before ending.
#[ferroray::remote]
fn first_then_wait(dir: String) -> impl Iterator<Item = u64> {
    (0..2).inspect(move |&i| {
        if i == 1 {
            while !Path::new(&dir).join("go").exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    })
}

#[ferroray::remote]
async fn async_count(n: u64) -> impl futures::Stream<Item = u64> {
    futures::stream::iter(0..n)
}

/// An async generator on tokio's timer between items.
#[ferroray::remote]
async fn tokio_ticks(n: u64) -> impl futures::Stream<Item = u64> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    futures::stream::unfold(0, move |i| async move {
        if i == n {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((i, i + 1))
    })
}

#[ferroray::remote]
fn fail_at(n: u64, k: u64) -> impl Iterator<Item = Result<u64, String>> {
    (0..n).map(move |i| if i == k { Err(format!("failed at {i}")) } else { Ok(i) })
}

#[derive(Debug)]
pub struct SetupError;
impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot start")
    }
}

#[ferroray::remote]
fn fail_before(fail: bool) -> Result<impl Iterator<Item = u64>, SetupError> {
    if fail {
        Err(SetupError)
    } else {
        Ok(0..3)
    }
}

/// Yields `n` items; on the first `deaths` attempts it dies (SIGKILL) after `die_after` items.
#[ferroray::remote]
fn dies_midway(dir: String, n: u64, die_after: u64, deaths: usize, shift_on_retry: u64) -> impl Iterator<Item = u64> {
    let attempt = count_marks(&dir, "attempt-");
    mark(&dir, format!("attempt-{attempt}"));
    (0..n).map(move |i| {
        if attempt < deaths && i == die_after {
            // SAFETY: dying on purpose.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
        if attempt > 0 {
            i + shift_on_retry
        } else {
            i
        }
    })
}

/// Retried (system failure) with fewer items the second time.
#[ferroray::remote]
fn shrinks_on_retry(dir: String) -> impl Iterator<Item = u64> {
    let attempt = count_marks(&dir, "attempt-");
    mark(&dir, format!("attempt-{attempt}"));
    let n = if attempt == 0 { 5 } else { 2 };
    (0..n).inspect(move |&i| {
        if attempt == 0 && i == 4 {
            // SAFETY: dying on purpose.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    })
}

/// First attempt: dies (SIGKILL) before item 3. Later attempts: item
/// `fail_at` is an application error.
#[ferroray::remote]
fn dies_then_fails(dir: String, fail_at: u64) -> impl Iterator<Item = Result<u64, String>> {
    let attempt = count_marks(&dir, "attempt-");
    mark(&dir, format!("attempt-{attempt}"));
    (0..5).map(move |i| {
        if attempt == 0 && i == 3 {
            // SAFETY: dying on purpose.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        if attempt > 0 && i == fail_at {
            return Err(format!("failed at {i}"));
        }
        Ok(i)
    })
}

/// First attempt: 2 items, then an application error. Later attempts: 4 items.
#[ferroray::remote]
fn fails_once(dir: String) -> impl Iterator<Item = Result<u64, String>> {
    let attempt = count_marks(&dir, "attempt-");
    mark(&dir, format!("attempt-{attempt}"));
    (0..4).map(move |i| if attempt == 0 && i == 2 { Err("flaky".to_string()) } else { Ok(i) })
}

/// Marks `started-i` before making item i, and `done` at the end.
#[ferroray::remote]
fn tracked(dir: String, n: u64) -> impl Iterator<Item = u64> {
    let end = dir.clone();
    (0..n)
        .inspect(move |&i| {
            mark(&dir, format!("started-{i:04}"));
        })
        .chain(std::iter::once_with(move || {
            mark(&end, "done");
            u64::MAX
        }))
        .filter(|v| *v != u64::MAX)
}

#[ferroray::remote]
async fn tracked_async(dir: String, n: u64) -> impl futures::Stream<Item = u64> {
    futures::StreamExt::map(futures::stream::iter(0..n), move |i| {
        mark(&dir, format!("started-{i:04}"));
        i
    })
}

#[ferroray::remote]
fn big_items(n: u64, size: usize) -> impl Iterator<Item = Buffer> {
    (0..n).map(move |i| Buffer::from(vec![i as u8; size]))
}

#[ferroray::remote]
fn forever(dir: String) -> impl Iterator<Item = u64> {
    (0..).inspect(move |&i| {
        if i == 0 {
            mark(&dir, "running");
        }
        std::thread::sleep(Duration::from_millis(10));
    })
}

#[ferroray::remote(num_returns = 3)]
fn three(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

#[ferroray::remote(num_returns = 4)]
fn two_then_error() -> impl Iterator<Item = Result<u64, String>> {
    vec![Ok(0), Ok(1), Err("error".to_string())].into_iter()
}

#[ferroray::remote(num_returns = "dynamic")]
fn split(data: Vec<u8>, chunk: usize) -> impl Iterator<Item = Vec<u8>> {
    data.chunks(chunk).map(|c| c.to_vec()).collect::<Vec<_>>().into_iter()
}

#[ferroray::remote]
fn total_len(chunks: DynamicObjectRefGenerator<Vec<u8>>) -> usize {
    chunks.iter().map(|r| r.get().expect("chunk").len()).sum()
}

#[ferroray::remote]
fn make_items(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

fn values(g: ObjectRefGenerator<u64>) -> Vec<ferroray::Result<u64>> {
    g.map(|r| get(&r)).collect()
}

// 1. Declaring generators.

#[test]
fn iterator_async_stream_and_fallible_generators() {
    let _c = cluster();
    assert_eq!(values(count::remote(5)), (0..5).map(Ok).collect::<Vec<_>>());
    assert_eq!(values(async_count::remote(4)), (0..4).map(Ok).collect::<Vec<_>>());
    assert_eq!(values(count::remote(0)), vec![]);
    assert_eq!(values(fail_before::remote(false)), (0..3).map(Ok).collect::<Vec<_>>());
    // Item i is object (task, 2 + i): its id is fixed before the task runs.
    let g = count::remote(3);
    let task = g.task_id();
    let ids: Vec<_> = g.map(|r| r.id()).collect();
    assert_eq!(ids, (0..3).map(|i| ferroray::ObjectId { task, index: 2 + i }).collect::<Vec<_>>());
}

// 2. The handle.

#[test]
fn remote_returns_the_generator_at_once() {
    let _c = cluster();
    let t = Instant::now();
    let g = slow_count::remote(3, 300);
    assert!(t.elapsed() < Duration::from_millis(200));
    assert!(!g.is_finished());
    assert!(g.next_ready().is_none());
    assert!(matches!(g.next_timeout(Duration::from_millis(50)), Err(Error::GetTimeout)));
    let first = g.next_timeout(T).unwrap().unwrap();
    assert_eq!(get(&first).unwrap(), 0);
    get(&g.completed()).unwrap();
    assert!(g.is_finished());
    assert_eq!(get(&g.next_ready().unwrap()).unwrap(), 1);
    assert_eq!(get(&g.next_timeout(T).unwrap().unwrap()).unwrap(), 2);
    assert!(g.next_timeout(T).unwrap().is_none());
}

#[test]
fn async_callers_use_it_as_a_stream() {
    let _c = cluster();
    let got = futures::executor::block_on(async {
        let mut out = Vec::new();
        let mut g = slow_count::remote(4, 20);
        while let Some(r) = futures::StreamExt::next(&mut g).await {
            out.push(r.get_timeout(T).unwrap());
        }
        out
    });
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[test]
fn completed_reports_the_tasks_failure() {
    let _c = cluster();
    let g = fail_at::remote(5, 1);
    assert!(matches!(get(&g.completed()), Err(Error::Task(t)) if t.message == "failed at 1"));
}

#[test]
fn close_stops_the_remote_task() {
    let _c = cluster();
    let d = scratch_dir("close");
    let dir = d.to_string_lossy().to_string();
    let g = forever::remote(dir.clone());
    let done = g.completed();
    assert_eq!(get(&g.next_timeout(T).unwrap().unwrap()).unwrap(), 0);
    g.close().unwrap();
    assert_eq!(get(&done), Err(Error::TaskCancelled), "the task ended because of close()");
}

// 3. Items stream while the task runs.

#[test]
fn the_first_item_is_read_while_the_task_is_still_running() {
    let _c = cluster();
    let d = scratch_dir("first-item");
    let dir = d.to_string_lossy().to_string();
    let mut g = first_then_wait::remote(dir.clone());
    let first = g.next().unwrap();
    assert_eq!(get(&first).unwrap(), 0);
    assert!(!g.is_finished(), "the task has not ended");
    assert!(g.completed().get_timeout(Duration::from_millis(100)) == Err(Error::GetTimeout));
    mark(&dir, "go");
    assert_eq!(get(&g.next().unwrap()).unwrap(), 1);
    assert!(g.next().is_none());
}

// 4. Errors in order.

#[test]
fn an_error_at_item_k_comes_after_k_items_then_the_end() {
    let _c = cluster();
    let mut g = fail_at::remote(5, 2);
    assert_eq!(get(&g.next().unwrap()).unwrap(), 0);
    assert_eq!(get(&g.next().unwrap()).unwrap(), 1);
    let err = get(&g.next().unwrap()).unwrap_err();
    assert!(matches!(&err, Error::Task(t) if t.message == "failed at 2" && t.task_name == "fail_at"), "{err}");
    assert!(g.next().is_none());
    assert!(g.next().is_none(), "None forever");
}

#[test]
fn an_error_before_the_first_item_is_one_error_ref() {
    let _c = cluster();
    let mut g = fail_before::remote(true);
    let err = get(&g.next().unwrap()).unwrap_err();
    assert!(matches!(&err, Error::Task(t) if t.message == "cannot start"), "{err}");
    assert!(g.next().is_none());
}

#[test]
fn a_worker_killed_mid_stream_without_retries_gives_worker_crashed() {
    let _c = cluster();
    let d = scratch_dir("gen-crash");
    let dir = d.to_string_lossy().to_string();
    let g = dies_midway::options().max_retries(0).remote(dir, 5, 3, 10, 0);
    let got: Vec<_> = g.map(|r| get(&r)).collect();
    assert_eq!(got.len(), 4, "3 items then the error: {got:?}");
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(matches!(got[3], Err(Error::WorkerCrashed { .. })), "{:?}", got[3]);
}

#[test]
fn a_worker_killed_on_every_attempt_gives_worker_crashed_once_retries_run_out() {
    let _c = cluster();
    let d = scratch_dir("gen-crash-all");
    let dir = d.to_string_lossy().to_string();
    let mut g = dies_midway::options().max_retries(1).remote(dir.clone(), 5, 3, 10, 0);
    let got: Vec<_> = g.by_ref().map(|r| get(&r)).collect();
    assert_eq!(count_marks(&dir, "attempt-"), 2, "the first attempt and one retry");
    assert_eq!(got.len(), 4, "3 items (once), then the error: {got:?}");
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(matches!(got[3], Err(Error::WorkerCrashed { .. })), "{:?}", got[3]);
    assert!(g.next().is_none() && g.next().is_none(), "None forever");
}

// 5. Retries: exactly once, in order; replay mismatches are caught.

#[test]
fn a_retried_generator_continues_the_stream_exactly_once() {
    let _c = cluster();
    let d = scratch_dir("gen-retry");
    let dir = d.to_string_lossy().to_string();
    // Dies after 3 items on the first two attempts; the third completes.
    let got = values(dies_midway::remote(dir.clone(), 6, 3, 2, 0));
    assert_eq!(got, (0..6).map(Ok).collect::<Vec<_>>());
    assert_eq!(count_marks(&dir, "attempt-"), 3);
}

#[test]
fn a_retry_that_yields_different_values_is_a_replay_mismatch() {
    let _c = cluster();
    let d = scratch_dir("gen-mismatch");
    let dir = d.to_string_lossy().to_string();
    // The retry yields i + 100: indices 0..3 were already handed out.
    let got = values(dies_midway::remote(dir, 6, 3, 1, 100));
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(matches!(got.last(), Some(Err(Error::ReplayMismatch(m))) if m.contains("different value")), "{got:?}");
    assert_eq!(got.len(), 4, "no mixed data after the mismatch: {got:?}");
}

#[test]
fn a_retry_that_yields_fewer_items_is_a_replay_mismatch() {
    let _c = cluster();
    let d = scratch_dir("gen-fewer");
    let dir = d.to_string_lossy().to_string();
    let got = values(shrinks_on_retry::remote(dir));
    assert_eq!(got[..4], [Ok(0), Ok(1), Ok(2), Ok(3)]);
    assert!(matches!(got.last(), Some(Err(Error::ReplayMismatch(m))) if m.contains("2 items")), "{got:?}");
}

#[test]
fn retry_exceptions_retries_a_generator_and_continues_the_stream() {
    let _c = cluster();
    let d = scratch_dir("gen-retry-exc");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> = fails_once::options().retry_exceptions(true).remote(dir.clone()).map(|r| get(&r)).collect();
    assert_eq!(got, (0..4).map(Ok).collect::<Vec<_>>(), "items 0 and 1 once, then 2 and 3 from the retry");
    assert_eq!(count_marks(&dir, "attempt-"), 2);
    // Without retry_exceptions the error ends the stream.
    let d = scratch_dir("gen-no-retry-exc");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> = fails_once::remote(dir.clone()).map(|r| get(&r)).collect();
    assert_eq!(got[..2], [Ok(0), Ok(1)]);
    assert!(matches!(&got[2], Err(Error::Task(t)) if t.message == "flaky"), "{got:?}");
    assert_eq!((got.len(), count_marks(&dir, "attempt-")), (3, 1));
}

#[test]
fn a_retry_that_fails_before_where_the_first_attempt_got_is_a_replay_mismatch() {
    let _c = cluster();
    let d = scratch_dir("gen-fails-early");
    let dir = d.to_string_lossy().to_string();
    // The first attempt reported 0, 1, 2 and died; the retry fails at item 1.
    let got = values(dies_then_fails::remote(dir, 1));
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(
        matches!(got.last(), Some(Err(Error::ReplayMismatch(m))) if m.contains("failed after 1 items, but 3") && m.contains("failed at 1")),
        "{got:?}"
    );
    assert_eq!(got.len(), 4);
    // Failing further on than the first attempt got is an ordinary error at its place.
    let d = scratch_dir("gen-fails-late");
    let dir = d.to_string_lossy().to_string();
    let got = values(dies_then_fails::remote(dir, 4));
    assert_eq!(got[..4], [Ok(0), Ok(1), Ok(2), Ok(3)]);
    assert!(matches!(&got[4], Err(Error::Task(t)) if t.message == "failed at 4"), "{got:?}");
}

#[test]
fn a_retried_dynamic_generator_gives_each_item_once() {
    let _c = cluster();
    let d = scratch_dir("dyn-retry");
    let dir = d.to_string_lossy().to_string();
    let list = get(&dies_midway::options().num_returns_dynamic().remote(dir.clone(), 6, 3, 2, 0)).unwrap();
    assert_eq!(list.iter().map(|r| get(r).unwrap()).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
    assert_eq!(count_marks(&dir, "attempt-"), 3);
    // Application errors are retried with retry_exceptions.
    let d = scratch_dir("dyn-retry-exc");
    let dir = d.to_string_lossy().to_string();
    let list = get(&fails_once::options().retry_exceptions(true).num_returns_dynamic().remote(dir.clone())).unwrap();
    assert_eq!(list.iter().map(get).collect::<Vec<_>>(), (0..4).map(Ok).collect::<Vec<_>>());
    assert_eq!(count_marks(&dir, "attempt-"), 2);
}

#[test]
fn a_dynamic_generator_that_diverges_on_retry_is_a_replay_mismatch() {
    let _c = cluster();
    // A different value at an index already stored: the stored items stay,
    // the mismatch is the final ref, nothing of the retry is mixed in.
    let d = scratch_dir("dyn-mismatch");
    let dir = d.to_string_lossy().to_string();
    let list = get(&dies_midway::options().num_returns_dynamic().remote(dir, 6, 3, 1, 100)).unwrap();
    let got: Vec<_> = list.iter().map(get).collect();
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(matches!(&got[3], Err(Error::ReplayMismatch(m)) if m.contains("different value at index 0")), "{got:?}");
    assert_eq!(got.len(), 4, "{got:?}");
    // Fewer items.
    let d = scratch_dir("dyn-fewer");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> =
        get(&shrinks_on_retry::options().num_returns_dynamic().remote(dir)).unwrap().iter().map(get).collect();
    assert_eq!(got[..4], [Ok(0), Ok(1), Ok(2), Ok(3)]);
    assert!(matches!(&got[4], Err(Error::ReplayMismatch(m)) if m.contains("2 items")), "{got:?}");
    // An application error before where the first attempt got.
    let d = scratch_dir("dyn-fails-early");
    let dir = d.to_string_lossy().to_string();
    let got: Vec<_> =
        get(&dies_then_fails::options().num_returns_dynamic().remote(dir, 1)).unwrap().iter().map(get).collect();
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(matches!(&got[3], Err(Error::ReplayMismatch(m)) if m.contains("failed at 1")), "{got:?}");
}

#[test]
fn a_dynamic_generator_whose_worker_dies_keeps_the_items_it_stored() {
    let _c = cluster();
    let d = scratch_dir("dyn-crash");
    let dir = d.to_string_lossy().to_string();
    let list = get(&dies_midway::options().max_retries(0).num_returns_dynamic().remote(dir, 5, 3, 10, 0)).unwrap();
    let got: Vec<_> = list.iter().map(get).collect();
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(matches!(got[3], Err(Error::WorkerCrashed { .. })), "{got:?}");
    assert_eq!(got.len(), 4);
    // A cancelled one holds the error in the list's place.
    let d = scratch_dir("dyn-cancel");
    let dir = d.to_string_lossy().to_string();
    let r = forever::options().num_returns_dynamic().remote(dir.clone());
    assert!(eventually(T, || Path::new(&dir).join("running").exists()));
    ferroray::cancel(&r).unwrap();
    assert_eq!(get(&r).map(|l| l.len()), Err(Error::TaskCancelled));
    drop(list);
    drop(r);
    assert!(eventually(T, || {
        let s = ferroray::runtime_stats().unwrap();
        s.store_objects == 0 && s.node_objects == 0
    }));
}

// 6. Backpressure.

fn check_backpressure(dir: &str, mut g: ObjectRefGenerator<u64>, n: usize, items: usize) {
    for consumed in 0..items {
        // Give the producer every chance to run ahead.
        std::thread::sleep(Duration::from_millis(40));
        let started = count_marks(dir, "started-");
        assert!(started <= consumed + n, "after {consumed} consumed the producer started {started} (limit {n})");
        let r = g.next().expect("an item");
        assert_eq!(get(&r).unwrap(), consumed as u64);
    }
    assert!(g.next().is_none());
}

#[test]
fn backpressure_one_keeps_the_producer_one_item_ahead() {
    let _c = cluster();
    let d = scratch_dir("bp1");
    let dir = d.to_string_lossy().to_string();
    check_backpressure(
        &dir,
        tracked::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote(dir.clone(), 8),
        1,
        8,
    );
}

#[test]
fn backpressure_five_keeps_the_producer_five_items_ahead() {
    let _c = cluster();
    let d = scratch_dir("bp5");
    let dir = d.to_string_lossy().to_string();
    check_backpressure(
        &dir,
        tracked::options().generator_backpressure(ferroray::Backpressure::items::<5>()).remote(dir.clone(), 12),
        5,
        12,
    );
    // Without backpressure it runs ahead freely.
    let d = scratch_dir("bp-none");
    let free = d.to_string_lossy().to_string();
    let g = tracked::remote(free.clone(), 12);
    assert!(eventually(T, || count_marks(&free, "started-") == 12), "the producer ran to the end unconsumed");
    drop(g);
}

#[test]
fn backpressure_works_for_async_generators_too() {
    let _c = cluster();
    let d = scratch_dir("bp-async");
    let dir = d.to_string_lossy().to_string();
    check_backpressure(
        &dir,
        tracked_async::options().generator_backpressure(ferroray::Backpressure::items::<2>()).remote(dir.clone(), 8),
        2,
        8,
    );
}

#[test]
fn backpressure_zero_cannot_be_given() {
    let _c = cluster();
    // 0 is not a `Backpressure` (`Backpressure::items::<0>()` does not
    // compile; the node still refuses a 0 from the wire: stream_protocol).
    assert_eq!(ferroray::Backpressure::new(0), None);
    let limit = std::num::NonZeroU32::new(2).unwrap();
    assert_eq!(values(count::options().generator_backpressure(limit).remote(3)), vec![Ok(0), Ok(1), Ok(2)]);
    // An attribute's or an earlier limit can be taken off.
    let unlimited = count::options().generator_backpressure(limit).no_generator_backpressure();
    assert_eq!(values(unlimited.remote(3)), vec![Ok(0), Ok(1), Ok(2)]);
    // Only streaming generators take a limit.
    let dynamic = make_items::options()
        .generator_backpressure(ferroray::Backpressure::items::<2>())
        .num_returns_dynamic()
        .remote(3);
    assert!(matches!(get(&dynamic), Err(Error::InvalidOption(m)) if m.contains("only to streaming")));
    let (a, _, _) = three::options().generator_backpressure(ferroray::Backpressure::items::<2>()).remote(3);
    assert!(matches!(get(&a), Err(Error::InvalidOption(m)) if m.contains("only to streaming")));
    assert_eq!(
        get(&make_items::options().no_generator_backpressure().num_returns_dynamic().remote(2)).unwrap().len(),
        2
    );
}

// 7. Dropping and GC.

#[test]
fn dropping_the_generator_frees_untaken_items_and_the_task_runs_on() {
    let _c = cluster();
    let g = big_items::remote(6, 1 << 20);
    let first: ObjectRef<Buffer> = g.next_timeout(T).unwrap().unwrap();
    let done = g.completed();
    drop(g);
    get(&done).unwrap();
    assert_eq!(get(&first).unwrap().len(), 1 << 20, "a taken item is an ordinary ref");
    drop(first);
    drop(done);
    assert!(
        eventually(T, || {
            let s = ferroray::runtime_stats().unwrap();
            s.store_objects == 0 && s.node_objects == 0 && s.local_refs == 0
        }),
        "{:?}",
        ferroray::runtime_stats()
    );
}

#[test]
fn dropping_releases_an_executor_paused_by_backpressure() {
    let _c = cluster();
    let d = scratch_dir("bp-drop");
    let dir = d.to_string_lossy().to_string();
    let mut g = tracked::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote(dir.clone(), 20);
    assert_eq!(get(&g.next().unwrap()).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert!(count_marks(&dir, "started-") <= 2, "paused");
    drop(g);
    assert!(eventually(T, || Path::new(&dir).join("done").exists()), "the task ran to its end after the drop");
    assert_eq!(count_marks(&dir, "started-"), 20);
}

// 8. wait and cancel.

#[test]
fn wait_on_a_generator_is_ready_when_its_next_item_is() {
    let _c = cluster();
    let g = slow_count::remote(2, 300);
    let (ready, not_ready) = ferroray::wait(std::slice::from_ref(&g), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty() && not_ready.len() == 1);
    let (ready, _) = ferroray::wait(std::slice::from_ref(&g), 1, Some(T)).unwrap();
    assert_eq!(ready.len(), 1);
    let r = g.next_ready().expect("next does not block after wait");
    assert_eq!(get(&r).unwrap(), 0);
    let (ready, _) = ferroray::wait(std::slice::from_ref(&g), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty(), "the second item is not there yet");
    // Once the stream has ended, the generator stays ready.
    get(&g.completed()).unwrap();
    let _ = g.next_ready();
    let (ready, _) = ferroray::wait(std::slice::from_ref(&g), 1, Some(Duration::ZERO)).unwrap();
    assert_eq!(ready.len(), 1);
}

#[ferroray::remote]
fn slow_value(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn wait_mixes_generators_and_refs() {
    let _c = cluster();
    let g = slow_count::remote(3, 100);
    let r = slow_value::remote(150);
    let mut unready: Vec<WaitItem<u64>> = vec![g.into(), r.into()];
    let mut results = Vec::new();
    while !unready.is_empty() {
        let (ready, rest) = ferroray::wait(&unready, 1, Some(T)).unwrap();
        unready = rest;
        for item in ready {
            match item {
                WaitItem::Generator(g) => {
                    if let Some(r) = g.next_ready() {
                        results.push(get(&r).unwrap());
                        unready.push(WaitItem::Generator(g));
                    }
                }
                WaitItem::Ref(r) => results.push(get(&r).unwrap()),
            }
        }
    }
    results.sort();
    assert_eq!(results, vec![0, 1, 2, 150]);
    // num_returns caps what comes back ready, in a mix.
    let gens: Vec<_> = (0..3).map(|_| count::remote(2)).collect();
    for g in &gens {
        get(&g.completed()).unwrap();
    }
    let r = slow_value::remote(0);
    get(&r).unwrap();
    let mut mixed: Vec<WaitItem<u64>> = gens.into_iter().map(WaitItem::from).collect();
    mixed.push(r.into());
    let (ready, rest) = ferroray::wait(&mixed, 1, Some(T)).unwrap();
    assert_eq!((ready.len(), rest.len()), (1, 3));
    let (ready, rest) = ferroray::wait(&mixed, 3, Some(T)).unwrap();
    assert_eq!((ready.len(), rest.len()), (3, 1));
    // A timeout gives what is ready by then: here 2 of the 3 asked for.
    let slow = slow_count::remote(1, 2_000);
    let mixed: Vec<WaitItem<u64>> = vec![count::remote(1).into(), slow.into(), slow_value::remote(0).into()];
    let t = Instant::now();
    let (ready, rest) = ferroray::wait(&mixed, 3, Some(Duration::from_millis(500))).unwrap();
    assert_eq!((ready.len(), rest.len()), (2, 1));
    assert!(t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_millis(1_500));
    // num_returns and timeout.
    let a = slow_count::remote(1, 500);
    let b = slow_count::remote(1, 500);
    let t = Instant::now();
    let (ready, rest) = ferroray::wait(&[a, b], 2, Some(Duration::from_millis(100))).unwrap();
    assert!(ready.is_empty() && rest.len() == 2 && t.elapsed() < Duration::from_millis(450));
}

#[test]
fn wait_takes_borrowed_refs_and_generators_mixed_without_cloning() {
    use ferroray::Waitable;
    // Every task starts at once: readiness follows their sleeps.
    let _c = cluster_with(Config::default().num_cpus(4));
    let slow = slow_value::remote(600);
    let g = slow_count::remote(2, 300);
    let fast = slow_value::remote(10);
    let local_refs = ferroray::runtime_stats().unwrap().local_refs;
    let items = [&slow as &dyn Waitable, &g, &fast];
    // Order of readiness: fast, then the generator's first item, then slow.
    let (ready, rest) = ferroray::wait(&items, 2, Some(T)).unwrap();
    let keys: Vec<_> = ready.iter().map(|w| w.wait_key()).collect();
    assert_eq!(keys, vec![fast.wait_key(), g.wait_key()]);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].wait_key(), slow.wait_key());
    assert_eq!(ferroray::runtime_stats().unwrap().local_refs, local_refs, "nothing was cloned");
    // Positions instead of items.
    let (ready, rest) = ferroray::wait_indices(&items, 3, Some(T)).unwrap();
    assert_eq!((ready, rest), (vec![2, 1, 0], vec![]));
    // Borrowed refs of one type give `&ObjectRef`s back.
    let (ready, rest): (Vec<&ObjectRef<u64>>, _) = ferroray::wait(&[&slow, &fast], 1, Some(T)).unwrap();
    assert_eq!(ready, vec![&fast], "the one ready first");
    assert_eq!(rest, vec![&slow]);
    // num_returns caps what comes back, and a timeout gives what is ready by then.
    let never = slow_count::remote(1, 5_000);
    let t = Instant::now();
    let (ready, rest) =
        ferroray::wait_indices(&[&never as &dyn Waitable, &fast], 2, Some(Duration::from_millis(200))).unwrap();
    assert_eq!((ready, rest), (vec![1], vec![0]));
    assert!(t.elapsed() >= Duration::from_millis(180) && t.elapsed() < Duration::from_millis(2_000));
    let err = ferroray::wait(&[&fast as &dyn Waitable, &fast], 1, Some(T)).unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}

#[test]
fn as_completed_streams_refs_and_generators_in_completion_order() {
    use ferroray::Waitable;
    use futures::StreamExt;
    // Every task starts at once: readiness follows their sleeps.
    let _c = cluster_with(Config::default().num_cpus(4));
    let slow = slow_value::remote(500);
    let g = slow_count::remote(1, 250);
    let fast = slow_value::remote(10);
    let order: Vec<_> = common::block_on(async {
        let done = ferroray::as_completed([&slow as &dyn Waitable, &g, &fast]).unwrap();
        done.map(|w| w.wait_key()).collect::<Vec<_>>().await
    });
    assert_eq!(order, vec![fast.wait_key(), g.wait_key(), slow.wait_key()]);
    // Owned refs, awaited as they complete.
    let refs: Vec<ObjectRef<u64>> = [300, 0, 150].into_iter().map(slow_value::remote).collect();
    let got = common::block_on(async {
        let mut done = ferroray::as_completed(refs).unwrap();
        let mut got = Vec::new();
        while let Some(r) = done.next().await {
            got.push(r.await.unwrap());
        }
        got
    });
    assert_eq!(got, vec![0, 150, 300]);
    // Ray's wait, async: the first ready one, then the rest in the order given.
    let refs: Vec<ObjectRef<u64>> = [400, 0, 200].into_iter().map(slow_value::remote).collect();
    let mut done = ferroray::as_completed(&refs).unwrap();
    let ready: Vec<&ObjectRef<u64>> = common::block_on(done.by_ref().take(1).collect());
    assert_eq!(ready, vec![&refs[1]]);
    assert_eq!(done.into_rest(), vec![&refs[0], &refs[2]]);
}

#[test]
fn as_completed_hands_out_the_rest_when_the_connection_is_lost() {
    use futures::StreamExt;
    let _c = cluster();
    let refs: Vec<ObjectRef<u64>> = vec![slow_value::remote(0), slow_value::remote(10_000)];
    get(&refs[0]).unwrap();
    let stopper = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        ferroray::shutdown();
    });
    let got = common::block_on(async {
        let mut done = ferroray::as_completed(&refs).unwrap();
        let mut got = Vec::new();
        while let Some(r) = done.next().await {
            got.push(r.await);
        }
        got
    });
    stopper.join().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Ok(0));
    assert!(matches!(got[1], Err(Error::Disconnected(_))), "{:?}", got[1]);
}

#[test]
fn next_blocks_and_next_async_awaits_even_with_stream_ext_in_scope() {
    #[allow(unused_imports)]
    use futures::StreamExt; // Neither spelling is ambiguous with it in scope.
    let _c = cluster();
    let mut g = count::remote(3);
    let first: Option<ObjectRef<u64>> = g.next();
    assert_eq!(get(&first.unwrap()).unwrap(), 0);
    let rest = common::block_on(async {
        let mut rest = Vec::new();
        while let Some(r) = g.next_async().await {
            rest.push(r.await.unwrap());
        }
        rest
    });
    assert_eq!(rest, vec![1, 2]);
    assert!(g.next().is_none(), "the end, for both spellings");
}

/// Consumes a generator that makes one item and then waits; reports what it
/// saw in marker files.
#[ferroray::remote]
fn consumer_of_a_waiting_generator(dir: String, by_await: bool) -> u64 {
    let mut g = first_then_wait::remote(dir.clone());
    let mut got = 0;
    loop {
        let item = if by_await { futures::executor::block_on(g.next_async()) } else { g.next() };
        let Some(r) = item else { break };
        match r.get() {
            Ok(_) => {
                got += 1;
                mark(&dir, format!("item-{got}"));
            }
            Err(e) => mark(&dir, format!("error-{e:?}")),
        }
    }
    mark(&dir, "ended");
    got
}

#[test]
fn a_lost_connection_while_iterating_is_an_error_item_not_an_end() {
    for by_await in [false, true] {
        let _c = cluster();
        let d = scratch_dir(&format!("gen-lost-{by_await}"));
        let mut g = first_then_wait::remote(d.to_string_lossy().to_string());
        let stopper = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            ferroray::shutdown();
        });
        let mut got = Vec::new();
        loop {
            let item = if by_await { common::block_on(g.next_async()) } else { g.next() };
            let Some(r) = item else { break };
            got.push(get(&r));
            assert!(got.len() <= 2, "{got:?}");
        }
        stopper.join().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Ok(0));
        assert!(matches!(got[1], Err(Error::Disconnected(_))), "{:?}", got[1]);
        assert!(g.next_ready().is_none() && g.next().is_none(), "then the end");
    }
}

#[test]
fn a_consumer_cancelled_while_it_waits_gets_an_error_item_then_the_end() {
    for by_await in [false, true] {
        let _c = cluster();
        let d = scratch_dir(&format!("gen-consumer-cancel-{by_await}"));
        let dir = d.to_string_lossy().to_string();
        let consumer = consumer_of_a_waiting_generator::remote(dir.clone(), by_await);
        assert!(eventually(T, || count_marks(&dir, "item-1") == 1));
        ferroray::cancel(&consumer).unwrap();
        assert_eq!(get(&consumer), Err(Error::TaskCancelled));
        assert!(eventually(T, || count_marks(&dir, "ended") == 1), "the consumer's loop ended");
        assert_eq!(count_marks(&dir, "error-TaskCancelled"), 1, "after one error item");
        mark(&dir, "go");
    }
}

#[test]
fn async_generators_run_on_a_tokio_runtime() {
    let _c = cluster();
    let t = Instant::now();
    let got: Vec<u64> = tokio_ticks::remote(10).map(|r| get(&r).unwrap()).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(t.elapsed() >= Duration::from_millis(60), "the timer slept: {:?}", t.elapsed());
    let got: Vec<u64> = tokio_ticks::options()
        .generator_backpressure(ferroray::Backpressure::items::<1>())
        .remote(5)
        .map(|r| get(&r).unwrap())
        .collect();
    assert_eq!(got, (0..5).collect::<Vec<_>>(), "with backpressure too");
}

#[test]
fn cancelling_a_running_generator_ends_it_with_a_cancelled_ref() {
    let _c = cluster();
    let d = scratch_dir("gen-cancel");
    let dir = d.to_string_lossy().to_string();
    let mut g = forever::remote(dir.clone());
    assert_eq!(get(&g.next().unwrap()).unwrap(), 0);
    ferroray::cancel(&g).unwrap();
    let mut last = None;
    for r in g.by_ref() {
        last = Some(get(&r));
    }
    assert_eq!(last, Some(Err(Error::TaskCancelled)));
    assert!(g.next().is_none());
}

#[test]
fn cancelling_a_generator_paused_by_backpressure() {
    let _c = cluster();
    let d = scratch_dir("bp-cancel");
    let dir = d.to_string_lossy().to_string();
    let mut g =
        tracked::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote(dir.clone(), 100);
    assert_eq!(get(&g.next().unwrap()).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(100));
    ferroray::cancel(&g).unwrap();
    let rest: Vec<_> = g.by_ref().map(|r| get(&r)).collect();
    assert_eq!(rest.last(), Some(&Err(Error::TaskCancelled)), "{rest:?}");
    assert!(rest.len() <= 3, "at most the item it was paused on, then the error: {rest:?}");
    assert!(g.next().is_none());
}

#[test]
fn cancel_reaches_a_paused_generator_without_any_next() {
    let _c = cluster();
    let d = scratch_dir("bp-cancel-idle");
    let dir = d.to_string_lossy().to_string();
    let g = tracked::options().generator_backpressure(ferroray::Backpressure::items::<1>()).remote(dir.clone(), 100);
    assert!(eventually(T, || count_marks(&dir, "started-") == 1), "item 0 made");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count_marks(&dir, "started-"), 1, "paused on item 0");
    // Nothing is consumed: only the cancel can end the pause.
    ferroray::cancel(&g).unwrap();
    assert_eq!(g.completed().get_timeout(T), Err(Error::TaskCancelled));
    assert_eq!(count_marks(&dir, "started-"), 1, "no item made after the cancel");
    assert!(!Path::new(&dir).join("done").exists());
}

// 9. Fixed num_returns with a generator body.

#[test]
fn num_returns_with_a_generator_body() {
    let _c = cluster();
    let (a, b, c) = three::remote(3);
    assert_eq!((get(&a).unwrap(), get(&b).unwrap(), get(&c).unwrap()), (0, 1, 2));
    let (a, b, c) = three::remote(2);
    assert_eq!((get(&a).unwrap(), get(&b).unwrap()), (0, 1));
    assert!(matches!(get(&c), Err(Error::Task(t)) if t.message.contains("yielded 2 values but num_returns = 3")));
    let (a, b, c) = three::remote(4);
    for r in [a, b, c] {
        assert!(matches!(get(&r), Err(Error::Task(t)) if t.message.contains("more than num_returns = 3")));
    }
    let (a, b, c, d) = two_then_error::remote();
    assert_eq!((get(&a).unwrap(), get(&b).unwrap()), (0, 1));
    assert!(matches!(get(&c), Err(Error::Task(t)) if t.message == "error"));
    assert!(matches!(get(&d), Err(Error::Task(t)) if t.message == "error"));
}

// 10. Dynamic returns.

#[test]
fn dynamic_returns_give_the_list_of_item_refs() {
    let _c = cluster();
    let data: Vec<u8> = (0..=250).collect();
    let dynamic = split::remote(data.clone(), 100);
    let list = get(&dynamic).unwrap();
    assert_eq!(list.len(), 3);
    let back: Vec<u8> = list.iter().flat_map(|r| get(r).unwrap()).collect();
    assert_eq!(back, data);
    // Passed to another task, which iterates it there.
    assert_eq!(get(&total_len::remote(&dynamic)).unwrap(), 251);
    assert_eq!(get(&total_len::remote(list.clone())).unwrap(), 251);
    // Empty.
    assert!(get(&split::remote(vec![], 10)).unwrap().is_empty());
    // By option, on a streaming generator function.
    let d = make_items::options().num_returns_dynamic().remote(4);
    assert_eq!(get(&d).unwrap().iter().map(|r| get(r).unwrap()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

#[test]
fn a_dynamic_generators_error_is_one_extra_final_ref() {
    let _c = cluster();
    let list = get(&fail_at::options().num_returns_dynamic().remote(5, 2)).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(get(&list.refs()[0]).unwrap(), 0);
    assert_eq!(get(&list.refs()[1]).unwrap(), 1);
    assert!(matches!(get(&list.refs()[2]), Err(Error::Task(t)) if t.message == "failed at 2"));
}

#[test]
fn dynamic_items_are_freed_with_their_list() {
    let _c = cluster();
    let d = big_items::options().num_returns_dynamic().remote(3, 1 << 20);
    let list = get(&d).unwrap();
    assert_eq!(get(&list.refs()[2]).unwrap()[0], 2);
    drop(list);
    drop(d);
    assert!(eventually(T, || {
        let s = ferroray::runtime_stats().unwrap();
        s.store_objects == 0 && s.node_objects == 0
    }));
}

#[ferroray::remote(num_returns = 2)]
fn fails_after_all() -> impl Iterator<Item = Result<u64, String>> {
    vec![Ok(0), Ok(1), Err("late error".to_string())].into_iter()
}

#[test]
fn an_error_after_all_num_returns_values_is_not_lost() {
    let _c = cluster();
    let (a, b) = fails_after_all::remote();
    for r in [a, b] {
        assert!(matches!(get(&r), Err(Error::Task(t)) if t.message.contains("late error")));
    }
}
