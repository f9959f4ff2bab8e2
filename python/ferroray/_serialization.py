"""How values travel: cloudpickle (protocol 5), noting the refs inside them.

``dumps`` gives the bytes and the ``ObjectRef``s the value holds (and the
handles of actors it holds, by their handle objects): ferroray stores the
value with those as its nested refs, so they live as long as it does.
"""

from __future__ import annotations

import pickle
from typing import Any, List, Tuple

import cloudpickle

from ferroray import _ferroray


def dumps(value: Any) -> Tuple[bytes, List[Any]]:
    """The pickled value and the refs inside it."""
    _ferroray._collect_begin()
    try:
        data = cloudpickle.dumps(value, protocol=5)
    finally:
        refs = _ferroray._collect_end()
    return data, refs


def loads(data: bytes) -> Any:
    return pickle.loads(data)
