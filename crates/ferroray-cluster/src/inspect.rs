//! A node's rows for `ferroray list` and `ferroray timeline`: its task
//! events, actors and objects, as the control protocol carries them
//! (`wire::Listing`), at most [`MAX_ROWS`] (the newest events, or the first
//! actors and objects).

use crate::wire::{ActorRow, EventRow, ListWhat, Listing, ObjectRow, MAX_ROWS};
use ferroray_node::Node;
use ferroray_protocol::TaskState;

/// The name of a task state in listings (Ray's spelling).
pub fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Submitted => "SUBMITTED",
        TaskState::PendingSchedule => "PENDING_SCHEDULE",
        TaskState::Running => "RUNNING",
        TaskState::Finished => "FINISHED",
        TaskState::Failed => "FAILED",
        TaskState::Retrying => "RETRYING",
        TaskState::Cancelled => "CANCELLED",
    }
}

/// The first [`MAX_ROWS`] of `items`, and whether there were more.
fn first_rows<T>(items: Vec<T>) -> (impl Iterator<Item = T>, bool) {
    let more = items.len() > MAX_ROWS;
    (items.into_iter().take(MAX_ROWS), more)
}

/// The rows of `node` for `what`.
pub fn rows(node: &Node, what: ListWhat) -> Listing {
    let node_id = node.info().node_id.to_string();
    let mut out = Listing::default();
    match what {
        ListWhat::Events => {
            let events = node.task_events();
            out.truncated = events.len() > MAX_ROWS;
            let skip = events.len().saturating_sub(MAX_ROWS);
            out.events = events
                .into_iter()
                .skip(skip)
                .map(|e| EventRow {
                    node_id: node_id.clone(),
                    task_id: e.task_id.to_string(),
                    name: e.name,
                    state: state_name(e.state).to_string(),
                    attempt: e.attempt,
                    time_us: e.time_us,
                    worker_pid: e.worker_pid.unwrap_or(0),
                    error: e.error.unwrap_or_default(),
                    actor_id: e.actor_id.map(|a| a.to_string()).unwrap_or_default(),
                })
                .collect();
        }
        ListWhat::Actors => {
            let (actors, truncated) = first_rows(node.actors(MAX_ROWS + 1));
            out.truncated = truncated;
            out.actors = actors
                .map(|a| ActorRow {
                    node_id: node_id.clone(),
                    actor_id: a.id.to_string(),
                    class: a.class,
                    name: a.name.unwrap_or_default(),
                    state: a.state.to_string(),
                    pid: a.pid.unwrap_or(0),
                    detached: a.detached,
                    death: a.death.unwrap_or_default(),
                })
                .collect();
        }
        ListWhat::Objects => {
            let (objects, truncated) = first_rows(node.objects(MAX_ROWS + 1));
            out.truncated = truncated;
            out.objects = objects
                .map(|o| ObjectRow {
                    node_id: node_id.clone(),
                    object_id: o.id.to_string(),
                    location: o.location.to_string(),
                    size: o.size,
                    holders: o.holders,
                })
                .collect();
        }
        // The head's table, not a node's.
        ListWhat::Jobs => {}
    }
    out
}
