"""The workloads of `multinode` (src/bin/multinode.rs) on Ray, with Ray's own
multi-node setup on one machine: a head started with `ray start --head
--num-cpus 1`, a second node with `ray start --address ... --num-cpus K
--resources '{"b": K}'` and a third with `--num-cpus 1 --resources '{"c": 1}'`
(for the row read there), a driver connected with `ray.init(address="auto")`,
and `ray stop` at the end (also on errors). Same sizes, same rows, same
names as the Rust binary, whose `--ray FILE` reads the JSON this writes.

    python ray_multinode.py                  # the table
    python ray_multinode.py --json ray.json  # also write JSON

Needs Ray (2.60 for the recorded figures) and numpy in the interpreter
running it; `ray` is taken from the same environment's `bin`.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import ray


@ray.remote
def echo(x):
    return x


@ray.remote
def length(a):
    return len(a)


@ray.remote
def make(n):
    return np.full(n, 3, dtype=np.uint8)


@ray.remote
def small_items(n):
    for i in range(n):
        yield i


@ray.remote
def where_am_i():
    return ray.get_runtime_context().get_node_id()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Seconds of pause before each timed row (as `multinode` does).
SETTLE_S = 1.0


def progress(msg):
    print(f"[ray_multinode] {msg}", file=sys.stderr, flush=True)


def ray_cli(args):
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    out = subprocess.run([exe, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ray {args}: {out.stdout}\n{out.stderr}")
    return out.stdout


def measure(a, rows):
    b = {"b": 1}
    here = ray.get_runtime_context().get_node_id()
    deadline = time.time() + 60
    while ray.cluster_resources().get("b", 0) < 1 or ray.cluster_resources().get("c", 0) < 1:
        if time.time() > deadline:
            raise RuntimeError("the other nodes never joined")
        time.sleep(0.05)
    there = ray.get(where_am_i.options(resources=b).remote())
    if here == there:
        raise RuntimeError("the pinned task ran on the driver's node")
    progress(f"driver on {here}, pinned tasks on {there}")

    ray.get([echo.options(resources=b).remote(i) for i in range(200)])
    for r in small_items.options(resources=b).remote(10):
        ray.get(r)

    nbytes = a.transfer_mib << 20
    # The first 1 GiB each way lands in pages never written: timed once here,
    # apart from the rows (as `multinode` does).
    big = ray.put(np.ones(nbytes, dtype=np.uint8))
    time.sleep(SETTLE_S)
    t = time.perf_counter()
    assert ray.get(length.options(resources=b).remote(big)) == nbytes
    first = {"argument": nbytes / (time.perf_counter() - t) / 1e9}
    del big
    time.sleep(SETTLE_S)
    t = time.perf_counter()
    made = ray.get(make.options(resources=b).remote(nbytes))
    first["result"] = nbytes / (time.perf_counter() - t) / 1e9
    assert len(made) == nbytes
    del made
    progress(f"first transfers: argument {first['argument']:.3f}, result {first['result']:.3f} GB/s")

    # Each timed row starts after a pause, so that what the row before left
    # behind (1 GiB values freed, pages given back) is not timed in it.
    settle = lambda: time.sleep(SETTLE_S)
    for trial in range(a.repeats):
        settle()
        t = time.perf_counter()
        refs = [echo.options(resources=b).remote(i) for i in range(a.tasks)]
        got = ray.get(refs)
        d = time.perf_counter() - t
        assert len(got) == a.tasks
        rows["tasks across nodes"].append(a.tasks / d)

        settle()
        rt = []
        for i in range(a.round_trips):
            t = time.perf_counter()
            assert ray.get(echo.options(resources=b).remote(i)) == i
            rt.append((time.perf_counter() - t) * 1000)
        rows["remote task round trip"].append(statistics.median(rt))

        # A fresh object each trial, so that no node has it already.
        big = ray.put(np.ones(nbytes, dtype=np.uint8))
        settle()
        t = time.perf_counter()
        assert ray.get(length.options(resources=b).remote(big)) == nbytes
        rows["transfer: argument to the other node"].append(nbytes / (time.perf_counter() - t) / 1e9)
        del big

        settle()
        t = time.perf_counter()
        made = ray.get(make.options(resources=b).remote(nbytes))
        d = time.perf_counter() - t
        assert len(made) == nbytes
        del made
        rows["transfer: result from the other node"].append(nbytes / d / 1e9)

        settle()
        t = time.perf_counter()
        n = 0
        for r in small_items.options(resources=b).remote(a.items):
            assert ray.get(r) == n
            n += 1
        d = time.perf_counter() - t
        assert n == a.items
        rows["generator items from the other node"].append(n / d)

        # Made on the second node and waited for without fetching, untimed;
        # the third node's store warmed by a read of the same size first.
        def made_there():
            made = make.options(resources=b).remote(nbytes)
            ready, _ = ray.wait([made], fetch_local=False)
            assert ready == [made]
            return made

        warm = made_there()
        assert ray.get(length.options(resources={"c": 1}).remote(warm)) == nbytes
        del warm
        made = made_there()
        settle()
        t = time.perf_counter()
        assert ray.get(length.options(resources={"c": 1}).remote(made)) == nbytes
        rows["transfer: result read on a third node"].append(nbytes / (time.perf_counter() - t) / 1e9)
        del made
        progress(f"trial {trial + 1} of {a.repeats} done")

    local = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        made = ray.get(make.remote(nbytes))
        local.append(nbytes / (time.perf_counter() - t) / 1e9)
        del made
    return statistics.median(local), first


UNITS = {
    "tasks across nodes": ("tasks/s", True),
    "remote task round trip": ("ms", False),
    "transfer: argument to the other node": ("GB/s", True),
    "transfer: result from the other node": ("GB/s", True),
    "generator items from the other node": ("items/s", True),
    "transfer: result read on a third node": ("GB/s", True),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--round-trips", type=int, default=200)
    p.add_argument("--transfer-mib", type=int, default=1024)
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--node-cpus", type=int, default=os.cpu_count())
    a = p.parse_args()

    # Ray's default on a machine without a token file (`ray start` turns token
    # authentication on when it finds one in ~/.ray, and then the second
    # node's `ray start` is refused); set RAY_AUTH_MODE to choose otherwise.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="raymn-")
    port = free_port()
    store = str(3 << 30)
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    rows = {name: [] for name in UNITS}
    try:
        progress(f"starting a head (1 CPU), a node ({a.node_cpus} CPUs, b={a.node_cpus}, 3 GiB store) and a third")
        ray_cli(["start", "--head", "--port", str(port), "--num-cpus", "1", "--object-store-memory", store,
                 "--temp-dir", temp, "--include-dashboard", "false", "--disable-usage-stats"])
        ray_cli(["start", "--address", f"127.0.0.1:{port}", "--num-cpus", str(a.node_cpus),
                 "--resources", json.dumps({"b": a.node_cpus}), "--object-store-memory", store,
                 "--disable-usage-stats"])
        ray_cli(["start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                 "--resources", json.dumps({"c": 1}), "--object-store-memory", store,
                 "--disable-usage-stats"])
        ray.init(address="auto", logging_level="error")
        local, first = measure(a, rows)
    finally:
        ray.shutdown()
        try:
            ray_cli(["stop", "--force"])
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])

    out = {
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        "node_cpus": a.node_cpus,
        "load_before": load_before,
        "load_after": load_after,
        "local_make_gb_per_s": local,
        "first_transfer_gb_per_s": first,
        "rows": [
            {"name": n, "unit": UNITS[n][0], "higher_is_better": UNITS[n][1],
             "value": statistics.median(t), "trials": t}
            for n, t in rows.items()
        ],
    }
    print("row\tvalue\tunit\ttrials")
    for r in out["rows"]:
        print(f"{r['name']}\t{r['value']:.3f}\t{r['unit']}\t" + " ".join(f"{t:.3f}" for t in r["trials"]))
    print(f"(the first {a.transfer_mib} MiB argument and result, into stores never written, before the trials: "
          f"{first['argument']:.3f} and {first['result']:.3f} GB/s)")
    print(f"(a {a.transfer_mib} MiB result made on the driver's own node: {local:.3f} GB/s)")
    print(f"(Ray {ray.__version__}; load average before {load_before}, after {load_after}; GB = 10^9 bytes)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
