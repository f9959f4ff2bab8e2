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

/// How a worker runs a function.
pub enum Invoke {
    /// A plain function: arguments in, all return values out at the end.
    Values(fn(&mut ArgReader<'_>) -> Result<Vec<ReturnValue>>),
    /// A generator: each yielded value goes to the sink as it is made.
    Items(fn(&mut ArgReader<'_>, &mut dyn ItemSink) -> Result<()>),
}

/// Where a generator's items go: reported to the owner one by one
/// (streaming, dynamic) or kept as the task's fixed return values.
pub trait ItemSink {
    /// Takes one yielded value. An error (the task was cancelled or closed,
    /// or more values than `num_returns`) stops the generator.
    fn item(&mut self, value: ReturnValue) -> Result<()>;
}

pub struct RemoteFunction {
    /// `module::path::name`, the same in the driver and the worker.
    pub name: &'static str,
    pub invoke: Invoke,
}

#[linkme::distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

pub fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    static TABLE: OnceLock<HashMap<&'static str, &'static RemoteFunction>> = OnceLock::new();
    TABLE.get_or_init(|| REMOTE_FUNCTIONS.iter().map(|f| (f.name, f)).collect()).get(name).copied()
}
