"""The example programs under python/examples run, and print what they should.

They run at once (each starts its own cluster; they mostly sleep), each under a
time limit; a line's time is when the driver printed it.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
LIMIT = 600  # seconds, for the slowest example (Monte Carlo: 100 s of CPU) on a loaded machine


class Run:
    def __init__(self, name):
        self.name = name
        self.lines = []  # (seconds since start, line)
        self.start = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", os.path.join(EXAMPLES, name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=EXAMPLES,
        )
        self.err_lines = []
        self.readers = [
            threading.Thread(target=self._read_out),
            threading.Thread(target=lambda: self.err_lines.extend(self.proc.stderr)),
        ]
        for t in self.readers:
            t.start()

    def _read_out(self):
        for line in self.proc.stdout:
            self.lines.append((time.time() - self.start, line.rstrip("\n")))

    def finish(self, fails=False):
        try:
            self.proc.wait(timeout=max(1, LIMIT - (time.time() - self.start)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.name} did not finish within {LIMIT} s")
        self.took = time.time() - self.start
        for t in self.readers:
            t.join(timeout=10)
        self.err = "".join(self.err_lines)
        if fails:
            assert self.proc.returncode != 0, f"{self.name} was to fail"
        else:
            assert self.proc.returncode == 0, f"{self.name} failed:\n{self.err}"
        return [line for _, line in self.lines]


@pytest.fixture(scope="module")
def runs():
    started = {name: Run(name) for name in sorted(os.listdir(EXAMPLES)) if name.endswith(".py")}
    yield started
    for r in started.values():
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_every_example_is_tested(runs):
    tested = {name[len("test_") :] + ".py" for name in globals() if name.startswith(("test_generators", "test_tasks", "test_monte", "test_dynamic"))}
    assert set(runs) == tested


def test_generators_basic(runs):
    r = runs["generators_basic.py"]
    assert r.finish() == ["0", "1", "2", "3", "4"]
    # Streamed: the first item came long before the task's end (five 5 s sleeps).
    first = r.lines[0][0]
    assert first < r.took - 10, r.lines


def test_generators_next(runs):
    assert runs["generators_next.py"].finish() == ["2", "3", "4"]


def test_generators_errors(runs):
    out = runs["generators_errors.py"].finish()
    # The error's text is the remote traceback, as in Ray.
    assert out[0].startswith("Exception is raised when i == 1 as expected ")
    assert "ValueError" in "\n".join(out) and "remote traceback" in "\n".join(out)


def test_generators_actors(runs):
    assert runs["generators_actors.py"].finish() == ["0", "1", "2", "3", "4"] * 3


def test_generators_asyncio(runs):
    assert runs["generators_asyncio.py"].finish() == ["0", "1", "2", "3", "4"]


def test_generators_gc(runs):
    assert runs["generators_gc.py"].finish() == []


def test_generators_asyncio_gather(runs):
    # Two generators at once, interleaved: each item twice, in order.
    assert runs["generators_asyncio_gather.py"].finish() == [str(i) for i in range(5) for _ in range(2)]


def test_generators_wait(runs):
    out = runs["generators_wait.py"].finish()
    assert out[:3] == ["timeout 0, nothing is ready.", "[]", "Wait for 5 seconds. The next item is ready."]
    assert out[3] == "Wait for 0 seconds. The next item is not ready."


def test_generators_wait_mixed(runs):
    assert runs["generators_wait_mixed.py"].finish() == []


def test_tasks_remote_functions(runs):
    assert runs["tasks_remote_functions.py"].finish() == []


def test_tasks_resources(runs):
    # More CPUs and GPUs than the node has: the call is infeasible (its ref
    # would say so), and the program, which never reads it, ends.
    assert runs["tasks_resources.py"].finish() == []


def test_tasks_object_refs(runs):
    assert runs["tasks_object_refs.py"].finish() == []


def test_tasks_wait(runs):
    r = runs["tasks_wait.py"]
    assert r.finish() == []
    # One of the two 10 s tasks was waited for, not both one after the other.
    assert r.took < 60


def test_tasks_multiple_returns(runs):
    assert runs["tasks_multiple_returns.py"].finish() == []


def test_tasks_generator(runs):
    assert runs["tasks_generator.py"].finish() == ["0", "1", "2", "3", "4"]


def test_tasks_cancel(runs):
    assert runs["tasks_cancel.py"].finish() == ["Object reference was cancelled."]


def test_tasks_quick_sort(runs):
    assert runs["tasks_quick_sort.py"].finish() == []


def test_monte_carlo_pi(runs):
    out = runs["monte_carlo_pi.py"].finish()
    assert out[-1].startswith("Estimated value of π is: 3.1")
    progress = [int(line.split()[1].rstrip("%")) for line in out[:-1]]
    assert progress == sorted(progress) and progress[-1] == 100


def test_dynamic_generators(runs):
    out = runs["dynamic_generators.py"].finish()
    assert out[0].startswith("ObjectRef(") and out[1].startswith("DynamicObjectRefGenerator(")
    words = out[2].split()
    size, blocks = int(words[4]), int(words[6])
    assert out[2] == f"Split array of size {size} into {blocks} blocks of size 1000 each."
    assert blocks == -(-size // 1000)


def test_dynamic_generators_as_arguments(runs):
    out = runs["dynamic_generators_as_arguments.py"].finish()
    # Printed in the worker, forwarded with the task's name and pid.
    assert len(out) == 2 and all(line.startswith("(get_size pid=") for line in out)
    assert all("DynamicObjectRefGenerator(" in line for line in out)


def test_dynamic_generators_errors(runs):
    r = runs["dynamic_generators_errors.py"]
    out = "\n".join(r.finish(fails=True))
    # The values yielded before the error stay readable; the refs after them
    # (and the last ref of the dynamic call) hold the error, twice printed.
    assert out.count("Exception: error") >= 2
    # The example's last part shows a bug Ray documents (a generator that fails
    # after yielding all its values passes as a success, its error only
    # logged): ferroray fails every ref of that call, so the program ends here.
    assert "NumReturnsMismatch: failed after yielding all 2 values" in r.err


def test_generators_memory(runs):
    out = runs["generators_memory.py"].finish()
    assert out[:2] == ["Using normal functions...", "Using generators..."]
    yielded = [line for line in out if "yielded return value" in line]
    assert [line.split(") ", 1)[1] for line in yielded] == [f"yielded return value {i}" for i in range(5)]
    assert all(line.startswith("(large_values_generator pid=") for line in yielded)
    words = out[-1].replace(",", "").split()
    list_peak, generator_peak = int(words[-5]), int(words[-2])
    # Five 100 MB values at once, against about one.
    assert list_peak >= 450 and generator_peak <= list_peak / 3, out[-1]
