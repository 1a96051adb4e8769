"""The distribution-shift monitor: calibration and measurement.

    python -m airside_perception.tools.monitor calibrate --version-of segmentation=1.2.0 ...
    python -m airside_perception.tools.monitor measure --json docs/results/accuracy/monitor.json \
        [--real semantickitti:DIR ...]

``calibrate`` (also ``engine_tool calibrate-monitor``) runs the engines on in-distribution
scans (the synthetic validation split over every density and condition, or the user's own
scans) and writes each task's limits into its manifest's ``monitor`` section.
``measure`` reports the false-alarm rate on the synthetic test split and, for every kind of
shifted input this package can build (wrong mount height or pitch, wrong intensity scale,
other beam patterns, street scenes, and real scans where given), the detection rate at the
threshold and the AUROC of the frame score.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from airside_perception.engines.manifest import write_manifest
from airside_perception.frames import pose_from_xyz_rpy, transform_points
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.pipelines.trust import calibrate
from airside_perception.sim.offsite import generate_street_scene
from airside_perception.sim.scanner import LidarSpec, _rings, scan
from airside_perception.sim.scene import generate_scene
from airside_perception.sim.world import make_scan, split_seeds

DENSITIES = ("compact", "default", "dense")
DEFAULT_FALSE_ALARM_RATE = 0.002
DEFAULT_MARGIN = 1.25


def synthetic_clouds(split: str, n_scans: int) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, points) of the first ``n_scans`` of ``split``, densities in turn."""
    for i, seed in enumerate(split_seeds(split, n_scans)):
        density = DENSITIES[i % len(DENSITIES)]
        yield f"{split}/{seed}/{density}", make_scan(int(seed), density).points


def feature_rows(host: PerceptionHost, clouds: Iterable[Tuple[str, np.ndarray]], progress: str = "") \
        -> Dict[str, List[Dict[str, float]]]:
    """Per task, the monitor statistics of every cloud."""
    from tqdm import tqdm

    rows: Dict[str, List[Dict[str, float]]] = {t: [] for t in host.tasks}
    for _, points in tqdm(clouds, desc=progress or "clouds", disable=not progress, unit="cloud"):
        frame = host.process(points)
        for task in host.tasks:
            rows[task].append(frame.features(task))
    return rows


def calibrate_host(host: PerceptionHost, clouds: Iterable[Tuple[str, np.ndarray]], split: str,
                   false_alarm_rate: float, margin: float, write: bool = True, progress: bool = True) -> Dict:
    """Calibrates every hosted task on ``clouds`` and (with ``write``) stores the limits in each
    serving manifest. Returns ``{task: monitor section}``."""
    rows = feature_rows(host, clouds, "calibrate" if progress else "")
    out = {}
    for task in host.tasks:
        cal = calibrate(rows[task], task, false_alarm_rate, margin, split)
        out[task] = cal.to_dict()
        if write:
            manifest = host.engine(task).manifest
            write_manifest(replace(manifest, monitor=cal.to_dict()), manifest.directory)
    return out


# --------------------------------------------------------------------------- shifted inputs
def _rig(n_beams: int, lo_deg: float, hi_deg: float, columns: int, height_m: float) -> Tuple[LidarSpec, ...]:
    return (LidarSpec(f"roof{n_beams}", (0.0, 0.0, height_m), 0.0, _rings(n_beams, lo_deg, hi_deg, 0.0), columns,
                      360.0, 120.0, 0.8, 0.02, 0.02),)


#: One roof sensor of another kind instead of the vehicle's three.
BEAM_RIGS = {
    "beams_16 (VLP-16, +-15 deg)": _rig(16, -15.0, 15.0, 1800, 1.9),
    "beams_32 (HDL-32E, -30.7..10.7 deg)": _rig(32, -30.67, 10.67, 1800, 1.9),
    "beams_64 (HDL-64E alone, -24.9..2 deg)": _rig(64, -24.9, 2.0, 2000, 1.73),
    "beams_128 (OS-128, +-22.5 deg)": _rig(128, -22.5, 22.5, 1024, 1.9),
}


Labelled = Tuple[np.ndarray, Optional[np.ndarray]]  # points (N, 4), labels (N,) or None


def _moved(matrix: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pts: transform_points(pts.copy(), matrix)


def _intensity(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(pts: np.ndarray) -> np.ndarray:
        out = pts.copy()
        out[:, 3] *= factor
        return out
    return apply


#: Cloud-level shifts of synthetic test scans.
CLOUD_SHIFTS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sensor frame, no transform (z - 1.73 m)": _moved(pose_from_xyz_rpy(0, 0, -1.73, 0, 0, 0)),
    "mount height + 0.5 m": _moved(pose_from_xyz_rpy(0, 0, 0.5, 0, 0, 0)),
    "mount height - 0.5 m": _moved(pose_from_xyz_rpy(0, 0, -0.5, 0, 0, 0)),
    "pitch 3 deg": _moved(pose_from_xyz_rpy(0, 0, 0, 0, math.radians(3), 0)),
    "pitch -5 deg": _moved(pose_from_xyz_rpy(0, 0, 0, 0, math.radians(-5), 0)),
    "roll 4 deg": _moved(pose_from_xyz_rpy(0, 0, 0, math.radians(4), 0, 0)),
    "intensity 0..1 read as 0..255": _intensity(1 / 255.0),
    "intensity gain x0.3": _intensity(0.3),
    "intensity 0..65535 clipped (x16)": lambda p: np.minimum(_intensity(16.0)(p), 65535.0),
}


def _shifted_scan(seed: int, density: str, shift) -> Labelled:
    s = make_scan(seed, density)
    return shift(s.points), s.labels


def _raw(scene, rig, seed: int) -> Labelled:
    raw = scan(scene, rig, np.random.default_rng(seed))
    return raw.points, raw.labels


def shifted_sets(n_scans: int, real: Sequence[Tuple[str, List[np.ndarray]]] = ()) \
        -> Iterator[Tuple[str, Iterator[Labelled]]]:
    """(name, clouds with labels) of every shifted input set, ``n_scans`` each (real sets: all
    their scans, without labels)."""
    seeds = [int(s) for s in split_seeds("test", n_scans)]
    for name, shift in CLOUD_SHIFTS.items():
        yield name, (_shifted_scan(s, DENSITIES[i % 3], shift) for i, s in enumerate(seeds))
    for name, rig in BEAM_RIGS.items():
        yield name, (_raw(generate_scene(s), rig, s) for s in seeds)
    yield "street scenes (buildings, trees, cars)", (_raw(generate_street_scene(s), _rigs_default(), s)
                                                     for s in seeds)
    for name, clouds in real:
        yield name, ((c, None) for c in clouds)


def _rigs_default():
    from airside_perception.sim.scanner import make_rig

    return make_rig("default")


def auroc(in_dist: np.ndarray, shifted: np.ndarray) -> float:
    """Probability that a shifted frame scores higher than an in-distribution one (ties 1/2)."""
    if len(in_dist) == 0 or len(shifted) == 0:
        return float("nan")
    both = np.concatenate([in_dist, shifted])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average ranks of ties
        tie = both == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    r_shift = ranks[len(in_dist):].sum()
    return float((r_shift - len(shifted) * (len(shifted) + 1) / 2) / (len(in_dist) * len(shifted)))


def frame_scores(host: PerceptionHost, clouds: Iterable[Labelled]) -> Tuple[Dict[str, np.ndarray], Dict]:
    """Per task and ``any`` (the largest over tasks, what the simplex sees), one score per
    cloud; and what the frames say besides: segmentation mIoU where labels exist, and how
    often each statistic set the score of a flagged frame."""
    from airside_perception.evaluation.metrics import SegmentationMeter

    out: Dict[str, List[float]] = {t: [] for t in host.tasks}
    out["any"] = []
    meter, worst = SegmentationMeter(), {}
    has_labels = False
    for points, labels in clouds:
        frame = host.process(points)
        scores = {t: frame.trust[t] for t in frame.trust}
        for t, s in scores.items():
            out[t].append(s.score)
        top = max(scores.values(), key=lambda s: s.score) if scores else None
        out["any"].append(top.score if top else float("nan"))
        if top is not None and top.is_out_of_distribution:
            worst[top.worst] = worst.get(top.worst, 0) + 1
        if labels is not None and "segmentation" in frame.results:
            meter.add(labels, frame.results["segmentation"].labels)
            has_labels = True
    extra = {"flagged_by": worst, "segmentation_miou": meter.summary(only_present=True)["miou"] if has_labels
             else None}
    return {k: np.array(v) for k, v in out.items()}, extra


def measure(host: PerceptionHost, n_scans: int, real: Sequence[Tuple[str, List[np.ndarray]]] = (),
            progress: bool = True) -> Dict:
    from tqdm import tqdm

    in_clouds = (_shifted_scan(int(s), DENSITIES[i % 3], lambda p: p)
                 for i, s in enumerate(split_seeds("test", n_scans)))
    in_dist, in_extra = frame_scores(host, tqdm(in_clouds, total=n_scans, desc="test split", disable=not progress))
    result = {"in_distribution": {"set": f"synthetic test split, first {n_scans} seeds, densities "
                                         f"{'/'.join(DENSITIES)} in turn, all conditions",
                                  "scans": n_scans,
                                  "false_alarm_rate": {k: float((v > 1.0).mean()) for k, v in in_dist.items()},
                                  "score_p50": {k: float(np.median(v)) for k, v in in_dist.items()},
                                  "score_p99": {k: float(np.percentile(v, 99)) for k, v in in_dist.items()},
                                  **in_extra},
              "threshold": 1.0, "shifted": []}
    for name, clouds in shifted_sets(n_scans, real):
        scores, extra = frame_scores(host, tqdm(clouds, desc=name[:30], disable=not progress))
        result["shifted"].append({
            "set": name, "scans": int(len(scores["any"])), **extra,
            "detection_rate": {k: float((v > 1.0).mean()) for k, v in scores.items()},
            "auroc": {k: auroc(in_dist[k], v) for k, v in scores.items()},
            "score_p50": {k: float(np.median(v)) for k, v in scores.items()}})
    return result


def markdown_table(result: Dict) -> str:
    rows = ["| input | scans | flagged at threshold (any task) | AUROC (any task) | seg / det / occ AUROC "
            "| segmentation mIoU | flagged by |", "|---|---|---|---|---|---|---|"]
    ind = result["in_distribution"]
    rows.append(f"| {ind['set']} (false alarms) | {ind['scans']} | {100 * ind['false_alarm_rate']['any']:.1f} % "
                f"| | | {_num(ind['segmentation_miou'])} | {_top(ind['flagged_by'])} |")
    for s in result["shifted"]:
        per = " / ".join(f"{s['auroc'].get(t, float('nan')):.3f}" for t in ("segmentation", "detection", "occupancy"))
        rows.append(f"| {s['set']} | {s['scans']} | {100 * s['detection_rate']['any']:.1f} % | "
                    f"{s['auroc']['any']:.3f} | {per} | {_num(s['segmentation_miou'])} | {_top(s['flagged_by'])} |")
    return "\n".join(rows)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _top(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3]) or "-"


def dump(result: Dict, path: Optional[str]) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)


def main(argv: Optional[List[str]] = None) -> int:
    import os

    from airside_perception import cli
    from airside_perception.errors import AirsideError
    from airside_perception.evaluation import semantickitti
    from airside_perception.frames import IntensityScale, parse_sensor_pose
    from airside_perception.pipelines import store

    prog = "airside_perception.tools.monitor"
    parser = cli.Parser(prog=prog, description="Measure the distribution-shift monitor.")
    parser.add_argument("--engines-dir", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..",
                                                                               "..", "..", "engines")))
    parser.add_argument("--versions", nargs=3, metavar=("SEG", "DET", "OCC"),
                        help="versions of segmentation, detection, occupancy (default: the versions in "
                             "config/inference_host.yaml, as the inference host starts)")
    parser.add_argument("--scans", type=cli.positive_int, default=150, help="scans per set")
    parser.add_argument("--real", nargs="*", default=[], metavar="NAME=semantickitti:DIR[@x,y,z,r,p,y@IMAX]",
                        help="real scans: a name, the directory, the sensor pose and intensity range")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if not args.versions:
        from airside_perception.tools.bench import configured_versions

        configured = configured_versions()
        args.versions = [configured[t] for t in ("segmentation", "detection", "occupancy")]
    try:
        host = PerceptionHost([store.open_engine(store.load_version(args.engines_dir, t, v), "onnxruntime", 2)
                               for t, v in zip(("segmentation", "detection", "occupancy"), args.versions)])
        real = []
        for item in args.real:
            name, _, rest = item.partition("=")
            data, pose, imax = (rest.split("@") + ["0,0,0,0,0,0", "255"])[:3]
            scale = IntensityScale(float(imax), host.bev_spec.intensity_max)
            scans = semantickitti.read_scans(semantickitti.data_dir(data), None, parse_sensor_pose(pose), scale,
                                             need_labels=False)
            real.append((name, [s.points for s in scans]))
    except (AirsideError, ValueError) as exc:
        cli.fail(prog, str(exc))
    missing = [t for t in host.tasks if host.engine(t).monitor is None]
    if missing:
        cli.fail(prog, f"{missing} have no monitor section: run engine_tool calibrate-monitor first")
    result = measure(host, args.scans, real)
    result["versions"] = dict(zip(host.tasks, args.versions))
    print(markdown_table(result))
    dump(result, args.json)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
