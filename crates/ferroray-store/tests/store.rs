//! Store behaviour over a real memfd arena and a real spill directory.

use std::path::PathBuf;
use std::sync::Arc;

use ferroray_store::{Arena, Store, StoreError, StoreStats};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A fresh, not yet existing spill directory path.
fn spill_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroray-store-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn store(capacity: u64, name: &str) -> Store<u64> {
    let arena = Arc::new(Arena::create(capacity).unwrap());
    Store::new(arena, spill_dir(name)).unwrap()
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
    let mut s = store(MIB, "lifecycle");
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
    let mut s = store(64 * KIB, "zero");
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
    let mut s = store(MIB, "spill");
    let dir = s.spill_dir().to_path_buf();
    put(&mut s, 1, 400 * KIB);
    put(&mut s, 2, 400 * KIB);
    assert_eq!(s.stats().spilled, 0);
    put(&mut s, 3, 400 * KIB); // no room: spills 1, the oldest
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
    let mut s = store(MIB, "pinned");
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
    let mut s = store(MIB, "unsealed");
    let a = s.allocate(400 * KIB).unwrap();
    let _b = s.allocate(400 * KIB).unwrap();
    assert!(matches!(s.allocate(400 * KIB), Err(StoreError::Full { .. })));
    s.abort(a);
    assert!(s.allocate(400 * KIB).is_ok());
}

#[test]
fn larger_than_capacity_is_full() {
    let mut s = store(MIB, "too-big");
    put(&mut s, 1, 400 * KIB);
    assert!(matches!(s.allocate(MIB + 1), Err(StoreError::Full { .. })));
    assert!(matches!(s.allocate(u64::MAX), Err(StoreError::Full { .. })));
    assert_eq!(s.stats().spilled, 0); // nothing spilled in vain
}

#[test]
fn deferred_delete_of_pinned_object() {
    let mut s = store(MIB, "deferred");
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
    let mut s = store(MIB, "delete-spilled");
    let dir = s.spill_dir().to_path_buf();
    put(&mut s, 1, 600 * KIB);
    put(&mut s, 2, 600 * KIB);
    assert!(s.is_spilled(1));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    s.delete(1);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(s.stats().spilled, 0);
}

#[test]
fn drop_removes_spill_files_and_created_dir() {
    let mut s = store(MIB, "drop");
    let dir = s.spill_dir().to_path_buf();
    for k in 0..4 {
        put(&mut s, k, 400 * KIB);
    }
    assert_eq!(s.stats().spilled, 2);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    drop(s);
    assert!(!dir.exists());
}

#[test]
fn drop_keeps_preexisting_dir() {
    let dir = spill_dir("preexisting");
    std::fs::create_dir_all(&dir).unwrap();
    let arena = Arc::new(Arena::create(MIB).unwrap());
    let mut s: Store<u64> = Store::new(arena, dir.clone()).unwrap();
    put(&mut s, 1, 600 * KIB);
    put(&mut s, 2, 600 * KIB);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    drop(s);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn worker_mapping_sees_sealed_bytes() {
    let mut s = store(MIB, "worker");
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
    let mut s = store(16 * MIB, "warm-reuse");
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
}
