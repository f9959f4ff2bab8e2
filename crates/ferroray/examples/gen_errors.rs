//! From Ray's guide "Ray generators", error handling: a generator that fails hands
//! out the items it yielded, then one ref holding the error, then ends.
//!
//! `cargo run -p ferroray --example gen_errors`
//!
//! Ray's task raises `ValueError` when `i == 1`. Here the items are
//! `Result<u64, ValueError>`: an `Err` item is the task's failure (the
//! stream ends there, as the Python generator does at `raise`). The sleeps
//! are 10x shorter (0.1 s).
//!
//! A generator that fails before its first item returns
//! `Result<impl Iterator<..>, E>`: its stream is one error ref.

use ferroray::Error;
use std::time::Duration;

/// Ray's `ValueError`.
#[derive(Debug)]
pub struct ValueError;

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValueError")
    }
}

/// Ray's task: fails when `i == 1`, after yielding 0.
#[ferroray::remote]
fn task() -> impl Iterator<Item = Result<u64, ValueError>> {
    (0..5).map(|i| {
        std::thread::sleep(Duration::from_millis(100));
        if i == 1 {
            return Err(ValueError);
        }
        Ok(i)
    })
}

#[derive(Debug)]
pub struct OpenError(String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot open {}", self.0)
    }
}

/// Fails before it yields anything when the source is missing.
#[ferroray::remote]
fn read_source(name: String) -> Result<impl Iterator<Item = u64>, OpenError> {
    if name != "numbers" {
        return Err(OpenError(name));
    }
    Ok(10..13)
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;

    println!("-- Ray's example: ValueError when i == 1");
    let mut gen = task::remote();
    // It's okay.
    let v = gen.next().expect("first ref").get()?;
    println!("ray.get(next(gen)) = {v}");
    assert_eq!(v, 0);
    // Raises an exception.
    match gen.next().expect("second ref").get() {
        Err(Error::Task(e)) => {
            println!("Exception is raised when i == 1 as expected {e}");
            assert_eq!(e.message, "ValueError");
            assert!(e.type_name.ends_with("ValueError"), "{}", e.type_name);
            assert_eq!(e.task_name, "task");
        }
        other => panic!("expected the task's ValueError, got {other:?}"),
    }
    assert!(gen.next().is_none(), "after the error ref the stream ends");
    println!("then next(gen) gives None: the stream has ended");

    println!("\n-- the order holds even when the consumer comes late");
    let gen = task::remote();
    // Wait until the task has failed, then read: still 0, then the error.
    let failure = ferroray::get(&gen.completed()).expect_err("the task failed");
    println!("completed() reports the failure: {failure}");
    let got: Vec<ferroray::Result<u64>> = gen.map(|r| r.get()).collect();
    for g in &got {
        println!("  {g:?}");
    }
    assert_eq!(got.len(), 2, "one item, then one error ref: {got:?}");
    assert_eq!(got[0], Ok(0));
    assert!(matches!(&got[1], Err(Error::Task(e)) if e.message == "ValueError"));
    println!("items in order: 0, then the error, then the end");

    println!("\n-- an error before the first item");
    let ok: Vec<u64> = read_source::remote("numbers".to_string()).map(|r| r.get()).collect::<Result<_, _>>()?;
    println!("read_source(\"numbers\") -> {ok:?}");
    assert_eq!(ok, vec![10, 11, 12]);
    let mut gen = read_source::remote("missing".to_string());
    match gen.next().expect("one error ref").get() {
        Err(Error::Task(e)) => {
            println!("read_source(\"missing\") failed before its first item: {}", e.message);
            assert_eq!(e.message, "cannot open missing");
        }
        other => panic!("expected the task's OpenError, got {other:?}"),
    }
    assert!(gen.next().is_none());
    println!("its stream was one error ref, then the end");

    ferroray::shutdown();
    println!("gen_errors done");
    Ok(())
}
