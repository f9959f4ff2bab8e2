//! Threaded and async actors against real worker processes: calls at once
//! up to `max_concurrency`, a `&mut self` call alone (across its awaits on
//! an async actor), calls starting in the order sent, generators whose
//! backpressure pauses only themselves, cancel of a call waiting for its
//! turn and of a running one.

mod common;

use common::{cluster, get, T};
use ferroray::{remote, Error, ObjectRef};
use std::cell::{Cell, RefCell};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a call may wait for the others it expects to meet.
const MEET: Duration = Duration::from_secs(10);

/// A threaded actor: its state is `Send + Sync`.
pub struct Pool {
    /// `&self` calls running now.
    inside: AtomicUsize,
    /// The most `&self` calls seen running at once.
    most: AtomicUsize,
    /// Start and end of each call, in the order they happened.
    log: Mutex<Vec<String>>,
    writes: u64,
}

impl Pool {
    fn enter(&self, tag: &str) {
        self.log.lock().unwrap().push(format!("start {tag}"));
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self, tag: &str) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(format!("end {tag}"));
    }
}

#[ferroray::actor(max_concurrency = 4)]
impl Pool {
    pub fn new() -> Self {
        Pool { inside: AtomicUsize::new(0), most: AtomicUsize::new(0), log: Mutex::new(Vec::new()), writes: 0 }
    }

    /// Waits until `n` calls have been inside at once (or `MEET` passes);
    /// gives the most it saw.
    pub fn meet(&self, n: usize) -> usize {
        self.enter("meet");
        let end = Instant::now() + MEET;
        while self.most.load(Ordering::SeqCst) < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        let seen = self.most.load(Ordering::SeqCst);
        self.leave("meet");
        seen
    }

    pub fn read(&self, tag: String, ms: u64) -> u64 {
        self.enter(&tag);
        std::thread::sleep(Duration::from_millis(ms));
        self.leave(&tag);
        self.writes
    }

    /// Gives the `&self` calls it found running (none, if it runs alone).
    pub fn write(&mut self, tag: String) -> usize {
        let found = self.inside.load(Ordering::SeqCst);
        self.log.get_mut().unwrap().push(format!("write {tag}"));
        self.writes += 1;
        found
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    pub fn count(&self, n: u64) -> impl Iterator<Item = u64> + '_ {
        (0..n).map(move |i| i + self.writes)
    }

    /// Runs until cancelled (at most `MEET`); logs that it saw the cancel.
    pub fn until_cancelled(&self) -> bool {
        let end = Instant::now() + MEET;
        while !ferroray::is_cancelled() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        let seen = ferroray::is_cancelled();
        self.log.lock().unwrap().push(format!("cancel seen {seen}"));
        seen
    }
}

/// Position of `entry` in `log` (a test failure names the log if absent).
fn at(log: &[String], entry: &str) -> usize {
    log.iter().position(|e| e == entry).unwrap_or_else(|| panic!("{entry:?} missing from {log:?}"))
}

#[test]
fn a_threaded_actor_runs_shared_calls_at_once() {
    let _c = cluster();
    let p = Pool::remote();
    let calls: Vec<ObjectRef<usize>> = (0..4).map(|_| p.meet().remote(4)).collect();
    for c in &calls {
        assert_eq!(get(c).unwrap(), 4, "four calls were inside at once");
    }
    // Never more than max_concurrency at once.
    let reads: Vec<_> = (0..10).map(|i| p.read().remote(format!("r{i}"), 20)).collect();
    reads.iter().for_each(|r| assert!(get(r).is_ok()));
    assert_eq!(get(&p.most().remote()).unwrap(), 4);
}

#[test]
fn a_mut_self_call_runs_alone_and_is_not_overtaken() {
    let _c = cluster();
    let p = Pool::remote();
    let a = p.read().remote("a".to_string(), 200);
    let b = p.read().remote("b".to_string(), 200);
    let w = p.write().remote("w".to_string());
    let c = p.read().remote("c".to_string(), 0);
    assert_eq!(get(&w).unwrap(), 0, "no `&self` call runs beside a `&mut self` one");
    assert_eq!(get(&c).unwrap(), 1, "the call sent after the write sees it");
    assert_eq!(get(&a).unwrap(), 0);
    assert_eq!(get(&b).unwrap(), 0);
    let log = get(&p.log().remote()).unwrap();
    assert!(at(&log, "end a") < at(&log, "write w") && at(&log, "end b") < at(&log, "write w"), "{log:?}");
    assert!(at(&log, "write w") < at(&log, "start c"), "{log:?}");
}

#[test]
fn calls_start_in_the_order_sent_on_a_threaded_actor() {
    let _c = cluster();
    let p = Pool::remote();
    // Writes interleaved with reads: each write waits for the reads before
    // it, and the reads after it wait for it.
    let mut refs = Vec::new();
    for i in 0..20 {
        if i % 5 == 0 {
            refs.push(p.write().remote(format!("{i}")));
        } else {
            drop(p.read().remote(format!("{i}"), 1));
        }
    }
    refs.iter().for_each(|r| assert_eq!(get(r).unwrap(), 0));
    let log = get(&p.log().remote()).unwrap();
    for w in (0..20).step_by(5) {
        for r in (0..20).filter(|i| i % 5 != 0) {
            if r < w {
                assert!(at(&log, &format!("end {r}")) < at(&log, &format!("write {w}")), "{log:?}");
            } else {
                assert!(at(&log, &format!("write {w}")) < at(&log, &format!("start {r}")), "{log:?}");
            }
        }
    }
}

/// State that is neither `Send` nor `Sync`.
pub struct Local {
    hits: Rc<Cell<u32>>,
}

#[ferroray::actor]
impl Local {
    pub fn new() -> Self {
        Local { hits: Rc::new(Cell::new(0)) }
    }

    pub fn hit(&self) -> u32 {
        self.hits.set(self.hits.get() + 1);
        self.hits.get()
    }
}

#[test]
fn a_threaded_actor_of_unshareable_state_is_refused_at_once() {
    let _c = cluster();
    match Local::options().max_concurrency(2).remote() {
        Err(Error::InvalidOption(m)) => assert!(m.contains("Send + Sync"), "{m}"),
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    match Local::options().max_concurrency(0).remote() {
        Err(Error::InvalidOption(m)) => assert!(m.contains("at least 1"), "{m}"),
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    // Serial, it is fine.
    let l = Local::remote();
    assert_eq!(get(&l.hit().remote()).unwrap(), 1);
}

#[test]
fn a_threaded_generator_paused_by_backpressure_holds_only_its_thread() {
    let _c = cluster();
    let p = Pool::remote();
    let gen = p.count().generator_backpressure(NonZeroU32::new(1).unwrap()).remote(5);
    let first = gen.next_timeout(T).expect("an item").expect("an item's ref");
    // The generator is paused (one item unconsumed); other calls go on.
    assert_eq!(get(&p.read().remote("x".to_string(), 0)).unwrap(), 0);
    let mut items = vec![get(&first).unwrap()];
    items.extend(gen.map(|r| get(&r).unwrap()));
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
}

#[test]
fn cancel_on_a_threaded_actor() {
    let _c = cluster();
    let p = Pool::remote();
    let running = p.until_cancelled().remote();
    let w = p.write().remote("w".to_string());
    let queued = p.write().remote("never".to_string());
    // `w` waits for `running`; `queued` waits behind `w`.
    std::thread::sleep(Duration::from_millis(200));
    ferroray::cancel(&queued).unwrap();
    ferroray::cancel(&running).unwrap();
    assert_eq!(get(&running), Err(Error::TaskCancelled));
    assert_eq!(get(&queued), Err(Error::TaskCancelled));
    assert_eq!(get(&w).unwrap(), 0);
    let log = get(&p.log().remote()).unwrap();
    assert!(log.contains(&"cancel seen true".to_string()), "{log:?}");
    assert!(!log.contains(&"write never".to_string()), "a cancelled call never runs: {log:?}");
}

/// An async actor: its state is neither `Send` nor `Sync`.
pub struct Loop {
    inside: Cell<usize>,
    most: Cell<usize>,
    log: RefCell<Vec<String>>,
    writes: u64,
    _not_send: Rc<()>,
}

impl Loop {
    /// Counts a `&self` call in until the guard drops (also when a cancel
    /// drops the call's future).
    fn enter<'a>(&'a self, tag: &'a str) -> Inside<'a> {
        self.log.borrow_mut().push(format!("start {tag}"));
        self.inside.set(self.inside.get() + 1);
        self.most.set(self.most.get().max(self.inside.get()));
        Inside(self, tag)
    }
}

struct Inside<'a>(&'a Loop, &'a str);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.set(self.0.inside.get() - 1);
        self.0.log.borrow_mut().push(format!("end {}", self.1));
    }
}

/// Drops with the future that owns it: logs that it went.
struct OnDrop<'a>(&'a RefCell<Vec<String>>);

impl Drop for OnDrop<'_> {
    fn drop(&mut self) {
        self.0.borrow_mut().push("dropped".to_string());
    }
}

#[ferroray::actor]
impl Loop {
    pub fn new() -> Self {
        Loop {
            inside: Cell::new(0),
            most: Cell::new(0),
            log: RefCell::new(Vec::new()),
            writes: 0,
            _not_send: Rc::new(()),
        }
    }

    pub async fn meet(&self, n: usize) -> usize {
        let _inside = self.enter("meet");
        let end = Instant::now() + MEET;
        while self.most.get() < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.most.get()
    }

    pub async fn read(&self, tag: String, ms: u64) -> u64 {
        let inside = self.enter(&tag);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        drop(inside);
        self.writes
    }

    /// Holds the state across an await; gives the `&self` calls it found
    /// running at its start and at its end.
    pub async fn write(&mut self, tag: String, ms: u64) -> (usize, usize) {
        let before = self.inside.get();
        self.log.get_mut().push(format!("write {tag}"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.writes += 1;
        self.log.get_mut().push(format!("wrote {tag}"));
        (before, self.inside.get())
    }

    /// A sync method of an async actor.
    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    pub fn most(&self) -> usize {
        self.most.get()
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Awaits a ref (does not block the event loop while it waits).
    pub async fn wait_for(&self, refs: Vec<ObjectRef<u64>>) -> u64 {
        let mut sum = 0;
        for r in refs {
            sum += r.await.expect("the value");
        }
        sum
    }

    pub async fn items(&self, n: u64) -> impl futures::Stream<Item = u64> + '_ {
        futures::StreamExt::map(futures::stream::iter(0..n), move |i| i + self.writes)
    }

    /// Ends the actor after this call, which finishes after `ms`.
    pub async fn quit_after(&self, ms: u64) -> u64 {
        ferroray::exit_actor().expect("called from an actor's method");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        7
    }

    /// Sleeps far longer than any test; a cancel drops it at its await.
    pub async fn sleep_long(&self) -> u64 {
        let _guard = OnDrop(&self.log);
        tokio::time::sleep(Duration::from_secs(600)).await;
        0
    }
}

#[remote]
fn slow_value(v: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    v
}

#[test]
fn an_async_actor_interleaves_its_calls_at_awaits() {
    let _c = cluster();
    let l = Loop::remote();
    let calls: Vec<_> = (0..10).map(|_| l.meet().remote(10)).collect();
    for c in &calls {
        assert_eq!(get(c).unwrap(), 10, "ten calls were inside at once on one thread");
    }
}

#[test]
fn max_concurrency_bounds_an_async_actor() {
    let _c = cluster();
    let l = Loop::options().max_concurrency(2).remote().unwrap();
    let reads: Vec<_> = (0..8).map(|i| l.read().remote(format!("r{i}"), 20)).collect();
    reads.iter().for_each(|r| assert!(get(r).is_ok()));
    assert_eq!(get(&l.most().remote()).unwrap(), 2);
}

#[test]
fn a_mut_self_async_method_is_exclusive_across_its_awaits() {
    let _c = cluster();
    let l = Loop::remote();
    let a = l.read().remote("a".to_string(), 200);
    let w = l.write().remote("w".to_string(), 200);
    let b = l.read().remote("b".to_string(), 0);
    assert_eq!(get(&w).unwrap(), (0, 0), "no `&self` call runs while a `&mut self` one holds the state");
    assert_eq!(get(&a).unwrap(), 0);
    assert_eq!(get(&b).unwrap(), 1);
    let log = get(&l.log().remote()).unwrap();
    assert!(at(&log, "end a") < at(&log, "write w"), "{log:?}");
    assert!(at(&log, "wrote w") < at(&log, "start b"), "{log:?}");
}

#[test]
fn calls_start_in_the_order_sent_on_an_async_actor() {
    let _c = cluster();
    let l = Loop::remote();
    let refs: Vec<_> = (0..50).map(|i| l.read().remote(format!("{i}"), 0)).collect();
    refs.iter().for_each(|r| assert!(get(r).is_ok()));
    let log = get(&l.log().remote()).unwrap();
    let starts: Vec<&String> = log.iter().filter(|e| e.starts_with("start")).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("start {i}")).collect();
    assert_eq!(starts, expected.iter().collect::<Vec<_>>());
}

#[test]
fn an_async_method_awaits_a_ref_without_blocking_the_actor() {
    let _c = cluster();
    let l = Loop::remote();
    let slow = slow_value::remote(40, 500);
    let waiting = l.wait_for().remote(vec![slow, ferroray::put(2u64).unwrap()]);
    // Another call runs while the first awaits its ref.
    assert_eq!(get(&l.read().remote("x".to_string(), 0)).unwrap(), 0);
    let (ready, _) = ferroray::wait(std::slice::from_ref(&waiting), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty(), "the awaited ref is not ready yet");
    assert_eq!(get(&waiting).unwrap(), 42);
}

#[test]
fn an_async_generator_paused_by_backpressure_does_not_block_the_loop() {
    let _c = cluster();
    let l = Loop::remote();
    let gen = l.items().generator_backpressure(NonZeroU32::new(1).unwrap()).remote(5);
    let first = gen.next_timeout(T).expect("an item").expect("an item's ref");
    assert_eq!(get(&l.read().remote("x".to_string(), 0)).unwrap(), 0, "the loop goes on");
    let mut items = vec![get(&first).unwrap()];
    items.extend(gen.map(|r| get(&r).unwrap()));
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
}

#[test]
fn cancel_drops_a_running_async_call() {
    let _c = cluster();
    let l = Loop::remote();
    let r = l.sleep_long().remote();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    ferroray::cancel(&r).unwrap();
    assert_eq!(get(&r), Err(Error::TaskCancelled));
    assert!(started.elapsed() < T);
    let log = get(&l.log().remote()).unwrap();
    assert!(log.contains(&"dropped".to_string()), "the call's future was dropped: {log:?}");
    // The actor goes on.
    assert_eq!(get(&l.read().remote("after".to_string(), 0)).unwrap(), 0);
}

/// A small deterministic generator of choices (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// How long each stress test runs.
const STRESS: Duration = Duration::from_secs(3);

/// The windows of the threaded and async executors, stressed for a bounded
/// time: cancels that land while a call waits for its turn or as it
/// starts, among `&self` and `&mut self` calls. Every call resolves (to its
/// value or `TaskCancelled`), a `&mut self` call never finds a `&self` one
/// running, and the actor keeps serving.
#[test]
fn stress_cancels_among_shared_and_exclusive_calls() {
    let _c = cluster();
    let pool = Pool::remote();
    let lp = Loop::options().max_concurrency(8).remote().unwrap();
    let mut rng = Lcg(7);
    let end = Instant::now() + STRESS;
    let mut rounds = 0;
    while Instant::now() < end {
        rounds += 1;
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        let mut async_writes = Vec::new();
        for i in 0..24 {
            let tag = format!("{rounds}.{i}");
            match rng.below(4) {
                0 => writes.push(pool.write().remote(tag)),
                1 => reads.push(pool.read().remote(tag, rng.below(3))),
                2 => async_writes.push(lp.write().remote(tag, rng.below(3))),
                _ => reads.push(lp.read().remote(tag, rng.below(3))),
            }
        }
        for r in &reads {
            if rng.below(3) == 0 {
                ferroray::cancel(r).unwrap();
            }
        }
        for w in &writes {
            if rng.below(3) == 0 {
                ferroray::cancel(w).unwrap();
            }
        }
        for r in &reads {
            assert!(matches!(get(r), Ok(_) | Err(Error::TaskCancelled)), "{:?}", get(r));
        }
        for w in &writes {
            match get(w) {
                Ok(found) => assert_eq!(found, 0, "a `&mut self` call ran beside a `&self` one"),
                Err(e) => assert_eq!(e, Error::TaskCancelled),
            }
        }
        for w in &async_writes {
            assert_eq!(get(w).unwrap(), (0, 0), "a `&mut self` async call ran beside a `&self` one");
        }
    }
    assert!(get(&pool.most().remote()).unwrap() <= 4);
    assert!(get(&lp.most().remote()).unwrap() <= 8);
    assert!(rounds > 1, "the stress ran more than one round");
}

/// A kill racing the calls of a threaded and an async actor: every call
/// resolves, to its value or `ActorDied`, never hangs.
#[test]
fn stress_kill_racing_running_calls() {
    let _c = cluster();
    let mut rng = Lcg(11);
    let end = Instant::now() + STRESS;
    let mut rounds = 0;
    while Instant::now() < end {
        rounds += 1;
        let pool = Pool::remote();
        let lp = Loop::remote();
        let reads: Vec<ObjectRef<u64>> = (0..8)
            .flat_map(|i| {
                [pool.read().remote(format!("{i}"), rng.below(5)), lp.read().remote(format!("{i}"), rng.below(5))]
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.below(10)));
        pool.kill().unwrap();
        lp.kill().unwrap();
        for r in &reads {
            match get(r) {
                Ok(v) => assert_eq!(v, 0),
                Err(Error::ActorDied { .. }) => {}
                Err(e) => panic!("a call racing a kill ended with {e:?}"),
            }
        }
    }
    assert!(rounds > 1, "the stress ran more than one round");
}

/// Ray #11683: retries and restarts of async actors hang. Here a crash
/// under running calls restarts a threaded and an async actor, and the
/// calls run again on the new process.
#[test]
fn threaded_and_async_actors_restart_and_retry_their_calls() {
    let _c = cluster();
    let pool = Pool::options().max_restarts(1).max_task_retries(1).remote().unwrap();
    let lp = Loop::options().max_restarts(1).max_task_retries(1).remote().unwrap();
    let (pool_pid, loop_pid) = (get(&pool.pid().remote()).unwrap(), get(&lp.pid().remote()).unwrap());
    let pool_calls: Vec<_> = (0..3).map(|i| pool.read().remote(format!("{i}"), 1_000)).collect();
    let loop_calls: Vec<_> = (0..3).map(|i| lp.read().remote(format!("{i}"), 1_000)).collect();
    std::thread::sleep(Duration::from_millis(200));
    for pid in [pool_pid, loop_pid] {
        // SAFETY: signalling a worker process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    for r in pool_calls.iter().chain(&loop_calls) {
        assert_eq!(get(r).unwrap(), 0, "retried on the new process");
    }
    assert_ne!(get(&pool.pid().remote()).unwrap(), pool_pid);
    assert_ne!(get(&lp.pid().remote()).unwrap(), loop_pid);
}

/// `exit_actor()` in an async method ends the actor after that call, even
/// when calls that interleave with it finish first.
#[test]
fn exit_actor_on_an_async_actor_waits_for_the_call_that_asked() {
    let _c = cluster();
    let l = Loop::remote();
    let quit = l.quit_after().remote(300);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get(&l.read().remote("x".to_string(), 0)).unwrap(), 0, "still serving meanwhile");
    assert_eq!(get(&quit).unwrap(), 7, "the call that asked gets its result");
    assert!(common::eventually(T, || matches!(get(&l.most().remote()), Err(Error::ActorDied { .. }))));
}

/// A call cancelled while it waits for its turn (a `&mut self` call behind
/// a long `&self` one) ends at once, on both kinds, and never runs.
#[test]
fn a_call_waiting_for_its_turn_is_cancelled_at_once() {
    let _c = cluster();
    let pool = Pool::remote();
    let lp = Loop::remote();
    let long_pool = pool.read().remote("long".to_string(), 3_000);
    let long_loop = lp.read().remote("long".to_string(), 3_000);
    let waiting_pool = pool.write().remote("never".to_string());
    let waiting_loop = lp.write().remote("never".to_string(), 0);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    ferroray::cancel(&waiting_pool).unwrap();
    ferroray::cancel(&waiting_loop).unwrap();
    assert_eq!(get(&waiting_pool), Err(Error::TaskCancelled));
    assert_eq!(get(&waiting_loop), Err(Error::TaskCancelled));
    assert!(t.elapsed() < Duration::from_millis(1_500), "not after the long calls: {:?}", t.elapsed());
    assert_eq!(get(&long_pool).unwrap(), 0, "no write ran");
    assert_eq!(get(&long_loop).unwrap(), 0, "no write ran");
    for log in [get(&pool.log().remote()).unwrap(), get(&lp.log().remote()).unwrap()] {
        assert!(!log.contains(&"write never".to_string()), "{log:?}");
    }
}
