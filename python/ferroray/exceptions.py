"""Ray's exception classes (``ray.exceptions``), raised by ferroray."""

from __future__ import annotations

from typing import Optional


class RayError(Exception):
    """The base of every error ferroray raises."""


class RayTaskError(RayError):
    """A task raised an exception.

    In the caller it is raised as an instance of a class that derives from
    both this class and the task's own exception class, so that
    ``except ValueError:`` catches a remote ``ValueError``. ``cause`` is the
    original exception (when it could be pickled).
    """

    def __init__(self, function_name: str = "", traceback_str: str = "", cause: Optional[BaseException] = None,
                 pid: Optional[int] = None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        super().__init__(function_name, traceback_str)

    def __str__(self) -> str:
        return self.traceback_str

    def as_instanceof_cause(self) -> "RayTaskError":
        """This error as an instance of both ``RayTaskError`` and the cause's class."""
        cause = self.cause
        if cause is None or isinstance(cause, RayTaskError):
            return self
        cls = type(cause)
        try:
            dual = type(f"RayTaskError({cls.__name__})", (RayTaskError, cls), {"__module__": cls.__module__})
            err = BaseException.__new__(dual)
            err.args = cause.args
            err.function_name = self.function_name
            err.traceback_str = self.traceback_str
            err.cause = cause
            err.pid = self.pid
            return err
        except TypeError:
            # A class that cannot be combined (a layout conflict): plain.
            return self


class TaskCancelledError(RayError):
    """The task was cancelled before it produced the object."""


class WorkerCrashedError(RayError):
    """The worker running the task died, with no retries left."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` or ``wait`` ran out of time."""


class ObjectLostError(RayError):
    """The object is lost (freed, or its owner is gone)."""


class RayActorError(RayError):
    """An actor cannot run the call."""


class ActorDiedError(RayActorError):
    """The actor is dead."""


_SIMPLE = {
    "GetTimeout": GetTimeoutError,
    "TaskCancelled": TaskCancelledError,
    "WorkerCrashed": WorkerCrashedError,
    "ObjectLost": ObjectLostError,
    "ActorDied": ActorDiedError,
}


def _from_core(err: BaseException) -> BaseException:
    """The Ray exception for a ``CoreError`` of the extension module."""
    import pickle

    kind, message, type_name, value = err.args
    if kind == "Task":
        cause = None
        if value is not None:
            try:
                cause = pickle.loads(value)
            except Exception:  # an exception class the caller cannot import
                cause = None
        if isinstance(cause, RayTaskError):
            return cause
        task_err = RayTaskError(type_name or "", message, cause)
        return task_err.as_instanceof_cause()
    if kind in ("InvalidOption",):
        return ValueError(message)
    if kind == "NoCluster":
        return ConnectionError(message)
    cls = _SIMPLE.get(kind, RayError)
    return cls(message)


__all__ = [
    "RayError",
    "RayTaskError",
    "TaskCancelledError",
    "WorkerCrashedError",
    "GetTimeoutError",
    "ObjectLostError",
    "RayActorError",
    "ActorDiedError",
]
