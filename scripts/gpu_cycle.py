#!/usr/bin/env python3
"""One whole perception cycle on the GPU: encode -> three networks -> decode, timed by part.

    PYTHONPATH=src python3 scripts/gpu_cycle.py --kitti DIR --out docs/results/gpu_path.json

The cloud starts on the GPU (its pinned copy is timed by ``check_gpu_ops.py``). Encoding: the
fused kernels of ``ops.gpu_encode``. Networks: the configured default versions' PyTorch weights
(``models/<task>-<version>.pt``), each captured once as a CUDA graph over fixed-size inputs (segmentation's points
padded to ``--capacity``), a stand-in for the TensorRT engines, which cannot be installed here;
with ``--streams`` the three graphs replay on three CUDA streams. Decode on the GPU (CuPy, on
the networks' outputs through DLPack, no copy): the fused kernels of ``ops.gpu_decode``
(segmentation softmax/argmax scattered to every input point; detection peaks, ordering, box
decode and rotated NMS, then one read-back of the detections; occupancy crop and threshold),
and for comparison the CuPy translation of the NumPy decode (NMS on the host). Every GPU decode
is checked against the NumPy decode of the same network outputs. P50 / P99 over ``--runs``
cycles with CUDA events, FP32 and FP16, with and without streams; the result is merged into
``--out`` under ``cycle``.

Without CUDA it runs the same cycle on the CPU (NumPy, eager PyTorch) for a few clouds: a check
of the plumbing, no timing worth reporting.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from airside_perception.evaluation.semantickitti import kitti_clouds  # noqa: E402
from airside_perception.ops import bev, detection, occupancy, segmentation  # noqa: E402
from airside_perception.pipelines import store  # noqa: E402
from airside_perception.pipelines.tasks import TaskEngine  # noqa: E402
from airside_perception.sim.world import make_scan  # noqa: E402
from airside_perception.tools.bench import configured_versions  # noqa: E402

ROOT = os.path.join(HERE, "..")


def default_weights():
    """task -> (version, PyTorch weights) of the versions the inference host is configured with."""
    out = {}
    for task, version in configured_versions().items():
        path = os.path.join("models", f"{task}-{version}.pt")
        if not os.path.isfile(os.path.join(ROOT, path)):
            raise SystemExit(f"{path} is missing: the configured {task} {version} has no PyTorch weights to "
                             f"stand in for its TensorRT engine")
        out[task] = (version, path)
    return out


WEIGHTS = default_weights()


def load_clouds(kitti_root):
    if kitti_root:
        return [s.points for s in kitti_clouds(kitti_root)]
    return [make_scan(110000 + i, "dense").points for i in range(3)]


def decode_params():
    engines = {}
    for task, (version, _) in WEIGHTS.items():
        engines[task] = TaskEngine(store.load_version(os.path.join(ROOT, "engines"), task, version), backend=None)
    return engines


def decode_all(xp, engines, enc, seg_logits, heat, reg, occ_logits):
    """The decodes of ``pipelines.tasks`` on ``xp`` arrays (NumPy: the reference)."""
    labels, scores = segmentation.softmax_max(seg_logits, xp=xp)
    all_labels, all_scores = segmentation.scatter_labels(enc.kept, labels, scores, enc.n_input, xp=xp)
    boxes = detection.decode_centerpoint(heat, reg, engines["detection"].decode, xp=xp)
    occ = engines["occupancy"]
    grid = occupancy.decode_occupancy(occ_logits, occ.bev_spec.half_extent_m, occ.bev_spec.resolution_m,
                                      occ.occ_half_extent_m, occ.occ_threshold, xp=xp)
    return all_labels, all_scores, boxes, grid


def fused_decoder(engines):
    from airside_perception.ops.gpu_decode import FusedDecoder

    occ = engines["occupancy"]
    return FusedDecoder(engines["detection"].decode, occ.bev_spec.half_extent_m, occ.bev_spec.resolution_m,
                        occ.occ_half_extent_m, occ.occ_threshold)


def decode_fused(decoder, enc, seg_logits, heat, reg, occ_logits):
    """The same decodes in the fused kernels of ``ops.gpu_decode``."""
    labels, scores = decoder.segmentation(seg_logits, enc.kept, enc.n_input)
    grid = decoder.occupancy(occ_logits)
    boxes = decoder.detection(heat, reg)  # last: its read-back ends the cycle
    return labels, scores, boxes, grid


def load_networks(torch, device, dtype):
    from airside_perception.training import checkpoint

    nets = {}
    for task, (_, path) in WEIGHTS.items():
        nets[task] = checkpoint.load_network(task, os.path.join(ROOT, path)).to(device=device, dtype=dtype).eval()
    return nets


class GpuCycle:
    """Static input buffers, the three networks as CUDA graphs, streams; ``run(points)``."""

    def __init__(self, torch, cp, nets, engines, dtype, capacity: int, streams: bool, fused_decode: bool = True):
        from airside_perception.ops.gpu_encode import FusedEncoder

        self.torch, self.cp, self.engines, self.streams = torch, cp, engines, streams
        self.decoder = fused_decoder(engines) if fused_decode else None
        self.spec = bev.BevSpec()
        self.encoder = FusedEncoder(self.spec)
        dev = torch.device("cuda")
        s = self.spec.size
        self.capacity = capacity
        self.bev = torch.zeros((1, bev.N_BEV_FEATURES, s, s), device=dev, dtype=dtype)
        self.cells = torch.zeros(capacity, device=dev, dtype=torch.int64)
        self.feats = torch.zeros((capacity, bev.N_POINT_FEATURES), device=dev, dtype=dtype)
        calls = {"segmentation": lambda: nets["segmentation"](self.bev, self.cells, self.feats),
                 "detection": lambda: nets["detection"](self.bev),
                 "occupancy": lambda: nets["occupancy"](self.bev)}
        self.graphs, self.outputs = {}, {}
        self.task_streams = {t: torch.cuda.Stream() for t in calls}
        with torch.no_grad():
            for task, call in calls.items():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        call()
                torch.cuda.current_stream().wait_stream(side)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    self.outputs[task] = call()
                self.graphs[task] = g
        self.events = {}

    def run(self, points):
        """One cycle on a device cloud; returns (encode, networks, decode) CUDA events and results."""
        torch, cp = self.torch, self.cp
        main = torch.cuda.current_stream()
        e = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        e[0].record(main)
        enc = self.encoder.encode(points)
        k = int(enc.kept.shape[0])
        if k > self.capacity:
            raise ValueError(f"{k} encoded points exceed --capacity {self.capacity}")
        self.bev.copy_(torch.from_dlpack(enc.bev))
        self.cells[:k].copy_(torch.from_dlpack(enc.point_cells))
        self.cells[k:].zero_()
        self.feats[:k].copy_(torch.from_dlpack(enc.point_features))
        self.feats[k:].zero_()
        e[1].record(main)
        if self.streams:
            for task, g in self.graphs.items():
                s = self.task_streams[task]
                s.wait_stream(main)
                with torch.cuda.stream(s):
                    g.replay()
            for s in self.task_streams.values():
                main.wait_stream(s)
        else:
            for g in self.graphs.values():
                g.replay()
        e[2].record(main)
        seg = self.outputs["segmentation"][:k].float()
        heat, reg = (t.float() for t in self.outputs["detection"])
        occ = self.outputs["occupancy"].float()
        arrays = (cp.from_dlpack(seg), cp.from_dlpack(heat), cp.from_dlpack(reg), cp.from_dlpack(occ))
        if self.decoder is not None:
            result = decode_fused(self.decoder, enc, *arrays)
        else:  # the CuPy translation of the NumPy decode, for comparison
            result = decode_all(cp, self.engines, enc, *arrays)
        e[3].record(main)
        return e, enc, (seg, heat, reg, occ), result


def summary(values):
    values = sorted(values)
    return {"p50_ms": round(statistics.median(values), 4),
            "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))], 4)}


def check_decode(cp, engines, enc, outputs, gpu_result) -> bool:
    """The GPU decode against the NumPy decode of the same network outputs."""
    seg, heat, reg, occ = (t.cpu().numpy() for t in outputs)
    host_enc = bev.BevInput(cp.asnumpy(enc.bev), cp.asnumpy(enc.kept), cp.asnumpy(enc.point_cells),
                            cp.asnumpy(enc.point_features), enc.n_input, 0, 0)
    ref = decode_all(np, engines, host_enc, seg, heat, reg, occ)
    labels_ok = np.array_equal(cp.asnumpy(gpu_result[0]), ref[0])
    scores_ok = np.allclose(cp.asnumpy(gpu_result[1]), ref[1], rtol=1e-5, atol=1e-6)
    b, rb = gpu_result[2], ref[2]
    boxes_ok = (b.boxes.shape == rb.boxes.shape and np.allclose(b.boxes, rb.boxes, rtol=1e-5, atol=1e-5)
                and np.array_equal(b.labels, rb.labels))
    grid_ok = np.array_equal(cp.asnumpy(gpu_result[3].cells), ref[3].cells)
    return bool(labels_ok and scores_ok and boxes_ok and grid_ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", default="", help="a KITTI recording: the directory holding velodyne/*.bin "
                    "(default: dense synthetic scans)")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--capacity", type=int, default=160_000, help="segmentation's padded point count")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import torch

    clouds = load_clouds(args.kitti)
    engines = decode_params()
    if not torch.cuda.is_available():  # the plumbing on the CPU
        nets = load_networks(torch, "cpu", torch.float32)
        for pts in clouds[:2]:
            enc = bev.encode(pts, bev.BevSpec())
            with torch.no_grad():
                seg = nets["segmentation"](torch.from_numpy(enc.bev), torch.from_numpy(enc.point_cells),
                                           torch.from_numpy(enc.point_features)).numpy()
                heat, reg = (t.numpy() for t in nets["detection"](torch.from_numpy(enc.bev)))
                occ = nets["occupancy"](torch.from_numpy(enc.bev)).numpy()
            labels, _, boxes, grid = decode_all(np, engines, enc, seg, heat, reg, occ)
            print(f"CPU cycle: {len(pts)} points, {int((labels != 255).sum())} labelled, {len(boxes.boxes)} boxes, "
                  f"{int((grid.cells == 100).sum())} occupied cells")
        print("no CUDA: plumbing checked on the CPU, no GPU figures")
        return 0
    import cupy as cp

    results, all_equal = {}, True
    big = max(clouds, key=len)
    variants = [(torch.float32, False, True), (torch.float32, True, True), (torch.float16, False, True),
                (torch.float16, True, True), (torch.float32, False, False)]
    nets = {}
    for dtype, streams, fused in variants:
        if dtype not in nets:
            nets[dtype] = load_networks(torch, "cuda", dtype)
        cyc = GpuCycle(torch, cp, nets[dtype], engines, dtype, args.capacity, streams, fused_decode=fused)
        device_clouds = [cp.asarray(p) for p in clouds]
        for i in range(10):
            cyc.run(device_clouds[i % len(device_clouds)])
        if not streams:
            for dc in device_clouds:
                _, enc, outs, res = cyc.run(dc)
                all_equal &= check_decode(cp, engines, enc, outs, res)
        parts = {"cycle": [], "encode": [], "networks": [], "decode": []}
        d_big = cp.asarray(big)
        torch.cuda.synchronize()
        for _ in range(args.runs):
            e, *_ = cyc.run(d_big)
            e[3].synchronize()
            parts["cycle"].append(e[0].elapsed_time(e[3]))
            parts["encode"].append(e[0].elapsed_time(e[1]))
            parts["networks"].append(e[1].elapsed_time(e[2]))
            parts["decode"].append(e[2].elapsed_time(e[3]))
        key = (f"{'fp32' if dtype == torch.float32 else 'fp16'}_{'streams' if streams else 'one_stream'}"
               f"{'' if fused else '_cupy_translated_decode'}")
        results[key] = {p: summary(v) for p, v in parts.items()}
        print(key, results[key], "decode equal so far:", all_equal, flush=True)
    best = min(results, key=lambda k: results[k]["cycle"]["p99_ms"])
    cycle = {"points": int(len(big)), "versions": {t: v for t, (v, _) in WEIGHTS.items()}, "best": best,
             "p50_ms": results[best]["cycle"]["p50_ms"],
             "p99_ms": results[best]["cycle"]["p99_ms"], "variants": results, "decode_equal_to_numpy": all_equal,
             "networks": "PyTorch CUDA graphs of the default versions' weights (stand-in for TensorRT)",
             "host_steps": "one read-back of two integers after encoding (output sizes); one read-back of "
                           "the detections (1 + 9 x 200 floats) at the end",
             "decode": "fused kernels of ops.gpu_decode (the _cupy_translated_decode variant: the NumPy decode "
                       "run with CuPy, NMS on the host)", "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(cycle, indent=1))
    if args.out:
        data = json.load(open(args.out)) if os.path.isfile(args.out) else {}
        data["cycle"] = cycle
        data.pop("note", None)
        with open(args.out, "w") as fh:
            json.dump(data, fh, indent=1)
    return 0 if all_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
