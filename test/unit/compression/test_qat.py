"""QAT export: Q/DQ pairs with per-channel weight scales, and ONNX Runtime agrees with the
fake-quantized PyTorch network."""

import numpy as np
import onnxruntime as ort
import torch

from airside_perception.compression import qat
from airside_perception.training import export, models


def _net():
    torch.manual_seed(0)
    net = models.build("segmentation", width=8, mlp_hidden=[16]).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net


def _inputs(n=2000):
    g = torch.Generator().manual_seed(1)
    bev = torch.rand(1, 8, 256, 256, generator=g)
    cells = torch.randint(0, 256 * 256, (n,), generator=g)
    return bev, cells, torch.rand(n, 5, generator=g)


def test_folding_keeps_the_float_outputs():
    net = _net()
    x = _inputs()
    with torch.no_grad():
        ref = net(*x)
        assert qat.fold_batch_norms(net) == 9
        assert torch.allclose(net(*x), ref, atol=1e-4)


def test_qdq_export_matches_fake_quant_pytorch(tmp_path):
    net = _net()
    qat.fold_batch_norms(net)
    wrapped = qat.wrap(net, keep_float=["mlp.4"])
    assert "mlp.4" not in wrapped and len(wrapped) == 13
    x = _inputs()
    qat.calibrate(net, lambda n, b: n(*b), [x])
    qat.freeze(net)
    with torch.no_grad():
        fake = net(*x).numpy()
        for m in qat.fake_quant_layers(net).values():
            m.enabled = False
        float_out = net(*x).numpy()
        for m in qat.fake_quant_layers(net).values():
            m.enabled = True
    path = str(tmp_path / "q.onnx")
    export.export_onnx(net, "segmentation", path)
    counts = qat.count_qdq(path)
    assert counts["quantize"] == counts["dequantize"] == 2 * len(wrapped)
    assert counts["per_channel"] == 2 * len(wrapped)  # each weight's Q and DQ carry per-channel scales
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"bev": x[0].numpy(), "point_cells": x[1].numpy(), "point_features": x[2].numpy()})[0]
    scale = np.abs(fake).max()
    # tolerance: ONNX Runtime may run the Q/DQ pattern as integer kernels, whose rounding of
    # the requantized sums differs from float fake quantization by about one step
    assert np.abs(out - fake).mean() < 0.01 * scale
    assert (out.argmax(1) == fake.argmax(1)).mean() > 0.98
    assert np.abs(fake - float_out).max() > 0, "quantization changed the outputs at all"


def test_sensitivity_picks_the_layer_that_moves_the_outputs_most():
    errors = {"a": 0.5, "b": 0.05, "c": 0.3, "d": 0.01}
    assert qat.choose_float_layers(errors, 2, 0.2) == ["a", "c"]
    assert qat.choose_float_layers(errors, 1, 0.2) == ["a"]
    assert qat.choose_float_layers(errors, 2, 0.9) == []
