"""The shared BEV encoding in a few fused CUDA kernels (CuPy ``RawModule``), for the GPU path.

Same inputs and outputs as :func:`airside_perception.ops.bev.encode`, computed where the cloud
already is (a CuPy array on the device), without a host round trip for the data:

0. ``reset`` (per cell): the per-pillar accumulators of the last cloud cleared in one launch.
1. ``pillar_stats`` (one thread per point): range and NaN filter, cell index, then per pillar
   with atomics: point count, max/min height, max intensity, and the height and intensity sums
   (float64, as NumPy's ``bincount`` sums them); counters of occupied pillars and kept points.
2. ``pillar_above`` (per point): points more than 0.2 m above their pillar's floor.
3. ``bev_raster`` (per cell): the eight BEV channels of every occupied pillar.
4. ``point_features`` (per point): each kept point's slot in input order (the kept counts of the
   blocks before, counted by ``pillar_above``, then warp ballots), and there ``kept``,
   ``point_cells`` and the five point features.

One read-back of two integers after the last kernel (kept points, occupied pillars) sizes the
outputs. Clouds with
more occupied pillars than ``max_pillars`` (the nearest ones are kept) take the CuPy version of
the NumPy algorithm instead: on the shipped grid that needs a cloud denser than any real sensor.

Equality with NumPy: integer outputs equal; the float arithmetic follows NumPy's (float32 with
``__f*_rn`` intrinsics so the compiler cannot fuse a multiply-add, sums and means in float64,
IEEE division and square root). Only ``log1pf`` and the order of the float64 sums may differ, by an
ulp (``scripts/check_gpu_ops.py`` checks 1e-6 relative).

CuPy is imported when an encoder is built; nothing here runs on a machine without CUDA.
"""

from __future__ import annotations

from airside_perception.ops import bev

_SOURCE = r"""
__device__ __forceinline__ void atomic_max_float(float* addr, float v) {
    v = __fadd_rn(v, 0.0f);  // -0 -> +0: the sign bit would order it below every negative float
    if (v >= 0.0f) atomicMax((int*)addr, __float_as_int(v));
    else atomicMin((unsigned int*)addr, __float_as_uint(v));
}
__device__ __forceinline__ void atomic_min_float(float* addr, float v) {
    v = __fadd_rn(v, 0.0f);
    if (v >= 0.0f) atomicMin((int*)addr, __float_as_int(v));
    else atomicMax((unsigned int*)addr, __float_as_uint(v));
}

extern "C" __global__ void reset(const int cells, int* __restrict__ count, float* __restrict__ zmax,
        float* __restrict__ zmin, float* __restrict__ imax, double* __restrict__ zsum, double* __restrict__ isum,
        int* __restrict__ above, int* __restrict__ totals) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < 2) totals[c] = 0;
    if (c >= cells) return;
    count[c] = 0; above[c] = 0; zsum[c] = 0.0; isum[c] = 0.0; imax[c] = 0.0f;
    zmax[c] = __int_as_float(0xff800000);  // -inf
    zmin[c] = __int_as_float(0x7f800000);  // +inf
}

extern "C" __global__ void pillar_stats(const float* __restrict__ pts, const long long n, const float half,
        const float res, const float zlo, const float zhi, const int size, int* __restrict__ cell_of,
        int* __restrict__ count, float* __restrict__ zmax, float* __restrict__ zmin, float* __restrict__ imax,
        double* __restrict__ zsum, double* __restrict__ isum, int* __restrict__ totals) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = pts[4 * i], y = pts[4 * i + 1], z = pts[4 * i + 2], it = pts[4 * i + 3];
    // NaN compares false: NaN rows fall out here, as in bev.crop
    const bool inside = fabsf(x) < half && fabsf(y) < half && z >= zlo && z < zhi && isfinite(it);
    if (!inside) { cell_of[i] = -1; return; }
    int ix = (int)__fdiv_rn(__fadd_rn(x, half), res);
    int iy = (int)__fdiv_rn(__fadd_rn(y, half), res);
    ix = min(max(ix, 0), size - 1);
    iy = min(max(iy, 0), size - 1);
    const int cell = iy * size + ix;
    cell_of[i] = cell;
    if (atomicAdd(&count[cell], 1) == 0) atomicAdd(&totals[0], 1);  // occupied pillars
    atomicAdd(&totals[1], 1);  // kept points
    atomic_max_float(&zmax[cell], z);
    atomic_min_float(&zmin[cell], z);
    atomic_max_float(&imax[cell], it);
    atomicAdd(&zsum[cell], (double)z);
    atomicAdd(&isum[cell], (double)it);
}

extern "C" __global__ void pillar_above(const float* __restrict__ pts, const long long n,
        const int* __restrict__ cell_of, const float* __restrict__ zmin, int* __restrict__ above,
        int* __restrict__ block_counts) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int cell = i < n ? cell_of[i] : -1;
    const int kept_here = __syncthreads_count(cell >= 0);  // every thread of the block takes part
    if (threadIdx.x == 0) block_counts[blockIdx.x] = kept_here;
    if (cell < 0) return;
    if (__fsub_rn(pts[4 * i + 2], zmin[cell]) > 0.2f) atomicAdd(&above[cell], 1);
}

extern "C" __global__ void bev_raster(const int cells, const int* __restrict__ count,
        const float* __restrict__ zmax, const float* __restrict__ zmin, const float* __restrict__ imax,
        const double* __restrict__ zsum, const double* __restrict__ isum, const int* __restrict__ above,
        const float inv_scale, float* __restrict__ out, float* __restrict__ zmean32) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cells) return;
    const int k = count[c];
    if (k == 0) {
        for (int ch = 0; ch < 8; ++ch) out[ch * cells + c] = 0.0f;
        zmean32[c] = 0.0f;
        return;
    }
    const float n = (float)k;
    const double zmean = zsum[c] / (double)n;
    out[c] = 1.0f;
    out[cells + c] = __fdiv_rn(log1pf(n), 4.0f);
    out[2 * cells + c] = __fdiv_rn(zmax[c], 4.0f);
    out[3 * cells + c] = __fdiv_rn(zmin[c], 4.0f);
    out[4 * cells + c] = (float)(zmean / 4.0);
    out[5 * cells + c] = __fdiv_rn(imax[c], inv_scale);
    out[6 * cells + c] = (float)(isum[c] / (double)n / (double)inv_scale);
    out[7 * cells + c] = (float)((double)above[c] / (double)n);
    zmean32[c] = (float)zmean;
}

extern "C" __global__ void point_features(const float* __restrict__ pts, const long long n,
        const int* __restrict__ cell_of, const int* __restrict__ block_counts, const float* __restrict__ zmin,
        const float* __restrict__ zmean32, const float inv_scale, long long* __restrict__ kept,
        long long* __restrict__ cells_out, float* __restrict__ feats) {
    // Each kept point's slot, input order kept: the kept points of the blocks before this one
    // (their counts, summed by the block), then of the warps before, then of the lanes before.
    __shared__ long long partial_sums[32];
    __shared__ int warp_counts[32];
    __shared__ long long block_base;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    long long partial = 0;
    for (int b = threadIdx.x; b < blockIdx.x; b += blockDim.x) partial += block_counts[b];
    for (int off = 16; off > 0; off >>= 1) partial += __shfl_down_sync(0xffffffffu, partial, off);
    if (lane == 0) partial_sums[warp] = partial;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int cell = i < n ? cell_of[i] : -1;
    const unsigned ballot = __ballot_sync(0xffffffffu, cell >= 0);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
        long long t = 0;
        for (int w = 0; w < warps; ++w) t += partial_sums[w];
        block_base = t;
    }
    __syncthreads();
    if (cell < 0) return;
    int warp_base = 0;
    for (int w = 0; w < warp; ++w) warp_base += warp_counts[w];
    const long long k = block_base + warp_base + __popc(ballot & ((1u << lane) - 1u));
    const float x = pts[4 * i], y = pts[4 * i + 1], z = pts[4 * i + 2], it = pts[4 * i + 3];
    kept[k] = i;
    cells_out[k] = cell;
    feats[5 * k] = __fsub_rn(z, zmin[cell]);
    feats[5 * k + 1] = __fsub_rn(z, zmean32[cell]);
    feats[5 * k + 2] = __fdiv_rn(it, inv_scale);
    feats[5 * k + 3] = __fdiv_rn(z, 4.0f);
    feats[5 * k + 4] = __fdiv_rn(__fsqrt_rn(__fadd_rn(__fmul_rn(x, x), __fmul_rn(y, y))), 50.0f);
}
"""

BLOCK = 256


class FusedEncoder:
    """``encode(points)`` for one :class:`bev.BevSpec`, buffers reused between clouds."""

    def __init__(self, spec: bev.BevSpec, reuse_outputs: bool = False):
        """``reuse_outputs``: the returned arrays are views of buffers the next ``encode``
        overwrites (the frame loop, which reads each frame back before the next); otherwise
        each call returns arrays of its own."""
        import cupy as cp

        self.cp = cp
        self.spec = spec
        self.reuse_outputs = reuse_outputs
        module = cp.RawModule(code=_SOURCE, options=("--std=c++14",))
        self._reset = module.get_function("reset")
        self._stats = module.get_function("pillar_stats")
        self._above = module.get_function("pillar_above")
        self._raster = module.get_function("bev_raster")
        self._feats = module.get_function("point_features")
        cells = spec.size * spec.size
        self.count = cp.zeros(cells, cp.int32)
        self.zmax = cp.empty(cells, cp.float32)
        self.zmin = cp.empty(cells, cp.float32)
        self.imax = cp.empty(cells, cp.float32)
        self.zsum = cp.zeros(cells, cp.float64)
        self.isum = cp.zeros(cells, cp.float64)
        self.above = cp.zeros(cells, cp.int32)
        self.zmean32 = cp.empty(cells, cp.float32)
        self.totals = cp.zeros(2, cp.int32)  # occupied pillars, kept points
        self._capacity = 0

    def _points_buffers(self, n: int) -> None:
        if n <= self._capacity:
            return
        cp = self.cp
        cap = max(n, 1 << 17, 2 * self._capacity)
        self.cell_of = cp.empty(cap, cp.int32)
        self.block_counts = cp.empty((cap + BLOCK - 1) // BLOCK, cp.int32)
        self._kept = cp.empty(cap, cp.int64)
        self._cells_out = cp.empty(cap, cp.int64)
        self._feats_out = cp.empty((cap, bev.N_POINT_FEATURES), cp.float32)
        self._raster_out = cp.empty((bev.N_BEV_FEATURES, self.spec.size * self.spec.size), cp.float32)
        self._capacity = cap

    def encode(self, points) -> bev.BevInput:
        """points: (N, 4) float32 CuPy array (base_link). Returns device arrays."""
        cp, spec = self.cp, self.spec
        points = cp.ascontiguousarray(points, dtype=cp.float32)
        n = int(points.shape[0])
        s = spec.size
        cells = s * s
        if n == 0:
            return bev.encode(points, spec, xp=cp)
        self._points_buffers(n)
        grid = ((n + BLOCK - 1) // BLOCK,)
        cell_grid = ((cells + BLOCK - 1) // BLOCK,)
        f32 = cp.float32
        self._reset(cell_grid, (BLOCK,), (cp.int32(cells), self.count, self.zmax, self.zmin, self.imax, self.zsum,
                                          self.isum, self.above, self.totals))
        self._stats(grid, (BLOCK,), (points, cp.int64(n), f32(spec.half_extent_m), f32(spec.resolution_m),
                                     f32(spec.z_min_m), f32(spec.z_max_m), cp.int32(s), self.cell_of, self.count,
                                     self.zmax, self.zmin, self.imax, self.zsum, self.isum, self.totals))
        self._above(grid, (BLOCK,), (points, cp.int64(n), self.cell_of, self.zmin, self.above, self.block_counts))
        reuse = self.reuse_outputs
        out = self._raster_out if reuse else cp.empty((bev.N_BEV_FEATURES, cells), cp.float32)
        self._raster(cell_grid, (BLOCK,),
                     (cp.int32(cells), self.count, self.zmax, self.zmin, self.imax, self.zsum, self.isum, self.above,
                      f32(spec.intensity_max), out, self.zmean32))
        # sized for every point: no read-back between the kernels
        kept = self._kept[:n] if reuse else cp.empty(n, cp.int64)
        cells_out = self._cells_out[:n] if reuse else cp.empty(n, cp.int64)
        feats = self._feats_out[:n] if reuse else cp.empty((n, bev.N_POINT_FEATURES), cp.float32)
        self._feats(grid, (BLOCK,), (points, cp.int64(n), self.cell_of, self.block_counts, self.zmin, self.zmean32,
                                     f32(spec.intensity_max), kept, cells_out, feats))
        pillars, k = (int(v) for v in self.totals.get())  # the one read-back, at the end: output sizes
        if pillars > spec.max_pillars:  # the nearest-pillar cap: the general algorithm
            return bev.encode(points, spec, xp=cp)
        kept, cells_out, feats = kept[:k], cells_out[:k], feats[:k]
        return bev.BevInput(out.reshape(1, bev.N_BEV_FEATURES, s, s), kept, cells_out, feats, n, 0, 0)
