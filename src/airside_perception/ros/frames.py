"""tf2 look-ups for the cloud consumers: one 4x4 matrix per cloud, applied by the core."""

from __future__ import annotations

from typing import Optional

import numpy as np
import rospy
import tf2_ros
from std_msgs.msg import Header

from airside_perception.errors import AirsideError
from airside_perception.frames import pose_matrix

#: Longest wait for the transform at the cloud's stamp before the latest one is used.
LOOKUP_TIMEOUT_S = 0.02


class TransformMissing(AirsideError):
    """No transform from the cloud's frame to the target frame is known."""


class TargetFrame:
    """Matrices from the clouds' frames into ``target_frame``, through a tf2 buffer.

    A cloud already in ``target_frame`` (or with an empty ``frame_id``, which is taken to
    be in it) needs no transform: ``matrix_for`` returns ``None`` without asking tf.
    """

    def __init__(self, target_frame: str):
        self.target_frame = target_frame
        self.buffer = tf2_ros.Buffer(cache_time=rospy.Duration(10.0))
        self.listener = tf2_ros.TransformListener(self.buffer)

    def matrix_for(self, header: Header) -> Optional[np.ndarray]:
        """``(4, 4)`` from ``header.frame_id`` into the target frame at ``header.stamp``; the
        latest known transform (a static mount) when none is known at that stamp. Raises
        ``TransformMissing`` naming both frames and how to publish the transform."""
        source = header.frame_id.lstrip("/")
        if not source or source == self.target_frame:
            return None
        try:
            tf = self.buffer.lookup_transform(self.target_frame, source, header.stamp,
                                              rospy.Duration(LOOKUP_TIMEOUT_S))
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException):
            try:
                tf = self.buffer.lookup_transform(self.target_frame, source, rospy.Time(0))
            except tf2_ros.TransformException as exc:
                raise TransformMissing(
                    f"no transform from '{source}' to '{self.target_frame}' ({exc}): publish the sensor's mount, "
                    f"e.g. `rosrun tf2_ros static_transform_publisher X Y Z YAW PITCH ROLL {self.target_frame} "
                    f"{source}`, or set target_frame to the cloud's frame") from None
        t, q = tf.transform.translation, tf.transform.rotation
        return pose_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
