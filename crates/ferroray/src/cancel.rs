//! How `cancel_with` cancels.

use std::time::Duration;

/// How [`cancel_with`](crate::cancel_with) cancels a task. The default is
/// what [`cancel`](crate::cancel) does (Ray's `ray.cancel(ref)`):
/// cooperative, and recursive to the tasks it submitted.
///
/// A task still queued (not started) is dropped at once by every form, and
/// its ref gives `Error::TaskCancelled`. What each form does to a running
/// task that never calls [`is_cancelled()`](crate::is_cancelled):
///
/// | form | the running task | its ref's `get` |
/// | --- | --- | --- |
/// | default (cooperative) | runs to its end, holding its CPU (and other resources) until it returns; what it returns is discarded | `TaskCancelled`, once it returns |
/// | [`force()`](Self::force) | its worker process is killed (SIGKILL) at once and replaced | `TaskCancelled`, at once |
/// | [`grace(d)`](Self::grace) | cooperative; if still running after `d` (checked every 200 ms), killed as by `force` | `TaskCancelled`, when it returns or is killed |
/// | [`recursive(true)`](Self::recursive) (the default) | the same form is applied to every task it submitted, and theirs, depth-first | each child's ref: as above |
///
/// So a cooperative recursive cancel returns at once but does not free the
/// CPUs of children that never check `is_cancelled()`: they are still
/// running on them, until they return. A grace period bounds that. A task
/// that checks `is_cancelled()` (a generator does at each yield) ends before
/// the grace and its worker lives on.
///
/// ```no_run
/// # #[ferroray::remote] fn work() {}
/// # fn main() -> ferroray::Result<()> {
/// use ferroray::CancelOptions;
/// let r = work::remote();
/// // Kill the worker running it, and leave the tasks it submitted alone.
/// ferroray::cancel_with(&r, CancelOptions::default().force().recursive(false))?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelOptions {
    pub(crate) force: bool,
    pub(crate) recursive: bool,
    pub(crate) grace: Option<Duration>,
}

impl Default for CancelOptions {
    fn default() -> Self {
        CancelOptions { force: false, recursive: true, grace: None }
    }
}

impl CancelOptions {
    /// Kill the worker process running the task (it is replaced), instead
    /// of asking the task to stop. Like Ray's `force=True`. A task only
    /// queued is dropped either way.
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// Cooperative first, forced after `grace` (beyond Ray): the task (and,
    /// if recursive, each of its descendants) sees `is_cancelled()` turn
    /// true now, and the node kills the worker of each that still runs
    /// `grace` later (to within 200 ms). [`force()`](Self::force) overrides
    /// it (forced at once).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Also cancel, the same way, the tasks it submitted (and theirs):
    /// default true. Like Ray's `recursive`.
    pub fn recursive(mut self, on: bool) -> Self {
        self.recursive = on;
        self
    }
}
