"""rviz markers: oriented boxes coloured by class, with a text label above each."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from airside_perception.classes import CLASS_COLOURS


def box_markers(header: Header, namespace: str, boxes: np.ndarray, label_names: Sequence[str],
                scores: Sequence[float], alpha: float = 0.5, lifetime_s: float = 0.3) -> MarkerArray:
    """boxes (M, 7) x, y, z, l, w, h, yaw in ``header.frame_id``; one CUBE and one TEXT each."""
    out = MarkerArray()
    clear = Marker(header=header, ns=namespace, action=Marker.DELETEALL)
    out.markers.append(clear)
    life = _duration(lifetime_s)
    for i, (box, name, score) in enumerate(zip(np.asarray(boxes, float), label_names, scores)):
        r, g, b = CLASS_COLOURS.get(name, (1.0, 1.0, 1.0))
        q = Quaternion(0.0, 0.0, float(np.sin(box[6] / 2)), float(np.cos(box[6] / 2)))
        cube = Marker(header=header, ns=namespace, id=2 * i, type=Marker.CUBE, action=Marker.ADD,
                      pose=Pose(Point(*box[:3]), q), scale=Vector3(*np.maximum(box[3:6], 0.05)),
                      color=ColorRGBA(r, g, b, alpha), lifetime=life)
        text = Marker(header=header, ns=namespace + "/labels", id=2 * i + 1, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, pose=Pose(Point(box[0], box[1], box[2] + box[5] / 2 + 0.5),
                                                   Quaternion(0, 0, 0, 1)),
                      scale=Vector3(0, 0, 0.8), color=ColorRGBA(1.0, 1.0, 1.0, 0.9),
                      text=f"{name} {float(score):.2f}", lifetime=life)
        out.markers.extend([cube, text])
    return out


def _duration(seconds: float):
    import rospy

    return rospy.Duration.from_sec(seconds)
