"""Python actors of the three kinds, on real worker processes."""

import asyncio
import os
import threading
import time

import pytest

import ferroray as ray
from ferroray.exceptions import ActorDiedError, RayTaskError

T = 30


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, k=1):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()

    def items(self, n):
        for i in range(n):
            yield i

    def fail(self):
        raise ValueError("from the actor")

    @ray.method(num_returns=2)
    def pair(self):
        return self.n, -self.n


@ray.remote
class Slow:
    def __init__(self):
        self.inside = 0
        self.most = 0
        self.lock = threading.Lock()

    def work(self, seconds):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(seconds)
        with self.lock:
            self.inside -= 1
        return self.most

    def most_at_once(self):
        return self.most

    def pid(self):
        return os.getpid()


@ray.remote
class AsyncCounter:
    def __init__(self):
        self.n = 0
        self.inside = 0
        self.most = 0

    async def incr(self):
        self.n += 1
        return self.n

    async def pid(self):
        return os.getpid()

    async def work(self, seconds):
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(seconds)
        self.inside -= 1
        return self.most

    async def items(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i


@ray.remote
class Broken:
    def __init__(self):
        raise RuntimeError("cannot start")

    def never(self):
        return 1


@ray.remote
def task_pid():
    return os.getpid()


def children():
    """The pids of this process's live children (zombies left out)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[1]) == os.getpid():
                found.add(int(entry))
    return found


def wait_until(check, what):
    deadline = time.time() + T
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.02)


@ray.remote
def call_from_task(counter, k):
    return ray.get(counter.incr.remote(k), timeout=T)


def test_calls_run_in_order_on_the_actors_own_process(cluster):
    c = Counter.remote(10)
    refs = [c.incr.remote() for _ in range(100)]
    assert ray.get(refs, timeout=T) == list(range(11, 111))
    assert ray.get(c.pid.remote(), timeout=T) != os.getpid()


def test_generator_methods_and_num_returns(cluster):
    c = Counter.remote(3)
    assert [ray.get(r, timeout=T) for r in c.items.remote(5)] == list(range(5))
    a, b = c.pair.remote()
    assert ray.get([a, b], timeout=T) == [3, -3]


def test_a_method_error_is_the_users_exception_and_the_actor_lives_on(cluster):
    c = Counter.remote()
    with pytest.raises(ValueError) as info:
        ray.get(c.fail.remote(), timeout=T)
    assert isinstance(info.value, RayTaskError)
    assert ray.get(c.incr.remote(), timeout=T) == 1


def test_handles_travel_to_tasks_and_inside_values(cluster):
    c = Counter.remote()
    assert ray.get(call_from_task.remote(c, 5), timeout=T) == 5
    holder = ray.put({"counter": c})
    inner = ray.get(holder, timeout=T)["counter"]
    assert ray.get(inner.incr.remote(), timeout=T) == 6


def test_refs_nested_in_values_stay_refs(cluster):
    r = ray.put("inner")
    outer = ray.put([r, {"again": r}])
    got = ray.get(outer, timeout=T)
    assert ray.get(got[0], timeout=T) == "inner"
    assert ray.get(got[1]["again"], timeout=T) == "inner"
    with pytest.raises(TypeError, match="pickled only by ferroray"):
        import pickle

        pickle.dumps(r)


def test_threaded_actor_runs_calls_at_once(cluster):
    s = Slow.options(max_concurrency=4).remote()
    ray.get([s.work.remote(0.5) for _ in range(4)], timeout=T)
    assert ray.get(s.most_at_once.remote(), timeout=T) >= 2
    serial = Slow.remote()
    ray.get([serial.work.remote(0.1) for _ in range(3)], timeout=T)
    assert ray.get(serial.most_at_once.remote(), timeout=T) == 1


def test_async_actor_interleaves_at_await(cluster):
    a = AsyncCounter.remote()
    ray.get([a.work.remote(0.3) for _ in range(5)], timeout=T)
    assert ray.get(a.work.remote(0), timeout=T) >= 2
    assert ray.get(a.incr.remote(), timeout=T) == 1
    assert [ray.get(r, timeout=T) for r in a.items.remote(4)] == list(range(4))
    capped = AsyncCounter.options(max_concurrency=1).remote()
    ray.get([capped.work.remote(0.1) for _ in range(3)], timeout=T)
    assert ray.get(capped.work.remote(0), timeout=T) == 1


def test_named_actors(cluster):
    c = Counter.options(name="the-counter").remote(7)
    assert ray.get(ray.get_actor("the-counter").incr.remote(), timeout=T) == 8
    with pytest.raises(ValueError, match="no-such-actor"):
        ray.get_actor("no-such-actor")
    with pytest.raises(ValueError, match="already"):
        Counter.options(name="the-counter").remote()
    del c


@ray.remote
def use_named_actor(name):
    c = ray.get_actor(name)
    items = [ray.get(r, timeout=T) for r in c.items.remote(3)]
    return items, ray.get(c.pair.remote(), timeout=T)


def test_a_named_actor_found_in_another_process_knows_its_methods(cluster):
    c = Counter.options(name="known-methods").remote(5)
    # In a task's process the class was never made an actor: the handle
    # gets the method table its creator kept with the actor (a generator
    # method streams, `pair` has two returns).
    items, pair = ray.get(use_named_actor.remote("known-methods"), timeout=T)
    assert items == [0, 1, 2]
    assert pair == [5, -5]
    del c


def test_kill_and_a_failed_constructor(cluster):
    c = Counter.remote()
    assert ray.get(c.incr.remote(), timeout=T) == 1
    ray.kill(c)
    with pytest.raises(ActorDiedError):
        ray.get(c.incr.remote(), timeout=T)
    b = Broken.remote()
    with pytest.raises(ActorDiedError):
        ray.get(b.never.remote(), timeout=T)


def test_restart_after_the_process_dies(cluster):
    c = Counter.options(max_restarts=1).remote(100)
    pid = ray.get(c.pid.remote(), timeout=T)
    os.kill(pid, 9)
    deadline = time.time() + T
    while True:
        try:
            # The constructor ran again with its original arguments.
            assert ray.get(c.incr.remote(), timeout=T) == 101
            break
        except ActorDiedError:
            assert time.time() < deadline
            time.sleep(0.05)
    assert ray.get(c.pid.remote(), timeout=T) != pid


def test_bad_actor_use_is_a_clear_error(cluster):
    with pytest.raises(TypeError, match="directly"):
        Counter()
    with pytest.raises(ValueError, match="unknown actor options"):
        Counter.options(max_concurency=2)
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    c = Counter.remote()
    with pytest.raises(AttributeError, match="no method"):
        c.decr
    with pytest.raises(TypeError, match="directly"):
        c.incr()
    with pytest.raises(TypeError, match="ActorHandle"):
        ray.kill("not an actor")


def test_actors_take_idle_workers_and_a_spare_starts_in_their_place(cluster):
    # Once the results are here, the workers that ran the tasks are idle.
    ray.get([task_pid.remote() for _ in range(4)], timeout=T)
    actors, pids = [], []
    # Each actor takes an idle worker, until none is left and one gets a
    # process of its own.
    while True:
        before = children()
        actors.append(Counter.remote())
        pids.append(ray.get(actors[-1].pid.remote(), timeout=T))
        if pids[-1] not in before:
            break
        assert len(actors) < 20, "a pool holds few idle workers"
    # A spare started beside that process: the next task runs there...
    spare = ray.get(task_pid.remote(), timeout=T)
    assert spare not in pids
    # ...and the next actor takes it, and another spare starts.
    before = children()
    actors.append(Counter.remote(5))
    assert ray.get(actors[-1].pid.remote(), timeout=T) == spare
    assert ray.get(actors[-1].incr.remote(), timeout=T) == 6
    wait_until(lambda: children() - before, "a spare starts")
    # An actor's process never goes back to the pool, and dies with it.
    pids.append(spare)
    assert not set(pids) & set(ray.get([task_pid.remote() for _ in range(20)], timeout=T))
    for a in actors:
        ray.kill(a)
    wait_until(lambda: not set(pids) & children(), "the killed actors' processes exit")


def _threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def test_a_threaded_actors_idle_threads_exit(cluster):
    s = Slow.options(max_concurrency=40).remote()
    # Each call runs on a thread of the actor's pool.
    ray.get([s.work.remote(0.3) for _ in range(40)], timeout=T)
    pid = ray.get(s.pid.remote(), timeout=T)
    assert _threads(pid) > 20
    wait_until(lambda: _threads(pid) < 10, "idle threads exit")
    assert ray.get([s.work.remote(0.1) for _ in range(10)], timeout=T)[-1] >= 2


def test_an_async_actors_calls_hold_no_threads(cluster):
    a = AsyncCounter.remote()
    # Calls waiting at an await are tasks of the actor's event loop.
    refs = [a.work.remote(0.5) for _ in range(40)]
    pid = ray.get(a.pid.remote(), timeout=T)
    assert _threads(pid) < 10
    assert ray.get(refs, timeout=T)[-1] >= 2


def test_actors_created_and_killed_in_a_loop_log_no_warning(cluster, capfd):
    for i in range(10):
        c = Counter.remote(i)
        assert ray.get(c.incr.remote(), timeout=T) == i + 1
        ray.kill(c)
    # Kills waiting behind spawns may come after a process already ended.
    time.sleep(0.5)
    assert "not killing" not in capfd.readouterr().err
