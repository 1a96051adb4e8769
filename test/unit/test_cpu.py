"""Thread pools, cores and CPU share of a node (core, no ROS)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import threadpoolctl

from airside_perception import cpu
from airside_perception.errors import ConfigError


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, r"threads = 0 must be in \[1, 64\]"),
    ({"threads": 1, "nice": 25}, r"nice = 25 must be in \[-20, 19\]"),
    ({"threads": 1, "cpu_affinity": (0, 0)}, "distinct core ids"),
    ({"threads": 1, "cpu_affinity": (-1,)}, "distinct core ids"),
])
def test_settings_refuse_what_cannot_be_applied(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cpu.CpuSettings(**kwargs)


def test_settings_from_a_node_configuration_refuse_non_integer_cores():
    with pytest.raises(ConfigError, match="list of core ids"):
        cpu.settings_from({"threads": 1, "cpu_affinity": ["0"], "nice": 0})
    assert cpu.settings_from({"threads": 2, "cpu_affinity": [0], "nice": 0}) == cpu.CpuSettings(2, (0,), 0)


def test_apply_sizes_the_blas_pool_numpy_loaded():
    applied = cpu.apply(cpu.CpuSettings(threads=1))  # the test process keeps 1-thread pools: harmless
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas, "NumPy's BLAS was not found by threadpoolctl"
    assert all(p["num_threads"] == 1 for p in blas)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
    assert applied["threads"] == 1 and applied["pools"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_affinity_pins_every_thread_and_refuses_unknown_cores():
    original = os.sched_getaffinity(0)
    first = min(original)
    try:
        applied = cpu.apply(cpu.CpuSettings(threads=1, cpu_affinity=(first,)))
        assert applied["cores"] == [first]
        for tid in os.listdir("/proc/self/task"):
            assert os.sched_getaffinity(int(tid)) == {first}
        with pytest.raises(ConfigError, match=r"names cores \[4096\] this process may not use: choose among"):
            cpu.apply(cpu.CpuSettings(threads=1, cpu_affinity=(4096,)))
    finally:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), original)


def test_meter_reports_the_share_of_a_busy_thread():
    meter = cpu.CpuMeter()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        np.sqrt(np.arange(10000.0))
    share = meter.share()
    assert share is not None and 0.05 < share < 2.5  # a loaded 2-core machine gives the loop little
    values = cpu.report({"threads": 1, "cores": [0, 1], "nice": 0, "pools": {}}, meter)
    assert values["cores"] == "0,1" and int(values["os threads"]) >= 1
