"""The GEMM lowering used to measure FP8 / INT8 on GPUs computes the layers it replaces."""

import copy

import torch
from torch import nn

from airside_perception.compression import lowp_gemm, qat
from airside_perception.training import models


def _detection_net():
    torch.manual_seed(0)
    net = models.build("detection").eval()
    qat.fold_batch_norms(net)
    return net


def test_float_lowering_equals_the_network():
    net = _detection_net()
    bev = torch.rand(2, 8, 64, 64)
    ref = net(bev)
    lowered = lowp_gemm.lower(copy.deepcopy(net), "fp32", {}, (), torch.float32)
    assert sum(isinstance(m, lowp_gemm.LoweredGemm) for m in lowered.modules()) > 10
    for r, g in zip(ref, lowered(bev)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_kept_layers_stay_and_linear_layers_lower():
    net = _detection_net()
    lowered = lowp_gemm.lower(copy.deepcopy(net), "fp32", {}, ("heatmap", "regression"), torch.float32)
    assert isinstance(lowered.heatmap, nn.Conv2d) and isinstance(lowered.regression, nn.Conv2d)
    lin = nn.Linear(13, 9)
    x = torch.randn(100, 13)
    torch.testing.assert_close(lowp_gemm.LoweredGemm(lin, "fp32", 0.0, torch.float32)(x), lin(x),
                               rtol=1e-5, atol=1e-5)


def test_int8_lowering_stays_within_quantization_error():
    """INT8 needs torch._int_mm (CUDA); on the CPU the quantized weights are checked instead:
    per output channel, every weight within half a step of its int8 value."""
    conv = nn.Conv2d(8, 24, 3, padding=1)
    g = lowp_gemm.LoweredGemm(conv, "int8", 2.0, torch.float32)
    w = conv.weight.detach().reshape(24, -1)
    step = w.abs().amax(dim=1) / 127
    back = g.w_q[:24, : w.shape[1]].float() * step[:, None]
    assert float(((back - w).abs() / step[:, None]).max()) <= 0.5 + 1e-4
    assert g.out_scale.shape == (24,) and torch.allclose(g.out_scale, step * (2.0 / 127))


def test_calibration_records_every_layer_input():
    net = _detection_net()
    amax = lowp_gemm.input_maxima(net, lambda n, b: n(b), [torch.rand(1, 8, 64, 64) * 3])
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(amax) == set(convs) and 2.0 < amax["backbone.stem.0.0"] <= 3.0


def test_fp8_and_int8_gemms_keep_the_shipped_detector_s_decisions():
    """torch._scaled_mm and torch._int_mm also run on the CPU: the quantized detector keeps the
    FP32 heatmap's side of 0.5 on more than 99.9 % of the cells of a simulated scan."""
    import os

    from airside_perception.ops import bev
    from airside_perception.sim.world import make_scan
    from airside_perception.training import checkpoint

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "detection-1.0.0.pt")
    net = checkpoint.load_network("detection", path).eval()
    qat.fold_batch_norms(net)
    x = torch.from_numpy(bev.encode(make_scan(110000, "default").points, bev.BevSpec()).bev)
    amax = lowp_gemm.input_maxima(net, lambda n, b: n(b), [x])
    with torch.no_grad():
        ref = net(x)[0]
        for mode, dtype in (("fp8", torch.bfloat16), ("int8", torch.float32)):
            low = lowp_gemm.lower(copy.deepcopy(net).to(dtype), mode, amax, ("heatmap", "regression"), dtype)
            heat = low(x.to(dtype))[0].float()
            assert float(((heat > 0) == (ref > 0)).float().mean()) > 0.999, mode
            assert 0.0 < float((heat - ref).abs().max()) < 5.0, mode  # quantized: close, not identical
