"""The `ferroray` command installed with the package manages a cluster:
`python -m ferroray start/status/list/stop`, real daemons joined over TLS on
this machine; Python programs connect to them with `init(address=...)`."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest


@pytest.fixture
def session():
    d = tempfile.mkdtemp(prefix="ferroray-py-cli-")
    os.rmdir(d)  # the command makes it, private
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    env.pop("FERRORAY_TOKEN", None)

    def run(*args, check=True):
        out = subprocess.run(
            [sys.executable, "-m", "ferroray", *args], env=env, capture_output=True, text=True, timeout=60
        )
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    yield run, d
    if os.path.exists(d):
        run("stop", check=False)
    left = os.path.exists(d)
    shutil.rmtree(d, ignore_errors=True)
    assert not left, "stop left the session directory behind"


def test_start_status_list_stop(session):
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    out = run("start", "--address", head, "--num-cpus", "2", "--resources", '{"pinned": 1}').stdout
    pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    status = run("status").stdout
    assert "Nodes: 2 alive, 0 dead" in status
    assert "0.0/3.0 CPU" in status and "0.0/1.0 pinned" in status
    nodes = run("list", "nodes", "--filter", "is_head=false").stdout.splitlines()[1:]
    assert len(nodes) == 1 and str(pid) in nodes[0] and "pinned=1/1" in nodes[0]
    assert run("stop").stdout.count("Stopped") == 2
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert not os.path.exists(d)


def test_errors_are_clear(session):
    run, _ = session
    out = run("status", check=False)
    assert out.returncode == 1 and "no cluster was started" in out.stderr
    out = run("start", "--head", "--port", "0", "--node-ip-address", "10.9.8.7", check=False)
    assert out.returncode == 1 and "cannot listen on 10.9.8.7" in out.stderr
    out = run("list", "bogus", check=False)
    assert out.returncode == 2 and "invalid value" in out.stderr


@contextlib.contextmanager
def _other_machine(head, d, *start_args):
    """A node on another machine (a session directory of its own) joined to
    `head` with session `d`'s token file. Yields the environment of a
    program there (with the cluster's credentials, as on another host), the
    daemon's pid and the directory; stops the daemon after."""
    other = tempfile.mkdtemp(prefix="ferroray-py-machine-")
    os.rmdir(other)
    env_b = dict(os.environ, FERRORAY_SESSION_DIR=other)
    env_b.pop("FERRORAY_TOKEN", None)
    try:
        started = subprocess.run(
            [sys.executable, "-m", "ferroray", "start", "--address", head, "--token-file", os.path.join(d, "token"),
             "--num-cpus", "1", "--heartbeat-ms", "200", *start_args],
            env=env_b, capture_output=True, text=True, timeout=60,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        pid = int(re.search(r"\(pid (\d+)\)", started.stdout).group(1))
        with open(os.path.join(d, "token")) as f:
            token, fingerprint = f.read().split()
        yield dict(env_b, FERRORAY_TOKEN=f"{token}:{fingerprint.removeprefix('sha256:')}"), pid, other
    finally:
        subprocess.run([sys.executable, "-m", "ferroray", "stop"], env=env_b, capture_output=True, timeout=60)
        shutil.rmtree(other, ignore_errors=True)


def _python(code, env, *args):
    """Runs `code` in a fresh interpreter (a program of its own)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


DRIVER = r"""
import os, sys
import numpy as np
import ferroray as ray

ray.init(address=sys.argv[1])

@ray.remote
def where():
    return os.getpid(), os.getppid()

@ray.remote
def total(a):
    return int(a.sum())

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

assert [n["Alive"] for n in ray.nodes()] == [True]
assert ray.cluster_resources()["CPU"] == 2.0
pid, parent = ray.get(where.remote())
a = np.ones(4 << 20, dtype=np.uint8)
c = Counter.remote()
ray.get(c.incr.remote())
print(pid, parent, ray.get(total.remote(ray.put(a))), ray.get(c.incr.remote()), ray.get(ray.put(a)).flags.writeable)
ray.shutdown()
"""


def test_a_python_program_connects_to_the_daemon(session):
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "2").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    daemon = int(re.search(r"pid (\d+)\)", out).group(1))
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    for address in ("auto", head):
        done = _python(DRIVER, env, address)
        assert done.returncode == 0, done.stdout + done.stderr
        pid, parent, total, count, writeable = done.stdout.split()
        assert int(parent) == daemon, "the daemon started the worker"
        assert int(pid) != daemon
        assert (total, count, writeable) == (str(4 << 20), "2", "False")
    # What a node offers is the daemon's to say.
    bad = _python("import ferroray as ray; ray.init(address='auto', num_cpus=3)", env)
    assert bad.returncode != 0 and "the daemon's to set" in bad.stderr
    # A cluster with no node on this machine: Ray's ConnectionError.
    far = _python("import ferroray as ray; ray.init(address='10.1.2.3:6379')", env)
    assert far.returncode != 0 and "ConnectionError: no cluster to connect to: no node of the cluster at 10.1.2.3:6379" in far.stderr
    assert "Nodes: 1 alive" in run("status").stdout
    # Each driver was a job of the cluster's, finished now, with its command line.
    jobs = run("list", "jobs", "--filter", "state=FINISHED").stdout.splitlines()[1:]
    assert len(jobs) == 2 and all(f"{sys.executable} -c" in j for j in jobs), jobs


STAYS = r"""
import sys, time
import ferroray as ray

ray.init(address="auto")

@ray.remote
def shout():
    print("hello from the daemon's worker", flush=True)
    return 1

assert ray.get(shout.remote()) == 1
time.sleep(1)  # its output comes on its own way
print("ready", flush=True)
sys.stdin.readline()
ray.shutdown()
"""

LEAVES = r"""
import os, time
import ferroray as ray

ray.init(address="auto")

@ray.remote
def whisper():
    print("hello from the program that leaves", flush=True)
    return 1

@ray.remote
def linger():
    yield os.getpid()
    time.sleep(300)
    yield 0

assert ray.get(whisper.remote()) == 1
time.sleep(0.5)  # its output comes on its own way
gen = linger.remote()
print(f"pid={ray.get(next(gen))}", flush=True)
os._exit(0)  # no shutdown: the connection just ends
"""


def _started(code, env, *args, cwd=None):
    """Starts `code` in a fresh interpreter that waits on its stdin, and
    reads its output up to its "ready" line: the process and those lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, "the driver ended early: " + "".join(lines)
        lines.append(line)
        if line.strip() == "ready":
            return proc, lines


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_output_reaches_the_driver_and_a_leaving_driver_takes_its_tasks(session):
    import time

    run, d = session
    run("start", "--head", "--port", "0", "--num-cpus", "2")
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    stays, lines = _started(STAYS, env)
    try:
        # Its worker's print, forwarded by the daemon with Ray's prefix.
        assert any(re.match(r"\(shout pid=\d+\) hello from the daemon's worker", l) for l in lines), lines
        # Another program of the same environment shares the job; when it
        # ends without a shutdown, its running task is cancelled (killed),
        # while the first program is still connected.
        leaves = _python(LEAVES, env)
        assert leaves.returncode == 0, leaves.stderr
        pid = int(re.search(r"^pid=(\d+)$", leaves.stdout, re.M).group(1))
        # Each program gets its own tasks' output, as if each were a job.
        assert re.search(r"^\(whisper pid=\d+\) hello from the program that leaves$", leaves.stdout, re.M), (
            leaves.stdout
        )
        deadline = time.monotonic() + 15
        while _alive(pid):
            assert time.monotonic() < deadline, f"task worker {pid} outlived its driver"
            time.sleep(0.05)
        assert stays.poll() is None
    finally:
        stays.stdin.write("\n")
        stays.stdin.flush()
        rest = stays.stdout.read()
        assert stays.wait(timeout=30) == 0
    assert "the program that leaves" not in "".join(lines) + rest, "".join(lines) + rest


ACROSS = r"""
import os, sys
import numpy as np
import ferroray as ray

ray.init(address="auto")
here = ray.get_runtime_context().get_node_id()

@ray.remote(resources={"b": 1})
def where():
    return ray.get_runtime_context().get_node_id()

@ray.remote(resources={"b": 1})
def total(a):
    return int(a.sum())

@ray.remote(resources={"b": 1})
def ones(n):
    return np.ones(n, dtype=np.uint8)

@ray.remote(resources={"b": 1}, num_returns="streaming", _generator_backpressure_num_objects=1)
def count(n):
    for i in range(n):
        yield i

@ray.remote(resources={"b": 1})
def fails():
    raise ValueError("from the other node")

@ray.remote(resources={"b": 1})
def shout():
    print("hello from the other node", flush=True)
    return 1

there = ray.get(where.remote())
assert there != here, (there, here)
a = np.ones(16 << 20, dtype=np.uint8)
assert ray.get(total.remote(a)) == 16 << 20
b = ray.get(ones.remote(8 << 20))
assert b.sum() == 8 << 20 and not b.flags.writeable

# A large result stays on the node that made it: a task reading it goes
# there (no resource of its own asks for it), and reads it in place.
@ray.remote
def sum_where(a):
    return int(a.sum()), ray.get_runtime_context().get_node_id()

assert ray.get(sum_where.remote(ones.remote(8 << 20))) == (8 << 20, there)

# One read by a task only a third node can run: that node reads it from
# the node keeping it, so here it stays listed as on a peer.
import subprocess

@ray.remote(resources={"c": 1})
def sum_on_c(a):
    return int(a.sum()), ray.get_runtime_context().get_node_id()

left_on_b = ones.remote(8 << 20)
ready, _ = ray.wait([left_on_b], timeout=30, fetch_local=False)
assert ready == [left_on_b]
n, on_c = ray.get(sum_on_c.remote(left_on_b))
assert n == 8 << 20 and on_c not in (here, there), (on_c, here, there)
listed = subprocess.run(
    [sys.executable, "-m", "ferroray", "list", "objects", "--filter", f"node_id={here}"], capture_output=True, text=True
)
line = [l for l in listed.stdout.splitlines() if left_on_b.hex() in l]
assert len(line) == 1 and "ON_PEER" in line[0], listed.stdout
assert int(ray.get(left_on_b).sum()) == 8 << 20
assert [ray.get(r) for r in count.remote(20)] == list(range(20))
try:
    ray.get(fails.remote())
    raise AssertionError("no error")
except ValueError as e:
    assert "from the other node" in str(e)
assert ray.get(shout.remote()) == 1

# Refs inside arguments and results cross nodes with their objects.
@ray.remote(resources={"b": 1})
def read_nested(refs):
    return [int(np.asarray(ray.get(r)).sum()) for r in refs]

@ray.remote(resources={"b": 1})
def put_there(n):
    return [ray.put(np.full(1 << 20, i, dtype=np.uint8)) for i in range(n)]

nested = [ray.put(np.ones(4 << 20, dtype=np.uint8)), ray.put(3)]
assert ray.get(read_nested.remote(nested)) == [4 << 20, 3]
made = ray.get(put_there.remote(3))
assert [int(ray.get(r)[0]) for r in made] == [0, 1, 2]
assert ray.get(read_nested.remote(made)) == [0, 1 << 20, 2 << 20]

@ray.remote(resources={"b": 1})
class Where:
    def __init__(self):
        self.calls = 0

    def node(self):
        self.calls += 1
        return ray.get_runtime_context().get_node_id(), self.calls

w = Where.remote()
assert ray.get(w.node.remote()) == (there, 1)
assert ray.get(w.node.remote()) == (there, 2)
ray.kill(w)

# An actor's handle passed to a task on the other node: its calls come back
# to the actor here.
@ray.remote(num_cpus=0)
class Here:
    def __init__(self):
        self.calls = 0

    def node(self):
        self.calls += 1
        return ray.get_runtime_context().get_node_id(), self.calls

@ray.remote(resources={"b": 1})
def call_twice(h):
    ray.get(h.node.remote())
    return ray.get(h.node.remote()), ray.get_runtime_context().get_node_id()

mine = Here.remote()
assert ray.get(call_twice.remote(mine)) == ((here, 2), there)
assert ray.get(mine.node.remote()) == (here, 3)
print("ok", there, flush=True)
import time
time.sleep(1)  # its output comes on its own way
ray.shutdown()
"""


def test_python_tasks_run_on_another_node(session):
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-ms", "200").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    run("start", "--address", head, "--num-cpus", "1", "--resources", '{"b": 1}')
    run("start", "--address", head, "--num-cpus", "1", "--resources", '{"c": 1}')
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    done = _python(ACROSS, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^ok \w+$", done.stdout, re.M), done.stdout
    # The other node's worker's print reaches this driver, with Ray's prefix.
    assert re.search(r"^\(shout pid=\d+\) hello from the other node$", done.stdout, re.M), done.stdout


NODE_DEATHS = r"""
import json, os, signal, sys, time
import numpy as np
import ferroray as ray

ray.init(address="auto")
d = os.environ["FERRORAY_SESSION_DIR"]
pids = {}
for f in os.listdir(os.path.join(d, "nodes")):
    with open(os.path.join(d, "nodes", f)) as fh:
        rec = json.load(fh)
    pids[rec["node_id"]] = rec["pid"]

def dead(node):
    return any(n["NodeID"] == node and not n["Alive"] for n in ray.nodes())

def wait_dead(node):
    deadline = time.time() + 20
    while not dead(node):
        assert time.time() < deadline, f"{node} never declared dead"
        time.sleep(0.05)

@ray.remote(resources={"b": 1})
def put_there(n):
    refs = [ray.put(np.full(1 << 20, i + 1, dtype=np.uint8)) for i in range(n)]
    return ray.get_runtime_context().get_node_id(), refs

@ray.remote(resources={"b": 1}, num_returns="streaming", _generator_backpressure_num_objects=2)
def count(n, mark):
    with open(mark, "w") as f:
        f.write(ray.get_runtime_context().get_node_id())
    for i in range(n):
        time.sleep(0.05)
        yield i

# The node that made objects dies: they came here with the result.
made_on, refs = ray.get(put_there.remote(2))
os.kill(pids[made_on], signal.SIGKILL)
wait_dead(made_on)
assert [int(ray.get(r)[0]) for r in refs] == [1, 2]

# The node running a stream dies: it runs again on another node, and every
# item comes once, in order.
mark = os.path.join(sys.argv[1], "mark")
gen = count.remote(40, mark)
seen = [ray.get(next(gen)) for _ in range(5)]
with open(mark) as f:
    first = f.read()
assert first != made_on
os.kill(pids[first], signal.SIGKILL)
seen += [ray.get(r, timeout=30) for r in gen]
assert seen == list(range(40)), seen
with open(mark) as f:
    second = f.read()
assert second not in (first, made_on), (second, first, made_on)

# A large result lives only on the node that made it until it is read
# (listed as ON_PEER here): that node dies first, and the task that made
# it runs again on another node (lineage).
import subprocess

@ray.remote(resources={"b": 1}, max_retries=1)
def big(mark):
    with open(mark, "a") as f:
        f.write(ray.get_runtime_context().get_node_id() + "\n")
    return np.full(4 << 20, 9, dtype=np.uint8)

def on_peer():
    listed = subprocess.run([sys.executable, "-m", "ferroray", "list", "objects"], capture_output=True, text=True)
    return listed.stdout.count("ON_PEER")

runs = os.path.join(sys.argv[1], "runs")
kept = big.remote(runs)
deadline = time.time() + 20
while on_peer() < 1:
    assert time.time() < deadline, "the result never stayed where it was made"
    time.sleep(0.05)
with open(runs) as f:
    holder = f.read().split()[0]
os.kill(pids[holder], signal.SIGKILL)
a = ray.get(kept, timeout=30)
assert a.shape == (4 << 20,) and int(a[0]) == 9 and int(a[-1]) == 9
with open(runs) as f:
    made = f.read().split()
assert len(made) == 2 and made[0] == holder and made[1] != holder, (made, holder)
print("ok", flush=True)
ray.shutdown()
"""


def test_python_work_survives_the_nodes_that_die(session):
    run, d = session
    out = run(
        "start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-ms", "200", "--node-timeout-ms", "2000"
    ).stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    for _ in range(4):
        run("start", "--address", head, "--num-cpus", "1", "--resources", '{"b": 1}', "--heartbeat-ms", "200")
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    with tempfile.TemporaryDirectory(prefix="ferroray-py-deaths-") as marks:
        done = _python(NODE_DEATHS, env, marks)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout.split(), done.stdout



NAMED_OWNER = r"""
import ferroray as ray

ray.init(address="auto")

@ray.remote
class Counter:
    def __init__(self, start):
        self.n = start

    def incr(self, by=1):
        self.n += by
        return self.n

    def node(self):
        return ray.get_runtime_context().get_node_id()

c = Counter.options(name="shared", lifetime="detached").remote(10)
print("made", ray.get(c.incr.remote()), ray.get(c.node.remote()), flush=True)
ray.shutdown()
"""

NAMED_USER = r"""
import time
import ferroray as ray

ray.init(address="auto")
c = ray.get_actor("shared")
here = ray.get_runtime_context().get_node_id()
print("called", ray.get(c.incr.remote(5)), ray.get(c.node.remote()), here, flush=True)

@ray.remote
class Other:
    def f(self):
        return 1

try:
    Other.options(name="shared").remote()
    print("taken twice", flush=True)
except ValueError as e:
    print("refused", "already exists" in str(e), flush=True)

ray.kill(c)
deadline = time.time() + 10
while True:
    try:
        ray.get_actor("shared")
    except ValueError:
        break
    assert time.time() < deadline, "the name outlived its actor"
    time.sleep(0.1)
mine = Other.options(name="shared").remote()
print("reused", ray.get(mine.f.remote()), flush=True)
ray.shutdown()
"""


def test_a_named_actor_is_found_and_called_from_another_node(session):
    """Two programs on two machines (session directories): one makes a
    detached named actor on its node and leaves; the other, on the head's
    node, finds it by name, calls it there, cannot take its name, kills it,
    and then can."""
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-ms", "200").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    with _other_machine(head, d) as (env_b, _, _):
        made = _python(NAMED_OWNER, env_b)
        assert made.returncode == 0, made.stdout + made.stderr
        _, count, node_b = re.search(r"^made .*$", made.stdout, re.M).group(0).split()
        assert count == "11"
        used = _python(NAMED_USER, dict(os.environ, FERRORAY_SESSION_DIR=d))
        assert used.returncode == 0, used.stdout + used.stderr
        _, count, ran_on, here = re.search(r"^called .*$", used.stdout, re.M).group(0).split()
        assert (count, ran_on) == ("16", node_b) and here != node_b, used.stdout
        assert "refused True" in used.stdout and "reused 1" in used.stdout, used.stdout


DIES = r"""
import os, sys, time
import ferroray as ray

ray.init(address="auto")

@ray.remote(resources={"b": 1}, num_cpus=0)
class Holder:
    def pid(self):
        return os.getpid()

@ray.remote(resources={"b": 1}, num_cpus=0)
def forever(mark):
    with open(mark, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)

@ray.remote(resources={"b": 1}, num_cpus=0)
def where():
    return ray.get_runtime_context().get_node_id()

h = Holder.remote()
print("actor", ray.get(h.pid.remote()), ray.get(where.remote()), flush=True)
mark = os.path.join(sys.argv[1], "task")
f = forever.remote(mark)
deadline = time.time() + 20
while not os.path.exists(mark):  # running on the other node
    assert time.time() < deadline
    time.sleep(0.02)
os._exit(0)  # no shutdown: the process is gone
"""


def test_a_driver_that_dies_takes_its_actors_and_tasks_on_other_nodes(session):
    """Ray: a driver's non-detached actors and its tasks end with it,
    cluster-wide."""
    import time

    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-ms", "200").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    # Room for the actor (which holds its `b` for its life) and the tasks.
    run("start", "--address", head, "--num-cpus", "1", "--resources", '{"b": 3}', "--heartbeat-ms", "200")
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    with tempfile.TemporaryDirectory(prefix="ferroray-py-dies-") as marks:
        done = _python(DIES, env, marks)
        assert done.returncode == 0, done.stdout + done.stderr
        with open(os.path.join(marks, "task")) as f:
            task_pid = int(f.read())
    _, actor_pid, there = re.search(r"^actor .*$", done.stdout, re.M).group(0).split()
    # Both processes ran on the other node, and end with their driver.
    deadline = time.monotonic() + 15
    while _alive(int(actor_pid)) or _alive(task_pid):
        assert time.monotonic() < deadline, "the driver's actor or task outlived it"
        time.sleep(0.05)
    # No node lists it alive any more (nor anything else of the program's).
    actors = run("list", "actors").stdout
    assert "ALIVE" not in actors and "STARTING" not in actors, actors
    assert there != re.search(r"^(\S+) ", run("list", "nodes", "--filter", "is_head=true").stdout.splitlines()[1]).group(1)


TWO_DRIVERS = r"""
import sys, time
import ferroray as ray

ray.init(address="auto")
me = sys.argv[1]

@ray.remote(resources={"b": 1})
def shout(who):
    print(f"printed for {who}", flush=True)
    return 1

assert ray.get(shout.remote(me)) == 1
time.sleep(1)  # its line comes on its own way
print("ready", flush=True)
if me == "first":
    sys.stdin.readline()
    assert ray.get(shout.remote(me)) == 1
    time.sleep(1)
ray.shutdown()
"""


def test_output_from_another_node_reaches_only_its_driver(session):
    """Two drivers of one program on the head's node, each with a task on the
    other node that prints: each driver gets its own task's line only."""
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-ms", "200").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    run("start", "--address", head, "--num-cpus", "1", "--resources", '{"b": 1}', "--heartbeat-ms", "200")
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    first, lines = _started(TWO_DRIVERS, env, "first")
    try:
        second = _python(TWO_DRIVERS, env, "second")
        assert second.returncode == 0, second.stdout + second.stderr
        assert re.search(r"^\(shout pid=\d+\) printed for second$", second.stdout, re.M), second.stdout
        assert "printed for first" not in second.stdout, second.stdout
    finally:
        first.stdin.write("\n")
        first.stdin.flush()
        rest = first.stdout.read()
        assert first.wait(timeout=30) == 0
    text = "".join(lines) + rest
    assert len(re.findall(r"^\(shout pid=\d+\) printed for first$", text, re.M)) == 2, text
    assert "printed for second" not in text, text



ONCE_PER_CLUSTER = r"""
import subprocess, sys, time
import ferroray as ray

ray.init(address="auto")
there = sys.argv[1:]

@ray.remote
def power(x, n):
    return x ** n

# Exported with its first call, which runs here; the head has it soon after.
assert ray.get(power.remote(3, 2)) == 9
time.sleep(1)
# Each other node takes it from the head's table, not from this node.
for r in there:
    assert ray.get(power.options(resources={r: 1}).remote(4, 2)) == 16
    assert ray.get([power.options(resources={r: 1}).remote(i, 3) for i in range(20)]) == [i ** 3 for i in range(20)]
status = subprocess.run([sys.executable, "-m", "ferroray", "status"], capture_output=True, text=True, timeout=60)
print(status.stdout, status.stderr, flush=True)
ray.shutdown()
"""


def test_a_function_is_exported_once_per_cluster(session):
    """A driver's function goes to the head's function table once; the nodes
    that run it fetch it from there (their logs say so, once each), the head's
    own node included, and `status` counts the functions. Two programs on two
    machines (session directories): one on the head's node, one on node B."""
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1", "--resources", '{"h": 1}',
              "--heartbeat-ms", "200").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    head_pid = int(re.search(r"pid (\d+)\)", out).group(1))
    out = run("start", "--address", head, "--num-cpus", "1", "--resources", '{"c": 1}', "--heartbeat-ms", "200").stdout
    c_pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    with _other_machine(head, d, "--resources", '{"b": 1}') as (env_b, b_pid, other):
        first = _python(ONCE_PER_CLUSTER, dict(os.environ, FERRORAY_SESSION_DIR=d), "b", "c")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Functions: 1 exported" in first.stdout, first.stdout
        second = _python(ONCE_PER_CLUSTER, env_b, "h", "c")
        assert second.returncode == 0, second.stdout + second.stderr
        # The first program's function is kept a while after it ended.
        assert "Functions: 2 exported" in second.stdout, second.stdout
        took = {}
        for name, log in [("head", os.path.join(d, "logs", f"{head_pid}.log")),
                          ("b", os.path.join(other, "logs", f"{b_pid}.log")),
                          ("c", os.path.join(d, "logs", f"{c_pid}.log"))]:
            with open(log) as f:
                took[name] = len(re.findall(r"took function \S+ from the cluster's function table", f.read()))
        assert took == {"head": 1, "b": 1, "c": 2}, took


PROGRAM = r"""
import os, sys
import ferroray as ray

ray.init(address="auto")

@ray.remote
def where():
    return ray.get_runtime_context().get_node_id(), os.getpid(), os.environ["PYTHONPATH"].split(os.pathsep)[0]

here = ray.get(where.remote())
there = ray.get(where.options(resources={"b": 1}).remote())
print("ran", os.getcwd(), here[0], here[1], here[2], there[0], there[1], there[2], flush=True)
if sys.argv[1:] == ["wait"]:
    print("ready", flush=True)
    sys.stdin.readline()
    # Its workers are still its own after the other program came and went.
    again = ray.get(where.options(resources={"b": 1}).remote())
    print("again", again[1], again[2], flush=True)
ray.shutdown()
"""


def test_two_python_programs_share_the_nodes_in_workers_of_their_own(session):
    """Two Python programs (drivers of other search paths: their workers
    differ) run on the same two nodes at once, each in workers of its own
    on both; before pools per program the second was refused."""
    run, d = session
    out = run("start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-ms", "200").stdout
    head = re.search(r"cluster at (\S+) ", out).group(1)
    run("start", "--address", head, "--num-cpus", "1", "--resources", '{"b": 1}', "--heartbeat-ms", "200")
    env = dict(os.environ, FERRORAY_SESSION_DIR=d)
    with tempfile.TemporaryDirectory(prefix="ferroray-py-prog1-") as one, \
            tempfile.TemporaryDirectory(prefix="ferroray-py-prog2-") as two:
        first, lines = _started(PROGRAM, env, "wait", cwd=one)
        try:
            second = subprocess.run(
                [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60, cwd=two
            )
            assert second.returncode == 0, second.stdout + second.stderr
        finally:
            first.stdin.write("\n")
            first.stdin.flush()
            rest = first.stdout.read()
            assert first.wait(timeout=30) == 0, rest
        ran1 = next(l for l in lines if l.startswith("ran ")).split()
        ran2 = next(l for l in second.stdout.splitlines() if l.startswith("ran ")).split()
        # (cwd, node here, pid, path, node there, pid, path)
        assert ran1[1] == one and ran2[1] == two
        assert ran1[2] == ran2[2] and ran1[5] == ran2[5] and ran1[2] != ran1[5], (ran1, ran2)
        assert ran1[4] == one and ran1[7] == one, ran1
        assert ran2[4] == two and ran2[7] == two, ran2
        assert ran1[3] != ran2[3] and ran1[6] != ran2[6], "each program's own workers"
        again = next(l for l in rest.splitlines() if l.startswith("again ")).split()
        assert again[2] == one, again
