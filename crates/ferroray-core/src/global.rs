//! The process's current core worker.

use crate::worker::CoreWorker;
use ferroray_common::{Error, Result};
use parking_lot::RwLock;
use std::sync::Arc;

static CURRENT: RwLock<Option<Arc<CoreWorker>>> = RwLock::new(None);

pub fn core() -> Result<Arc<CoreWorker>> {
    CURRENT.read().clone().ok_or(Error::NotInitialized)
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
