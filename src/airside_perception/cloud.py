"""Reading point-cloud buffers into ``(N, 4)`` float32 arrays, without ROS.

The ROS layer hands over the raw bytes and the field table of a ``PointCloud2``; this module
views them with one ``np.frombuffer`` (no copy of the buffer), whatever the field order,
padding, coordinate type or byte order, and takes x, y, z and intensity out of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from airside_perception.errors import CloudFormatError

REQUIRED_FIELDS = ("x", "y", "z")
NUMERIC_KINDS = "iuf"


@dataclass(frozen=True)
class FieldSpec:
    """One field of a packed point record: ``dtype`` is a NumPy type such as ``float32``."""

    name: str
    offset: int
    dtype: str
    count: int = 1


@dataclass(frozen=True)
class CloudLayout:
    """How the points are packed: the ``PointCloud2`` header fields, nothing else."""

    fields: Sequence[FieldSpec]
    point_step: int
    row_step: int
    height: int
    width: int
    is_bigendian: bool


@dataclass(frozen=True)
class CloudArray:
    """points (N, 4) float32 x, y, z, intensity in input order (non-finite rows kept);
    ``is_finite`` (N,) bool; ``has_intensity`` False when the cloud had no intensity field."""

    points: np.ndarray
    is_finite: np.ndarray
    has_intensity: bool

    @property
    def n_points(self) -> int:
        return len(self.points)


def _record_dtype(layout: CloudLayout) -> np.dtype:
    order = ">" if layout.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in layout.fields:
        if f.name in names:
            raise CloudFormatError(f"field '{f.name}' appears twice: publish each field once")
        base = np.dtype(f.dtype).newbyteorder(order)
        fmt = base if f.count == 1 else np.dtype((base, (f.count,)))
        if f.offset < 0 or f.offset + fmt.itemsize > layout.point_step:
            raise CloudFormatError(
                f"field '{f.name}' (offset {f.offset}, {fmt.itemsize} bytes) does not fit in "
                f"point_step {layout.point_step}: fix the driver's field offsets or point_step")
        names.append(f.name)
        formats.append(fmt)
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": layout.point_step})


def read_cloud(data, layout: CloudLayout, max_points: int) -> CloudArray:
    """Views ``data`` (bytes-like) as records and returns x, y, z, intensity as float32.

    Raises ``CloudFormatError`` naming the problem when the cloud cannot be read: missing
    x/y/z, non-numeric coordinates, a buffer shorter than ``row_step * height``, or more
    than ``max_points`` points.
    """
    names = [f.name for f in layout.fields]
    missing = [n for n in REQUIRED_FIELDS if n not in names]
    if missing:
        raise CloudFormatError(f"cloud has no field {', '.join(missing)} (fields: {names}): "
                               "publish float x, y, z (and intensity)")
    for f in layout.fields:
        if f.name in REQUIRED_FIELDS + ("intensity",) and np.dtype(f.dtype).kind not in NUMERIC_KINDS:
            raise CloudFormatError(f"field '{f.name}' has type {f.dtype}: must be numeric")
        if f.name in REQUIRED_FIELDS + ("intensity",) and f.count != 1:
            raise CloudFormatError(f"field '{f.name}' has count {f.count}: x, y, z and intensity hold one value "
                                   "per point (count 1)")
    n = layout.height * layout.width
    if n > max_points:
        raise CloudFormatError(f"cloud has {n} points, more than max_points={max_points}: "
                               "raise max_points in the node's config or thin the cloud")
    if layout.point_step <= 0 or layout.row_step < layout.width * layout.point_step:
        raise CloudFormatError(f"row_step {layout.row_step} < width {layout.width} x point_step "
                               f"{layout.point_step}: the header is inconsistent")
    if len(data) < layout.row_step * layout.height:
        raise CloudFormatError(f"data has {len(data)} bytes, header promises "
                               f"{layout.row_step * layout.height}: truncated message")
    dtype = _record_dtype(layout)
    if n == 0:
        return CloudArray(np.zeros((0, 4), np.float32), np.zeros(0, bool), "intensity" in names)
    if layout.row_step == layout.width * layout.point_step:
        records = np.frombuffer(data, dtype=dtype, count=n)
    else:  # padded rows: view each row, then drop the padding
        rows = np.frombuffer(data, dtype=np.uint8, count=layout.row_step * layout.height)
        rows = rows.reshape(layout.height, layout.row_step)[:, : layout.width * layout.point_step]
        records = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    out = np.empty((n, 4), dtype=np.float32)
    for i, name in enumerate(REQUIRED_FIELDS):
        out[:, i] = _first_component(records[name])
    has_intensity = "intensity" in names
    out[:, 3] = _first_component(records["intensity"]) if has_intensity else 0.0
    is_finite = np.isfinite(out[:, :3]).all(axis=1)
    return CloudArray(out, is_finite, has_intensity)


def _first_component(column: np.ndarray) -> np.ndarray:
    return column[:, 0] if column.ndim == 2 else column


def pack_xyzi(points: np.ndarray) -> bytes:
    """``(N, 4)`` float32 -> little-endian bytes of a ``x, y, z, intensity`` cloud."""
    return np.ascontiguousarray(points, dtype="<f4").tobytes()
