"""Engine manifests: what a model file is, what it takes and gives, and how well it scored.

``engines/<task>/<version>/manifest.yaml`` travels with the model. Loading checks the format
version, the task, the model file's sha256 and the I/O signature, and names every difference.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from airside_perception.errors import ManifestError

FORMAT_VERSION = 1
TASKS = ("segmentation", "detection", "occupancy")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")
MANIFEST_NAME = "manifest.yaml"

Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: ``shape`` holds ints for fixed and strings for dynamic dimensions."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name} {list(self.shape)} {self.dtype}"

    def matches(self, other: "TensorSpec") -> bool:
        """Same name and dtype; fixed dimensions equal, dynamic ones dynamic on both sides."""
        if self.name != other.name or self.dtype != other.dtype or len(self.shape) != len(other.shape):
            return False
        return all((isinstance(a, str) and isinstance(b, str)) or a == b for a, b in zip(self.shape, other.shape))


@dataclass(frozen=True)
class Manifest:
    task: str
    version: str
    model_file: str
    sha256: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    preprocessing: Mapping[str, Any]
    postprocessing: Mapping[str, Any]
    class_names: Tuple[str, ...]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    format_version: int = FORMAT_VERSION
    monitor: Mapping[str, Any] = field(default_factory=dict)  # distribution-shift limits, engine_tool calibrate-monitor
    directory: str = ""
    not_after: str = ""  # ISO date after which no door opens this version ('' : no end), set by the signer
    sparsity: str = ""  # "2:4": every weight group of four holds at most two non-zeros (TensorRT --sparsity)

    @property
    def model_path(self) -> str:
        return os.path.join(self.directory, self.model_file)

    def signature(self) -> Tuple[Tuple[TensorSpec, ...], Tuple[TensorSpec, ...]]:
        return self.inputs, self.outputs


def sha256_of(path: str, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _require(data: Mapping[str, Any], key: str, kind, where: str):
    if key not in data:
        raise ManifestError(f"{where}: missing key '{key}'")
    value = data[key]
    if not isinstance(value, kind):
        raise ManifestError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _tensors(items: Any, where: str) -> Tuple[TensorSpec, ...]:
    if not isinstance(items, list) or not items:
        raise ManifestError(f"{where}: must be a non-empty list of {{name, shape, dtype}}")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ManifestError(f"{at}: must be a mapping with name, shape, dtype")
        name = _require(item, "name", str, at)
        shape = _require(item, "shape", list, at)
        dtype = _require(item, "dtype", str, at)
        if dtype not in DTYPES:
            raise ManifestError(f"{at}: dtype '{dtype}' is not one of {DTYPES}")
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d <= 0):
                raise ManifestError(f"{at}: shape entry {d!r} must be a positive int or a dimension name")
        out.append(TensorSpec(name, tuple(shape), dtype))
    return tuple(out)


def parse_manifest(data: Any, directory: str, source: str = MANIFEST_NAME) -> Manifest:
    """Builds a ``Manifest`` from parsed YAML; every problem names the key."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: must be a YAML mapping")
    fmt = _require(data, "format_version", int, source)
    if fmt != FORMAT_VERSION:
        raise ManifestError(f"{source}: format_version {fmt} is not supported (this runtime reads "
                            f"{FORMAT_VERSION}): re-export the engine with this release's engine_tool")
    task = _require(data, "task", str, source)
    if task not in TASKS:
        raise ManifestError(f"{source}: task '{task}' is not one of {TASKS}")
    model = _require(data, "model", dict, source)
    model_file = _require(model, "file", str, f"{source}: model")
    if os.path.basename(model_file) != model_file:
        raise ManifestError(f"{source}: model.file '{model_file}' must be a file name inside the version directory")
    sha = _require(model, "sha256", str, f"{source}: model")
    return Manifest(
        task=task, version=str(_require(data, "version", (str, int, float), source)), model_file=model_file,
        sha256=sha.lower(), inputs=_tensors(data.get("inputs"), f"{source}: inputs"),
        outputs=_tensors(data.get("outputs"), f"{source}: outputs"),
        preprocessing=_require(data, "preprocessing", dict, source),
        postprocessing=data.get("postprocessing") or {},
        class_names=tuple(str(c) for c in _require(data, "class_names", list, source)),
        metrics=data.get("metrics") or {}, validation=data.get("validation") or {},
        precision=str(model.get("precision", "fp32")), format_version=fmt, directory=directory,
        monitor=_optional_mapping(data, "monitor", source), not_after=parse_not_after(data.get("not_after"), source),
        sparsity=_sparsity(model.get("sparsity", ""), source))


def _sparsity(value: Any, source: str) -> str:
    if value in ("", None):
        return ""
    if value != "2:4":
        raise ManifestError(f"{source}: model.sparsity {value!r} must be \"2:4\" or absent")
    return "2:4"


def parse_not_after(value: Any, source: str = MANIFEST_NAME) -> str:
    """The manifest's ``not_after`` as an ISO date ('' when absent); a value that is no date is an error."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, datetime.date):
        return value.isoformat()
    try:
        return datetime.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ManifestError(f"{source}: not_after {value!r} is not a date: write it as YYYY-MM-DD") from None


def expiry_problem(not_after: str, today: Optional[datetime.date] = None) -> str:
    """Why a version whose manifest says ``not_after`` may no longer open ('' when it may)."""
    if not not_after:
        return ""
    today = today or datetime.date.today()
    if today > datetime.date.fromisoformat(not_after):
        return (f"expired: its manifest says not_after {not_after} (today is {today.isoformat()}); ship a newer "
                "version, or have the fleet key re-sign this one with a later date")
    return ""


def _optional_mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: '{key}' must be a mapping, got {value!r}")
    return value


def load_manifest(version_dir: str, verify_checksum: bool = True) -> Manifest:
    """Reads and checks ``version_dir/manifest.yaml``; with ``verify_checksum`` also hashes the model."""
    path = os.path.join(version_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: no manifest; a version directory needs manifest.yaml beside its model")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid YAML ({type(exc).__name__}: {exc}); fix the file or re-export "
                            "the engine") from None
    except OSError as exc:
        raise ManifestError(f"{path} cannot be read ({exc.strerror}): check the engines directory's permissions "
                            "(the nodes' user must read it)") from None
    manifest = parse_manifest(data, os.path.abspath(version_dir), path)
    if not os.path.isfile(manifest.model_path):
        raise ManifestError(f"{path}: model file {manifest.model_path} is missing")
    if verify_checksum:
        actual = sha256_of(manifest.model_path)
        if actual != manifest.sha256:
            raise ManifestError(f"{manifest.model_path}: sha256 {actual} does not match the manifest's "
                                f"{manifest.sha256}: the file is corrupt or was replaced; re-copy it or "
                                "regenerate the manifest with 'engine_tool export'")
    return manifest


#: The detection grids: 0.4 m (stride 1, the fine head) and 0.8 m (stride 2) cells of the 0.4 m input.
DETECTION_STRIDES = (1, 2)


def detection_grid_problem(manifest: "Manifest", name: str, shape: Sequence[Dim]) -> str:
    """Why a detector's output map of ``shape`` does not fit its manifest ('' when it does): its
    grid must be the input's over ``postprocessing.stride`` (2: 0.8 m cells, 1: 0.4 m)."""
    stride = manifest.postprocessing.get("stride")
    size = next((t.shape[-1] for t in manifest.inputs if t.name == "bev"), None)
    if stride not in DETECTION_STRIDES:
        return (f"output '{name}' has shape {list(shape)} and postprocessing.stride {stride}: detectors output "
                f"at stride {' or '.join(map(str, DETECTION_STRIDES))} of the input grid; re-export the model")
    if len(shape) == 4 and isinstance(size, int) and shape[2] * stride == size and shape[3] * stride == size:
        return ""
    return (f"output '{name}' has shape {list(shape)}, which postprocessing.stride {stride} of the manifest does "
            f"not give on the {size}-cell input grid: fix the stride in the manifest or re-export the model")


def contract_outputs(manifest: "Manifest") -> List[TensorSpec]:
    """The outputs as the task's contract compares them between versions: a detector's map size
    follows its stride (checked by :func:`detection_grid_problem`), its classes and box fields stay."""
    if manifest.task != "detection":
        return list(manifest.outputs)
    return [TensorSpec(t.name, tuple(t.shape[:2]) + ("grid", "grid"), t.dtype) if len(t.shape) == 4 else t
            for t in manifest.outputs]


def signature_differences(expected: Sequence[TensorSpec], actual: Sequence[TensorSpec], what: str) -> List[str]:
    """Human-readable differences between two tensor lists (empty when they agree)."""
    diffs = []
    exp = {t.name: t for t in expected}
    act = {t.name: t for t in actual}
    for name in exp:
        if name not in act:
            diffs.append(f"{what} '{name}' missing (expected {exp[name].describe()})")
        elif not exp[name].matches(act[name]):
            diffs.append(f"{what} '{name}': expected {exp[name].describe()}, found {act[name].describe()}")
    for name in act:
        if name not in exp:
            diffs.append(f"unexpected {what} {act[name].describe()}")
    return diffs


def write_manifest(manifest: Manifest, version_dir: str) -> str:
    """Writes ``manifest`` as YAML into ``version_dir``; returns the path."""
    def tensors(ts):
        return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in ts]

    data: Dict[str, Any] = {
        "format_version": manifest.format_version, "task": manifest.task, "version": manifest.version,
        "model": {"file": manifest.model_file, "sha256": manifest.sha256, "precision": manifest.precision,
                  **({"sparsity": manifest.sparsity} if manifest.sparsity else {})},
        "inputs": tensors(manifest.inputs), "outputs": tensors(manifest.outputs),
        "preprocessing": dict(manifest.preprocessing), "postprocessing": dict(manifest.postprocessing),
        "class_names": list(manifest.class_names), "metrics": _plain(manifest.metrics),
        "validation": dict(manifest.validation),
    }
    if manifest.monitor:
        data["monitor"] = _plain(manifest.monitor)
    path = os.path.join(version_dir, MANIFEST_NAME)
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None, width=110)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
