"""Actors: ``@ferroray.remote`` on a class (Ray's ``ray.actor``)."""

from __future__ import annotations

import inspect
import pickle
from typing import Any, Dict, Optional

from ferroray import _ferroray
from ferroray._serialization import dumps

# Default num_returns of each method, by class name, for the classes this
# process made actors of (a handle from get_actor or from another process
# finds its class's table here, or calls with num_returns=1 by default).
_METHOD_TABLES: Dict[str, Dict[str, Any]] = {}

_ACTOR_OPTIONS = {
    "name",
    "namespace",
    "lifetime",
    "max_restarts",
    "max_task_retries",
    "max_concurrency",
    "num_cpus",
    "num_gpus",
    "resources",
}
_METHOD_OPTIONS = {"num_returns", "_generator_backpressure_num_objects"}


def method(*, num_returns: Any = None, **unknown: Any) -> Any:
    """``@ferroray.method(num_returns=...)`` on an actor method (as ``ray.method``)."""
    if unknown:
        raise ValueError(f"unknown method options: {', '.join(sorted(unknown))}")

    def decorate(fn: Any) -> Any:
        fn.__ferroray_num_returns__ = num_returns
        return fn

    return decorate


def _pickled_methods(methods: Dict[str, Any]) -> bytes:
    # Plain names and ints or strings: nothing for cloudpickle to do.
    return pickle.dumps(methods, protocol=5)


def _method_table(cls: type) -> Dict[str, Any]:
    table: Dict[str, Any] = {}
    for name, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
        default: Any = 1
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            default = "streaming"
        table[name] = getattr(fn, "__ferroray_num_returns__", None) or default
    return table


def _is_async(cls: type) -> bool:
    return any(
        inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        for _, fn in inspect.getmembers(cls, predicate=inspect.isfunction)
    )


def _check_int(options: Dict[str, Any], key: str, least: int) -> None:
    v = options.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < least):
        raise ValueError(f"{key} must be an int of at least {least}, not {v!r}")


def _check_actor_options(options: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(options) - _ACTOR_OPTIONS
    if unknown:
        raise ValueError(f"unknown actor options: {', '.join(sorted(unknown))}")
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise TypeError(f"name must be a str, not {options['name']!r}")
    if options.get("lifetime") not in (None, "detached", "non_detached"):
        raise ValueError(f'lifetime must be "detached" or None, not {options["lifetime"]!r}')
    _check_int(options, "max_restarts", -1)
    _check_int(options, "max_task_retries", -1)
    _check_int(options, "max_concurrency", 1)
    for key in ("num_cpus", "num_gpus"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValueError(f"{key} must be a non-negative number, not {v!r}")
    res = options.get("resources")
    if res is not None and (not isinstance(res, dict) or not all(isinstance(k, str) for k in res)):
        raise TypeError(f"resources must be a dict of names to amounts, not {res!r}")
    return dict(options)


# The pickled head of an argument list (positional count, keyword names),
# by its shape: calls of one shape share it.
_HEADS: Dict[Any, Any] = {}


def _wire_args(args: Any, kwargs: Dict[str, Any]) -> list:
    from ferroray import ObjectRef

    shape = (len(args), tuple(kwargs)) if kwargs else len(args)
    head = _HEADS.get(shape)
    if head is None:
        head = dumps((len(args), list(kwargs)))
        if len(_HEADS) < 1024:
            _HEADS[shape] = head
    wire: list = [head]
    for a in args:
        wire.append(a if isinstance(a, ObjectRef) else dumps(a))
    for a in kwargs.values():
        wire.append(a if isinstance(a, ObjectRef) else dumps(a))
    return wire


class ActorClass:
    """A class made an actor by ``@ferroray.remote``: ``.remote(...)`` starts one."""

    def __init__(self, cls: type, options: Dict[str, Any]):
        self._cls = cls
        self._options = _check_actor_options(options)
        from ferroray import _Export

        self._export = _Export(cls)
        self._methods = _method_table(cls)
        self._async = _is_async(cls)
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly: use {self.__name__}.remote()")

    def options(self, **options: Any) -> "ActorClass":
        merged = dict(self._options)
        merged.update(options)
        other = ActorClass(self._cls, merged)
        other._export = self._export
        return other

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        from ferroray import _auto_init, _parent

        _auto_init()
        class_id = self._export.id()
        o = self._options
        module = getattr(self._cls, "__module__", "__main__") or "__main__"
        qualname = self._cls.__qualname__
        _METHOD_TABLES[f"{module}.{qualname}"] = self._methods
        max_concurrency = o.get("max_concurrency") or (1000 if self._async else 1)
        core = _ferroray.create_actor(
            class_id,
            module,
            qualname,
            _wire_args(args, kwargs),
            o.get("name"),
            o.get("lifetime") == "detached",
            o.get("max_restarts") or 0,
            o.get("max_task_retries") or 0,
            max_concurrency,
            float(o.get("num_cpus") or 0),
            float(o.get("num_gpus") or 0),
            [(k, float(v)) for k, v in (o.get("resources") or {}).items()],
            self._async,
            _pickled_methods(self._methods),
            _parent(),
        )
        return ActorHandle(core, self._methods)


class ActorHandle:
    """A handle to an actor: ``handle.method.remote(...)``. It can be passed to
    tasks and other actors; the actor ends when the last handle anywhere is
    gone (unless it is detached)."""

    def __init__(self, core: Any, methods: Optional[Dict[str, Any]] = None):
        self._core = core
        if methods is None:
            methods = _METHOD_TABLES.get(core._class_name())
        if methods is None:
            # A handle from get_actor: the table its creator kept with it.
            kept = core._methods()
            methods = pickle.loads(kept) if kept else None
        self._methods = methods

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        methods = self.__dict__.get("_methods")
        if methods is not None and name not in methods:
            raise AttributeError(f"actor {self._core._class_name()} has no method {name!r}")
        default = methods.get(name, 1) if methods is not None else 1
        method = ActorMethod(self._core, name, {"num_returns": default})
        # Found as an attribute from now on (`__getattr__` is not called).
        self.__dict__[name] = method
        return method

    def __reduce__(self) -> Any:
        return (ActorHandle, (self._core, self._methods))

    def __repr__(self) -> str:
        return f"ActorHandle({self._core._class_name()}, {self._core._actor_id()})"


class ActorMethod:
    """One method of an actor: ``.remote(...)`` calls it."""

    def __init__(self, core: Any, name: str, options: Dict[str, Any]):
        self._core = core
        self._name = name
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor method {self._name} cannot be called directly: use .{self._name}.remote()")

    def options(self, **options: Any) -> "ActorMethod":
        unknown = set(options) - _METHOD_OPTIONS
        if unknown:
            raise ValueError(f"unknown method options: {', '.join(sorted(unknown))}")
        merged = dict(self._options)
        merged.update(options)
        return ActorMethod(self._core, self._name, merged)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        num_returns = self._options.get("num_returns", 1)
        bp = self._options.get("_generator_backpressure_num_objects")
        if bp is not None and bp != -1 and num_returns != "streaming":
            raise ValueError('_generator_backpressure_num_objects applies only to num_returns="streaming"')
        from ferroray import _parent

        out = self._core._call(self._name, _wire_args(args, kwargs), num_returns, bp, _parent())
        return out[0] if num_returns == 1 else out


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "method"]
