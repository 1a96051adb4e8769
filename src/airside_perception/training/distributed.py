"""DistributedDataParallel set-up for the training entry points (offline tools only).

Started by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL between GPUs, gloo between CPU processes;
one GPU per rank (``LOCAL_RANK``). Started plainly: one process, nothing distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as td
from torch import nn


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a time budget ends on the same step)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item() > 0)

    def rank_report(self, data_wait_s: float, compute_s: float) -> str:
        """Each rank's seconds waiting for simulated data and computing, gathered on all."""
        t = torch.tensor([data_wait_s, compute_s], device=self.device)
        if self.world > 1:
            parts: List[torch.Tensor] = [torch.zeros_like(t) for _ in range(self.world)]
            td.all_gather(parts, t)
        else:
            parts = [t]
        return "; ".join(f"rank {i}: data wait {p[0].item():.1f}s, compute {p[1].item():.1f}s"
                         for i, p in enumerate(parts))

    def close(self) -> None:
        if self.world > 1 and td.is_initialized():
            td.barrier()
            td.destroy_process_group()


def setup() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        td.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        td.init_process_group("gloo")
        device = torch.device("cpu")
    return Dist(td.get_rank(), td.get_world_size(), device)


def average_gradients(params, dist: Dist) -> None:
    """Each parameter's gradient averaged over the ranks (what DistributedDataParallel does in
    its backward hooks), for training steps that cannot run through one wrapped forward: a
    distillation job's student and its feature projectors (created on the first batch)."""
    if dist.world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    td.all_reduce(flat)
    flat /= dist.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(params, dist: Dist) -> None:
    """Every rank takes rank 0's values (projectors drawn on each rank start equal)."""
    if dist.world == 1:
        return
    for p in params:
        td.broadcast(p.data, 0)


def wrap(module: nn.Module, dist: Dist) -> nn.Module:
    """``module`` in DistributedDataParallel where there are several ranks."""
    if dist.world == 1:
        return module
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
