"""Generators reduce a task's heap memory: the same values returned as a list,
then yielded one at a time, with the worker's peak heap memory for each.

    python generators_memory.py [number of 100 MB values, default 5]

The worker's heap (anonymous resident memory: numpy arrays live there; the
shared-memory store does not count) is sampled every 10 ms while each task runs.
"""

import os
import sys
import threading
import time

import ferroray as ray
import numpy as np

ray.init(num_cpus=1)


@ray.remote
def large_values(num_returns):
    return [
        np.random.randint(np.iinfo(np.int8).max, size=(100_000_000, 1), dtype=np.int8)
        for _ in range(num_returns)
    ]


@ray.remote
def large_values_generator(num_returns):
    for i in range(num_returns):
        yield np.random.randint(np.iinfo(np.int8).max, size=(100_000_000, 1), dtype=np.int8)
        print(f"yielded return value {i}")


@ray.remote
def worker_pid():
    return os.getpid()


def heap_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return 0


def peak_heap_mb(pid, refs):
    """The worker's largest heap while the task making `refs` runs."""
    peak, done = [heap_mb(pid)], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], heap_mb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    ray.wait(refs, num_returns=len(refs))
    done.set()
    sampler.join()
    return peak[0]


num_returns = int(sys.argv[1]) if len(sys.argv) > 1 else 5
# One CPU: one worker runs both tasks, one after the other.
pid = ray.get(worker_pid.remote())

print("Using normal functions...")
refs = large_values.options(num_returns=num_returns).remote(num_returns)
list_peak = peak_heap_mb(pid, refs)
del refs

print("Using generators...")
refs = large_values_generator.options(num_returns=num_returns).remote(num_returns)
generator_peak = peak_heap_mb(pid, refs)
del refs

assert ray.get(worker_pid.remote()) == pid
print(f"Peak worker heap for {num_returns} values of 100 MB: "
      f"list {list_peak} MB, generator {generator_peak} MB")
