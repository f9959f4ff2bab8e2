//! Spill files: one plain file per object in a private spill directory.
//!
//! The directory is made like `mkdtemp`: a new name under a parent directory
//! (`<parent>/ferroray-spill-<pid>-<random>`), `mkdir` with mode 0700 which
//! fails on any existing entry (directory, file or symlink), retried under a
//! new name on `EEXIST`. An existing path is never used. Its files are created
//! with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600, and opened for reading
//! with `O_NOFOLLOW`.
//!
//! The directory is made at the first spill, so a process that never spills
//! leaves nothing behind, and removed with its contents on drop. A process
//! that dies leaves it behind: the name carries the creator's pid, and
//! [`remove_stale`] (run when a [`Store`](crate::Store) starts) removes the
//! directories of dead processes.

use std::fmt::Display;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Names of spill directories start with this, followed by `<pid>-<suffix>`.
pub const DIR_PREFIX: &str = "ferroray-spill-";

/// Names tried before giving up on creating a fresh directory.
const DIR_ATTEMPTS: usize = 64;

/// The spill directory of one store, made under `parent` when first needed.
#[derive(Debug)]
pub struct SpillDir {
    parent: PathBuf,
    /// Set once this made the directory.
    path: Option<PathBuf>,
}

impl SpillDir {
    /// A spill directory to be made under `parent` (which must exist when the
    /// first spill happens). Nothing is created yet.
    pub fn new(parent: PathBuf) -> Self {
        SpillDir { parent, path: None }
    }

    /// The directory, once made.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The directory, made now if it was not yet: a fresh one, never an
    /// existing path.
    pub fn ensure(&mut self) -> io::Result<&Path> {
        let path = match self.path.take() {
            Some(p) => p,
            None => create_fresh(&self.parent, fresh_names())?,
        };
        Ok(self.path.insert(path))
    }

    /// File name for `key`: `obj-` and its `Display`, where characters other
    /// than ASCII alphanumerics, `-`, `_` and `.` become `_`.
    pub fn file_name_for<K: Display>(key: &K) -> String {
        let name: String = key
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        format!("obj-{name}")
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            // The directory is ours (made fresh, mode 0700). `remove_dir_all`
            // does not follow symlinks, at the top or inside.
            if let Err(e) = fs::remove_dir_all(path) {
                tracing::warn!(path = %path.display(), error = %e, "spill: cannot remove directory");
            }
        }
    }
}

/// Endless candidate names `ferroray-spill-<pid>-<16 random hex digits>`.
fn fresh_names() -> impl Iterator<Item = String> {
    let pid = std::process::id();
    std::iter::repeat_with(move || format!("{DIR_PREFIX}{pid}-{:016x}", random_u64()))
}

/// Random bits from `getrandom`; time and a counter if that fails. The
/// directory's privacy does not depend on them (`mkdir` refuses any existing
/// entry), only how often a name must be retried.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; flags 0 is valid.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        return u64::from_ne_bytes(buf);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    nanos ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Makes a new directory of mode 0700 under `parent`, named by the first of
/// `names` that no entry holds yet. Never returns an existing path.
pub(crate) fn create_fresh(parent: &Path, names: impl IntoIterator<Item = String>) -> io::Result<PathBuf> {
    for name in names.into_iter().take(DIR_ATTEMPTS) {
        let path = parent.join(name);
        // mkdir(2) fails with EEXIST on any existing entry, a symlink
        // included (dangling or not): success means this call made it.
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        if let Err(e) = make_private(&path) {
            let _ = fs::remove_dir(&path);
            return Err(e);
        }
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("spill: no fresh directory name under {} after {DIR_ATTEMPTS} tries", parent.display()),
    ))
}

/// Sets the new directory's mode to exactly 0700 (`mkdir` applied the umask)
/// through a descriptor opened without following a symlink.
fn make_private(path: &Path) -> io::Result<()> {
    let dir = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path)?;
    dir.set_permissions(Permissions::from_mode(0o700))
}

/// Write `data` to a new file at `path`, mode 0600. Fails with
/// `AlreadyExists` if any entry is there (a symlink is never followed). A
/// partial file is removed on error.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true) // O_CREAT | O_EXCL
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)?;
    // From here the file is the one this call created.
    let res = f.write_all(data);
    if res.is_err() {
        drop(f);
        let _ = fs::remove_file(path);
    }
    res
}

/// Fill `dst` from the regular file at `path` (not through a symlink), which
/// must hold exactly `dst.len()` bytes.
pub fn read_into(path: &Path, dst: &mut [u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() != dst.len() as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("spill file {} is not a regular file of {} bytes", path.display(), dst.len()),
        ));
    }
    f.read_exact(dst)
}

/// Remove a spill file; failures are logged.
pub fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "spill: cannot remove file");
    }
}

/// Removes the spill directories that dead processes left under `parent`:
/// entries named `ferroray-spill-<pid>-<alphanumeric suffix>` that are
/// directories (by `lstat`: a symlink is never followed) owned by this
/// process's effective uid, whose `<pid>` is no longer alive. Their contents
/// are removed without following symlinks. Failures are logged.
///
/// A pid that was reused by a live process keeps its directory (removed at a
/// later start); a live store in this process is never touched.
pub fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(stale_candidate_pid) else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_dir() || meta.uid() != uid || pid_alive(pid) {
            continue;
        }
        // Owned by us: in a sticky temp dir nobody else can swap the entry,
        // and `remove_dir_all` does not follow symlinks anyway.
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), pid, "spill: removed a dead process's spill directory"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "spill: cannot remove a stale directory"),
        }
    }
}

/// The pid in a spill directory's name, if the name has the right shape.
fn stale_candidate_pid(name: &str) -> Option<libc::pid_t> {
    let (pid, suffix) = name.strip_prefix(DIR_PREFIX)?.split_once('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only positive pids: kill(0 or -n, ..) addresses process groups.
    pid.parse::<libc::pid_t>().ok().filter(|&p| p > 0)
}

/// Whether a process `pid` (> 0) exists. Only `ESRCH` counts as dead (`EPERM`
/// means it exists under another user).
fn pid_alive(pid: libc::pid_t) -> bool {
    debug_assert!(pid > 0);
    // SAFETY: signal 0 sends nothing; kill only checks that `pid` exists and
    // may be signalled. `pid > 0` names a single process.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh per-test parent (removed by the test).
    fn parent(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("ferroray-store-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        p
    }

    #[test]
    fn create_fresh_skips_every_existing_entry() {
        let p = parent("fresh");
        let target = p.join("target");
        fs::create_dir(&target).unwrap();
        fs::create_dir(p.join("a")).unwrap(); // a directory
        fs::write(p.join("b"), b"x").unwrap(); // a file
        symlink(&target, p.join("c")).unwrap(); // a symlink to a directory
        symlink(p.join("nowhere"), p.join("d")).unwrap(); // a dangling symlink
        let names = ["a", "b", "c", "d", "e"].map(String::from);
        let made = create_fresh(&p, names).unwrap();
        assert_eq!(made, p.join("e"));
        assert_eq!(fs::symlink_metadata(&made).unwrap().permissions().mode() & 0o7777, 0o700);
        assert!(!p.join("nowhere").exists(), "the dangling symlink was not followed");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
        // All taken: an error, nothing made.
        let err = create_fresh(&p, ["a", "b", "c", "d", "e"].map(String::from)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn stale_names_parse() {
        assert_eq!(stale_candidate_pid("ferroray-spill-123-00ff"), Some(123));
        assert_eq!(stale_candidate_pid("ferroray-spill-123-"), None);
        assert_eq!(stale_candidate_pid("ferroray-spill-0-ab"), None);
        assert_eq!(stale_candidate_pid("ferroray-spill--1-ab"), None);
        assert_eq!(stale_candidate_pid("ferroray-spill-+5-ab"), None);
        assert_eq!(stale_candidate_pid("ferroray-spill-99999999999-ab"), None);
        assert_eq!(stale_candidate_pid("ferroray-spill-12-a/b"), None);
        assert_eq!(stale_candidate_pid("other-12-ab"), None);
        assert!(pid_alive(std::process::id() as libc::pid_t));
        assert!(pid_alive(1));
    }
}
