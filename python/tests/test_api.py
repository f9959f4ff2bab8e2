"""asyncio, the runtime context, and Ctrl-C in a wait."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import ferroray as ray

T = 30


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def count(n):
    for i in range(n):
        yield i


@ray.remote
def context_in_task():
    ctx = ray.get_runtime_context()
    return ctx.get_task_id(), ctx.get_actor_id(), ctx.get_node_id()


@ray.remote
class Where:
    def ids(self):
        ctx = ray.get_runtime_context()
        return ctx.get_task_id(), ctx.get_actor_id()


def test_await_refs_and_async_for(cluster):
    async def main():
        one = await add.remote(1, 2)
        many = await asyncio.gather(*[add.remote(i, i) for i in range(50)])
        items = [await r async for r in count.remote(5)]
        return one, many, items

    one, many, items = asyncio.run(asyncio.wait_for(main(), T))
    assert one == 3
    assert many == [2 * i for i in range(50)]
    assert items == list(range(5))


@ray.remote
def after(seconds, x):
    time.sleep(seconds)
    return x


def _os_threads():
    return len(os.listdir("/proc/self/task"))


def test_many_awaits_hold_no_thread_each_and_a_cancelled_await_is_harmless(cluster):
    gate = after.remote(0.5, 1)

    @ray.remote
    def behind(g, i):
        return g + i

    async def main():
        refs = [behind.remote(gate, i) for i in range(500)]
        threads = _os_threads()
        waits = [asyncio.ensure_future(_await(r)) for r in refs]
        await asyncio.sleep(0.1)
        # Every await is pending now; none holds a thread of its own.
        assert _os_threads() <= threads + 2
        got = await asyncio.gather(*waits)
        # A wait given up by its awaiter (a timeout) settles nothing later.
        slow = after.remote(0.3, "late")
        try:
            await asyncio.wait_for(_await(slow), 0.05)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.5)
        assert await slow == "late"
        return got

    async def _await(r):
        return await r

    assert asyncio.run(asyncio.wait_for(main(), T)) == [1 + i for i in range(500)]


@ray.remote
def slow_count(n, pause):
    for i in range(n):
        time.sleep(pause)
        yield i


def test_a_cancelled_await_of_a_generator_takes_no_item(cluster):
    gen = slow_count.remote(3, 0.3)

    async def main():
        try:
            await asyncio.wait_for(gen.__anext__(), 0.05)
            raise AssertionError("the first item came in 50 ms")
        except asyncio.TimeoutError:
            pass
        # Item 0 arrives meanwhile: the wait given up must not take it.
        await asyncio.sleep(0.5)
        return [await r async for r in gen]

    assert asyncio.run(asyncio.wait_for(main(), T)) == [0, 1, 2]


def test_runtime_context(cluster):
    ctx = ray.get_runtime_context()
    assert ctx.get_task_id() is None and ctx.get_actor_id() is None
    node = ctx.get_node_id()
    assert node and ctx.get_job_id()
    (t1, a1, n1), (t2, _, _) = ray.get([context_in_task.remote(), context_in_task.remote()], timeout=T)
    assert t1 and t2 and t1 != t2 and a1 is None and n1 == node
    w = Where.remote()
    task_id, actor_id = ray.get(w.ids.remote(), timeout=T)
    assert task_id and actor_id == w._core._actor_id()


def test_ctrl_c_interrupts_a_get_promptly():
    script = textwrap.dedent(
        """
        import time
        import ferroray as ray

        @ray.remote
        def slow():
            time.sleep(60)

        ref = slow.remote()
        print("waiting", flush=True)
        ray.get(ref)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        start = time.time()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert time.time() - start < 5
        assert "KeyboardInterrupt" in err
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nodes_and_resources_of_the_embedded_cluster(cluster):
    nodes = ray.nodes()
    assert len(nodes) == 1 and nodes[0]["Alive"] and nodes[0]["IsHead"]
    assert nodes[0]["Resources"]["CPU"] == 2.0
    total = ray.cluster_resources()
    assert total["CPU"] == 2.0 and total["object_store_memory"] > 0
    available = ray.available_resources()
    assert 0 <= available["CPU"] <= 2.0
