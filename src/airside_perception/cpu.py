"""Threads and cores of a node, without ROS: sized once at start, reported while it runs.

Every library that keeps a thread pool sizes it from the machine's core count unless told
otherwise: OpenBLAS (NumPy's ``@`` and ``linalg``), OpenMP, MKL, numexpr. On a 2-core
machine that runs three engines, the baseline and the simplex, a pool that wakes for one small
matmul and then spins takes a core from ONNX Runtime, and the whole graph's throughput halves.
So each process sizes its pools itself, from typed parameters:

- ``threads``: the BLAS / OpenMP pools (through ``threadpoolctl``, for libraries already
  loaded, and the environment, for libraries and child processes loaded later). ONNX Runtime's
  own pools are sized per engine by the inference host (``intra_op_threads``).
- ``cpu_affinity``: the cores the process may run on (empty: every core it was given);
  applied to every thread that exists now, and inherited by every thread started later.
- ``nice``: the scheduling priority of every thread (0: unchanged; below 0 needs
  CAP_SYS_NICE, or a ``launch-prefix`` with ``nice``/``chrt``).

``CpuMeter`` gives the process's CPU share (of one core) and thread counts for diagnostics.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from airside_perception.errors import ConfigError

LOG = logging.getLogger(__name__)

#: Environment variables that size the thread pools of BLAS, OpenMP and numexpr builds.
POOL_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
MAX_THREADS = 64


@dataclass(frozen=True)
class CpuSettings:
    """threads: size of the BLAS / OpenMP pools (>= 1); cpu_affinity: core ids (empty: all);
    nice: scheduling priority, -20..19 (0: unchanged)."""

    threads: int = 1
    cpu_affinity: Tuple[int, ...] = ()
    nice: int = 0

    def __post_init__(self):
        if not 1 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"threads = {self.threads} must be in [1, {MAX_THREADS}]: 1 suits every node here "
                              "(no hot path needs a BLAS pool)")
        if not -20 <= self.nice <= 19:
            raise ConfigError(f"nice = {self.nice} must be in [-20, 19]")
        if len(set(self.cpu_affinity)) != len(self.cpu_affinity) or any(c < 0 for c in self.cpu_affinity):
            raise ConfigError(f"cpu_affinity {list(self.cpu_affinity)} must list distinct core ids >= 0")


def settings_from(cfg: Dict[str, object]) -> CpuSettings:
    """``CpuSettings`` from a node's parsed configuration (keys ``threads``, ``cpu_affinity``, ``nice``)."""
    affinity = cfg.get("cpu_affinity") or []
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in affinity):
        raise ConfigError(f"cpu_affinity {affinity} must be a list of core ids (integers), e.g. [0, 1]")
    return CpuSettings(int(cfg["threads"]), tuple(affinity), int(cfg.get("nice", 0)))


def _thread_ids() -> Sequence[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the calling thread only
        return [0]


def _limit_pools(threads: int) -> Dict[str, int]:
    """Sizes the pools of every BLAS / OpenMP library loaded in this process; returns what it found."""
    for name in POOL_ENV_VARS:
        os.environ[name] = str(threads)
    try:
        import threadpoolctl
    except ImportError:
        LOG.warning("threadpoolctl is not installed: BLAS pools already loaded keep their size "
                    "(pip install threadpoolctl)")
        return {}
    threadpoolctl.threadpool_limits(limits=threads)
    return {f"{p['internal_api']} ({os.path.basename(p['filepath'])})": p["num_threads"]
            for p in threadpoolctl.threadpool_info()}


def _pin(cores: Tuple[int, ...]) -> None:
    available = sorted(os.sched_getaffinity(0))
    unknown = [c for c in cores if c not in available]
    if unknown:
        raise ConfigError(f"cpu_affinity {list(cores)} names cores {unknown} this process may not use: "
                          f"choose among {available}")
    for tid in _thread_ids():
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def _renice(nice: int) -> None:
    for tid in _thread_ids():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            continue
        except PermissionError:
            raise ConfigError(f"nice = {nice} needs CAP_SYS_NICE: give the node that right, or use "
                              f"launch-prefix=\"nice -n {nice}\" as root, or set nice >= 0") from None


def apply(settings: CpuSettings) -> Dict[str, object]:
    """Sizes the pools, pins and reprioritises the process; call it first thing in a node.
    Returns what it set, for diagnostics. Raises ``ConfigError`` naming the fix."""
    pools = _limit_pools(settings.threads)
    if settings.cpu_affinity:
        if not hasattr(os, "sched_setaffinity"):
            raise ConfigError("cpu_affinity needs Linux (os.sched_setaffinity): leave it empty here")
        _pin(settings.cpu_affinity)
    if settings.nice:
        _renice(settings.nice)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {"threads": settings.threads, "pools": pools, "cores": cores, "nice": settings.nice}


class CpuMeter:
    """CPU share of this process (1.0 = one core busy) over the time since the last reading."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last = self._now()

    @staticmethod
    def _now() -> Tuple[float, float]:
        t = os.times()
        return time.monotonic(), t.user + t.system

    def share(self) -> Optional[float]:
        """Cores used on average since the previous call; None on the first call's zero span."""
        with self._lock:
            now = self._now()
            (wall0, cpu0), self._last = self._last, now
        span = now[0] - wall0
        return (now[1] - cpu0) / span if span > 0 else None

    @staticmethod
    def os_threads() -> int:
        """Threads of this process as the kernel counts them (Python's and the libraries')."""
        try:
            return len(os.listdir("/proc/self/task"))
        except OSError:
            return threading.active_count()


def report(applied: Dict[str, object], meter: CpuMeter) -> Dict[str, str]:
    """Key / value lines of a node's CPU diagnostics."""
    share = meter.share()
    values = {"cpu share (cores)": "n/a" if share is None else f"{share:.2f}",
              "os threads": str(meter.os_threads()), "python threads": str(threading.active_count()),
              "blas threads (setting)": str(applied.get("threads")),
              "cores": ",".join(str(c) for c in applied.get("cores", [])) or "all", "nice": str(applied.get("nice"))}
    for name, n in dict(applied.get("pools", {})).items():
        values[f"pool {name}"] = str(n)
    return values
