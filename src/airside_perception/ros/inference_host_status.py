"""The inference host's diagnostic tasks: input, preprocessing, one per task, end to end,
distribution shift and platform (``<node>: <task>`` on ``/diagnostics``)."""

from __future__ import annotations

from airside_perception import platform_probe
from airside_perception.pipelines.frame_stats import ERROR_WINDOW_S
from airside_perception.ros import common
from airside_perception.ros.diagnostics import StatusTask
from airside_perception.stats import ERROR, OK, WARN, budget_level

HOPS = (("stamp to arrival", "input_age"), ("arrival to start of work", "queue"), ("conditioning", "intake"),
        ("encoding", "preprocessing"), ("all tasks", "frame"), ("publish", "publish"))


def budget_message(p, budget_ms: float) -> str:
    return "no frames yet" if p is None else f"P99 {p.p99:.1f} ms of {budget_ms:.0f} ms"


class _HostTask(StatusTask):
    def __init__(self, node, what: str):
        super().__init__(what)  # diagnostic_updater names it "<node>: <what>"
        self.node = node

    def _level(self, p, budget_ms: float) -> int:
        b = self.node.budget
        return budget_level(p.p99 if p else float("nan"), budget_ms, b.warn_factor, b.error_factor)


class InputTask(_HostTask):
    def __init__(self, node):
        super().__init__(node, "input")

    def report(self):
        status = self.node.worker.input_status()
        values = {kv.key: kv.value for kv in status.values}
        values.update({f"pillar capacity {k}": v for k, v in self.node.stats.counts.items()})
        return status.level, status.message, values


class PreprocessingTask(_HostTask):
    def __init__(self, node):
        super().__init__(node, "preprocessing")

    def report(self):
        n, budget_ms = self.node, self.node.budget.stage("preprocessing")
        pre = n.stats.times.percentiles("preprocessing")
        level, message, device = self._level(pre, budget_ms), budget_message(pre, budget_ms), n.host.preprocessing
        if device.fallback_reason:
            level, message = max(level, WARN), f"{device.fallback_reason}; {message}"
        if n.host.device_loop_failed:
            level, message = max(level, WARN), f"frame loop: {n.host.frame_loop()}; {message}"
        return level, message, {**common.percentile_values("preprocessing", pre), "budget (ms)": budget_ms,
                                "device": device.device, "requested device": device.requested,
                                "frame loop": n.host.frame_loop()}


class EndToEndTask(_HostTask):
    def __init__(self, node):
        super().__init__(node, "end_to_end")

    def report(self):
        times, cycle_ms = self.node.stats.times, self.node.budget.cycle_ms
        e2e = times.percentiles("end_to_end")
        values = {**common.percentile_values("stamp to publish", e2e), "budget (ms)": cycle_ms}
        for label, stage in HOPS:
            values.update(common.percentile_values(label, times.percentiles(stage)))
        return self._level(e2e, cycle_ms), budget_message(e2e, cycle_ms), values


class EngineTask(_HostTask):
    """One hosted task: its engine, swap state, times against its budget and recent failures."""

    def __init__(self, node, task: str):
        super().__init__(node, task)
        self.task = task

    def report(self):
        n, task, stats = self.node, self.task, self.node.stats
        if n.host.engine(task) is None:
            why = n.swaps.down.get(task, "not running")
            return ERROR, f"down: {why}; the simplex drives on the baseline", {"state": "down", "why": why}
        budget_ms, engine, swap = n.budget.stage(task), n.host.engine(task), n.swaps.tasks[task]
        total = stats.times.percentiles(task)
        level, message = self._level(total, budget_ms), budget_message(total, budget_ms)
        values = {"version": engine.version, "backend": engine.backend.name, "errors": stats.task_errors[task],
                  "budget (ms)": budget_ms, "engine state": swap.state, "engine message": swap.message,
                  "fallback": swap.fallback.version if swap.fallback else ""}
        for stage in ("inference", "postprocess"):
            values.update(common.percentile_values(stage, stats.times.percentiles(f"{task}/{stage}")))
        values.update(common.percentile_values("total", total))
        if task in stats.last_error:
            values["last error"] = stats.last_error[task]
        recent = stats.recent_errors.recent().get(task, 0)
        values[f"errors (last {ERROR_WINDOW_S:.0f} s)"] = recent
        if recent:
            level, message = ERROR, (f"{recent} failed frames in {ERROR_WINDOW_S:.0f} s "
                                     f"({stats.task_errors[task]} in all); last: {stats.last_error[task]}")
        return level, message, values


class ShiftTask(_HostTask):
    """The distribution-shift monitor: trust of the last cloud per task, frames flagged."""

    def __init__(self, node):
        super().__init__(node, "distribution shift")

    def report(self):
        n, stats = self.node, self.node.stats
        values, flagged = dict(common.percentile_values("monitor", stats.times.percentiles("monitor"))), []
        for task in n.host.tasks:
            score = stats.last_trust.get(task)
            if n.host.engine(task).monitor is None:
                values[f"{task} trust"] = "no monitor in the manifest (engine_tool calibrate-monitor)"
                continue
            if score is None:
                continue
            values[f"{task} trust"] = f"{score.trust:.2f} (score {score.score:.2f}, worst {score.worst or '-'})"
            values[f"{task} frames out of distribution"] = stats.ood_frames[task]
            if score.is_out_of_distribution:
                flagged.append(f"{task} ({score.worst})")
        if flagged:
            return WARN, "last cloud out of distribution: " + ", ".join(flagged), values
        return OK, "inputs look like training", values


class PlatformTask(_HostTask):
    def __init__(self, node):
        super().__init__(node, "platform")

    def report(self):
        verdict = platform_probe.assess(platform_probe.probe("/"), self.node.cfg["expected_power_mode"])
        return verdict.level, verdict.message, verdict.values
