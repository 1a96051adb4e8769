"""Checks the CuPy operations against the NumPy ones on a CUDA GPU, and times both.

    PYTHONPATH=src python3 scripts/check_gpu_ops.py [--out DIR]

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


def close(a, b, rtol=1e-5, atol=1e-5):
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol)


def clouds(rng):
    for seed, density in ((110000, "default"), (110001, "dense"), (110002, "compact")):
        pts = make_scan(seed, density).points.copy()
        pts[rng.choice(len(pts), 50, replace=False), :3] = np.nan
        yield f"scan {seed} {density}", pts
    yield "random 150k", rng.normal(0, 30, size=(150_000, 4)).astype(np.float32)
    yield "empty", np.zeros((0, 4), np.float32)


def main():
    import cupy as cp

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
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
    lines = [f"{'operation':18s} {'input':28s} {'equal':6s} {'NumPy ms':>9s} {'CuPy ms':>8s}"]
    for op, name, ok, cpu_ms, gpu_ms in rows:
        lines.append(f"{op:18s} {name:28s} {str(ok):6s} {cpu_ms:9.2f} {gpu_ms:8.2f}")
    lines.append(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cp.__version__}")
    lines.append("ALL EQUAL" if not failures else f"MISMATCH: {failures}")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "gpu_ops_check.txt"), "w") as fh:
        fh.write(text + "\n")
    with open(os.path.join(args.out, "gpu_ops_check.json"), "w") as fh:
        json.dump([dict(zip(("op", "input", "equal", "numpy_ms", "cupy_ms"), r)) for r in rows], fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
