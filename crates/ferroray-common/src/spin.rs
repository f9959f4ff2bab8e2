//! Spin, then sleep: a thread about to wait for news that is usually near
//! first watches for it for a short while.
//!
//! Waking a sleeping thread costs tens of microseconds on a virtual machine
//! (the idle CPU halts, and waking it is an interrupt through the
//! hypervisor): more than the rest of a small call. A thread that expects an
//! answer soon (a `get` of a call just made, a worker between two calls, a
//! worker's reader between two frames) watches for it for up to [`budget`]
//! before it sleeps. Each round yields the CPU, so a thread that has work on
//! the same CPU runs first: the watching uses time that would otherwise be
//! idle. A wait that outlasts the budget sleeps as before, so an idle process
//! uses no CPU. A budget of zero turns watching off.
//!
//! Watching is only ever a shortcut: every waiter looks at its condition
//! again under its lock before it sleeps, so news that comes while it
//! watches is never lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The budget a process starts with: long enough to cover a small call's
/// whole round trip (caller to node to worker and back) while the threads
/// on the way share two CPUs; measured on such a machine, 50 µs often ran
/// out before the answer came and 100 µs rarely did. A wait that ends up
/// sleeping spends at most this much CPU time more.
pub const DEFAULT_BUDGET: Duration = Duration::from_micros(100);

/// The longest budget [`set_budget`] takes: watching is for short waits.
pub const MAX_BUDGET: Duration = Duration::from_millis(10);

/// The environment variable that sets a process's budget, in microseconds
/// (read by `init` when its `Config` does not set one; a node passes its
/// budget to the workers it starts the same way).
pub const ENV: &str = "FERRORAY_SPIN_US";

/// The budget `ENV` names, if it is set and a number.
pub fn budget_from_env() -> Option<Duration> {
    std::env::var(ENV).ok()?.trim().parse().ok().map(Duration::from_micros)
}

static BUDGET_NS: AtomicU64 = AtomicU64::new(DEFAULT_BUDGET.as_nanos() as u64);

/// How long a waiter watches before it sleeps, in this process.
pub fn budget() -> Duration {
    Duration::from_nanos(BUDGET_NS.load(Ordering::Relaxed))
}

/// Sets this process's budget (at most [`MAX_BUDGET`]; zero turns watching
/// off).
pub fn set_budget(budget: Duration) {
    BUDGET_NS.store(budget.min(MAX_BUDGET).as_nanos() as u64, Ordering::Relaxed);
}

/// One wait's watching: the first call to [`Spin::until`] watches, later
/// ones return at once (the waiter then sleeps).
#[derive(Debug, Default)]
pub struct Spin {
    spent: bool,
}

impl Spin {
    pub fn new() -> Self {
        Spin { spent: false }
    }

    /// Whether this wait may still watch.
    pub fn available(&self) -> bool {
        !self.spent && BUDGET_NS.load(Ordering::Relaxed) > 0
    }

    /// Watches until `done()` holds, the budget is spent or `deadline`
    /// passes, whichever is first. True when `done()` held. Call it with no
    /// lock held: the threads that bring the news need them.
    pub fn until(&mut self, deadline: Option<Instant>, mut done: impl FnMut() -> bool) -> bool {
        if !self.available() {
            return false;
        }
        self.spent = true;
        let start = Instant::now();
        let mut end = start + budget();
        if let Some(d) = deadline {
            end = end.min(d);
        }
        loop {
            // A few cheap looks first: the news is often already on its way.
            for _ in 0..8 {
                if done() {
                    return true;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= end {
                return done();
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn watches_once_then_gives_up() {
        let mut spin = Spin::new();
        let t = Instant::now();
        assert!(!spin.until(None, || false));
        assert!(t.elapsed() >= budget().min(Duration::from_micros(1)));
        assert!(!spin.available());
        // The second call returns at once, even if the news is there.
        assert!(!spin.until(None, || true));
    }

    #[test]
    fn sees_news_from_another_thread() {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let setter = std::thread::spawn(move || f.store(true, Ordering::Release));
        setter.join().unwrap();
        let mut spin = Spin::new();
        assert!(spin.until(None, || flag.load(Ordering::Acquire)));
    }

    #[test]
    fn stops_at_the_deadline() {
        let mut spin = Spin::new();
        let t = Instant::now();
        assert!(!spin.until(Some(t), || false));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
