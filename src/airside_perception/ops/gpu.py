"""The pre/post-processing on device arrays, for the vehicle's GPU path.

The same functions as :mod:`bev`, :mod:`segmentation`, :mod:`detection` and :mod:`occupancy`,
run with CuPy as their array module. ``scripts/check_gpu_ops.py`` checks on a CUDA GPU that
they give the NumPy results. CuPy is imported when a function is first called.
"""

from __future__ import annotations

from airside_perception.ops import bev, detection, occupancy, segmentation


def _cp():
    import cupy

    return cupy


def encode(points, spec: bev.BevSpec) -> bev.BevInput:
    """points (N, 4) float32 on the device -> :class:`bev.BevInput` of device arrays."""
    return bev.encode(points, spec, xp=_cp())


def softmax_max(logits):
    return segmentation.softmax_max(logits, xp=_cp())


def scatter_labels(kept, labels, scores, n_points: int):
    return segmentation.scatter_labels(kept, labels, scores, n_points, xp=_cp())


def heatmap_peaks(heat):
    """(C, H, W) probabilities -> mask of 3x3 local maxima."""
    return detection.heatmap_peaks(heat, xp=_cp())


def decode_occupancy(logits, bev_half_extent_m: float, resolution_m: float, out_half_extent_m: float,
                     threshold: float) -> occupancy.OccupancyGrid2D:
    """(1, Z, S, S) logits -> :class:`occupancy.OccupancyGrid2D` with device arrays."""
    return occupancy.decode_occupancy(logits, bev_half_extent_m, resolution_m, out_half_extent_m, threshold,
                                      xp=_cp())


class PreprocessingDevice:
    """Where the shared encoding runs: ``cpu`` (NumPy) or ``gpu`` (the fused kernels of
    :mod:`gpu_encode`, results copied back to host arrays for the engines' host-side feeds).
    ``gpu`` falls back to the CPU where CuPy or a CUDA device is missing or fails;
    ``fallback_reason`` then says why."""

    def __init__(self, requested: str):
        if requested not in ("cpu", "gpu"):
            raise ValueError(f"preprocessing_device '{requested}' must be cpu or gpu")
        self.requested = requested
        self.fallback_reason = ""
        self.device = "cpu"
        self._encoders = {}  # BevSpec -> gpu_encode.FusedEncoder
        if requested == "gpu":
            try:
                cupy = _cp()
                cupy.cuda.runtime.getDeviceCount()
                cupy.zeros(1).sum()  # a real kernel launch, not just an import
                self.device = "gpu"
            except Exception as exc:  # ImportError, CUDA driver or runtime errors: all mean "no GPU here"
                self.fallback_reason = f"GPU preprocessing unavailable ({type(exc).__name__}: {exc}); using the CPU"

    def encode(self, points, spec: bev.BevSpec) -> bev.BevInput:
        if self.device == "cpu":
            return bev.encode(points, spec)
        try:
            cupy = _cp()
            encoder = self._encoders.get(spec)
            if encoder is None:
                from airside_perception.ops.gpu_encode import FusedEncoder

                encoder = self._encoders[spec] = FusedEncoder(spec)
            d = encoder.encode(cupy.asarray(points))
            return bev.BevInput(cupy.asnumpy(d.bev), cupy.asnumpy(d.kept), cupy.asnumpy(d.point_cells),
                                cupy.asnumpy(d.point_features), d.n_input, int(d.overflow_points),
                                int(d.overflow_pillars))
        except Exception as exc:  # a failing device must not stop the frame: fall back for good
            self.device = "cpu"
            self.fallback_reason = f"GPU preprocessing failed ({type(exc).__name__}: {exc}); using the CPU"
            return bev.encode(points, spec)
