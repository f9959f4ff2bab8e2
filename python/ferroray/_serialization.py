"""How values travel: cloudpickle (protocol 5), noting the refs inside them,
with large buffers out of band and in place.

``dumps`` gives the payload and the ``ObjectRef``s the value holds (and the
handles of actors it holds, by their handle objects): ferroray stores the
value with those as its nested refs, so they live as long as it does.

A value with out-of-band buffers (a numpy array, any ``PickleBuffer``) is
laid out as::

    b"FRY\\x01" | u32 buffers | u64 pickle length | (u64 offset, u64 length) per buffer
    | pickle | each buffer at a 64-byte boundary

When it is at least the inline threshold, that layout is written straight
into shared memory reserved for it (each buffer copied once, from where it
is); ``loads`` of a value in shared memory unpickles from a read-only view
of the store, so each buffer is a view too: a numpy array read this way is
read-only and keeps its object pinned while it lives.
"""

from __future__ import annotations

import ctypes
import pickle
import struct
from typing import Any, List, Tuple, Union

import cloudpickle

from ferroray import _ferroray

MAGIC = b"FRY\x01"
_HEAD = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64
# Longer `bytes` go the general way (which may put them in shared memory).
_PLAIN_BYTES = 64 * 1024
# Writable buffers at least this large are copied into shared memory by the
# extension, on several threads (`ferroray_store::copy`); read-only ones
# (no address to be had without the buffer API) by a memoryview.
_PARALLEL_COPY = 8 << 20


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _writable(slot: Any) -> memoryview:
    address, length = slot._address()
    return memoryview((ctypes.c_char * length).from_address(address)).cast("B")


def _readonly(view: Any) -> memoryview:
    """A read-only memoryview of a value in shared memory that keeps ``view``
    (and so the value's pin) alive as long as it, or any view of it, lives."""
    address, length = view._address()
    holder_type = type("StoreBytes", (ctypes.c_char * length,), {})
    holder = holder_type.from_address(address)
    holder.view = view
    return memoryview(holder).cast("B").toreadonly()


# Types the C pickler writes in full, holding no refs and nothing to pickle
# by value: no need for cloudpickle's per-object hook.
_PLAIN = frozenset({bytes, str, int, float, bool, type(None)})


def dumps(value: Any) -> Tuple[Union[bytes, Any], List[Any]]:
    """The value's payload (bytes, or a filled ``StoreSlot``) and the refs inside it."""
    if type(value) in _PLAIN and (type(value) is not bytes or len(value) < _PLAIN_BYTES):
        return pickle.dumps(value, protocol=5), []
    buffers: List[pickle.PickleBuffer] = []
    _ferroray._collect_begin()
    try:
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    finally:
        refs = _ferroray._collect_end()
    if not buffers:
        return data, refs
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:
        # A buffer that is not contiguous: in band after all.
        _ferroray._collect_begin()
        try:
            data = cloudpickle.dumps(value, protocol=5)
        finally:
            refs = _ferroray._collect_end()
        return data, refs
    head = _HEAD.size + _ENTRY.size * len(raws)
    offsets = []
    end = _align(head + len(data))
    for r in raws:
        offsets.append(end)
        end = _align(end + r.nbytes)
    total = max(end, head + len(data))
    header = _HEAD.pack(MAGIC, len(raws), len(data)) + b"".join(
        _ENTRY.pack(o, r.nbytes) for o, r in zip(offsets, raws)
    )
    if total < _ferroray._inline_threshold():
        out = bytearray(total)
        payload: Any = out
    else:
        payload = _ferroray._reserve(total)
        out = _writable(payload)
    out[: len(header)] = header
    out[len(header) : len(header) + len(data)] = data
    for o, r in zip(offsets, raws):
        if r.nbytes >= _PARALLEL_COPY and not isinstance(payload, bytearray) and not r.readonly:
            # Copied without the GIL, on several threads (one core does not
            # drive the memory bandwidth). The ctypes object keeps `r`
            # exported, so its address stays valid for the call.
            source = ctypes.c_char.from_buffer(r)
            payload._write_from(o, ctypes.addressof(source), r.nbytes)
            del source
        else:
            out[o : o + r.nbytes] = r
    if isinstance(payload, bytearray):
        return bytes(payload), refs
    del out
    return payload, refs


def loads(payload: Any) -> Any:
    """The value of a payload ``get`` (or a worker's argument) gave: bytes, a
    ``StoreView`` in place, ``None`` (a generator's completion), or a 1-tuple of
    refs (a dynamic generator's value)."""
    if payload is None:
        return None
    if isinstance(payload, tuple):
        from ferroray import DynamicObjectRefGenerator

        return DynamicObjectRefGenerator(payload[0])
    view = _readonly(payload) if isinstance(payload, _ferroray.StoreView) else memoryview(payload)
    if view[:4] != MAGIC:
        return pickle.loads(view)
    _, n, pickle_len = _HEAD.unpack_from(view, 0)
    entries = [_ENTRY.unpack_from(view, _HEAD.size + i * _ENTRY.size) for i in range(n)]
    start = _HEAD.size + n * _ENTRY.size
    buffers = [view[o : o + length] for o, length in entries]
    return pickle.loads(view[start : start + pickle_len], buffers=buffers)
