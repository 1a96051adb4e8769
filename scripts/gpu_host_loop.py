#!/usr/bin/env python3
"""The inference host's device frame loop, measured through ``PerceptionHost`` on a CUDA GPU.

    PYTHONPATH=src python3 scripts/gpu_host_loop.py --kitti DIR --out docs/results/gpu_path.json

Engines: the configured default versions (``config/inference_host.yaml``), each opened by the
real ``TensorRTBackend`` over the TensorRT stand-in (``scripts/tensorrt_stand_in.py``: the
versions' PyTorch weights in ``models/`` as CUDA graphs; TensorRT itself cannot be installed
here). Three hosts over the same engines:

* ``device``: ``preprocessing_device`` gpu, every engine takes device buffers: the device loop;
* ``round_trip``: the same engines fed host arrays after the GPU encoding (today's path when an
  engine takes host arrays: device -> host -> device -> host);
* ``host_path``: the NumPy encoding and the same engines through host arrays: the reference
  the device loop's outputs must equal.

Measured: the outputs of ``device`` against ``host_path`` on the golden clouds and the KITTI
scans (labels, boxes, grid cells equal; scores and statistics to float rounding), and label
agreement with ONNX Runtime on the shipped models; P50 / P99 / max of ``--runs`` frames of the
largest scan (host-memory cloud in, host-memory results out, wall clock) and of each part (CUDA
events); the device memory the loop holds before and after; one injected engine failure
(``execute_async_v3`` returning False) and the frames after it. Merged into ``--out`` under
``host_loop``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, HERE)

from airside_perception import cli  # noqa: E402
from airside_perception.evaluation.semantickitti import kitti_clouds  # noqa: E402
from airside_perception.pipelines import store  # noqa: E402
from airside_perception.pipelines.host import PerceptionHost  # noqa: E402
from airside_perception.pipelines.tasks import TaskEngine  # noqa: E402
from airside_perception.tools.bench import configured_versions  # noqa: E402

CAPACITY = 160_000  # segmentation's profile maximum (points)


def stand_in_engines(torch, versions, workdir):
    """TaskEngines of ``versions`` through TensorRTBackend over the stand-in."""
    from tensorrt_stand_in import StandInEngine, StandInTensorRT

    from airside_perception.backends.tensorrt_backend import TensorRTBackend
    from airside_perception.training import checkpoint

    trt = StandInTensorRT()
    sys.modules["tensorrt"] = trt
    engines, stand_ins = [], {}
    for task, version in versions.items():
        manifest = store.load_version(os.path.join(ROOT, "engines"), task, version)
        net = checkpoint.load_network(task, os.path.join(ROOT, "models", f"{task}-{version}.pt")).cuda().eval()
        inputs = {t.name: (tuple(-1 if isinstance(d, str) else d for d in t.shape), np.dtype(t.dtype))
                  for t in manifest.inputs}
        stand_ins[task] = StandInEngine(torch, net, inputs, [t.name for t in manifest.outputs], CAPACITY)
        blob = f"stand-in {task} {version}".encode()
        trt.add(blob, stand_ins[task])
        path = os.path.join(workdir, f"{task}-{version}.engine")
        with open(path, "wb") as fh:
            fh.write(blob)
        engines.append(TaskEngine(manifest, TensorRTBackend(path, manifest.inputs, manifest.outputs).activate()))
    return engines, stand_ins


def onnx_engines(versions):
    return [store.open_engine(store.load_version(os.path.join(ROOT, "engines"), t, v), "onnxruntime", 4)
            for t, v in versions.items()]


def compare(got, want):
    """Differences between two FrameResults of the same cloud."""
    out = {"errors": sorted(set(got.errors) | set(want.errors))}
    s, r = got.results["segmentation"], want.results["segmentation"]
    out["labels_differing"] = int((s.labels != r.labels).sum())
    out["scores_max_abs_diff"] = float(np.abs(s.scores - r.scores).max()) if len(s.scores) else 0.0
    d, rd = got.results["detection"].boxes, want.results["detection"].boxes
    out["boxes_equal"] = bool(d.boxes.shape == rd.boxes.shape and np.array_equal(d.labels, rd.labels)
                              and np.allclose(d.boxes, rd.boxes, rtol=1e-4, atol=1e-4))
    cells, ref_cells = got.results["occupancy"].grid.cells, want.results["occupancy"].grid.cells
    out["grid_cells_differing"] = int((cells != ref_cells).sum())
    rel = []
    for task in got.results:
        feats = {**{f"{task}.{k}": v for k, v in got.results[task].features.items()},
                 f"{task}.confidence": got.results[task].confidence}
        ref = {**{f"{task}.{k}": v for k, v in want.results[task].features.items()},
               f"{task}.confidence": want.results[task].confidence}
        rel += [abs(v - ref[k]) / max(abs(ref[k]), 1e-6) for k, v in feats.items() if np.isfinite(ref[k])]
    rel += [abs(v - want.input_features[k]) / max(abs(want.input_features[k]), 1e-6)
            for k, v in got.input_features.items() if np.isfinite(want.input_features[k])]
    out["statistics_max_rel_diff"] = float(max(rel))
    out["trust_max_abs_diff"] = float(max(abs(got.trust[t].trust - want.trust[t].trust) for t in want.trust))
    return out


def summary(values):
    v = np.asarray(values, float)
    return {"p50_ms": round(float(np.percentile(v, 50)), 4), "p99_ms": round(float(np.percentile(v, 99)), 4),
            "max_ms": round(float(v.max()), 4)}


def timed_frames(host, cloud, runs):
    walls, parts = [], {}
    for _ in range(20):
        host.process(cloud)
    for _ in range(runs):
        t0 = time.perf_counter()
        frame = host.process(cloud)
        walls.append((time.perf_counter() - t0) * 1e3)
        for k, v in frame.parts.items():
            parts.setdefault(k, []).append(v)
    return walls, parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", default="", help="the directory holding velodyne/*.bin (real scans)")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA here: the device loop's branches are tested on the CPU by test_device_loop.py")
        return 0
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    versions = configured_versions()
    golden = np.load(os.path.join(ROOT, "engines", "segmentation", versions["segmentation"], "golden.npz"))
    clouds = {f"golden {k}": golden[k] for k in golden.files if k.startswith("cloud_")}
    if args.kitti:
        clouds.update({f"kitti {s.name}": s.points for s in kitti_clouds(args.kitti)})
    workdir = tempfile.mkdtemp()
    engines, stand_ins = stand_in_engines(torch, versions, workdir)
    device = PerceptionHost(engines, "gpu")
    round_trip = PerceptionHost(engines, "gpu")
    round_trip._device_loop = None  # the engines fed host arrays after the GPU encoding
    host_path = PerceptionHost(engines, "cpu")
    print("device host:", device.frame_loop(), flush=True)
    reference = PerceptionHost(onnx_engines(versions), "cpu")

    equality, agreement = {}, {}
    for name, cloud in clouds.items():
        got = device.process(cloud)
        equality[name] = {"points": int(len(cloud)), **compare(got, host_path.process(cloud))}
        ort = reference.process(cloud)
        agreement[name] = {
            "labels_agree": round(float((got.results["segmentation"].labels
                                         == ort.results["segmentation"].labels).mean()), 5),
            "grid_cells_agree": round(float((got.results["occupancy"].grid.cells
                                             == ort.results["occupancy"].grid.cells).mean()), 5),
            "boxes": [len(got.results["detection"].boxes.boxes), len(ort.results["detection"].boxes.boxes)]}
        print(name, equality[name], agreement[name], flush=True)
    equal = all(not e["errors"] and e["labels_differing"] == 0 and e["boxes_equal"] and e["grid_cells_differing"] == 0
                and e["scores_max_abs_diff"] < 1e-4 and e["statistics_max_rel_diff"] < 1e-3 for e in equality.values())

    big_name = max(clouds, key=lambda k: len(clouds[k]) if k.startswith("kitti") or not args.kitti else 0)
    big = clouds[big_name]
    memory_before = device._device_loop.device.memory_in_use()
    for s in stand_ins.values():
        s.cpu_s = 0.0
    walls, parts = timed_frames(device, big, args.runs)
    stand_in_ms = sum(s.cpu_s for s in stand_ins.values()) * 1e3 / (args.runs + 20)
    memory_after = device._device_loop.device.memory_in_use()
    rt_walls, _ = timed_frames(round_trip, big, args.runs)
    cpu_walls, _ = timed_frames(host_path, big, max(args.runs // 5, 20))

    stand_ins["detection"].fail_next = True
    failed = device.process(big)
    after = [device.process(big) for _ in range(3)]
    fault = {"injected": "detection: execute_async_v3 returned False for one frame",
             "frame_errors": failed.errors, "frame_results": sorted(failed.results),
             "frames_after_clean": all(not f.errors and f.frame_loop == "device" for f in after)}
    print("fault:", fault, flush=True)

    host_loop = {
        "device": torch.cuda.get_device_name(0), "points": int(len(big)), "cloud": big_name,
        "versions": versions, "runs": args.runs, **summary(walls),
        "parts": {k.replace("_ms", ""): summary(v) for k, v in parts.items()},
        "stand_in_cpu_ms_per_frame": round(stand_in_ms, 4),
        "parts_note": "parts without 'cpu.': CUDA events on the device timeline (a task's inference runs from the "
                      "end of the encode to its engine's end, so it includes the issue of the tasks before it); "
                      "'cpu.' parts: the issuing thread's time per phase; stand_in_cpu_ms_per_frame: the part of "
                      "it spent inside the TensorRT stand-in's execute_async_v3 (PyTorch views and graph replay; "
                      "TensorRT's own call is not measured here)",
        "round_trip": {"what": "same engines, GPU encoding, host arrays to and from each engine", **summary(rt_walls)},
        "host_path": {"what": "NumPy encoding on this machine's CPU, same engines through host arrays",
                      **summary(cpu_walls)},
        "memory": {"before": memory_before, "after": memory_after,
                   "grew": memory_before != memory_after},
        "equal_to_host_path": equal, "equality": equality, "agreement_with_onnxruntime": agreement,
        "fault_injection": fault,
        "engines": "TensorRTBackend over the TensorRT stand-in (scripts/tensorrt_stand_in.py): the versions' "
                   "PyTorch weights as CUDA graphs, FP32, TF32 off; TensorRT is not installable here",
        "machine": cli.machine(), "date": time.strftime("%Y-%m-%d"),
        "command": "PYTHONPATH=src python3 scripts/gpu_host_loop.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps({k: host_loop[k] for k in ("p50_ms", "p99_ms", "max_ms", "parts", "round_trip", "memory")},
                     indent=1))
    if args.out:
        data = json.load(open(args.out)) if os.path.isfile(args.out) else {}
        data["host_loop"] = host_loop
        with open(args.out, "w") as fh:
            json.dump(data, fh, indent=1)
    return 0 if equal and fault["frames_after_clean"] and "detection" in fault["frame_errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
