#!/usr/bin/env python3
"""The Python front's side-by-side benchmark: the same workloads on any module with
Ray's API, for comparing ferroray with Ray in one session.

    python python/bench/workloads.py ferroray [filter]
    python python/bench/workloads.py ray [filter]     # in a virtual environment with Ray

Prints one line per row: name, value, unit (tab-separated); a filter runs only the rows
whose name contains it. BENCH_SCALE=k multiplies every row's count by k. Compare the
ratios of runs made one after the other, not absolute figures (docs/benchmarks.md).
"""

import gc
import importlib
import os
import subprocess
import sys
import time

MODULE = sys.argv[1] if len(sys.argv) > 1 else "ferroray"
ONLY = sys.argv[2] if len(sys.argv) > 2 else ""
SCALE = float(os.environ.get("BENCH_SCALE", "1"))

start = time.perf_counter()
ray = importlib.import_module(MODULE)
options = {"num_cpus": 2}
if MODULE == "ray":
    options.update(address="local", include_dashboard=False, log_to_driver=False)
ray.init(**options)
init_seconds = time.perf_counter() - start


def row(name, value, unit):
    print(f"{name}\t{value:.1f}\t{unit}", flush=True)


def timed(name, work, n, unit="per s"):
    """Runs `work(n)` after a warm-up of a tenth of it; the rate of the timed run."""
    if ONLY and ONLY not in name:
        return
    n = max(1, int(n * SCALE))
    work(max(1, n // 10))
    t = time.perf_counter()
    work(n)
    row(name, n / (time.perf_counter() - t), unit)


def tree_rss_mb():
    """Resident memory of this process and every process under it."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True).stdout
    children, rss = {}, {}
    for line in out.splitlines():
        if line.strip():
            pid, ppid, kb = map(int, line.split())
            children.setdefault(ppid, []).append(pid)
            rss[pid] = kb
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / 1024


@ray.remote
def ok():
    return b"ok"


@ray.remote
def numbers(n):
    for i in range(n):
        yield i


@ray.remote
def arrays(n, mb):
    import numpy as np

    for _ in range(n):
        yield np.ones(mb * 1024 * 1024, dtype=np.uint8)


@ray.remote
class Sync:
    def ok(self):
        return b"ok"

    def numbers(self, n):
        for i in range(n):
            yield i


@ray.remote
class Async:
    async def ok(self):
        return b"ok"

    async def numbers(self, n):
        for i in range(n):
            yield i


def consume(gen, n):
    total = sum(ray.get(r) for r in gen)
    assert total == n * (n - 1) // 2


sync_actor = Sync.remote()
async_actor = Async.remote()
ray.get([sync_actor.ok.remote(), async_actor.ok.remote()])


def put_get_large(n):
    import numpy as np

    x = np.ones(100 * 1024 * 1024, dtype=np.uint8)
    for _ in range(n):
        assert ray.get(ray.put(x)).nbytes == x.nbytes


def actor_starts(n):
    for _ in range(n):
        h = Sync.remote()
        ray.get(h.ok.remote())
        ray.kill(h)


row("init seconds", init_seconds, "s")
timed("tasks sync", lambda n: [ray.get(ok.remote()) for _ in range(n)], 1000)
timed("tasks async", lambda n: ray.get([ok.remote() for _ in range(n)]), 5000)
timed("put+get small", lambda n: [ray.get(ray.put(b"x")) for _ in range(n)], 5000)
timed("actor calls sync", lambda n: [ray.get(sync_actor.ok.remote()) for _ in range(n)], 2000)
timed("actor calls async", lambda n: ray.get([sync_actor.ok.remote() for _ in range(n)]), 5000)
timed("generator items (no backpressure)", lambda n: consume(numbers.remote(n), n), 10000, "items per s")
timed(
    "generator items (backpressure 1)",
    lambda n: consume(numbers.options(_generator_backpressure_num_objects=1).remote(n), n),
    3000,
    "items per s",
)
timed("generator tasks start-to-first-item", lambda n: [consume(numbers.remote(1), 1) for _ in range(n)], 500)
timed("async actor calls async", lambda n: ray.get([async_actor.ok.remote() for _ in range(n)]), 5000)
timed("actor creation to first result", actor_starts, 10)
timed("put+get 100 MB numpy", put_get_large, 10, "round trips per s")
timed("actor generator items", lambda n: consume(sync_actor.numbers.remote(n), n), 10000, "items per s")
timed("async actor generator items", lambda n: consume(async_actor.numbers.remote(n), n), 10000, "items per s")
if not ONLY or ONLY in "large generator (8 x 100 MB) throughput":
    t = time.perf_counter()
    total = 0
    for r in arrays.remote(8, 100):
        total += ray.get(r).nbytes
        del r
    row("large generator (8 x 100 MB) throughput", total / (time.perf_counter() - t) / 1e6, "MB per s")
gc.collect()
time.sleep(1)
row("runtime resident memory, idle after work", tree_rss_mb(), "MB")
ray.shutdown()
