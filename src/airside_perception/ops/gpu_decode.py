"""The three decodes in fused CUDA kernels (CuPy ``RawModule``), for the GPU path.

Same results as :mod:`segmentation`, :mod:`detection` and :mod:`occupancy` on the networks'
device outputs, in a handful of launches and one small read-back (the detections):

Segmentation (2 launches): ``seg_fill`` marks every input point unclassified; ``seg_decode``
(one thread per encoded point) takes the first largest logit, its softmax probability (the
exponentials summed in class order, as NumPy sums the rows) and writes both at the point's
input index. Nothing comes back to the host.

Detection (4 launches, then the read-back): ``det_peaks`` (per heatmap cell) applies the sigmoid,
keeps cells that no 3x3 neighbour exceeds and that pass the score threshold, appended with an
atomic counter; ``det_boxes`` (per candidate) finds its rank among all candidates (score
descending, heatmap order among equals: NumPy's stable ordering), and the first 4 x
max_detections decode their boxes; ``nms_mask`` (64 x 64 candidate tiles, as the CUDA NMS of
OpenPCDet) sets a bit where two boxes of one class overlap by more than ``nms_iou`` in BEV (the
same Sutherland-Hodgman clip as :func:`detection.rotated_iou_bev`); ``nms_scan`` (one warp)
walks the candidates best first, keeps the first max_detections not suppressed and gathers
them. One copy of ``1 + 9 x max_detections`` floats brings count and boxes to the host. Where
the heatmap has more candidates than ``candidate_capacity`` (saturated plateaus), the CuPy
translation of the NumPy decode runs instead.

Occupancy (1 launch): ``occ_decode`` (per output cell) takes the largest height logit of the
crop, its sigmoid and the threshold.

Equality with NumPy: labels, box classes and occupied cells equal; float outputs use NumPy's
float32 operation order with ``__f*_rn`` intrinsics (no fused multiply-adds) and float64 where
NumPy promotes (box centres). ``expf``, ``sinf``/``cosf`` and ``atan2f`` may differ from
NumPy's by an ulp, so scores and boxes agree to 1e-5 relative; a decision can differ only where
a value lies within that of a threshold. ``scripts/check_gpu_ops.py`` checks it.

CuPy is imported when a decoder is built; nothing here runs on a machine without CUDA.
"""

from __future__ import annotations

import numpy as np

from airside_perception.classes import UNLABELLED
from airside_perception.ops import detection, occupancy

_SOURCE = r"""
__device__ __forceinline__ float sigmoid(float x) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x))); }

extern "C" __global__ void seg_fill(const long long n, unsigned char* __restrict__ labels,
        float* __restrict__ scores, const unsigned char unlabelled) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    labels[i] = unlabelled;
    scores[i] = 0.0f;
}

extern "C" __global__ void seg_decode(const float* __restrict__ logits, const long long k, const int classes,
        const long long* __restrict__ kept, unsigned char* __restrict__ labels, float* __restrict__ scores) {
    long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= k) return;
    const float* l = logits + r * classes;
    float top = l[0];
    int best = 0;
    for (int c = 1; c < classes; ++c) if (l[c] > top) { top = l[c]; best = c; }
    float sum = 0.0f;
    for (int c = 0; c < classes; ++c) sum = __fadd_rn(sum, expf(__fsub_rn(l[c], top)));
    const long long i = kept[r];
    labels[i] = (unsigned char)best;
    scores[i] = __fdiv_rn(1.0f, sum);
}

extern "C" __global__ void det_peaks(const float* __restrict__ logits, const int classes, const int h,
        const int w, const float threshold, int* __restrict__ header, int* __restrict__ cand_index,
        float* __restrict__ cand_score, const int capacity) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int plane = h * w;
    if (idx >= classes * plane) return;
    const float v = sigmoid(logits[idx]);
    if (!(v > threshold)) return;
    const int c = idx / plane, y = (idx % plane) / w, x = idx % w;
    const float* p = logits + c * plane;
    for (int dy = -1; dy <= 1; ++dy) {
        const int yy = y + dy;
        if (yy < 0 || yy >= h) continue;
        for (int dx = -1; dx <= 1; ++dx) {
            const int xx = x + dx;
            if (xx < 0 || xx >= w) continue;
            if (sigmoid(p[yy * w + xx]) > v) return;  // not a 3x3 maximum
        }
    }
    const int slot = atomicAdd(&header[0], 1);
    if (slot < capacity) { cand_index[slot] = idx; cand_score[slot] = v; }
}

extern "C" __global__ void det_boxes(const int* __restrict__ header, const int capacity,
        const int* __restrict__ cand_index, const float* __restrict__ cand_score, const float* __restrict__ reg,
        const int h, const int w, const int top_n, const double cell, const double half,
        float* __restrict__ boxes, float* __restrict__ scores, int* __restrict__ labels) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int k = min(header[0], capacity);
    if (i >= k) return;
    const float s = cand_score[i];
    const int idx = cand_index[i];
    int rank = 0;
    for (int j = 0; j < k; ++j) {
        const float t = cand_score[j];
        rank += (t > s) || (t == s && cand_index[j] < idx);
    }
    if (rank >= top_n) return;
    const int plane = h * w, rem = idx % plane, y = rem / w, x = rem % w;
    float r[8];
    for (int q = 0; q < 8; ++q) r[q] = reg[q * plane + rem];
    float* b = boxes + 7 * rank;
    b[0] = (float)__dsub_rn(__dmul_rn(__dadd_rn((double)x, (double)r[0]), cell), half);
    b[1] = (float)__dsub_rn(__dmul_rn(__dadd_rn((double)y, (double)r[1]), cell), half);
    b[2] = r[2];
    for (int q = 0; q < 3; ++q) b[3 + q] = expf(fminf(fmaxf(r[3 + q], -5.0f), 5.0f));
    b[6] = atan2f(r[6], r[7]);
    scores[rank] = s;
    labels[rank] = idx / plane;
}

struct Pt { float x, y; };

__device__ void corners(const float* b, Pt* out) {
    const float c = cosf(b[6]), s = sinf(b[6]);
    const float hl = __fdiv_rn(b[3], 2.0f), hw = __fdiv_rn(b[4], 2.0f);
    const float lx[4] = {hl, -hl, -hl, hl}, ly[4] = {hw, hw, -hw, -hw};
    for (int q = 0; q < 4; ++q) {
        out[q].x = __fsub_rn(__fadd_rn(b[0], __fmul_rn(c, lx[q])), __fmul_rn(s, ly[q]));
        out[q].y = __fadd_rn(__fadd_rn(b[1], __fmul_rn(s, lx[q])), __fmul_rn(c, ly[q]));
    }
}

__device__ __forceinline__ float side(Pt a, Pt b, Pt p) {
    return __fsub_rn(__fmul_rn(__fsub_rn(b.x, a.x), __fsub_rn(p.y, a.y)),
                     __fmul_rn(__fsub_rn(b.y, a.y), __fsub_rn(p.x, a.x)));
}

__device__ __forceinline__ Pt towards(Pt p, Pt q, float t) {  // p + (q - p) * t
    Pt o;
    o.x = __fadd_rn(p.x, __fmul_rn(__fsub_rn(q.x, p.x), t));
    o.y = __fadd_rn(p.y, __fmul_rn(__fsub_rn(q.y, p.y), t));
    return o;
}

__device__ float iou_bev(const float* a, const float* b) {
    Pt ca[4], cb[4], poly[16], next[16];
    corners(a, ca);
    corners(b, cb);
    int n = 4;
    for (int q = 0; q < 4; ++q) poly[q] = ca[q];
    for (int e = 0; e < 4; ++e) {
        const Pt ea = cb[e], eb = cb[(e + 1) % 4];
        int m = 0;
        for (int q = 0; q < n; ++q) {
            const Pt cur = poly[q], prev = poly[(q + n - 1) % n];
            const float sc = side(ea, eb, cur), sp = side(ea, eb, prev);
            if (sc >= 0.0f) {
                if (sp < 0.0f) next[m++] = towards(prev, cur, __fdiv_rn(sp, __fsub_rn(sp, sc)));
                next[m++] = cur;
            } else if (sp >= 0.0f) {
                next[m++] = towards(prev, cur, __fdiv_rn(sp, __fsub_rn(sp, sc)));
            }
        }
        n = m;
        if (n == 0) return 0.0f;
        for (int q = 0; q < n; ++q) poly[q] = next[q];
    }
    if (n < 3) return 0.0f;
    float d1 = 0.0f, d2 = 0.0f;
    for (int q = 0; q < n; ++q) {
        const Pt p = poly[q], nx = poly[(q + 1) % n];
        d1 = __fadd_rn(d1, __fmul_rn(p.x, nx.y));
        d2 = __fadd_rn(d2, __fmul_rn(p.y, nx.x));
    }
    const float inter = __fmul_rn(0.5f, fabsf(__fsub_rn(d1, d2)));
    const float uni = __fsub_rn(__fadd_rn(__fmul_rn(a[3], a[4]), __fmul_rn(b[3], b[4])), inter);
    return uni > 0.0f ? __fdiv_rn(inter, uni) : 0.0f;
}

extern "C" __global__ void nms_mask(const int* __restrict__ header, const int capacity, const int top_n,
        const float* __restrict__ boxes, const int* __restrict__ labels, const double iou_threshold,
        unsigned long long* __restrict__ mask, const int words) {
    const int n = min(min(header[0], capacity), top_n);
    const int row = blockIdx.y * 64 + threadIdx.x, col0 = blockIdx.x * 64;
    if (row >= n || col0 >= n) return;
    const float* a = boxes + 7 * row;
    const float ra = 0.5f * hypotf(a[3], a[4]);
    unsigned long long bits = 0ULL;
    for (int q = 0; q < 64 && col0 + q < n; ++q) {
        const int col = col0 + q;
        if (col <= row || labels[col] != labels[row]) continue;
        const float* b = boxes + 7 * col;
        const float rb = 0.5f * hypotf(b[3], b[4]);
        if (hypotf(b[0] - a[0], b[1] - a[1]) >= ra + rb + 1e-3f) continue;  // circumscribed circles apart
        if ((double)iou_bev(a, b) > iou_threshold) bits |= 1ULL << q;
    }
    mask[row * words + blockIdx.x] = bits;
}

extern "C" __global__ void nms_scan(const int* __restrict__ header, const int capacity, const int top_n,
        const int max_keep, const unsigned long long* __restrict__ mask, const int words,
        const float* __restrict__ boxes, const float* __restrict__ scores, const int* __restrict__ labels,
        float* __restrict__ out) {
    // One warp; lane l holds the suppression bits of candidates 64 l .. 64 l + 63 (words <= 32).
    const int lane = threadIdx.x;
    const int n = min(min(header[0], capacity), top_n);
    unsigned long long removed = 0ULL;
    int kept = 0;
    for (int i = 0; i < n && kept < max_keep; ++i) {
        const unsigned long long word = __shfl_sync(0xffffffffu, removed, i >> 6);
        if ((word >> (i & 63)) & 1ULL) continue;
        if (lane < words) removed |= mask[i * words + lane];
        if (lane < 9) {
            float* o = out + 1 + 9 * kept;
            o[lane] = lane < 7 ? boxes[7 * i + lane] : (lane == 7 ? (float)labels[i] : scores[i]);
        }
        ++kept;
    }
    if (lane == 0) { out[0] = (float)kept; out[1 + 9 * max_keep] = (float)header[0]; }
}

extern "C" __global__ void occ_decode(const float* __restrict__ logits, const int heights, const int size,
        const int out_size, const int start, const float threshold, signed char* __restrict__ cells,
        float* __restrict__ prob) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= out_size * out_size) return;
    const int src = (start + c / out_size) * size + start + c % out_size;
    const int plane = size * size;
    float top = logits[src];
    for (int z = 1; z < heights; ++z) top = fmaxf(top, logits[z * plane + src]);
    const float p = sigmoid(top);
    prob[c] = p;
    cells[c] = p > threshold ? 100 : 0;
}
"""

BLOCK = 256


def _blocks(n: int) -> tuple:
    return ((max(n, 1) + BLOCK - 1) // BLOCK,)


class FusedDecoder:
    """The three decodes for one set of decode parameters, buffers reused between frames.

    ``detection`` the manifest's :class:`detection.DecodeParams`; ``occupancy`` the crop
    (``bev_half_extent_m``, ``resolution_m``, ``out_half_extent_m``, ``threshold``).
    """

    def __init__(self, det: detection.DecodeParams, bev_half_extent_m: float, resolution_m: float,
                 out_half_extent_m: float, occ_threshold: float, candidate_capacity: int = 8192):
        import cupy as cp

        self.cp = cp
        self.det = det
        self.occ = (bev_half_extent_m, resolution_m, out_half_extent_m, occ_threshold)
        module = cp.RawModule(code=_SOURCE, options=("--std=c++14",))
        self._k = {name: module.get_function(name) for name in
                   ("seg_fill", "seg_decode", "det_peaks", "det_boxes", "nms_mask", "nms_scan", "occ_decode")}
        self.capacity = int(candidate_capacity)
        self.top_n = 4 * det.max_detections
        self.words = (self.top_n + 63) // 64
        if self.words > 32:
            raise ValueError(f"max_detections {det.max_detections} above 512: the NMS scan holds 32 x 64 candidates")
        self.header = cp.zeros(1, cp.int32)
        self.cand_index = cp.empty(self.capacity, cp.int32)
        self.cand_score = cp.empty(self.capacity, cp.float32)
        self.boxes = cp.empty((self.top_n, 7), cp.float32)
        self.scores = cp.empty(self.top_n, cp.float32)
        self.labels = cp.empty(self.top_n, cp.int32)
        self.mask = cp.empty(self.top_n * self.words, cp.uint64)
        self.out = cp.empty(2 + 9 * det.max_detections, cp.float32)
        self.host_out = cp.cuda.alloc_pinned_memory(self.out.nbytes)

    def segmentation(self, logits, kept, n_input: int):
        """(K, C) float32 logits of the encoded points, (K,) int64 their input indices ->
        (n_input,) uint8 labels and float32 scores (255 / 0 where not classified), on the device."""
        cp = self.cp
        logits = cp.ascontiguousarray(logits, dtype=cp.float32)
        labels = cp.empty(n_input, cp.uint8)
        scores = cp.empty(n_input, cp.float32)
        self._k["seg_fill"](_blocks(n_input), (BLOCK,), (cp.int64(n_input), labels, scores, cp.uint8(UNLABELLED)))
        k = int(logits.shape[0])
        if k:
            self._k["seg_decode"](_blocks(k), (BLOCK,), (logits, cp.int64(k), cp.int32(logits.shape[1]),
                                                          cp.ascontiguousarray(kept, dtype=cp.int64), labels, scores))
        return labels, scores

    def detection(self, heat_logits, regression) -> detection.Boxes:
        """(1, C, H, W) heatmap logits and (1, 8, H, W) regression on the device -> host boxes."""
        self.detection_launch(heat_logits, regression)
        self.cp.cuda.get_current_stream().synchronize()
        return self.detection_collect()

    def detection_launch(self, heat_logits, regression) -> None:
        """The detection decode queued on the current stream, its read-back too (into pinned
        memory); :meth:`detection_collect` reads it once the stream has got there."""
        cp, p = self.cp, self.det
        heat_logits = cp.ascontiguousarray(heat_logits, dtype=cp.float32)
        regression = cp.ascontiguousarray(regression, dtype=cp.float32)
        self._pending = (heat_logits, regression)
        _, n_cls, h, w = heat_logits.shape
        self.header.fill(0)
        self._k["det_peaks"](_blocks(n_cls * h * w), (BLOCK,),
                             (heat_logits, cp.int32(n_cls), cp.int32(h), cp.int32(w), cp.float32(p.score_threshold),
                              self.header, self.cand_index, self.cand_score, cp.int32(self.capacity)))
        self._k["det_boxes"](_blocks(self.capacity), (BLOCK,),
                             (self.header, cp.int32(self.capacity), self.cand_index, self.cand_score, regression,
                              cp.int32(h), cp.int32(w), cp.int32(self.top_n), cp.float64(p.cell_m),
                              cp.float64(p.half_extent_m), self.boxes, self.scores, self.labels))
        tiles = (self.top_n + 63) // 64
        self._k["nms_mask"]((tiles, tiles), (64,),
                            (self.header, cp.int32(self.capacity), cp.int32(self.top_n), self.boxes, self.labels,
                             cp.float64(p.nms_iou), self.mask, cp.int32(self.words)))
        self._k["nms_scan"]((1,), (32,), (self.header, cp.int32(self.capacity), cp.int32(self.top_n),
                                          cp.int32(p.max_detections), self.mask, cp.int32(self.words), self.boxes,
                                          self.scores, self.labels, self.out))
        cp.cuda.runtime.memcpyAsync(self.host_out.ptr, self.out.data.ptr, self.out.nbytes,
                                    cp.cuda.runtime.memcpyDeviceToHost, cp.cuda.get_current_stream().ptr)

    def detection_collect(self) -> detection.Boxes:
        """The boxes of the last :meth:`detection_launch` (count, boxes, candidates: the one
        read-back), once its stream has reached the end of the launch."""
        host = np.frombuffer(self.host_out, np.float32, self.out.size)
        if int(host[-1]) > self.capacity:  # a saturated heatmap: the general algorithm
            heat_logits, regression = self._pending
            return detection.decode_centerpoint(heat_logits, regression, self.det, xp=self.cp)
        n = int(host[0])
        rows = host[1:1 + 9 * n].reshape(n, 9)
        return detection.Boxes(rows[:, :7].copy(), rows[:, 7].astype(np.int64), rows[:, 8].copy())

    def occupancy(self, logits) -> occupancy.OccupancyGrid2D:
        """(1, Z, S, S) logits on the device -> the grid of device arrays."""
        cp = self.cp
        bev_half, res, out_half, threshold = self.occ
        logits = cp.ascontiguousarray(logits, dtype=cp.float32)
        heights, size = int(logits.shape[1]), int(logits.shape[-1])
        out = int(round(2 * out_half / res))
        start = (size - out) // 2
        cells = cp.empty((out, out), cp.int8)
        prob = cp.empty((out, out), cp.float32)
        self._k["occ_decode"](_blocks(out * out), (BLOCK,),
                              (logits, cp.int32(heights), cp.int32(size), cp.int32(out), cp.int32(start),
                               cp.float32(threshold), cells, prob))
        origin = -bev_half + start * res
        return occupancy.OccupancyGrid2D(cells, prob, res, origin, origin)
