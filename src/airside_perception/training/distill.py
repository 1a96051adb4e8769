"""Knowledge distillation: any PyTorch student learns from any teacher through a task adaptor.

    python -m airside_perception.training.distill --task segmentation \
        --teacher models/teachers/segmentation.pt --recipe config/distillation/segmentation.yaml \
        --student models/segmentation-1.0.0.pt --steps 1500 --out-dir /tmp/distill

Losses (Hinton et al. 2015; FitNets, Romero et al. 2015; CenterPoint-KD):

- response: segmentation, KL(teacher || student) of point logits at temperature T, times T^2
  so that gradients keep their scale, mixed with the hard-label loss as
  ``alpha * hard + (1 - alpha) * soft``; detection, the teacher's heatmap probabilities as
  soft targets (mean squared error) plus L1 on the box regression where the teacher sees an
  object centre (a student with a finer heatmap than its teacher's is compared through its
  strongest sub-cell of each teacher cell, and its boxes learn from the labels); occupancy,
  the teacher's probabilities (at T) as soft BCE targets.
- features: chosen layers of both networks (module paths, e.g. ``backbone``), the student's
  passed through a learned projector (1x1 convolution or linear) to the teacher's width,
  compared after L2 normalisation over channels by cosine distance or squared error.

Weights and layers come from a YAML recipe (:class:`DistillRecipe`; an unknown key fails at
once, naming it). The command trains the same student twice from the same seeds, batches
and steps: with the teacher and alone, so the gain of the teacher is measured.

On several GPUs: ``torchrun --nproc_per_node N -m airside_perception.training.distill ...``
(NCCL; gloo for CPU processes): each rank simulates its own seeds and trains on its own
``--batch`` scans, the gradients of every job are averaged over the ranks each step, rank 0
writes the networks and curves.

Written here rather than taken from NVIDIA ModelOpt's ``modelopt.torch.distill``: that API
wraps a model and a loss the caller still writes (the task losses above are the whole
work), and ModelOpt pulls a GPU-oriented dependency set into the offline tools that the
training machines cannot install offline.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from airside_perception import classes, cli
from airside_perception.errors import ConfigError
from airside_perception.training.targets import DET_STRIDE


@dataclass(frozen=True)
class FeatureLink:
    student: str  # module path in the student, e.g. "backbone"
    teacher: str
    weight: float = 1.0
    loss: str = "cosine"  # cosine | l2


@dataclass(frozen=True)
class DistillRecipe:
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-label loss; 1 - alpha on the teacher's response
    heatmap_weight: float = 1.0  # detection: soft heatmap targets
    box_weight: float = 1.0  # detection: regression where the teacher sees a centre
    box_min_score: float = 0.3
    features: Sequence[FeatureLink] = field(default_factory=tuple)

    @staticmethod
    def from_dict(data: Optional[dict], where: str = "distill") -> "DistillRecipe":
        data = dict(data or {})
        known = {"temperature", "alpha", "heatmap_weight", "box_weight", "box_min_score", "features"}
        _reject_unknown(data, known, where)
        links = []
        for i, item in enumerate(data.pop("features", None) or []):
            if not isinstance(item, dict):
                raise ConfigError(f"{where}.features[{i}] must be a mapping with student, teacher, weight, loss")
            _reject_unknown(item, {"student", "teacher", "weight", "loss"}, f"{where}.features[{i}]")
            if "student" not in item or "teacher" not in item:
                raise ConfigError(f"{where}.features[{i}] needs 'student' and 'teacher' module paths")
            link = FeatureLink(str(item["student"]), str(item["teacher"]), float(item.get("weight", 1.0)),
                               str(item.get("loss", "cosine")))
            if link.loss not in ("cosine", "l2"):
                raise ConfigError(f"{where}.features[{i}].loss '{link.loss}' must be cosine or l2")
            links.append(link)
        recipe = DistillRecipe(**{k: float(v) for k, v in data.items()}, features=tuple(links))
        if recipe.temperature <= 0:
            raise ConfigError(f"{where}.temperature {recipe.temperature} must be positive")
        if not 0.0 <= recipe.alpha <= 1.0:
            raise ConfigError(f"{where}.alpha {recipe.alpha} must lie in [0, 1]")
        return recipe


def _reject_unknown(data: dict, known, where: str) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")


# ---------------------------------------------------------------------------- losses


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KL(teacher || student) of softened distributions over the last axis, x T^2, mean over
    rows (weighted mean with per-row ``weights``)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if weights is None:
        return kl.mean() * t * t
    return (kl * weights).sum() / weights.sum().clamp(min=1e-12) * t * t


def mix(hard: torch.Tensor, soft: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * hard + (1.0 - alpha) * soft


def soft_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy against the teacher's probabilities (at T), x T^2."""
    t = temperature
    target = torch.sigmoid(teacher_logits / t)
    return F.binary_cross_entropy_with_logits(student_logits / t, target) * t * t


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Distance of channel-normalised features (B, C, ...) of equal shape."""
    if student.shape[2:] != teacher.shape[2:]:
        student = F.interpolate(student, size=teacher.shape[2:], mode="bilinear", align_corners=False)
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher, dim=1)
    if kind == "cosine":
        return (1.0 - (s * t).sum(1)).mean()
    return ((s - t) ** 2).sum(1).mean()


class Projector(nn.Module):
    """Student features to the teacher's width: 1x1 convolution (maps) or linear (rows)."""

    def __init__(self, c_student: int, c_teacher: int, spatial: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(c_student, c_teacher, 1, bias=False) if spatial else nn.Linear(c_student, c_teacher,
                                                                                            bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


# ---------------------------------------------------------------------------- task adaptors


class TaskAdaptor:
    """What distillation needs to know of a task: the forward on a training batch, the
    hard-label loss, and the response loss against the teacher's outputs."""

    task = ""

    def forward(self, net: nn.Module, batch: Dict[str, torch.Tensor]):
        raise NotImplementedError

    def hard_loss(self, out, batch) -> torch.Tensor:
        raise NotImplementedError

    def response_loss(self, out, teacher_out, batch, recipe: DistillRecipe) -> torch.Tensor:
        raise NotImplementedError


class SegmentationAdaptor(TaskAdaptor):
    task = "segmentation"

    def forward(self, net, batch):
        from airside_perception.training.train import seg_forward_batched

        feats = batch["point_features"]
        if getattr(net, "point_inputs", 5) > feats.shape[1]:  # a cross-modal network: + camera colour
            feats = torch.cat([feats, batch["point_colour"]], dim=1)
        return seg_forward_batched(net, batch["bev"], batch["point_cells"], batch["point_batch"], feats)

    def hard_loss(self, out, batch):
        from airside_perception.training.train import SEG_CLASS_WEIGHTS

        w = torch.tensor(SEG_CLASS_WEIGHTS, device=out.device)
        return F.cross_entropy(out, batch["point_labels"], weight=w, ignore_index=classes.UNLABELLED)

    def response_loss(self, out, teacher_out, batch, recipe):
        # each point weighs what its class weighs in the hard loss: unweighted, the KL is the
        # ground's (nine points in ten) and the rare safety classes learn least from the teacher
        from airside_perception.training.train import SEG_CLASS_WEIGHTS

        labels = batch["point_labels"]
        table = torch.tensor(SEG_CLASS_WEIGHTS + [1.0], device=out.device)
        weights = table[torch.where(labels == classes.UNLABELLED, len(SEG_CLASS_WEIGHTS), labels)]
        return kd_kl(out, teacher_out, recipe.temperature, weights)


class DetectionAdaptor(TaskAdaptor):
    task = "detection"

    def forward(self, net, batch):
        return net(batch["bev"])

    def hard_loss(self, out, batch):
        from airside_perception.training.train import detection_loss

        return detection_loss(out[0], out[1], batch)

    def response_loss(self, out, teacher_out, batch, recipe):
        heat, reg = out
        t_heat, t_reg = teacher_out
        t_prob = torch.sigmoid(t_heat)
        prob = torch.sigmoid(heat)
        finer = heat.shape[-1] // t_heat.shape[-1]
        if finer > 1:  # a student at 0.4 m under a 0.8 m teacher: its strongest sub-cell per teacher cell
            prob = F.max_pool2d(prob, finer)
        # the heatmap is almost all background: weight cells by the teacher's confidence
        weight = 1.0 + 10.0 * t_prob.max(1, keepdim=True)[0]
        heat_loss = (weight * (prob - t_prob) ** 2).sum() / weight.sum() * 100.0
        if finer > 1:  # the teacher's box offsets are in its own cells: the boxes learn from the labels
            return recipe.heatmap_weight * heat_loss
        centres = (t_prob.max(1, keepdim=True)[0] >= recipe.box_min_score).float()
        box_loss = (centres * (reg - t_reg).abs()).sum() / centres.sum().clamp(min=1) / reg.shape[1]
        return recipe.heatmap_weight * heat_loss + recipe.box_weight * box_loss


class OccupancyAdaptor(TaskAdaptor):
    task = "occupancy"

    def forward(self, net, batch):
        return net(batch["bev"])

    def hard_loss(self, out, batch):
        return F.binary_cross_entropy_with_logits(out, batch["occupancy"], pos_weight=torch.tensor(3.0,
                                                                                                  device=out.device))

    def response_loss(self, out, teacher_out, batch, recipe):
        return soft_bce(out, teacher_out, recipe.temperature)


ADAPTORS = {"segmentation": SegmentationAdaptor, "detection": DetectionAdaptor, "occupancy": OccupancyAdaptor}


def adaptor_for(task: str) -> TaskAdaptor:
    if task not in ADAPTORS:
        raise ConfigError(f"unknown task '{task}': one of {sorted(ADAPTORS)}")
    return ADAPTORS[task]()


# ---------------------------------------------------------------------------- distiller


class _Tap:
    """Keeps the last output of one module."""

    def __init__(self, module: nn.Module):
        self.value: Optional[torch.Tensor] = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.value = output[0] if isinstance(output, (tuple, list)) else output


def _module(net: nn.Module, path: str) -> nn.Module:
    try:
        return net.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in net.named_modules() if n and n.count(".") < 2]
        raise ConfigError(f"no module '{path}' in {type(net).__name__} (e.g. {', '.join(names[:8])})") from None


class Distiller(nn.Module):
    """Student + frozen teacher + projectors. ``losses(batch)`` gives every loss term and the
    total; ``teacher=None`` trains the student alone (the hard loss only)."""

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], adaptor: TaskAdaptor,
                 recipe: DistillRecipe):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.adaptor = adaptor
        self.recipe = recipe
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        links = recipe.features if teacher is not None else ()
        self._s_taps = [_Tap(_module(student, link.student)) for link in links]
        self._t_taps = [_Tap(_module(teacher, link.teacher)) for link in links]
        self.projectors = nn.ModuleList()
        self._links = list(links)

    def _ensure_projectors(self) -> None:
        if len(self.projectors) == len(self._links):
            return
        for s_tap, t_tap in zip(self._s_taps, self._t_taps):
            s, t = s_tap.value, t_tap.value
            self.projectors.append(Projector(s.shape[1], t.shape[1], spatial=s.dim() == 4).to(s.device))

    def losses(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = self.adaptor.forward(self.student, batch)
        hard = self.adaptor.hard_loss(out, batch)
        if self.teacher is None:
            return {"hard": hard, "total": hard}
        with torch.no_grad():
            t_out = self.adaptor.forward(self.teacher, batch)
        soft = self.adaptor.response_loss(out, t_out, batch, self.recipe)
        parts = {"hard": hard, "response": soft}
        total = mix(hard, soft, self.recipe.alpha)
        self._ensure_projectors()
        for i, (link, proj) in enumerate(zip(self._links, self.projectors)):
            f = feature_loss(proj(self._s_taps[i].value), self._t_taps[i].value.detach(), link.loss)
            parts[f"feature_{link.student}"] = f
            total = total + link.weight * f
        parts["total"] = total
        return parts

    def release(self) -> None:
        """Removes the feature hooks (the student can then be copied, saved or exported)."""
        for tap in self._s_taps + self._t_taps:
            tap.handle.remove()
            tap.value = None
        self._s_taps, self._t_taps = [], []

    def trainable_parameters(self) -> List[nn.Parameter]:
        return list(self.student.parameters()) + list(self.projectors.parameters())


# ---------------------------------------------------------------------------- training


@dataclass
class Job:
    """One network trained in :func:`train_jobs`."""

    name: str
    distiller: Distiller
    lr: float
    optimizer: Optional[torch.optim.Optimizer] = None
    curve: List[Dict[str, float]] = field(default_factory=list)
    after_step: Optional[object] = None  # callable(student): e.g. re-apply a sparsity mask


def train_jobs(jobs: List[Job], batches, steps: int, device: torch.device, log_every: int = 50,
               progress: bool = True, desc: str = "distill", dist=None) -> None:
    """Trains every job on the same batches (same seeds, data and steps for each), cosine LR.

    ``batches`` yields collated training batches (:func:`training.train.collate`). With
    ``dist`` (:func:`training.distributed.setup` under ``torchrun``), each rank trains on its
    own batches and the gradients are averaged over the ranks every step, so the ranks hold
    identical weights: one step on N ranks is one step on N batches.
    """
    from tqdm import tqdm

    from airside_perception.training import distributed

    for job in jobs:
        job.distiller.to(device)
        job.distiller.student.train()
    it = batches if hasattr(batches, "__next__") else iter(batches)
    bar = tqdm(total=steps, desc=desc, disable=not progress, unit="step")
    step = 0
    while step < steps:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
        lr_scale = 0.5 * (1 + np.cos(np.pi * step / steps))
        for job in jobs:
            parts = job.distiller.losses(batch)
            if job.optimizer is None:  # projectors exist after the first forward
                if dist is not None and dist.world > 1:  # rank 0's projectors everywhere, then the step
                    distributed.broadcast_parameters(job.distiller.trainable_parameters(), dist)
                    parts = job.distiller.losses(batch)
                job.optimizer = torch.optim.AdamW(job.distiller.trainable_parameters(), lr=job.lr, weight_decay=1e-4)
            for group in job.optimizer.param_groups:
                group["lr"] = job.lr * lr_scale
            job.optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            if dist is not None:
                distributed.average_gradients(job.distiller.trainable_parameters(), dist)
            torch.nn.utils.clip_grad_norm_(job.distiller.trainable_parameters(), 10.0)
            job.optimizer.step()
            if job.after_step is not None:
                job.after_step(job.distiller.student)
            if step % log_every == 0 or step == steps - 1:
                job.curve.append({"step": step, **{k: float(v.detach()) for k, v in parts.items()}})
        step += 1
        bar.update(1)
    bar.close()
    for job in jobs:
        job.distiller.release()
        job.distiller.student.eval()


def replay(batches, size: int = 32, reuse: int = 1, seed: int = 0):
    """Batches drawn at random from a buffer of the last ``size`` simulated ones, a new one
    entering every ``reuse`` draws: where simulation, not the GPU, limits the rate, each
    scene teaches ``reuse`` times (in different steps, like epochs over a moving window).
    ``reuse=1`` passes the batches through unchanged."""
    if reuse <= 1:
        yield from batches
        return
    rng = np.random.default_rng(seed)
    buffer: List[Dict[str, torch.Tensor]] = []
    for fresh in batches:
        if len(buffer) >= size:
            buffer.pop(int(rng.integers(len(buffer))))
        buffer.append(fresh)
        yield fresh
        for _ in range(reuse - 1):
            yield buffer[int(rng.integers(len(buffer)))]


def sim_batches(batch: int, workers: int, start_seed: int = 0, randomize: bool = False, reuse: int = 1,
                colour: bool = False, rank: int = 0, world: int = 1, det_stride: int = DET_STRIDE):
    """Endless simulated training batches (the train split), as :mod:`training.train` draws them
    (``reuse`` > 1: through :func:`replay`; ``colour``: with each point's camera colour; rank
    ``rank`` of ``world`` simulates its own disjoint seeds; ``det_stride``: the detection
    targets' cell, 1 for a network with the fine head)."""
    from torch.utils.data import DataLoader

    from airside_perception.ops.bev import BevSpec
    from airside_perception.training.randomize import Randomization
    from airside_perception.training.train import SimStream, collate

    stream = SimStream(BevSpec(), start_seed, Randomization() if randomize else None, rank=rank, world=world,
                       colour=colour, det_stride=det_stride)
    loader = DataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=collate,
                        prefetch_factor=4 if workers else None, persistent_workers=workers > 0)
    return replay(iter(loader), reuse=reuse, seed=start_seed) if reuse > 1 else iter(loader)


def load_recipe(path: str) -> DistillRecipe:
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    return DistillRecipe.from_dict(data.get("distill", data), where=os.path.basename(path))


def main(argv=None) -> int:
    from airside_perception.training import checkpoint, distributed

    parser = cli.Parser(prog="airside_perception.training.distill", description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(ADAPTORS), required=True)
    parser.add_argument("--teacher", required=True, help="teacher network file (state dict or module)")
    parser.add_argument("--teacher-arch", default="teacher", help="architecture of a state-dict teacher")
    parser.add_argument("--student", help="student to start from (default: a fresh student network)")
    parser.add_argument("--student-width", type=int, help="a fresh student of this backbone width")
    parser.add_argument("--seg-mlp", type=int, nargs="*", help="a fresh segmentation student with these MLP widths")
    parser.add_argument("--recipe", required=True, help="YAML with the distillation weights (its 'distill' section)")
    parser.add_argument("--steps", type=cli.positive_int, default=1500)
    parser.add_argument("--batch", type=cli.positive_int, default=8, help="scans per step (per rank under torchrun)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", type=int, default=1, help="draws per simulated batch (replay buffer)")
    parser.add_argument("--no-control", action="store_true", help="skip the student trained alone")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        teacher = checkpoint.load_network(args.task, args.teacher, args.teacher_arch)
    except (ConfigError, OSError, RuntimeError) as exc:
        cli.fail(parser.prog, str(exc))
    from airside_perception.training import models

    torch.manual_seed(args.seed)
    if args.student:
        student = checkpoint.load_network(args.task, args.student)
    else:
        overrides = {}
        if args.student_width:
            overrides["width"] = args.student_width
        if args.seg_mlp and args.task == "segmentation":
            overrides["mlp_hidden"] = args.seg_mlp
        student = models.build(args.task, "student", **overrides)
    dist = distributed.setup()  # torchrun: one rank per GPU (NCCL) or CPU process (gloo)
    device = dist.device
    adaptor = adaptor_for(args.task)
    jobs = [Job("distilled", Distiller(copy.deepcopy(student), teacher.to(device), adaptor, recipe), args.lr)]
    if not args.no_control:
        jobs.append(Job("alone", Distiller(copy.deepcopy(student), None, adaptor, recipe), args.lr))
    if dist.rank == 0:
        os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    train_jobs(jobs, sim_batches(args.batch, args.workers, args.seed, reuse=args.reuse, rank=dist.rank,
                                 world=dist.world), args.steps, device, progress=dist.rank == 0, dist=dist)
    if dist.rank != 0:  # the ranks hold the same weights: rank 0 writes them
        dist.close()
        return 0
    for job in jobs:
        checkpoint.save_network(job.distiller.student, os.path.join(args.out_dir, f"{args.task}-{job.name}.pt"))
        with open(os.path.join(args.out_dir, f"{args.task}-{job.name}.curve.json"), "w") as fh:
            json.dump(job.curve, fh)
    print(f"{len(jobs)} students x {args.steps} steps on {dist.world} rank(s) in {time.time() - start:.0f} s "
          f"-> {args.out_dir}", flush=True)
    dist.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
