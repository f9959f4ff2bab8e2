//! Bounds on every count and size a message carries.
//!
//! A frame is at most [`MAX_FRAME`](crate::MAX_FRAME) bytes, which bounds what
//! decoding allocates; these limits bound what a message *claims*: a
//! `Submit` of a few bytes asking for ten million return objects would
//! otherwise make the node allocate them all under its lock. The node's
//! server calls [`ToNode::check`] on every decoded message before it takes
//! the state lock; a message over a limit closes that connection with a
//! [`Error::Protocol`] naming the limit, and the node serves everyone else.

use crate::{Encoding, FunctionDescriptor, ObjectValue, ReturnKind, TaskArg, TaskSpec, ToNode};
use ferroray_common::{Error, ObjectId};

/// Largest frame before a connection's hello is accepted: a hello is tens
/// of bytes, so an unauthenticated peer cannot make the node allocate more.
pub const MAX_HELLO_FRAME: u32 = 4096;
/// Bytes of argument values one task carries inline: past it the submitter
/// sends further arguments as objects of their own, and the node leaves
/// resolved ref arguments as refs for the worker to fetch, so a task always
/// fits in one frame.
pub const INLINE_ARGS: usize = 16 << 20;
/// Return objects of one task (`num_returns`).
pub const MAX_RETURNS: u32 = 10_000;
/// Arguments of one task.
pub const MAX_ARGS: usize = 10_000;
/// Ids in one list: refs nested in a value or a task's arguments, and the
/// ids of one `AddRef`, `RemoveRef`, `Subscribe`, `Unpin` or `Revoked`.
pub const MAX_IDS: usize = 1_000_000;
/// Bytes of a function's name (a Rust path, a Python module or qualname).
pub const MAX_NAME: usize = 4096;
/// Bytes of a pickled Python function.
pub const MAX_PICKLED_FUNCTION: usize = 16 << 20;
/// Distinct resources one task asks for.
pub const MAX_RESOURCES: usize = 64;
/// Bytes of a resource's name.
pub const MAX_RESOURCE_NAME: usize = 256;
/// Whole units of one resource one task asks for.
pub const MAX_RESOURCE_AMOUNT: f64 = 1e12;
/// Calls one actor runs at once (`max_concurrency`).
pub const MAX_ACTOR_CONCURRENCY: u32 = 10_000;
/// Bytes of what a front keeps with an actor (`ActorSpec::front`).
pub const MAX_ACTOR_FRONT: usize = 1 << 20;

/// Commands in a driver's [`ToNode::WorkerCommands`] (one per kind).
pub const MAX_WORKER_COMMANDS: usize = crate::WorkerKind::ALL.len();
/// Arguments, or environment variables, of one worker command.
pub const MAX_COMMAND_PARTS: usize = 1024;
/// Bytes of one worker command, all its parts together.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

fn over(what: &str, n: usize, max: usize) -> Result<(), Error> {
    if n > max {
        Err(Error::Protocol(format!("{what}: {n} is over the limit of {max}")))
    } else {
        Ok(())
    }
}

fn check_ids(what: &str, ids: &[ObjectId]) -> Result<(), Error> {
    over(what, ids.len(), MAX_IDS)
}

/// What a client may claim about a value's bytes: the encodings that have
/// no bytes are made by the node alone.
fn check_encoding(encoding: Encoding) -> Result<(), Error> {
    match encoding {
        Encoding::Rust | Encoding::Raw => Ok(()),
        Encoding::Unit | Encoding::RefList => {
            Err(Error::Protocol(format!("encoding {encoding:?} is made by the node, not sent to it")))
        }
    }
}

fn check_value(value: &ObjectValue) -> Result<(), Error> {
    match value {
        ObjectValue::Data { contained, encoding, .. } => {
            check_encoding(*encoding)?;
            check_ids("refs nested in a value", contained)
        }
        ObjectValue::Error(_) => Ok(()),
    }
}

/// Checks a task spec's counts and sizes.
pub fn check_spec(spec: &TaskSpec) -> Result<(), Error> {
    match &spec.function {
        FunctionDescriptor::Rust { name } => over("function name bytes", name.len(), MAX_NAME)?,
        FunctionDescriptor::Python { module, qualname, pickled, .. } => {
            over("module name bytes", module.len(), MAX_NAME)?;
            over("function name bytes", qualname.len(), MAX_NAME)?;
            over("pickled function bytes", pickled.len(), MAX_PICKLED_FUNCTION)?;
        }
    }
    if let ReturnKind::Fixed(n) = spec.returns {
        over("return objects", n as usize, MAX_RETURNS as usize)?;
    }
    over("arguments", spec.args.len(), MAX_ARGS)?;
    for arg in &spec.args {
        match arg {
            TaskArg::Object { .. } => {
                return Err(Error::Protocol("a submitted argument may not claim a resolved object".into()))
            }
            TaskArg::Value { encoding, .. } => check_encoding(*encoding)?,
            TaskArg::Ref(_) => {}
        }
    }
    check_ids("refs nested in arguments", &spec.contained)?;
    spec.resources
        .check_bounds(MAX_RESOURCES, MAX_RESOURCE_NAME, MAX_RESOURCE_AMOUNT)
        .map_err(|e| Error::Protocol(format!("task resources: {e}")))?;
    if spec.attempt != 0 {
        return Err(Error::Protocol("a submitted task's attempt is set by the node".into()));
    }
    if let Some(crate::ActorTask::Create(a)) = &spec.actor {
        over("actor class name bytes", a.class.len(), MAX_NAME)?;
        over("actor name bytes", a.name.as_ref().map_or(0, String::len), MAX_NAME)?;
        over("actor front data bytes", a.front.len(), MAX_ACTOR_FRONT)?;
        if a.max_concurrency == 0 || a.max_concurrency > MAX_ACTOR_CONCURRENCY {
            return Err(Error::Protocol(format!(
                "actor max_concurrency {} is not in 1..={MAX_ACTOR_CONCURRENCY}",
                a.max_concurrency
            )));
        }
    }
    Ok(())
}

impl ToNode {
    /// Checks every count and size in the message against the limits above.
    pub fn check(&self) -> Result<(), Error> {
        match self {
            ToNode::Submit(spec) => match spec.actor {
                Some(crate::ActorTask::Create(_)) => {
                    Err(Error::Protocol("an actor is created with CreateActor, not Submit".into()))
                }
                _ => check_spec(spec),
            },
            ToNode::CreateActor { spec, .. } => match spec.actor {
                Some(crate::ActorTask::Create(_)) => check_spec(spec),
                _ => Err(Error::Protocol("CreateActor without an actor spec".into())),
            },
            ToNode::GetActor { name, .. } => over("actor name bytes", name.len(), MAX_NAME),
            ToNode::ExportFunction { pickled, .. } => {
                over("pickled function bytes", pickled.len(), MAX_PICKLED_FUNCTION)
            }
            ToNode::Put { value, .. } => check_value(value),
            // A copy of what another node stored: its encodings included.
            ToNode::Import { value: ObjectValue::Data { contained, .. }, .. } => {
                check_ids("refs nested in a value", contained)
            }
            ToNode::Import { value: ObjectValue::Error(_), .. } => Ok(()),
            ToNode::AddRef(ids) => check_ids("AddRef ids", ids),
            ToNode::RemoveRef(ids) => check_ids("RemoveRef ids", ids),
            ToNode::Subscribe(ids) => check_ids("Subscribe ids", ids),
            ToNode::Locate(ids) => check_ids("Locate ids", ids),
            ToNode::Unpin(ids) => check_ids("Unpin ids", ids),
            ToNode::Revoked { task_ids } => over("revoked tasks", task_ids.len(), MAX_IDS),
            ToNode::TaskDone { outcome: crate::TaskOutcome::Returned(values), .. } => {
                over("returned values", values.len(), MAX_RETURNS as usize)?;
                values.iter().try_for_each(check_value)
            }
            ToNode::ReportItem { value, .. } => check_value(value),
            ToNode::WorkerCommands(commands) => {
                over("worker commands", commands.len(), MAX_WORKER_COMMANDS)?;
                for c in commands {
                    over("worker command arguments", c.args.len(), MAX_COMMAND_PARTS)?;
                    over("worker command variables", c.env.len(), MAX_COMMAND_PARTS)?;
                    let bytes = c.program.len()
                        + c.args.iter().map(String::len).sum::<usize>()
                        + c.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                    over("worker command bytes", bytes, MAX_COMMAND_BYTES)?;
                }
                Ok(())
            }
            ToNode::Hello { .. }
            | ToNode::TaskDone { .. }
            | ToNode::Allocate { .. }
            | ToNode::Deallocate { .. }
            | ToNode::Cancel { .. }
            | ToNode::Blocked
            | ToNode::Unblocked
            | ToNode::ListTasks { .. }
            | ToNode::StreamConsumed { .. }
            | ToNode::StreamDrop { .. }
            | ToNode::StreamHandOff { .. }
            | ToNode::StreamClaim { .. }
            | ToNode::KillActor { .. }
            | ToNode::TerminateActor { .. }
            | ToNode::Borrow { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroray_common::{resources, ResourceSet, RetryExceptions, TaskId, WorkerId};

    fn spec() -> TaskSpec {
        TaskSpec {
            task_id: TaskId { submitter: WorkerId(1), seq: 1 },
            function: FunctionDescriptor::Rust { name: "f".into() },
            args: vec![],
            contained: vec![],
            returns: ReturnKind::Fixed(1),
            resources: ResourceSet::new().with(resources::CPU, 1.0),
            max_retries: 0,
            retry_exceptions: RetryExceptions::None,
            parent: None,
            enable_events: false,
            attempt: 0,
            actor: None,
        }
    }

    #[test]
    fn each_limit_is_enforced() {
        assert!(check_spec(&spec()).is_ok());
        let mut s = spec();
        s.returns = ReturnKind::Fixed(10_000_000);
        assert!(matches!(check_spec(&s), Err(Error::Protocol(m)) if m.contains("return objects")));
        let mut s = spec();
        s.function = FunctionDescriptor::Rust { name: "x".repeat(MAX_NAME + 1) };
        assert!(check_spec(&s).is_err());
        let mut s = spec();
        s.resources = ResourceSet::new().with(resources::CPU, -1.0);
        assert!(matches!(check_spec(&s), Err(Error::Protocol(m)) if m.contains("CPU")));
        let mut s = spec();
        s.resources = ResourceSet::new().with(&"r".repeat(MAX_RESOURCE_NAME + 1), 1.0);
        assert!(check_spec(&s).is_err());
        let mut s = spec();
        s.args = vec![
            TaskArg::Value { payload: crate::Payload::Inline(vec![]), encoding: crate::Encoding::Rust };
            MAX_ARGS + 1
        ];
        assert!(check_spec(&s).is_err());
        let mut s = spec();
        s.attempt = 3;
        assert!(check_spec(&s).is_err());
        let ids = vec![ObjectId { task: TaskId { submitter: WorkerId(1), seq: 1 }, index: 0 }; MAX_IDS + 1];
        assert!(ToNode::Subscribe(ids).check().is_err());
    }

    #[test]
    fn a_client_cannot_send_the_node_made_encodings() {
        let id = ObjectId { task: TaskId { submitter: WorkerId(1), seq: 1 }, index: 0 };
        let put = |encoding| ToNode::Put {
            id,
            value: ObjectValue::Data { payload: crate::Payload::Inline(vec![]), encoding, contained: vec![] },
        };
        assert!(put(crate::Encoding::Rust).check().is_ok());
        assert!(put(crate::Encoding::Raw).check().is_ok());
        for e in [crate::Encoding::Unit, crate::Encoding::RefList] {
            assert!(matches!(put(e).check(), Err(Error::Protocol(m)) if m.contains("made by the node")));
            let mut s = spec();
            s.args = vec![TaskArg::Value { payload: crate::Payload::Inline(vec![]), encoding: e }];
            assert!(check_spec(&s).is_err());
        }
    }
}
