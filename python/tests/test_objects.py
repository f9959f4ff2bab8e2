"""Values in the object store: numpy arrays in place, refs inside values."""

import gc

import numpy as np
import pytest

import ferroray as ray

T = 30
MB = 1024 * 1024


@ray.remote
def describe(a):
    return int(a.sum()), a.flags.writeable, a.dtype.str, a.shape


@ray.remote
def make(n):
    return {"ones": np.ones(n, dtype=np.uint8), "range": np.arange(10)}


def test_a_large_array_is_read_in_place_and_read_only(cluster):
    x = np.arange(4 * MB, dtype=np.int64)  # 32 MiB
    ref = ray.put(x)
    a = ray.get(ref, timeout=T)
    b = ray.get(ref, timeout=T)
    assert np.array_equal(a, x) and a.dtype == x.dtype
    # Both are views of the one copy in the store, not copies of it.
    assert np.shares_memory(a, b)
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1


@ray.remote
def pattern(n, seed):
    return (np.arange(n, dtype=np.uint64) * seed % 251).astype(np.uint8)


def test_large_buffers_are_copied_whole_on_several_threads_or_one(cluster):
    # Writable buffers of 8 MiB and more are copied by the extension in
    # pieces on several threads; read-only ones (an array from `get`) by a
    # memoryview. Odd lengths put the pieces' ends off page boundaries.
    n = 9 * MB + 123
    x = (np.arange(n, dtype=np.uint64) * 7 % 251).astype(np.uint8)
    y = np.arange(3 * MB + 5, dtype=np.int32)  # 12 MiB and some
    got = ray.get(ray.put({"x": x, "y": y, "small": np.arange(3)}), timeout=T)
    assert np.array_equal(got["x"], x) and np.array_equal(got["y"], y)
    assert list(got["small"]) == [0, 1, 2]
    # Read-only now: put again, it takes the one-thread way.
    assert not got["x"].flags.writeable
    again = ray.get(ray.put(got["x"]), timeout=T)
    assert np.array_equal(again, x)
    # A worker's return takes the same way as the driver's put.
    assert np.array_equal(ray.get(pattern.remote(n, 7), timeout=T), x)


def test_an_array_outlives_its_ref(cluster):
    ref = ray.put(np.full(2 * MB, 3, dtype=np.uint8))
    a = ray.get(ref, timeout=T)
    del ref
    gc.collect()
    # Other large objects come and go; the array's object stays pinned.
    for i in range(5):
        ray.get(ray.put(np.full(2 * MB, i, dtype=np.uint8)), timeout=T)
    assert int(a.sum()) == 3 * 2 * MB


def test_arrays_as_arguments_and_results(cluster):
    x = np.arange(MB, dtype=np.float64)
    total, writeable, dtype, shape = ray.get(describe.remote(x), timeout=T)
    assert total == int(x.sum()) and not writeable and dtype == x.dtype.str and shape == x.shape
    out = ray.get(make.remote(3 * MB), timeout=T)
    assert out["ones"].nbytes == 3 * MB and int(out["ones"].sum()) == 3 * MB
    assert list(out["range"]) == list(range(10))
    # Small arrays travel inline, the same way.
    assert list(ray.get(ray.put(np.arange(5)), timeout=T)) == [0, 1, 2, 3, 4]


def test_large_values_without_buffers(cluster):
    blob = bytes(range(256)) * (MB // 64)  # 4 MiB in band
    assert ray.get(ray.put(blob), timeout=T) == blob
    assert ray.get(ray.put([blob, {"k": blob}]), timeout=T)[1]["k"] == blob


def test_a_non_contiguous_array_still_travels(cluster):
    x = np.arange(MB, dtype=np.int32)[::2]
    assert np.array_equal(ray.get(ray.put(x), timeout=T), x)
