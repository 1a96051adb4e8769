#!/usr/bin/env python3
"""A bag of real LiDAR scans for the graph benchmark: KITTI HDL-64E scans, in base_link or as the
driver publishes them (``--sensor-frame``: frame ``velodyne``, intensity 0..1, mount published by
``cloud_replay``'s ``~mount``).

    python scripts/kitti_bag.py --kitti DIR --out bench_results/kitti.bag    # DIR/velodyne/*.bin; ROS environment
    roslaunch airside_perception bench.launch bag:=$PWD/bench_results/kitti.bag out:=bench_results/graph_kitti.txt

Each scan goes to ``/airside_av/lidar/aggregated`` (frame base_link: the sensor 1.73 m above the
ground, intensity 0..1 scaled to 0..255), 0.1 s apart; ``cloud_replay`` loops them at 10 Hz.
"""

import argparse

import rosbag
import rospy

from airside_perception.ros import convert
from airside_perception.ros.bag_writer import CLOUD_TOPIC, FRAME_ID, START_STAMP_S
from airside_perception.tools.semantickitti import kitti_clouds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", required=True, help="a KITTI recording: the directory holding velodyne/*.bin")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sensor-frame", action="store_true",
                    help="keep the scans in frame velodyne with intensity 0..1 (a driver's view)")
    ap.add_argument("--repeat", type=int, default=1, help="write the scans this many times (a longer loop)")
    args = ap.parse_args()
    with rosbag.Bag(args.out, "w") as bag:
        scans = list(kitti_clouds(args.kitti, sensor_frame=args.sensor_frame))
        frame = "velodyne" if args.sensor_frame else FRAME_ID
        for k in range(len(scans) * args.repeat):
            scan = scans[k % len(scans)]
            stamp = rospy.Time.from_sec(START_STAMP_S + 0.1 * k)
            bag.write(CLOUD_TOPIC, convert.xyzi_msg(scan.points, convert.header_of(stamp, frame, seq=k)), stamp)
            print(f"{scan.name}: {len(scan.points)} points")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
