"""The `ferroray` command installed with the package manages a cluster:
`python -m ferroray start/status/list/stop`, real daemons on loopback."""

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
    out = run("start", "--head", "--node-ip-address", "10.9.8.7", check=False)
    assert out.returncode == 1 and "not a loopback address" in out.stderr
    out = run("list", "actors", check=False)
    assert out.returncode == 2 and "invalid value" in out.stderr
