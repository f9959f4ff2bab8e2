//! Ray tasks overview, "To create a task": a remote function, `.remote()`
//! that returns an object ref at once, and `get` that waits for the value.
//!
//! Run with `cargo run -p ferroray --example tasks_basic`.

/// A regular function.
fn normal_function() -> i64 {
    1
}

// `#[ferroray::remote]` makes a regular function a remote function: it can
// still be called locally, and `my_function::remote()` runs it as a task.
#[ferroray::remote]
fn my_function() -> i64 {
    1
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    assert_eq!(normal_function(), 1);
    // Called locally, the remote function is still a plain function.
    assert_eq!(my_function(), 1);

    // `remote` returns an object ref (a future) immediately and creates a
    // task that is executed on a worker process.
    let obj_ref = my_function::remote();
    println!("submitted my_function: {obj_ref:?}");

    // The result can be retrieved with `get` (method or free function).
    let value = obj_ref.get()?;
    assert_eq!(value, 1);
    assert_eq!(ferroray::get(&obj_ref)?, 1);
    println!("my_function::remote() returned {value}");
    Ok(())
}
