//! Runs the benchmark binary in `--quick` mode and checks its JSON: every row
//! present, every value and ratio positive.
//!
//! Ignored by default: it runs the whole benchmark (~20 s in a release
//! build, up to ~60 s in a debug build). Run it with
//! `cargo test --release -p ferroray-bench -- --ignored`
//! (or `cargo nextest run -p ferroray-bench --run-ignored all`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: &[&str] = &[
    "unix socket ping-pong",
    "single client tasks sync",
    "single client tasks async",
    "single client put calls",
    "single client get calls",
    "single client put gigabytes",
    "single client wait 1k refs",
    "single client wait 1k ready refs",
    "single client generator items",
    "single client generator items backpressure 1",
    "fresh generator task to first item",
    "generator 8 x 100 MB items",
    "1:1 actor calls sync",
    "1:1 actor calls async",
    "actor generator items",
    "1:1 async-actor calls async",
    "async actor generator items",
    "actor creation to first result",
    "init to first result",
    "idle runtime resident memory",
];

#[test]
#[ignore = "slow: runs the whole benchmark in --quick mode (~20-60 s)"]
fn quick_run_reports_every_row() {
    let json_path = std::env::temp_dir().join(format!("ferroray-bench-quick-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json_path);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroray-bench"))
        .arg("--quick")
        // A smaller large-object size keeps a debug build's Vec<u8> puts short.
        .args(["--put-mib", "16"])
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ferroray-bench");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for ferroray-bench") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(150) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferroray-bench --quick did not finish within 150 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("read output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "ferroray-bench failed: {status}\n{stdout}");

    let text = std::fs::read_to_string(&json_path).expect("the --json file");
    let _ = std::fs::remove_file(&json_path);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(doc["quick"], serde_json::Value::Bool(true));
    let rows = doc["rows"].as_array().expect("rows array");
    for name in ROWS {
        let row = rows
            .iter()
            .find(|r| r["name"] == *name)
            .unwrap_or_else(|| panic!("row {name:?} missing from the JSON:\n{text}"));
        let value = row["value"].as_f64().unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "row {name:?} has value {value}");
        assert!(row["unit"].as_str().is_some_and(|u| !u.is_empty()), "row {name:?} has no unit");
        for key in ["x_better_than_ray_2_60", "x_of_target", "fraction_of_baseline"] {
            if let Some(r) = row[key].as_f64() {
                assert!(r.is_finite() && r > 0.0, "row {name:?}: {key} = {r}");
            }
        }
        assert!(stdout.contains(name), "row {name:?} missing from the table:\n{stdout}");
    }
    let sync = rows.iter().find(|r| r["name"] == "single client tasks sync").unwrap();
    assert!(sync["fraction_of_baseline"].as_f64().is_some(), "tasks sync has no ping-pong ratio");
    assert_eq!(rows.len(), ROWS.len(), "unexpected rows:\n{text}");
}
