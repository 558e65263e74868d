"""Minimal safetensors reader/writer on numpy (no `safetensors` package needed).

Format: 8-byte little-endian u64 header length N, then N bytes of UTF-8 JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
padded with spaces so that 8 + N is a multiple of 8, then the raw little-endian
tensor bytes (offsets are relative to the start of that data block, tensors packed
without gaps). Tensors are written sorted by name, so output is deterministic.

Deliberately not: memory mapping, lazy loading, bf16/fp8 support (numpy has no
such dtypes); this is only for the golden files of tools/reference.
"""

import json
import struct

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _dtype_name(arr):
    dt = arr.dtype
    for name, ndt in _DTYPES.items():
        if ndt.kind == dt.kind and ndt.itemsize == dt.itemsize:
            return name
    raise TypeError(f"unsupported dtype {arr.dtype}")


def save_file(tensors, path, metadata=None):
    """tensors: {name: np.ndarray}; metadata: {str: str} or None."""
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dname = _dtype_name(arr)
        data = np.ascontiguousarray(arr, dtype=_DTYPES[dname]).tobytes(order="C")
        header[name] = {"dtype": dname, "shape": [int(s) for s in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata must be {str: str}")
        header["__metadata__"] = dict(sorted(metadata.items()))
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pad = (-(8 + len(hbytes))) % 8
    hbytes += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for c in chunks:
            f.write(c)


def load_file(path):
    """Returns (tensors {name: np.ndarray}, metadata {str: str})."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        dt = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * dt.itemsize:
            raise ValueError(f"{name}: byte length {e - b} does not match shape {shape}")
        out[name] = np.frombuffer(raw, dtype=dt, count=count, offset=base + b).reshape(shape).copy()
    return out, meta
