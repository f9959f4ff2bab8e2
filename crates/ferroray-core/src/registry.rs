//! Remote functions by name.
//!
//! `#[remote]` adds one [`RemoteFunction`] per function to
//! [`REMOTE_FUNCTIONS`], a slice the linker assembles: nothing runs at
//! start-up, so the table is complete even before `main`.

use crate::codec::ReturnValue;
use crate::task::ArgReader;
use ferroray_common::Result;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Runs the function on arguments read from the task, giving its return values.
pub type InvokeFn = fn(&mut ArgReader<'_>) -> Result<Vec<ReturnValue>>;

pub struct RemoteFunction {
    /// `module::path::name`, the same in the driver and the worker.
    pub name: &'static str,
    pub invoke: InvokeFn,
}

#[linkme::distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

pub fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    static TABLE: OnceLock<HashMap<&'static str, &'static RemoteFunction>> = OnceLock::new();
    TABLE
        .get_or_init(|| REMOTE_FUNCTIONS.iter().map(|f| (f.name, f)).collect())
        .get(name)
        .copied()
}
