"""Schemas of the nodes' configuration files (``config/*.yaml``)."""

from __future__ import annotations

from airside_perception.config import Key
from airside_perception.engines.manifest import TASKS

INFERENCE_HOST = {
    "tasks": Key(list, "tasks this process hosts", item_choices=TASKS, min_items=1),
    "versions": Key(dict, "version of each task when no state file names one"),
    "intra_op_threads": Key(int, "ONNX Runtime threads per engine", lo=1, hi=64),
    "max_points": Key(int, "largest cloud accepted", lo=1000, hi=5_000_000),
    "max_input_age_ms": Key(float, "older clouds are dropped as stale", lo=1.0, hi=60_000.0),
    "publish_markers": Key(bool, "publish rviz markers of the detections"),
    "diagnostics_period_s": Key(float, "period of /diagnostics", lo=0.1, hi=60.0),
    "stats_window": Key(int, "frames in rolling statistics", lo=10, hi=100_000),
    "engines_dir": Key(str, "engines root; empty for the package's engines/"),
    "backend": Key(str, "engine backend", choices=("auto", "onnxruntime", "tensorrt")),
    "state_file": Key(str, "file of active versions; empty for the default under ROS_HOME"),
}
