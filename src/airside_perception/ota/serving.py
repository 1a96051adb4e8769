"""The versions a host starts with: the active version of each task, else the configured one;
and the golden clouds that warm the engines up before the first real cloud."""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from airside_perception.engines.active import ActiveVersions
from airside_perception.errors import AirsideError
from airside_perception.ota import golden
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.pipelines.tasks import TaskEngine

LOG = logging.getLogger(__name__)


def open_serving(engines_root: str, task: str, active: ActiveVersions, configured: Mapping[str, str],
                 backend: str, intra_op_threads: int) -> TaskEngine:
    """The engine of ``task`` to serve: the active version (state file), or the configured one when
    the active one cannot be loaded (said at ERROR). Raises what the configured one raises."""
    version = active.version(task)
    try:
        return store.open_engine(store.load_version(engines_root, task, version), backend, intra_op_threads)
    except AirsideError as exc:
        fallback = configured.get(task)
        if not fallback or fallback == version:
            raise
        LOG.error(f"{task} {version} cannot be loaded ({exc}); starting with {fallback}")
        return store.open_engine(store.load_version(engines_root, task, fallback), backend, intra_op_threads)


def warm_up(host: PerceptionHost, rounds: int = 2) -> int:
    """Runs the golden clouds of the first task that has them through every engine, ``rounds``
    times, so that the first real frames do not pay for first allocations; returns the clouds run."""
    clouds: list = []
    for task in host.tasks:
        try:
            clouds = golden.load_golden(host.engine(task).manifest)
            break
        except AirsideError:
            continue
    for _ in range(rounds):
        for cloud in clouds:
            host.process(np.asarray(cloud))
    return len(clouds)
