"""Type stubs of the extension module (crates/ferroray-python)."""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

class CoreError(Exception):
    """(kind, message, exception class name or None, pickled exception or None)."""

class ObjectRef:
    def hex(self) -> str: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def _is_ready(self) -> bool: ...

def init(
    python: str,
    worker_args: Sequence[str],
    worker_env: Sequence[Tuple[str, str]] = ...,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[float] = None,
    resources: Sequence[Tuple[str, float]] = ...,
    object_store_memory: Optional[int] = None,
) -> None: ...
def shutdown() -> None: ...
def is_initialized() -> bool: ...
def put(value: bytes) -> ObjectRef: ...
def get(refs: Sequence[ObjectRef], timeout: Optional[float] = None) -> List[Optional[bytes]]: ...
def wait(refs: Sequence[ObjectRef], num_returns: int, timeout: Optional[float] = None) -> Tuple[List[int], List[int]]: ...
def submit(
    pickled: bytes,
    module: str,
    qualname: str,
    args: Sequence[Union[bytes, ObjectRef]],
    num_returns: int,
    num_cpus: float,
    num_gpus: float,
    resources: Sequence[Tuple[str, float]],
    max_retries: int,
    retry_exceptions: Union[bool, Sequence[str]],
) -> List[ObjectRef]: ...
def worker_main(runner: Callable[[bytes, str, str, List[bytes], int], Tuple[Any, ...]]) -> None: ...
