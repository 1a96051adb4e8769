"""The engines root: ``<root>/<task>/<version>/``. Resolves, lists and loads versions."""

from __future__ import annotations

import os
from typing import List

from airside_perception.backends.select import create_backend
from airside_perception.engines.manifest import TASKS, Manifest, load_manifest
from airside_perception.errors import ManifestError
from airside_perception.pipelines.tasks import TaskEngine


def version_dir(engines_root: str, task: str, version: str) -> str:
    return os.path.join(engines_root, task, version)


def list_versions(engines_root: str, task: str) -> List[str]:
    folder = os.path.join(engines_root, task)
    if not os.path.isdir(folder):
        return []
    return sorted(v for v in os.listdir(folder) if os.path.isfile(os.path.join(folder, v, "manifest.yaml")))


def load_version(engines_root: str, task: str, version: str) -> Manifest:
    """The checked manifest of ``task`` ``version``; the task must match its folder."""
    if task not in TASKS:
        raise ManifestError(f"unknown task '{task}': one of {TASKS}")
    path = version_dir(engines_root, task, version)
    if not os.path.isdir(path):
        have = list_versions(engines_root, task)
        raise ManifestError(f"{path} does not exist; versions of {task} here: {have or 'none'}")
    manifest = load_manifest(path)
    if manifest.task != task:
        raise ManifestError(f"{path}/manifest.yaml is for task '{manifest.task}', not '{task}'")
    return manifest


def open_engine(manifest: Manifest, backend: str = "auto", intra_op_threads: int = 1) -> TaskEngine:
    """Loads and activates the engine of ``manifest``."""
    engine_backend = create_backend(manifest, backend, intra_op_threads).activate()
    return TaskEngine(manifest, engine_backend)
