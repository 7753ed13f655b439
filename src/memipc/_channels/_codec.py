"""Encodings carried inside one message: pickled objects and numpy arrays.

Objects use pickle protocol 5 with out-of-band buffers: the pickle stream and
each buffer are copied once, straight into the loaned ring record (never
joined into an intermediate bytes object first).  Layout of a payload:

    offset  size        field
    0       4           magic b"MPK5"
    4       4           buffer count n
    8       8           pickle stream length
    16      8 * n       buffer lengths
    ...                 pickle stream, then each buffer, every part starting
                        at a multiple of 32 bytes from the payload start

Arrays carry dtype and shape ahead of the data:

    0       4           magic b"MARR"
    4       4           dtype description length d
    8       4           number of dimensions k
    12      4           zero
    16      8 * k       shape
    ...                 dtype description (UTF-8, repr of numpy's descr)
    ...                 data, at a multiple of 32 bytes from the payload start

Payloads come from shared memory: lengths and counts are checked against the
payload size before any slice is taken (CorruptRegionError otherwise), and
the dtype text is parsed with ast.literal_eval, never eval.
"""

from __future__ import annotations

import ast
import pickle
import struct
from collections.abc import Sequence
from typing import Any

from .._errors import CorruptRegionError

OBJECT_MAGIC = b"MPK5"
ARRAY_MAGIC = b"MARR"
ALIGN = 32
_OBJECT_HEAD = struct.Struct("<4sIQ")
_ARRAY_HEAD = struct.Struct("<4sIII")
MAX_BUFFERS = 1 << 16
MAX_DIMENSIONS = 64


def _align(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def encode_object(obj: object) -> tuple[bytes, list[memoryview], int, list[int]]:
    """Pickle ``obj``; return (stream, buffers, total payload size, part offsets)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    offset = _align(_OBJECT_HEAD.size + 8 * len(raws))
    offsets = [offset]
    offset = _align(offset + len(stream))
    for raw in raws:
        offsets.append(offset)
        offset = _align(offset + raw.nbytes)
    return stream, raws, max(offset, 1), offsets


def write_object(
    target: memoryview, stream: bytes, raws: Sequence[memoryview], offsets: Sequence[int]
) -> None:
    """Fill a loaned record with an encoded object (one copy per part)."""
    _OBJECT_HEAD.pack_into(target, 0, OBJECT_MAGIC, len(raws), len(stream))
    for index, raw in enumerate(raws):
        struct.pack_into("<Q", target, _OBJECT_HEAD.size + 8 * index, raw.nbytes)
    target[offsets[0] : offsets[0] + len(stream)] = stream
    for raw, offset in zip(raws, offsets[1:], strict=True):
        target[offset : offset + raw.nbytes] = raw.cast("B")


def _corrupt(what: str) -> CorruptRegionError:
    return CorruptRegionError(
        f"message payload: {what}; it was not written by Queue.put/send_array, or was damaged"
    )


def read_object(payload: memoryview) -> object:
    """Unpickle a payload; out-of-band buffers are copied out (the record is freed after)."""
    size = payload.nbytes
    if size < _OBJECT_HEAD.size:
        raise _corrupt(f"{size} bytes is too short for an object header")
    magic, count, stream_length = _OBJECT_HEAD.unpack_from(payload, 0)
    if magic != OBJECT_MAGIC:
        raise _corrupt(
            f"magic {magic!r} is not {OBJECT_MAGIC!r} (was it sent with send() rather than put()?)"
        )
    if count > MAX_BUFFERS or _OBJECT_HEAD.size + 8 * count > size:
        raise _corrupt(f"{count} buffers do not fit")
    lengths = struct.unpack_from(f"<{count}Q", payload, _OBJECT_HEAD.size)
    offset = _align(_OBJECT_HEAD.size + 8 * count)
    if stream_length > size - offset:
        raise _corrupt("the pickle stream runs past the end")
    stream = payload[offset : offset + stream_length]
    offset = _align(offset + stream_length)
    buffers = []
    for length in lengths:
        if length > size - min(offset, size):
            raise _corrupt("a buffer runs past the end")
        buffers.append(bytearray(payload[offset : offset + length]))
        offset = _align(offset + length)
    return pickle.loads(stream, buffers=buffers)


def encode_array_header(array: Any) -> tuple[bytes, int]:
    """(header bytes, data offset) for a C-contiguous numpy array."""
    import numpy as np  # noqa: PLC0415 - optional dependency

    descr = repr(np.lib.format.dtype_to_descr(array.dtype)).encode()
    shape = tuple(int(d) for d in array.shape)
    head = _ARRAY_HEAD.pack(ARRAY_MAGIC, len(descr), len(shape), 0) + struct.pack(f"<{len(shape)}Q", *shape)
    header = head + descr
    return header, _align(len(header))


def read_array(payload: memoryview) -> Any:
    """A numpy array over ``payload`` (no copy): the caller decides the lifetime."""
    import numpy as np  # noqa: PLC0415 - optional dependency

    size = payload.nbytes
    if size < _ARRAY_HEAD.size:
        raise _corrupt(f"{size} bytes is too short for an array header")
    magic, descr_length, ndim, _ = _ARRAY_HEAD.unpack_from(payload, 0)
    if magic != ARRAY_MAGIC:
        raise _corrupt(f"magic {magic!r} is not {ARRAY_MAGIC!r} (was it sent with send_array()?)")
    if ndim > MAX_DIMENSIONS or _ARRAY_HEAD.size + 8 * ndim + descr_length > size:
        raise _corrupt("the array header does not fit")
    shape = struct.unpack_from(f"<{ndim}Q", payload, _ARRAY_HEAD.size)
    start = _ARRAY_HEAD.size + 8 * ndim
    try:
        descr = ast.literal_eval(bytes(payload[start : start + descr_length]).decode())
        dtype = np.lib.format.descr_to_dtype(descr)
    except (ValueError, SyntaxError, TypeError, UnicodeDecodeError, MemoryError, RecursionError):
        raise _corrupt("the dtype description is not valid") from None
    data = _align(start + descr_length)
    count = 1
    for dim in shape:
        count *= dim
    if data > size or count * dtype.itemsize > size - data:
        raise _corrupt(f"shape {shape} of {dtype} does not fit in {size - min(data, size)} bytes")
    return np.frombuffer(payload, dtype=dtype, count=count, offset=data).reshape(shape)


def array_root(array: Any) -> Any:
    """The array that owns the buffer: every view of ``array`` keeps it alive.

    numpy points a view's ``base`` straight at the array that owns the memory,
    skipping intermediate views, so a lifetime hook must sit on that root.
    """
    root = array
    while (
        getattr(root, "base", None) is not None and hasattr(root.base, "base") and hasattr(root.base, "dtype")
    ):
        root = root.base
    return root
