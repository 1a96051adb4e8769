"""Convolutions and linear layers as low-precision GEMMs, to measure FP8 and INT8 on a GPU.

PyTorch has no FP8 or INT8 convolution on CUDA; it has the GEMMs that TensorRT's kernels are
built from: ``torch._scaled_mm`` (FP8 E4M3 on Hopper and Ada tensor cores, FP32 accumulation)
and ``torch._int_mm`` (INT8 with INT32 accumulation). :func:`lower` rewrites a network (batch
norms folded first) so that every Conv2d and Linear runs as im2col (``F.unfold``; a 1x1
stride-1 convolution is a reshape) -> GEMM -> bias -> back to NCHW, in one of

- ``fp32`` / ``fp16``: the same lowering with a float GEMM (what the lowering itself costs),
- ``fp8``: input quantized per tensor (scale = calibrated absolute maximum / 448), weight per
  output channel where ``_scaled_mm`` takes row-wise scales (else per tensor), BF16 between
  layers, the scheme of ``tools.quantize.quantize_fp8``,
- ``int8``: input per tensor (amax / 127), weight per output channel, INT32 accumulation, the
  dequantization (input scale x channel scale) in the epilogue.

Layers named in ``keep_float`` (the output heads) stay as they are in the float dtype. The
lowering is a measuring tool for GPUs without TensorRT, not a vehicle path: TensorRT fuses
im2col, quantization and epilogue into its kernels, so these times are an upper bound.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

MODES = ("fp32", "fp16", "fp8", "int8")
FP8_MAX = 448.0
INT8_MAX = 127.0


def _pad_to(n: int, multiple: int = 16) -> int:
    return (n + multiple - 1) // multiple * multiple


class LoweredGemm(nn.Module):
    """One Conv2d or Linear as a GEMM in ``mode`` (see the module docstring)."""

    def __init__(self, layer: nn.Module, mode: str, act_amax: float, float_dtype: torch.dtype,
                 rowwise_fp8: bool = True):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' is not one of {MODES}")
        self.mode = mode
        self.conv = isinstance(layer, nn.Conv2d)
        w = layer.weight.detach().float()
        if self.conv:
            self.kernel, self.stride = layer.kernel_size, layer.stride
            self.padding, self.dilation = layer.padding, layer.dilation
            self.pointwise = self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        n_out = w.shape[0]
        w2 = w.reshape(n_out, -1)
        self.k, self.n = w2.shape[1], n_out
        k_pad, n_pad = _pad_to(self.k), _pad_to(self.n)
        self.k_pad = k_pad - self.k
        padded = torch.zeros(n_pad, k_pad, device=w.device)
        padded[: self.n, : self.k] = w2
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(self.n, device=w.device)
        self.float_dtype = torch.bfloat16 if mode == "fp8" and rowwise_fp8 else float_dtype
        self.register_buffer("bias", bias.to(self.float_dtype))
        self.rowwise = False
        if mode in ("fp32", "fp16"):
            self.register_buffer("w_t", padded.t().contiguous().to(float_dtype))  # (K, N)
            return
        qmax = FP8_MAX if mode == "fp8" else INT8_MAX
        a_scale = max(float(act_amax), 1e-12) / qmax
        self.register_buffer("a_scale", torch.tensor(a_scale, device=w.device))
        if mode == "fp8":
            self.rowwise = rowwise_fp8
            if rowwise_fp8:
                w_scale = padded.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX  # (N,)
            else:
                w_scale = padded.abs().amax().clamp(min=1e-12).expand(n_pad) / FP8_MAX
            q = (padded / w_scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            self.register_buffer("w_q", q)  # (N, K) row-major: w_q.t() is the column-major B
            self.register_buffer("w_scale", w_scale.float().reshape(1, n_pad) if rowwise_fp8
                                 else w_scale[:1].float().reshape(()))
        else:
            w_scale = padded.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX
            q = torch.round(padded / w_scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
            self.register_buffer("w_q", q)
            self.register_buffer("out_scale", (w_scale[: self.n] * a_scale).float())
        self._row_scales: Dict[int, torch.Tensor] = {}

    def _rows(self, x: torch.Tensor):
        """(rows, M x K matrix) of the input, K padded to a multiple of 16."""
        if not self.conv:
            shape = x.shape[:-1]
            rows = x.reshape(-1, x.shape[-1])
            out_shape = None
        else:
            b, _, h, w = x.shape
            if self.pointwise:
                rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
                ho, wo = h, w
            else:
                cols = F.unfold(x, self.kernel, self.dilation, self.padding, self.stride)  # (B, C k k, L)
                ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1
                wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel[1] - 1) - 1) // self.stride[1] + 1
                rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            shape, out_shape = None, (b, ho, wo)
        if self.k_pad:
            rows = F.pad(rows, (0, self.k_pad))
        return rows.contiguous(), shape, out_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, shape, out_shape = self._rows(x)
        if self.mode in ("fp32", "fp16"):
            y = rows.to(self.w_t.dtype) @ self.w_t
        elif self.mode == "fp8":
            q = (rows.float() / self.a_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            if self.rowwise:
                m = q.shape[0]
                a_scale = self._row_scales.get(m)
                if a_scale is None:
                    a_scale = self._row_scales[m] = self.a_scale.reshape(1, 1).expand(m, 1).contiguous()
                y = torch._scaled_mm(q, self.w_q.t(), scale_a=a_scale, scale_b=self.w_scale,
                                     out_dtype=torch.bfloat16)
            else:
                y = torch._scaled_mm(q, self.w_q.t(), scale_a=self.a_scale, scale_b=self.w_scale,
                                     out_dtype=self.float_dtype)
        else:
            q = torch.round(rows.float() / self.a_scale).clamp(-INT8_MAX - 1, INT8_MAX).to(torch.int8)
            acc = torch._int_mm(q, self.w_q.t())
            y = acc[:, : self.n].float() * self.out_scale
        y = y[:, : self.n].to(self.float_dtype) + self.bias
        if out_shape is None:
            return y.reshape(*shape, self.n)
        b, ho, wo = out_shape
        return y.reshape(b, ho, wo, self.n).permute(0, 3, 1, 2)


def input_maxima(net: nn.Module, run: Callable[[nn.Module, object], object], batches: Iterable) -> Dict[str, float]:
    """Absolute maximum of every Conv2d / Linear input over ``batches`` (``run(net, batch)``)."""
    amax: Dict[str, float] = {}
    hooks = []
    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(_, inputs, name=name):
                amax[name] = max(amax.get(name, 0.0), float(inputs[0].detach().abs().max()))
            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for batch in batches:
            run(net, batch)
    for h in hooks:
        h.remove()
    return amax


def lower(net: nn.Module, mode: str, amax: Dict[str, float], keep_float: Sequence[str] = (),
          float_dtype: torch.dtype = torch.float16, rowwise_fp8: bool = True) -> nn.Module:
    """Replaces every Conv2d / Linear of ``net`` (batch norms already folded) not in ``keep_float``
    by a :class:`LoweredGemm`; returns ``net``. ``amax``: :func:`input_maxima`."""
    for name, module in list(net.named_modules()):
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or name in keep_float:
            continue
        parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
        setattr(parent, name.rsplit(".", 1)[-1], LoweredGemm(module, mode, amax.get(name, 0.0), float_dtype,
                                                            rowwise_fp8))
    return net

