"""Turns a model file into a version directory: copy, checksum, I/O listing, manifest."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import tempfile
from typing import Any, Dict, Mapping, Optional

from airside_perception import classes
from airside_perception.engines.manifest import Manifest, sha256_of, write_manifest
from airside_perception.errors import ManifestError
from airside_perception.ops.bev import BevSpec

DEFAULT_POSTPROCESSING: Dict[str, Dict[str, Any]] = {
    "segmentation": {},
    "detection": {"stride": 2, "score_threshold": 0.3, "max_detections": 200, "nms_iou": 0.2},
    "occupancy": {"threshold": 0.6, "grid_half_extent_m": 40.0},
}
#: How closely a candidate must agree with the serving engine on golden inputs before a swap.
DEFAULT_VALIDATION: Dict[str, Dict[str, Any]] = {
    "segmentation": {"min_label_agreement": 0.9},
    "detection": {"min_detection_f1": 0.7},
    "occupancy": {"min_occupied_iou": 0.7},
}
CLASS_NAMES = {"segmentation": classes.CLASS_NAMES, "detection": classes.DETECTION_CLASS_NAMES,
               "occupancy": ("free", "occupied")}


def onnx_signature(model_path: str):
    """Inputs and outputs of an ONNX model as read by ONNX Runtime."""
    import onnxruntime as ort

    from airside_perception.backends.onnxruntime_backend import _spec_of

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    return (tuple(_spec_of(a) for a in sess.get_inputs()), tuple(_spec_of(a) for a in sess.get_outputs()))


def _postprocessing(task: str, inputs, outputs) -> Dict[str, Any]:
    """The task's defaults; a detector's stride read from its heatmap's width against its input's."""
    post = dict(DEFAULT_POSTPROCESSING[task])
    if task == "detection":
        size = {a.name: a.shape for a in inputs}.get("bev", (0,) * 4)[-1]
        heat = {a.name: a.shape for a in outputs}.get("heatmap", (0,) * 4)[-1]
        if isinstance(size, int) and isinstance(heat, int):  # symbolic sizes keep the default
            if heat <= 0 or size % heat:
                raise ManifestError(f"detection model: its heatmap's width {heat} does not divide its input's "
                                    f"width {size}; export the heatmap at the input's size over a whole stride")
            post["stride"] = size // heat
    return post


def refuse_existing(engines_root: str, task: str, version: str, overwrite: bool) -> None:
    """Raises ``ManifestError`` when the version exists and ``overwrite`` is off: call it before
    any work, so that a refusal costs nothing."""
    target = os.path.join(engines_root, task, version)
    if os.path.exists(target) and not overwrite:
        raise ManifestError(f"{target} exists: pick a new version (versions are immutable) or pass --overwrite")


def package_version(model_path: str, task: str, version: str, engines_root: str, precision: str = "fp32",
                    metrics: Optional[Mapping[str, Any]] = None, bev: Optional[BevSpec] = None,
                    overwrite: bool = False, with_golden: bool = True) -> Manifest:
    """Creates ``engines_root/task/version/`` with ``model.onnx`` and ``manifest.yaml``. The
    directory is assembled beside its place and renamed into it when complete: a failure or a kill
    leaves no half-written version (at most a ``.tmp-*`` directory, never taken for a version)."""
    bev = bev or BevSpec()
    if task not in CLASS_NAMES:
        raise ManifestError(f"unknown task '{task}': segmentation, detection or occupancy")
    refuse_existing(engines_root, task, version, overwrite)
    target = os.path.join(engines_root, task, version)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    for stale in glob.glob(os.path.join(os.path.dirname(target), f".tmp-{version}-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a run of this version that was killed
    work = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=os.path.dirname(target))
    os.chmod(work, 0o755)  # a version directory, readable by the nodes' user like the others
    try:
        dest = os.path.join(work, "model.onnx")
        shutil.copyfile(model_path, dest)
        inputs, outputs = onnx_signature(dest)
        from airside_perception.ota import golden

        validation = dict(DEFAULT_VALIDATION[task])
        if with_golden:
            golden_path = golden.write_golden(work)
            validation.update(golden_inputs=golden.GOLDEN_FILE, golden_sha256=sha256_of(golden_path))
        manifest = Manifest(
            task=task, version=version, model_file="model.onnx", sha256=sha256_of(dest), inputs=inputs,
            outputs=outputs,
            preprocessing={"encoder": "pillar_statistics", "half_extent_m": bev.half_extent_m,
                           "resolution_m": bev.resolution_m, "z_min_m": bev.z_min_m, "z_max_m": bev.z_max_m,
                           "max_pillars": bev.max_pillars, "intensity_max": bev.intensity_max},
            postprocessing=_postprocessing(task, inputs, outputs), class_names=tuple(CLASS_NAMES[task]),
            metrics=dict(metrics or {}), validation=validation, precision=precision, directory=work)
        write_manifest(manifest, work)
        if os.path.exists(target):  # overwrite: the old version goes only once the new one is complete
            shutil.rmtree(target)
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dataclasses.replace(manifest, directory=target)
