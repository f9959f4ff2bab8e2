"""The entry of a Python worker process: ``python -m ferroray._worker``.

The node starts this; it connects to the node (the details are in its
environment) and runs the tasks it is sent until the node goes.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Dict, Iterator, List, Tuple

import cloudpickle

from ferroray import _ferroray

# Functions unpickled so far, by their pickled bytes: each is unpickled once
# per worker process, not per call.
_functions: Dict[bytes, Any] = {}


def _function(pickled: bytes) -> Any:
    fn = _functions.get(pickled)
    if fn is None:
        fn = cloudpickle.loads(pickled)
        _functions[pickled] = fn
    return fn


def _pickle_exception(e: BaseException) -> Any:
    try:
        return cloudpickle.dumps(e)
    except Exception:
        return None


def _read_call(pickled: bytes, args: List[bytes]) -> Tuple[Any, List[Any], Dict[str, Any]]:
    fn = _function(pickled)
    header, values = args[0], args[1:]
    npos, kw_names = pickle.loads(header)
    decoded = [pickle.loads(v) for v in values]
    return fn, decoded[:npos], dict(zip(kw_names, decoded[npos:]))


def run_gen(pickled: bytes, module: str, qualname: str, args: List[bytes]) -> Iterator[Tuple[Any, ...]]:
    """Runs one generator task: ``("ok", pickled item)`` per item, then ``("err", ...)`` if it raised."""
    try:
        fn, pos, kwargs = _read_call(pickled, args)
    except BaseException as e:
        text = f"{module}.{qualname}: cannot read the task: {type(e).__name__}: {e}"
        yield ("err", type(e).__qualname__, text, _pickle_exception(e))
        return
    try:
        items = iter(fn(*pos, **kwargs))
    except BaseException as e:
        yield _task_error(e, module, qualname)
        return
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except BaseException as e:
            yield _task_error(e, module, qualname)
            return
        try:
            data = cloudpickle.dumps(item, protocol=5)
        except BaseException as e:
            text = f"{module}.{qualname}: cannot send an item: {type(e).__name__}: {e}"
            yield ("err", _class_name(type(e)), text, _pickle_exception(e))
            return
        yield ("ok", data)


def _task_error(e: BaseException, module: str, qualname: str) -> Tuple[Any, ...]:
    tb = traceback.format_exc()
    text = f"{type(e).__name__}: {e}\n\nin task {module}.{qualname}, remote traceback:\n{tb}"
    return ("err", _class_name(type(e)), text, _pickle_exception(e))


def run(pickled: bytes, module: str, qualname: str, args: List[bytes], num_returns: int) -> Tuple[Any, ...]:
    """Runs one task: ``("ok", [pickled result, ...])`` or ``("err", class, text, pickled exception)``."""
    try:
        fn, pos, kwargs = _read_call(pickled, args)
    except BaseException as e:  # the arguments or the function do not unpickle
        text = f"{module}.{qualname}: cannot read the task: {type(e).__name__}: {e}"
        return ("err", type(e).__qualname__, text, _pickle_exception(e))
    try:
        result = fn(*pos, **kwargs)
    except BaseException as e:
        return _task_error(e, module, qualname)
    try:
        if num_returns == 1:
            return ("ok", [cloudpickle.dumps(result, protocol=5)])
        values = list(result)
        if len(values) != num_returns:
            raise ValueError(f"the task returned {len(values)} values, but num_returns is {num_returns}")
        return ("ok", [cloudpickle.dumps(v, protocol=5) for v in values])
    except BaseException as e:
        text = f"{module}.{qualname}: cannot send its result: {type(e).__name__}: {e}"
        return ("err", _class_name(type(e)), text, _pickle_exception(e))


def _class_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def main() -> None:
    _ferroray.worker_main(run, run_gen)


if __name__ == "__main__":
    main()
