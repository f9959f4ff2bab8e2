//! Store behaviour over a real memfd arena and a real spill directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferroray_store::{Arena, Store, StoreError, StoreStats};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A per-test parent for spill directories, removed (with whatever is
/// left in it) on drop. Declare it before the store, so the store drops first.
struct Parent(PathBuf);

impl Parent {
    fn new(name: &str) -> Parent {
        let dir = std::env::temp_dir().join(format!("ferroray-store-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Parent(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Names of the entries in the parent, sorted.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(capacity: u64, parent: &Parent) -> Store<u64> {
    let arena = Arc::new(Arena::create(capacity).unwrap());
    Store::new(arena, parent.path().to_path_buf()).unwrap()
}

/// A copy of `[off, off + len)`.
fn read(a: &Arena, off: u64, len: u64) -> Vec<u8> {
    // SAFETY: these tests run one thread per arena and nothing writes the
    // range while the slice is copied.
    unsafe { a.slice(off, len) }.unwrap().to_vec()
}

/// Allocate, fill with a pattern derived from `key`, seal.
fn put(s: &mut Store<u64>, key: u64, len: u64) -> u64 {
    let off = s.allocate(len).unwrap();
    // SAFETY: fresh, unsealed allocation owned by this writer.
    let buf = unsafe { s.arena().slice_mut(off, len) }.unwrap();
    fill(buf, key);
    s.seal(key, off, len).unwrap();
    off
}

fn fill(buf: &mut [u8], key: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(key * 7) as u8;
    }
}

fn check(s: &mut Store<u64>, key: u64) -> (u64, u64) {
    let (off, len) = s.pin(key).unwrap();
    let mut want = vec![0; len as usize];
    fill(&mut want, key);
    assert!(read(s.arena(), off, len) == want, "bytes of {key} differ");
    (off, len)
}

#[test]
fn lifecycle_and_stats() {
    let p = Parent::new("lifecycle");
    let mut s = store(MIB, &p);
    assert_eq!(s.stats(), StoreStats { capacity: MIB, ..Default::default() });

    let off = s.allocate(1000).unwrap();
    assert_eq!(off % 64, 0);
    assert_eq!(s.stats().unsealed, 1);
    assert!(matches!(s.seal(1, off, 1001), Err(StoreError::SealTooLong { .. })));
    assert!(matches!(s.seal(1, off + 64, 10), Err(StoreError::NotAllocated(_))));
    // SAFETY: fresh allocation.
    unsafe { s.arena().slice_mut(off, 1000) }.unwrap().fill(7);
    s.seal(1, off, 1000).unwrap();
    assert!(s.contains(1));
    let st = s.stats();
    assert_eq!((st.objects, st.unsealed, st.used), (1, 0, 1024));

    put(&mut s, 2, 5000);
    let off3 = s.allocate(10).unwrap();
    assert!(matches!(s.seal(2, off3, 10), Err(StoreError::ObjectExists(_))));
    s.abort(off3);
    s.abort(off3); // unknown now: ignored

    assert_eq!(s.pin(1).unwrap(), (off, 1000));
    assert_eq!(s.pin(1).unwrap(), (off, 1000));
    assert!(read(s.arena(), off, 1000).iter().all(|&b| b == 7));
    check(&mut s, 2);
    assert_eq!(s.stats().pinned, 2);
    s.unpin(1);
    assert_eq!(s.stats().pinned, 2);
    s.unpin(1);
    s.unpin(1); // extra unpin: ignored
    s.unpin(2);
    assert_eq!(s.stats().pinned, 0);
    assert!(matches!(s.pin(99), Err(StoreError::UnknownObject(k)) if k == "99"));

    s.delete(1);
    s.delete(2);
    s.delete(2); // twice: ignored
    assert!(!s.contains(1));
    assert_eq!(s.stats(), StoreStats { capacity: MIB, ..Default::default() });
}

#[test]
fn zero_length_object() {
    let p = Parent::new("zero");
    let mut s = store(64 * KIB, &p);
    let off = s.allocate(0).unwrap();
    s.seal(5, off, 0).unwrap();
    assert_eq!(s.pin(5).unwrap(), (off, 0));
    assert_eq!(s.stats().used, 64);
    s.unpin(5);
    s.delete(5);
    assert_eq!(s.stats().used, 0);
}

#[test]
fn spills_oldest_unpinned_and_restores() {
    let p = Parent::new("spill");
    let mut s = store(MIB, &p);
    put(&mut s, 1, 400 * KIB);
    put(&mut s, 2, 400 * KIB);
    assert_eq!(s.stats().spilled, 0);
    assert!(s.spill_dir().is_none() && p.entries().is_empty(), "the directory is made at the first spill");
    put(&mut s, 3, 400 * KIB); // no room: spills 1, the oldest
    let dir = s.spill_dir().unwrap().to_path_buf();
    let st = s.stats();
    assert_eq!((st.objects, st.spilled, st.spilled_bytes), (3, 1, 400 * KIB));
    assert!(s.is_spilled(1) && !s.is_spilled(2) && !s.is_spilled(3));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // Restoring 1 needs room: spills 2 (now the least recently used).
    check(&mut s, 1);
    assert!(!s.is_spilled(1) && s.is_spilled(2));
    assert_eq!(s.stats().spilled, 1);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // 1 is pinned: restoring 2 spills 3, never 1.
    check(&mut s, 2);
    assert!(s.is_spilled(3) && !s.is_spilled(1));
    s.unpin(1);
    s.unpin(2);
    check(&mut s, 3);
    s.unpin(3);

    for k in 1..=3 {
        s.delete(k);
    }
    assert_eq!(s.stats(), StoreStats { capacity: MIB, ..Default::default() });
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn pinned_objects_are_never_spilled() {
    let p = Parent::new("pinned");
    let mut s = store(MIB, &p);
    put(&mut s, 1, 400 * KIB);
    put(&mut s, 2, 400 * KIB);
    s.pin(1).unwrap();
    s.pin(2).unwrap();
    let err = s.allocate(400 * KIB).unwrap_err();
    assert!(matches!(err, StoreError::Full { requested, capacity, .. } if requested == 400 * KIB && capacity == MIB));
    assert!(err.to_string().starts_with("object store is full: "));
    assert_eq!(s.stats().spilled, 0);
    // Unpinning one makes room again.
    s.unpin(2);
    put(&mut s, 3, 400 * KIB);
    assert!(s.is_spilled(2) && !s.is_spilled(1));
}

#[test]
fn unsealed_allocations_are_never_spilled() {
    let p = Parent::new("unsealed");
    let mut s = store(MIB, &p);
    let a = s.allocate(400 * KIB).unwrap();
    let _b = s.allocate(400 * KIB).unwrap();
    assert!(matches!(s.allocate(400 * KIB), Err(StoreError::Full { .. })));
    s.abort(a);
    assert!(s.allocate(400 * KIB).is_ok());
}

#[test]
fn larger_than_capacity_is_full() {
    let p = Parent::new("too-big");
    let mut s = store(MIB, &p);
    put(&mut s, 1, 400 * KIB);
    assert!(matches!(s.allocate(MIB + 1), Err(StoreError::Full { .. })));
    assert!(matches!(s.allocate(u64::MAX), Err(StoreError::Full { .. })));
    assert_eq!(s.stats().spilled, 0); // nothing spilled in vain
}

#[test]
fn deferred_delete_of_pinned_object() {
    let p = Parent::new("deferred");
    let mut s = store(MIB, &p);
    let off = put(&mut s, 1, 400 * KIB);
    s.pin(1).unwrap();
    s.pin(1).unwrap();
    s.delete(1);
    assert!(!s.contains(1));
    assert!(matches!(s.pin(1), Err(StoreError::UnknownObject(_))));
    let st = s.stats();
    assert_eq!((st.objects, st.pinned, st.used), (0, 1, 400 * KIB));
    // The reader's bytes are still there.
    let mut want = vec![0; (400 * KIB) as usize];
    fill(&mut want, 1);
    assert!(read(s.arena(), off, 400 * KIB) == want);
    s.unpin(1);
    assert_eq!(s.stats().used, 400 * KIB);
    s.unpin(1);
    assert_eq!(s.stats(), StoreStats { capacity: MIB, ..Default::default() });
    // The key can be used again.
    put(&mut s, 1, 10);
    assert!(s.contains(1));
}

#[test]
fn delete_spilled_object_removes_file() {
    let p = Parent::new("delete-spilled");
    let mut s = store(MIB, &p);
    put(&mut s, 1, 600 * KIB);
    put(&mut s, 2, 600 * KIB);
    assert!(s.is_spilled(1));
    let dir = s.spill_dir().unwrap().to_path_buf();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    s.delete(1);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(s.stats().spilled, 0);
}

#[test]
fn drop_removes_spill_files_and_created_dir() {
    let p = Parent::new("drop");
    let mut s = store(MIB, &p);
    for k in 0..4 {
        put(&mut s, k, 400 * KIB);
    }
    assert_eq!(s.stats().spilled, 2);
    let dir = s.spill_dir().unwrap().to_path_buf();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    drop(s);
    assert!(!dir.exists());
    assert!(p.entries().is_empty());
}

#[test]
fn worker_mapping_sees_sealed_bytes() {
    let p = Parent::new("worker");
    let mut s = store(MIB, &p);
    put(&mut s, 9, 200 * KIB);
    let (off, len) = s.pin(9).unwrap();
    // SAFETY: dup of the arena's valid fd, handed to the worker-side Arena.
    let fd = unsafe { libc::dup(s.arena().fd()) };
    // SAFETY: `fd` is a fresh dup that nothing else owns.
    let worker = unsafe { Arena::open(fd, MIB) }.unwrap();
    let mut want = vec![0; len as usize];
    fill(&mut want, 9);
    assert!(read(&worker, off, len) == want);
    s.unpin(9);
}

#[test]
fn a_stream_of_large_objects_reuses_warm_pages_until_trimmed() {
    let p = Parent::new("warm-reuse");
    let mut s = store(16 * MIB, &p);
    let len = 3 * MIB;
    let mut want = vec![0; len as usize];
    // Each object is freed before the next is written in its place: the
    // reused block is not counted as resident-free, so no trim punches the
    // pages the next object is about to fill (fresh pages cost a fault and
    // zeroing each).
    for key in 0..10 {
        let off = put(&mut s, key, len);
        assert_eq!(off, 0, "best fit reuses the freed block");
        s.delete(key);
        fill(&mut want, key);
        assert!(read(s.arena(), 0, len) == want, "pages of {key} released while busy");
    }
    assert_eq!(s.trim(), len, "one freed block outstanding");
    assert!(read(s.arena(), 0, len).iter().all(|&b| b == 0), "trim gives the pages back");
    assert_eq!(s.trim(), 0);

    // Frees that nothing reuses still trim at once past a quarter of capacity.
    for key in 0..2 {
        put(&mut s, key, len);
    }
    s.delete(0);
    assert!(read(s.arena(), 0, 1024).iter().any(|&b| b != 0), "one free block stays warm");
    s.delete(1);
    assert!(read(s.arena(), 0, 2 * len).iter().all(|&b| b == 0), "past a quarter: trimmed");
    assert_eq!(s.trim(), 0);

    // A store told to keep all its memory warm (a daemon's) keeps both
    // until a trim.
    s.set_keep_free(16 * MIB);
    for key in 0..2 {
        put(&mut s, key, len);
    }
    s.delete(0);
    s.delete(1);
    assert!(read(s.arena(), len, 1024).iter().any(|&b| b != 0), "kept warm");
    assert_eq!(s.trim(), 2 * len);
    assert!(read(s.arena(), 0, 2 * len).iter().all(|&b| b == 0), "trimmed");
}

// --- The spill directory is private -------------------------------------

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Spills object 1 (two objects of 600 KiB in 1 MiB).
fn spill_one(s: &mut Store<u64>) -> PathBuf {
    put(s, 1, 600 * KIB);
    put(s, 2, 600 * KIB);
    assert!(s.is_spilled(1));
    s.spill_dir().unwrap().to_path_buf()
}

#[test]
fn spill_directory_is_0700_and_files_0600() {
    let p = Parent::new("modes");
    // SAFETY: umask only changes this process's file mode mask; restored below.
    let old = unsafe { libc::umask(0) }; // the widest umask must not widen anything
    let mut s = store(MIB, &p);
    let dir = spill_one(&mut s);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let meta = std::fs::symlink_metadata(&dir).unwrap();
    assert!(meta.file_type().is_dir());
    assert_eq!(meta.uid(), euid());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(dir.parent(), Some(p.path()));
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(&format!("ferroray-spill-{}-", std::process::id())), "{name}");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0]), 0o600);
    assert!(std::fs::symlink_metadata(&files[0]).unwrap().file_type().is_file());
    drop(s);
    assert!(p.entries().is_empty(), "the store removed its directory");
}

#[test]
fn a_preexisting_directory_is_never_used() {
    let p = Parent::new("preexisting");
    let pid = std::process::id();
    // Decoys where a predictable name would have gone: the old fixed path and
    // directories and symlinks with this process's pid (alive: kept).
    let elsewhere = p.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::create_dir(p.path().join(format!("ferroray-spill-{pid}-0123456789abcdef"))).unwrap();
    for i in 0..16 {
        std::fs::create_dir(p.path().join(format!("ferroray-spill-{pid}-{i:016x}"))).unwrap();
        symlink(&elsewhere, p.path().join(format!("ferroray-spill-{pid}-{:016x}", 0xff00 + i))).unwrap();
    }
    let before = p.entries();
    let mut s = store(MIB, &p);
    let dir = spill_one(&mut s);
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    assert!(!before.contains(&name), "{name} existed before");
    let mut after = p.entries();
    after.retain(|n| *n != name);
    assert_eq!(after, before, "only one entry was added");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing went through a symlink");
    drop(s);
    assert_eq!(p.entries(), before, "the decoys are not the store's to remove");
}

#[test]
fn a_symlink_at_a_spill_file_path_is_not_followed() {
    let p = Parent::new("symlink-file");
    let victim = p.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let mut s = store(MIB, &p);
    let dir = spill_one(&mut s);
    // Planted where object 2 would spill: the spill takes another name.
    let planted = dir.join("obj-2");
    symlink(&victim, &planted).unwrap();
    put(&mut s, 3, 600 * KIB); // spills 2
    assert!(s.is_spilled(2));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3, "obj-1, the symlink and 2 under another name");

    // A spill file swapped for a symlink (to a file of the right size) is not read.
    let decoy = p.path().join("decoy");
    std::fs::write(&decoy, vec![0xEE; 600 * KIB as usize]).unwrap();
    std::fs::remove_file(dir.join("obj-1")).unwrap();
    symlink(&decoy, dir.join("obj-1")).unwrap();
    assert!(matches!(s.pin(1), Err(StoreError::Io(_))));
    assert!(s.is_spilled(1));

    check(&mut s, 2); // read back from its other name
    s.unpin(2);
    s.delete(1); // removes the symlink, not its target
    assert!(std::fs::symlink_metadata(dir.join("obj-1")).is_err());
    assert_eq!(std::fs::read(&decoy).unwrap().len(), 600 * KIB as usize);
    drop(s);
    assert!(!dir.exists(), "removed, planted symlink included");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(p.entries(), ["decoy", "victim"]);
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn stale_directories_of_dead_processes_are_removed_at_start() {
    let p = Parent::new("stale");
    let dead = dead_pid();
    let live = std::process::id();
    let at = |name: &str| p.path().join(name);
    // Outside: must survive, whatever links point at it.
    let victim_dir = at("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("keep"), b"keep").unwrap();
    std::fs::write(at("victim-file"), b"keep").unwrap();

    // A dead process's directory, with symlinks inside: removed, links not followed.
    let stale = at(&format!("ferroray-spill-{dead}-00000000deadbeef"));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("obj-1"), b"spilled").unwrap();
    symlink(at("victim-file"), stale.join("obj-2")).unwrap();
    symlink(&victim_dir, stale.join("obj-3")).unwrap();
    std::fs::create_dir(stale.join("sub")).unwrap();
    symlink(&victim_dir, stale.join("sub").join("link")).unwrap();
    // An old-style name (node id suffix) of a dead process: removed too.
    let old_style = at(&format!("ferroray-spill-{dead}-1f2e3d4c5b6a7988"));
    std::fs::create_dir(&old_style).unwrap();

    // Kept: live pids, not a directory, not our name shape, not ours.
    let kept = [
        format!("ferroray-spill-{live}-aaaa"),
        "ferroray-spill-1-bbbb".to_string(),
        format!("ferroray-spill-{dead}-cccc"), // a symlink to a directory
        format!("ferroray-spill-{dead}-dddd"), // a file
        format!("ferroray-spill-{dead}-x.y"),  // not our name
        format!("ferroray-spill-{dead}"),      // not our name
        format!("other-{dead}-eeee"),
    ];
    std::fs::create_dir(at(&kept[0])).unwrap();
    std::fs::write(at(&kept[0]).join("obj-9"), b"live").unwrap();
    std::fs::create_dir(at(&kept[1])).unwrap();
    symlink(&victim_dir, at(&kept[2])).unwrap();
    std::fs::write(at(&kept[3]), b"file").unwrap();
    std::fs::create_dir(at(&kept[4])).unwrap();
    std::fs::create_dir(at(&kept[5])).unwrap();
    std::fs::create_dir(at(&kept[6])).unwrap();
    // Another user's directory (only root can make one): kept.
    let foreign = at(&format!("ferroray-spill-{dead}-ffff"));
    if euid() == 0 {
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    }

    let s = store(MIB, &p);
    assert!(!stale.exists() && std::fs::symlink_metadata(&stale).is_err(), "the dead process's directory");
    assert!(!old_style.exists());
    for k in &kept {
        assert!(std::fs::symlink_metadata(at(k)).is_ok(), "{k} was removed");
    }
    assert_eq!(std::fs::read(at(&kept[0]).join("obj-9")).unwrap(), b"live");
    assert!(std::fs::symlink_metadata(at(&kept[2])).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(victim_dir.join("keep")).unwrap(), b"keep");
    assert_eq!(std::fs::read(at("victim-file")).unwrap(), b"keep");
    if euid() == 0 {
        assert!(foreign.is_dir(), "another user's directory was removed");
    }
    drop(s);
    // A store that never spilled added nothing.
    let mut want: Vec<String> = kept.iter().cloned().chain(["victim-dir".into(), "victim-file".into()]).collect();
    if euid() == 0 {
        want.push(foreign.file_name().unwrap().to_str().unwrap().to_string());
    }
    want.sort();
    assert_eq!(p.entries(), want);
}

/// Run by `a_crashed_process_leaves_its_directory_to_the_next_start` in a
/// child process: spills, records the directory, exits without dropping.
#[test]
fn crash_child() {
    let Some(parent) = std::env::var_os("FERRORAY_STORE_CRASH_PARENT") else {
        return; // not the child: nothing to do
    };
    let parent = PathBuf::from(parent);
    let arena = Arc::new(Arena::create(MIB).unwrap());
    let mut s: Store<u64> = Store::new(arena, parent.clone()).unwrap();
    let dir = spill_one(&mut s);
    std::fs::write(parent.join("made"), dir.as_os_str().as_encoded_bytes()).unwrap();
    std::process::exit(0); // no drop: as if the process had crashed
}

#[test]
fn a_crashed_process_leaves_its_directory_to_the_next_start() {
    let p = Parent::new("crash");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
        .env("FERRORAY_STORE_CRASH_PARENT", p.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let dir = PathBuf::from(std::fs::read_to_string(p.path().join("made")).unwrap());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "left behind by the dead child");
    let s = store(MIB, &p);
    assert!(!dir.exists(), "removed by the next start");
    drop(s);
    assert_eq!(p.entries(), ["made"]);
}
