//! How `cancel_with` cancels.

/// How [`cancel_with`](crate::cancel_with) cancels a task. The default is
/// what [`cancel`](crate::cancel) does (Ray's `ray.cancel(ref)`):
/// cooperative, and recursive to the tasks it submitted.
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
}

impl Default for CancelOptions {
    fn default() -> Self {
        CancelOptions { force: false, recursive: true }
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

    /// Also cancel, the same way, the tasks it submitted (and theirs):
    /// default true. Like Ray's `recursive`.
    pub fn recursive(mut self, on: bool) -> Self {
        self.recursive = on;
        self
    }
}
