"""``ferroray run``: a program written for Ray runs unchanged."""

import os
import subprocess
import sys
import tempfile
import textwrap

RAY_PROGRAM = textwrap.dedent(
    """
    import sys
    import ray
    from ray.exceptions import RayTaskError

    ray.init()

    @ray.remote
    def square(x):
        import ray  # a worker resolves `ray` too
        return x * x, ray.__name__

    @ray.remote
    class Acc:
        def __init__(self):
            self.total = 0
        def add(self, x):
            self.total += x
            return self.total

    values = ray.get([square.remote(i) for i in range(4)])
    acc = Acc.remote()
    for v, _ in values:
        acc.add.remote(v)
    print("squares", [v for v, _ in values], "total", ray.get(acc.add.remote(0)), "args", sys.argv[1:])
    print("worker imports", values[0][1])
    ray.shutdown()
    """
)


def _run(command, script_dir):
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=script_dir)


def test_a_ray_program_runs_unchanged():
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "program.py")
        with open(script, "w") as f:
            f.write(RAY_PROGRAM)
        ferroray_cmd = os.path.join(os.path.dirname(sys.executable), "ferroray")
        for command in ([sys.executable, "-m", "ferroray", "run", script, "a", "b"], [ferroray_cmd, "run", script, "a", "b"]):
            out = _run(command, d)
            assert out.returncode == 0, out.stderr
            assert "squares [0, 1, 4, 9] total 14 args ['a', 'b']" in out.stdout
            assert "worker imports ferroray" in out.stdout


def test_usage_errors():
    out = subprocess.run([sys.executable, "-m", "ferroray"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage" in out.stderr
    out = subprocess.run([sys.executable, "-m", "ferroray", "run", "/no/such/file.py"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no such file" in out.stderr
