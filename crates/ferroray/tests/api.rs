//! The task API: submit, refs as arguments, get/get_all/get_timeout, put,
//! wait, multiple returns, options, task errors and their propagation, and
//! awaiting refs.

mod common;

use common::{cluster, get, T};
use ferroray::{Error, ObjectRef};
use std::time::{Duration, Instant};

#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ferroray::remote]
fn sleep_then(ms: u64, v: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    v
}

#[derive(Debug)]
pub struct ParseError(String);
impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot parse {:?}", self.0)
    }
}

#[ferroray::remote(num_cpus = 1, max_retries = 0)]
fn parse(x: String) -> Result<u32, ParseError> {
    x.trim().parse().map_err(|_| ParseError(x))
}

#[ferroray::remote(num_returns = 3)]
fn three() -> (i64, String, Vec<u8>) {
    (1, "two".into(), vec![3, 3, 3])
}

#[ferroray::remote]
fn single_tuple() -> (i64, i64, i64) {
    (0, 1, 2)
}

#[ferroray::remote(max_retries = 0)]
fn explode(msg: String) -> i64 {
    panic!("{msg}")
}

#[ferroray::remote]
fn my_pid() -> u32 {
    std::process::id()
}

#[ferroray::remote]
fn nothing() {}

#[test]
fn remote_returns_at_once_and_get_gives_the_value() {
    let _c = cluster();
    let t = Instant::now();
    let r: ObjectRef<i64> = sleep_then::remote(300, 7);
    assert!(t.elapsed() < Duration::from_millis(200), "remote() blocked");
    assert_eq!(get(&r).unwrap(), 7);
    assert_eq!(ferroray::get(&r).unwrap(), 7);
}

#[test]
fn refs_as_arguments_are_resolved_before_the_body_runs() {
    let _c = cluster();
    let r = add::remote(1, 2);
    let s = add::remote(&r, 10);
    assert_eq!(get(&s).unwrap(), 13);
    let u = add::remote(s.clone(), r);
    assert_eq!(get(&u).unwrap(), 16);
    let p = ferroray::put(100i64).unwrap();
    assert_eq!(get(&add::remote(&p, &p)).unwrap(), 200);
}

#[test]
fn get_timeout_is_a_distinct_error_then_the_value_arrives() {
    let _c = cluster();
    let r = sleep_then::remote(500, 1);
    assert_eq!(r.get_timeout(Duration::from_millis(50)), Err(Error::GetTimeout));
    assert_eq!(get(&r).unwrap(), 1);
}

#[test]
fn get_all_keeps_the_given_order() {
    let _c = cluster();
    let refs: Vec<_> = (0..20).map(|i| sleep_then::remote(((20 - i) * 5) as u64, i)).collect();
    assert_eq!(ferroray::get_all(&refs).unwrap(), (0..20).collect::<Vec<i64>>());
}

#[test]
fn put_and_get_small_and_large_values() {
    let _c = cluster();
    let small = ferroray::put("hello".to_string()).unwrap();
    assert_eq!(get(&small).unwrap(), "hello");
    let big = ferroray::put(vec![5u8; 64 << 20]).unwrap();
    let v = get(&big).unwrap();
    assert_eq!(v.len(), 64 << 20);
    assert!(v.iter().all(|b| *b == 5));
}

#[test]
fn wait_returns_ready_refs_in_completion_order() {
    let _c = cluster();
    let slow = sleep_then::remote(600, 1);
    let fast = sleep_then::remote(50, 2);
    let refs = vec![slow.clone(), fast.clone()];
    let (ready, rest) = ferroray::wait(&refs, 1, Some(T)).unwrap();
    assert_eq!(ready, vec![fast.clone()]);
    assert_eq!(rest, vec![slow.clone()]);
    let (ready, rest) = ferroray::wait(&refs, 2, Some(T)).unwrap();
    assert_eq!(ready, vec![fast, slow]);
    assert!(rest.is_empty());
}

#[test]
fn wait_made_is_ready_when_made_fetches_nothing_and_mixes_with_fetched_refs() {
    let _c = cluster();
    let slow = sleep_then::remote(600, 1);
    let fast = sleep_then::remote(50, 2);
    let refs = vec![slow.clone(), fast.clone()];
    let (ready, rest) = ferroray::wait_made(&refs, 1, Some(T)).unwrap();
    assert_eq!((ready, rest), (vec![fast.clone()], vec![slow.clone()]));
    // Known as made, not fetched: a wait that fetches gets the value then.
    let (ready, _) = ferroray::wait(std::slice::from_ref(&fast), 1, Some(T)).unwrap();
    assert_eq!(ready, vec![fast.clone()]);
    let (ready, rest) = ferroray::wait_made_indices(&refs, 2, Some(T)).unwrap();
    assert_eq!((ready, rest), (vec![1, 0], vec![]));
    assert_eq!((get(&slow).unwrap(), get(&fast).unwrap()), (1, 2));
    // A put object is made at once; an error counts as made; the timeout holds.
    let p: ObjectRef<i64> = ferroray::put(7i64).unwrap();
    let failed = explode::remote("no".to_string());
    let (ready, _) = ferroray::wait_made(&[p.clone(), failed.clone()], 2, Some(T)).unwrap();
    assert_eq!(ready.len(), 2);
    assert!(get(&failed).is_err());
    let never = sleep_then::remote(2_000, 3);
    let t = Instant::now();
    let (ready, rest) = ferroray::wait_made(std::slice::from_ref(&never), 1, Some(Duration::from_millis(100))).unwrap();
    assert!(ready.is_empty() && rest.len() == 1 && t.elapsed() < Duration::from_secs(1));
}

#[test]
fn wait_honours_the_timeout_and_checks_its_arguments() {
    let _c = cluster();
    let r = sleep_then::remote(2_000, 1);
    let t = Instant::now();
    let (ready, rest) = ferroray::wait(std::slice::from_ref(&r), 1, Some(Duration::from_millis(100))).unwrap();
    assert!(ready.is_empty());
    assert_eq!(rest.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(1));
    let err = ferroray::wait(std::slice::from_ref(&r), 2, None).unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}

#[test]
fn num_returns_gives_one_ref_per_value() {
    let _c = cluster();
    let (a, b, c) = three::remote();
    assert_eq!(get(&a).unwrap(), 1);
    assert_eq!(get(&b).unwrap(), "two");
    assert_eq!(get(&c).unwrap(), vec![3, 3, 3]);
    let t = single_tuple::remote();
    assert_eq!(get(&t).unwrap(), (0, 1, 2));
    get(&nothing::remote()).unwrap();
}

#[test]
fn err_is_a_task_error_with_type_message_and_place() {
    let _c = cluster();
    assert_eq!(get(&parse::remote(" 42 ".to_string())).unwrap(), 42);
    let err = get(&parse::remote("x1".to_string())).unwrap_err();
    match &err {
        Error::Task(t) => {
            assert!(t.type_name.ends_with("ParseError"), "{}", t.type_name);
            assert_eq!(t.message, "cannot parse \"x1\"");
            assert_eq!(t.task_name, "parse");
            assert!(t.pid > 0 && t.pid != std::process::id());
        }
        other => panic!("expected a task error, got {other:?}"),
    }
}

#[test]
fn a_panic_is_a_task_error_and_the_worker_survives() {
    let _c = cluster_one_cpu();
    let before = get(&my_pid::remote()).unwrap();
    let err = get(&explode::remote("boom".to_string())).unwrap_err();
    match &err {
        Error::Task(t) => {
            assert_eq!(t.type_name, "panic");
            assert_eq!(t.message, "boom");
            assert_eq!(t.pid, before, "the panic ran on the one worker");
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    assert_eq!(get(&my_pid::remote()).unwrap(), before, "the same worker serves the next task");
}

fn cluster_one_cpu() -> common::Cluster {
    common::cluster_with(ferroray::Config::default().num_cpus(1).max_workers(1))
}

#[test]
fn a_failed_task_fails_the_tasks_that_take_its_result() {
    let _c = cluster();
    let bad = parse::remote("nope".to_string());
    let dependent = add::remote(bad.clone().cast::<i64>(), 1);
    let again = add::remote(&dependent, 1);
    let original = get(&bad).unwrap_err();
    assert_eq!(get(&dependent).unwrap_err(), original);
    assert_eq!(get(&again).unwrap_err(), original);
}

#[test]
fn options_override_the_attribute() {
    let _c = common::cluster_with(ferroray::Config::default().num_cpus(2).resource("disk", 2.0));
    let q = add::options().num_cpus(2.0).resource("disk", 1.0).max_retries(1).retry_exceptions(true).remote(1, 2);
    assert_eq!(get(&q).unwrap(), 3);
}

#[test]
fn workers_are_reused() {
    let _c = common::cluster_with(ferroray::Config::default().num_cpus(2));
    for i in 0..30 {
        assert_eq!(get(&add::remote(i, 1)).unwrap(), i + 1);
    }
    let pids = common::worker_pids();
    assert!(!pids.is_empty() && pids.len() <= 2, "30 sequential tasks used workers {pids:?}");
}

#[test]
fn init_twice_is_an_error_and_init_after_shutdown_works() {
    let c = cluster();
    assert_eq!(ferroray::init(), Err(Error::AlreadyInitialized));
    assert_eq!(get(&add::remote(1, 1)).unwrap(), 2);
    drop(c);
    assert!(!ferroray::is_initialized());
    let _c = cluster();
    assert_eq!(get(&add::remote(2, 2)).unwrap(), 4);
}

// ---------------------------------------------------------------- awaiting refs

/// Awaits a child it submitted: on one CPU, the child runs only because the
/// parent lends its CPU while it awaits.
#[ferroray::remote]
async fn await_child(v: i64) -> i64 {
    let child = sleep_then::remote(20, v);
    use std::future::IntoFuture;
    let (a, b) = futures::join!(child.into_future(), add::remote(v, 1).into_future());
    a.unwrap() + b.unwrap()
}

/// An async task awaiting an async task awaiting its children.
#[ferroray::remote]
async fn await_grandchildren(v: i64) -> i64 {
    await_child::remote(v).await.unwrap() + 100
}

#[test]
fn a_ref_can_be_awaited_from_a_driver_side_executor() {
    let _c = cluster();
    let r = add::remote(20, 22);
    assert_eq!(common::block_on(async { (&r).await }).unwrap(), 42);
    assert_eq!(common::block_on(r).unwrap(), 42, "awaiting a ready ref");
    let p = ferroray::put(vec![7u8; 2 << 20]).unwrap();
    assert_eq!(common::block_on(p.clone()).unwrap().len(), 2 << 20, "a value in shared memory");
    assert_eq!(common::block_on(p.clone()).unwrap().len(), 2 << 20, "and again");
}

#[test]
fn an_async_task_awaiting_its_child_on_one_cpu_does_not_deadlock() {
    let _c = common::cluster_with(ferroray::Config::default().num_cpus(1));
    assert_eq!(get(&await_child::remote(5)).unwrap(), 11);
    // Several parents at once, each awaiting its children, all on one CPU.
    let outer: Vec<_> = (0..3).map(await_child::remote).collect();
    assert_eq!(ferroray::get_all_timeout(&outer, T).unwrap(), vec![1, 3, 5]);
    // Nested async callers: each level awaits the next, still one CPU.
    let nested: Vec<_> = (0..3).map(await_grandchildren::remote).collect();
    assert_eq!(ferroray::get_all_timeout(&nested, T).unwrap(), vec![101, 103, 105]);
}

#[test]
fn join_all_of_many_refs() {
    let _c = cluster();
    let refs: Vec<ObjectRef<i64>> = (0..200).map(|i| add::remote(i, 1)).collect();
    let got = common::block_on(futures::future::join_all(refs.iter().map(std::future::IntoFuture::into_future)));
    let got: Vec<i64> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
}

#[test]
fn an_awaited_error_arrives_as_err() {
    let _c = cluster();
    let bad = parse::remote("nope".to_string());
    let err = common::block_on(bad.clone()).unwrap_err();
    assert_eq!(err, get(&bad).unwrap_err());
    assert!(matches!(err, Error::Task(_)), "{err}");
    let boom = explode::remote("awaited".to_string());
    assert!(matches!(common::block_on(&boom), Err(Error::Task(_))));
}

#[test]
fn an_await_pending_at_shutdown_ends_with_disconnected() {
    let _c = cluster();
    let slow = sleep_then::remote(5_000, 1);
    let stopper = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        ferroray::shutdown();
    });
    let err = common::block_on(slow).unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    stopper.join().unwrap();
}

/// Awaits a child that sleeps far longer than the test, then leaves a
/// marker file saying what the await gave.
#[ferroray::remote]
async fn await_then_mark(path: String) -> i64 {
    let r = sleep_then::remote(20_000, 1).await;
    std::fs::write(&path, format!("{r:?}")).unwrap();
    0
}

#[test]
fn cancelling_an_async_task_wakes_its_pending_await() {
    let _c = cluster();
    let dir = common::scratch_dir("await-cancel");
    let path = dir.join("awaited");
    let r = await_then_mark::remote(path.to_string_lossy().to_string());
    // Running and awaiting: the child is queued or sleeping.
    std::thread::sleep(Duration::from_millis(300));
    ferroray::cancel(&r).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(common::eventually(T, || path.exists()), "the await woke up");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "Err(TaskCancelled)");
}

#[test]
fn get_all_timeout_gives_up_then_gives_every_value() {
    let _c = cluster();
    let refs = vec![add::remote(1, 1), sleep_then::remote(1_000, 7)];
    let t = Instant::now();
    assert_eq!(ferroray::get_all_timeout(&refs, Duration::from_millis(100)), Err(Error::GetTimeout));
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
    assert_eq!(ferroray::get_all_timeout(&refs, T).unwrap(), vec![2, 7]);
}

// ---------------------------------------------------------------- the async runtime

/// tokio's timers and I/O inside an `async fn` task: a sleep, and a
/// loopback TCP connection echoing a message.
#[ferroray::remote]
async fn uses_tokio(msg: String) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    if t.elapsed() < Duration::from_millis(50) {
        return Err("the sleep did not sleep".into());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 64];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    c.write_all(msg.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut back))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    server.await.map_err(|e| e.to_string())?;
    String::from_utf8(back).map_err(|e| e.to_string())
}

#[test]
fn async_tasks_run_on_a_tokio_runtime_with_timers_and_io() {
    let _c = cluster();
    assert_eq!(get(&uses_tokio::remote("echo".to_string())).unwrap(), "echo");
    // The runtime is kept for the next async task on the same worker.
    let again: Vec<_> = (0..4).map(|i| uses_tokio::remote(format!("m{i}"))).collect();
    assert_eq!(ferroray::get_all_timeout(&again, T).unwrap(), vec!["m0", "m1", "m2", "m3"]);
}

#[test]
fn the_embedded_node_is_the_cluster_s_only_node() {
    let _c = common::cluster_with(ferroray::Config::default().num_cpus(2).resource("disk", 3.0));
    let nodes = ferroray::nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].alive && nodes[0].is_head);
    let total = ferroray::cluster_resources().unwrap();
    assert_eq!((total["CPU"], total["disk"]), (2.0, 3.0), "{total:?}");
    assert!(total[ferroray::OBJECT_STORE_MEMORY] > 0.0);
    // A task holding the disk shows in what is available while it runs.
    let held = hold_disk::remote();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ferroray::available_resources().unwrap()["disk"] != 2.0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", ferroray::available_resources());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(held.get().unwrap(), 1);
}

#[ferroray::remote(resources = [("disk", 1.0)])]
fn hold_disk() -> u32 {
    std::thread::sleep(std::time::Duration::from_millis(300));
    1
}
