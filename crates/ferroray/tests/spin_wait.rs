//! Spin, then sleep (`Config::spin_wait`): waiters watch for news for a
//! moment before they sleep. Nothing may be lost at the boundary between
//! watching and sleeping, and an idle cluster must use no CPU.

mod common;

use common::*;
use ferroray::Config;
use std::time::{Duration, Instant};

#[ferroray::remote]
fn add_one(x: u64) -> u64 {
    x + 1
}

pub struct Counter {
    n: u64,
}

#[ferroray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter { n: 0 }
    }

    pub fn incr(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

/// CPU time (user + system) process `pid` has used, in clock ticks; `None`
/// once it exited.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let rest = stat.rsplit(')').next().expect("stat fields");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime"))
}

/// Sequential calls with every kind of wait on the path (a `get` of a call
/// just made, an idle worker, the node between messages), and a burst.
fn exercise(counter: &ferroray::ActorHandle<Counter>, calls: u64) {
    let start = get(&counter.incr().remote()).expect("first call");
    for i in 1..=calls {
        assert_eq!(get(&counter.incr().remote()).expect("call"), start + i);
        assert_eq!(get(&add_one::remote(i)).expect("task"), i + 1);
    }
    let burst: Vec<_> = (0..200).map(add_one::remote).collect();
    let got = ferroray::get_all_timeout(&burst, T).expect("burst");
    assert_eq!(got, (1..=200).collect::<Vec<u64>>());
}

#[test]
fn an_idle_cluster_uses_no_cpu_after_watching() {
    let _c = cluster_with(Config::default().spin_wait(Duration::from_micros(200)));
    let counter = Counter::remote();
    exercise(&counter, 200);
    let mut pids = worker_pids();
    pids.push(std::process::id());
    // Whatever was watching has long given up by now.
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<Option<u64>> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<Option<u64>> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    assert!(after.last().is_some_and(|t| t.is_some()), "the driver is alive");
    for ((pid, b), a) in pids.iter().zip(&before).zip(&after) {
        // A worker beyond the steady pool exits once idle for the idle
        // timeout: gone, it uses nothing.
        let (Some(b), Some(a)) = (b, a) else { continue };
        // A clock tick is 10 ms: a process that watched on would show up to
        // 100 ticks; the node's once-a-second tick and housekeeping, none.
        assert!(a - b <= 3, "pid {pid} used {} ticks of CPU in an idle second", a - b);
    }
}

#[test]
fn without_watching_every_wait_sleeps_and_nothing_is_lost() {
    let _c = cluster_with(Config::default().spin_wait(Duration::ZERO));
    let counter = Counter::remote();
    exercise(&counter, 300);
}

/// A budget of one microsecond makes almost every wait give up watching
/// just as its news comes: the window between the last look and the sleep.
/// Every call must still complete (each `get` has the test timeout).
#[test]
fn stress_news_at_the_end_of_watching_is_not_lost() {
    let _c = cluster_with(Config::default().spin_wait(Duration::from_micros(1)));
    let counter = Counter::remote();
    let end = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while Instant::now() < end {
        exercise(&counter, 20);
        rounds += 1;
    }
    assert!(rounds > 0);
}

/// The same with several threads of the driver waiting at once, each on
/// its own calls, woken by the one node thread.
#[test]
fn stress_many_waiters_each_get_their_own_news() {
    let _c = cluster_with(Config::default().spin_wait(Duration::from_micros(5)));
    let end = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let counter = Counter::remote();
                let mut expect = 0;
                while Instant::now() < end {
                    expect += 1;
                    assert_eq!(get(&counter.incr().remote()).expect("call"), expect);
                }
            });
        }
    });
}
