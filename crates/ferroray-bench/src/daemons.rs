//! Daemons a benchmark starts with the `ferroray` binary built beside it,
//! in a session directory of their own (shared by the binaries that start
//! clusters, through `#[path]`).

use std::path::PathBuf;
use std::process::Command;

/// The daemons of one run: stopped, and their directory removed, on drop
/// (a panic's unwinding included), after this program's own connection.
pub struct Session {
    pub dir: PathBuf,
    pub bin: PathBuf,
}

impl Session {
    /// Runs `ferroray ARGS` in the session; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .args(args)
            .env("FERRORAY_SESSION_DIR", &self.dir)
            .env("FERRORAY_LOG", "warn")
            .output()
            .expect("running ferroray");
        assert!(out.status.success(), "ferroray {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the head on a free port with 1 CPU, a store of `store` bytes
    /// and `extra` options; its address.
    pub fn start_head(&self, store: u64, extra: &[&str]) -> String {
        let store = store.to_string();
        let mut args = vec!["start", "--head", "--port", "0", "--num-cpus", "1", "--object-store-memory", &store];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        out.split(" at ").nth(1).expect("the head's address").split(' ').next().unwrap().to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        ferroray::shutdown();
        let _ = Command::new(&self.bin)
            .args(["stop", "--grace-period", "5"])
            .env("FERRORAY_SESSION_DIR", &self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
