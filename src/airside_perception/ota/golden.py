"""Golden inputs: a few clouds shipped in each version directory, on which a swap candidate is
compared with the serving engine before it may serve."""

from __future__ import annotations

import os
from typing import List, Sequence

import numpy as np

from airside_perception.engines.manifest import Manifest, sha256_of
from airside_perception.errors import ManifestError

GOLDEN_FILE = "golden.npz"
GOLDEN_SEEDS = (110_000, 110_001)  # test split, default density


def write_golden(version_dir: str, seeds: Sequence[int] = GOLDEN_SEEDS) -> str:
    from airside_perception.sim.world import make_scan

    path = os.path.join(version_dir, GOLDEN_FILE)
    clouds = {f"cloud_{i}": make_scan(int(s)).points for i, s in enumerate(seeds)}
    np.savez_compressed(path, seeds=np.asarray(seeds), **clouds)
    return path


def load_golden(manifest: Manifest) -> List[np.ndarray]:
    """The golden clouds of ``manifest``'s version, checked against the manifest's sha256."""
    name = manifest.validation.get("golden_inputs")
    if not name:
        raise ManifestError(f"{manifest.directory}: manifest names no validation.golden_inputs; "
                            "add them with 'engine_tool golden'")
    path = os.path.join(manifest.directory, str(name))
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: golden inputs missing; re-copy the version directory")
    expected = manifest.validation.get("golden_sha256")
    if expected and sha256_of(path) != expected:
        raise ManifestError(f"{path}: sha256 differs from the manifest's: the file is corrupt; re-copy it")
    with np.load(path) as data:
        return [data[k].astype(np.float32) for k in sorted(data.files) if k.startswith("cloud_")]
