"""Checks the CuPy operations against the NumPy ones on a CUDA GPU, and times both.

    PYTHONPATH=src python3 scripts/check_gpu_ops.py [--out DIR] [--kitti DIR]

Also the fused encoding kernels (``ops.gpu_encode``): equality with NumPy on the same clouds plus
real-size ones (the KITTI HDL-64E scans of ``--kitti``, a directory holding velodyne/*.bin,
subsampled to 30k and merged to 250k, and 300k random points), and their time on a real-size
cloud already on the GPU (CUDA events, median / P99 of 500 runs) with the host-to-device copy
from pinned memory timed apart; into the ``encode`` section of ``gpu_path.json`` (its ``cycle``,
written by ``gpu_cycle.py``, is kept).

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

from airside_perception.ops import bev, detection, gpu, occupancy, segmentation  # noqa: E402
from airside_perception.sim.world import make_scan  # noqa: E402
from airside_perception.tools.semantickitti import kitti_clouds  # noqa: E402


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
    lines = [f"{'operation':18s} {'input':28s} {'equal':6s} {'NumPy ms':>9s} {'CuPy ms':>8s}"]
    for op, name, ok, cpu_ms, gpu_ms in rows:
        lines.append(f"{op:18s} {name:28s} {str(ok):6s} {cpu_ms:9.2f} {gpu_ms:8.2f}")
    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines.append(f"device: {device}, CuPy {cp.__version__}")
    lines.append(f"fused encode, {fused['points']} points on the device: median {fused['median_ms']} ms, "
                 f"P99 {fused['p99_ms']} ms (CuPy translation {fused['cupy_translation_median_ms']} ms); "
                 f"copy from pinned host memory {fused['host_to_device_ms']['median']} ms")
    lines.append("ALL EQUAL" if not failures else f"MISMATCH: {failures}")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "gpu_ops_check.txt"), "w") as fh:
        fh.write(text + "\n")
    with open(os.path.join(args.out, "gpu_ops_check.json"), "w") as fh:
        json.dump([dict(zip(("op", "input", "equal", "numpy_ms", "cupy_ms"), r)) for r in rows], fh, indent=1)
    path = os.path.join(args.out, "gpu_path.json")
    result = json.load(open(path)) if os.path.isfile(path) else {"cycle": None}
    result.update(device=device, encode=fused)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
