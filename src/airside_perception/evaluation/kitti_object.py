"""The KITTI object layout: a team's own labelled boxes for detection.

    DIR/velodyne/NNNNNN.bin   float32 x y z intensity (sensor frame)
    DIR/label_2/NNNNNN.txt    type truncated occluded alpha l t r b  h w l  x y z  rotation_y (camera frame)
    DIR/calib/NNNNNN.txt      R0_rect and Tr_velo_to_cam (camera <- LiDAR)

Boxes are moved from the rectified camera frame to the LiDAR (the centre is the box's bottom in
KITTI: lifted by half the height; heading ``-rotation_y - pi/2``), then with the scan by the
sensor pose into base_link. The class map (``config/class_maps/kitti_object.yaml``) names the
airside detection class of each KITTI type; other types are not scored. Each box counts the
scan's points inside it (objects with too few returns are not scored, as on the synthetic split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import numpy as np
import yaml

from airside_perception.errors import ConfigError
from airside_perception.frames import IntensityScale, transform_points

__all__ = ["ObjectScan", "load_class_map", "scan_files", "read_scans", "points_in_boxes"]


@dataclass
class ObjectScan:
    name: str
    points: np.ndarray  # (N, 4) base_link, engine intensity
    boxes: np.ndarray  # (M, 7) x y z length width height yaw, base_link
    labels: List[str]  # airside class names
    box_points: np.ndarray  # (M,) returns inside each box


def load_class_map(path: str) -> Dict[str, str]:
    if not os.path.isfile(path):
        raise ConfigError(f"class map {path} does not exist: pass a YAML file like config/class_maps/kitti_object.yaml")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"class map {path} is not valid YAML ({exc}): fix the file") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"class map {path}: needs 'labels: {{<KITTI type>: <airside class>}}'")
    from airside_perception.classes import DETECTION_CLASS_NAMES

    bad = sorted({str(v) for v in labels.values()} - set(DETECTION_CLASS_NAMES))
    if bad:
        raise ConfigError(f"{path}: {bad} are not detection classes ({', '.join(DETECTION_CLASS_NAMES)})")
    return {str(k): str(v) for k, v in labels.items()}


def scan_files(root: str) -> List[Tuple[str, str, str]]:
    """(scan, label, calib) of every scan that has both; a scan without them is an error."""
    velodyne = os.path.join(root, "velodyne")
    if not os.path.isdir(velodyne):
        raise ConfigError(f"{root}: no velodyne/ directory (the KITTI object layout: velodyne/, label_2/, calib/)")
    out = []
    for name in sorted(n for n in os.listdir(velodyne) if n.endswith(".bin")):
        stem = name[:-4]
        label, calib = (os.path.join(root, d, stem + ".txt") for d in ("label_2", "calib"))
        for path, what in ((label, "label_2"), (calib, "calib")):
            if not os.path.isfile(path):
                raise ConfigError(f"{os.path.join(velodyne, name)} has no {what}/{stem}.txt: copy it beside the scans")
        out.append((os.path.join(velodyne, name), label, calib))
    if not out:
        raise ConfigError(f"{velodyne} holds no .bin scan")
    return out


def _calib(path: str) -> np.ndarray:
    """The 4x4 LiDAR -> rectified camera transform (R0_rect @ Tr_velo_to_cam)."""
    values: Dict[str, np.ndarray] = {}
    with open(path) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if rest.strip():
                values[key.strip()] = np.array([float(v) for v in rest.split()])
    try:
        r0 = np.eye(4)
        r0[:3, :3] = values["R0_rect"].reshape(3, 3)
        tr = np.eye(4)
        tr[:3, :4] = values["Tr_velo_to_cam"].reshape(3, 4)
    except (KeyError, ValueError):
        raise ConfigError(f"{path}: needs R0_rect (9 values) and Tr_velo_to_cam (12 values)") from None
    return r0 @ tr


def _boxes(label_path: str, cam_from_velo: np.ndarray, class_map: Dict[str, str]) -> Tuple[np.ndarray, List[str]]:
    velo_from_cam = np.linalg.inv(cam_from_velo)
    boxes, labels = [], []
    with open(label_path) as fh:
        for n, line in enumerate(fh, 1):
            f = line.split()
            if not f:
                continue
            if len(f) < 15:
                raise ConfigError(f"{label_path}:{n}: {len(f)} fields, the KITTI object layout has 15")
            if f[0] not in class_map:
                continue
            h, w, length, x, y, z, ry = (float(v) for v in f[8:15])
            centre = velo_from_cam @ np.array([x, y - h / 2.0, z, 1.0])
            boxes.append([centre[0], centre[1], centre[2], length, w, h, -ry - np.pi / 2.0])
            labels.append(class_map[f[0]])
    return np.array(boxes, np.float64).reshape(-1, 7), labels


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of ``points`` (N, >=3) inside each box (M, 7), yaw about z."""
    counts = np.zeros(len(boxes), np.int64)
    for i, (x, y, z, length, width, height, yaw) in enumerate(boxes):
        d = points[:, :3] - (x, y, z)
        c, s = np.cos(yaw), np.sin(yaw)
        u, v = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        counts[i] = int(np.count_nonzero((np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
                                         & (np.abs(d[:, 2]) <= height / 2)))
    return counts


def read_scans(root: str, class_map: Dict[str, str], sensor_pose: np.ndarray,
               scale: IntensityScale) -> Iterator[ObjectScan]:
    """Every scan of ``root`` with its scored boxes, both in base_link."""
    yaw = float(np.arctan2(sensor_pose[1, 0], sensor_pose[0, 0]))
    for scan, label, calib in scan_files(root):
        raw = np.fromfile(scan, dtype="<f4")
        if raw.size % 4:
            raise ConfigError(f"{scan}: {raw.size * 4} bytes is not a whole number of float32 x y z i records")
        points = raw.reshape(-1, 4).astype(np.float32)
        boxes, labels = _boxes(label, _calib(calib), class_map)
        counts = points_in_boxes(points, boxes)
        transform_points(points, sensor_pose)
        scale.apply(points)
        if len(boxes):
            centres = np.c_[boxes[:, :3], np.ones(len(boxes))] @ sensor_pose.T
            boxes = np.c_[centres[:, :3], boxes[:, 3:6], boxes[:, 6] + yaw]
        yield ObjectScan(os.path.basename(scan), points, boxes.astype(np.float32), labels, counts)
