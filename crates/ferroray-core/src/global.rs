//! The process's current core worker.

use crate::worker::CoreWorker;
use ferroray_common::{Error, Result};
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};

static CURRENT: RwLock<Option<Arc<CoreWorker>>> = RwLock::new(None);

/// What starts the embedded cluster with default settings when the API is
/// used before `init` (set by the `ferroray` crate in a driver process; a
/// worker process is always initialized, so it never has one).
static AUTO_INIT: OnceLock<fn() -> Result<()>> = OnceLock::new();

/// The current core worker, or `NotInitialized`; never starts a cluster
/// (for uses that need an existing one: decoding a ref, encoding a return).
pub fn core() -> Result<Arc<CoreWorker>> {
    CURRENT.read().clone().ok_or(Error::NotInitialized)
}

/// The current core worker, starting the embedded cluster with default
/// settings first if there is none and this process is a driver (like
/// Ray's first API call without `ray.init()`). If starting it fails, that
/// error (or `NotInitialized` where nothing can start one).
pub fn core_or_init() -> Result<Arc<CoreWorker>> {
    if let Some(core) = CURRENT.read().clone() {
        return Ok(core);
    }
    let Some(init) = AUTO_INIT.get() else {
        return Err(Error::NotInitialized);
    };
    // Two threads may race here: one init wins, the other gets
    // `AlreadyInitialized`, and both then find the winner's core.
    let started = init();
    match CURRENT.read().clone() {
        Some(core) => Ok(core),
        None => Err(started.err().unwrap_or(Error::NotInitialized)),
    }
}

/// Sets what [`core_or_init`] calls when there is no core worker.
pub fn set_auto_init(init: fn() -> Result<()>) {
    let _ = AUTO_INIT.set(init);
}

pub fn is_set() -> bool {
    CURRENT.read().is_some()
}

pub fn set(core: Arc<CoreWorker>) -> Result<()> {
    let mut cur = CURRENT.write();
    if cur.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    *cur = Some(core);
    Ok(())
}

pub fn take() -> Option<Arc<CoreWorker>> {
    CURRENT.write().take()
}
