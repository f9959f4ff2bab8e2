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


class _Unloadable:
    """A function whose bytes did not unpickle here: each call raises why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Runner:
    """Runs Python tasks and actor methods for the core."""

    def __init__(self) -> None:
        # Functions and classes unpickled so far (or why they could not be),
        # by key: an exported function's id, or the bytes of one sent
        # inline. The bytes of an exported one come once.
        self._functions: Dict[Any, Any] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_lock = threading.Lock()

    # -- the parts every call shares

    def _function(self, key: Any, pickled: Optional[bytes]) -> Any:
        fn = self._functions.get(key)
        if fn is None:
            if pickled is None:
                raise RuntimeError(f"function {key!r} was never sent to this worker")
            try:
                fn = cloudpickle.loads(pickled)
            except BaseException as e:
                fn = _Unloadable(e)
            self._functions[key] = fn
        if isinstance(fn, _Unloadable):
            raise fn.error
        return fn

    @staticmethod
    def _arguments(args: List[bytes]) -> Tuple[List[Any], Dict[str, Any]]:
        npos, kw_names = loads(args[0])
        if len(args) == 1:
            return [], {}
        decoded = [loads(a) for a in args[1:]]
        if not kw_names:
            return decoded, {}
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
        return _pack(result, where, num_returns)

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

    def _read(self, key: Any, pickled: Optional[bytes], args: List[bytes]) -> Tuple[Any, List[Any], Dict[str, Any]]:
        fn = self._function(key, pickled)
        pos, kwargs = self._arguments(args)
        return fn, pos, kwargs

    # -- what the extension calls

    def is_generator(self, key: Any, pickled: Optional[bytes]) -> bool:
        fn = self._function(key, pickled)
        return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    @staticmethod
    def is_generator_method(instance: Any, method: str) -> bool:
        fn = getattr(type(instance), method, None)
        return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    def run(
        self, key: Any, pickled: Optional[bytes], module: str, qualname: str, args: List[bytes], num_returns: int
    ) -> Outcome:
        where = f"task {module}.{qualname}"
        try:
            fn, pos, kwargs = self._read(key, pickled, args)
        except BaseException as e:
            return _error(e, where, "reading the task")
        return self._values(lambda: fn(*pos, **kwargs), where, num_returns)

    def run_gen(
        self, key: Any, pickled: Optional[bytes], module: str, qualname: str, args: List[bytes]
    ) -> Iterator[Outcome]:
        where = f"task {module}.{qualname}"
        try:
            fn, pos, kwargs = self._read(key, pickled, args)
        except BaseException as e:
            return iter([_error(e, where, "reading the task")])
        return self._items(lambda: fn(*pos, **kwargs), where)

    def serve_async(self, instance: Any, calls: Any) -> None:
        """Runs the async actor ``instance``'s calls on this thread's own event
        loop, for the rest of the process's life (see ``AsyncServer``)."""
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._loop_lock:
            self._loop = loop
        server = AsyncServer(instance, calls, loop)
        loop.add_reader(calls.fileno(), server.wake)
        server.wake()
        loop.run_forever()
        raise RuntimeError("the event loop stopped")

    def construct(self, key: Any, pickled: Optional[bytes], module: str, qualname: str, args: List[bytes]) -> Outcome:
        where = f"actor {module}.{qualname}"
        try:
            cls, pos, kwargs = self._read(key, pickled, args)
            return ("ok", cls(*pos, **kwargs))
        except BaseException as e:
            return _error(e, f"the constructor of {where}")

    def call(self, instance: Any, method: str, args: List[bytes], num_returns: int) -> Outcome:
        # The hot path of an actor call: nothing is made for an error that
        # does not happen.
        try:
            fn = getattr(instance, method)
            pos, kwargs = self._arguments(args)
        except BaseException as e:
            return _error(e, _method_name(instance, method), "reading the call")
        try:
            result = fn(*pos, **kwargs)
            if inspect.iscoroutine(result):
                result = self._finish(result)
        except BaseException as e:
            return _error(e, _method_name(instance, method))
        if num_returns == 1:
            try:
                return ("ok", [dumps(result)])
            except BaseException as e:
                return _error(e, _method_name(instance, method), "sending its result")
        return _pack(result, _method_name(instance, method), num_returns)

    def call_gen(self, instance: Any, method: str, args: List[bytes]) -> Iterator[Outcome]:
        where = f"actor method {type(instance).__qualname__}.{method}"
        try:
            fn = getattr(instance, method)
            pos, kwargs = self._arguments(args)
        except BaseException as e:
            return iter([_error(e, where, "reading the call")])
        return self._items(lambda: fn(*pos, **kwargs), where)


class AsyncServer:
    """Runs an async actor's calls on this process's asyncio event loop.

    The core hands the calls over in batches (``AsyncCalls``, in
    ``crates/ferroray-core/src/worker/foreign_async.rs``): the loop watches
    ``calls.fileno()``; when it turns readable, ``wake`` takes the new calls
    (each becomes an asyncio task), the cancels (``Task.cancel``) and the
    generators that may go on after waiting for room. Each call ends with
    ``calls.finish``, which reports it and frees its slot.
    """

    def __init__(self, instance: Any, calls: Any, loop: "asyncio.AbstractEventLoop") -> None:
        self._instance = instance
        self._calls = calls
        self._loop = loop
        # Running calls by token, and the futures of generators waiting
        # for room.
        self._tasks: Dict[int, "asyncio.Task[None]"] = {}
        self._resume: Dict[int, "asyncio.Future[bool]"] = {}

    def wake(self) -> None:
        started, cancelled, resumed = self._calls.take()
        for token, task, method, args, returns in started:
            self._tasks[token] = self._loop.create_task(self._run(token, task, method, args, returns))
        for token in cancelled:
            task = self._tasks.get(token)
            if task is not None:
                task.cancel()
        for token, go_on in resumed:
            fut = self._resume.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(go_on)

    async def _run(self, token: int, task: Tuple[str, int], method: str, args: List[Any], returns: int) -> None:
        import asyncio

        import ferroray

        ferroray._ASYNC_TASK.set(task)
        where = f"actor method {type(self._instance).__qualname__}.{method}"
        try:
            outcome = await self._outcome(token, method, args, returns, where)
        except asyncio.CancelledError:
            outcome = ("cancelled",)
        finally:
            self._tasks.pop(token, None)
            self._resume.pop(token, None)
        self._calls.finish(token, outcome)

    async def _outcome(self, token: int, method: str, args: List[Any], returns: int, where: str) -> Outcome:
        import asyncio

        try:
            fn = getattr(self._instance, method)
            pos, kwargs = Runner._arguments(args)
        except BaseException as e:
            return _error(e, where, "reading the call")
        try:
            result = fn(*pos, **kwargs)
            if returns == -1 or inspect.isgenerator(result) or inspect.isasyncgen(result):
                return await self._items(token, result, where)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            return _error(e, where)
        return _pack(result, where, returns)

    async def _items(self, token: int, items: Any, where: str) -> Outcome:
        """Gives each item to the core; waits when it says the owner has no room."""
        import asyncio

        agen = inspect.isasyncgen(items)
        try:
            it = items if agen else iter(items)
        except BaseException as e:
            return _error(e, where)
        try:
            while True:
                try:
                    item = await it.__anext__() if agen else next(it)
                except (StopIteration, StopAsyncIteration):
                    return ("ok", [])
                except asyncio.CancelledError:
                    raise
                except BaseException as e:
                    return _error(e, where)
                try:
                    value = dumps(item)
                except BaseException as e:
                    return _error(e, where, "sending an item")
                # Not held while the generator makes the next one.
                del item
                try:
                    wait = self._calls.item(token, value)
                except BaseException:
                    return ("stopped",)
                if wait:
                    fut = self._loop.create_future()
                    self._resume[token] = fut
                    if not await fut:
                        return ("stopped",)
        finally:
            if agen:
                await it.aclose()
            elif inspect.isgenerator(it):
                it.close()


def _method_name(instance: Any, method: str) -> str:
    return f"actor method {type(instance).__qualname__}.{method}"


def _pack(result: Any, where: str, num_returns: int) -> Outcome:
    """A call's result as the core takes it: ``num_returns`` pickled values."""
    try:
        if num_returns == 1:
            return ("ok", [dumps(result)])
        values = list(result)
        if len(values) != num_returns:
            raise ValueError(f"returned {len(values)} values, but num_returns is {num_returns}")
        return ("ok", [dumps(v) for v in values])
    except BaseException as e:
        return _error(e, where, "sending its result")


def main() -> None:
    import os

    if os.environ.get("FERRORAY_AS_RAY"):
        # The driver runs a program written for Ray (`ferroray run`).
        from ferroray.run import install_aliases

        install_aliases()
    _ferroray.worker_main(Runner())


if __name__ == "__main__":
    main()
