//! Worker output appears in the driver's output line by line, prefixed with
//! the task's name and the worker's pid; `Config::log_to_driver(false)`
//! turns it off.
//!
//! Each case runs a driver in a child process (this test binary run again
//! with one test selected and `OUTPUT_CHILD` set) and reads its output.

mod common;

use std::process::Command;

#[ferroray::remote]
fn shout(i: i64) -> i64 {
    println!("yielded return value {i}");
    eprintln!("warning number {i}");
    i
}

#[test]
fn child_driver() {
    let Ok(mode) = std::env::var("OUTPUT_CHILD") else { return };
    ferroray::init_with(ferroray::Config::default().log_to_driver(mode == "on")).unwrap();
    for i in 0..3 {
        shout::remote(i).get_timeout(common::T).unwrap();
    }
    // Give the forwarding threads a moment to copy the last lines.
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!("driver done");
    ferroray::shutdown();
}

fn run_child(mode: &str) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_driver", "--nocapture", "--test-threads", "1"])
        .env("OUTPUT_CHILD", mode)
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn worker_output_is_prefixed_with_task_name_and_pid() {
    let (stdout, stderr) = run_child("on");
    assert!(stdout.contains("driver done"), "{stdout}");
    for i in 0..3 {
        let line = stdout
            .lines()
            .find(|l| l.ends_with(&format!("yielded return value {i}")))
            .unwrap_or_else(|| panic!("no line for {i} in:\n{stdout}"));
        // (libtest may print its own "test child_driver ... " header first)
        let line = &line[line.find("(shout pid=").unwrap_or_else(|| panic!("no prefix: {line}"))..];
        assert!(line.starts_with("(shout pid="), "{line}");
        let pid: u32 = line["(shout pid=".len()..line.find(')').unwrap()].parse().unwrap();
        assert_ne!(pid, std::process::id());
        assert!(stderr.lines().any(|l| l.contains("(shout pid=") && l.ends_with(&format!("warning number {i}"))));
    }
}

#[test]
fn log_to_driver_false_turns_it_off() {
    let (stdout, stderr) = run_child("off");
    assert!(stdout.contains("driver done"), "{stdout}");
    assert!(!stdout.contains("yielded return value"), "{stdout}");
    assert!(!stderr.contains("warning number"), "{stderr}");
}
