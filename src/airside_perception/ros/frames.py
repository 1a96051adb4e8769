"""tf2 look-ups for the cloud consumers: one 4x4 matrix per cloud, applied by the core."""

from __future__ import annotations

from typing import Optional

import numpy as np
import rospy
import tf2_ros
from std_msgs.msg import Header

from airside_perception.errors import AirsideError
from airside_perception.frames import pose_matrix

#: Longest wait for the transform at the cloud's stamp.
LOOKUP_TIMEOUT_S = 0.02
#: Without a transform at the cloud's stamp, the newest one is used only this close to the stamp
#: (one cycle): a moving target frame must never be applied with an old pose. Static mounts
#: (``/tf_static``) hold at every stamp and never need it.
TRANSFORM_TOLERANCE_S = 0.1


class TransformMissing(AirsideError):
    """No transform from the cloud's frame to the target frame is known at the cloud's stamp."""


class TargetFrame:
    """Matrices from the clouds' frames into ``target_frame``, through a tf2 buffer.

    A cloud already in ``target_frame`` (or with an empty ``frame_id``, which is taken to
    be in it) needs no transform: ``matrix_for`` returns ``None`` without asking tf. The
    listener clears the buffer itself when the ROS clock jumps back.
    """

    def __init__(self, target_frame: str, tolerance_s: float = TRANSFORM_TOLERANCE_S):
        self.target_frame = target_frame
        self.tolerance_s = tolerance_s
        self.buffer = tf2_ros.Buffer(cache_time=rospy.Duration(10.0))
        self.listener = tf2_ros.TransformListener(self.buffer)

    def matrix_for(self, header: Header) -> Optional[np.ndarray]:
        """``(4, 4)`` from ``header.frame_id`` into the target frame at ``header.stamp`` (or the
        newest transform when it is within ``tolerance_s`` of the stamp). Raises
        ``TransformMissing`` naming both frames, the offset, and how to publish the transform."""
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
            offset_s = abs((tf.header.stamp - header.stamp).to_sec())
            if not tf.header.stamp.is_zero() and offset_s > self.tolerance_s:
                raise TransformMissing(
                    f"the newest transform from '{source}' to '{self.target_frame}' is {offset_s * 1e3:.0f} ms from "
                    f"the cloud's stamp (tolerance {self.tolerance_s * 1e3:.0f} ms): publish the transform at the "
                    "cloud's rate, or stamp the clouds with the clock the transforms use") from None
        t, q = tf.transform.translation, tf.transform.rotation
        return pose_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
