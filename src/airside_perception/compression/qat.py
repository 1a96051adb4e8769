"""Quantization-aware training with PyTorch's fake-quantization operators, exported as
explicit Q/DQ ONNX.

Scheme (what TensorRT's explicit-precision INT8 build and ONNX Runtime's QDQ format both
read): weights per output channel, symmetric int8 (zero point 0, |w| max -> 127); the input
activation of each convolution and linear layer per tensor, uint8 with a zero point, its
range calibrated (min/max over calibration batches) and then frozen. Batch norms are folded
into their convolutions first, so the weights that are trained are the weights exported.
``torch.fake_quantize_per_channel_affine`` / ``_per_tensor_affine`` train with the
straight-through estimator and export to ONNX QuantizeLinear/DequantizeLinear pairs.

Mixed precision: :func:`sensitivity` quantizes one layer at a time and measures how far the
outputs move from the float network's; the layers that cause most of the error stay float.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class FakeQuant(nn.Module):
    """A convolution or linear layer with int8 fake-quantized weights and input."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.register_buffer("act_min", torch.tensor(float("inf")))
        self.register_buffer("act_max", torch.tensor(float("-inf")))
        self.observe = False
        self.enabled = True
        self.frozen = False  # weight scales fixed (for export: they become constants)
        self.register_buffer("w_scale", torch.ones(layer.weight.shape[0]))

    def act_qparams(self) -> Tuple[torch.Tensor, torch.Tensor]:
        lo = torch.clamp(self.act_min, max=0.0)
        hi = torch.clamp(self.act_max, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zero_point = torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.int32)
        return scale, zero_point

    def weight_qparams(self) -> Tuple[torch.Tensor, torch.Tensor]:
        w = self.layer.weight
        if self.frozen:
            return self.w_scale, torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        amax = w.detach().abs().reshape(w.shape[0], -1).amax(1)
        scale = torch.clamp(amax / 127.0, min=1e-8)
        return scale, torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            self.act_min = torch.minimum(self.act_min, x.detach().min())
            self.act_max = torch.maximum(self.act_max, x.detach().max())
        if not self.enabled or not torch.isfinite(self.act_min):
            return self.layer(x)
        scale, zp = self.act_qparams()
        x = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)
        ws, wz = self.weight_qparams()
        w = torch.fake_quantize_per_channel_affine(self.layer.weight, ws, wz, 0, -128, 127)
        if isinstance(self.layer, nn.Conv2d):
            c = self.layer
            return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)
        return F.linear(x, w, self.layer.bias)


@torch.no_grad()
def freeze(net: nn.Module) -> None:
    """Fixes every weight scale at its current value (before export)."""
    for m in fake_quant_layers(net).values():
        m.frozen = False
        m.w_scale = m.weight_qparams()[0].clone()
        m.frozen = True


def fold_batch_norms(net: nn.Module) -> int:
    """Folds every BatchNorm2d that directly follows a Conv2d in a Sequential; returns the count."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in list(net.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (n1, m1), (n2, m2) in zip(children, children[1:]):
            if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                setattr(module, n1, fuse_conv_bn_eval(m1.eval(), m2.eval()))
                setattr(module, n2, nn.Identity())
                folded += 1
    return folded


def quantizable(net: nn.Module) -> List[str]:
    return [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def wrap(net: nn.Module, keep_float: Sequence[str] = ()) -> List[str]:
    """Replaces each quantizable layer not in ``keep_float`` by :class:`FakeQuant`; returns the
    wrapped paths."""
    wrapped = []
    for path in quantizable(net):
        if path in keep_float:
            continue
        parent_path, _, name = path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        setattr(parent, name, FakeQuant(getattr(parent, name)))
        wrapped.append(path)
    return wrapped


def fake_quant_layers(net: nn.Module) -> Dict[str, FakeQuant]:
    return {n: m for n, m in net.named_modules() if isinstance(m, FakeQuant)}


@torch.no_grad()
def calibrate(net: nn.Module, run: Callable[[nn.Module, dict], object], batches) -> None:
    """Activation ranges over ``batches`` (float network: quantization off while observing)."""
    layers = fake_quant_layers(net).values()
    for m in layers:
        m.observe, m.enabled = True, False
    net.eval()
    for batch in batches:
        run(net, batch)
    for m in layers:
        m.observe, m.enabled = False, True


def output_error(reference, output) -> float:
    """Mean squared difference of two forward outputs (tensors or tuples of tensors)."""
    ref = reference if isinstance(reference, (tuple, list)) else (reference,)
    out = output if isinstance(output, (tuple, list)) else (output,)
    return float(sum(F.mse_loss(o.float(), r.float()) for o, r in zip(out, ref)))


@torch.no_grad()
def sensitivity(net: nn.Module, run: Callable[[nn.Module, dict], object], batches) -> Dict[str, float]:
    """Output error of the network with only one layer quantized, for every wrapped layer
    (``net`` wrapped and calibrated)."""
    layers = fake_quant_layers(net)
    net.eval()
    for m in layers.values():
        m.enabled = False
    reference = [run(net, b) for b in batches]
    errors = {}
    for name, m in layers.items():
        m.enabled = True
        errors[name] = sum(output_error(r, run(net, b)) for r, b in zip(reference, batches)) / len(batches)
        m.enabled = False
    for m in layers.values():
        m.enabled = True
    return errors


def choose_float_layers(errors: Dict[str, float], max_layers: int, min_share: float) -> List[str]:
    """The layers (at most ``max_layers``) that alone cause at least ``min_share`` of the
    summed single-layer error, most sensitive first."""
    total = sum(errors.values()) or 1.0
    ranked = sorted(errors.items(), key=lambda kv: -kv[1])
    return [name for name, e in ranked[:max_layers] if e / total >= min_share]


def unwrap(net: nn.Module, names: Sequence[str]) -> None:
    """Puts the float layer back for each of ``names``."""
    for path in names:
        parent_path, _, name = path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        fq = getattr(parent, name)
        if isinstance(fq, FakeQuant):
            setattr(parent, name, fq.layer)


def count_qdq(onnx_path: str) -> Dict[str, int]:
    """QuantizeLinear / DequantizeLinear nodes and per-channel (axis) weight scales in a model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    q = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    dq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear")
    per_channel = 0
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = inits.get(n.input[1], consts.get(n.input[1]))
            if scale is not None and scale.ndim == 1 and scale.size > 1:
                per_channel += 1
    return {"quantize": q, "dequantize": dq, "per_channel": per_channel}
