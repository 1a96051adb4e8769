"""2:4 structured sparsity: in every group of four consecutive input channels of a weight, at
most two are non-zero (what the sparse tensor cores of Ampere / Hopper / Orin run at twice
the dense rate, TensorRT ``BuilderFlag.SPARSE_WEIGHTS``).

The mask keeps the two largest magnitudes of each group (NVIDIA's ASP recipe: prune once
from a trained network, then fine-tune with the mask held). Groups run along the input
channels: a linear weight (O, I) by rows, a convolution weight (O, I, kh, kw) along I for each
output channel and kernel position, as TensorRT reads them. Layers whose input width is not
a multiple of 4, and the task heads, stay dense.
"""

from __future__ import annotations

from typing import Dict, Iterable

import numpy as np
import torch
from torch import nn


def _grouped(w: torch.Tensor) -> torch.Tensor:
    """(O, I[, kh, kw]) -> (-1, 4) groups of four consecutive input channels."""
    if w.dim() == 4:
        w = w.permute(0, 2, 3, 1)
    return w.reshape(-1, 4)


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 mask of ``weight`` (same shape, 0/1): the two largest |w| of each group."""
    g = _grouped(weight.detach().abs())
    keep = torch.zeros_like(g)
    keep.scatter_(1, torch.topk(g, 2, dim=1).indices, 1.0)
    if weight.dim() == 4:
        o, i, kh, kw = weight.shape
        return keep.reshape(o, kh, kw, i).permute(0, 3, 1, 2).contiguous()
    return keep.reshape(weight.shape)


def is_2_4(weight) -> bool:
    """True when every group of four input channels holds at most two non-zeros."""
    w = torch.as_tensor(np.array(weight)) if not isinstance(weight, torch.Tensor) else weight
    if w.dim() not in (2, 4) or w.shape[1] % 4:
        return False
    return bool(((_grouped(w) != 0).sum(1) <= 2).all())


def eligible(net: nn.Module, skip: Iterable[nn.Module] = ()) -> Dict[str, nn.Module]:
    """Convolution and linear layers whose input width is a multiple of 4, heads excluded."""
    skip = set(skip)
    out = {}
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in skip and m.weight.shape[1] % 4 == 0 \
                and getattr(m, "groups", 1) == 1:
            out[name] = m
    return out


def apply(net: nn.Module, skip: Iterable[nn.Module] = ()) -> Dict[str, torch.Tensor]:
    """Masks every eligible layer in place; returns the masks (to hold them while fine-tuning)."""
    masks = {}
    with torch.no_grad():
        for name, m in eligible(net, skip).items():
            masks[name] = mask_2_4(m.weight)
            m.weight.mul_(masks[name])
    return masks


def reapply(net: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            w = net.get_submodule(name).weight
            w.mul_(mask.to(w.device))


def check_onnx(path: str, min_size: int = 64) -> Dict[str, bool]:
    """Per weight initializer of a Conv/Gemm/MatMul (at least ``min_size`` values): does it
    keep the 2:4 pattern? (The check ``engine_tool build`` runs: ``trt_plan.two_four_report``.)"""
    from airside_perception.backends.trt_plan import two_four_report

    return two_four_report(path, min_size)
