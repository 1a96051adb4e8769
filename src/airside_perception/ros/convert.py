"""Conversions between ROS messages and the core's arrays and dataclasses."""

from __future__ import annotations

from typing import Optional

import numpy as np
from ros_numpy.point_cloud2 import pftype_to_nptype
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from airside_perception.cloud import CloudArray, CloudLayout, FieldSpec, pack_xyzi, read_cloud
from airside_perception.errors import CloudFormatError


def layout_of(msg: PointCloud2) -> CloudLayout:
    """The packing of ``msg``; unknown field types are a ``CloudFormatError``."""
    fields = []
    for f in msg.fields:
        if f.datatype not in pftype_to_nptype:
            raise CloudFormatError(f"field '{f.name}' has unknown PointField datatype {f.datatype}")
        fields.append(FieldSpec(f.name, f.offset, pftype_to_nptype[f.datatype].name, max(f.count, 1)))
    return CloudLayout(fields, msg.point_step, msg.row_step, msg.height, msg.width, bool(msg.is_bigendian))


def cloud_from_msg(msg: PointCloud2, max_points: int) -> CloudArray:
    """Reads x, y, z, intensity of any well-formed ``PointCloud2`` (zero-copy view of data)."""
    return read_cloud(msg.data, layout_of(msg), max_points)


XYZI_FIELDS = [PointField(name, 4 * i, PointField.FLOAT32, 1) for i, name in enumerate("x y z intensity".split())]


def xyzi_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """``(N, 4)`` float32 x, y, z, intensity -> an unorganised ``PointCloud2``."""
    return PointCloud2(header=header, height=1, width=len(points), fields=XYZI_FIELDS,
                       is_bigendian=False, point_step=16, row_step=16 * len(points),
                       data=pack_xyzi(points), is_dense=bool(np.isfinite(points).all()))


def header_of(stamp, frame_id: str, seq: Optional[int] = None) -> Header:
    header = Header(stamp=stamp, frame_id=frame_id)
    if seq is not None:
        header.seq = seq
    return header
