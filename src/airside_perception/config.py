"""Typed configuration with strict checking: unknown, missing or out-of-range keys stop start-up.

Each node declares a schema; ``parse`` checks a mapping (a YAML file or the node's private
parameters) against it and names the offending key and what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import yaml

from airside_perception.errors import ConfigError


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, range or choices, and what it means."""

    kind: type
    doc: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    item_choices: Optional[Tuple[Any, ...]] = None  # for list values
    min_items: int = 0
    min_length: int = 0  # for str values

    def allowed(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.item_choices is not None:
            return f"a list of {list(self.item_choices)}"
        if self.lo is not None or self.hi is not None:
            return f"{self.kind.__name__} in [{self.lo if self.lo is not None else '-inf'}, " \
                   f"{self.hi if self.hi is not None else 'inf'}]"
        return self.kind.__name__


def _check(name: str, key: Key, value: Any, where: str) -> Any:
    if key.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if key.kind is int and isinstance(value, bool):
        raise ConfigError(f"{where}: '{name}' = {value!r} must be {key.allowed()}")
    if not isinstance(value, key.kind):
        raise ConfigError(f"{where}: '{name}' = {value!r} must be {key.allowed()} ({key.doc})")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{where}: '{name}' = {value!r} must be {key.allowed()} ({key.doc})")
    if key.item_choices is not None:
        bad = [v for v in value if v not in key.item_choices]
        if bad or len(value) < key.min_items or len(set(value)) != len(value):
            raise ConfigError(f"{where}: '{name}' = {value!r} must be {key.allowed()}, "
                              f"at least {key.min_items}, no repeats ({key.doc})")
    if key.kind is str and len(value.strip()) < key.min_length:
        raise ConfigError(f"{where}: '{name}' = {value!r} must not be empty ({key.doc})")
    if key.lo is not None and value < key.lo or key.hi is not None and value > key.hi:
        raise ConfigError(f"{where}: '{name}' = {value!r} is out of range: {key.allowed()} ({key.doc})")
    return value


def parse(data: Mapping[str, Any], schema: Mapping[str, Key], where: str,
          ignore: Sequence[str] = ()) -> Dict[str, Any]:
    """Checks ``data`` against ``schema``; returns the values. Keys in ``ignore`` are skipped."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping of keys to values")
    unknown = sorted(k for k in data if k not in schema and k not in ignore)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}: allowed keys are {sorted(schema)}")
    missing = sorted(k for k in schema if k not in data)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}: "
                          + "; ".join(f"{k}: {schema[k].allowed()}, {schema[k].doc}" for k in missing))
    return {name: _check(name, key, data[name], where) for name, key in schema.items()}


def load_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return data or {}


# --------------------------------------------------------------------------- budget
BUDGET_STAGES = ("preprocessing", "segmentation", "detection", "occupancy", "tracking", "localization",
                 "planning", "safety_monitoring")
BUDGET_SCHEMA = {
    "cycle_ms": Key(float, "the perception cycle", lo=10.0, hi=1000.0),
    "warn_factor": Key(float, "P99 above budget x this: WARN", lo=0.1, hi=10.0),
    "error_factor": Key(float, "P99 above budget x this: ERROR", lo=0.1, hi=10.0),
    "stages_ms": Key(dict, "budget of each stage, milliseconds"),
}


@dataclass(frozen=True)
class Budget:
    cycle_ms: float
    warn_factor: float
    error_factor: float
    stages_ms: Mapping[str, float]

    def stage(self, name: str) -> float:
        return self.stages_ms[name]


def load_budget(path: str) -> Budget:
    values = parse(load_yaml(path), BUDGET_SCHEMA, path)
    stage_schema = {s: Key(float, f"{s} budget", lo=0.1, hi=1000.0) for s in BUDGET_STAGES}
    stages = parse(values["stages_ms"], stage_schema, f"{path}: stages_ms")
    if values["error_factor"] < values["warn_factor"]:
        raise ConfigError(f"{path}: error_factor {values['error_factor']} must be >= warn_factor "
                          f"{values['warn_factor']}")
    total = sum(stages.values())
    if total > values["cycle_ms"]:
        raise ConfigError(f"{path}: stages add up to {total} ms, more than cycle_ms {values['cycle_ms']}")
    return Budget(values["cycle_ms"], values["warn_factor"], values["error_factor"], stages)
