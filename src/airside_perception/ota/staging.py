"""Staging checks of a swap request, before anything is loaded.

The path must resolve (symlinks included) to ``<root>/<task>/<version>`` under the engines
root; the manifest must parse, name the task, match its checksum and keep the serving
engine's input/output contract and preprocessing; a TensorRT engine must have been built for
this GPU and TensorRT version; a gate report may be required beside the manifest.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from airside_perception.engines import cache_key
from airside_perception.engines.manifest import (
    TASKS,
    Manifest,
    contract_outputs,
    detection_grid_problem,
    load_manifest,
    signature_differences,
)
from airside_perception.engines.trust import TrustPolicy, check
from airside_perception.errors import ManifestError, SwapError
from airside_perception.frames import ENGINE_INTENSITY_MAX

GATE_REPORT = "gate_report.json"


def resolve_version_dir(engines_root: str, task: str, engine_path: str) -> str:
    """``engine_path`` (a version directory or a file in one) -> its real version directory."""
    if not task:
        raise SwapError(f"task is empty: give one of {list(TASKS)}")
    if task not in TASKS:
        raise SwapError(f"unknown task '{task}': give one of {list(TASKS)}")
    if not engine_path:
        raise SwapError(f"engine_path is empty: give a version directory such as {engines_root}/{task}/<version>")
    path = engine_path if os.path.isabs(engine_path) else os.path.join(engines_root, engine_path)
    if not os.path.exists(path):
        raise SwapError(f"{engine_path} does not exist: copy the version directory to "
                        f"{engines_root}/{task}/<version> first")
    real = os.path.realpath(path)
    if os.path.isfile(real):
        real = os.path.dirname(real)
    task_root = os.path.realpath(os.path.join(engines_root, task))
    if os.path.dirname(real) != task_root:
        raise SwapError(f"{engine_path} resolves to {real}, which is not a version directory under {task_root}: "
                        f"engines are only taken from {task_root}/<version>")
    return real


def stage(engines_root: str, task: str, engine_path: str, serving: Manifest, require_gate_report: bool,
          trt_identity: Optional[Tuple[str, str]] = None, trust: Optional[TrustPolicy] = None) -> Manifest:
    """The checked manifest of the candidate; ``SwapError`` says what is wrong and how to fix it.
    With ``trust``, the version must pass ``engines.trust.check`` (not revoked; bundled with the
    package or signed by a trusted key when signatures are required), for this task and this
    version directory's name."""
    version_dir = resolve_version_dir(engines_root, task, engine_path)
    if trust is not None:
        verdict = check(version_dir, task, os.path.basename(version_dir), engines_root, trust)
        if not verdict.trusted:
            raise SwapError(f"trust check failed: {verdict.reason}")
    try:
        candidate = load_manifest(version_dir)
    except ManifestError as exc:
        raise SwapError(str(exc)) from None
    if candidate.task != task:
        raise SwapError(f"{version_dir}/manifest.yaml is for task '{candidate.task}', not '{task}': "
                        f"ask for task '{candidate.task}' or pick a {task} version")
    if candidate.version != os.path.basename(version_dir):
        raise SwapError(f"{version_dir}/manifest.yaml says version {candidate.version}, its directory "
                        f"{os.path.basename(version_dir)}: a version lives in a directory of its own name")
    if os.path.realpath(candidate.directory) == os.path.realpath(serving.directory):
        raise SwapError(f"{task} {candidate.version} is already serving")
    diffs = signature_differences(serving.inputs, candidate.inputs, "input")
    diffs += signature_differences(contract_outputs(serving), contract_outputs(candidate), "output")
    if task == "detection":
        diffs += [p for p in (detection_grid_problem(candidate, t.name, t.shape) for t in candidate.outputs
                              if len(t.shape) == 4) if p]
    if diffs:
        raise SwapError(f"{task} {candidate.version} breaks the task's input/output contract: " + "; ".join(diffs)
                        + ": re-export it with the serving version's signature")
    if _preprocessing(candidate) != _preprocessing(serving):
        raise SwapError(f"{task} {candidate.version} needs preprocessing {_preprocessing(candidate)}, the "
                        f"host runs {_preprocessing(serving)}: all hosted engines share one BEV grid")
    if trt_identity is not None:
        _check_tensorrt_engine(candidate, *trt_identity)
    if require_gate_report:
        _check_gate_report(candidate)
    return candidate


def _preprocessing(manifest: Manifest) -> dict:
    """The manifest's preprocessing with the defaults older manifests leave out."""
    return {"intensity_max": ENGINE_INTENSITY_MAX, **dict(manifest.preprocessing)}


def _check_tensorrt_engine(candidate: Manifest, trt_version: str, capability: str) -> None:
    engines = [os.path.join(candidate.directory, n) for n in os.listdir(candidate.directory)
               if n.endswith(cache_key.ENGINE_SUFFIX)]
    if not engines:
        raise SwapError(f"{candidate.directory} has no TensorRT engine: run 'engine_tool build' on this vehicle")
    reasons = [cache_key.mismatch_reason(cache_key.read_sidecar(e), candidate.sha256, trt_version, capability)
               for e in engines]
    if all(reasons):
        raise SwapError(f"no engine in {candidate.directory} fits this vehicle: " + "; ".join(sorted(set(reasons))))


def _check_gate_report(candidate: Manifest) -> None:
    path = os.path.join(candidate.directory, GATE_REPORT)
    try:
        with open(path) as fh:
            report = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SwapError(f"{path}: no readable gate report ({exc}): run 'engine_tool validate' and ship its "
                        "report beside the manifest") from None
    if report.get("candidate_sha256") != candidate.sha256:
        raise SwapError(f"{path} was made for another model file: re-run 'engine_tool validate'")
    if not report.get("passed"):
        failed = [g["name"] for g in report.get("gates", []) if not g.get("passed")]
        raise SwapError(f"{path}: the candidate failed the gates {failed}: it may not drive")
