"""A vehicle team's own labelled scans, in the SemanticKITTI layout.

    DIR/velodyne/000000.bin      float32 x, y, z, intensity per point (sensor frame)
    DIR/labels/000000.label      uint32 per point, semantic id in the low 16 bits
                                 (or DIR/velodyne/000000.label beside the scan)

A class map (``config/class_maps/*.yaml``: ``{name: .., labels: {<source id>: <airside
class>}}``) turns source ids into airside classes; ids it does not list are ignored in
scoring (label 255). Scans are moved into base_link by the sensor pose and their intensity
into the engines' range, like the nodes do with tf2 and ``intensity_max``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import yaml

from airside_perception import classes
from airside_perception.errors import ConfigError
from airside_perception.frames import IntensityScale, parse_sensor_pose, transform_points

DATA_PREFIX = "semantickitti:"
#: The HDL-64E of the KITTI car: 1.73 m above the road, intensity 0..1.
KITTI_SENSOR_POSE = "0 0 1.73 0 0 0"
KITTI_INTENSITY_MAX = 1.0


@dataclass(frozen=True)
class ClassMap:
    """Source label id -> airside class id (255: not scored)."""

    name: str
    lookup: np.ndarray  # (65536,) uint8

    def apply(self, source_ids: np.ndarray) -> np.ndarray:
        return self.lookup[source_ids & 0xFFFF]


def load_class_map(path: str) -> ClassMap:
    if not os.path.isfile(path):
        raise ConfigError(f"class map {path} does not exist: pass a YAML file like "
                          "config/class_maps/semantickitti.yaml")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"class map {path} is not valid YAML ({exc}): fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict) or not data["labels"]:
        raise ConfigError(f"class map {path} must be a mapping {{name: .., labels: {{<source id>: <airside class>}}}}")
    lookup = np.full(1 << 16, classes.UNLABELLED, np.uint8)
    for source, target in data["labels"].items():
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < (1 << 16):
            raise ConfigError(f"class map {path}: source id {source!r} must be an integer in [0, 65535]")
        if target not in classes.CLASS_IDS:
            raise ConfigError(f"class map {path}: id {source} maps to unknown class '{target}': use one of "
                              f"{list(classes.CLASS_NAMES)}")
        lookup[source] = classes.CLASS_IDS[target]
    return ClassMap(str(data.get("name", os.path.basename(path))), lookup)


@dataclass(frozen=True)
class LabelledScan:
    """points (N, 4) float32 base_link, engine intensity range; labels (N,) uint8 airside class or 255."""

    name: str
    points: np.ndarray
    labels: np.ndarray


def data_dir(spec: str) -> str:
    """``semantickitti:DIR`` -> DIR, checked."""
    if not spec.startswith(DATA_PREFIX):
        raise ConfigError(f"--data '{spec}' must be written semantickitti:DIR")
    root = spec[len(DATA_PREFIX):]
    if not os.path.isdir(os.path.join(root, "velodyne")):
        raise ConfigError(f"{root} has no velodyne/ directory: point --data at a directory holding velodyne/*.bin "
                          "(and labels/*.label)")
    return root


def scan_files(root: str, need_labels: bool = True) -> List[Tuple[str, Optional[str]]]:
    """(scan, label) paths, sorted; a missing label is an error when ``need_labels``."""
    scans = sorted(glob.glob(os.path.join(root, "velodyne", "*.bin")))
    if not scans:
        raise ConfigError(f"{root}/velodyne holds no *.bin scans")
    out = []
    for scan in scans:
        stem = os.path.splitext(os.path.basename(scan))[0]
        label = next((p for p in (os.path.join(root, "labels", stem + ".label"),
                                  os.path.splitext(scan)[0] + ".label") if os.path.isfile(p)), None)
        if label is None and need_labels:
            raise ConfigError(f"no label file for {scan}: expected {root}/labels/{stem}.label or {stem}.label "
                              "beside the scan")
        out.append((scan, label))
    return out


def read_scans(root: str, class_map: Optional[ClassMap], sensor_pose: np.ndarray, scale: IntensityScale,
               need_labels: bool = True) -> Iterator[LabelledScan]:
    """Every scan of ``root`` in base_link with its airside labels (all 255 without labels)."""
    for scan, label in scan_files(root, need_labels):
        raw = np.fromfile(scan, dtype="<f4")
        if raw.size % 4:
            raise ConfigError(f"{scan}: {raw.size * 4} bytes is not a whole number of float32 x y z i records")
        points = raw.reshape(-1, 4).astype(np.float32)
        labels = np.full(len(points), classes.UNLABELLED, np.uint8)
        if label is not None and class_map is not None:
            ids = np.fromfile(label, dtype="<u4")
            if len(ids) != len(points):
                raise ConfigError(f"{label} has {len(ids)} labels for {len(points)} points in {scan}: "
                                  "the label file belongs to another scan")
            labels = class_map.apply(ids)
        transform_points(points, sensor_pose)
        scale.apply(points)
        yield LabelledScan(os.path.basename(scan), points, labels)


def kitti_clouds(root: str, sensor_frame: bool = False) -> List[LabelledScan]:
    """Every scan of a KITTI recording (``root``/velodyne/*.bin) in base_link with the engines'
    intensity, labels not read: the real scans the benchmarks and GPU checks use.
    ``sensor_frame``: as the driver gives them instead (sensor frame, intensity 0..1)."""
    if sensor_frame:
        return list(read_scans(root, None, np.eye(4), IntensityScale(1.0, 1.0), need_labels=False))
    return list(read_scans(root, None, parse_sensor_pose(KITTI_SENSOR_POSE), IntensityScale(KITTI_INTENSITY_MAX),
                           need_labels=False))


def class_counts(scans: Iterator[LabelledScan]) -> Dict[str, int]:
    counts = np.zeros(256, np.int64)
    for s in scans:
        counts += np.bincount(s.labels, minlength=256)
    return {classes.CLASS_NAMES[i]: int(counts[i]) for i in range(len(classes.CLASS_NAMES))}


def settings_warnings(root: str, sensor_pose: str, intensity_max: float, sample: int = 5) -> List[str]:
    """Settings that contradict the scans, each with the value to set: intensities above the
    declared scale or all under a tenth of it; a pose that leaves the ground far from z = 0."""
    files = scan_files(root, need_labels=False)[:sample]
    top, ground = 0.0, []
    pose = parse_sensor_pose(sensor_pose)
    for scan, _ in files:
        raw = np.fromfile(scan, dtype="<f4")
        if raw.size % 4:
            continue  # not x y z i records: the reader names that problem
        points = raw.reshape(-1, 4).astype(np.float32)
        top = max(top, float(np.nanmax(points[:, 3])) if len(points) else 0.0)
        transform_points(points, pose)
        near = points[np.hypot(points[:, 0], points[:, 1]) < 20.0]
        if len(near) > 100:
            ground.append(float(np.percentile(near[:, 2], 25)))  # most near returns are ground
    out = []
    if top > 1.5 * intensity_max:
        out.append(f"intensities reach {top:g}, above --intensity-max {intensity_max:g}: pass --intensity-max "
                   f"{255.0 if top > 1.5 else 1.0:g}")
    elif files and top < intensity_max / 10:
        out.append(f"every intensity is under a tenth of --intensity-max {intensity_max:g} (largest {top:g}): pass "
                   f"--intensity-max {1.0 if top <= 1.0 else 255.0:g}")
    if ground and abs(float(np.median(ground))) > 0.5:
        z = float(np.median(ground))
        out.append(f"with --sensor-pose '{sensor_pose}' the ground lies at z = {z:+.2f} m, not 0: pass the sensor's "
                   f"mount, e.g. --sensor-pose '0 0 {-z:.2f} 0 0 0'")
    return out
