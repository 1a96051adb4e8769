"""Per-cloud trust: does this cloud look like the world the engines were trained on?

Softmax confidence saturates: the engines report 0.9+ on street scans they label wrongly.
The monitor instead compares a handful of per-frame statistics with their spread on the
validation split:

* of the input, shared by every task (from the BEV raster, computed once per cloud): the
  ground's height and tilt under the vehicle (mount height, pitch, roll), mean and median
  pillar intensity (scale, gain), points and points per pillar (beam pattern), share of tall pillars (scene);
* of each task's raw outputs: mean max-logit and share of undecided points (segmentation),
  share of undecided heatmap / grid cells (detection, occupancy).

Each statistic is a robust z-score (median, MAD) divided by its limit, the ``1 - rate``
quantile on the calibration scans times a margin; the frame's score is the largest of them,
so 1.0 is the threshold and ``worst`` names the statistic that crossed it. ``trust`` maps
the score to 0..1 (0.5 at the threshold) without saturating in distribution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from airside_perception.errors import ConfigError, ManifestError
from airside_perception.ops.bev import BevInput, BevSpec

#: Statistics and the side on which they may leave the training world.
#: "both": too high or too low; "high": only too high counts (uncertainty); "low": only too low.
INPUT_FEATURES: Dict[str, str] = {
    "ground_z_m": "both", "ground_tilt_x": "both", "ground_tilt_y": "both", "intensity_mean": "both",
    "intensity_median": "both",
    "log_points": "both", "log_points_per_pillar": "both", "tall_pillar_share": "both",
}
OUTPUT_FEATURES: Dict[str, Dict[str, str]] = {
    "segmentation": {"seg_max_logit": "low", "seg_undecided_share": "high"},
    "detection": {"det_undecided_share": "high", "det_peak_logit": "both"},
    "occupancy": {"occ_undecided_share": "high"},
}
#: Ring of pillars around the vehicle whose floor tells the ground's height and tilt.
GROUND_RING_M = (4.0, 30.0)
TALL_PILLAR_M = 5.0
DETECTION_PEAKS = 16  # the largest heatmap logits of a frame
MIN_SCALE = 1e-4
MIN_CALIBRATION_SCANS = 20
TRUST_AT_THRESHOLD = 0.5


@functools.lru_cache(maxsize=4)
def _pillar_geometry(spec: BevSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (flat, metres) of every pillar centre and the ground-ring mask."""
    c = -spec.half_extent_m + (np.arange(spec.size) + 0.5) * spec.resolution_m
    xs, ys = np.meshgrid(c, c)
    r = np.hypot(xs, ys).reshape(-1)
    ring = (r >= GROUND_RING_M[0]) & (r < GROUND_RING_M[1])
    return xs.reshape(-1).astype(np.float32), ys.reshape(-1).astype(np.float32), ring


def input_features(bev: BevInput, spec: BevSpec) -> Dict[str, float]:
    """Frame statistics of the encoded cloud (base_link). A cloud with too few pillars to say
    anything gets NaN statistics, which the monitor ignores."""
    raster = bev.bev[0].reshape(bev.bev.shape[1], -1)  # (8, S*S)
    xs, ys, ring = _pillar_geometry(spec)
    occupied = raster[0] > 0
    n_occ = int(occupied.sum())
    out = {k: float("nan") for k in INPUT_FEATURES}
    if n_occ < 50:
        return out
    floor = raster[3] * 4.0  # pillar min z, metres
    near = occupied & ring
    if near.sum() >= 50:
        z = floor[near]
        ground = float(np.percentile(z, 20))
        low = near & (floor < ground + 0.5)  # the pillars whose floor is the ground
        out["ground_z_m"] = ground
        if low.sum() >= 50:
            zl = floor[low] - floor[low].mean()
            out["ground_tilt_x"] = _slope(xs[low], zl)
            out["ground_tilt_y"] = _slope(ys[low], zl)
    pillar_intensity = raster[6][occupied]
    out["intensity_mean"] = float(pillar_intensity.mean())
    out["intensity_median"] = float(np.median(pillar_intensity))  # the ground's: gain and scale
    out["log_points"] = float(np.log10(len(bev.kept) + 1))
    out["log_points_per_pillar"] = float(raster[1][occupied].mean() * 4.0)
    out["tall_pillar_share"] = float((raster[2][occupied] * 4.0 > TALL_PILLAR_M).mean())
    return out


def pillar_geometry(spec: BevSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (flat, metres) of every pillar centre and the ground-ring mask, host arrays."""
    return _pillar_geometry(spec)


def input_features_on_device(bev: BevInput, spec: BevSpec, xp, geometry=None) -> Dict[str, Any]:
    """:func:`input_features` where the raster is (the GPU): masked sums and sorts of fixed
    size instead of boolean selections, so nothing waits for the device. Returns 0-d ``xp``
    arrays (NaN where :func:`input_features` gives NaN) for the frame's one read-back; equal to
    :func:`input_features` up to float rounding (sums in another order). ``geometry``: the
    :func:`pillar_geometry` arrays already on the device (uploaded once by the caller)."""
    raster = bev.bev[0].reshape(bev.bev.shape[1], -1)  # (8, S*S)
    xs, ys, ring = geometry if geometry is not None else (xp.asarray(a) for a in _pillar_geometry(spec))
    nan = xp.float32(float("nan"))
    occupied = raster[0] > 0
    n_occ = occupied.sum()
    floor = raster[3] * 4.0
    near = occupied & ring
    n_near = near.sum()
    ground = _masked_quantile(floor, near, 0.2, xp)
    low = near & (floor < ground + 0.5)
    n_low = low.sum()
    zl = xp.where(low, floor - _masked_mean(floor, low, xp), 0.0)
    tilt = [xp.where((n_occ >= 50) & (n_near >= 50) & (n_low >= 50), _masked_slope(c, zl, low, xp), nan)
            for c in (xs, ys)]
    enough = n_occ >= 50
    out = {
        "ground_z_m": xp.where(enough & (n_near >= 50), ground, nan),
        "ground_tilt_x": tilt[0], "ground_tilt_y": tilt[1],
        "intensity_mean": xp.where(enough, _masked_mean(raster[6], occupied, xp), nan),
        "intensity_median": xp.where(enough, _masked_quantile(raster[6], occupied, 0.5, xp), nan),
        "log_points": xp.where(enough, xp.log10(xp.float64(len(bev.kept) + 1)), nan),
        "log_points_per_pillar": xp.where(enough, _masked_mean(raster[1], occupied, xp) * 4.0, nan),
        "tall_pillar_share": xp.where(enough, _masked_mean((raster[2] * 4.0 > TALL_PILLAR_M).astype(xp.float32),
                                                           occupied, xp), nan),
    }
    return out


def _masked_mean(values, mask, xp):
    return xp.where(mask, values, 0).sum(dtype=xp.float64) / xp.maximum(mask.sum(), 1)


def _masked_quantile(values, mask, q: float, xp):
    """NumPy's default (linear) quantile of ``values[mask]``, from a sort of fixed size."""
    ordered = xp.sort(xp.where(mask, values, xp.inf))
    n = mask.sum()
    position = q * (xp.maximum(n, 1) - 1).astype(xp.float64)
    lower = xp.floor(position).astype(xp.int64)
    upper = xp.minimum(lower + 1, xp.maximum(n - 1, 0))
    a, b = (xp.where(n > 0, xp.take(ordered, i).astype(xp.float64), xp.nan) for i in (lower, upper))
    return a + (b - a) * (position - lower)


def _masked_slope(coord, z_centred, mask, xp):
    c = xp.where(mask, coord - _masked_mean(coord, mask, xp), 0.0)
    return (c * z_centred).sum() / xp.maximum((c * c).sum(), 1.0)


def _slope(coord: np.ndarray, z_centred: np.ndarray) -> float:
    """Least-squares rise over run of ``z`` along ``coord`` (metres per metre)."""
    c = coord - coord.mean()
    return float(np.dot(c, z_centred) / max(float(np.dot(c, c)), 1.0))


def segmentation_features(top_logits: np.ndarray, probabilities: np.ndarray, scalar=float) -> Dict[str, float]:
    """top_logits, probabilities (K,) float32: each point's largest logit and its softmax.
    ``scalar`` turns each 0-d result into the value returned (the device path keeps arrays)."""
    if len(top_logits) == 0:
        return {k: float("nan") for k in OUTPUT_FEATURES["segmentation"]}
    return {"seg_max_logit": scalar(top_logits.mean()), "seg_undecided_share": scalar((probabilities < 0.9).mean())}


def cell_features(prefix: str, probability: np.ndarray, peaks: Optional[np.ndarray] = None,
                  scalar=float) -> Dict[str, float]:
    """probability: any shape, 0..1 per cell; peaks: the largest logits (detection)."""
    out = {f"{prefix}_undecided_share": scalar(((probability > 0.1) & (probability < 0.6)).mean())}
    if peaks is not None:
        out[f"{prefix}_peak_logit"] = scalar(peaks.mean()) if len(peaks) else float("nan")
    return out


@dataclass(frozen=True)
class FeatureLimit:
    """One statistic: its median and robust scale on the calibration scans, the side that
    counts, and the normalised distance that marks the threshold."""

    name: str
    center: float
    scale: float
    limit: float
    side: str = "both"

    def distance(self, value: float) -> float:
        """0 at the median, 1.0 at the limit; NaN values count 0."""
        if not np.isfinite(value):
            return 0.0
        z = (value - self.center) / self.scale
        if self.side == "high":
            z = max(z, 0.0)
        elif self.side == "low":
            z = max(-z, 0.0)
        else:
            z = abs(z)
        return z / self.limit


@dataclass(frozen=True)
class TrustScore:
    """score: largest normalised distance (1.0 = threshold); trust: 0..1, 0.5 at the threshold;
    worst: the statistic that set the score."""

    score: float
    trust: float
    worst: str

    @property
    def is_out_of_distribution(self) -> bool:
        return self.score > 1.0


def trust_of(score: float) -> float:
    """1 at score 0, 0.5 at the threshold (score 1), towards 0 far outside; never saturates at 1
    in distribution the way a softmax does."""
    return float(1.0 / (1.0 + score * score))


@dataclass(frozen=True)
class MonitorCalibration:
    """The limits of one task's statistics, as stored in the manifest's ``monitor`` section."""

    features: Tuple[FeatureLimit, ...]
    false_alarm_rate: float
    margin: float
    split: str
    scans: int

    def score(self, values: Mapping[str, float]) -> TrustScore:
        best, worst = 0.0, ""
        for f in self.features:
            d = f.distance(values.get(f.name, float("nan")))
            if d > best:
                best, worst = d, f.name
        return TrustScore(best, trust_of(best), worst)

    def to_dict(self) -> Dict[str, Any]:
        return {"false_alarm_rate": self.false_alarm_rate, "margin": self.margin, "split": self.split,
                "scans": self.scans, "threshold": 1.0,
                "features": {f.name: {"center": round(f.center, 6), "scale": round(f.scale, 6),
                                      "limit": round(f.limit, 4), "side": f.side} for f in self.features}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "MonitorCalibration":
        try:
            feats = tuple(FeatureLimit(str(name), float(v["center"]), float(v["scale"]), float(v["limit"]),
                                       str(v.get("side", "both"))) for name, v in dict(data["features"]).items())
            cal = cls(feats, float(data["false_alarm_rate"]), float(data["margin"]), str(data["split"]),
                      int(data["scans"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: monitor section is malformed ({exc}): recalibrate with "
                                "'engine_tool calibrate-monitor'") from None
        bad = [f.name for f in feats if not (f.scale > 0 and f.limit > 0 and f.side in ("both", "high", "low"))]
        if bad or not feats:
            raise ManifestError(f"{where}: monitor limits of {bad or 'no statistic'} are invalid: recalibrate "
                                "with 'engine_tool calibrate-monitor'")
        return cal


def feature_sides(task: str) -> Dict[str, str]:
    return {**INPUT_FEATURES, **OUTPUT_FEATURES[task]}


def calibrate(rows: Sequence[Mapping[str, float]], task: str, false_alarm_rate: float, margin: float,
              split: str) -> MonitorCalibration:
    """Limits from per-frame statistics ``rows`` of in-distribution scans: per statistic the
    ``1 - rate / n_statistics`` quantile of its robust z-score, times ``margin``."""
    if not 0 < false_alarm_rate < 1:
        raise ConfigError(f"false_alarm_rate {false_alarm_rate} must lie in (0, 1)")
    if len(rows) < MIN_CALIBRATION_SCANS:
        raise ConfigError(f"the monitor needs at least {MIN_CALIBRATION_SCANS} in-distribution scans to calibrate, "
                          f"{len(rows)} given: add scans")
    sides = feature_sides(task)
    quantile = 1.0 - false_alarm_rate / len(sides)
    feats: List[FeatureLimit] = []
    for name, side in sides.items():
        values = np.array([r.get(name, np.nan) for r in rows], float)
        values = values[np.isfinite(values)]
        if len(values) < 20:
            continue
        center = float(np.median(values))
        scale = max(float(np.median(np.abs(values - center))) * 1.4826, MIN_SCALE, 1e-3 * abs(center))
        probe = FeatureLimit(name, center, scale, 1.0, side)
        dist = np.array([probe.distance(v) for v in values])
        limit = max(float(np.quantile(dist, quantile)) * margin, 1.0)
        feats.append(FeatureLimit(name, center, scale, limit, side))
    if not feats:
        raise ConfigError("no statistic could be computed on the calibration scans (empty or tiny clouds?)")
    return MonitorCalibration(tuple(feats), false_alarm_rate, margin, split, len(rows))
