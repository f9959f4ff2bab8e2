"""The entry of a Python worker process: ``python -m ferroray._worker``.

The node starts this; it connects to the node (the details are in its
environment) and runs the tasks and actor calls it is sent until the node
goes. The extension calls the methods of ``Runner`` (see
``crates/ferroray-python/src/worker.rs`` for the shapes of their answers).
"""

from __future__ import annotations

import inspect
import threading
import traceback
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import cloudpickle

from ferroray import _ferroray
from ferroray._serialization import dumps, loads

if TYPE_CHECKING:
    import asyncio

# asyncio is imported at the first async call, not at start-up: it is a
# third of a worker's start-up time, and most workers never need it.

Outcome = Tuple[Any, ...]


def _class_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _pickle_exception(e: BaseException) -> Optional[bytes]:
    try:
        return cloudpickle.dumps(e)
    except Exception:
        return None


def _error(e: BaseException, where: str, what: str = "remote traceback") -> Outcome:
    tb = traceback.format_exc()
    text = f"{type(e).__name__}: {e}\n\nin {where}, {what}:\n{tb}"
    return ("err", _class_name(type(e)), text, _pickle_exception(e))


class Runner:
    """Runs Python tasks and actor methods for the core."""

    def __init__(self) -> None:
        # Functions and classes unpickled so far, by their pickled bytes:
        # each is unpickled once per process, not per call.
        self._functions: Dict[bytes, Any] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_lock = threading.Lock()

    # -- the parts every call shares

    def _function(self, pickled: bytes) -> Any:
        fn = self._functions.get(pickled)
        if fn is None:
            fn = cloudpickle.loads(pickled)
            self._functions[pickled] = fn
        return fn

    @staticmethod
    def _arguments(args: List[bytes]) -> Tuple[List[Any], Dict[str, Any]]:
        npos, kw_names = loads(args[0])
        decoded = [loads(a) for a in args[1:]]
        return decoded[:npos], dict(zip(kw_names, decoded[npos:]))

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of this process's async actor, started at its first call."""
        with self._loop_lock:
            if self._loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="ferroray-asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def _finish(self, result: Any) -> Any:
        """The value of a call: a coroutine's runs on the actor's event loop."""
        if inspect.iscoroutine(result):
            import asyncio

            return asyncio.run_coroutine_threadsafe(result, self.loop()).result()
        return result

    def _values(self, call: Any, where: str, num_returns: int) -> Outcome:
        try:
            result = self._finish(call())
        except BaseException as e:
            return _error(e, where)
        try:
            if num_returns == 1:
                return ("ok", [dumps(result)])
            values = list(result)
            if len(values) != num_returns:
                raise ValueError(f"returned {len(values)} values, but num_returns is {num_returns}")
            return ("ok", [dumps(v) for v in values])
        except BaseException as e:
            return _error(e, where, "sending its result")

    def _items(self, call: Any, where: str) -> Iterator[Outcome]:
        try:
            items = call()
            it = self._async_items(items) if inspect.isasyncgen(items) else iter(items)
        except BaseException as e:
            yield _error(e, where)
            return
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except BaseException as e:
                yield _error(e, where)
                return
            try:
                data, refs = dumps(item)
            except BaseException as e:
                yield _error(e, where, "sending an item")
                return
            # Not held while the generator makes the next one.
            del item
            yield ("ok", data, refs)

    def _async_items(self, agen: Any) -> Iterator[Any]:
        """An async generator's items, each made on the actor's event loop."""
        import asyncio

        loop = self.loop()
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(agen.__anext__(), loop).result()
            except StopAsyncIteration:
                return

    def _read(self, pickled: Optional[bytes], args: List[bytes], where: str) -> Tuple[Any, List[Any], Dict[str, Any]]:
        fn = self._function(pickled) if pickled is not None else None
        pos, kwargs = self._arguments(args)
        return fn, pos, kwargs

    # -- what the extension calls

    def is_generator(self, pickled: bytes) -> bool:
        fn = self._function(pickled)
        return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    @staticmethod
    def is_generator_method(instance: Any, method: str) -> bool:
        fn = getattr(type(instance), method, None)
        return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    def run(self, pickled: bytes, module: str, qualname: str, args: List[bytes], num_returns: int) -> Outcome:
        where = f"task {module}.{qualname}"
        try:
            fn, pos, kwargs = self._read(pickled, args, where)
        except BaseException as e:
            return _error(e, where, "reading the task")
        return self._values(lambda: fn(*pos, **kwargs), where, num_returns)

    def run_gen(self, pickled: bytes, module: str, qualname: str, args: List[bytes]) -> Iterator[Outcome]:
        where = f"task {module}.{qualname}"
        try:
            fn, pos, kwargs = self._read(pickled, args, where)
        except BaseException as e:
            return iter([_error(e, where, "reading the task")])
        return self._items(lambda: fn(*pos, **kwargs), where)

    def construct(self, pickled: bytes, module: str, qualname: str, args: List[bytes]) -> Outcome:
        where = f"actor {module}.{qualname}"
        try:
            cls, pos, kwargs = self._read(pickled, args, where)
            return ("ok", cls(*pos, **kwargs))
        except BaseException as e:
            return _error(e, f"the constructor of {where}")

    def call(self, instance: Any, method: str, args: List[bytes], num_returns: int) -> Outcome:
        where = f"actor method {type(instance).__qualname__}.{method}"
        try:
            fn = getattr(instance, method)
            _, pos, kwargs = self._read(None, args, where)
        except BaseException as e:
            return _error(e, where, "reading the call")
        return self._values(lambda: fn(*pos, **kwargs), where, num_returns)

    def call_gen(self, instance: Any, method: str, args: List[bytes]) -> Iterator[Outcome]:
        where = f"actor method {type(instance).__qualname__}.{method}"
        try:
            fn = getattr(instance, method)
            _, pos, kwargs = self._read(None, args, where)
        except BaseException as e:
            return iter([_error(e, where, "reading the call")])
        return self._items(lambda: fn(*pos, **kwargs), where)


def main() -> None:
    import os

    if os.environ.get("FERRORAY_AS_RAY"):
        # The driver runs a program written for Ray (`ferroray run`).
        from ferroray.run import install_aliases

        install_aliases()
    _ferroray.worker_main(Runner())


if __name__ == "__main__":
    main()
