"""The wire format: msgpack with numpy arrays as openpi encodes them (``__ndarray__``: raw bytes,
dtype and shape; object, complex and structured dtypes refused)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

_NDARRAY = b"__ndarray__"


_NPGENERIC = b"__npgeneric__"


_REFUSED_KINDS = "VOc"  # void (structured), object, complex: as openpi


# ---- encoding ------------------------------------------------------------------------------------


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind in _REFUSED_KINDS:
            raise TypeError(f"cannot encode numpy dtype {obj.dtype} (object, structured and complex are refused)")
        if isinstance(obj, np.ndarray):
            # tobytes() is C order whatever the strides, so non-contiguous views are fine.
            return {_NDARRAY: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
        return {_NPGENERIC: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    if hasattr(obj, "__array__"):  # a JAX array, a CPU torch tensor, ...
        return _encode_default(np.asarray(obj))
    raise TypeError(f"cannot encode an object of type {type(obj).__name__}")


def _decode_hook(obj: dict) -> Any:
    if _NDARRAY in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            shape = tuple(int(d) for d in obj[b"shape"])
            data = obj[b"data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed encoded array {sorted(map(repr, obj))}: {exc}") from exc
        if dtype.kind in _REFUSED_KINDS or not isinstance(data, bytes):
            raise ValueError(f"refused encoded array of dtype {dtype} / data {type(data).__name__}")
        size = math.prod(shape)
        if any(d < 0 for d in shape) or len(data) != size * dtype.itemsize:
            raise ValueError(
                f"encoded array has {len(data)} bytes, shape {shape} of {dtype} needs {size * dtype.itemsize}"
            )
        if size == 0:
            return np.empty(shape, dtype)
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # writable, owns its memory
    if _NPGENERIC in obj:
        try:
            return np.dtype(obj[b"dtype"]).type(obj[b"data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed encoded numpy scalar: {exc}") from exc
    return obj


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (nested dicts/lists of numpy arrays, numpy scalars and plain values) as msgpack."""
    return msgpack.packb(obj, default=_encode_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode what :func:`packb` (or openpi's ``msgpack_numpy.packb``) produced; arrays come back
    writable and C-contiguous, tuples as lists."""
    return msgpack.unpackb(data, object_hook=_decode_hook, raw=False, strict_map_key=False)


# ---- latency ---------------------------------------------------------------------------------------
