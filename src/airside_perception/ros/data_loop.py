"""The data loop end to end on the simulator: drive a new site, record, curate, label, fine-tune,
gate, sign, swap, recalibrate; the figures into ``docs/results/data_loop.json``.

    python -m airside_perception.ros.data_loop [--scale small|full] [--work-dir DIR] [--out FILE]

1. drive: the new site (``sim.sites`` ``remote_stand``: night rain, another sensor mount) played
   once through ``full.launch`` with the data recorder (rate limits off: every trigger recorded,
   so that its precision and recall can be counted); this process listens too and scores every
   cloud's served segmentation against the simulator's ground truth: a cloud is *wrong* where
   person IoU is under 0.5 (30 or more person points) or a person within 20 m has fewer than half
   of its points labelled person;
2. curate: ``engine_tool curate`` exports the triggered clouds with the ground truth as labels
   (it stands in for the labelling team), beside as many apron scans (rehearsal: what the
   team's labelled archive gives, so the old apron is not forgotten);
3. fine-tune the serving segmentation from its own weights (``training.train --data``), export it
   as a new version, recalibrate its monitor on the site's clouds, gate it against the serving
   version (the accuracy gates on the old apron, the shifted-data gate on the new site's test
   split), sign it with the fleet key and swap it in through ``/model_manager/swap_engine``;
4. before / after: mIoU and person IoU of the serving and the new version on the site's test
   split and on the old apron, and the monitor's trust on the site.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import yaml

from airside_perception import classes, cli
from airside_perception.ros.common import stop_launch
from airside_perception.sim.world import split_seeds

PROG = "airside_perception.ros.data_loop"
SITE = "remote_stand"
TASK = "segmentation"
PACKAGE = os.path.join(os.path.dirname(__file__), "..", "..", "..")
SCALES = {"ci": {"drive": 30, "steps": 40, "rehearsal": 60, "test": 4, "gate_scans": 4, "frames": 20, "lr": 1e-4},
          "small": {"drive": 60, "steps": 300, "rehearsal": 180, "test": 8, "gate_scans": 8, "frames": 30,
                    "lr": 2e-5},
          "full": {"drive": 600, "steps": 1500, "rehearsal": 1200, "test": 60, "gate_scans": 100, "frames": 2000,
                   "lr": 2e-5}}
NEW_VERSION = "2.3.0-site"
NEAR_M = 20.0


def _run(cmd: List[str], log) -> None:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def prepare(work: str, scale: Dict[str, int], log) -> str:
    """The work directory: engines (a copy of the package's), a fleet key, the drive's bag."""
    from airside_perception.ros.bag_writer import write_bag
    from airside_perception.sim.sites import site_scan

    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(os.path.join(work, "state"))
    shutil.copytree(os.path.join(PACKAGE, "engines"), os.path.join(work, "engines"))
    tool = [sys.executable, "-m", "airside_perception.tools.engine_tool"]
    _run(tool + ["keygen", "--out-dir", os.path.join(work, "keys"), "--name", "fleet"], log)
    shutil.move(os.path.join(work, "keys", "fleet.key"), os.path.join(work, "fleet.key"))
    seeds = split_seeds("train", scale["drive"])
    bag = os.path.join(work, f"{SITE}.bag")
    write_bag(bag, 0, len(seeds), compression="none", scans=(site_scan(int(s), SITE) for s in seeds))
    cfg = yaml.safe_load(open(os.path.join(PACKAGE, "config", "data_recorder.yaml")))
    cfg.update(min_interval_s={k: 0.0 for k in cfg["min_interval_s"]}, context_before=2, context_after=2,
               min_free_bytes=0.0, min_recording_interval_s=0.0)
    with open(os.path.join(work, "recorder.yaml"), "w") as fh:
        yaml.safe_dump(cfg, fh)
    return bag


class DriveScorer:
    """Scores every cloud's served segmentation against the ground truth, by stamp."""

    def __init__(self):
        import rospy

        from airside_perception.msg import Detection3DArray, SemanticPointCloud

        self.lock = threading.Lock()
        self.parts: Dict[int, dict] = {}
        self.wrong: Dict[int, str] = {}
        self.scored = 0
        self.last_cloud = time.monotonic()
        rospy.Subscriber("/airside_av/lidar/aggregated", rospy.AnyMsg, self._on, "cloud", queue_size=20,
                         buff_size=1 << 26)
        rospy.Subscriber("/perception/segmentation", SemanticPointCloud, self._on, "served", queue_size=20)
        rospy.Subscriber("/airside_av/ground_truth/labels", SemanticPointCloud, self._on, "truth", queue_size=20)
        rospy.Subscriber("/airside_av/ground_truth/objects", Detection3DArray, self._on, "objects", queue_size=20)

    def _on(self, msg, kind):
        from airside_perception.ros.common import header_of_raw
        from airside_perception.ros.data_recorder import decoded

        stamp = header_of_raw(msg._buff)[0].to_nsec() if kind == "cloud" else msg.header.stamp.to_nsec()
        with self.lock:
            if kind == "cloud":
                self.last_cloud = time.monotonic()
            entry = self.parts.setdefault(stamp, {})
            entry[kind] = msg
            if len(entry) == 4:
                del self.parts[stamp]
                from airside_perception.tools.curate import xyzi_of

                self._score(stamp, xyzi_of(decoded(entry["cloud"])), entry)

    def _score(self, stamp: int, points: np.ndarray, e: dict) -> None:
        self.scored += 1
        truth = np.frombuffer(bytes(e["truth"].labels), np.uint8)
        served = _to_airside(e["served"])
        person = classes.CLASS_IDS["person"]
        gt, pr = truth == person, served == person
        if gt.sum() >= 30 and (gt & pr).sum() / max((gt | pr).sum(), 1) < 0.5:
            self.wrong[stamp] = "person_iou"
            return
        for d in e["objects"].detections:
            if d.label_name != "person" or np.hypot(d.center.x, d.center.y) > NEAR_M:
                continue
            inside = (np.abs(points[:, 0] - d.center.x) <= d.size.x / 2 + 0.1) & \
                     (np.abs(points[:, 1] - d.center.y) <= d.size.y / 2 + 0.1)
            inside &= truth == person
            if inside.sum() >= 10 and pr[inside].mean() < 0.5:
                self.wrong[stamp] = "near_person_missed"
                return


def _to_airside(msg) -> np.ndarray:
    raw = np.frombuffer(bytes(msg.labels), np.uint8)
    lookup = np.full(256, classes.UNLABELLED, np.uint8)
    for i, name in enumerate(msg.class_names):
        if name in classes.CLASS_IDS and i < 255:
            lookup[i] = classes.CLASS_IDS[name]
    return lookup[raw]


def drive(work: str, bag: str, scale: Dict[str, int], log):
    """Plays the drive through the graph; returns (the running launch, the scorer)."""
    import rosgraph
    import rospy

    launch = subprocess.Popen(["roslaunch", "airside_perception", "data_loop.launch", f"bag:={bag}",
                               f"work_dir:={work}", f"recorder_config:={os.path.join(work, 'recorder.yaml')}"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 60
    while not rosgraph.is_master_online() and time.monotonic() < end:
        time.sleep(0.5)
    rospy.init_node("data_loop", disable_signals=True)
    scorer = DriveScorer()
    deadline = time.monotonic() + 90 + scale["drive"] * 0.5
    while time.monotonic() < deadline:
        time.sleep(1.0)
        with scorer.lock:
            done = scorer.scored >= scale["drive"] * 0.95 or (
                scorer.scored > 0 and time.monotonic() - scorer.last_cloud > 6.0)
        if done:
            break
    time.sleep(4.0)  # the recorder closes its last recording (flush_s)
    return launch, scorer


def trigger_quality(recordings: str, scorer: DriveScorer) -> Dict[str, object]:
    from airside_perception.recording.store import read_index

    entries = read_index(os.path.join(recordings, "index.jsonl"))
    counts: Dict[str, int] = {}
    recorded = {}
    for e in entries:
        for stamp_s, names in e.get("triggered", []):
            recorded[int(round(stamp_s * 1e9))] = names
            for n in names:
                counts[n] = counts.get(n, 0) + 1
    wrong = set(scorer.wrong)
    hits = len([s for s in recorded if any(abs(s - w) < 1_000_000 for w in wrong)])
    caught = len([w for w in wrong if any(abs(s - w) < 1_000_000 for s in recorded)])
    return {"triggers": counts, "recordings": len(entries), "triggered_clouds": len(recorded),
            "clouds_scored": scorer.scored, "wrong_clouds": len(wrong),
            "precision": round(hits / len(recorded), 4) if recorded else None,
            "recall": round(caught / len(wrong), 4) if wrong else None}


def rehearsal(export: str, n: int) -> None:
    """Old-apron scans with their labels beside the curated ones (the team's labelled archive)."""
    from airside_perception.sim.world import make_scan

    names = sorted(os.listdir(os.path.join(export, "velodyne")))
    k = len(names)
    for seed in split_seeds("train", n + 5000)[5000:]:
        s = make_scan(int(seed))
        s.points.astype(np.float32).tofile(os.path.join(export, "velodyne", f"{k:06d}.bin"))
        labels = np.where(s.labels == classes.UNLABELLED, 0, s.labels.astype(np.uint32) + 1).astype(np.uint32)
        labels.tofile(os.path.join(export, "labels", f"{k:06d}.label"))
        k += 1


def accuracy(engines_dir: str, version: str, site: str, n: int, detection: str) -> Dict[str, float]:
    """mIoU, person IoU and the monitor's mean trust of segmentation ``version``, and the mAP of
    ``detection`` (not fine-tuned here: the same before and after), on ``n`` test scans of ``site``."""
    from airside_perception.evaluation.metrics import DetectionMeter, SegmentationMeter
    from airside_perception.pipelines import store
    from airside_perception.pipelines.host import PerceptionHost
    from airside_perception.sim.sites import site_scan

    host = PerceptionHost([store.open_engine(store.load_version(engines_dir, t, v), "onnxruntime", 2)
                           for t, v in ((TASK, version), ("detection", detection))])
    meter, det, trust = SegmentationMeter(), DetectionMeter(), []
    names = classes.DETECTION_CLASS_NAMES
    threshold = host.engine("detection").decode.score_threshold
    for seed in split_seeds("test", n):
        s = site_scan(int(seed), site)
        frame = host.process(s.points)
        meter.add(s.labels, frame.results[TASK].labels)
        b = frame.results["detection"].boxes
        det.add(s.boxes, [classes.CLASS_NAMES[i] for i in s.box_labels], s.box_points, b.boxes,
                [names[i] for i in b.labels], b.scores, threshold)
        if TASK in frame.trust:
            trust.append(frame.trust[TASK].trust)
    host.close()
    m = meter.summary(only_present=True)
    return {"miou": round(m["miou"], 2), "person_iou": m["iou"]["person"], "map": round(det.summary()["map"], 2),
            "trust": round(float(np.mean(trust)), 3) if trust else None}


def swap(work: str, version: str) -> Dict[str, object]:
    import rospy

    from airside_perception.srv import SwapEngine

    rospy.wait_for_service("/model_manager/swap_engine", timeout=60)
    r = rospy.ServiceProxy("/model_manager/swap_engine", SwapEngine)(
        TASK, os.path.join(work, "engines", TASK, version))
    return {"success": bool(r.success), "message": r.message, "active_version": r.active_version}


def quota_soak(work: str, minutes: float, max_bytes: float) -> Dict[str, object]:
    """The graph on simulated streets (every cycle out of distribution) for ``minutes`` with the
    recorder's rate limits at 2 s and a quota of ``max_bytes``: the largest size the recordings
    directory reached, sampled every second."""
    from airside_perception.ros.scenarios import KITTI_MOUNT, make_feeds

    feeds = make_feeds(os.path.join(work, "feeds"), frames=30)
    rec_dir = os.path.join(work, "quota_recordings")
    cfg = yaml.safe_load(open(os.path.join(PACKAGE, "config", "data_recorder.yaml")))
    cfg.update(min_interval_s={k: 2.0 for k in cfg["min_interval_s"]}, min_free_bytes=0.0,
               min_recording_interval_s=2.0)
    config = os.path.join(work, "quota_recorder.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    log = open(os.path.join(work, "quota_soak.log"), "w")
    launch = subprocess.Popen(["roslaunch", "airside_perception", "bench.launch", f"bag:={feeds['street']}",
                               f"out:={os.path.join(work, 'quota_bench.txt')}", f"duration_s:={minutes * 60:.0f}",
                               "swap_path:=none", "intensity_max:=1.0", f"mount:={KITTI_MOUNT}",
                               f"recordings_dir:={rec_dir}",
                               f"record_max_bytes:={max_bytes:.0f}", f"recorder_config:={config}",
                               "simplex_standby:=false"], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    seen, samples = 0, 0
    try:
        end = time.monotonic() + minutes * 60 + 20
        while time.monotonic() < end and launch.poll() is None:
            time.sleep(1.0)
            if os.path.isdir(rec_dir):
                size = sum(os.path.getsize(os.path.join(rec_dir, f)) for f in os.listdir(rec_dir)
                           if os.path.isfile(os.path.join(rec_dir, f)))
                seen, samples = max(seen, size), samples + 1
    finally:
        stop_launch(launch)
        log.close()
    from airside_perception.recording.store import read_index

    entries = read_index(os.path.join(rec_dir, "index.jsonl"))
    return {"minutes": minutes, "quota_bytes": int(max_bytes), "max_bytes_seen": int(seen), "samples": samples,
            "recordings_kept": len(entries), "held": seen <= max_bytes}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--work-dir", default="bench_results/data_loop")
    ap.add_argument("--out", default=None, help="the result JSON (docs/results/data_loop.json for the full run)")
    ap.add_argument("--quota-minutes", type=float, default=0.0, help="instead of the loop: the quota soak, this "
                                                                     "long, merged into --out")
    ap.add_argument("--quota-bytes", type=float, default=3e8, help="the quota soak's record_max_bytes")
    ap.add_argument("--recorder-cost-rounds", type=int, default=0, help="instead of the loop: neural P99 with and "
                                                                        "without the recorder, merged into --out")
    ap.add_argument("--recorder-cost-s", type=float, default=45.0)
    args = ap.parse_args(argv)
    if args.quota_minutes > 0 or args.recorder_cost_rounds > 0:
        work = os.path.abspath(args.work_dir)
        os.makedirs(work, exist_ok=True)
        extra: Dict[str, object] = {}
        if args.recorder_cost_rounds > 0:
            from airside_perception.ros.scenarios import recorder_cost

            cost = recorder_cost(os.path.join(work, "cost"), args.recorder_cost_s, args.recorder_cost_rounds)
            extra.update(recorder_p99_ms={"with": cost["with"], "without": cost["without"]}, recorder_cost=cost)
        if args.quota_minutes > 0:
            soak = quota_soak(work, args.quota_minutes, args.quota_bytes)
            extra.update(quota_bytes=soak["quota_bytes"], max_bytes_seen=soak["max_bytes_seen"], quota_soak=soak)
        extra["measured_on"] = cli.machine()
        print(json.dumps(extra, indent=1))
        if args.out:
            data = json.load(open(args.out)) if os.path.isfile(args.out) else {}
            data.update(extra)
            with open(args.out, "w") as fh:
                json.dump(data, fh, indent=1)
        return 0
    scale, work = SCALES[args.scale], os.path.abspath(args.work_dir)
    from airside_perception.tools import curate as curate_mod
    from airside_perception.tools.bench import configured_versions

    serving = configured_versions()[TASK]
    os.makedirs(work, exist_ok=True)
    log = open(os.path.join(os.path.dirname(work) or ".", "data_loop.log"), "w")
    result: Dict[str, object] = {"site": SITE, "scale": args.scale, "settings": scale, "serving": serving,
                                 "new_version": NEW_VERSION}
    print(f"[1/4] drive: {scale['drive']} clouds of {SITE} through full.launch with the recorder", flush=True)
    bag = prepare(work, scale, log)
    launch, scorer = drive(work, bag, scale, log)
    try:
        quality = trigger_quality(os.path.join(work, "recordings"), scorer)
        result.update(triggers=quality.pop("triggers"), precision=quality.pop("precision"),
                      recall=quality.pop("recall"), drive=quality)
        print(f"      {quality}; precision {result['precision']}, recall {result['recall']}", flush=True)
        print("[2/4] curate: the triggered clouds, labelled by the simulator's ground truth", flush=True)
        export = os.path.join(work, "export")
        summary = curate_mod.curate(os.path.join(work, "recordings"), export, pre_labels="ground_truth",
                                    overwrite=True)
        result["curated_clouds"] = summary["exported_clouds"]
        rehearsal(export, scale["rehearsal"])
        print(f"[3/4] fine-tune {TASK} {serving} -> {NEW_VERSION}, recalibrate, gate, sign, swap", flush=True)
        tool = [sys.executable, "-m", "airside_perception.tools.engine_tool"]
        engines = os.path.join(work, "engines")
        _run([sys.executable, "-m", "airside_perception.training.train", "--tasks", TASK, "--data",
              f"semantickitti:{export}", "--class-map", os.path.join(export, "class_map.yaml"), "--init",
              f"{TASK}=" + os.path.join(PACKAGE, "models", f"{TASK}-{serving}.pt"), "--steps", str(scale["steps"]),
              "--batch", "8", "--lr", str(scale["lr"]), "--workers", "1", "--out-dir", os.path.join(work, "train"),
              "--overwrite"], log)
        _run(tool + ["export", "--task", TASK, "--checkpoint", os.path.join(work, "train", f"{TASK}.pt"),
                     "--version", NEW_VERSION, "--engines-dir", engines], log)
        _run(tool + ["calibrate-monitor", "--task", TASK, "--version", NEW_VERSION, "--engines-dir", engines,
                     "--data", f"semantickitti:{export}"], log)
        gates = subprocess.run(tool + ["validate", "--task", TASK, "--baseline", serving, "--candidate", NEW_VERSION,
                                       "--engines-dir", engines, "--scans", str(scale["gate_scans"]), "--frames",
                                       str(scale["frames"]), "--shifted-scans", str(scale["gate_scans"])],
                               stdout=log, stderr=subprocess.STDOUT)
        report = json.load(open(os.path.join(engines, TASK, NEW_VERSION, "gate_report", "gate_report.json")))
        result["gates"] = {"passed": report["passed"],
                           "failed": [g["name"] for g in report["gates"] if not g["passed"]], "exit": gates.returncode}
        _run(tool + ["sign", "--task", TASK, "--version", NEW_VERSION, "--engines-dir", engines, "--key",
                     os.path.join(work, "fleet.key")], log)
        result["signed"] = os.path.isfile(os.path.join(engines, TASK, NEW_VERSION, "signature.json"))
        result["swap"] = swap(work, NEW_VERSION) if report["passed"] else {
            "success": False, "message": "not attempted: the gates failed (an operator would not swap it)"}
        print(f"      gates {result['gates']}; swap {result['swap']}", flush=True)
    finally:
        stop_launch(launch)
    print("[4/4] before / after on the new site and the old apron", flush=True)
    engines = os.path.join(work, "engines")
    det = configured_versions()["detection"]
    result["before"] = accuracy(engines, serving, SITE, scale["test"], det)
    result["after"] = accuracy(engines, NEW_VERSION, SITE, scale["test"], det)
    result["old_apron"] = {"before": accuracy(engines, serving, "apron", scale["test"], det),
                           "after": accuracy(engines, NEW_VERSION, "apron", scale["test"], det)}
    result.update(machine=cli.machine(), date=time.strftime("%Y-%m-%d"), command=cli.command_line(argv, PROG))
    print(json.dumps({k: result[k] for k in ("precision", "recall", "before", "after", "old_apron", "gates", "swap")
                      if k in result}, indent=1))
    if args.out:
        data = json.load(open(args.out)) if os.path.isfile(args.out) else {}
        data.update(result)
        with open(args.out, "w") as fh:
            json.dump(data, fh, indent=1)
    log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
