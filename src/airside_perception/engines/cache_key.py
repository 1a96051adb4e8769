"""TensorRT engines are tied to their GPU and TensorRT version: the cache key says which.

Key: model sha256, TensorRT version, GPU compute capability, DLA core, precision and the
shape profile. It is written into the engine's file name and into a JSON sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".engine.json"

Profile = Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    tensorrt_version: str
    compute_capability: str  # "8.7" for Orin
    dla_core: int  # -1: GPU only
    precision: str  # fp32 | fp16 | int8
    profile: str  # digest of the min/opt/max shapes

    def file_name(self) -> str:
        target = "gpu" if self.dla_core < 0 else f"dla{self.dla_core}"
        return (f"{self.model_sha256[:12]}_trt{self.tensorrt_version}_sm{self.compute_capability.replace('.', '')}"
                f"_{target}_{self.precision}_{self.profile}{ENGINE_SUFFIX}")


def profile_digest(profile: Profile) -> str:
    text = json.dumps({k: [list(s) for s in v] for k, v in sorted(profile.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def write_sidecar(engine_path: str, key: EngineKey, extra: Optional[dict] = None) -> str:
    path = engine_path[: -len(ENGINE_SUFFIX)] + SIDECAR_SUFFIX
    with open(path, "w") as fh:
        json.dump({"key": asdict(key), **(extra or {})}, fh, indent=2)
    return path


def read_sidecar(engine_path: str) -> Optional[EngineKey]:
    path = engine_path[: -len(ENGINE_SUFFIX)] + SIDECAR_SUFFIX
    try:
        with open(path) as fh:
            return EngineKey(**json.load(fh)["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def matching_engines(version_dir: str, model_sha256: str, tensorrt_version: str, compute_capability: str,
                     dla_core: int = -1) -> List[str]:
    """Engines in ``version_dir`` built from this model for this TensorRT, GPU and DLA core."""
    found = []
    for name in sorted(os.listdir(version_dir)):
        if not name.endswith(ENGINE_SUFFIX):
            continue
        key = read_sidecar(os.path.join(version_dir, name))
        if key and (key.model_sha256, key.tensorrt_version, key.compute_capability, key.dla_core) == (
                model_sha256, tensorrt_version, compute_capability, dla_core):
            found.append(os.path.join(version_dir, name))
    return found


def mismatch_reason(key: Optional[EngineKey], model_sha256: str, tensorrt_version: str,
                    compute_capability: str) -> Optional[str]:
    """Why an engine with ``key`` cannot run here, or None when it can."""
    if key is None:
        return "the engine has no readable .engine.json sidecar: rebuild it with 'engine_tool build'"
    if key.model_sha256 != model_sha256:
        return (f"built from model {key.model_sha256[:12]}, the manifest's model is {model_sha256[:12]}: "
                "rebuild the engine from this version's model")
    if key.tensorrt_version != tensorrt_version:
        return (f"built with TensorRT {key.tensorrt_version}, this vehicle runs {tensorrt_version}: "
                "rebuild on the vehicle")
    if key.compute_capability != compute_capability:
        return (f"built for compute capability {key.compute_capability}, this GPU is {compute_capability}: "
                "rebuild on this GPU")
    return None
