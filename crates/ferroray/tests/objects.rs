//! Objects: inline and shared-memory values, zero-copy buffers, spilling,
//! and reference counting under the ownership model (the store and the
//! tables return to empty once every handle, anywhere, is dropped).

mod common;

use common::{cluster, cluster_with, eventually, get, T};
use ferroray::{Buffer, Config, ObjectRef, TypedBuffer};

#[ferroray::remote]
fn buffer_info(b: Buffer) -> (usize, bool, u8) {
    (b.len(), b.is_shared_memory(), b[b.len() / 2])
}

/// 4M `f32`s (16 MiB): element `i` is `i as f32 * 0.5`.
#[ferroray::remote]
fn make_floats(n: usize) -> TypedBuffer<f32> {
    TypedBuffer::from((0..n).map(|i| i as f32 * 0.5).collect::<Vec<f32>>())
}

/// Sum, and whether the argument was read without a copy.
#[ferroray::remote]
fn sum_u64(v: TypedBuffer<u64>) -> (u64, bool) {
    (v.iter().sum(), v.is_shared_memory())
}

/// A typed buffer after a one-byte field: misaligned in the encoding.
#[ferroray::remote]
fn tagged_floats(n: usize) -> (u8, TypedBuffer<f64>) {
    (7, TypedBuffer::from(vec![2.5f64; n]))
}

#[ferroray::remote]
fn make_buffer(len: usize, fill: u8) -> Buffer {
    Buffer::from(vec![fill; len])
}

#[ferroray::remote]
fn put_inside_task(v: i64) -> ObjectRef<i64> {
    ferroray::put(v * 2).expect("put in a task")
}

#[ferroray::remote]
fn sum_nested(refs: Vec<ObjectRef<i64>>) -> i64 {
    refs.iter().map(|r| r.get().expect("nested get")).sum()
}

#[ferroray::remote]
fn identity(v: i64) -> i64 {
    v
}

fn store_empty() -> bool {
    let s = ferroray::runtime_stats().unwrap();
    s.node_objects == 0 && s.store_objects == 0 && s.store_used_bytes == 0 && s.local_refs == 0
}

#[test]
fn large_values_live_in_shared_memory_and_read_without_copying() {
    let _c = cluster();
    let r = ferroray::put(Buffer::from(vec![9u8; 8 << 20])).unwrap();
    let s = ferroray::runtime_stats().unwrap();
    assert_eq!(s.store_objects, 1);
    assert!(s.store_used_bytes >= 8 << 20);
    let b = get(&r).unwrap();
    assert!(b.is_shared_memory(), "a large Buffer read in the driver is a view of shared memory");
    assert_eq!(b.len(), 8 << 20);
    // In a worker too: the argument is a view, not a copy.
    let (len, shm, mid) = get(&buffer_info::remote(&r)).unwrap();
    assert_eq!((len, shm, mid), (8 << 20, true, 9));
    // A large value returned by a task.
    let made = make_buffer::remote(4 << 20, 3);
    let m = get(&made).unwrap();
    assert!(m.is_shared_memory());
    assert!(m.iter().all(|x| *x == 3));
    // Small values stay inline.
    let small = get(&make_buffer::remote(10, 1)).unwrap();
    assert!(!small.is_shared_memory());
}

#[test]
fn a_view_keeps_its_object_readable_after_the_ref_is_dropped() {
    let _c = cluster();
    let r = ferroray::put(Buffer::from(vec![4u8; 1 << 20])).unwrap();
    let view = get(&r).unwrap();
    drop(r);
    // Churn the store so freed space would be reused.
    for i in 0..4u8 {
        let other = ferroray::put(Buffer::from(vec![i; 1 << 20])).unwrap();
        drop(get(&other).unwrap());
    }
    assert!(view.iter().all(|x| *x == 4));
    drop(view);
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
}

#[test]
fn past_capacity_objects_spill_to_disk_and_come_back() {
    let _c = cluster_with(Config::default().object_store_memory(8 << 20));
    let refs: Vec<_> = (0..6u8).map(|i| ferroray::put(Buffer::from(vec![i; 3 << 20])).unwrap()).collect();
    let s = ferroray::runtime_stats().unwrap();
    assert!(s.store_spilled >= 3, "18 MiB in an 8 MiB store: {s:?}");
    for (i, r) in refs.iter().enumerate() {
        let b = get(r).unwrap();
        assert_eq!(b.len(), 3 << 20);
        assert!(b.iter().all(|x| *x == i as u8), "object {i} came back intact");
    }
    drop(refs);
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
}

#[test]
fn dropping_the_last_ref_frees_the_object_everywhere() {
    let _c = cluster();
    let small = ferroray::put(5i64).unwrap();
    let big = ferroray::put(Buffer::from(vec![1u8; 2 << 20])).unwrap();
    let task = identity::remote(&small);
    assert_eq!(get(&task).unwrap(), 5);
    let clone = big.clone();
    drop(big);
    assert_eq!(ferroray::runtime_stats().unwrap().store_objects, 1, "a clone still holds it");
    drop((clone, small, task));
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
}

#[test]
fn refs_nested_in_values_keep_their_objects_alive() {
    let _c = cluster();
    let inner = ferroray::put(21i64).unwrap();
    let outer = ferroray::put(vec![inner.clone()]).unwrap();
    drop(inner);
    let got: Vec<ObjectRef<i64>> = get(&outer).unwrap();
    assert_eq!(get(&got[0]).unwrap(), 21);
    // Borrowed by a task through a nested ref.
    let total = sum_nested::remote(got.clone());
    drop(got);
    drop(outer);
    assert_eq!(get(&total).unwrap(), 21);
    drop(total);
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
}

#[test]
fn a_ref_created_in_a_worker_outlives_the_task_that_returned_it() {
    let _c = cluster();
    let outer = put_inside_task::remote(4);
    let inner: ObjectRef<i64> = get(&outer).unwrap();
    drop(outer);
    assert_eq!(get(&inner).unwrap(), 8);
    drop(inner);
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
}

#[test]
fn tables_return_to_empty_after_many_tasks() {
    let _c = cluster();
    let refs: Vec<_> = (0..500).map(identity::remote).collect();
    let sum: i64 = ferroray::get_all(&refs).unwrap().iter().sum();
    assert_eq!(sum, (0..500).sum::<i64>());
    drop(refs);
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
    assert_eq!(ferroray::runtime_stats().unwrap().node_tasks, 0);
}

#[test]
fn a_typed_buffer_reads_as_a_slice_of_shared_memory() {
    let _c = cluster();
    const N: usize = 4 << 20;
    let v = get(&make_floats::remote(N)).unwrap();
    assert!(v.is_shared_memory(), "a large TypedBuffer returned by a task is a view of shared memory");
    assert_eq!(v.len(), N);
    assert!(v.as_ptr().is_aligned());
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as f32 * 0.5));
    // A put, and a worker reading it as an argument: zero-copy there too.
    let big = ferroray::put(TypedBuffer::from((0..1_000_000u64).collect::<Vec<_>>())).unwrap();
    assert!(get(&big).unwrap().is_shared_memory());
    assert_eq!(get(&sum_u64::remote(&big)).unwrap(), ((0..1_000_000u64).sum(), true));
    // Misaligned in the value's bytes: copied once into aligned memory.
    let (tag, t) = get(&tagged_floats::remote(1 << 16)).unwrap();
    assert_eq!(tag, 7);
    assert!(!t.is_shared_memory());
    assert!(t.iter().all(|x| *x == 2.5));
    // Small ones travel inline.
    let small = get(&make_floats::remote(4)).unwrap();
    assert_eq!((small.as_slice(), small.is_shared_memory()), (&[0.0, 0.5, 1.0, 1.5][..], false));
}

#[ferroray::remote(num_returns = "dynamic")]
fn two_items() -> impl Iterator<Item = i64> {
    [4, 5].into_iter()
}

#[ferroray::remote]
fn make_items(n: i64) -> impl Iterator<Item = i64> {
    0..n
}

#[test]
fn raw_bytes_come_back_as_stored_with_their_encoding() {
    let _c = cluster();
    // Small: inline.
    let small = ferroray::put_raw(b"pickled?", &[]).unwrap();
    let v = small.get_raw(Some(T)).unwrap();
    assert_eq!(
        (v.encoding(), v.bytes().unwrap(), v.is_shared_memory()),
        (ferroray::Encoding::Raw, &b"pickled?"[..], false)
    );
    // Large: shared memory, read in place.
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let big = ferroray::put_raw(&data, &[]).unwrap();
    let v = big.get_raw(Some(T)).unwrap();
    assert!(v.is_shared_memory());
    assert_eq!(v.bytes().unwrap(), &data[..]);
    drop(v);
    // A typed value read raw: its value-format bytes.
    let seven = ferroray::put(7i64).unwrap();
    assert_eq!(seven.get_raw(Some(T)).unwrap().encoding(), ferroray::Encoding::Rust);
    drop((small, big, seven));
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
}

#[test]
fn refs_named_by_raw_bytes_stay_alive_with_them() {
    let _c = cluster();
    let inner = ferroray::put(21i64).unwrap();
    let outer = ferroray::put_raw(b"names a ref", &[inner.id()]).unwrap();
    let id = inner.id();
    drop(inner);
    assert_eq!(ferroray::runtime_stats().unwrap().node_objects, 2, "the raw object keeps its nested ref");
    drop(outer);
    assert!(eventually(T, store_empty), "{:?}", ferroray::runtime_stats());
    // Naming a ref this process does not hold is refused.
    assert!(matches!(ferroray::put_raw(b"x", &[id]), Err(ferroray::Error::InvalidOption(_))));
}

#[test]
fn the_node_made_values_read_raw_as_ids_and_unit() {
    let _c = cluster();
    let list = two_items::remote();
    let v = list.get_raw(Some(T)).unwrap();
    assert_eq!(v.encoding(), ferroray::Encoding::RefList);
    assert_eq!(v.bytes().unwrap(), &[] as &[u8]);
    let typed = get(&list).unwrap();
    assert_eq!(v.ref_ids(), typed.iter().map(|r| r.id()).collect::<Vec<_>>());
    assert_eq!(typed.iter().map(|r| get(r).unwrap()).collect::<Vec<_>>(), vec![4, 5]);
    // A streaming generator's completion object: no bytes, read as `()`.
    let mut gen = make_items::remote(2);
    while gen.next().is_some() {}
    let done = gen.completed();
    assert_eq!(done.get_raw(Some(T)).unwrap().encoding(), ferroray::Encoding::Unit);
    get(&done).unwrap();
}
