import threading

import pytest

from airside_perception import node_configs
from airside_perception.config import load_budget, load_yaml, parse
from airside_perception.errors import ConfigError
from airside_perception.slot import LatestSlot


def _cfg():
    import os

    return load_yaml(os.path.join(os.path.dirname(__file__), "..", "..", "config", "inference_host.yaml"))


def test_shipped_configs_parse():
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "config")
    parse(_cfg(), node_configs.INFERENCE_HOST, "inference_host")
    parse(load_yaml(os.path.join(root, "simplex.yaml")), node_configs.SIMPLEX, "simplex")
    parse(load_yaml(os.path.join(root, "baseline.yaml")), node_configs.BASELINE, "baseline")
    assert load_budget(os.path.join(root, "budget.yaml")).stage("detection") == 12.0


def test_unknown_missing_and_out_of_range_keys_are_named():
    cfg = _cfg()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_pionts'\]"):
        parse({**cfg, "max_pionts": 3}, node_configs.INFERENCE_HOST, "x")
    cfg.pop("max_points")
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['max_points'\]: max_points: int in \[1000"):
        parse(cfg, node_configs.INFERENCE_HOST, "x")
    with pytest.raises(ConfigError, match=r"'intra_op_threads' = 0 is out of range: int in \[1, 64\]"):
        parse({**_cfg(), "intra_op_threads": 0}, node_configs.INFERENCE_HOST, "x")
    with pytest.raises(ConfigError, match="must be a list of"):
        parse({**_cfg(), "tasks": ["tracking"]}, node_configs.INFERENCE_HOST, "x")


def test_budget_that_overflows_the_cycle(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("cycle_ms: 50\nwarn_factor: 1\nerror_factor: 1.5\nstages_ms: {preprocessing: 5, segmentation: 25, "
                 "detection: 12, occupancy: 10, tracking: 3, localization: 8, planning: 5, safety_monitoring: 2}\n")
    with pytest.raises(ConfigError, match="more than cycle_ms"):
        load_budget(str(p))


def test_latest_slot_drops_and_counts():
    slot = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True
    assert slot.take(0.01) == 2 and slot.dropped == 1 and slot.take(0.01) is None
    t = threading.Timer(0.05, slot.put, (3,))
    t.start()
    assert slot.take(1.0) == 3
