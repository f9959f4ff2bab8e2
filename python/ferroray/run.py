"""The ``ferroray`` command. ``run`` is here; ``start``, ``stop``, ``status``
and ``list`` are the Rust side's (``_ferroray._cluster_main``), the same as the
workspace's ``ferroray`` binary.

Runs a program written for Ray with ``import ray`` unchanged, on ferroray.

``ferroray run script.py [args]`` (or ``python -m ferroray run ...``) makes
``ray`` (and ``ray.exceptions``, ``ray.actor``, ``ray._raylet``) resolve to
ferroray's modules, then runs the script as ``__main__``, with its own
arguments and its directory first on the module path, as ``python script.py``
would.

Its limits are ferroray's: what the program uses of Ray beyond ferroray's API
(``ray.data``, ``ray.serve``, ``ray.tune``, a cluster address, a runtime
environment, placement groups, ...) fails to import or raises. Worker
processes import ``ray`` the same way (the alias travels in their
environment), so a function that does ``import ray`` inside works too.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import List

# The modules a program may import as ray's, each standing for ferroray's.
_ALIASES = {
    "ray": "ferroray",
    "ray.exceptions": "ferroray.exceptions",
    "ray.actor": "ferroray.actor",
    "ray._raylet": "ferroray._raylet",
}

# Set in a worker's environment so that its own imports of `ray` resolve too.
ALIAS_ENV = "FERRORAY_AS_RAY"


def install_aliases() -> None:
    """Makes ``import ray`` (and its submodules above) give ferroray's modules."""
    import importlib

    for alias, real in _ALIASES.items():
        sys.modules[alias] = importlib.import_module(real)
    os.environ[ALIAS_ENV] = "1"


USAGE = "usage: ferroray run SCRIPT [ARGS...]"

# The subcommands the Rust side runs (the same command as the `ferroray`
# binary of the Rust workspace).
_CLUSTER_COMMANDS = {"start", "stop", "status", "list", "timeline", "help", "-h", "--help", "-V", "--version"}


def main(argv: List[str]) -> int:
    if argv and argv[0] in _CLUSTER_COMMANDS:
        from ferroray import _ferroray

        return _ferroray._cluster_main(argv, [sys.executable, "-m", "ferroray"])
    if len(argv) < 2 or argv[0] != "run":
        print(USAGE, file=sys.stderr)
        print("       ferroray start|stop|status|list ... (ferroray --help)", file=sys.stderr)
        return 2
    script = argv[1]
    if not os.path.isfile(script):
        print(f"ferroray run: no such file: {script}", file=sys.stderr)
        return 2
    install_aliases()
    sys.argv = [script] + argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


def cli() -> None:
    """The ``ferroray`` command's entry point."""
    sys.exit(main(sys.argv[1:]))
