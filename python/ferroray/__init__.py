"""ferroray: Ray Core's API on a Rust core.

``import ferroray as ray`` and use it as Ray: ``init``, ``remote``, ``get``,
``put``, ``wait``. Tasks run in Python worker processes that the embedded
node starts; values travel pickled (protocol 5) through its shared-memory
object store.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cloudpickle

# Read by the extension's allocator (mimalloc) as the module loads: arena
# memory is committed as it is used, so each process (driver and workers)
# holds what it uses, not whole arenas.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

from ferroray import _ferroray, exceptions
from ferroray._ferroray import ObjectRef, ObjectRefGenerator
from ferroray._serialization import dumps as _dumps
from ferroray._serialization import loads as _loads
from ferroray.actor import ActorClass, ActorHandle, method

__all__ = [
    "init",
    "shutdown",
    "is_initialized",
    "remote",
    "get",
    "put",
    "wait",
    "cancel",
    "kill",
    "get_actor",
    "get_runtime_context",
    "nodes",
    "cluster_resources",
    "available_resources",
    "method",
    "ObjectRef",
    "ObjectRefGenerator",
    "DynamicObjectRefGenerator",
    "exceptions",
]


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: its items' refs, in order."""

    def __init__(self, refs: List[ObjectRef]):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"

_init_lock = threading.Lock()


def _worker_env() -> List[Tuple[str, str]]:
    # The workers import what the driver can: its module search path.
    paths = [p if p else os.getcwd() for p in sys.path]
    env = [("PYTHONPATH", os.pathsep.join(paths))]
    if "OMP_NUM_THREADS" not in os.environ:
        # As Ray does: a worker runs one task on one CPU, so numerical
        # libraries (OpenBLAS under numpy) start no threads of their own
        # that would spin beside it. Set it in the driver to choose.
        env.append(("OMP_NUM_THREADS", "1"))
    return env


def init(
    address: Optional[str] = None,
    *,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[float] = None,
    resources: Optional[Dict[str, float]] = None,
    object_store_memory: Optional[int] = None,
    ignore_reinit_error: bool = False,
    **kwargs: Any,
) -> None:
    """Starts the embedded cluster (as ``ray.init()``), or with an address
    (``"auto"``: the cluster started on this machine; ``"HOST:PORT"``: the
    head's address) connects to the node daemon of a cluster on this machine
    (``ferroray start``). No address, or ``"local"``, starts a cluster of
    this process's own."""
    if address is not None and not isinstance(address, str):
        raise TypeError(f"init() address must be a string, not {type(address).__name__}")
    connect = None if address in (None, "local") else address
    unknown = set(kwargs) - {"include_dashboard", "logging_level", "log_to_driver", "namespace"}
    if unknown:
        raise TypeError(f"init() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    with _init_lock:
        if _ferroray.is_initialized():
            if ignore_reinit_error:
                return
            raise RuntimeError("ferroray is already initialized: call shutdown() first, or pass ignore_reinit_error=True")
        try:
            _ferroray.init(
                sys.executable,
                ["-m", "ferroray._worker"],
                _worker_env(),
                num_cpus=None if num_cpus is None else float(num_cpus),
                num_gpus=None if num_gpus is None else float(num_gpus),
                resources=[(str(k), float(v)) for k, v in (resources or {}).items()],
                object_store_memory=object_store_memory,
                address=connect,
            )
        except exceptions.RayError as e:
            if connect is None:
                raise
            # As Ray: a cluster that cannot be reached is a ConnectionError.
            raise ConnectionError(str(e)) from e


def _auto_init() -> None:
    if not _ferroray.is_initialized():
        with _init_lock:
            if not _ferroray.is_initialized():
                _ferroray.init(sys.executable, ["-m", "ferroray._worker"], _worker_env())


def nodes() -> List[Dict[str, Any]]:
    """The cluster's nodes (as ``ray.nodes()``): this process's own node when
    it runs one, else every node the head knows, dead ones included."""
    _auto_init()
    out = []
    for node_id, address, alive, is_head, resources, _available in _ferroray._nodes():
        out.append(
            {
                "NodeID": node_id,
                "Alive": alive,
                "alive": alive,
                "NodeManagerAddress": address,
                "NodeManagerHostname": address,
                "Resources": dict(resources),
                "IsHead": is_head,
            }
        )
    return out


def _summed(which: int) -> Dict[str, float]:
    total: Dict[str, float] = {}
    for node in _ferroray._nodes():
        if node[2]:
            for name, amount in node[which].items():
                total[name] = total.get(name, 0.0) + amount
    return total


def cluster_resources() -> Dict[str, float]:
    """What the alive nodes offer, summed (as ``ray.cluster_resources()``)."""
    _auto_init()
    return _summed(4)


def available_resources() -> Dict[str, float]:
    """What of it no task or actor holds now (as ``ray.available_resources()``;
    a daemon's figures are as of its last heartbeat)."""
    _auto_init()
    return _summed(5)


def shutdown() -> None:
    """Stops the embedded cluster; ``init`` may be called again."""
    _ferroray.shutdown()


def is_initialized() -> bool:
    return _ferroray.is_initialized()


def put(value: Any) -> ObjectRef:
    """Stores ``value`` in the object store; gives its ref."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed: pass the ref itself")
    _auto_init()
    data, refs = _dumps(value)
    return _ferroray.put(data, refs)


def get(object_refs: Union[ObjectRef, Sequence[ObjectRef]], *, timeout: Optional[float] = None) -> Any:
    """The value of a ref, or the values of a list of refs (as ``ray.get``)."""
    import pickle

    single = isinstance(object_refs, ObjectRef)
    if not single and not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"get() takes an ObjectRef or a list of them, not {type(object_refs).__name__}")
    refs = [object_refs] if single else list(object_refs)
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"get() takes an ObjectRef or a list of them, not {type(r).__name__}")
    raw = _ferroray.get(refs, timeout)
    values = [_loads(b) for b in raw]
    return values[0] if single else values


def cancel(target: Union[ObjectRef, ObjectRefGenerator], *, force: bool = False, recursive: bool = True) -> None:
    """Cancels the task that makes ``target`` (as ``ray.cancel``): a queued task never
    runs; a running one is interrupted at its next yield or wait (``force=True``
    kills its worker). Its refs then raise ``TaskCancelledError``."""
    _ferroray.cancel(target, force, recursive)


def wait(
    object_refs: Sequence[Union[ObjectRef, ObjectRefGenerator]],
    *,
    num_returns: int = 1,
    timeout: Optional[float] = None,
    fetch_local: bool = True,
) -> Tuple[List[ObjectRef], List[ObjectRef]]:
    """Waits until ``num_returns`` refs are ready (as ``ray.wait``): (ready, not ready).
    With ``fetch_local=False`` a ref is ready once its object is made on any node, and
    its value is not brought here."""
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() takes a list of ObjectRefs, not {type(object_refs).__name__}")
    refs = list(object_refs)
    if not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive int, not {num_returns!r}")
    ready, rest = _ferroray.wait(refs, num_returns, timeout, bool(fetch_local))
    return [refs[i] for i in ready], [refs[i] for i in rest]


_TASK_OPTIONS = {
    "num_returns",
    "num_cpus",
    "num_gpus",
    "resources",
    "max_retries",
    "retry_exceptions",
    "name",
    "_generator_backpressure_num_objects",
    "enable_task_events",
}


def _check_options(options: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(options) - _TASK_OPTIONS
    if unknown:
        raise ValueError(f"unknown task options: {', '.join(sorted(unknown))}")
    checked = dict(options)
    n = checked.get("num_returns", 1)
    if n not in ("streaming", "dynamic") and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f'num_returns must be a positive int, "streaming" or "dynamic", not {n!r}')
    bp = checked.get("_generator_backpressure_num_objects")
    if bp is not None and (not isinstance(bp, int) or isinstance(bp, bool) or bp == 0 or bp < -1):
        raise ValueError(f"_generator_backpressure_num_objects must be -1 (no limit) or at least 1, not {bp!r}")
    for key in ("num_cpus", "num_gpus"):
        v = checked.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValueError(f"{key} must be a non-negative number, not {v!r}")
    res = checked.get("resources")
    if res is not None and (not isinstance(res, dict) or not all(isinstance(k, str) for k in res)):
        raise TypeError(f"resources must be a dict of names to amounts, not {res!r}")
    events = checked.get("enable_task_events")
    if events is not None and not isinstance(events, bool):
        raise TypeError(f"enable_task_events must be a bool, not {events!r}")
    retries = checked.get("max_retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < -1):
        raise ValueError(f"max_retries must be an int, -1 (forever) or at least 0, not {retries!r}")
    rex = checked.get("retry_exceptions")
    if rex is not None and not isinstance(rex, bool):
        if not isinstance(rex, (list, tuple)) or not all(isinstance(c, type) and issubclass(c, BaseException) for c in rex):
            raise TypeError("retry_exceptions must be a bool or a list of exception classes")
    return checked


class _Export:
    """A function or class exported once per connection to a cluster: its
    pickled bytes go to the node once, and calls name it by id. Pickled
    with what holds it (a remote function used inside a task), it exports
    again in the process that unpickles it."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._pickled: Optional[bytes] = None
        self._done: Optional[Tuple[int, int]] = None  # (session, id)

    def id(self) -> int:
        session = _ferroray._session()
        done = self._done
        if done is None or done[0] != session:
            if self._pickled is None:
                self._pickled = cloudpickle.dumps(self._target, protocol=5)
            done = (session, _ferroray._export_function(self._pickled))
            self._done = done
        return done[1]

    def __getstate__(self) -> Dict[str, Any]:
        return {"_target": self._target, "_pickled": self._pickled, "_done": None}


class RemoteFunction:
    """A function made remote by ``@ferroray.remote``: call ``.remote(...)``."""

    def __init__(self, function: Callable[..., Any], options: Dict[str, Any]):
        import inspect

        self._function = function
        self._options = _check_options(options)
        # A generator function streams its items by default, as in Ray.
        self._default_returns: Any = "streaming" if inspect.isgeneratorfunction(function) else 1
        self._export = _Export(function)
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__doc__ = function.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"remote function {self.__name__} cannot be called directly: use {self.__name__}.remote()")

    def options(self, **options: Any) -> "RemoteFunction":
        """A copy with these options changed, for one call or more."""
        merged = dict(self._options)
        merged.update(options)
        other = RemoteFunction(self._function, merged)
        other._export = self._export
        return other

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        _auto_init()
        function_id = self._export.id()
        opts = self._options
        num_returns = opts.get("num_returns", self._default_returns)
        backpressure = opts.get("_generator_backpressure_num_objects")
        if backpressure is not None and backpressure != -1 and num_returns != "streaming":
            raise ValueError("_generator_backpressure_num_objects applies only to num_returns=\"streaming\"")
        from ferroray.actor import _wire_args

        wire_args = _wire_args(args, kwargs)
        rex = opts.get("retry_exceptions", False)
        if not isinstance(rex, bool):
            rex = [c.__qualname__ if c.__module__ == "builtins" else f"{c.__module__}.{c.__qualname__}" for c in rex]
        refs = _ferroray.submit(
            function_id,
            getattr(self._function, "__module__", "__main__") or "__main__",
            getattr(self._function, "__qualname__", self.__name__),
            wire_args,
            num_returns,
            float(opts.get("num_cpus", 1) if opts.get("num_cpus") is not None else 1),
            float(opts.get("num_gpus") or 0),
            [(k, float(v)) for k, v in (opts.get("resources") or {}).items()],
            int(opts.get("max_retries", 3) if opts.get("max_retries") is not None else 3),
            rex,
            backpressure,
            bool(opts.get("enable_task_events", True)),
            _parent(),
        )
        # One ref, a list of them, or (streaming, dynamic) what submit made.
        return refs[0] if num_returns == 1 else refs


def remote(*args: Any, **options: Any) -> Any:
    """``@remote`` or ``@remote(num_cpus=..., ...)`` on a function."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("remote() takes a function, or only keyword options")

    def decorator(target: Any) -> Any:
        return _make_remote(target, options)

    return decorator


# The task of an async actor's call, in that call's asyncio context (the
# core's own record of the running task is per thread, and an async actor's
# calls share one thread).
# (hex for get_runtime_context, int for the parent of the calls it makes)
_ASYNC_TASK: "contextvars.ContextVar[Optional[Tuple[str, int]]]" = contextvars.ContextVar(
    "ferroray_task", default=None
)


def _parent() -> Optional[int]:
    """The async actor call this code runs in (as an int), if any: the
    parent of the calls it makes, so that a recursive cancel reaches them."""
    task = _ASYNC_TASK.get()
    return task[1] if task is not None else None


class RuntimeContext:
    """What ``get_runtime_context()`` gives (as Ray's): ids of the job, node, task and actor."""

    def __init__(self, ids: Dict[str, Optional[str]]):
        self._ids = ids

    def get_job_id(self) -> str:
        return self._ids["job_id"] or ""

    def get_node_id(self) -> str:
        return self._ids["node_id"] or ""

    def get_task_id(self) -> Optional[str]:
        """The running task's id; ``None`` in the driver."""
        return self._ids["task_id"]

    def get_actor_id(self) -> Optional[str]:
        """The id of the actor this process runs; ``None`` elsewhere."""
        return self._ids["actor_id"]

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> Optional[str]:
        return self.get_task_id()

    @property
    def actor_id(self) -> Optional[str]:
        return self.get_actor_id()


def get_runtime_context() -> RuntimeContext:
    """The ids of the current job, node, task and actor (as ``ray.get_runtime_context()``)."""
    _auto_init()
    ids = _ferroray._runtime_context()
    task = _ASYNC_TASK.get()
    if task is not None:
        ids["task_id"] = task[0]
    return RuntimeContext(ids)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Ends ``actor`` now (as ``ray.kill``): its running calls fail; with
    ``no_restart=False`` it may restart within its ``max_restarts``."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an ActorHandle, not {type(actor).__name__}")
    actor._core._kill(no_restart)


def get_actor(name: str, namespace: Optional[str] = None) -> ActorHandle:
    """The live actor named ``name`` (as ``ray.get_actor``); ``ValueError`` if there is none."""
    if not isinstance(name, str):
        raise TypeError(f"get_actor() takes a name, not {type(name).__name__}")
    _auto_init()
    try:
        return ActorHandle(_ferroray.get_actor(name))
    except exceptions.RayError as e:
        raise ValueError(f"no actor named {name!r}: {e}") from None


def _make_remote(target: Any, options: Dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"remote() takes a function, not {type(target).__name__}")
    return RemoteFunction(target, options)
