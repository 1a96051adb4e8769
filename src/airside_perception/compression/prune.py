"""Structured channel pruning with Torch-Pruning's dependency graph, plain or safety-aware.

Torch-Pruning (``MetaPruner``) follows every coupling between layers (a residual add ties
the channels of both branches, a concatenation feeds the per-point head) and removes whole
channels, so the exported ONNX graph really shrinks. The task heads are never pruned.

Importance:

- ``magnitude``: L2 norm of each channel group's weights (``GroupMagnitudeImportance``).
- ``safety``: first-order Taylor importance |w * dL/dw| (``GroupTaylorImportance``) computed
  once per loss: the whole task loss, and the loss of each safety class alone (its points, or
  its heatmap channel and boxes). A channel among the top ``protect_share`` of any safety
  class is protected (it ranks above every unprotected one); the others are ranked by the
  whole loss. Only channels unimportant to all safety classes are removed (as far as the
  ratio allows).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from airside_perception import classes
from airside_perception.training import export
from airside_perception.training.distill import adaptor_for


def head_layers(net: nn.Module, task: str) -> List[nn.Module]:
    """The output layers, never pruned (their widths are the classes and box fields)."""
    if task == "segmentation":
        return [net.mlp[-1]]
    if task == "detection":
        return [net.heatmap, net.regression]
    return [net.refine[-1]]


def class_losses(net: nn.Module, task: str, batch: Dict[str, torch.Tensor],
                 protect: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The task loss ("all") and one loss per protected class, on one training batch."""
    from airside_perception.training.train import focal_heatmap_loss

    adaptor = adaptor_for(task)
    out = adaptor.forward(net, batch)
    losses = {"all": adaptor.hard_loss(out, batch)}
    if task == "segmentation":
        labels = batch["point_labels"]
        for name in protect:
            mask = labels == classes.CLASS_NAMES.index(name)
            if mask.any():
                losses[name] = F.cross_entropy(out[mask], labels[mask])
    elif task == "detection":
        heat, reg = out
        for name in protect:
            c = classes.DETECTION_CLASS_NAMES.index(name)
            centres = (batch["heatmap"][:, c:c + 1] == 1).float()
            reg_err = ((reg - batch["regression"]).abs() * centres).sum() / centres.sum().clamp(min=1)
            losses[name] = focal_heatmap_loss(heat[:, c:c + 1], batch["heatmap"][:, c:c + 1]) + reg_err
    return losses


def accumulate_gradients(net: nn.Module, task: str, batches, protect: Sequence[str],
                         device: torch.device) -> Dict[str, Dict[nn.Parameter, torch.Tensor]]:
    """Per loss, the gradient of every parameter summed over ``batches``."""
    grads: Dict[str, Dict[nn.Parameter, torch.Tensor]] = {}
    net.train()
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        names = list(class_losses(net, task, batch, protect).keys())
        for name in names:
            net.zero_grad(set_to_none=True)
            loss = class_losses(net, task, batch, protect)[name]
            loss.backward()
            store = grads.setdefault(name, {})
            for p in net.parameters():
                if p.grad is not None:
                    store[p] = store.get(p, torch.zeros_like(p)) + p.grad.detach()
    net.zero_grad(set_to_none=True)
    return grads


class SafetyAwareImportance(tp.importance.Importance):
    """Taylor importance of the whole loss, with the channels that matter to any safety class
    protected. ``protected`` records, per group's root layer, the protected channel indices."""

    def __init__(self, grads: Dict[str, Dict[nn.Parameter, torch.Tensor]], protect: Sequence[str],
                 protect_share: float):
        self.grads = grads
        self.protect = [c for c in protect if c in grads]
        self.protect_share = protect_share
        self.taylor = tp.importance.GroupTaylorImportance()
        self.protected: Dict[nn.Module, torch.Tensor] = {}

    def _score(self, group, key: str) -> torch.Tensor:
        params = {p for dep, _ in group for p in dep.target.module.parameters(recurse=False)}
        saved = {p: p.grad for p in params}
        for p in params:
            p.grad = self.grads[key].get(p)
        try:
            return self.taylor(group)
        finally:
            for p, g in saved.items():
                p.grad = g

    @torch.no_grad()
    def __call__(self, group):
        score = self._score(group, "all")
        if score is None:
            return None
        score = score / score.max().clamp(min=1e-12)
        protected = torch.zeros_like(score, dtype=torch.bool)
        for name in self.protect:
            s = self._score(group, name)
            if s is None or not torch.isfinite(s).all() or s.max() <= 0:
                continue
            k = max(1, int(round(self.protect_share * len(s))))
            protected[torch.topk(s, k).indices] = True
        self.protected[group[0][0].target.module] = torch.nonzero(protected).flatten()
        return score + 2.0 * protected.float()  # any protected channel outranks every other one


def prune(net: nn.Module, task: str, method: str, ratio: float, batches=None, device=None,
          ratios: Dict[str, float] = None, protect: Sequence[str] = (), protect_share: float = 0.2,
          round_to: int = 4) -> Dict[str, object]:
    """Removes channels of ``net`` in place; returns what was done (parameters before/after,
    protected channels per layer for the safety method)."""
    device = device or torch.device("cpu")
    net = net.to(device)
    example = tuple(x.to(device) for x in export.example_inputs(task, 256, 512))
    if method == "safety":
        if batches is None:
            raise ValueError("safety-aware pruning needs calibration batches")
        grads = accumulate_gradients(net, task, batches, protect, device)
        importance = SafetyAwareImportance(grads, protect, protect_share)
    elif method == "magnitude":
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    else:
        raise ValueError(f"unknown pruning method '{method}': safety or magnitude")
    ratio_dict = {net.get_submodule(path): r for path, r in (ratios or {}).items()}
    before = sum(p.numel() for p in net.parameters())
    net.eval()
    pruner = tp.pruner.MetaPruner(net, example, importance=importance, pruning_ratio=ratio,
                                  pruning_ratio_dict=ratio_dict or None, ignored_layers=head_layers(net, task),
                                  round_to=round_to)
    pruner.step()
    after = sum(p.numel() for p in net.parameters())
    report: Dict[str, object] = {"method": method, "ratio": ratio, "ratios": dict(ratios or {}),
                                 "params_before": before, "params_after": after}
    if method == "safety":
        names = {m: n for n, m in net.named_modules()}
        report["protected_channels"] = {names.get(m, str(m)): idx.tolist() for m, idx in importance.protected.items()}
        report["protected_classes"] = list(importance.protect)
    return report


def channel_widths(net: nn.Module) -> Dict[str, int]:
    """Output channels / features of every convolution and linear layer (the pruned shape)."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
