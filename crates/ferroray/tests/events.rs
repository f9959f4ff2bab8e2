//! Task events: every state change is recorded with a timestamp and listed
//! by `ferroray::tasks()`; `enable_task_events(false)` turns it off per task.

mod common;

use common::{cluster, get};
use ferroray::TaskState;

#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ferroray::remote(max_retries = 0)]
fn fails() -> Result<i64, String> {
    Err("no".into())
}

#[ferroray::remote(enable_task_events = false)]
fn quiet() -> i64 {
    1
}

#[test]
fn state_changes_are_recorded_in_order_with_timestamps() {
    let _c = cluster();
    let r = add::remote(1, 2);
    get(&r).unwrap();
    let events: Vec<_> = ferroray::tasks().unwrap().into_iter().filter(|e| e.task_id == r.id().task).collect();
    let states: Vec<TaskState> = events.iter().map(|e| e.state).collect();
    assert_eq!(states, vec![TaskState::Submitted, TaskState::PendingSchedule, TaskState::Running, TaskState::Finished]);
    assert!(events.windows(2).all(|w| w[0].time_us <= w[1].time_us));
    assert!(events.iter().all(|e| e.name == "add"));
    let running = events.iter().find(|e| e.state == TaskState::Running).unwrap();
    assert!(running.worker_pid.is_some_and(|p| p != std::process::id()));
}

#[test]
fn failures_are_recorded_with_their_error() {
    let _c = cluster();
    let r = fails::remote();
    assert!(get(&r).is_err());
    let events = ferroray::tasks().unwrap();
    let last = events.iter().rev().find(|e| e.task_id == r.id().task).unwrap();
    assert_eq!(last.state, TaskState::Failed);
    assert!(last.error.as_deref().is_some_and(|e| e.contains("no")), "{last:?}");
}

#[test]
fn recording_can_be_turned_off_per_task() {
    let _c = cluster();
    let q = quiet::remote();
    let loud = quiet::options().enable_task_events(true).remote();
    let silent = add::options().enable_task_events(false).remote(1, 1);
    get(&q).unwrap();
    get(&loud).unwrap();
    get(&silent).unwrap();
    let events = ferroray::tasks().unwrap();
    assert!(!events.iter().any(|e| e.task_id == q.id().task || e.task_id == silent.id().task));
    assert!(events.iter().any(|e| e.task_id == loud.id().task));
}
