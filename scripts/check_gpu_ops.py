"""Checks the CuPy operations against the NumPy ones on a CUDA GPU, and times both.

    PYTHONPATH=src python3 scripts/check_gpu_ops.py [--out DIR] [--kitti DIR]

Also the fused encoding kernels (``ops.gpu_encode``): equality with NumPy on the same clouds plus
real-size ones (the KITTI HDL-64E scans of ``--kitti``, a directory holding velodyne/*.bin,
subsampled to 30k and merged to 250k, and 300k random points), and their time on a real-size
cloud already on the GPU (CUDA events, median / P99 of 500 runs) with the host-to-device copy
from pinned memory timed apart; into the ``encode`` section of ``gpu_path.json`` (its ``cycle``,
written by ``gpu_cycle.py``, is kept).

Also the fused decode kernels (``ops.gpu_decode``) against the NumPy decodes (labels with equal
maxima, heatmaps with overlapping boxes, plateaus and a saturated one) and their time on one
frame beside the CuPy translation; and ``TensorRTBackend.infer_device`` on CuPy arrays and
PyTorch CUDA tensors through a stand-in for TensorRT (which cannot be installed here).

Fresh inputs every trial (simulated scans of several densities, with NaN rows and random
clouds), outputs poisoned before each GPU run; integer outputs must be equal, float outputs
equal within 1e-5 relative (accumulation order differs between the devices).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from airside_perception.evaluation.semantickitti import kitti_clouds  # noqa: E402
from airside_perception.ops import bev, detection, gpu, occupancy, segmentation  # noqa: E402
from airside_perception.sim.world import make_scan  # noqa: E402


def close(a, b, rtol=1e-5, atol=1e-5):
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol)


def clouds(rng):
    for seed, density in ((110000, "default"), (110001, "dense"), (110002, "compact")):
        pts = make_scan(seed, density).points.copy()
        pts[rng.choice(len(pts), 50, replace=False), :3] = np.nan
        yield f"scan {seed} {density}", pts
    yield "random 150k", rng.normal(0, 30, size=(150_000, 4)).astype(np.float32)
    yield "empty", np.zeros((0, 4), np.float32)


def real_clouds(root, rng):
    scans = [(s.name, s.points) for s in kitti_clouds(root)] if root else []
    out = [(f"KITTI {name} {len(p)}", p) for name, p in scans]
    if scans:
        first = scans[0][1]
        out.append(("KITTI 30k subsample", first[rng.choice(len(first), 30_000, replace=False)]))
        merged = np.concatenate([p for _, p in scans])[:250_000].copy()
        out.append((f"KITTI merged {len(merged)}", merged))
    out.append(("random 300k", rng.normal(0, 25, size=(300_000, 4)).astype(np.float32)))
    return out


def event_times(cp, stream, fn, runs):
    """Milliseconds of ``fn`` on ``stream`` between two CUDA events, ``runs`` times."""
    out = []
    for _ in range(runs):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(stream)
        fn()
        b.record(stream)
        b.synchronize()
        out.append(cp.cuda.get_elapsed_time(a, b))
    return out


def check_fused(cp, rng, kitti_dir, rows, failures):
    from airside_perception.ops.gpu_encode import FusedEncoder

    spec = bev.BevSpec()
    enc = FusedEncoder(spec)
    worst = 0.0
    cases = list(clouds(rng)) + real_clouds(kitti_dir, rng)
    for name, pts in cases:
        ref = bev.encode(pts, spec)
        g = enc.encode(cp.asarray(pts))
        g_bev, g_feats = cp.asnumpy(g.bev), cp.asnumpy(g.point_features)
        same_points = (np.array_equal(cp.asnumpy(g.kept), ref.kept)
                       and np.array_equal(cp.asnumpy(g.point_cells), ref.point_cells))
        ok = same_points and close(g_bev, ref.bev, 1e-6, 1e-6) and close(g_feats, ref.point_features, 1e-6, 1e-6)
        if g_bev.shape == ref.bev.shape and g_feats.shape == ref.point_features.shape and len(ref.kept):
            worst = max(worst, float(np.max(np.abs(g_bev - ref.bev))),
                        float(np.max(np.abs(g_feats - ref.point_features))))
        rows.append(("fused encode", name[:28], ok, float("nan"), float("nan")))
        if not ok:
            failures.append(f"fused encode {name}")
    node_path = gpu.PreprocessingDevice("gpu")  # what the inference host runs with preprocessing_device: gpu
    for name, pts in cases[:3]:
        got, ref = node_path.encode(pts, spec), bev.encode(pts, spec)
        ok = (node_path.device == "gpu" and np.array_equal(got.kept, ref.kept)
              and close(got.bev, ref.bev, 1e-6, 1e-6) and close(got.point_features, ref.point_features, 1e-6, 1e-6))
        rows.append(("host gpu encode", name[:28], ok, float("nan"), float("nan")))
        if not ok:
            failures.append(f"PreprocessingDevice(gpu) {name}: {node_path.fallback_reason}")
    # timing on a real-size cloud already on the device, and the copy to it apart
    big = next((p for n, p in cases if n.startswith("KITTI 0")), None)
    if big is None:
        big = make_scan(110001, "dense").points
    d = cp.asarray(big)
    stream = cp.cuda.Stream(non_blocking=True)
    pinned = cp.cuda.alloc_pinned_memory(big.nbytes)
    host = np.frombuffer(pinned, np.float32, big.size).reshape(big.shape)
    host[...] = big
    with stream:
        event_times(cp, stream, lambda: enc.encode(d), 20)  # warm-up
        times = event_times(cp, stream, lambda: enc.encode(d), 500)
        copies = event_times(cp, stream, lambda: d.set(host, stream=stream), 100)
    t_cupy = event_times(cp, cp.cuda.get_current_stream(), lambda: gpu.encode(d, spec), 100)
    return {"points": int(len(big)), "median_ms": round(float(np.median(times)), 4),
            "p99_ms": round(float(np.percentile(times, 99)), 4), "max_ms": round(float(np.max(times)), 4),
            "host_to_device_ms": {"median": round(float(np.median(copies)), 4),
                                  "p99": round(float(np.percentile(copies, 99)), 4), "pinned": True},
            "cupy_translation_median_ms": round(float(np.median(t_cupy)), 4),
            "largest_difference": worst, "cases": len(cases)}


def detection_case(rng, kind, size=128):
    """Heatmap logits and regression of a CenterPoint head (``size`` cells across: 128 at 0.8 m,
    256 at 0.4 m): ``blobs`` (objects, overlapping boxes for the NMS, ties), ``noise`` (many weak
    peaks) or ``saturated`` (a plateau of equal scores, more candidates than the fused path holds)."""
    heat = rng.normal(-6.0, 1.0, size=(1, 5, size, size)).astype(np.float32)
    reg = rng.normal(0.0, 0.5, size=(1, 8, size, size)).astype(np.float32)
    if kind == "noise":
        heat = rng.normal(-3.0, 1.5, size=heat.shape).astype(np.float32)
    elif kind == "saturated":
        heat[0, 1, 20:120, 10:110] = 40.0  # sigmoid == 1.0 in float32 over 10,000 cells
    else:
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(300):
            c, cy, cx = rng.integers(0, 5), rng.uniform(0, size), rng.uniform(0, size)
            heat[0, c] = np.maximum(heat[0, c], 4.0 - 0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) * rng.uniform(0.2, 2))
        heat[0, 2, 60:64, 60:64] = 3.0  # a plateau: equal scores, heatmap order decides
        reg[0, 3:6] += 1.0  # boxes of about 2.7 m on a 0.8 m grid: neighbours overlap
    return heat, reg


def check_fused_decode(cp, rng, rows, failures):
    """ops.gpu_decode against the NumPy decodes; time of each decode on the last cases."""
    from airside_perception.ops.gpu_decode import FusedDecoder

    params = detection.DecodeParams(0.3, 200, 0.2, half_extent_m=51.2, cell_m=0.8)
    dec = FusedDecoder(params, 51.2, 0.4, 40.0, 0.6)
    for trial in range(3):
        n_in = int(rng.integers(1000, 200_000))
        k = int(rng.integers(0, n_in))
        logits = rng.normal(0, 3, size=(k, 9)).astype(np.float32)
        logits[: k // 10] = np.round(logits[: k // 10])  # equal maxima: the first wins
        kept = np.sort(rng.choice(n_in, k, replace=False))
        ref = segmentation.scatter_labels(kept, *segmentation.softmax_max(logits), n_in)
        got = dec.segmentation(cp.asarray(logits), cp.asarray(kept), n_in)
        ok = np.array_equal(cp.asnumpy(got[0]), ref[0]) and close(cp.asnumpy(got[1]), ref[1])
        rows.append(("fused labels", f"{k} of {n_in} points", ok, float("nan"), float("nan")))
        occ = rng.normal(0, 3, size=(1, 4, 256, 256)).astype(np.float32)
        ref_o = occupancy.decode_occupancy(occ, 51.2, 0.4, 40.0, 0.6)
        got_o = dec.occupancy(cp.asarray(occ))
        ok_o = (np.array_equal(cp.asnumpy(got_o.cells), ref_o.cells)
                and close(cp.asnumpy(got_o.probability), ref_o.probability) and got_o.origin_x_m == ref_o.origin_x_m)
        rows.append(("fused occupancy", f"random trial {trial}", ok_o, float("nan"), float("nan")))
        failures += [f"fused {n} trial {trial}" for n, good in (("labels", ok), ("occupancy", ok_o)) if not good]
    fine = detection.DecodeParams(0.3, 200, 0.2, half_extent_m=51.2, cell_m=0.4)  # a detector at 0.4 m
    fine_dec = FusedDecoder(fine, 51.2, 0.4, 40.0, 0.6)
    for kind, size in (("noise", 256), ("blobs", 256), ("blobs", 128), ("noise", 128), ("saturated", 128),
                       ("blobs", 128)):
        p, d = (fine, fine_dec) if size == 256 else (params, dec)
        heat, reg = detection_case(rng, kind, size)
        ref = detection.decode_centerpoint(heat, reg, p)
        got = d.detection(cp.asarray(heat), cp.asarray(reg))
        ok = (got.boxes.shape == ref.boxes.shape and np.array_equal(got.labels, ref.labels)
              and close(got.boxes, ref.boxes) and close(got.scores, ref.scores))
        rows.append(("fused detection", f"{kind} {size}x{size}: {len(ref.boxes)} boxes", ok, float("nan"),
                     float("nan")))
        if not ok:
            failures.append(f"fused detection {kind} {size}: {len(got.boxes)} boxes vs {len(ref.boxes)}")
    # time: one frame's three decodes (the last blob case, 110k points), fused vs CuPy translation
    d_logits, d_kept = cp.asarray(rng.normal(0, 3, size=(110_000, 9)).astype(np.float32)), cp.arange(110_000)
    d_heat, d_reg, d_occ = cp.asarray(heat), cp.asarray(reg), cp.asarray(occ)

    def fused():
        dec.segmentation(d_logits, d_kept, 124_000)
        dec.occupancy(d_occ)
        dec.detection(d_heat, d_reg)

    def translated():
        gpu.scatter_labels(d_kept, *gpu.softmax_max(d_logits), 124_000)
        gpu.decode_occupancy(d_occ, 51.2, 0.4, 40.0, 0.6)
        detection.decode_centerpoint(d_heat, d_reg, params, xp=cp)

    stream = cp.cuda.get_current_stream()
    timing = {}
    for name, fn in (("fused", fused), ("cupy_translation", translated)):
        event_times(cp, stream, fn, 10)
        t = event_times(cp, stream, fn, 300)
        timing[name] = {"median_ms": round(float(np.median(t)), 4), "p99_ms": round(float(np.percentile(t, 99)), 4)}
    return {"frame": "110k labelled of 124k points, 5 x 128 x 128 heatmap (blobs), 4 x 256 x 256 occupancy",
            "boxes": int(len(ref.boxes)), **timing}


class _StandInTensorRT:
    """The subset of the TensorRT Python API that TensorRTBackend calls, over a PyTorch network:
    ``execute_async_v3`` reads the inputs at the addresses bound with ``set_tensor_address``
    and writes the outputs to theirs, so a wrong or copied address gives wrong outputs."""

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    def __init__(self, cp, torch, net, inputs, outputs):
        self.cp, self.torch, self.net, self.inputs, self.outputs = cp, torch, net, inputs, outputs
        self.bound = {}
        stand_in = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, blob):
                return stand_in

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype):
        return dtype

    # ICudaEngine
    @property
    def num_io_tensors(self):
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i):
        return (list(self.inputs) + list(self.outputs))[i]

    def get_tensor_dtype(self, name):
        return np.float32

    def get_tensor_profile_shape(self, name, profile):
        shape = self.inputs[name]
        return shape, shape, shape

    def create_execution_context(self):
        return self

    # IExecutionContext
    def set_input_shape(self, name, shape):
        assert tuple(shape) == self.inputs[name]

    def set_tensor_address(self, name, ptr):
        self.bound[name] = int(ptr)

    def get_tensor_shape(self, name):
        return self.outputs[name]

    def _view(self, name, shape):
        cp = self.cp
        size = int(np.prod(shape)) * 4
        mem = cp.cuda.UnownedMemory(self.bound[name], size, owner=None)
        return cp.ndarray(shape, cp.float32, cp.cuda.MemoryPointer(mem, 0))

    def execute_async_v3(self, stream_handle):
        torch = self.torch
        with torch.cuda.stream(torch.cuda.ExternalStream(stream_handle)), torch.no_grad():
            feeds = [torch.from_dlpack(self._view(n, s)) for n, s in self.inputs.items()]
            result = self.net(*feeds)
            result = result if isinstance(result, (tuple, list)) else [result]
            for (name, shape), value in zip(self.outputs.items(), result):
                torch.from_dlpack(self._view(name, shape)).copy_(value)
        return True


def check_tensorrt_device_path(cp, rows, failures, workdir):
    """TensorRTBackend.infer_device with CuPy arrays and PyTorch CUDA tensors, TensorRT replaced
    by the stand-in: the inputs' own pointers bound, the outputs right, bad arrays refused."""
    import torch

    from airside_perception.backends import tensorrt_backend
    from airside_perception.errors import InferenceError
    from airside_perception.pipelines import store
    from airside_perception.training import checkpoint

    root = os.path.join(os.path.dirname(__file__), "..")
    manifest = store.load_version(os.path.join(root, "engines"), "detection", "1.0.0")
    net = checkpoint.load_network("detection", os.path.join(root, "models/detection-1.0.0.pt")).cuda().eval()
    bev_in = cp.asarray(bev.encode(make_scan(110003, "dense").points, bev.BevSpec()).bev)
    with torch.no_grad():
        expect = [t.cpu().numpy() for t in net(torch.from_dlpack(bev_in))]
    specs_in = {t.name: tuple(bev_in.shape) for t in manifest.inputs}
    specs_out = {t.name: tuple(e.shape) for t, e in zip(manifest.outputs, expect)}
    stand_in = _StandInTensorRT(cp, torch, net, specs_in, specs_out)
    sys.modules["tensorrt"] = stand_in
    try:
        path = os.path.join(workdir, "stand_in.engine")
        with open(path, "wb") as fh:
            fh.write(b"stand-in")
        backend = tensorrt_backend.TensorRTBackend(path, manifest.inputs, manifest.outputs).activate()
        name = manifest.inputs[0].name
        results = {}
        for kind, array in (("cupy", bev_in), ("torch", torch.from_dlpack(bev_in).clone())):
            out = backend.infer_device({name: array}, stream_handle=cp.cuda.get_current_stream().ptr)
            cp.cuda.get_current_stream().synchronize()
            own_pointer = stand_in.bound[name] == int(array.__cuda_array_interface__["data"][0])
            same = all(isinstance(out[n], cp.ndarray) and np.allclose(cp.asnumpy(out[n]), e, rtol=1e-5, atol=1e-5)
                       for n, e in zip(specs_out, expect))
            results[kind] = bool(own_pointer and same)
        host = backend.infer({name: cp.asnumpy(bev_in)})
        results["host"] = all(np.allclose(host[n], e, rtol=1e-5, atol=1e-5) for n, e in zip(specs_out, expect))
        refused = 0
        for bad in (bev_in[:, :, ::2, ::2], bev_in.astype(cp.float64), cp.asnumpy(bev_in)):
            try:
                backend.infer_device({name: bad})
            except InferenceError:
                refused += 1
        results["bad_arrays_refused"] = refused == 3
        backend.deactivate()
    finally:
        del sys.modules["tensorrt"]
    for kind, ok in results.items():
        rows.append(("tensorrt device", kind, ok, float("nan"), float("nan")))
        if not ok:
            failures.append(f"tensorrt device path: {kind}")
    return {"engine": "detection 1.0.0 through a stand-in for TensorRT (not installable here)", **results}


def main():
    import cupy as cp

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--kitti", default="", help="a KITTI recording: the directory holding velodyne/*.bin")
    args = parser.parse_args()
    rng = np.random.default_rng(int(time.time()))
    rows, failures = [], []
    specs = {"default": bev.BevSpec(), "capped": bev.BevSpec(max_pillars=3000)}
    for name, pts in clouds(rng):
        for spec_name, spec in specs.items():
            ref = bev.encode(pts, spec)
            t0 = time.perf_counter()
            ref = bev.encode(pts, spec)
            cpu_ms = (time.perf_counter() - t0) * 1e3
            d_pts = cp.asarray(pts)
            gpu.encode(d_pts, spec)  # warm-up: kernels compile once
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            g = gpu.encode(d_pts, spec)
            cp.cuda.Device().synchronize()
            g_bev, g_kept, g_cells, g_feats, g_over = g.bev, g.kept, g.point_cells, g.point_features, g.overflow_points
            gpu_ms = (time.perf_counter() - t0) * 1e3
            ok = (np.array_equal(cp.asnumpy(g_kept), ref.kept) and np.array_equal(cp.asnumpy(g_cells), ref.point_cells)
                  and close(cp.asnumpy(g_bev), ref.bev) and close(cp.asnumpy(g_feats), ref.point_features)
                  and g_over == ref.overflow_points)
            rows.append((f"encode {spec_name}", name, ok, cpu_ms, gpu_ms))
            if not ok:
                failures.append(f"encode {spec_name} {name}")
    for trial in range(3):
        logits = rng.normal(0, 3, size=(int(rng.integers(1, 200_000)), 9)).astype(np.float32)
        kept = np.sort(rng.choice(len(logits) + 1000, len(logits), replace=False))
        l_ref, s_ref = segmentation.softmax_max(logits)
        full_ref = segmentation.scatter_labels(kept, l_ref, s_ref, len(logits) + 1000)
        l_g, s_g = gpu.softmax_max(cp.asarray(logits))
        full_g = gpu.scatter_labels(cp.asarray(kept), l_g, s_g, len(logits) + 1000)
        ok = np.array_equal(cp.asnumpy(full_g[0]), full_ref[0]) and close(cp.asnumpy(full_g[1]), full_ref[1])
        rows.append(("labels", f"random {len(logits)} points", ok, float("nan"), float("nan")))
        heat = rng.random((5, 128, 128)).astype(np.float32)
        ok_h = np.array_equal(cp.asnumpy(gpu.heatmap_peaks(cp.asarray(heat))), detection.heatmap_peaks(heat))
        rows.append(("heatmap peaks", f"random trial {trial}", ok_h, float("nan"), float("nan")))
        occ = rng.normal(0, 3, size=(1, 4, 256, 256)).astype(np.float32)
        ref = occupancy.decode_occupancy(occ, 51.2, 0.4, 40.0, 0.6)
        g_occ = gpu.decode_occupancy(cp.asarray(occ), 51.2, 0.4, 40.0, 0.6)
        ok_o = (np.array_equal(cp.asnumpy(g_occ.cells), ref.cells)
                and close(cp.asnumpy(g_occ.probability), ref.probability) and g_occ.origin_x_m == ref.origin_x_m)
        rows.append(("occupancy decode", f"random trial {trial}", ok_o, float("nan"), float("nan")))
        failures += [n for n, good in (("labels", ok), ("peaks", ok_h), ("occupancy", ok_o)) if not good]
    fused = check_fused(cp, rng, args.kitti, rows, failures)
    decode = check_fused_decode(cp, rng, rows, failures)
    trt_path = check_tensorrt_device_path(cp, rows, failures, args.out)
    lines = [f"{'operation':18s} {'input':28s} {'equal':6s} {'NumPy ms':>9s} {'CuPy ms':>8s}"]
    for op, name, ok, cpu_ms, gpu_ms in rows:
        lines.append(f"{op:18s} {name:28s} {str(ok):6s} {cpu_ms:9.2f} {gpu_ms:8.2f}")
    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines.append(f"device: {device}, CuPy {cp.__version__}")
    lines.append(f"fused encode, {fused['points']} points on the device: median {fused['median_ms']} ms, "
                 f"P99 {fused['p99_ms']} ms (CuPy translation {fused['cupy_translation_median_ms']} ms); "
                 f"copy from pinned host memory {fused['host_to_device_ms']['median']} ms")
    lines.append(f"fused decode of one frame: median {decode['fused']['median_ms']} ms, "
                 f"P99 {decode['fused']['p99_ms']} ms (CuPy translation {decode['cupy_translation']['median_ms']} / "
                 f"{decode['cupy_translation']['p99_ms']} ms)")
    lines.append("ALL EQUAL" if not failures else f"MISMATCH: {failures}")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "gpu_ops_check.txt"), "w") as fh:
        fh.write(text + "\n")
    with open(os.path.join(args.out, "gpu_ops_check.json"), "w") as fh:
        json.dump([dict(zip(("op", "input", "equal", "numpy_ms", "cupy_ms"), r)) for r in rows], fh, indent=1)
    path = os.path.join(args.out, "gpu_path.json")
    result = json.load(open(path)) if os.path.isfile(path) else {"cycle": None}
    result.update(device=device, encode=fused, decode=decode, tensorrt_device_path=trt_path)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
