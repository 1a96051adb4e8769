"""The versions a host starts with (the door ``startup``): the active version of each task, else
the configured one, else the newest that verifies; and the golden clouds that warm the engines up."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

import numpy as np

from airside_perception.engines.active import ActiveVersions
from airside_perception.engines.trust import TrustPolicy, Verdict, check, revocations
from airside_perception.errors import AirsideError
from airside_perception.ota import golden
from airside_perception.ota.swap import newest_first
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.pipelines.tasks import TaskEngine

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartupChoice:
    """The engine a task starts with (None: the task stays down) and every version refused on the way."""

    task: str
    engine: Optional[TaskEngine]
    verdict: Optional[Verdict]  # how the chosen version was trusted (None: not checked)
    refused: List[Tuple[str, str]]  # (version, why), in the order tried


def open_serving(engines_root: str, task: str, active: ActiveVersions, configured: Mapping[str, str],
                 backend: str, intra_op_threads: int, trust: Optional[TrustPolicy] = None) -> StartupChoice:
    """The engine of ``task`` to serve: the active version (state file), else the configured one,
    else (with ``trust``) the newest version under the root that verifies. With ``trust`` every
    candidate passes ``engines.trust.check`` first: one that fails is never opened."""
    candidates = [active.version(task), configured.get(task)]
    if trust is not None:
        candidates += newest_first(engines_root, task)
    refused: List[Tuple[str, str]] = []
    revoked = revocations(engines_root, trust) if trust is not None else None
    for version in dict.fromkeys(v for v in candidates if v):
        verdict = None
        if trust is not None:
            verdict = check(os.path.join(engines_root, task, version), task, version, engines_root, trust, revoked)
            if not verdict.trusted:
                refused.append((version, verdict.reason))
                continue
        try:
            engine = store.open_engine(store.load_version(engines_root, task, version), backend, intra_op_threads)
        except AirsideError as exc:
            refused.append((version, str(exc)))
            continue
        if refused:
            LOG.error(f"{task}: starting with {version}; refused: "
                      + "; ".join(f"{v}: {why}" for v, why in refused))
        return StartupChoice(task, engine, verdict, refused)
    LOG.error(f"{task}: no version can be served ({'; '.join(f'{v}: {why}' for v, why in refused)}): the task "
              "stays down and the simplex drives on the baseline")
    return StartupChoice(task, None, None, refused)


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
