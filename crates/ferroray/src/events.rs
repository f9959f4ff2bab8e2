//! The task events [`tasks`](crate::tasks) returns: the public form of what
//! the node records, kept apart from the wire types (`ferroray_protocol`) so
//! that the protocol can change without changing this API.

use ferroray_common::TaskId;

/// Where a task is in its life, as recorded in a [`TaskEvent`]. Like the
/// states of Ray's task events. `#[non_exhaustive]`: new states may be added,
/// so a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskState {
    /// The node has the task; its arguments may not be ready.
    Submitted,
    /// Arguments ready, waiting for resources and a worker.
    PendingSchedule,
    /// Sent to a worker (it may wait there behind another task).
    Running,
    /// Ended with its values stored.
    Finished,
    /// Ended with an error stored (see [`TaskEvent::error`]).
    Failed,
    /// An attempt failed and the task will be tried again.
    Retrying,
    /// Ended cancelled.
    Cancelled,
}

impl TaskState {
    pub(crate) fn from_wire(s: ferroray_protocol::TaskState) -> Self {
        use ferroray_protocol::TaskState as W;
        match s {
            W::Submitted => TaskState::Submitted,
            W::PendingSchedule => TaskState::PendingSchedule,
            W::Running => TaskState::Running,
            W::Finished => TaskState::Finished,
            W::Failed => TaskState::Failed,
            W::Retrying => TaskState::Retrying,
            W::Cancelled => TaskState::Cancelled,
        }
    }
}

/// One recorded state change of a task. `#[non_exhaustive]`: read its
/// fields; more may be added.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskEvent {
    /// The task (a ref's task is `r.id().task`).
    pub task_id: TaskId,
    /// The remote function's name.
    pub name: String,
    /// The state entered.
    pub state: TaskState,
    /// 0 for the first attempt, one more for each retry.
    pub attempt: u32,
    /// When, in microseconds since the Unix epoch.
    pub time_us: u64,
    /// The worker's pid, once the task is sent to one.
    pub worker_pid: Option<u32>,
    /// The error's text, for `Failed` and `Retrying`.
    pub error: Option<String>,
    /// For an actor's creation (`Class.new`) or method call
    /// (`Class.method`), the actor.
    pub actor_id: Option<ferroray_common::ActorId>,
}

impl TaskEvent {
    pub(crate) fn from_wire(e: ferroray_protocol::TaskEvent) -> Self {
        let ferroray_protocol::TaskEvent { task_id, name, state, attempt, time_us, worker_pid, error, actor_id } = e;
        TaskEvent { task_id, name, state: TaskState::from_wire(state), attempt, time_us, worker_pid, error, actor_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wire_event_converts_field_by_field() {
        let wire = ferroray_protocol::TaskEvent {
            task_id: TaskId { submitter: ferroray_common::WorkerId(3), seq: 9 },
            name: "f".into(),
            state: ferroray_protocol::TaskState::Retrying,
            attempt: 1,
            time_us: 42,
            worker_pid: Some(7),
            error: Some("boom".into()),
            actor_id: None,
        };
        let e = TaskEvent::from_wire(wire);
        assert_eq!(
            e,
            TaskEvent {
                task_id: TaskId { submitter: ferroray_common::WorkerId(3), seq: 9 },
                name: "f".into(),
                state: TaskState::Retrying,
                attempt: 1,
                time_us: 42,
                worker_pid: Some(7),
                error: Some("boom".into()),
                actor_id: None,
            }
        );
    }
}
