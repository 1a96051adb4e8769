"""Platform state from sysfs: a fake Jetson Orin and a fake x86 host."""

from __future__ import annotations

import os

from airside_perception import platform_probe as pp

NVPMODEL_CONF = """< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=MODE_15W >
< POWER_MODEL ID=2 NAME=MODE_30W >
< POWER_MODEL ID=3 NAME=MODE_50W >
"""


def _write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(str(text))


def _orin(root, mode_id=3, locked=True, temp_mc=52000, trip_mc=99000):
    _write(root, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    _write(root, "etc/nv_tegra_release", "# R35 (release), REVISION: 4.1")
    _write(root, "etc/nvpmodel.conf", NVPMODEL_CONF)
    _write(root, "var/lib/nvpmodel/status", f"pmode:{mode_id:04d} fmode:quiet")
    for cpu in range(8):
        base = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(root, f"{base}/scaling_cur_freq", 2201600)
        _write(root, f"{base}/scaling_min_freq", 2201600 if locked else 115200)
        _write(root, f"{base}/scaling_max_freq", 2201600)
        _write(root, f"{base}/scaling_governor", "schedutil")
    gpu = "sys/devices/gpu.0/devfreq/17000000.ga10b"
    _write(root, f"{gpu}/cur_freq", 1300500000)
    _write(root, f"{gpu}/min_freq", 1300500000 if locked else 306000000)
    _write(root, f"{gpu}/max_freq", 1300500000)
    zone = "sys/class/thermal/thermal_zone0"
    _write(root, f"{zone}/type", "gpu-thermal")
    _write(root, f"{zone}/temp", temp_mc)
    _write(root, f"{zone}/trip_point_0_type", "passive")
    _write(root, f"{zone}/trip_point_0_temp", trip_mc)


def _x86(root, throttle_count=0):
    for cpu in range(2):
        base = f"sys/devices/system/cpu/cpu{cpu}"
        _write(root, f"{base}/cpufreq/scaling_cur_freq", 2900000)
        _write(root, f"{base}/cpufreq/scaling_min_freq", 800000)
        _write(root, f"{base}/cpufreq/scaling_max_freq", 3500000)
        _write(root, f"{base}/cpufreq/scaling_governor", "performance")
        _write(root, f"{base}/thermal_throttle/core_throttle_count", throttle_count)
    _write(root, "sys/class/thermal/thermal_zone0/type", "x86_pkg_temp")
    _write(root, "sys/class/thermal/thermal_zone0/temp", 48000)


def test_orin_in_the_expected_mode_with_locked_clocks_is_ok(tmp_path):
    _orin(str(tmp_path))
    state = pp.probe(str(tmp_path))
    assert state.is_jetson and state.power_mode == "MODE_50W" and state.clocks_locked
    assert state.gpu_freq_mhz == 1300.5 and state.temperatures_c["gpu-thermal"] == 52.0
    verdict = pp.assess(state, "MODE_50W")
    assert verdict.level == pp.OK and verdict.values["clocks locked"] == "yes"


def test_orin_in_another_mode_warns_and_says_how_to_fix(tmp_path):
    _orin(str(tmp_path), mode_id=1, locked=False)
    verdict = pp.assess(pp.probe(str(tmp_path)), "MODE_50W")
    assert verdict.level == pp.WARN
    assert "power mode MODE_15W, expected MODE_50W" in verdict.message and "nvpmodel" in verdict.message
    assert verdict.values["clocks locked"].startswith("no")


def test_orin_over_its_passive_trip_point_is_throttling(tmp_path):
    _orin(str(tmp_path), temp_mc=101000, trip_mc=99000)
    verdict = pp.assess(pp.probe(str(tmp_path)), "MODE_50W")
    assert verdict.level == pp.WARN and "gpu-thermal at 101.0 C over its passive trip 99.0 C" in verdict.message


def test_x86_host_reports_governor_and_frequency(tmp_path):
    _x86(str(tmp_path))
    state = pp.probe(str(tmp_path))
    assert not state.is_jetson and state.cpu_governor == "performance"
    verdict = pp.assess(state, "MODE_50W")  # the Jetson power mode does not apply here
    assert verdict.level == pp.OK and verdict.values["CPU (MHz) min/max"] == "2900 / 2900"


def test_x86_thermal_throttle_counter_warns(tmp_path):
    _x86(str(tmp_path), throttle_count=17)
    verdict = pp.assess(pp.probe(str(tmp_path)), "MODE_50W")
    assert verdict.level == pp.WARN and "cpu0 throttled 17 times" in verdict.message


def test_an_empty_tree_is_reported_not_raised(tmp_path):
    verdict = pp.assess(pp.probe(str(tmp_path)), "MODE_50W")
    assert verdict.level == pp.OK and verdict.values["model"] == "unknown"
