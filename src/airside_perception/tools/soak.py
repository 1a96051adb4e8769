"""Soak verdict: per-minute records of a long run in, the pass/fail table and plot out (no ROS).

Pass: RSS growth from minute 5 to the end under 5 % per node, no dropped cloud, no node
restart, P99 latency of the last 5 minutes within 15 % of the first 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

RSS_GROWTH_LIMIT = 0.05
P99_DRIFT_LIMIT = 0.15
SETTLE_MINUTES = 5


@dataclass
class Minute:
    """One minute of the run. rss_mb, cpu_percent: per node; p50/p99_ms, dropped: per output."""

    minute: int
    rss_mb: Dict[str, float] = field(default_factory=dict)
    cpu_percent: Dict[str, float] = field(default_factory=dict)
    p50_ms: Dict[str, float] = field(default_factory=dict)
    p99_ms: Dict[str, float] = field(default_factory=dict)
    dropped: Dict[str, int] = field(default_factory=dict)
    clouds: int = 0
    restarts: Dict[str, int] = field(default_factory=dict)
    events: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def verdict(minutes: List[Minute], latencies: Dict[str, List[List[float]]]) -> List[Check]:
    """``latencies[output][k]``: every latency of minute k (ms), for the P99 of 5-minute spans."""
    checks: List[Check] = []
    if len(minutes) < 2 * SETTLE_MINUTES:
        return [Check("duration", False, f"{len(minutes)} minutes recorded; the verdict needs "
                                         f"{2 * SETTLE_MINUTES} (SOAK_S=1800 for the 30-minute soak)")]
    nodes = sorted(minutes[-1].rss_mb)
    for node in nodes:
        start = minutes[SETTLE_MINUTES - 1].rss_mb.get(node, float("nan"))
        end = minutes[-1].rss_mb.get(node, float("nan"))
        growth = (end - start) / start if start > 0 else float("nan")
        checks.append(Check(f"rss {node}", bool(growth < RSS_GROWTH_LIMIT),
                            f"{start:.1f} MB at minute {SETTLE_MINUTES} -> {end:.1f} MB at minute {len(minutes)} "
                            f"({100 * growth:+.1f} %, limit {100 * RSS_GROWTH_LIMIT:.0f} %)"))
    dropped = {o: sum(m.dropped.get(o, 0) for m in minutes) for o in latencies}
    checks.append(Check("dropped clouds", sum(dropped.values()) == 0,
                        ", ".join(f"{o} {n}" for o, n in dropped.items())))
    restarts = {n: sum(m.restarts.get(n, 0) for m in minutes) for n in nodes}
    checks.append(Check("node restarts", sum(restarts.values()) == 0,
                        ", ".join(f"{n} {k}" for n, k in restarts.items())))
    events = [e for m in minutes for e in m.events]
    if events:  # the swaps and rollbacks the soak exists to repeat must have happened
        # a rollback that finds no fallback right after an accepted swap: the rollback watch was first
        by_watch = [b for a, b in zip(events, events[1:]) if a.startswith("swap ok") and "no fallback" in b]
        done = [e for e in events if e.startswith(("swap ok", "rollback ok"))]
        refused = [e for e in events if e not in done and e not in by_watch]
        checks.append(Check("swaps and rollbacks", not refused,
                            f"{len(done)} of {len(events)} done, {len(by_watch)} rolled back by the watch first"
                            + (f"; first refusal: {refused[0][:160]}" if refused else "")))
    for output, per_minute in latencies.items():
        first = [v for m in per_minute[:SETTLE_MINUTES] for v in m]
        last = [v for m in per_minute[-SETTLE_MINUTES:] for v in m]
        if not first or not last:
            checks.append(Check(f"p99 drift {output}", False, "no latency recorded"))
            continue
        p_first, p_last = float(np.percentile(first, 99)), float(np.percentile(last, 99))
        drift = (p_last - p_first) / p_first
        checks.append(Check(f"p99 drift {output}", bool(drift <= P99_DRIFT_LIMIT),
                            f"first 5 min {p_first:.1f} ms, last 5 min {p_last:.1f} ms ({100 * drift:+.1f} %, limit "
                            f"+{100 * P99_DRIFT_LIMIT:.0f} %)"))
    return checks


def report(minutes: List[Minute], checks: List[Check], header: str) -> str:
    nodes = sorted(minutes[-1].rss_mb) if minutes else []
    outputs = sorted(minutes[-1].p99_ms) if minutes else []
    lines = [header, "", "verdict: " + ("PASS" if checks and all(c.passed for c in checks) else "FAIL")]
    lines += [f"  {'PASS' if c.passed else 'FAIL'}  {c.name:34s} {c.detail}" for c in checks]
    lines += ["", "per minute: RSS MB / CPU % per node; P50 / P99 ms and dropped per output"]
    head = ["min", "clouds"] + [f"{n} rss/cpu" for n in nodes] + [f"{o} p50/p99/drop" for o in outputs]
    lines.append(" | ".join(head))
    for m in minutes:
        row = [str(m.minute), str(m.clouds)]
        row += [f"{m.rss_mb.get(n, float('nan')):.0f}/{m.cpu_percent.get(n, float('nan')):.0f}" for n in nodes]
        row += [f"{m.p50_ms.get(o, float('nan')):.0f}/{m.p99_ms.get(o, float('nan')):.0f}/{m.dropped.get(o, 0)}"
                for o in outputs]
        if m.events:
            row.append("; ".join(m.events))
        lines.append(" | ".join(row))
    return "\n".join(lines) + "\n"


def plot(minutes: List[Minute], path: str, title: Optional[str] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_lat) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    x = [m.minute for m in minutes]
    for node in sorted(minutes[-1].rss_mb):
        ax_rss.plot(x, [m.rss_mb.get(node, np.nan) for m in minutes], label=node)
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.legend(fontsize=8)
    for output in sorted(minutes[-1].p99_ms):
        ax_lat.plot(x, [m.p99_ms.get(output, np.nan) for m in minutes], label=f"{output} P99")
    for m in minutes:
        for event in m.events:
            ax_lat.axvline(m.minute, color="grey", lw=0.5)
            ax_lat.text(m.minute, ax_lat.get_ylim()[1] if ax_lat.lines else 0, event.split(" ")[0], fontsize=6,
                        rotation=90, va="top")
    ax_lat.set_ylabel("stamp to output (ms)")
    ax_lat.set_xlabel("minute")
    ax_lat.legend(fontsize=8)
    fig.suptitle(title or "soak")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
