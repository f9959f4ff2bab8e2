//! Actors against real worker processes: creation, calls in order, state,
//! errors, generator methods, handles counted like refs (passed to tasks,
//! temporary, dropped), named actors, kill, crash and restart.

mod common;

use common::{cluster, cluster_with, eventually, get, process_gone, T};
use ferroray::{ActorHandle, Config, Error, ObjectRef};
use std::time::Duration;

pub struct Counter {
    value: i64,
    calls: Vec<i64>,
}

#[ferroray::actor]
impl Counter {
    pub fn new(start: i64) -> Self {
        Counter { value: start, calls: Vec::new() }
    }

    pub fn incr(&mut self, by: i64) -> i64 {
        self.value += by;
        self.calls.push(by);
        self.value
    }

    pub fn value(&self) -> i64 {
        self.value
    }

    /// The arguments of every `incr`, in the order the calls ran.
    pub fn history(&self) -> Vec<i64> {
        self.calls.clone()
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    pub fn fail_if_negative(&self, x: i64) -> Result<i64, String> {
        if x < 0 {
            Err(format!("{x} is negative"))
        } else {
            Ok(x)
        }
    }

    /// Counts up from the current value, borrowing the state.
    pub fn count_up(&self, n: i64) -> impl Iterator<Item = i64> + '_ {
        (0..n).map(move |i| self.value + i)
    }

    pub fn crash(&self) -> i64 {
        std::process::exit(3)
    }

    pub fn panic(&mut self) -> i64 {
        self.value = -1;
        panic!("a method panicked")
    }

    /// Ends the actor after this call.
    pub fn quit(&self) -> i64 {
        ferroray::exit_actor().expect("called from an actor's method");
        self.value
    }

    pub fn sleep(&self, ms: u64) -> i64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.value
    }
}

pub struct Failing;

#[ferroray::actor]
impl Failing {
    pub fn new(fail: bool) -> Result<Self, String> {
        if fail {
            Err("the constructor refused".to_string())
        } else {
            Ok(Failing)
        }
    }

    pub fn ok(&self) -> bool {
        true
    }
}

/// `v`, after `ms` milliseconds.
#[ferroray::remote]
fn slow_value(v: i64, ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    v
}

#[ferroray::remote]
fn add_through(counter: ActorHandle<Counter>, by: i64) -> i64 {
    counter.incr().remote(by).get().expect("a call from a task")
}

#[ferroray::remote]
fn value_of_named(name: String) -> i64 {
    let c = ferroray::get_actor::<Counter>(&name).expect("found by name in a task");
    c.value().remote().get().expect("value")
}

#[test]
fn an_actor_keeps_state_across_calls() {
    let _c = cluster();
    let c = Counter::remote(10);
    assert_eq!(get(&c.incr().remote(5)).unwrap(), 15);
    assert_eq!(get(&c.incr().remote(-3)).unwrap(), 12);
    assert_eq!(get(&c.value().remote()).unwrap(), 12);
    let pid = get(&c.pid().remote()).unwrap();
    assert_ne!(pid, std::process::id(), "a process of its own");
}

#[test]
fn calls_from_one_caller_start_in_submission_order() {
    let _c = cluster();
    let c = Counter::remote(0);
    // Some arguments are refs that become ready late and out of order:
    // the calls still run in the order they were made.
    let slow: Vec<ObjectRef<i64>> = (0..5).map(|i| slow_value::remote(i, 50 - i as u64 * 10)).collect();
    let mut refs = Vec::new();
    for i in 0..100 {
        if i % 20 == 0 {
            refs.push(c.incr().remote(&slow[i / 20]));
        } else {
            refs.push(c.incr().remote(i as i64));
        }
    }
    for r in &refs {
        get(r).unwrap();
    }
    let expected: Vec<i64> = (0..100).map(|i| if i % 20 == 0 { (i / 20) as i64 } else { i as i64 }).collect();
    assert_eq!(get(&c.history().remote()).unwrap(), expected);
}

#[test]
fn two_callers_interleave_each_in_order() {
    let _c = cluster();
    let c = Counter::remote(0);
    // The driver and a task both call; each one's calls keep their order.
    let from_task = add_through::remote(c.clone(), 1000);
    let mine: Vec<_> = (1..=20).map(|i| c.incr().remote(i)).collect();
    get(&from_task).unwrap();
    for r in &mine {
        get(r).unwrap();
    }
    let history = get(&c.history().remote()).unwrap();
    let driver: Vec<i64> = history.iter().copied().filter(|v| *v != 1000).collect();
    assert_eq!(driver, (1..=20).collect::<Vec<_>>());
    assert!(history.contains(&1000));
}

#[test]
fn errors_and_constructor_failures_are_typed() {
    let _c = cluster();
    let c = Counter::remote(0);
    assert_eq!(get(&c.fail_if_negative().remote(3)).unwrap(), 3);
    let err = get(&c.fail_if_negative().remote(-1)).unwrap_err();
    assert!(matches!(&err, Error::Task(t) if t.message.contains("negative")), "{err}");
    assert_eq!(get(&c.value().remote()).unwrap(), 0, "an Err return does not end the actor");

    let bad = Failing::remote(true);
    let err = get(&bad.ok().remote()).unwrap_err();
    assert!(
        matches!(&err, Error::ActorDied { cause: ferroray::ActorDeathCause::CreationFailed(m), .. } if m.contains("refused")),
        "{err}"
    );
    assert!(get(&Failing::remote(false).ok().remote()).unwrap());
}

#[test]
fn generator_methods() {
    let _c = cluster();
    let c = Counter::remote(7);
    let items: Vec<i64> = c.count_up().remote(4).map(|r| get(&r).unwrap()).collect();
    assert_eq!(items, vec![7, 8, 9, 10]);
    let gen = c.count_up().generator_backpressure(std::num::NonZeroU32::new(1).unwrap()).remote(3);
    assert_eq!(gen.map(|r| get(&r).unwrap()).collect::<Vec<_>>(), vec![7, 8, 9]);
}

#[test]
fn a_handle_passed_to_a_task_calls_the_same_actor() {
    let _c = cluster();
    let c = Counter::remote(1);
    assert_eq!(get(&add_through::remote(c.clone(), 2)).unwrap(), 3);
    assert_eq!(get(&c.value().remote()).unwrap(), 3);
}

#[test]
fn a_temporary_handle_keeps_the_actor_for_its_call() {
    let _c = cluster();
    // The handle is dropped at the end of the statement, before the call runs.
    let r = Counter::remote(41).incr().remote(1);
    assert_eq!(get(&r).unwrap(), 42);
}

#[test]
fn the_last_handle_dropped_ends_the_process() {
    let _c = cluster();
    let c = Counter::remote(0);
    let pid = get(&c.pid().remote()).unwrap();
    let c2 = c.clone();
    drop(c);
    assert_eq!(get(&c2.value().remote()).unwrap(), 0, "a clone still holds it");
    drop(c2);
    assert!(eventually(T, || process_gone(pid)), "the actor's process exits");
}

#[test]
fn named_actors_are_found_and_names_are_unique() {
    let _c = cluster();
    let c = Counter::options().name("shared-counter").remote(5).unwrap();
    let err = Counter::options().name("shared-counter").remote(0).unwrap_err();
    assert!(matches!(&err, Error::InvalidOption(m) if m.contains("already exists")), "{err}");
    let found = ferroray::get_actor::<Counter>("shared-counter").unwrap();
    assert_eq!(get(&found.incr().remote(1)).unwrap(), 6);
    assert_eq!(get(&value_of_named::remote("shared-counter".to_string())).unwrap(), 6);
    assert!(matches!(ferroray::get_actor::<Counter>("nobody"), Err(Error::InvalidOption(_))));
    assert!(ferroray::get_actor::<Failing>("shared-counter").is_err(), "another type");
    drop((c, found));
}

#[test]
fn kill_ends_the_actor_and_later_calls_fail_at_once() {
    let _c = cluster();
    let c = Counter::remote(0);
    let pid = get(&c.pid().remote()).unwrap();
    let running = c.sleep().remote(10_000);
    std::thread::sleep(Duration::from_millis(100));
    ferroray::kill(&c).unwrap();
    let err = get(&running).unwrap_err();
    assert!(matches!(err, Error::ActorDied { .. }), "{err}");
    assert!(eventually(T, || process_gone(pid)));
    let t = std::time::Instant::now();
    assert!(matches!(get(&c.value().remote()), Err(Error::ActorDied { .. })));
    assert!(t.elapsed() < Duration::from_secs(2), "no hang on a dead actor");
}

#[test]
fn a_crash_restarts_the_actor_with_its_constructor() {
    let _c = cluster();
    let c = Counter::options().max_restarts(1).remote(100).unwrap();
    assert_eq!(get(&c.incr().remote(1)).unwrap(), 101);
    let crash = c.crash().remote();
    assert!(matches!(get(&crash), Err(Error::ActorDied { .. })), "no task retries: the call fails");
    // Restarted: the state is the constructor's again.
    assert_eq!(get(&c.value().remote()).unwrap(), 100);
    // Restarts used up: the next crash is the end.
    let _ = get(&c.crash().remote());
    assert!(matches!(get(&c.value().remote()), Err(Error::ActorDied { .. })));
}

#[test]
fn a_call_retried_across_a_restart_runs_again() {
    let _c = cluster();
    let c = Counter::options().max_restarts(1).max_task_retries(1).remote(0).unwrap();
    let pid = get(&c.pid().remote()).unwrap();
    let slow = c.sleep().remote(2_000);
    let after = c.incr().remote(1);
    std::thread::sleep(Duration::from_millis(200));
    // The process dies under the running call (not a kill: a crash).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(get(&slow).unwrap(), 0, "retried on the new process");
    assert_eq!(get(&after).unwrap(), 1, "a queued call waits for the restart");
    assert_ne!(get(&c.pid().remote()).unwrap(), pid);
}

#[test]
fn a_panic_in_a_method_is_a_crash() {
    let _c = cluster();
    let c = Counter::options().max_restarts(1).remote(5).unwrap();
    assert!(matches!(get(&c.panic().remote()), Err(Error::ActorDied { .. })));
    assert_eq!(get(&c.value().remote()).unwrap(), 5, "restarted, not half-updated");
}

#[test]
fn an_actor_that_can_never_be_placed_fails_its_calls() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let c = Counter::options().num_cpus(64).remote(0).unwrap();
    let err = get(&c.value().remote()).unwrap_err();
    assert!(matches!(err, Error::Infeasible(_)), "{err}");
}

#[test]
fn actor_resources_are_held_for_its_life() {
    let _c = cluster_with(Config::default().num_cpus(2));
    let a = Counter::options().num_cpus(2).remote(0).unwrap();
    assert_eq!(get(&a.value().remote()).unwrap(), 0);
    // Every CPU is the actor's: a task waits until it is gone.
    let t = slow_value::remote(9, 0);
    assert!(matches!(t.get_timeout(Duration::from_millis(500)), Err(Error::GetTimeout)));
    drop(a);
    assert_eq!(t.get_timeout(T).unwrap(), 9);
}

#[test]
fn custom_resources_of_an_actor_are_held_for_its_life() {
    let _c = cluster_with(Config::default().num_cpus(2).resource("disk", 2.0));
    let a = Counter::options().resources([("disk", 2)]).remote(0).unwrap();
    assert_eq!(get(&a.value().remote()).unwrap(), 0);
    // The only other taker of "disk" waits until the actor is gone.
    let b = Counter::options().resource("disk", 1).remote(5).unwrap();
    assert!(matches!(b.value().remote().get_timeout(Duration::from_millis(500)), Err(Error::GetTimeout)));
    drop(a);
    assert_eq!(get(&b.value().remote()).unwrap(), 5);
}

#[test]
fn many_actors_start_at_once() {
    let _c = cluster();
    // Processes racing their registration (a hello may come first).
    let actors: Vec<_> = (0..16).map(Counter::remote).collect();
    let refs: Vec<_> = actors.iter().map(|a| a.value().remote()).collect();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(r.get_timeout(T).unwrap(), i as i64);
    }
}

#[test]
fn an_actor_can_end_itself() {
    let _c = cluster();
    let c = Counter::options().max_restarts(3).remote(7).unwrap();
    let pid = get(&c.pid().remote()).unwrap();
    assert_eq!(get(&c.quit().remote()).unwrap(), 7, "the call that exits still gives its result");
    let err = get(&c.value().remote()).unwrap_err();
    assert!(matches!(&err, Error::ActorDied { cause: ferroray::ActorDeathCause::Exited, .. }), "{err}");
    assert!(eventually(T, || process_gone(pid)), "no restart: the process is gone");
    assert!(matches!(ferroray::exit_actor(), Err(Error::InvalidOption(_))), "not from a driver");
}

#[test]
fn force_cancel_of_an_actor_call_is_refused() {
    let _c = cluster();
    let c = Counter::remote(0);
    let r = c.sleep().remote(300);
    let force = ferroray::cancel_with(&r, ferroray::CancelOptions::default().force());
    assert!(matches!(&force, Err(Error::InvalidOption(m)) if m.contains("actor call")), "{force:?}");
    let grace = ferroray::cancel_with(&r, ferroray::CancelOptions::default().grace(Duration::from_millis(10)));
    assert!(matches!(&grace, Err(Error::InvalidOption(m)) if m.contains("actor call")), "{grace:?}");
    // The actor was not touched; a plain cancel is taken.
    ferroray::cancel(&r).unwrap();
    assert_eq!(get(&c.incr().remote(1)).unwrap(), 1);
    // A generator call too.
    let gen = c.count_up().remote(3);
    assert!(matches!(
        ferroray::cancel_with(&gen, ferroray::CancelOptions::default().force()),
        Err(Error::InvalidOption(_))
    ));
    // A task's force-cancel is still taken.
    let t = add_through::remote(c.clone(), 1);
    assert!(ferroray::cancel_with(&t, ferroray::CancelOptions::default().force()).is_ok());
}
