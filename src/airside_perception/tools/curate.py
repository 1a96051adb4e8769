"""What the vehicle recorded and why, and the chosen clouds exported for labelling.

    engine_tool curate --recordings DIR --out DIR [--triggers T ...] [--context] [--pre-labels SOURCE]

Reads the data recorder's ``index.jsonl`` and bags. Writes, in the SemanticKITTI layout a
labelling tool and ``training.train --data semantickitti:OUT --class-map OUT/class_map.yaml``
read:

    OUT/velodyne/000000.bin        float32 x, y, z, intensity, as recorded (the cloud's frame)
    OUT/labels/000000.label        uint32 pre-labels: airside class id + 1 (0: not labelled)
    OUT/labels_<source>/...        every other pre-label source, for the labeller to compare
    OUT/class_map.yaml             those ids -> airside classes
    OUT/summary.json, summary.png  counts per trigger and per version, recordings over time,
                                   one row per exported cloud

Pre-label sources: ``serving`` (the segmentation the vehicle published for that cloud),
``baseline`` (the RANSAC path: ground and obstacles, the latter as ``unknown``), ``teacher``
(``models/teachers/segmentation.pt`` run here, where PyTorch is installed), and
``ground_truth`` where the recording holds the simulator's (a simulated drive: it stands in for
the human labeller in the data loop's test). ``--pre-labels
auto`` puts the teacher's in ``labels/`` where it can run, else the serving engine's.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

from airside_perception import classes
from airside_perception.errors import ConfigError
from airside_perception.frames import parse_sensor_pose, transform_points
from airside_perception.recording.store import INDEX, read_index
from airside_perception.recording.triggers import TRIGGERS

CLOUD_TOPIC_SUFFIX = "lidar/aggregated"
SOURCES = ("serving", "baseline", "teacher", "ground_truth")
PACKAGE = os.path.join(os.path.dirname(__file__), "..", "..", "..")
TEACHER = os.path.join(PACKAGE, "models", "teachers", "segmentation.pt")
BASELINE_CLASSES = {"ground": classes.CLASS_IDS["ground"], "obstacle": classes.CLASS_IDS["unknown"]}


def xyzi_of(msg) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity of a PointCloud2 (any field layout with those four)."""
    offsets = {f.name: f.offset for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in offsets]
    if missing:
        raise ConfigError(f"a recorded cloud lacks the fields {missing}")
    n = msg.width * msg.height
    raw = np.frombuffer(msg.data, np.uint8)[: n * msg.point_step].reshape(n, msg.point_step)
    out = np.zeros((n, 4), np.float32)
    for k, name in enumerate(("x", "y", "z", "intensity")):
        if name in offsets:
            out[:, k] = raw[:, offsets[name]:offsets[name] + 4].copy().view(np.float32)[:, 0]
    return out


def _check_inputs(recordings: str, out: str, overwrite: bool) -> List[Dict[str, Any]]:
    if not os.path.isdir(recordings):
        raise ConfigError(f"--recordings {recordings} is not a directory: pass the data recorder's recordings_dir "
                          "(default ~/.ros/airside_perception/recordings)")
    index = os.path.join(recordings, INDEX)
    if not os.path.isfile(index):
        raise ConfigError(f"{recordings} holds no {INDEX}: it is not a recordings_dir of the data recorder")
    try:
        entries = read_index(index, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{exc}: remove or repair that line of the index") from None
    if not entries:
        raise ConfigError(f"{index} lists no recordings: nothing to curate yet (the recorder adds a line per "
                          "recording)")
    real_out, real_rec = os.path.realpath(out), os.path.realpath(recordings)
    if real_out == real_rec or real_rec.startswith(real_out + os.sep) or real_out.startswith(real_rec + os.sep):
        raise ConfigError(f"--out {out} and --recordings {recordings} overlap: export somewhere else (the "
                          "recordings are never written to)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file: give a directory")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ConfigError(f"--out {out} exists and is not empty: pass --overwrite or another --out")
        if not os.path.isfile(os.path.join(out, "summary.json")):
            raise ConfigError(f"--out {out} is not an earlier export (no summary.json): --overwrite replaces only "
                              "exports; give another --out")
    return entries


def _read_recording(path: str) -> Dict[int, Dict[str, Any]]:
    """stamp (ns) -> {topic: message} of one bag (the first message of each topic per stamp)."""
    import rosbag

    if not os.path.isfile(path):
        raise ConfigError(f"{path} is listed in {INDEX} but missing: restore it, or remove its line from the index")
    frames: Dict[int, Dict[str, Any]] = collections.defaultdict(dict)
    try:
        with rosbag.Bag(path) as bag:
            for topic, msg, _ in bag.read_messages():
                frames[msg.header.stamp.to_nsec()].setdefault(topic, msg)
    except Exception as exc:  # rosbag raises its own and struct errors on damaged files
        raise ConfigError(f"{path} is not a readable bag ({type(exc).__name__}: {exc}): run 'rosbag reindex "
                          f"{path}', or remove the file and its line in {INDEX}") from None
    return frames


class _Teacher:
    def __init__(self, path: str):
        import torch

        from airside_perception.ops import bev
        from airside_perception.training import checkpoint

        self.torch, self.bev = torch, bev
        self.net = checkpoint.load_network("segmentation", path, "teacher")
        self.spec = bev.BevSpec()

    def labels(self, points_base_link: np.ndarray) -> np.ndarray:
        enc = self.bev.encode(points_base_link, self.spec)
        out = np.full(len(points_base_link), classes.UNLABELLED, np.uint8)
        if len(enc.kept):
            with self.torch.no_grad():
                logits = self.net(*(self.torch.from_numpy(a) for a in (enc.bev, enc.point_cells, enc.point_features)))
            out[enc.kept] = logits.argmax(dim=1).numpy().astype(np.uint8)
        return out


def _labels_of(source: str, frame: Dict[str, Any], points: np.ndarray, teacher: Optional[_Teacher],
               pose: np.ndarray, intensity_max: float) -> Optional[np.ndarray]:
    if source == "teacher":
        if teacher is None:
            return None
        base = transform_points(points[:, :3], pose)
        scaled = np.concatenate([base, points[:, 3:4] * (255.0 / intensity_max)], axis=1).astype(np.float32)
        return teacher.labels(scaled)
    topic = {"serving": "perception/segmentation", "baseline": "baseline/segmentation",
             "ground_truth": "ground_truth/labels"}[source]
    msg = next((m for t, m in frame.items() if t.endswith(topic)), None)
    if msg is None or len(msg.labels) != len(points):
        return None
    raw = np.frombuffer(bytes(msg.labels), np.uint8) if isinstance(msg.labels, (bytes, bytearray)) \
        else np.asarray(msg.labels, np.uint8)
    lookup = np.full(256, classes.UNLABELLED, np.uint8)
    for i, name in enumerate(msg.class_names):
        target = BASELINE_CLASSES.get(name) if source == "baseline" else classes.CLASS_IDS.get(name)
        if target is not None and i < 255:
            lookup[i] = target
    return lookup[raw]


def _label_file(labels: np.ndarray) -> np.ndarray:
    """Airside ids -> the export's uint32 (id + 1; 0 where not labelled)."""
    return np.where(labels == classes.UNLABELLED, 0, labels.astype(np.uint32) + 1).astype(np.uint32)


def curate(recordings: str, out: str, triggers: Sequence[str] = (), context: bool = False,
           pre_labels: str = "auto", sensor_pose: str = "0 0 0 0 0 0", intensity_max: float = 255.0,
           teacher_path: str = TEACHER, overwrite: bool = False) -> Dict[str, Any]:
    """Exports the chosen clouds of ``recordings`` into ``out``; returns the summary."""
    unknown = sorted(set(triggers) - set(TRIGGERS))
    if unknown:
        raise ConfigError(f"--triggers {unknown} unknown: choose from {list(TRIGGERS)}")
    if pre_labels not in ("auto",) + SOURCES:
        raise ConfigError(f"--pre-labels {pre_labels}: one of auto, {', '.join(SOURCES)}")
    entries = _check_inputs(recordings, out, overwrite)
    pose = parse_sensor_pose(sensor_pose)
    teacher = None
    if pre_labels in ("auto", "teacher") and os.path.isfile(teacher_path):
        try:
            teacher = _Teacher(teacher_path)
        except ImportError:
            if pre_labels == "teacher":
                raise ConfigError("--pre-labels teacher needs PyTorch: pip install -r requirements-train.txt") from None
    elif pre_labels == "teacher":
        raise ConfigError(f"--pre-labels teacher: {teacher_path} does not exist")
    first = pre_labels if pre_labels != "auto" else ("teacher" if teacher is not None else "serving")
    if os.path.isdir(out) and overwrite and os.listdir(out):
        shutil.rmtree(out)  # an earlier export (checked above)
    for sub in ["velodyne", "labels"] + [f"labels_{s}" for s in SOURCES if s != first]:
        os.makedirs(os.path.join(out, sub), exist_ok=True)  # the empty ones are removed at the end
    chosen = [e for e in entries if not triggers or set(e.get("triggers", [])) & set(triggers)]
    rows: List[Dict[str, Any]] = []
    for entry in chosen:
        frames = _read_recording(os.path.join(recordings, entry["file"]))
        triggered = {int(round(s * 1e9)): names for s, names in entry.get("triggered", [[entry["stamp"],
                                                                                         entry["triggers"]]])}
        for stamp, frame in sorted(frames.items()):
            cloud = next((m for t, m in frame.items() if t.endswith(CLOUD_TOPIC_SUFFIX)), None)
            hit = next((names for s, names in triggered.items() if abs(s - stamp) < 500_000), None)
            if cloud is None or (hit is None and not context):
                continue
            points = xyzi_of(cloud)
            name = f"{len(rows):06d}"
            points.tofile(os.path.join(out, "velodyne", name + ".bin"))
            have = {}
            for source in SOURCES:
                labels = _labels_of(source, frame, points, teacher, pose, intensity_max)
                if labels is None:
                    continue
                folder = "labels" if source == first else f"labels_{source}"
                _label_file(labels).tofile(os.path.join(out, folder, name + ".label"))
                have[source] = int((labels != classes.UNLABELLED).sum())
            if first not in have:
                np.zeros(len(points), np.uint32).tofile(os.path.join(out, "labels", name + ".label"))
            rows.append({"scan": name, "stamp": round(stamp / 1e9, 6), "recording": entry["file"],
                         "triggers": hit or [], "context": hit is None, "frame_id": cloud.header.frame_id,
                         "points": int(len(points)), "pre_labelled_points": have,
                         "versions": entry.get("versions", {}), "trust": entry.get("trust", {})})
    if not rows:
        shutil.rmtree(out, ignore_errors=True)  # nothing exported: no half-made folder to refuse the next run
        raise ConfigError(f"the {len(chosen)} chosen recordings hold no triggered clouds: widen --triggers or "
                          "pass --context")
    summary = _summary(entries, chosen, rows, first, recordings)
    with open(os.path.join(out, "class_map.yaml"), "w") as fh:
        fh.write("# The export's label ids (labels/*.label) -> airside classes; 0 is not labelled.\n")
        yaml.safe_dump({"name": "curated", "labels": {i + 1: n for i, n in enumerate(classes.CLASS_NAMES)}}, fh,
                       sort_keys=False)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    _plot(entries, os.path.join(out, "summary.png"))
    for s in SOURCES:
        folder = os.path.join(out, f"labels_{s}")
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
    return summary


def _summary(entries, chosen, rows, first: str, recordings: str) -> Dict[str, Any]:
    per_trigger = collections.Counter(t for e in entries for t in e.get("triggers", []))
    per_version: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    for e in entries:
        for task, version in e.get("versions", {}).items():
            per_version[task][version] += 1
    frames = sorted({r["frame_id"] for r in rows})
    return {"recordings": os.path.abspath(recordings), "recorded": len(entries), "chosen": len(chosen),
            "exported_clouds": len(rows), "triggers": dict(per_trigger),
            "versions": {t: dict(c) for t, c in per_version.items()},
            "span": [min(e["stamp"] for e in entries), max(e["stamp"] for e in entries)],
            "labels": first, "frames": frames,
            "note": "clouds as recorded, in their frame: pass that frame's pose to training (--sensor-pose) "
                    "and the driver's intensity_max" if frames != ["base_link"] else "clouds in base_link",
            "scans": rows, "date": time.strftime("%Y-%m-%d")}


def _plot(entries, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    t0 = min(e["stamp"] for e in entries)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for trigger in TRIGGERS:
        times = sorted((e["stamp"] - t0) / 60.0 for e in entries if trigger in e.get("triggers", []))
        if times:
            ax.step(times, np.arange(1, len(times) + 1), where="post", label=trigger)
    ax.set_xlabel("minutes since the first recording")
    ax.set_ylabel("recordings (cumulative)")
    ax.legend(fontsize=8)
    ax.set_title("What the vehicle recorded, by trigger")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(summary: Dict[str, Any]) -> str:
    lines = [f"{summary['recorded']} recordings, {summary['chosen']} chosen, {summary['exported_clouds']} clouds "
             f"exported (pre-labels in labels/: {summary['labels']})", "", "| trigger | recordings |", "|---|---|"]
    lines += [f"| {t} | {n} |" for t, n in sorted(summary["triggers"].items())]
    for task, versions in sorted(summary["versions"].items()):
        lines.append(f"{task}: " + ", ".join(f"{v} x{n}" for v, n in sorted(versions.items())))
    return "\n".join(lines)
