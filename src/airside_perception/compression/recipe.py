"""Compression recipes (``config/compression/<task>.yaml``): parsed and checked before any work.

    task: segmentation
    base: {version: 1.2.0, checkpoint: models/segmentation-1.0.0.pt}
    teacher: models/teachers/segmentation.pt     # or "base": the base network teaches itself
    prune: {method: safety, ratio: 0.5, ratios: {mlp: 0.3}, calibration_batches: 8, protect_share: 0.2}
    head: {stride: 1, width: 16}                 # detection only: new heads at 0.4 m instead of 0.8 m
    distill: {steps: 1500, batch: 8, lr: 0.001, temperature: 2.0, alpha: 0.5, control: true,
              features: [{student: backbone, teacher: backbone, weight: 1.0, loss: cosine}],
              then: [{from: alone, steps: 1500, lr: 0.001, alpha: 0.8},    # further stages
                     {from: alone, prune: {ratios: {mlp.0: 0.33}}, steps: 1500}],
              keep: distilled}                # or alone: the step's result is the last control
    sparsity: {pattern: "2:4", steps: 400, lr: 0.0005}
    qat: {steps: 600, lr: 0.0002, calibration_batches: 8, keep_float: auto, max_float_layers: 2, min_share: 0.2}
    evaluate: {scans: 200, frames: 200}

Every step is optional; they run in the order prune -> head -> distill -> sparsity -> qat -> export.
``head`` (detection) keeps the network's backbone and replaces its heatmap and box heads with
untrained ones at 0.4 m (:func:`training.models.with_fine_head`): the distillation after it
trains them, on targets at 0.4 m.
``distill.then`` adds stages run one after the other, each from the previous stage's distilled
network or (``from: alone``) its control, with its own weights (``steps``, ``batch`` and ``lr``
default to the stage before), optionally pruned first (``prune``, the keys of the prune step:
a network trained after one pruning can be pruned again, e.g. only its per-point head, and
both jobs of the stage start from the pruned network); the last stage's distilled network is
the step's result, or its control with ``keep: alone`` (the one that measured better).
An unknown key, a ratio outside [0, 0.9] or a step count under 1 fails at once, naming the key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from airside_perception.errors import ConfigError
from airside_perception.training.distill import DistillRecipe

STEPS = ("prune", "head", "distill", "sparsity", "qat")
TASKS = ("segmentation", "detection", "occupancy")

#: Classes whose channels safety-aware pruning protects, per task (the design's safety classes).
SAFETY_CLASSES = {"segmentation": ("person", "fod", "cone", "aircraft"), "detection": ("person", "cone"),
                  "occupancy": ()}


@dataclass(frozen=True)
class PruneStep:
    method: str = "safety"  # safety | magnitude
    ratio: float = 0.5
    ratios: Dict[str, float] = field(default_factory=dict)  # module path -> ratio
    calibration_batches: int = 8
    protect_share: float = 0.2  # per safety class, the top share of channels by its importance is kept
    protect: Tuple[str, ...] = ()
    round_to: int = 4


@dataclass(frozen=True)
class HeadStep:
    stride: int = 1  # output cell in BEV cells (0.4 m each)
    width: int = 16  # channels of the fine head


@dataclass(frozen=True)
class TrainStep:
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-3


@dataclass(frozen=True)
class DistillStep(TrainStep):
    control: bool = True  # also train the same student without the teacher (same seeds, data, steps)
    recipe: DistillRecipe = field(default_factory=DistillRecipe)
    start: str = "distilled"  # a later stage starts from the stage before's "distilled" or "alone" network
    then: Tuple["DistillStep", ...] = ()  # further stages, in order
    prune: Optional[PruneStep] = None  # a later stage: prune its start network first
    keep: str = "distilled"  # which network of the last stage is the step's result: distilled | alone

    def stages(self) -> List["DistillStep"]:
        return [self, *self.then]


@dataclass(frozen=True)
class SparsityStep(TrainStep):
    pattern: str = "2:4"


@dataclass(frozen=True)
class QatStep(TrainStep):
    calibration_batches: int = 8
    keep_float: Any = "auto"  # "auto" (sensitivity sweep) or a list of module paths
    max_float_layers: int = 2
    min_share: float = 0.2


@dataclass(frozen=True)
class Recipe:
    task: str
    base_version: str
    base_checkpoint: str
    teacher: str  # a network file or "base"
    prune: Optional[PruneStep] = None
    head: Optional[HeadStep] = None
    distill: Optional[DistillStep] = None
    sparsity: Optional[SparsityStep] = None
    qat: Optional[QatStep] = None
    eval_scans: int = 200
    eval_frames: int = 200
    path: str = ""

    def steps(self) -> List[str]:
        return [s for s in STEPS if getattr(self, s) is not None]


def _check(data: Any, known, where: str) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping (got {type(data).__name__})")
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    return data


def _number(data: dict, key: str, where: str, kind=float, lo=None, hi=None):
    value = data[key]
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}: {data[key]!r} is not a {kind.__name__}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}.{key}: {value} must lie in [{lo}, {hi}]")
    return value


def _train_fields(d: dict, where: str) -> dict:
    out = {}
    if "steps" in d:
        out["steps"] = _number(d, "steps", where, int, 1)
    if "batch" in d:
        out["batch"] = _number(d, "batch", where, int, 1, 256)
    if "lr" in d:
        out["lr"] = _number(d, "lr", where, float, 1e-8, 1.0)
    return out


_DISTILL_WEIGHTS = {"temperature", "alpha", "heatmap_weight", "box_weight", "box_min_score", "features"}


def _distill_step(data: Any, where: str, task: str) -> DistillStep:
    p = _check(data, {"steps", "batch", "lr", "control", "then", "keep"} | _DISTILL_WEIGHTS, where)
    first = _distill_stage(p, where, DistillStep(), "distilled", bool(p.get("control", True)))
    keep = _which_network(p, "keep", where, first.control)
    stages, before = [], first
    then = p.get("then") or []
    if not isinstance(then, list):
        raise ConfigError(f"{where}.then must be a list of stages (got {type(then).__name__})")
    for i, stage in enumerate(then):
        w = f"{where}.then[{i}]"
        q = _check(stage, {"steps", "batch", "lr", "from", "prune"} | _DISTILL_WEIGHTS, w)
        start = _which_network(q, "from", w, first.control)
        before = _distill_stage(q, w, before, start, first.control)
        if q.get("prune") is not None:
            before = dataclasses.replace(before, prune=_prune_step(q["prune"], f"{w}.prune", task))
        stages.append(before)
    return dataclasses.replace(first, then=tuple(stages), keep=keep)


def _which_network(p: dict, key: str, where: str, control: bool) -> str:
    """``p[key]``: "distilled" (the default) or "alone", which needs the control."""
    value = str(p.get(key, "distilled"))
    if value not in ("distilled", "alone"):
        raise ConfigError(f"{where}.{key}: {value!r} must be distilled or alone")
    if value == "alone" and not control:
        raise ConfigError(f"{where}.{key}: alone needs the control (distill.control: true)")
    return value


def _distill_stage(p: dict, where: str, before: DistillStep, start: str, control: bool) -> DistillStep:
    fields = {"steps": before.steps, "batch": before.batch, "lr": before.lr, **_train_fields(p, where)}
    recipe = DistillRecipe.from_dict({k: v for k, v in p.items() if k in _DISTILL_WEIGHTS}, where=where)
    return DistillStep(**fields, control=control, recipe=recipe, start=start)


def _prune_step(data: Any, w: str, task: str) -> PruneStep:
    p = _check(data, {"method", "ratio", "ratios", "calibration_batches", "protect_share", "protect", "round_to"},
               w)
    kw: Dict[str, Any] = {}
    if "method" in p:
        if p["method"] not in ("safety", "magnitude"):
            raise ConfigError(f"{w}.method: {p['method']!r} must be safety or magnitude")
        kw["method"] = p["method"]
    if "ratio" in p:
        kw["ratio"] = _number(p, "ratio", w, float, 0.0, 0.9)
    if "ratios" in p:
        ratios = _check(p["ratios"], set(p["ratios"] or {}), f"{w}.ratios")
        kw["ratios"] = {str(k): _number(ratios, k, f"{w}.ratios", float, 0.0, 0.9) for k in ratios}
    if "calibration_batches" in p:
        kw["calibration_batches"] = _number(p, "calibration_batches", w, int, 1)
    if "protect_share" in p:
        kw["protect_share"] = _number(p, "protect_share", w, float, 0.0, 1.0)
    if "round_to" in p:
        kw["round_to"] = _number(p, "round_to", w, int, 1, 64)
    protect = tuple(p.get("protect", SAFETY_CLASSES[task]))
    from airside_perception import classes

    names = classes.CLASS_NAMES if task == "segmentation" else classes.DETECTION_CLASS_NAMES
    for c in protect:
        if c not in names:
            raise ConfigError(f"{w}.protect: '{c}' is not a {task} class ({', '.join(names)})")
    kw["protect"] = protect
    return PruneStep(**kw)


def parse(data: Any, path: str = "recipe") -> Recipe:
    where = os.path.basename(path)
    d = _check(data, {"task", "base", "teacher", "prune", "head", "distill", "sparsity", "qat", "evaluate"}, where)
    task = d.get("task")
    if task not in TASKS:
        raise ConfigError(f"{where}.task: {task!r} must be one of {', '.join(TASKS)}")
    base = _check(d.get("base"), {"version", "checkpoint"}, f"{where}.base")
    if "version" not in base or "checkpoint" not in base:
        raise ConfigError(f"{where}.base needs 'version' (baseline of the gates) and 'checkpoint' (its .pt)")
    out: Dict[str, Any] = {"task": task, "base_version": str(base["version"]),
                           "base_checkpoint": str(base["checkpoint"]), "teacher": str(d.get("teacher", "base")),
                           "path": path}
    if d.get("prune") is not None:
        out["prune"] = _prune_step(d["prune"], f"{where}.prune", task)
    if d.get("head") is not None:
        w = f"{where}.head"
        if task != "detection":
            raise ConfigError(f"{w}: only detection has a head to refine (this recipe's task is {task})")
        p = _check(d["head"], {"stride", "width"}, w)
        if "stride" in p and _number(p, "stride", w, int) != 1:
            raise ConfigError(f"{w}.stride: {p['stride']!r} must be 1 (0.4 m; 2 is the network without this step)")
        out["head"] = HeadStep(width=_number(p, "width", w, int, 4, 128) if "width" in p else 16)
        if d.get("distill") is None:
            raise ConfigError(f"{w}: new heads are untrained; the recipe needs a distill step to train them")
    if d.get("distill") is not None:
        out["distill"] = _distill_step(d["distill"], f"{where}.distill", task)
    if d.get("sparsity") is not None:
        w = f"{where}.sparsity"
        p = _check(d["sparsity"], {"steps", "batch", "lr", "pattern"}, w)
        if str(p.get("pattern", "2:4")) != "2:4":
            raise ConfigError(f"{w}.pattern: only \"2:4\" (what the GPU's sparse tensor cores run)")
        out["sparsity"] = SparsityStep(**_train_fields(p, w))
    if d.get("qat") is not None:
        w = f"{where}.qat"
        p = _check(d["qat"], {"steps", "batch", "lr", "calibration_batches", "keep_float", "max_float_layers",
                              "min_share"}, w)
        kw = _train_fields(p, w)
        if "calibration_batches" in p:
            kw["calibration_batches"] = _number(p, "calibration_batches", w, int, 1)
        if "keep_float" in p:
            kf = p["keep_float"]
            if kf != "auto" and not (isinstance(kf, list) and all(isinstance(x, str) for x in kf)):
                raise ConfigError(f"{w}.keep_float: 'auto' or a list of module paths")
            kw["keep_float"] = kf if kf == "auto" else tuple(kf)
        if "max_float_layers" in p:
            kw["max_float_layers"] = _number(p, "max_float_layers", w, int, 0, 64)
        if "min_share" in p:
            kw["min_share"] = _number(p, "min_share", w, float, 0.0, 1.0)
        out["qat"] = QatStep(**kw)
    if d.get("evaluate") is not None:
        w = f"{where}.evaluate"
        p = _check(d["evaluate"], {"scans", "frames"}, w)
        if "scans" in p:
            out["eval_scans"] = _number(p, "scans", w, int, 1)
        if "frames" in p:
            out["eval_frames"] = _number(p, "frames", w, int, 1)
    return Recipe(**out)


def load(path: str) -> Recipe:
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"recipe {path} does not exist (recipes live in config/compression/<task>.yaml)")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse(data, path)
