//! Ray tasks overview, "Passing Object References to Tasks": a ref passed
//! to a task arrives as its value, and the task waits for the task that
//! makes it.
//!
//! Run with `cargo run -p ferroray --example tasks_passing_refs`.

use ferroray::{ObjectRef, TaskState};
use std::time::{Duration, Instant};

/// Sleep of the first task, so that the wait shows (scaled down, like the
/// document's other sleeps).
const FIRST_TASK_SLEEP: Duration = Duration::from_millis(500);

#[ferroray::remote]
fn my_function() -> i64 {
    std::thread::sleep(FIRST_TASK_SLEEP);
    1
}

#[ferroray::remote]
fn function_with_an_argument(value: i64) -> i64 {
    value + 1
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let result = run();
    ferroray::shutdown();
    result
}

/// When the task that makes `r` reached `state` (Unix time, microseconds).
fn state_time<T>(r: &ObjectRef<T>, state: TaskState) -> ferroray::Result<Option<u64>> {
    let task = r.id().task;
    Ok(ferroray::tasks()?.into_iter().find(|e| e.task_id == task && e.state == state).map(|e| e.time_us))
}

fn run() -> ferroray::Result<()> {
    let start = Instant::now();
    let obj_ref1 = my_function::remote();
    // You can pass an object ref as an argument to another task: submitted
    // right away, it runs only once `my_function` has finished.
    let obj_ref2 = function_with_an_argument::remote(&obj_ref1);
    println!("submitted both tasks in {:?}", start.elapsed());

    assert_eq!(obj_ref1.get()?, 1);
    assert_eq!(obj_ref2.get()?, 2);
    let elapsed = start.elapsed();
    println!("function_with_an_argument(my_function()) = {} after {:.2} s", obj_ref2.get()?, elapsed.as_secs_f64());
    assert!(elapsed >= FIRST_TASK_SLEEP);

    // The task events show the order: the second task started running only
    // after the first one finished.
    let mut times = (None, None);
    for _ in 0..100 {
        times = (state_time(&obj_ref1, TaskState::Finished)?, state_time(&obj_ref2, TaskState::Running)?);
        if times.0.is_some() && times.1.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (Some(first_finished), Some(second_started)) = times else {
        panic!("task events missing: {times:?}");
    };
    println!("second task started {} us after the first finished", second_started as i64 - first_finished as i64);
    assert!(second_started >= first_finished);

    // A ref made with `put` works the same way; passing it by value moves it.
    let put_ref = ferroray::put(41i64)?;
    assert_eq!(function_with_an_argument::remote(put_ref).get()?, 42);
    println!("function_with_an_argument(put(41)) = 42");
    println!("the second task waited for the first");
    Ok(())
}
