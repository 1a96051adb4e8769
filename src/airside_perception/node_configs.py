"""Schemas of the nodes' configuration files (``config/*.yaml``)."""

from __future__ import annotations

from airside_perception.config import Key
from airside_perception.engines.manifest import TASKS

# Keys every node with diagnostics has
DIAGNOSTICS_PERIOD_S = Key(float, "period of /diagnostics", lo=0.1, hi=60.0)


def stats_window(of: str = "frames") -> Key:
    return Key(int, f"{of} in rolling statistics", lo=10, hi=100_000)


# Keys of every node: its thread pools, cores and priority (airside_perception.cpu)
CPU = {
    "threads": Key(int, "size of the BLAS / OpenMP thread pools (1: no hot path needs one)", lo=1, hi=64),
    "cpu_affinity": Key(list, "core ids the node may run on; empty: every core"),
    "nice": Key(int, "scheduling priority of every thread; 0 unchanged, below 0 needs CAP_SYS_NICE", lo=-20, hi=19),
}


MAX_FUTURE_MS = Key(float, "clouds stamped further ahead of this node's clock are refused and counted", lo=0.0,
                    hi=60_000.0)


# Keys of every node that reads clouds
TARGET_FRAME = Key(str, "frame of every output; clouds in another frame are transformed with tf2", min_length=1)
INTENSITY_MAX = Key(float, "largest intensity the driver reports (1.0 for 0..1, 255.0 for 0..255)", lo=1e-6,
                    hi=1e9)


INFERENCE_HOST = {
    "tasks": Key(list, "tasks this process hosts", item_choices=TASKS, min_items=1),
    "versions": Key(dict, "version of each task when no state file names one"),
    "intra_op_threads": Key(int, "ONNX Runtime threads per engine (engines run concurrently)", lo=1, hi=64),
    **CPU,
    "max_points": Key(int, "largest cloud accepted", lo=1000, hi=5_000_000),
    "max_input_age_ms": Key(float, "older clouds are dropped as stale", lo=1.0, hi=60_000.0),
    "max_future_ms": MAX_FUTURE_MS,
    "target_frame": TARGET_FRAME,
    "intensity_max": INTENSITY_MAX,
    "publish_markers": Key(bool, "publish rviz markers of the detections"),
    "diagnostics_period_s": DIAGNOSTICS_PERIOD_S,
    "stats_window": stats_window(),
    "engines_dir": Key(str, "engines root; empty for the package's engines/"),
    "backend": Key(str, "engine backend", choices=("auto", "onnxruntime", "tensorrt")),
    "state_file": Key(str, "file of active versions; empty for the default under ROS_HOME"),
    "swap": Key(dict, "engine swap validation and automatic rollback"),
    "preprocessing_device": Key(str, "where the shared encoding runs; gpu falls back to the CPU without CUDA",
                                choices=("cpu", "gpu")),
    "expected_power_mode": Key(str, "nvpmodel mode the vehicle should run in (Jetson); WARN otherwise"),
    "require_signature": Key(bool, "open only bundled versions and versions signed by a trusted key (false: "
                                   "development, WARN)"),
    "trusted_keys_dir": Key(str, "directory of trusted *.pub keys; empty: only the bundled versions open"),
}
INFERENCE_HOST_SWAP = {
    "max_latency_factor": Key(float, "warm P99 of a candidate under budget x this", lo=0.1, hi=100.0),
    "rollback_window_frames": Key(int, "frames watched after a swap", lo=1, hi=100_000),
    "rollback_max_failures": Key(int, "bad frames in the window that trigger a rollback", lo=1, hi=100_000),
    "frame_deadline_ms": Key(float, "a frame slower than this is a deadline miss", lo=1.0, hi=10_000.0),
    "require_gate_report": Key(bool, "only versions with a passing gate report may swap in"),
}

MODEL_MANAGER = {
    **CPU,
    "engines_dir": Key(str, "engines root; empty for the package's engines/"),
    "host_service_timeout_s": Key(float, "longest wait for the inference host to load and validate", lo=1.0,
                                  hi=600.0),
    "require_gate_report": Key(bool, "only versions with a passing gate report may swap in"),
    "require_signature": Key(bool, "open only bundled versions and versions signed by a trusted key (false: "
                                   "development, WARN)"),
    "trusted_keys_dir": Key(str, "directory of trusted *.pub keys; empty: only the bundled versions open"),
    "state_file": Key(str, "active versions file; the audit log audit.jsonl goes beside it"),
    "auto_promote": Key(bool, "swap in a shadowed candidate that passed every shadow gate (through the usual "
                              "validation); false: shadow runs only report"),
    "diagnostics_period_s": DIAGNOSTICS_PERIOD_S,
}

BASELINE = {
    **CPU,
    "max_points": Key(int, "largest cloud accepted", lo=1000, hi=5_000_000),
    "max_processing_time_ms": Key(float, "P99 budget of one cloud", lo=1.0, hi=1000.0),
    "max_future_ms": MAX_FUTURE_MS,
    "target_frame": TARGET_FRAME,
    "diagnostics_period_s": DIAGNOSTICS_PERIOD_S,
    "stats_window": stats_window(),
    "ground": Key(dict, "ground fit"),
    "clusters": Key(dict, "obstacle clustering"),
    "occupancy": Key(dict, "occupancy grid"),
}
BASELINE_GROUND = {
    "half_extent_m": Key(float, "classified square, metres", lo=10.0, hi=300.0),
    "seed_cell_m": Key(float, "cell of the lowest-point seeds", lo=0.5, hi=20.0),
    "seed_band_m": Key(float, "seed band above the cell minimum", lo=0.01, hi=1.0),
    "ransac_iterations": Key(int, "RANSAC hypotheses", lo=1, hi=10_000),
    "ransac_tolerance_m": Key(float, "RANSAC inlier distance", lo=0.01, hi=2.0),
    "local_cell_m": Key(float, "local plane patch", lo=1.0, hi=50.0),
    "ground_tolerance_m": Key(float, "ground if within this of the local plane", lo=0.01, hi=1.0),
    "max_slope": Key(float, "steepest accepted plane (rise over run)", lo=0.0, hi=1.0),
}
BASELINE_CLUSTERS = {
    "cell_m": Key(float, "BEV cell of the connected components", lo=0.05, hi=2.0),
    "half_extent_m": Key(float, "clustered square, metres", lo=5.0, hi=200.0),
    "min_height_m": Key(float, "lowest obstacle return above the apron", lo=0.0, hi=2.0),
    "max_height_m": Key(float, "highest obstacle return above the apron", lo=0.5, hi=20.0),
    "min_points": Key(int, "smallest cluster", lo=1, hi=1000),
}
BASELINE_OCCUPANCY = {
    "resolution_m": Key(float, "cell size", lo=0.05, hi=5.0),
    "half_extent_m": Key(float, "grid half size", lo=5.0, hi=200.0),
}

SIMPLEX = {
    **CPU,
    "deadline_ms": Key(float, "advanced outputs later than stamp + this lose the cycle; with decision_grace_ms "
                              "within the perception share of config/budget.yaml", lo=10.0, hi=1000.0),
    "decision_grace_ms": Key(float, "past the deadline, a cycle without its baseline waits this long", lo=0.0,
                             hi=100.0),
    "min_confidence": Key(float, "lowest accepted advanced confidence (a floor: the monitor's trust is the "
                                 "signal that fires on scenes the models do not know)", lo=0.01, hi=0.99),
    "recovery_cycles": Key(int, "good cycles in a row before returning to advanced, after a first fault",
                           lo=1, hi=1000),
    "max_recovery_cycles": Key(int, "the way back doubles with every further fault episode, up to this",
                               lo=1, hi=100_000),
    "host_timeout_ms": Key(float, "silence after which the inference host (or the baseline) counts as dead",
                           lo=50.0, hi=60_000.0),
    "max_future_ms": MAX_FUTURE_MS,
    "max_input_age_ms": Key(float, "clouds older than this on arrival open no cycle (the host and the baseline "
                                   "drop them as stale too); not a clock jump", lo=1.0, hi=60_000.0),
    "near_field_m": Key(float, "distance from the vehicle footprint within which every baseline obstacle counts",
                        lo=0.5, hi=200.0),
    "vehicle_footprint_m": Key(list, "[length, width] centred on base_link, or [[x, y], ...] corners, metres"),
    "tasks": Key(list, "tasks the inference host(s) run: a task without a report at the deadline is a fault",
                 item_choices=TASKS, min_items=1),
    "min_trust": Key(float, "lowest accepted trust of the host's distribution-shift monitor", lo=0.01, hi=0.99),
    "ood_cycles": Key(int, "cycles in a row below min_trust: out_of_distribution", lo=1, hi=1000),
    "ood_window": Key(int, "cycles the distribution-shift window looks back", lo=1, hi=1000),
    "ood_in_window": Key(int, "low-trust cycles within the window: out_of_distribution", lo=1, hi=1000),
    "target_frame": TARGET_FRAME,
    "diagnostics_period_s": DIAGNOSTICS_PERIOD_S,
    "stats_window": stats_window("cycles"),
    "role": Key(str, "start role of this instance (a respawned one comes back as the standby)",
                choices=("active", "standby")),
    "takeover_timeout_ms": Key(float, "a standby takes over when the active heartbeat (every 10 ms) is silent this "
                                      "long", lo=30.0, hi=200.0),
    "watchdog_max_age_ms": Key(float, "the safety watchdog is ERROR when the newest obstacles output is older",
                               lo=50.0, hi=10_000.0),
}

DATA_RECORDER = {
    **CPU,
    "recordings_dir": Key(str, "where the bags and index.jsonl go (launch arg recordings_dir)", min_length=1),
    "max_bytes": Key(float, "disk quota of recordings_dir: the oldest recordings go first", lo=1e6, hi=1e13),
    "min_free_bytes": Key(float, "left free on the disk whatever the quota", lo=0.0, hi=1e13),
    "context_before": Key(int, "clouds recorded before a trigger", lo=0, hi=100),
    "context_after": Key(int, "clouds recorded after a trigger", lo=0, hi=100),
    "ring_clouds": Key(int, "clouds held in memory for the context (bounded memory)", lo=2, hi=500),
    "max_event_clouds": Key(int, "longest recording, clouds: a trigger inside one extends it up to this", lo=1,
                            hi=10_000),
    "flush_s": Key(float, "a recording closes this long after the clouds stop", lo=0.1, hi=600.0),
    "min_interval_s": Key(dict, "seconds between two recordings of one trigger, per trigger"),
    "min_recording_interval_s": Key(float, "seconds between the starts of two recordings, whatever triggers them "
                                           "(marks excepted)", lo=0.0, hi=86400.0),
    "near_field_m": Key(float, "an obstacle this close seen by one path only is a near_field_disagreement",
                        lo=0.5, hi=200.0),
    "max_mark_s": Key(float, "longest recording /data_recorder/mark accepts", lo=1.0, hi=3600.0),
    "queue_events": Key(int, "recordings waiting for the writer; a full queue drops the newest (counted)", lo=1,
                        hi=100),
    "diagnostics_period_s": DIAGNOSTICS_PERIOD_S,
}
