"""The graph benchmark's report from what a recorder measured (no ROS)."""

import json
import threading
from types import SimpleNamespace

from airside_perception.tools import graph_report

TOPICS = ("/perception/segmentation", "/perception/detections", "/perception/occupancy", "/perception/obstacles")


def _rec(tmp_path, latency_ms, answered):
    clouds = list(range(100))
    arrivals = {t: [(k * 0.1, latency_ms, c) for k, c in enumerate(clouds[:answered])] for t in TOPICS}
    return SimpleNamespace(
        clouds=clouds, latency={t: [latency_ms] * answered for t in TOPICS},
        stamps={t: set(clouds[:answered]) for t in TOPICS}, diag={"simplex: decision": {"decision P99 (ms)": "0.2"}},
        target_ms=70.0, simplex_active={"advanced": answered}, host_kills=0, arrivals=arrivals,
        hops={c: {"own work": 30.0, "queue": 1.0} for c in clouds[:answered]}, lock=threading.Lock(),
        swap_window=[4.0, 5.0], swap_task="detection", swap_answer="swapped: ok", out=str(tmp_path / "graph.txt"))


def test_a_run_inside_the_target_is_met_and_written_as_text_and_json(tmp_path):
    text = graph_report.write(_rec(tmp_path, 50.0, 100), 10.0, {"inference_host": 150.0}, {"inference_host": 300.0})
    result = json.loads((tmp_path / "graph.json").read_text())
    assert result["target"]["met"] and result["target"]["worst_p99_ms"] == 50.0
    assert result["swap_under_load"]["dropped"] == 0 and "target: every neural output" in text
    assert result["hops"]["own work"]["p50"] == 30.0 and abs(result["overhead"]["p50_ms"] - 20.0) < 1e-9
    assert (tmp_path / "graph.txt").read_text() == text


def test_dropped_clouds_or_a_slow_output_miss_the_target(tmp_path):
    graph_report.write(_rec(tmp_path, 50.0, 90), 10.0, {}, {})
    result = json.loads((tmp_path / "graph.json").read_text())
    assert not result["target"]["met"] and result["target"]["dropped"] == 30  # 10 per neural output
    graph_report.write(_rec(tmp_path, 80.0, 100), 10.0, {}, {})
    assert not json.loads((tmp_path / "graph.json").read_text())["target"]["met"]
