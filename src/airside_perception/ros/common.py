"""Pieces every node shares: configuration from private parameters, logging, diagnostics."""

from __future__ import annotations

import logging
import os
import struct
from typing import Any, Dict, Mapping, Optional

import rospkg
import rospy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from airside_perception import config, cpu
from airside_perception.errors import ConfigError
from airside_perception.stats import ERROR, OK, WARN, Percentiles

LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


def package_path(*parts: str) -> str:
    return os.path.join(rospkg.RosPack().get_path("airside_perception"), *parts)


#: Private parameters that launch files set beside the node's YAML.
LAUNCH_PARAMS = ("budget_file",)


def private_config(schema: Mapping[str, config.Key], node: str) -> Dict[str, Any]:
    """The node's private parameters checked against ``schema`` (loaded from config/*.yaml)."""
    params = rospy.get_param("~", {})
    return config.parse(params, schema, f"{node} parameters (its YAML under config/ and the launch file)",
                        ignore=LAUNCH_PARAMS)


def load_budget() -> config.Budget:
    """The cycle budget named by ``~budget_file`` (default: the package's config/budget.yaml)."""
    return config.load_budget(rospy.get_param("~budget_file", package_path("config", "budget.yaml")))


def fail_on_bad_config(node: str, exc: ConfigError) -> None:
    """A node whose configuration is wrong serves nothing, but stays up and says so: ERROR on
    ``/diagnostics`` (``<node>: configuration``, with the key and the fix) until it is shut down,
    instead of exiting into a respawn loop that repeats the same error every few seconds."""
    from airside_perception.ros.diagnostics import NodeDiagnostics

    rospy.logfatal(f"{node}: configuration error: {exc}. The node serves nothing and reports ERROR on "
                   "/diagnostics until it is restarted with a corrected configuration.")
    values = {"error": str(exc), "fix": "correct the key in the node's YAML under config/ (or the launch "
                                        "argument that sets it), then restart the node"}
    diagnostics = NodeDiagnostics(1.0)
    diagnostics.add("configuration", lambda: status(f"{node}: configuration", ERROR,
                                                    f"configuration error: {exc}", values))
    rospy.spin()
    raise SystemExit(2)


class CpuStatus:
    """Sizes the node's thread pools, cores and priority from its configuration (call it right
    after the configuration is parsed), then reports CPU share and thread counts as a
    diagnostic task."""

    def __init__(self, node: str, cfg: Mapping[str, Any]):
        self.node = node
        try:
            self.applied = cpu.apply(cpu.settings_from(dict(cfg)))
        except ConfigError as exc:
            fail_on_bad_config(node, exc)
        self.meter = cpu.CpuMeter()
        rospy.loginfo(f"{node}: BLAS/OpenMP threads {self.applied['threads']}, cores "
                      f"{self.applied['cores']}, nice {self.applied['nice']}")

    def __call__(self) -> DiagnosticStatus:
        values = cpu.report(self.applied, self.meter)
        return status(f"{self.node}: cpu", OK, f"{values['cpu share (cores)']} cores busy, "
                      f"{values['os threads']} threads", values)


class _RosoutHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        msg = self.format(record)
        if record.levelno >= logging.ERROR:
            rospy.logerr(msg)
        elif record.levelno >= logging.WARNING:
            rospy.logwarn(msg)
        elif record.levelno >= logging.INFO:
            rospy.loginfo(msg)
        else:
            rospy.logdebug(msg)


def forward_core_logging() -> None:
    """Sends the core's ``logging`` records to rosout."""
    logger = logging.getLogger("airside_perception")
    if not any(isinstance(h, _RosoutHandler) for h in logger.handlers):
        handler = _RosoutHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def status(name: str, level: int, message: str, values: Optional[Mapping[str, Any]] = None,
           hardware_id: str = "airside_perception") -> DiagnosticStatus:
    return DiagnosticStatus(level=LEVELS.get(level, level), name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(str(k), str(v)) for k, v in (values or {}).items()])


def percentile_values(prefix: str, p: Optional[Percentiles]) -> Dict[str, str]:
    if p is None:
        return {f"{prefix} P50 (ms)": "n/a", f"{prefix} P99 (ms)": "n/a"}
    return {f"{prefix} P50 (ms)": f"{p.p50:.2f}", f"{prefix} P99 (ms)": f"{p.p99:.2f}",
            f"{prefix} max (ms)": f"{p.max:.2f}"}




def ros_home_file(*parts: str) -> str:
    home = os.environ.get("ROS_HOME", os.path.join(os.path.expanduser("~"), ".ros"))
    return os.path.join(home, *parts)


def stop_launch(launch) -> None:
    """Stops a ``roslaunch`` started with ``start_new_session=True``: SIGINT to its process group,
    SIGKILL if it has not ended within 30 s."""
    import signal
    import subprocess

    if launch.poll() is not None:
        return
    os.killpg(launch.pid, signal.SIGINT)
    try:
        launch.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)


def header_of_raw(buff: bytes):
    """(stamp, frame_id) from the serialized bytes of any message that starts with a Header.

    Lets a node that needs only the stamp subscribe with ``rospy.AnyMsg`` and skip the rest.
    """
    _seq, secs, nsecs, length = struct.unpack_from("<IIII", buff, 0)
    return rospy.Time(secs, nsecs), bytes(buff[16:16 + length]).decode("utf-8", "replace")
