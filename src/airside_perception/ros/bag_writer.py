"""Writes simulator sequences into bag files: the cloud and its ground truth, 10 Hz."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import rosbag
import rospy

from airside_perception import classes
from airside_perception.frames import ENGINE_INTENSITY_MAX, transform_points
from airside_perception.ros import convert, messages
from airside_perception.sim import world

CLOUD_TOPIC = "/airside_av/lidar/aggregated"
GT_LABELS_TOPIC = "/airside_av/ground_truth/labels"
GT_OBJECTS_TOPIC = "/airside_av/ground_truth/objects"
GT_OCCUPANCY_TOPIC = "/airside_av/ground_truth/occupancy"
FRAME_ID = "base_link"
START_STAMP_S = 1_700_000_000.0


@dataclass(frozen=True)
class SensorFrame:
    """The clouds' frame and intensity range: ``pose`` (4, 4) is that frame in base_link."""

    frame_id: str = FRAME_ID
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    intensity_max: float = ENGINE_INTENSITY_MAX

    def cloud(self, points: np.ndarray) -> np.ndarray:
        """base_link points (N, 4), intensity 0..255 -> this frame and intensity range."""
        out = transform_points(points.copy(), np.linalg.inv(self.pose))
        out[:, 3] *= np.float32(self.intensity_max / ENGINE_INTENSITY_MAX)
        return out


def write_bag(path: str, seed: int, frames: int, density: str = "default",
              period_s: float = 0.1, compression: str = "bz2",
              progress: Optional[Callable[[int], None]] = None, sensor: Optional[SensorFrame] = None) -> int:
    """Writes ``frames`` scans of scene ``seed`` to ``path``; returns the number written.

    Ground truth goes on ``/airside_av/ground_truth/*`` with the cloud's stamp:
    labels as ``SemanticPointCloud`` (model_version ``ground_truth``), every object as a
    ``Detection3DArray`` (source ``ground_truth``), occupancy as ``OccupancyGrid``. Clouds go in
    ``sensor``'s frame and intensity range (default: base_link, 0..255); ground truth stays in
    base_link.
    """
    sensor = sensor or SensorFrame()
    grid = world.OCCUPANCY_GRID
    written = 0
    with rosbag.Bag(path, "w", compression=compression) as bag:
        for k, scan in enumerate(world.sequence(seed, frames, density, period_s)):
            stamp = rospy.Time.from_sec(START_STAMP_S + k * period_s)
            header = convert.header_of(stamp, FRAME_ID, seq=k)
            points = scan.points if sensor.frame_id == FRAME_ID else sensor.cloud(scan.points)
            bag.write(CLOUD_TOPIC, convert.xyzi_msg(points, convert.header_of(stamp, sensor.frame_id, seq=k)), stamp)
            bag.write(GT_LABELS_TOPIC, messages.semantic_msg(
                header, scan.labels, np.zeros(0, np.float32), scan.class_names,
                "ground_truth", 0.0), stamp)
            bag.write(GT_OBJECTS_TOPIC, messages.detections_msg(
                header, "ground_truth", "ground_truth", scan.boxes, scan.box_labels,
                scan.box_points.astype(np.float32), classes.CLASS_NAMES, 0.0), stamp)
            bag.write(GT_OCCUPANCY_TOPIC, messages.occupancy_msg(
                header, scan.occupancy.astype(np.int8) * 100, grid.resolution_m,
                -grid.half_extent_m, -grid.half_extent_m), stamp)
            written += 1
            if progress:
                progress(1)
    return written
