"""Reference networks (PyTorch; offline tools only, never imported on the vehicle).

All three read the shared BEV raster ``(1, 8, S, S)`` of :mod:`airside_perception.ops.bev`
(S = 256, 0.4 m cells) and use only plain ONNX operators (Conv, Relu, Resize, Gather, Add,
Concat, MatMul): TensorRT and its DLA build them without plugins.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

N_HEIGHT_BINS = 4  # occupancy channel-to-height: 0.1-0.7-1.3-1.9-2.5 m above the apron
DET_REG_CHANNELS = 8  # dx, dy, z, log l, log w, log h, sin yaw, cos yaw


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BevBackbone(nn.Module):
    """A three-scale encoder-decoder: (B, 8, S, S) -> (B, w1, S/2, S/2) at 0.8 m."""

    def __init__(self, w1: int = 24, w2: int = 48, w3: int = 64, cin: int = 8):
        super().__init__()
        self.out_channels = w1
        self.stem = nn.Sequential(conv(cin, w1, 2), conv(w1, w1))
        self.down1 = nn.Sequential(conv(w1, w2, 2), conv(w2, w2))
        self.down2 = nn.Sequential(conv(w2, w3, 2), conv(w3, w3), conv(w3, w3))
        self.lat2 = nn.Conv2d(w3, w2, 1)
        self.fuse1 = conv(w2, w2)
        self.lat1 = nn.Conv2d(w2, w1, 1)
        self.fuse0 = conv(w1, w1)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        f0 = self.stem(bev)  # (B, w1, S/2, S/2)
        f1 = self.down1(f0)  # (B, w2, S/4, S/4)
        f2 = self.down2(f1)  # (B, w3, S/8, S/8)
        f1 = self.fuse1(f1 + F.interpolate(self.lat2(f2), scale_factor=2.0, mode="nearest"))
        return self.fuse0(f0 + F.interpolate(self.lat1(f1), scale_factor=2.0, mode="nearest"))


class SegmentationNet(nn.Module):
    """Per-point classifier: BEV context gathered at each point, plus the point's own features.

    inputs: bev (1, 8, S, S); point_cells (K,) int64 flat index into S*S; point_features (K, 5),
    or (K, 5 + point_extra) for a network that also takes per-point camera colour (a cross-modal
    teacher: RGB and seen, ``point_inputs`` = 9).
    output: point_logits (K, C).
    """

    def __init__(self, n_classes: int, size: int = 256, width: int = 24, mlp_hidden=(48, 32),
                 backbone: Optional[nn.Module] = None, point_extra: int = 0):
        super().__init__()
        self.size = size
        self.point_inputs = 5 + point_extra
        self.backbone = backbone if backbone is not None else BevBackbone(width, 2 * width, 64)
        width = getattr(self.backbone, "out_channels", width)
        layers, cin = [], width + 8 + self.point_inputs
        for hidden in mlp_hidden:  # the per-point MLP runs on every point: its width is the cost
            layers += [nn.Linear(cin, hidden), nn.ReLU(inplace=True)]
            cin = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(cin, n_classes))

    def forward(self, bev: torch.Tensor, point_cells: torch.Tensor, point_features: torch.Tensor) -> torch.Tensor:
        s = self.size
        ctx = self.backbone(bev)  # (1, w, S/2, S/2)
        w = ctx.shape[1]
        # cell indices are never negative: truncating division equals floor division, and it
        # exports as one integer Div where floor division needs Div, Mod and Where (on 110k
        # points the exported model ran 12 % faster, with the same outputs)
        iy = torch.div(point_cells, s, rounding_mode="trunc")
        ix = point_cells - iy * s
        half_cells = torch.div(iy, 2, rounding_mode="trunc") * (s // 2) + torch.div(ix, 2, rounding_mode="trunc")
        ctx_pts = ctx.reshape(w, -1).transpose(0, 1)[half_cells]  # (K, w)
        raw_pts = bev.reshape(8, -1).transpose(0, 1)[point_cells]  # (K, 8)
        return self.mlp(torch.cat([ctx_pts, raw_pts, point_features], dim=1))


class FineHead(nn.Module):
    """Detection features at 0.4 m: the backbone's (0.8 m) brought up to the input grid, joined
    with the input's own pillar statistics there, then a depthwise 3x3 convolution.

    The join is ``up(A f) + B bev`` (each 1x1 convolution with its batch norm, folded at
    export), equal to a 1x1 convolution of the concatenation ``[up(f), bev]`` with A's work done
    at 0.8 m: measured in ONNX Runtime on two threads, the concatenation at 0.4 m added 3.6 ms
    to a pruned detector, this form 0.9 ms.
    """

    def __init__(self, width: int, fine_width: int, bev_channels: int = 8):
        super().__init__()
        self.coarse = nn.Sequential(nn.Conv2d(width, fine_width, 1, bias=False), nn.BatchNorm2d(fine_width))
        self.point = nn.Sequential(nn.Conv2d(bev_channels, fine_width, 1, bias=False), nn.BatchNorm2d(fine_width))
        self.mix = nn.Sequential(nn.Conv2d(fine_width, fine_width, 3, 1, 1, groups=fine_width, bias=False),
                                 nn.BatchNorm2d(fine_width), nn.ReLU(inplace=True))

    def forward(self, f: torch.Tensor, bev: torch.Tensor) -> torch.Tensor:
        return self.mix(F.relu(F.interpolate(self.coarse(f), scale_factor=2.0, mode="nearest") + self.point(bev)))


class DetectionNet(nn.Module):
    """CenterPoint head on the BEV backbone: class heatmaps and box regression at 0.8 m, or at
    0.4 m with a fine head (``fine_width`` > 0, :class:`FineHead`).

    input: bev (1, 8, S, S). outputs: heatmap (1, C, S/k, S/k) logits; regression (1, 8, S/k, S/k),
    k = ``stride`` (2, or 1 with the fine head). At 0.8 m one cell holds one centre and the 3x3
    peak check keeps one of two persons closer than two cells (1.6 m).
    """

    def __init__(self, n_classes: int, width: int = 24, backbone: Optional[nn.Module] = None, shared_layers: int = 1,
                 fine_width: int = 0):
        super().__init__()
        self.backbone = backbone if backbone is not None else BevBackbone(width, 2 * width, 64)
        width = getattr(self.backbone, "out_channels", width)
        self.shared = nn.Sequential(*[conv(width, width) for _ in range(shared_layers)]) if shared_layers > 1 \
            else conv(width, width)
        self.stride = 2
        self.fine: Optional[nn.Module] = None
        self._heads(n_classes, width, fine_width)

    def _heads(self, n_classes: int, width: int, fine_width: int) -> None:
        if fine_width > 0:
            self.stride = 1
            self.fine = FineHead(width, fine_width)
            width = fine_width
        self.heatmap = nn.Conv2d(width, n_classes, 1)
        self.regression = nn.Conv2d(width, DET_REG_CHANNELS, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1, as in CenterPoint

    def forward(self, bev: torch.Tensor):
        f = self.shared(self.backbone(bev))
        fine = getattr(self, "fine", None)  # networks saved before the fine head existed lack it
        if fine is not None:
            f = fine(f, bev)
        return self.heatmap(f), self.regression(f)


def with_fine_head(net: DetectionNet, fine_width: int) -> DetectionNet:
    """``net`` (trained, pruned or not) with new, untrained heads at 0.4 m: its backbone and
    shared layer are kept; the heatmap and regression layers are replaced."""
    if getattr(net, "fine", None) is not None:
        raise ValueError("the network has a fine head already")
    net._heads(net.heatmap.out_channels, net.heatmap.in_channels, fine_width)
    return net


class OccupancyNet(nn.Module):
    """FlashOcc-style: 2D convolutions only, then channel-to-height.

    input: bev (1, 8, S, S). output: occupancy_logits (1, Z, S, S), Z height bins.
    """

    def __init__(self, width: int = 16, backbone: Optional[nn.Module] = None, refine_width: int = 16):
        super().__init__()
        self.backbone = backbone if backbone is not None else BevBackbone(width, 2 * width, 48)
        width = getattr(self.backbone, "out_channels", width)
        self.refine = nn.Sequential(nn.Conv2d(width + 8, refine_width, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(refine_width, N_HEIGHT_BINS, 1))

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        ctx = F.interpolate(self.backbone(bev), scale_factor=2.0, mode="nearest")
        return self.refine(torch.cat([ctx, bev], dim=1))


class BevAttention(nn.Module):
    """One pre-norm transformer block over the cells of a coarse BEV map (global context:
    an aircraft spans 40 m, more than the convolutions see)."""

    def __init__(self, channels: int, tokens: int, heads: int = 8):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, tokens, channels))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2) + self.pos
        y = self.norm1(t)
        t = t + self.attn(y, y, y, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class TeacherBackbone(nn.Module):
    """The teachers' encoder: a wider, deeper three-scale U-Net with a transformer block at
    the coarsest scale. (B, 8, S, S) -> (B, w1, S/2, S/2), like :class:`BevBackbone`, about
    20x its parameters and 10x its compute. GPU-only: never built for the vehicle."""

    def __init__(self, w1: int = 64, w2: int = 128, w3: int = 256, cin: int = 8, size: int = 256):
        super().__init__()
        self.out_channels = w1
        self.stem = nn.Sequential(conv(cin, w1, 2), conv(w1, w1), conv(w1, w1))
        self.down1 = nn.Sequential(conv(w1, w2, 2), conv(w2, w2), conv(w2, w2))
        self.down2 = nn.Sequential(conv(w2, w3, 2), conv(w3, w3), conv(w3, w3))
        self.context = BevAttention(w3, (size // 8) ** 2)
        self.lat2 = nn.Conv2d(w3, w2, 1)
        self.fuse1 = nn.Sequential(conv(w2, w2), conv(w2, w2))
        self.lat1 = nn.Conv2d(w2, w1, 1)
        self.fuse0 = nn.Sequential(conv(w1, w1), conv(w1, w1))

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        f0 = self.stem(bev)
        f1 = self.down1(f0)
        f2 = self.context(self.down2(f1))
        f1 = self.fuse1(f1 + F.interpolate(self.lat2(f2), scale_factor=2.0, mode="nearest"))
        return self.fuse0(f0 + F.interpolate(self.lat1(f1), scale_factor=2.0, mode="nearest"))


#: Constructor arguments of every architecture the toolchain builds, by name.
ARCHITECTURES: Dict[str, Dict[str, dict]] = {
    "student": {"segmentation": {"width": 24, "mlp_hidden": [48, 32]}, "detection": {"width": 24},
                "occupancy": {"width": 16}},
    "teacher": {"segmentation": {"mlp_hidden": [128, 128]}, "detection": {"shared_layers": 2},
                "occupancy": {"refine_width": 64}},
    # the cross-modal teacher: the segmentation teacher that also reads each point's camera colour
    "teacher_colour": {"segmentation": {"mlp_hidden": [128, 128], "point_extra": 4}},
}


def build(task: str, arch: str = "student", **overrides) -> nn.Module:
    """A fresh network for ``task``: ``arch`` "student" (the vehicle's) or "teacher"."""
    from airside_perception import classes

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}': one of {sorted(ARCHITECTURES)}")
    if task not in ARCHITECTURES[arch]:
        raise ValueError(f"architecture '{arch}' has no {task} network: {sorted(ARCHITECTURES[arch])}")
    kwargs = dict(ARCHITECTURES[arch][task], **overrides)
    if arch.startswith("teacher"):
        kwargs["backbone"] = TeacherBackbone()
    if task == "segmentation":
        kwargs["mlp_hidden"] = tuple(kwargs.get("mlp_hidden", (48, 32)))
        return SegmentationNet(len(classes.CLASS_NAMES), **kwargs)
    if task == "detection":
        return DetectionNet(len(classes.DETECTION_CLASS_NAMES), **kwargs)
    if task == "occupancy":
        return OccupancyNet(**kwargs)
    raise ValueError(f"unknown task '{task}': segmentation, detection or occupancy")


def add_point_inputs(net: SegmentationNet, extra: int) -> SegmentationNet:
    """A copy of ``net`` that also takes ``extra`` per-point inputs (camera colour), their
    weights in the first MLP layer zero: the same outputs until it is trained on them."""
    import copy

    out = copy.deepcopy(net)
    first = out.mlp[0]
    wider = nn.Linear(first.in_features + extra, first.out_features)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : first.in_features] = first.weight
        wider.bias.copy_(first.bias)
    out.mlp[0] = wider
    out.point_inputs = net.point_inputs + extra
    return out


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, task: str, n_points: int = 110_000, size: int = 256) -> int:
    """Multiply-accumulates of one forward pass on a cloud of ``n_points`` (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from airside_perception.training import export

    net = net.eval()
    inputs = export.example_inputs(task, size, n_points)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    return int(counter.get_total_flops() // 2)
