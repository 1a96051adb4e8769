"""Network files of the offline toolchain.

Two forms: a state dict (the shipped ``models/<task>-<version>.pt``; the teachers' in fp16),
rebuilt with :func:`models.build`; or a whole pickled module (pruned networks, whose layer
widths are no longer the constructor's).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from airside_perception.training import models


def load_network(task: str, path: str, arch: str = "student", seg_mlp: Optional[Sequence[int]] = None) -> nn.Module:
    """The float32 network stored at ``path`` (raises OSError / RuntimeError when it is not one)."""
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        return obj.float().eval()
    if not isinstance(obj, dict):
        raise RuntimeError(f"{path} holds a {type(obj).__name__}, not a network or a state dict")
    if "nets" in obj:  # a training checkpoint (train_state.pt)
        arch = obj.get("arch", arch)
        obj = obj["nets"][task]
    overrides = {"mlp_hidden": list(seg_mlp)} if seg_mlp and task == "segmentation" else {}
    net = models.build(task, arch, **overrides)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in obj.items()})
    return net.eval()


def save_network(net: nn.Module, path: str) -> None:
    """The whole module: pruned widths travel with it (training hooks do not)."""
    net = net.cpu().eval()
    for m in net.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    torch.save(net, path)
