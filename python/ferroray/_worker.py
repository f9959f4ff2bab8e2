"""The entry of a Python worker process: ``python -m ferroray._worker``.

The node starts this; it connects to the node (the details are in its
environment) and runs the tasks it is sent until the node goes.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Dict, List, Tuple

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


def run(pickled: bytes, module: str, qualname: str, args: List[bytes], num_returns: int) -> Tuple[Any, ...]:
    """Runs one task: ``("ok", [pickled result, ...])`` or ``("err", class, text, pickled exception)``."""
    try:
        fn = _function(pickled)
        header, values = args[0], args[1:]
        npos, kw_names = pickle.loads(header)
        decoded = [pickle.loads(v) for v in values]
        pos = decoded[:npos]
        kwargs = dict(zip(kw_names, decoded[npos:]))
    except BaseException as e:  # the arguments or the function do not unpickle
        text = f"{module}.{qualname}: cannot read the task: {type(e).__name__}: {e}"
        return ("err", type(e).__qualname__, text, _pickle_exception(e))
    try:
        result = fn(*pos, **kwargs)
    except BaseException as e:
        tb = traceback.format_exc()
        text = f"{type(e).__name__}: {e}\n\nin task {module}.{qualname}, remote traceback:\n{tb}"
        return ("err", _class_name(type(e)), text, _pickle_exception(e))
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
    _ferroray.worker_main(run)


if __name__ == "__main__":
    main()
