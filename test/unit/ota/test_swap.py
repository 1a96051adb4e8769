"""Swaps without ROS: staging refusals, validation, exchange, rollback, automatic rollback, memory."""

import os
import shutil
import sys

import numpy as np
import psutil
import pytest

from airside_perception.config import load_budget
from airside_perception.engines.active import ActiveVersions
from airside_perception.ota.swap import SwapController, SwapParams
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.sim.world import make_scan

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "scripts"))
import make_test_engines  # noqa: E402

BUDGET = load_budget(os.path.join(HERE, "..", "..", "..", "config", "budget.yaml"))
PARAMS = SwapParams("onnxruntime", 1, max_latency_factor=5.0, rollback_window_frames=10,
                    rollback_max_failures=2, frame_deadline_ms=5000.0, require_gate_report=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_test_engines.build(str(tmp_path_factory.mktemp("engines") / "root"))


def _controller(root, tmp_path, tasks=("detection",)):
    engines = [store.open_engine(store.load_version(root, t, "1.0.0"), "onnxruntime") for t in tasks]
    host = PerceptionHost(engines)
    active = ActiveVersions(str(tmp_path / "active.yaml"), {t: "1.0.0" for t in tasks})
    return SwapController(host, active, root, BUDGET, PARAMS), host, active


def test_valid_swap_then_rollback(root, tmp_path):
    ctl, host, active = _controller(root, tmp_path)
    out = ctl.swap("detection", os.path.join(root, "detection", "1.0.0-int8"))
    assert out.success, out.message
    assert (out.active_version, out.previous_version) == ("1.0.0-int8", "1.0.0")
    assert host.engine("detection").version == "1.0.0-int8"
    assert ActiveVersions(active.state_file, {}).version("detection") == "1.0.0-int8"
    status = ctl.status()[0]
    assert (status.active_version, status.fallback_version, status.state) == ("1.0.0-int8", "1.0.0", "serving")
    back = ctl.rollback("detection")
    assert back.success and back.active_version == "1.0.0"
    assert ActiveVersions(active.state_file, {}).version("detection") == "1.0.0"
    assert ctl.status()[0].state == "rolled_back"
    assert not ctl.rollback("detection").success, "a second rollback has no fallback"
    host.close()


@pytest.mark.parametrize("path, expected", [
    ("/tmp", "not a version directory under"),
    ("detection/9.9.9", "does not exist"),
    ("detection/bad_shape", "output 'heatmap' has shape [1, 5, 64, 64]"),
    ("occupancy/1.0.0", "is not a version directory under"),
    ("detection/1.0.0", "already serving"),
])
def test_refusals_leave_the_engine_serving(root, tmp_path, path, expected):
    ctl, host, _ = _controller(root, tmp_path)
    full = path if os.path.isabs(path) else os.path.join(root, path)
    out = ctl.swap("detection", full)
    assert not out.success and expected in out.message, out.message
    assert host.engine("detection").version == "1.0.0"
    assert host.process(make_scan(3, "compact").points).results["detection"].version == "1.0.0"
    host.close()


def test_corrupt_model_wrong_checksum_other_task_empty_task(root, tmp_path):
    ctl, host, _ = _controller(root, tmp_path)
    bad = os.path.join(root, "detection", "corrupt")
    shutil.copytree(os.path.join(root, "detection", "1.0.0-int8"), bad)
    with open(os.path.join(bad, "model.onnx"), "r+b") as fh:
        fh.seek(50)
        fh.write(b"\xff" * 16)
    assert "does not match the manifest" in ctl.swap("detection", bad).message
    wrong_task = os.path.join(root, "detection", "from_occupancy")
    shutil.copytree(os.path.join(root, "occupancy", "1.0.0"), wrong_task)
    assert "is for task 'occupancy', not 'detection'" in ctl.swap("detection", wrong_task).message
    assert "is not hosted here" in ctl.swap("", bad).message
    assert host.engine("detection").version == "1.0.0"
    host.close()


def test_nan_engine_passes_golden_validation_then_rolls_back_automatically(root, tmp_path):
    ctl, host, active = _controller(root, tmp_path)
    assert ctl.swap("detection", os.path.join(root, "detection", "nan_sparse")).success
    sparse = make_scan(110016, "compact").points
    rolled = []
    for _ in range(4):
        frame = host.process(sparse)
        assert "non-finite" in frame.errors.get("detection", "") or frame.results
        rolled += ctl.record(frame)
    assert rolled == ["detection"]
    assert host.engine("detection").version == "1.0.0"
    assert ctl.status()[0].state == "rolled_back" and "non-finite" in ctl.status()[0].message
    assert ActiveVersions(active.state_file, {}).version("detection") == "1.0.0"
    host.close()


@pytest.mark.slow
def test_thirty_swaps_keep_memory_flat(root, tmp_path):
    """Each swap loads, validates and retires an engine (about 2 s here); 30 of them after the
    warm-up show a leak of 1 MB per swap against the 10 % allowance (the graph's soak runs hold
    swaps for minutes)."""
    ctl, host, _ = _controller(root, tmp_path, tasks=("occupancy",))
    proc = psutil.Process()
    versions = ["1.1.0", "1.0.0"]  # the same network: FP32 both, equally fast
    for i in range(6):  # warm-up: allocator pools and ONNX Runtime arenas settle
        assert ctl.swap("occupancy", os.path.join(root, "occupancy", versions[i % 2])).success
    before = proc.memory_info().rss
    for i in range(30):
        out = ctl.swap("occupancy", os.path.join(root, "occupancy", versions[i % 2]))
        assert out.success, out.message
    after = proc.memory_info().rss
    assert after < before * 1.10, f"RSS grew from {before / 1e6:.0f} MB to {after / 1e6:.0f} MB"
    host.close()


def test_outputs_continue_during_a_swap(root, tmp_path):
    """The serving engine keeps answering while a candidate loads and validates."""
    import threading
    import time

    ctl, host, _ = _controller(root, tmp_path)
    cloud = make_scan(5, "compact").points
    done = threading.Event()
    versions = []

    def serve():
        while not done.is_set():
            versions.append(host.process(cloud).results["detection"].version)

    t = threading.Thread(target=serve)
    t.start()
    time.sleep(0.2)
    assert ctl.swap("detection", os.path.join(root, "detection", "1.0.0-int8")).success
    time.sleep(0.2)
    done.set()
    t.join()
    assert versions[0] == "1.0.0" and versions[-1] == "1.0.0-int8"
    switch = versions.index("1.0.0-int8")
    assert set(versions[switch:]) == {"1.0.0-int8"} and np.all(np.array(versions[:switch]) == "1.0.0")
    host.close()


def test_latency_gate_refuses_a_slow_candidate(root, tmp_path):
    params = SwapParams("onnxruntime", 1, max_latency_factor=0.01, rollback_window_frames=10,
                        rollback_max_failures=2, frame_deadline_ms=5000.0, require_gate_report=False)
    ctl, host, _ = _controller(root, tmp_path, tasks=("segmentation",))
    ctl.params = params
    import airside_perception.ota.validation as validation

    same, validation.SAME_SPEED = validation.SAME_SPEED, 0.01
    try:
        out = ctl.swap("segmentation", os.path.join(root, "segmentation", "1.0.0-int8"))
    finally:
        validation.SAME_SPEED = same
    assert not out.success and "too slow" in out.message and "projected P99" in out.message, out.message
    assert host.engine("segmentation").version == "1.0.0"
    host.close()


# ---------------------------------------------------------------------------- under load
def _spin(seconds):
    import time as _time

    end = _time.monotonic() + seconds
    while _time.monotonic() < end:
        pass


class CpuHog:
    """Every core busy with spinning processes for the duration of the block."""

    def __init__(self, seconds=60.0):
        import multiprocessing

        self.procs = [multiprocessing.Process(target=_spin, args=(seconds,), daemon=True)
                      for _ in range(os.cpu_count() or 2)]

    def __enter__(self):
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
            p.join()


class Serving:
    """Feeds the host a cloud every ``period_s``, like the node's worker, and records versions."""

    def __init__(self, host, period_s=0.1):
        import threading

        self.host, self.period_s = host, period_s
        self.cloud = make_scan(110016, "compact").points
        self.frames = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import time as _time

        nxt = _time.monotonic()
        while not self.done.is_set():
            frame = self.host.process(self.cloud)
            self.frames.append(frame)
            for rolled in self.on_frame(frame):
                self.rolled.append(rolled)
            nxt += self.period_s
            _time.sleep(max(0.0, nxt - _time.monotonic()))

    def start(self, controller):
        self.on_frame = controller.record
        self.rolled = []
        self.thread.start()
        return self

    def stop(self):
        self.done.set()
        self.thread.join()


def _loaded_controller(root, tmp_path, deadline_ms):
    ctl, host, active = _controller(root, tmp_path)
    ctl.params = SwapParams("onnxruntime", 1, max_latency_factor=1.0, rollback_window_frames=20,
                            rollback_max_failures=3, frame_deadline_ms=deadline_ms, require_gate_report=False)
    return ctl, host


@pytest.mark.slow
def test_an_exact_copy_is_neither_refused_nor_rolled_back_under_a_cpu_hog(root, tmp_path):
    import time

    ctl, host = _loaded_controller(root, tmp_path, deadline_ms=15.0)  # the hog makes many frames miss this
    with CpuHog():
        serving = Serving(host).start(ctl)
        time.sleep(3.0)  # the serving engine's record under the same load
        out = ctl.swap("detection", os.path.join(root, "detection", "1.0.0-copy"))
        time.sleep(4.0)
        serving.stop()
    misses = sum(f.total_ms > 15.0 for f in serving.frames)
    assert out.success, out.message
    assert serving.rolled == [] and host.engine("detection").version == "1.0.0-copy", ctl.status()[0].message
    assert misses >= 3, f"only {misses} frames over the deadline: the hog did not load the machine"
    host.close()


@pytest.mark.slow
def test_a_clearly_slower_candidate_is_still_refused_under_a_cpu_hog(root, tmp_path):
    import time

    ctl, host = _loaded_controller(root, tmp_path, deadline_ms=15.0)
    with CpuHog():
        serving = Serving(host).start(ctl)
        time.sleep(1.0)
        out = ctl.swap("detection", os.path.join(root, "detection", "slow"))
        serving.stop()
    assert not out.success and "too slow" in out.message, out.message
    assert host.engine("detection").version == "1.0.0"
    host.close()


def _timed(engine, x) -> float:
    import time

    t0 = time.perf_counter()
    engine.run(x)
    return (time.perf_counter() - t0) * 1e3


def _frame_ms(root, tmp_path, x):
    """Median frame time of a host serving 1.0.0, as the watch measures it."""
    import time

    import numpy as np

    _, host, _ = _controller(root, tmp_path / "probe")
    cloud = make_scan(110000).points
    host.process(cloud)
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        host.process(cloud)
        t.append((time.perf_counter() - t0) * 1e3)
    host.close()
    return float(np.median(t)), x


@pytest.mark.slow
def test_a_slower_engine_that_slipped_through_is_rolled_back_by_the_watch(root, tmp_path, monkeypatch):
    import time

    # the deadline lies between the two engines' frame times as measured here (they differ by
    # machine and ONNX Runtime version: 11 / 27 ms under one, over 30 ms for the slow one under another)
    import numpy as np

    import airside_perception.ota.validation as validation
    from airside_perception.ops.bev import BevSpec, encode

    x = encode(make_scan(110000).points, BevSpec())
    times = {}
    for v in ("1.0.0", "slow"):
        e = store.open_engine(store.load_version(root, "detection", v), "onnxruntime", 1)
        for _ in range(2):
            e.run(x)
        times[v] = float(np.median([_timed(e, x) for _ in range(7)]))
        e.close()
    assert times["slow"] > 1.5 * times["1.0.0"], times
    frame_ms, _ = _frame_ms(root, tmp_path, x)
    ctl, host = _loaded_controller(root, tmp_path, deadline_ms=frame_ms + (times["slow"] - times["1.0.0"]) / 2)
    monkeypatch.setattr(validation.Projection, "problem", lambda self: "")  # the gate lets it slip through
    serving = Serving(host, period_s=0.05).start(ctl)
    time.sleep(1.5)
    out = ctl.swap("detection", os.path.join(root, "detection", "slow"))
    assert out.success, out.message
    deadline = time.monotonic() + 10.0
    while not serving.rolled and time.monotonic() < deadline:
        time.sleep(0.1)
    serving.stop()
    assert serving.rolled == ["detection"] and host.engine("detection").version == "1.0.0"
    message = ctl.status()[0].message
    assert "against the replaced engine's" in message and ("over the budget" in message or "frames over" in message)
    host.close()


def test_validation_runs_start_in_the_gaps_between_frames(root, tmp_path, monkeypatch):
    """Every run of a swap's validation (warm-up, agreement, timed) starts after a frame has
    finished and before the next one starts, one per gap."""
    import threading
    import time

    from airside_perception.pipelines.tasks import TaskEngine

    ctl, host, _ = _controller(root, tmp_path)
    frames, runs = [], []
    process = host.process

    def timed_process(points):
        start = time.monotonic()
        try:
            return process(points)
        finally:
            frames.append((start, time.monotonic()))

    monkeypatch.setattr(host, "process", timed_process)
    run = TaskEngine.run

    def logged_run(self, x):
        if not threading.current_thread().name.startswith("task"):  # not a frame's own run
            runs.append(time.monotonic())
        return run(self, x)

    monkeypatch.setattr(TaskEngine, "run", logged_run)
    serving = Serving(host).start(ctl)
    try:
        time.sleep(0.5)
        out = ctl.swap("detection", os.path.join(root, "detection", "1.1.0"))
    finally:
        serving.stop()
    assert out.success, out.message
    assert len(runs) >= 20
    inside = [t for t in runs if any(a <= t <= b for a, b in frames)]
    assert not inside, f"{len(inside)} of {len(runs)} validation runs started during a frame"
    gaps = {max((b for _, b in frames if b <= t), default=None) for t in runs}
    assert len(gaps) == len(runs), "two validation runs shared one gap between frames"


def test_waiting_for_a_gap_returns_at_once_when_no_clouds_come(root, tmp_path):
    import time

    _, host, _ = _controller(root, tmp_path)
    start = time.monotonic()
    for _ in range(20):
        host.wait_for_gap(timeout_s=1.0)
    assert time.monotonic() - start < 0.5


def test_a_detector_at_0_4_m_swaps_in_for_one_at_0_8_m_and_back(tmp_path):
    """The shipped 1.0.0 (0.8 m grid) and 2.1.0 (0.4 m): a swap either way passes validation;
    a 0.4 m model whose manifest keeps stride 2 is refused, naming the stride."""
    import yaml

    shipped = os.path.join(HERE, "..", "..", "..", "engines", "detection")
    root = tmp_path / "root"
    for version in ("1.0.0", "2.1.0"):
        shutil.copytree(os.path.join(shipped, version), root / "detection" / version)
    shutil.copytree(os.path.join(shipped, "2.1.0"), root / "detection" / "2.1.1")
    manifest = root / "detection" / "2.1.1" / "manifest.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["version"], data["postprocessing"]["stride"] = "2.1.1", 2
    manifest.write_text(yaml.safe_dump(data))
    ctl, host, _ = _controller(str(root), tmp_path)
    wrong = ctl.swap("detection", str(root / "detection" / "2.1.1"))
    assert not wrong.success and "postprocessing.stride 2" in wrong.message, wrong.message
    out = ctl.swap("detection", str(root / "detection" / "2.1.0"))
    assert out.success, out.message
    result = host.process(make_scan(110_000).points).results["detection"]
    assert result.version == "2.1.0" and len(result.boxes.boxes) > 0
    back = ctl.rollback("detection")
    assert back.success and host.engine("detection").version == "1.0.0"
    host.close()


def _trusted_controller(root, tmp_path):
    from airside_perception.engines.trust import SEEN_FILE, TrustPolicy

    ctl, host, active = _controller(root, tmp_path)
    ctl.trust = TrustPolicy(True, make_test_engines.os.path.join(make_test_engines.KEYS, "trusted_keys"),
                            str(tmp_path / SEEN_FILE))
    return ctl, host, active


def test_with_trust_a_rollback_to_a_fallback_altered_since_it_served_is_refused(root, tmp_path):
    own = str(tmp_path / "root")
    shutil.copytree(root, own)
    ctl, host, _ = _trusted_controller(own, tmp_path)
    assert ctl.swap("detection", os.path.join(own, "detection", "1.0.0-copy")).success  # signed fixture
    manifest = os.path.join(own, "detection", "1.0.0", "manifest.yaml")  # the fallback, edited at rest
    with open(manifest, "a") as fh:
        fh.write("# edited\n")
    out = ctl.rollback("detection")
    assert not out.success and "refused" in out.message and host.engine("detection").version == "1.0.0-copy"
    host.close()


def test_a_revoked_serving_version_is_replaced_by_its_fallback_else_the_newest_that_verifies(root, tmp_path):
    from airside_perception.engines import trust

    own = str(tmp_path / "root")
    shutil.copytree(root, own)
    key = os.path.join(make_test_engines.KEYS, "test_fleet.key")
    ctl, host, active = _trusted_controller(own, tmp_path)
    assert ctl.swap("detection", os.path.join(own, "detection", "1.0.0-copy")).success
    trust.revoke(own, "detection", "1.0.0-copy", key, "test")
    [(task, out)] = ctl.replace_revoked(trust.revocations(own, ctl.trust))
    assert task == "detection" and out.success and host.engine("detection").version == "1.0.0"
    trust.revoke(own, "detection", "1.0.0", key, "test")  # now no fallback: the newest that verifies
    [(_, out)] = ctl.replace_revoked(trust.revocations(own, ctl.trust))
    assert out.success and host.engine("detection").version == "2.1.0", out.message
    assert active.version("detection") == "2.1.0"
    assert ctl.replace_revoked(trust.revocations(own, ctl.trust)) == [], "nothing revoked serves"
    host.close()
