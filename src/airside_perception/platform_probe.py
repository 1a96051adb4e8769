"""What the compute board is doing: power mode, clocks, temperatures, throttling (no ROS).

Read from sysfs and the nvpmodel status file under ``root`` (``/`` on a vehicle; a fake tree
in tests). On a Jetson: the nvpmodel power mode (id from ``/var/lib/nvpmodel/status``, its
name from ``/etc/nvpmodel.conf``), whether jetson_clocks locked the clocks (every CPU's and
the GPU's minimum frequency equals its maximum), CPU and GPU frequencies, thermal zones and
throttling. Elsewhere: CPU governor and frequency, thermal zones, the kernel's thermal
throttle counters.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

OK, WARN = 0, 1
#: A zone this close to its first passive/hot trip point (millidegrees) counts as throttling.
TRIP_MARGIN_MC = 0
GPU_DEVFREQ_GLOBS = ("sys/devices/gpu.0/devfreq/*", "sys/devices/platform/*gpu*/devfreq/*",
                     "sys/class/devfreq/*.gpu", "sys/class/devfreq/*ga10b*", "sys/class/devfreq/*gv11b*")


def _read(root: str, rel: str) -> Optional[str]:
    try:
        with open(os.path.join(root, rel)) as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(root: str, rel: str) -> Optional[int]:
    text = _read(root, rel)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class PlatformState:
    is_jetson: bool
    model: str
    power_mode: str = ""  # nvpmodel name, e.g. MODE_50W (Jetson)
    clocks_locked: Optional[bool] = None  # jetson_clocks (Jetson)
    cpu_governor: str = ""
    cpu_freq_mhz: Dict[str, float] = field(default_factory=dict)
    gpu_freq_mhz: Optional[float] = None
    temperatures_c: Dict[str, float] = field(default_factory=dict)
    throttled: List[str] = field(default_factory=list)  # what throttles, in words


@dataclass(frozen=True)
class PlatformVerdict:
    level: int
    message: str
    values: Dict[str, str]


def _rel(root: str, path: str) -> str:
    return os.path.relpath(path, root)


def _cpus(root: str) -> List[str]:
    return sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*")),
                  key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))


def _power_mode(root: str) -> str:
    status = _read(root, "var/lib/nvpmodel/status") or ""
    match = re.search(r"pmode:(\d+)", status)
    if not match:
        return ""
    mode_id = int(match.group(1))
    conf = _read(root, "etc/nvpmodel.conf") or ""
    for m in re.finditer(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([\w.-]+)\s*>", conf):
        if int(m.group(1)) == mode_id:
            return m.group(2)
    return f"mode id {mode_id}"


def _gpu_devfreq(root: str) -> Optional[str]:
    for pattern in GPU_DEVFREQ_GLOBS:
        hits = sorted(glob.glob(os.path.join(root, pattern)))
        if hits:
            return _rel(root, hits[0])
    return None


def _thermal(root: str) -> Tuple[Dict[str, float], List[str]]:
    temps, hot = {}, []
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        rel = _rel(root, zone)
        name = _read(root, f"{rel}/type") or os.path.basename(zone)
        temp = _read_int(root, f"{rel}/temp")
        if temp is None:
            continue
        temps[name] = temp / 1000.0
        for k in range(12):
            kind = _read(root, f"{rel}/trip_point_{k}_type")
            trip = _read_int(root, f"{rel}/trip_point_{k}_temp")
            if kind is None or trip is None:
                break
            if kind in ("passive", "hot") and 0 < trip <= temp + TRIP_MARGIN_MC:
                hot.append(f"{name} at {temp / 1000:.1f} C over its {kind} trip {trip / 1000:.1f} C")
                break
    return temps, hot


def probe(root: str = "/") -> PlatformState:
    model = (_read(root, "proc/device-tree/model") or "").replace("\x00", "")
    is_jetson = "jetson" in model.lower() or os.path.exists(os.path.join(root, "etc/nv_tegra_release"))
    cpus = _cpus(root)
    freqs, locked = {}, True
    throttled: List[str] = []
    governor = ""
    for cpu in cpus:
        rel = _rel(root, cpu)
        cur = _read_int(root, f"{rel}/cpufreq/scaling_cur_freq")
        if cur is None:
            continue
        freqs[os.path.basename(cpu)] = cur / 1000.0
        governor = governor or (_read(root, f"{rel}/cpufreq/scaling_governor") or "")
        lo, hi = _read_int(root, f"{rel}/cpufreq/scaling_min_freq"), _read_int(root, f"{rel}/cpufreq/scaling_max_freq")
        locked &= lo is not None and lo == hi
        count = _read_int(root, f"{rel}/thermal_throttle/core_throttle_count")
        if count:
            throttled.append(f"{os.path.basename(cpu)} throttled {count} times (thermal)")
    temps, hot = _thermal(root)
    throttled += hot
    gpu_mhz, power_mode, clocks_locked = None, "", None
    if is_jetson:
        power_mode = _power_mode(root)
        devfreq = _gpu_devfreq(root)
        if devfreq:
            cur = _read_int(root, f"{devfreq}/cur_freq")
            gpu_mhz = cur / 1e6 if cur is not None else None
            lo, hi = _read_int(root, f"{devfreq}/min_freq"), _read_int(root, f"{devfreq}/max_freq")
            locked &= lo is not None and lo == hi
        clocks_locked = bool(freqs) and locked
    return PlatformState(is_jetson, model or "unknown", power_mode, clocks_locked, governor, freqs, gpu_mhz,
                         temps, throttled)


def assess(state: PlatformState, expected_power_mode: str) -> PlatformVerdict:
    """OK, or WARN with the reason: another power mode than expected, throttling."""
    problems = []
    if state.is_jetson and expected_power_mode and state.power_mode != expected_power_mode:
        problems.append(f"power mode {state.power_mode or 'unknown'}, expected {expected_power_mode} "
                        f"(sudo nvpmodel -m <id of {expected_power_mode}>)")
    problems += [f"throttling: {t}" for t in state.throttled]
    values = {"model": state.model, "jetson": str(state.is_jetson)}
    if state.is_jetson:
        values.update({"power mode": state.power_mode or "unknown", "expected power mode": expected_power_mode,
                       "clocks locked": "yes" if state.clocks_locked else "no (sudo jetson_clocks locks them)",
                       "GPU (MHz)": f"{state.gpu_freq_mhz:.0f}" if state.gpu_freq_mhz is not None else "n/a"})
    if state.cpu_governor:
        values["CPU governor"] = state.cpu_governor
    if state.cpu_freq_mhz:
        f = list(state.cpu_freq_mhz.values())
        values["CPU (MHz) min/max"] = f"{min(f):.0f} / {max(f):.0f}"
    for name, temp in sorted(state.temperatures_c.items()):
        values[f"temperature {name} (C)"] = f"{temp:.1f}"
    if problems:
        return PlatformVerdict(WARN, "; ".join(problems), values)
    summary = f"{state.power_mode}, clocks locked" if state.is_jetson else \
        f"{state.cpu_governor or 'no cpufreq'}, no throttling"
    return PlatformVerdict(OK, summary, values)
