"""Writes simulator sequences into bag files: the cloud and its ground truth, 10 Hz.

    python -m airside_perception.ros.bag_writer --seed S --frames F --out FILE.bag [--frame-id velodyne ...]

(``python -m airside_perception.sim bag ...`` runs this command.)
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, List, Optional

import numpy as np

from airside_perception import classes, cli
from airside_perception.errors import ConfigError
from airside_perception.frames import SensorFrame, parse_sensor_pose
from airside_perception.sim import world

CLOUD_TOPIC = "/airside_av/lidar/aggregated"
GT_LABELS_TOPIC = "/airside_av/ground_truth/labels"
GT_OBJECTS_TOPIC = "/airside_av/ground_truth/objects"
GT_OCCUPANCY_TOPIC = "/airside_av/ground_truth/occupancy"
FRAME_ID = "base_link"
START_STAMP_S = 1_700_000_000.0


def write_bag(path: str, seed: int, frames: int, density: str = "default",
              period_s: float = 0.1, compression: str = "bz2",
              progress: Optional[Callable[[int], None]] = None, sensor: Optional[SensorFrame] = None,
              scans: Optional[Iterable] = None) -> int:
    """Writes ``frames`` scans of scene ``seed`` to ``path`` (or the given ``scans``, e.g. another
    site's: ``sim.sites``); returns the number written.

    Ground truth goes on ``/airside_av/ground_truth/*`` with the cloud's stamp:
    labels as ``SemanticPointCloud`` (model_version ``ground_truth``), every object as a
    ``Detection3DArray`` (source ``ground_truth``), occupancy as ``OccupancyGrid``. Clouds go in
    ``sensor``'s frame and intensity range (default: base_link, 0..255); ground truth stays in
    base_link.
    """
    import rosbag  # here, so that the command line checks its arguments without ROS
    import rospy

    from airside_perception.ros import convert, messages

    sensor = sensor or SensorFrame()
    grid = world.OCCUPANCY_GRID
    written = 0
    with rosbag.Bag(path, "w", compression=compression) as bag:
        source = scans if scans is not None else world.sequence(seed, frames, density, period_s)
        for k, scan in enumerate(source):
            if k >= frames:
                break
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


PROG = "airside_perception.sim bag"


def _parser() -> cli.Parser:
    p = cli.Parser(prog=PROG, description="A 10 Hz simulator sequence with ground truth to a bag file.")
    p.add_argument("--seed", type=cli.non_negative_int, required=True)
    p.add_argument("--frames", type=cli.positive_int, required=True)
    p.add_argument("--out", type=cli.writable_file, required=True, help="output .bag")
    p.add_argument("--density", choices=["compact", "default", "dense"], default="default",
                   help="sensor resolution: about 35k, 100k or 200k points (default: default)")
    p.add_argument("--compression", choices=["none", "bz2", "lz4"], default="bz2")
    p.add_argument("--frame-id", default="base_link",
                   help="frame of the clouds: another frame writes them as a sensor-frame driver would")
    p.add_argument("--sensor-pose", default="0 0 0 0 0 0",
                   help="\"x y z roll pitch yaw\" of that frame in base_link (metres, radians)")
    p.add_argument("--intensity-max", type=float, default=255.0, help="intensity range of the written clouds")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from tqdm import tqdm

    args = _parser().parse_args(argv)
    try:
        if not args.intensity_max > 0:
            raise ConfigError(f"--intensity-max {args.intensity_max} must be positive")
        sensor = SensorFrame(args.frame_id, parse_sensor_pose(args.sensor_pose), args.intensity_max)
    except ConfigError as exc:
        cli.fail(PROG, str(exc))
    try:
        import rosbag  # noqa: F401
    except ImportError as exc:
        cli.fail(PROG, f"writing bags needs the ROS Python packages ({exc}): run 'make setup'")
    with tqdm(total=args.frames, desc="bag", unit="frame") as bar:
        n = write_bag(args.out, args.seed, args.frames, args.density,
                      compression=args.compression, progress=bar.update, sensor=sensor)
    print(f"{args.out}: {n} frames, {os.path.getsize(args.out) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
