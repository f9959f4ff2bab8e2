"""Async actors: calls run as asyncio tasks on the actor's own event loop,
which takes them from the core in batches (admission by max_concurrency,
cancels, generators with backpressure)."""

import asyncio
import random
import time

import pytest

import ferroray as ray
from ferroray.exceptions import RayTaskError, TaskCancelledError

T = 30


@ray.remote
class Loop:
    def __init__(self):
        self.inside = 0
        self.most = 0
        self.started = []
        self.cancelled = 0
        self.produced = 0
        self.children = []

    async def work(self, tag, seconds):
        self.started.append(tag)
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.inside -= 1
        return tag

    async def stats(self):
        return {"most": self.most, "started": list(self.started), "cancelled": self.cancelled}

    async def items(self, n):
        for i in range(n):
            self.produced += 1
            await asyncio.sleep(0)
            yield i

    async def how_many_produced(self):
        return self.produced

    async def fail_after(self, n):
        for i in range(n):
            yield i
        raise ValueError(f"after {n}")

    @ray.method(num_returns=3)
    async def three(self):
        for i in range(3):
            yield i * 10

    def plain(self, x):
        return x + 1

    async def raises(self):
        raise KeyError("no such thing")

    async def task_id(self, seconds):
        await asyncio.sleep(seconds)
        return ray.get_runtime_context().get_task_id()

    async def awaits_a_task(self, x):
        return await double.remote(x)

    async def streams_from_a_child(self):
        gen = ticker.remote(1200)
        self.children.append(gen.completed())
        async for _ in gen:
            pass

    async def children_done(self):
        return list(self.children)


@ray.remote
def double(x):
    return 2 * x


@ray.remote
def ticker(n):
    for i in range(n):
        time.sleep(0.05)
        yield i


def test_max_concurrency_is_honoured_and_calls_start_in_order(cluster):
    a = Loop.options(max_concurrency=2).remote()
    refs = [a.work.remote(i, 0.2) for i in range(6)]
    assert ray.get(refs, timeout=T) == list(range(6))
    stats = ray.get(a.stats.remote(), timeout=T)
    assert stats["most"] == 2
    assert stats["started"] == list(range(6))


def test_default_concurrency_interleaves_many_calls(cluster):
    a = Loop.remote()
    start = time.monotonic()
    ray.get([a.work.remote(i, 0.5) for i in range(200)], timeout=T)
    # 200 calls of half a second each, all at once on one loop.
    assert time.monotonic() - start < 5
    assert ray.get(a.stats.remote(), timeout=T)["most"] > 100


def test_errors_sync_methods_and_nested_tasks(cluster):
    a = Loop.remote()
    with pytest.raises(KeyError):
        ray.get(a.raises.remote(), timeout=T)
    with pytest.raises(RayTaskError):
        ray.get(a.raises.remote(), timeout=T)
    assert ray.get(a.plain.remote(1), timeout=T) == 2
    assert ray.get(a.awaits_a_task.remote(21), timeout=T) == 42


def test_each_call_sees_its_own_task_id(cluster):
    a = Loop.remote()
    refs = [a.task_id.remote(0.2) for _ in range(3)]
    ids = ray.get(refs, timeout=T)
    assert all(ids) and len(set(ids)) == 3


def test_generators_stream_in_order_and_fail_mid_stream(cluster):
    a = Loop.remote()
    assert [ray.get(r, timeout=T) for r in a.items.remote(50)] == list(range(50))
    got = []
    with pytest.raises(ValueError, match="after 3"):
        for r in a.fail_after.remote(3):
            got.append(ray.get(r, timeout=T))
    assert got == [0, 1, 2]
    assert ray.get(a.three.remote(), timeout=T) == [0, 10, 20]


def test_backpressure_holds_the_generator_back_without_blocking_the_loop(cluster):
    a = Loop.remote()
    gen = a.items.options(_generator_backpressure_num_objects=1).remote(100)
    for consumed in range(1, 6):
        ray.get(next(gen), timeout=T)
        time.sleep(0.1)
        # Other calls run while the generator waits for room.
        produced = ray.get(a.how_many_produced.remote(), timeout=T)
        assert produced <= consumed + 2, (consumed, produced)
    assert sum(ray.get(r, timeout=T) for r in gen) == sum(range(5, 100))


def test_cancel_a_running_call_and_a_queued_one(cluster):
    a = Loop.options(max_concurrency=1).remote()
    running = a.work.remote("running", 60)
    queued = a.work.remote("queued", 60)
    time.sleep(0.3)
    # The queued call first: cancelled later, it could be admitted (and
    # start) in the slot the running one frees.
    ray.cancel(queued)
    ray.cancel(running)
    with pytest.raises(TaskCancelledError):
        ray.get(running, timeout=T)
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=T)
    stats = ray.get(a.stats.remote(), timeout=T)
    assert stats["cancelled"] == 1
    assert stats["started"] == ["running"]
    assert ray.get(a.plain.remote(1), timeout=T) == 2


def test_cancel_a_generator_waiting_for_room(cluster):
    a = Loop.remote()
    gen = a.items.options(_generator_backpressure_num_objects=1).remote(1000)
    assert ray.get(next(gen), timeout=T) == 0
    time.sleep(0.2)
    ray.cancel(gen)
    with pytest.raises(TaskCancelledError):
        for r in gen:
            ray.get(r, timeout=T)
    assert ray.get(a.how_many_produced.remote(), timeout=T) < 10


def test_stress_cancels_racing_completions(cluster):
    """Calls end on their own as cancels arrive: each ref resolves to its
    value or to TaskCancelledError, never hangs, and the actor lives on."""
    rng = random.Random(7)
    a = Loop.options(max_concurrency=8).remote()
    deadline = time.monotonic() + 6
    rounds = 0
    while time.monotonic() < deadline:
        refs = [a.work.remote(i, rng.choice([0, 0.001, 0.005])) for i in range(60)]
        for r in rng.sample(refs, 20):
            ray.cancel(r)
        for i, r in enumerate(refs):
            try:
                assert ray.get(r, timeout=T) == i
            except TaskCancelledError:
                pass
        rounds += 1
    assert rounds > 0
    assert ray.get(a.plain.remote(1), timeout=T) == 2


def test_a_recursive_cancel_reaches_the_tasks_an_async_call_started(cluster):
    a = Loop.remote()
    call = a.streams_from_a_child.remote()
    time.sleep(0.5)
    ray.cancel(call, recursive=True)
    with pytest.raises(TaskCancelledError):
        ray.get(call, timeout=T)
    # The child's generator (a minute of items) was cancelled with it.
    (child_done,) = ray.get(a.children_done.remote(), timeout=T)
    with pytest.raises(TaskCancelledError):
        ray.get(child_done, timeout=T)
