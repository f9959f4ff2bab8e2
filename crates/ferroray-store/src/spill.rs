//! Spill files: one plain file per object in a spill directory.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The spill directory. Made on the first spill (so a process that never
/// spills, or dies, leaves nothing behind), and removed on drop if this made
/// it (only when empty: the [`Store`](crate::Store) removes its files first).
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    created: std::cell::Cell<bool>,
}

impl SpillDir {
    /// Use `path`; it is created (with its parents) when first needed.
    pub fn new(path: PathBuf) -> io::Result<Self> {
        Ok(SpillDir { path, created: std::cell::Cell::new(false) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the directory if it does not exist yet.
    pub fn ensure(&self) -> io::Result<()> {
        if !self.path.is_dir() {
            fs::create_dir_all(&self.path)?;
            self.created.set(true);
        }
        Ok(())
    }

    /// File for `key`, named from its `Display` (characters other than
    /// ASCII alphanumerics, `-`, `_` and `.` become `_`).
    pub fn path_for<K: Display>(&self, key: &K) -> PathBuf {
        let name: String = key
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        self.path.join(format!("obj-{name}"))
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if self.created.get() {
            if let Err(e) = fs::remove_dir(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "spill: cannot remove directory");
            }
        }
    }
}

/// Write `data` to a new file at `path`; a partial file is removed on error.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    let res = File::create(path).and_then(|mut f| f.write_all(data));
    if res.is_err() {
        let _ = fs::remove_file(path);
    }
    res
}

/// Fill `dst` from the file at `path`, which must hold exactly `dst.len()` bytes.
pub fn read_into(path: &Path, dst: &mut [u8]) -> io::Result<()> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len != dst.len() as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("spill file {} holds {len} bytes, expected {}", path.display(), dst.len()),
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
