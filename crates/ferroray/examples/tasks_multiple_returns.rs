//! Ray tasks overview, "Multiple Returns": by default a task returns one
//! object ref (here, to a tuple); with `num_returns = 3` it returns three.
//!
//! Run with `cargo run -p ferroray --example tasks_multiple_returns`.

use ferroray::ObjectRef;

// By default, a task only returns a single object ref.
#[ferroray::remote]
fn return_single() -> (i64, i64, i64) {
    (0, 1, 2)
}

// However, you can configure tasks to return multiple object refs.
#[ferroray::remote(num_returns = 3)]
fn return_multiple() -> (i64, i64, i64) {
    (0, 1, 2)
}

/// Each of the several returns is an object of its own: it can be passed to
/// another task without the others.
#[ferroray::remote]
fn times_ten(x: i64) -> i64 {
    x * 10
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let result = run();
    ferroray::shutdown();
    result
}

fn run() -> ferroray::Result<()> {
    let object_ref: ObjectRef<(i64, i64, i64)> = return_single::remote();
    assert_eq!(object_ref.get()?, (0, 1, 2));
    println!("return_single: one ref to {:?}", object_ref.get()?);

    let (object_ref0, object_ref1, object_ref2): (ObjectRef<i64>, ObjectRef<i64>, ObjectRef<i64>) =
        return_multiple::remote();
    assert_eq!(object_ref0.get()?, 0);
    assert_eq!(object_ref1.get()?, 1);
    assert_eq!(object_ref2.get()?, 2);
    assert_ne!(object_ref0, object_ref1);
    println!("return_multiple: three refs to {}, {}, {}", object_ref0.get()?, object_ref1.get()?, object_ref2.get()?);

    assert_eq!(times_ten::remote(&object_ref2).get()?, 20);
    println!("times_ten(third return) = 20");
    Ok(())
}
