"""Remote functions, objects and errors through real Python worker processes."""

import os
import threading
import time

import pytest

import ferroray as ray
from ferroray.exceptions import GetTimeoutError, RayError, RayTaskError, WorkerCrashedError

T = 30  # the longest any get in these tests may wait


class MyError(Exception):
    pass


@ray.remote
def add(a, b=0):
    return a + b


@ray.remote(num_returns=2)
def split(x):
    return x, -x


@ray.remote
def fail(msg):
    raise MyError(msg)


@ray.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@ray.remote
def nested(n):
    return ray.get(add.remote(n, 1), timeout=T) * 2


@ray.remote
def pid():
    return os.getpid()


@ray.remote(max_retries=0)
def die():
    os._exit(3)


def test_values_and_refs_as_arguments(cluster):
    r = add.remote(1, 2)
    assert ray.get(r, timeout=T) == 3
    assert ray.get(add.remote(r, 10), timeout=T) == 13
    assert ray.get(add.remote(1, b=r), timeout=T) == 4
    assert ray.get([add.remote(i, i) for i in range(20)], timeout=T) == [2 * i for i in range(20)]


def test_put_and_get_small_and_large(cluster):
    small = ray.put({"a": [1, 2, 3]})
    assert ray.get(small, timeout=T) == {"a": [1, 2, 3]}
    big = bytes(range(256)) * 8192  # 2 MiB: through shared memory
    ref = ray.put(big)
    assert ray.get(ref, timeout=T) == big
    assert ray.get(add.remote(ref, b"!"), timeout=T) == big + b"!"


def test_num_returns_and_options(cluster):
    a, b = split.remote(5)
    assert ray.get([a, b], timeout=T) == [5, -5]
    x, y, z = add.options(num_returns=3).remote((1, 2), (3,))
    assert ray.get([x, y, z], timeout=T) == [1, 2, 3]


def test_a_task_error_is_also_the_users_exception(cluster):
    with pytest.raises(MyError) as info:
        ray.get(fail.remote("boom"), timeout=T)
    e = info.value
    assert isinstance(e, RayTaskError)
    assert isinstance(e.cause, MyError)
    assert "boom" in str(e) and "remote traceback" in str(e)
    # A built-in exception the same way.
    with pytest.raises(ZeroDivisionError):
        ray.get(_div.remote(), timeout=T)


@ray.remote
def _div():
    return 1 / 0


def test_an_error_passes_through_a_dependent_task(cluster):
    with pytest.raises(MyError):
        ray.get(add.remote(fail.remote("first"), 1), timeout=T)


def test_get_timeout(cluster):
    r = sleep_then.remote(3, "late")
    start = time.time()
    with pytest.raises(GetTimeoutError):
        ray.get(r, timeout=0.2)
    assert time.time() - start < 2
    with pytest.raises(TimeoutError):
        ray.get(r, timeout=0)
    assert ray.get(r, timeout=T) == "late"


def test_wait(cluster):
    fast = add.remote(1, 1)
    slow = sleep_then.remote(2, 0)
    ready, rest = ray.wait([slow, fast], num_returns=1, timeout=T)
    assert ready == [fast] and rest == [slow]
    ready, rest = ray.wait([slow], num_returns=1, timeout=0.1)
    assert ready == [] and rest == [slow]
    ready, rest = ray.wait([slow, fast], num_returns=2, timeout=T)
    assert set(ready) == {slow, fast} and rest == []


def test_wait_without_fetching(cluster):
    fast = add.remote(1, 1)
    slow = sleep_then.remote(2, 0)
    ready, rest = ray.wait([slow, fast], num_returns=1, timeout=T, fetch_local=False)
    assert ready == [fast] and rest == [slow]
    ready, rest = ray.wait([slow], num_returns=1, timeout=0.1, fetch_local=False)
    assert ready == [] and rest == [slow]
    assert ray.get(fast, timeout=T) == 2


def test_nested_tasks_from_a_worker(cluster):
    assert ray.get(nested.remote(4), timeout=T) == 10
    assert ray.get([nested.remote(i) for i in range(4)], timeout=T) == [2, 4, 6, 8]


def test_tasks_run_in_other_processes(cluster):
    pids = set(ray.get([pid.remote() for _ in range(10)], timeout=T))
    assert os.getpid() not in pids


def test_a_worker_that_dies_is_a_crash_error_and_is_replaced(cluster):
    with pytest.raises(WorkerCrashedError):
        ray.get(die.remote(), timeout=T)
    assert ray.get(add.remote(2, 2), timeout=T) == 4


def test_bad_input_is_a_clear_error(cluster):
    with pytest.raises(TypeError, match="cannot be called directly"):
        add(1, 2)
    with pytest.raises(ValueError, match="unknown task options"):
        add.options(num_gpu=1)
    with pytest.raises(ValueError, match="num_returns"):
        add.options(num_returns=0)
    with pytest.raises(ValueError, match="num_cpus"):
        add.options(num_cpus=-1)
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get(5)
    with pytest.raises(TypeError):
        add.remote(threading.Lock())  # cannot be pickled
    with pytest.raises(TypeError, match="remote"):
        ray.remote(5)
    with pytest.raises(ValueError, match="timeout"):
        ray.get(ray.put(1), timeout=-1)
    with pytest.raises(RayError):
        # More CPUs than the node has: infeasible, never waits.
        ray.get(add.options(num_cpus=64).remote(1), timeout=T)


def test_refs_inside_arguments_and_results(cluster):
    inner = ray.put(41)
    # A ref inside an argument stays a ref (the task gets it, not its value).
    assert ray.get(_unwrap.remote([inner]), timeout=T) == 42
    # A ref inside a result stays a ref too, and keeps its object alive.
    nested = ray.get(_wrap.remote(7), timeout=T)
    assert ray.get(nested[0], timeout=T) == 7


@ray.remote
def _unwrap(refs):
    return ray.get(refs[0], timeout=T) + 1


@ray.remote
def _wrap(x):
    return [ray.put(x)]


def test_reinit_is_refused_unless_asked(cluster):
    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="already initialized"):
        ray.init()
    ray.init(ignore_reinit_error=True)
    with pytest.raises(RuntimeError, match="already initialized"):
        ray.init(address="10.1.2.3:6379")
    with pytest.raises(TypeError, match="address must be a string"):
        ray.init(address=6379)
    ray.init(address="local", ignore_reinit_error=True)


@ray.remote(enable_task_events=False)
def quiet(x):
    return x


def test_task_events_can_be_turned_off(cluster):
    assert ray.get(quiet.remote(5), timeout=T) == 5
    with pytest.raises(TypeError, match="enable_task_events"):
        quiet.options(enable_task_events="no")


def test_a_function_from_a_module_workers_cannot_import(cluster):
    import importlib
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "only_in_the_driver.py"), "w") as f:
            f.write("def twice(x):\n    return 2 * x\n")
        # After init: the workers' module path does not have it.
        sys.path.insert(0, d)
        try:
            module = importlib.import_module("only_in_the_driver")
            with pytest.raises(ModuleNotFoundError) as info:
                ray.get(ray.remote(module.twice).remote(2), timeout=T)
            assert isinstance(info.value, RayTaskError)
            assert "only_in_the_driver" in str(info.value)
        finally:
            sys.path.remove(d)
            sys.modules.pop("only_in_the_driver", None)


@ray.remote
def returns_a_lock():
    return threading.Lock()


def test_a_result_that_cannot_be_pickled_is_the_tasks_error(cluster):
    with pytest.raises(TypeError) as info:
        ray.get(returns_a_lock.remote(), timeout=T)
    assert isinstance(info.value, RayTaskError) and "pickle" in str(info.value)


@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def fails_then_counts(counter):
    n = ray.get(counter.incr.remote(), timeout=T)
    if n < 3:
        raise KeyError(n)
    return n


@ray.remote
class Tally:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


def test_retry_exceptions_by_class(cluster):
    tally = Tally.remote()
    # Two KeyErrors are retried; the third attempt returns.
    assert ray.get(fails_then_counts.remote(tally), timeout=T) == 3
    other = Tally.remote()
    with pytest.raises(KeyError):
        ray.get(fails_then_counts.options(retry_exceptions=[ValueError]).remote(other), timeout=T)
    assert ray.get(other.incr.remote(), timeout=T) == 2  # ran once


@ray.remote
def plus_one(x):
    return x + 1


@ray.remote
def calls_plus_one(x):
    return ray.get(plus_one.remote(x), timeout=T)


def test_a_function_is_exported_once_not_per_call(cluster):
    before = ray._ferroray._runtime_stats()["node_functions"]
    assert ray.get([plus_one.remote(i) for i in range(200)], timeout=T) == list(range(1, 201))
    assert ray._ferroray._runtime_stats()["node_functions"] == before + 1
    # Options make a copy that names the same export.
    assert ray.get(plus_one.options(num_cpus=0.5).remote(1), timeout=T) == 2
    assert ray._ferroray._runtime_stats()["node_functions"] == before + 1
    # A worker that calls a remote function exports it under its own id,
    # once per process however often it calls.
    assert ray.get([calls_plus_one.remote(i) for i in range(20)], timeout=T) == list(range(1, 21))
    workers = ray._ferroray._runtime_stats()["workers"]
    grown = ray._ferroray._runtime_stats()["node_functions"] - before
    assert 3 <= grown <= 2 + workers, (grown, workers)


@ray.remote
def omp_threads():
    import os

    return os.environ.get("OMP_NUM_THREADS")


def test_workers_run_numerical_libraries_on_one_thread(cluster):
    # Unless the driver's environment says otherwise (as Ray).
    expected = os.environ.get("OMP_NUM_THREADS", "1")
    assert ray.get(omp_threads.remote(), timeout=T) == expected
