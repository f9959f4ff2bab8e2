"""Streaming and dynamic generator tasks from Python, on real worker processes."""

import gc
import os
import tempfile
import time

import pytest

import ferroray as ray
from ferroray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError

T = 30


@ray.remote
def count(n):
    for i in range(n):
        yield i


@ray.remote
def fails_after(n):
    for i in range(n):
        yield i
    raise KeyError("after the items")


@ray.remote
def stamped(n):
    for i in range(n):
        yield time.time()


@ray.remote
def slow(n, pause):
    for i in range(n):
        time.sleep(pause)
        yield i


@ray.remote(max_retries=2)
def dies_once(n, marker):
    for i in range(n):
        if i == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        yield i


def test_items_in_order_then_the_end(cluster):
    gen = count.remote(50)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(r, timeout=T) for r in gen] == list(range(50))
    with pytest.raises(StopIteration):
        next(gen)
    assert gen.is_finished()
    assert ray.get(gen.completed(), timeout=T) is None


def test_an_error_comes_after_the_items_it_followed(cluster):
    got = []
    for r in fails_after.remote(3):
        try:
            got.append(ray.get(r, timeout=T))
        except KeyError as e:
            assert isinstance(e, RayTaskError)
            got.append("error")
    assert got == [0, 1, 2, "error"]


def test_backpressure_keeps_the_generator_one_item_ahead(cluster):
    gen = stamped.options(_generator_backpressure_num_objects=1).remote(4)
    taken = []
    made = []
    for r in gen:
        made.append(ray.get(r, timeout=T))
        taken.append(time.time())
        time.sleep(0.2)
    # Item k+1 is made only after item k was taken (less a little clock skew).
    for k in range(1, len(made)):
        assert made[k] >= taken[k - 1] - 0.05, (made, taken)
    # Without backpressure all are made at once.
    unlimited = [ray.get(r, timeout=T) for r in stamped.remote(4)]
    assert unlimited[-1] - unlimited[0] < 0.2


def test_a_retry_after_a_crash_gives_each_item_exactly_once(cluster):
    with tempfile.TemporaryDirectory() as d:
        items = [ray.get(r, timeout=T) for r in dies_once.remote(6, os.path.join(d, "died"))]
    assert items == list(range(6))


def test_wait_and_next_with_timeout(cluster):
    gen = slow.remote(2, 1.0)
    ready, rest = ray.wait([gen], num_returns=1, timeout=0.1)
    assert ready == [] and rest == [gen]
    with pytest.raises(GetTimeoutError):
        gen._next_timeout(0.1)
    ready, _ = ray.wait([gen], num_returns=1, timeout=T)
    assert ready == [gen]
    assert ray.get(next(gen), timeout=T) == 0


def test_cancel_ends_the_stream_with_the_cancel(cluster):
    gen = slow.remote(1000, 0.05)
    assert ray.get(next(gen), timeout=T) == 0
    ray.cancel(gen)
    with pytest.raises(TaskCancelledError):
        for r in gen:
            ray.get(r, timeout=T)


def test_dropping_a_generator_frees_its_items(cluster):
    before = ray._ferroray._runtime_stats()["node_streams"]
    gen = count.remote(100)
    next(gen)
    del gen
    gc.collect()
    deadline = time.time() + T
    while ray._ferroray._runtime_stats()["node_streams"] > before and time.time() < deadline:
        time.sleep(0.05)
    assert ray._ferroray._runtime_stats()["node_streams"] <= before


def test_dynamic_returns_a_list_of_refs(cluster):
    dyn = ray.get(count.options(num_returns="dynamic").remote(5), timeout=T)
    assert isinstance(dyn, ray.DynamicObjectRefGenerator)
    assert [ray.get(r, timeout=T) for r in dyn] == list(range(5))


def test_fixed_num_returns_of_a_generator(cluster):
    a, b, c = count.options(num_returns=3).remote(3)
    assert ray.get([a, b, c], timeout=T) == [0, 1, 2]


def test_bad_generator_options(cluster):
    with pytest.raises(ValueError, match="_generator_backpressure_num_objects"):
        count.options(_generator_backpressure_num_objects=0)
    with pytest.raises(ValueError, match="streaming"):
        count.options(num_returns=2, _generator_backpressure_num_objects=1).remote(2)
    with pytest.raises(ValueError, match="num_returns"):
        count.options(num_returns="sometimes")
    with pytest.raises(TypeError):
        ray.get(count.remote(1))  # a generator is not a ref


def test_the_types_are_where_ray_programs_import_them(cluster):
    from ferroray._raylet import DynamicObjectRefGenerator, ObjectRefGenerator

    assert ObjectRefGenerator is ray.ObjectRefGenerator
    assert DynamicObjectRefGenerator is ray.DynamicObjectRefGenerator


@ray.remote
def total(gen):
    return sum(ray.get(r, timeout=T) for r in gen)


@ray.remote
class Summer:
    def total(self, holder):
        return sum(ray.get(r, timeout=T) for r in holder["gen"])


def test_a_generator_passed_on_resumes_where_its_consumer_stopped(cluster):
    gen = count.remote(10)
    assert ray.get(next(gen), timeout=T) == 0
    assert ray.get(total.remote(gen), timeout=T) == sum(range(1, 10))
    # Its items went to the task: here it ends with an error item.
    with pytest.raises(ValueError, match="passed on"):
        for r in gen:
            ray.get(r, timeout=T)


def test_a_generator_inside_a_value_passed_to_an_actor(cluster):
    gen = count.options(_generator_backpressure_num_objects=2).remote(20)
    assert [ray.get(next(gen), timeout=T) for _ in range(3)] == [0, 1, 2]
    s = Summer.remote()
    assert ray.get(s.total.remote({"gen": gen}), timeout=T) == sum(range(3, 20))


def test_a_generator_pickled_outside_ferroray_is_refused(cluster):
    import pickle

    gen = count.remote(3)
    with pytest.raises(TypeError, match="pickled only by ferroray"):
        pickle.dumps(gen)
    assert [ray.get(r, timeout=T) for r in gen] == [0, 1, 2]
