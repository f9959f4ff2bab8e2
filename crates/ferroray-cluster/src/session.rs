//! What the daemons on this machine leave for the commands that come after
//! them (`stop`, `status`, `start --address` on the same machine): one
//! directory per user, private to it.
//!
//! - `nodes/<pid>.json`: one per running daemon ([`NodeFile`]): its pid and
//!   the start time the kernel gives that pid (so a pid reused by another
//!   process is never signalled), its node id, the head's address.
//! - `token`: what a caller needs to join the head started here, mode 0600:
//!   the cluster token in hex, then `sha256:` and the hex SHA-256 of the
//!   head's certificate, one line each (`crate::tls::Credentials`).
//! - `head.crt` and `head.key`: the head's self-signed certificate and its
//!   private key (PEM, mode 0600), made fresh at each start like the token
//!   (with `--storage`, the ones kept there: `crate::storage`).
//! - `logs/<pid>.log`: a background daemon's output.
//!
//! The directory is `$FERRORAY_SESSION_DIR`, else `$XDG_RUNTIME_DIR/ferroray`,
//! else `/tmp/ferroray-<uid>`. It must belong to this user and be closed to
//! everyone else: one that does not (made by another user in a shared `/tmp`
//! to feed us a token or a pid) is refused, never used.

use crate::error::{ClusterError, Result};
use crate::tls::{Credentials, HeadIdentity};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The variable that names the session directory.
pub const SESSION_DIR_ENV: &str = "FERRORAY_SESSION_DIR";

/// One running daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeFile {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`).
    pub start_time: u64,
    pub node_id: String,
    /// The head's address (`HOST:PORT`).
    pub head: String,
    pub is_head: bool,
    /// The node's abstract Unix socket, where programs on this machine
    /// connect (`ferroray::Config::address`).
    #[serde(default)]
    pub socket: String,
}

pub struct Session {
    dir: PathBuf,
}

impl Session {
    /// The session directory of this user (see the module's docs), made if
    /// missing and checked either way.
    pub fn open() -> Result<Session> {
        let dir = match std::env::var_os(SESSION_DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("XDG_RUNTIME_DIR") {
                Some(d) if !d.is_empty() => PathBuf::from(d).join("ferroray"),
                _ => std::env::temp_dir().join(format!("ferroray-{}", unsafe { libc::getuid() })),
            },
        };
        Session::at(dir)
    }

    pub fn at(dir: PathBuf) -> Result<Session> {
        for d in [dir.clone(), dir.join("nodes"), dir.join("logs")] {
            match fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ClusterError::file("cannot make the session directory", &d)(e)),
            }
            check_private(&d)?;
        }
        Ok(Session { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn node_path(&self, pid: u32) -> PathBuf {
        self.dir.join("nodes").join(format!("{pid}.json"))
    }

    pub fn log_path(&self, pid: u32) -> PathBuf {
        self.dir.join("logs").join(format!("{pid}.log"))
    }

    /// Records a daemon (written whole, then renamed into place, so a
    /// reader never sees half of it).
    pub fn write_node(&self, node: &NodeFile) -> Result<()> {
        let path = self.node_path(node.pid);
        let json = serde_json::to_vec(node).map_err(|e| ClusterError::Protocol(e.to_string()))?;
        write_private(&path, &json)
    }

    pub fn remove_node(&self, pid: u32) {
        let _ = fs::remove_file(self.node_path(pid));
    }

    /// The daemons recorded here whose process still runs; the records of
    /// those that do not are removed.
    pub fn nodes(&self) -> Vec<NodeFile> {
        let Ok(entries) = fs::read_dir(self.dir.join("nodes")) else { return vec![] };
        let mut nodes = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let parsed = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<NodeFile>(&b).ok());
            match parsed {
                Some(n) if process_start_time(n.pid) == Some(n.start_time) => nodes.push(n),
                // Half-written files never exist (see `write_node`): a bad
                // one is garbage, a mismatch a daemon that died.
                Some(n) => {
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_file(self.log_path(n.pid));
                }
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        nodes.sort_by_key(|n| (!n.is_head, n.pid));
        nodes
    }

    /// The running head recorded here, if any.
    pub fn head(&self) -> Option<NodeFile> {
        self.nodes().into_iter().find(|n| n.is_head)
    }

    pub fn write_token(&self, credentials: &Credentials) -> Result<()> {
        write_private(&self.token_path(), credentials.to_file_text().as_bytes())
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The token and certificate fingerprint of the head started on this
    /// machine.
    pub fn token(&self) -> Result<Credentials> {
        if !self.token_path().exists() {
            return Err(ClusterError::NoCluster(self.dir.clone()));
        }
        read_token(&self.token_path())
    }

    /// Writes the head's certificate and key (`head.crt`, `head.key`).
    pub fn write_identity(&self, identity: &HeadIdentity) -> Result<()> {
        let (cert, key) = identity.to_pem();
        write_private(&self.key_path(), key.as_bytes())?;
        write_private(&self.cert_path(), cert.as_bytes())
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("head.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("head.key")
    }

    /// Executables peers shipped, by SHA-256 (`crate::peer`).
    pub fn exe_dir(&self) -> PathBuf {
        self.dir.join("exe")
    }

    /// Once no daemon is recorded: removes the token, the head's
    /// certificate and key, the executables peers shipped, the logs of processes
    /// that are gone (a log is named by its process: `<pid>.log`, or
    /// `starting-<pid>.log` while the command that starts a daemon waits),
    /// and the directories if that empties them.
    pub fn clean_if_unused(&self) {
        if !self.nodes().is_empty() {
            return;
        }
        for f in [self.token_path(), self.cert_path(), self.key_path()] {
            let _ = fs::remove_file(f);
        }
        let _ = fs::remove_dir(self.dir.join("nodes"));
        let _ = fs::remove_dir_all(self.exe_dir());
        if let Ok(logs) = fs::read_dir(self.dir.join("logs")) {
            for l in logs.flatten() {
                let name = l.file_name().to_string_lossy().into_owned();
                let pid = name.trim_start_matches("starting-").trim_end_matches(".log").parse::<u32>().ok();
                if pid.is_none_or(|p| process_start_time(p).is_none()) {
                    let _ = fs::remove_file(l.path());
                }
            }
        }
        let _ = fs::remove_dir(self.dir.join("logs"));
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Reads a token file (the token, then the head certificate's fingerprint:
/// `crate::tls::Credentials::to_file_text`; surrounding whitespace allowed);
/// the file must be this user's and closed to everyone else.
pub fn read_token(path: &Path) -> Result<Credentials> {
    let meta = fs::metadata(path).map_err(ClusterError::file("cannot read the token file", path))?;
    if meta.uid() != unsafe { libc::getuid() } || meta.mode() & 0o077 != 0 {
        return Err(ClusterError::Config(format!(
            "the token file {} must belong to this user and be readable by nobody else (chmod 600)",
            path.display()
        )));
    }
    let text = fs::read_to_string(path).map_err(ClusterError::file("cannot read the token file", path))?;
    Credentials::from_file_text(&text).map_err(|why| {
        ClusterError::Config(format!(
            "the token file {} holds {why}; it is the file `ferroray start --head` wrote",
            path.display()
        ))
    })
}

fn check_private(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(ClusterError::file("cannot read the session directory", dir))?;
    if !meta.is_dir() || meta.uid() != unsafe { libc::getuid() } || meta.mode() & 0o077 != 0 {
        return Err(ClusterError::Config(format!(
            "the session directory {} must be a directory of this user that nobody else may use (mode 700); \
             set {SESSION_DIR_ENV} to use another",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` to a fresh file readable by this user only, then renames
/// it over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ClusterError::file("cannot write", path)(e)
    })
}

/// The start time of process `pid` in clock ticks since boot; `None` when
/// there is no such process, or it has exited and waits to be reaped.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after its last ')'.
    let mut rest = stat[stat.rfind(')')? + 2..].split_whitespace();
    // Field 3, the state: a zombie has ended (a daemon started in the
    // background is reaped by whoever adopted it, maybe late).
    if matches!(rest.next()?, "Z" | "X") {
        return None;
    }
    // Field 22 is the 19th after the state.
    rest.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroray_common::ClusterToken;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ferroray-session-test-{name}-{}", std::process::id()))
    }

    #[test]
    fn records_of_dead_processes_are_dropped_and_everything_is_cleaned() {
        let dir = scratch("records");
        let s = Session::at(dir.clone()).unwrap();
        let me = std::process::id();
        let mine = NodeFile {
            pid: me,
            start_time: process_start_time(me).unwrap(),
            node_id: "a".into(),
            head: "127.0.0.1:1".into(),
            is_head: true,
            socket: "ferroray-node-test".into(),
        };
        s.write_node(&mine).unwrap();
        // A pid that exists with another start time: a reused pid.
        s.write_node(&NodeFile { pid: 1, start_time: u64::MAX, is_head: false, ..mine.clone() }).unwrap();
        assert_eq!(s.nodes(), vec![mine.clone()]);
        assert_eq!(s.head(), Some(mine));
        let identity = HeadIdentity::generate().unwrap();
        let creds = Credentials { token: ClusterToken::random().unwrap(), fingerprint: identity.fingerprint() };
        s.write_token(&creds).unwrap();
        s.write_identity(&identity).unwrap();
        let back = s.token().unwrap();
        assert!(back.token.matches(&creds.token) && back.fingerprint == creds.fingerprint);
        for f in [s.token_path(), s.cert_path(), s.key_path()] {
            assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600, "{}", f.display());
        }
        let cert = fs::read_to_string(s.cert_path()).unwrap();
        let key = fs::read_to_string(s.key_path()).unwrap();
        assert_eq!(HeadIdentity::from_pem(&cert, &key).unwrap().fingerprint(), identity.fingerprint());
        s.remove_node(me);
        s.clean_if_unused();
        assert!(!dir.exists());
    }

    #[test]
    fn token_files_old_malformed_and_loose_are_refused() {
        let dir = scratch("token-files");
        let s = Session::at(dir.clone()).unwrap();
        let token = ClusterToken::random().unwrap();
        let fingerprint = HeadIdentity::generate().unwrap().fingerprint();
        let path = dir.join("given");
        let read = |text: &str, mode: u32| {
            let _ = fs::remove_file(&path);
            write_private(&path, text.as_bytes()).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            read_token(&path).map_err(|e| e.to_string())
        };
        let good = Credentials { token: token.clone(), fingerprint }.to_file_text();
        let back = read(&format!("\n{good}\n\n"), 0o600).unwrap();
        assert!(back.token.matches(&token) && back.fingerprint == fingerprint);
        // A token alone (the format before TLS): no fingerprint to trust.
        let err = read(&token.to_hex(), 0o600).unwrap_err();
        assert!(err.contains("no head certificate fingerprint"), "{err}");
        let err = read(&format!("{}\nsha256:{}", token.to_hex(), "zz".repeat(32)), 0o600).unwrap_err();
        assert!(err.contains("second line"), "{err}");
        let err = read("not hex\n", 0o600).unwrap_err();
        assert!(err.contains("no cluster token"), "{err}");
        let err = read(&good, 0o640).unwrap_err();
        assert!(err.contains("readable by nobody else"), "{err}");
        fs::remove_file(&path).unwrap();
        s.clean_if_unused();
        assert!(!dir.exists());
    }

    #[test]
    fn a_directory_others_may_use_is_refused() {
        let dir = scratch("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Session::at(dir.clone()).err().unwrap();
        fs::remove_dir(&dir).unwrap();
        assert!(err.to_string().contains("nobody else"), "{err}");
    }
}
