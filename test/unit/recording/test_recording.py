"""The recorder's core: triggers, rate limits, context around a trigger, the quota."""

import os

import numpy as np
import pytest

from airside_perception.errors import ConfigError
from airside_perception.recording.events import ContextParams, EventAssembler
from airside_perception.recording.store import RecordingsDir, read_index
from airside_perception.recording.triggers import (
    TRIGGERS,
    RateLimiter,
    TriggerParams,
    near_field_disagreement,
    status_trigger,
)

MS = 1_000_000


def box(x, y, length=1.0, width=1.0):
    return [x, y, 0.5, length, width, 1.0, 0.0]


def test_status_triggers():
    assert status_trigger("advanced", "ok") is None
    assert status_trigger("baseline", "recovering 2/5") is None
    assert status_trigger("none", "no_evidence") is None
    assert status_trigger("baseline", "out_of_distribution") == "out_of_distribution"
    assert status_trigger("baseline", "low_trust") == "out_of_distribution"
    assert status_trigger("baseline", "low_confidence") == "low_confidence"
    assert status_trigger("baseline", "stale") == "deadline_miss"
    assert status_trigger("baseline", "non_finite_output") == "engine_error"


def test_near_field_disagreement_both_ways():
    empty = np.zeros((0, 7))
    person = np.array([box(8.0, 1.0, 0.6, 0.6)])
    far = np.array([box(35.0, 0.0)])
    assert near_field_disagreement(empty, person, 20.0)  # the baseline alone sees it
    assert near_field_disagreement(person, empty, 20.0)  # the model alone sees it
    assert not near_field_disagreement(person, person, 20.0)
    assert not near_field_disagreement(empty, far, 20.0)  # outside the near field
    assert not near_field_disagreement(far, empty, 20.0)


def test_rate_limits_per_trigger():
    limits = {t: 0.0 for t in TRIGGERS}
    limits["low_confidence"] = 10.0
    rl = RateLimiter(TriggerParams(limits))
    assert rl.allow(["low_confidence", "deadline_miss"], 0.0) == ["low_confidence", "deadline_miss"]
    assert rl.allow(["low_confidence", "deadline_miss"], 5.0) == ["deadline_miss"]
    assert rl.allow(["low_confidence"], 10.5) == ["low_confidence"]
    assert rl.held_back["low_confidence"] == 1
    with pytest.raises(ConfigError, match="lacks"):
        TriggerParams({"mark": 1.0})
    with pytest.raises(ConfigError, match="unknown"):
        TriggerParams({**limits, "sneeze": 1.0})


def _feed(asm, stamps, trigger_at=(), now=0.0):
    for k, s in enumerate(stamps):
        asm.add(s, "cloud", f"cloud {k}", now + k * 0.1)
        if s in trigger_at:
            asm.trigger(s, ["low_confidence"], now + k * 0.1)
        asm.add(s, "status", f"status {k}", now + k * 0.1 + 0.05)


def test_an_event_holds_its_context_before_and_after():
    asm = EventAssembler(ContextParams(before=3, after=2, ring_clouds=20))
    stamps = [k * 100 * MS for k in range(20)]
    _feed(asm, stamps, trigger_at={stamps[10]})
    events = asm.pop_ready()
    assert len(events) == 1
    e = events[0]
    assert [f.stamp_ns for f in e.frames] == stamps[7:13]
    assert e.triggers == {stamps[10]: ["low_confidence"]}
    assert all(set(f.parts) == {"cloud", "status"} for f in e.frames)


def test_triggers_inside_an_event_extend_it_and_mark_covers_its_duration():
    asm = EventAssembler(ContextParams(before=2, after=2, ring_clouds=20, max_event_clouds=30))
    stamps = [k * 100 * MS for k in range(20)]
    _feed(asm, stamps, trigger_at={stamps[5], stamps[6]})
    (e,) = asm.pop_ready()
    assert [f.stamp_ns for f in e.frames] == stamps[3:9]
    assert sorted(e.triggers) == [stamps[5], stamps[6]]
    asm2 = EventAssembler(ContextParams(before=1, after=1, ring_clouds=30))
    for k, s in enumerate(stamps):
        asm2.add(s, "cloud", k, k * 0.1)
        if k == 4:
            asm2.mark(s, 500 * MS, "odd cart", k * 0.1)
    (m,) = asm2.pop_ready()
    assert m.note == "odd cart" and m.trigger_names() == ["mark"]
    assert [f.stamp_ns for f in m.frames] == stamps[3:11]


def test_an_event_closes_when_clouds_stop():
    asm = EventAssembler(ContextParams(before=1, after=5, ring_clouds=20, flush_s=1.0))
    stamps = [k * 100 * MS for k in range(4)]
    _feed(asm, stamps, trigger_at={stamps[2]})
    assert asm.pop_ready() == [] and asm.is_recording
    asm.tick(10.0)
    (e,) = asm.pop_ready()
    assert [f.stamp_ns for f in e.frames] == stamps[1:4]


def test_the_ring_is_bounded():
    asm = EventAssembler(ContextParams(before=2, after=2, ring_clouds=10))
    for k in range(1000):
        asm.add(k * MS, "cloud", bytearray(10), k * 0.1)
    assert len(asm._ring) == 10


def _write(rd, name, size, stamp):
    path = rd.new_path(stamp, ["mark"])
    with open(path, "wb") as fh:
        fh.write(b"x" * size)
    return rd.close(path, {"stamp": stamp, "triggers": ["mark"], "versions": {}, "trust": {}, "name": name})


def test_quota_evicts_the_oldest_and_never_exceeds(tmp_path):
    rd = RecordingsDir(str(tmp_path), max_bytes=10_000, min_free_bytes=0)
    for k in range(8):
        assert rd.reserve(3000)
        _write(rd, f"r{k}", 3000, 1_700_000_000.0 + k)
        assert rd.used_bytes() <= 10_000
    names = [e["name"] for e in read_index(rd.index_path)]
    assert names == ["r5", "r6", "r7"]
    assert all(os.path.isfile(os.path.join(str(tmp_path), e["file"])) for e in rd.entries())
    assert rd.evicted == 5
    assert not rd.reserve(20_000) and rd.refused == 1  # larger than the quota: not written


def test_unfinished_recordings_are_removed_and_index_lines_cut_short_skipped(tmp_path):
    rd = RecordingsDir(str(tmp_path), max_bytes=1e6, min_free_bytes=0)
    _write(rd, "ok", 100, 1_700_000_000.0)
    open(os.path.join(str(tmp_path), "x.bag.active"), "w").write("half")
    with open(rd.index_path, "a") as fh:
        fh.write('{"stamp": 1, "fi')
    assert rd.remove_unfinished() == ["x.bag.active"]
    assert [e["name"] for e in rd.entries()] == ["ok"]
    with pytest.raises(ValueError, match="line 2"):
        read_index(rd.index_path, strict=True)


def test_bad_recordings_dir_fails_loudly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot be created"):
        RecordingsDir(str(blocker / "sub"), 1e6)
    with pytest.raises(ConfigError, match="positive"):
        RecordingsDir(str(tmp_path), 0)


def test_the_shipped_recorder_config_parses_as_the_node_reads_it():
    import yaml

    from airside_perception import config, node_configs

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "config", "data_recorder.yaml")
    cfg = config.parse(yaml.safe_load(open(path)), node_configs.DATA_RECORDER, path)
    assert isinstance(cfg["max_bytes"], float) and isinstance(cfg["min_free_bytes"], float)
    TriggerParams(cfg["min_interval_s"], cfg["near_field_m"])
    ContextParams(cfg["context_before"], cfg["context_after"], cfg["ring_clouds"], cfg["max_event_clouds"],
                  cfg["flush_s"])


def test_the_gap_between_recordings_holds_whatever_the_trigger():
    limits = {t: 0.0 for t in TRIGGERS}
    rl = RateLimiter(TriggerParams(limits, 20.0, min_recording_interval_s=15.0))
    assert rl.allow(["low_confidence"], 0.0) == ["low_confidence"]
    assert rl.allow(["deadline_miss"], 1.0, recording=True) == ["deadline_miss"]  # extends the open one
    assert rl.allow(["deadline_miss"], 5.0) == []  # a new recording waits for the gap
    assert rl.allow(["mark"], 6.0) == ["mark"]  # the operator is never held back by it
    assert rl.allow(["engine_error"], 16.0) == ["engine_error"]
    assert rl.held_back["deadline_miss"] == 1


def test_a_trigger_for_a_cloud_the_ring_no_longer_holds_records_nothing():
    asm = EventAssembler(ContextParams(before=1, after=1, ring_clouds=5))
    for k in range(20):
        asm.add(k * MS, "cloud", k, k * 0.1)
    asm.trigger(2 * MS, ["low_confidence"], 2.0)  # long gone from the ring
    asm.add(5 * MS, "status", "late output of an old cloud", 2.0, is_cloud=False)
    assert not asm.is_recording and asm.pop_ready() == []


def test_bags_the_index_does_not_name_go_first(tmp_path):
    rd = RecordingsDir(str(tmp_path), max_bytes=10_000, min_free_bytes=0)
    _write(rd, "kept", 3000, 1_700_000_000.0)
    with open(tmp_path / "stray.bag", "wb") as fh:  # a write cut between its rename and its index line
        fh.write(b"x" * 6000)
    assert rd.reserve(3000)
    assert not (tmp_path / "stray.bag").exists()
    assert [e["name"] for e in rd.entries()] == ["kept"]
