import numpy as np
import torch

from airside_perception.compression import sparsity
from airside_perception.training import export, models


def test_mask_keeps_the_two_largest_of_each_group_of_four():
    w = torch.tensor([[1.0, -4.0, 3.0, 0.5, 0.1, 0.2, -0.3, 0.4]])
    mask = sparsity.mask_2_4(w)
    assert mask.tolist() == [[0, 1, 1, 0, 0, 0, 1, 1]]
    assert sparsity.is_2_4(w * mask)
    assert not sparsity.is_2_4(w)


def test_conv_groups_run_along_input_channels():
    w = torch.randn(6, 8, 3, 3)
    m = sparsity.mask_2_4(w)
    assert m.shape == w.shape
    per_group = m.permute(0, 2, 3, 1).reshape(-1, 4).sum(1)
    assert torch.all(per_group == 2)
    assert sparsity.is_2_4(w * m)


def test_checker_refuses_widths_that_are_no_multiple_of_four():
    assert not sparsity.is_2_4(np.zeros((4, 6), np.float32))


def test_pattern_survives_export(tmp_path):
    torch.manual_seed(0)
    net = models.build("detection", width=8).eval()
    masks = sparsity.apply(net, [net.heatmap, net.regression])
    assert len(masks) >= 5
    for p in net.parameters():  # as a fine-tuning step would: then the mask is applied again
        p.data += 0.01
    sparsity.reapply(net, masks)
    path = str(tmp_path / "d.onnx")
    export.export_onnx(net, "detection", path)
    report = sparsity.check_onnx(path)
    body = {k: v for k, v in report.items() if not k.startswith(("heatmap", "regression"))}
    assert len(body) >= 5 and all(body.values()), report
    assert report["regression.weight"] is False, "the heads stay dense"
    dense = models.build("detection", width=8).eval()
    export.export_onnx(dense, "detection", str(tmp_path / "dense.onnx"))
    assert not any(sparsity.check_onnx(str(tmp_path / "dense.onnx")).values())


def test_build_plan_enables_sparse_weights_for_a_2_4_model(tmp_path):
    from airside_perception.backends import trt_plan
    from airside_perception.ota.package import package_version

    torch.manual_seed(0)
    net = models.build("detection", width=8).eval()
    sparsity.apply(net, [net.heatmap, net.regression])
    path = str(tmp_path / "s.onnx")
    export.export_onnx(net, "detection", path)
    sparse = package_version(path, "detection", "9.0.0-sparse", str(tmp_path / "engines"), with_golden=False)
    plan = trt_plan.make_plan(sparse, "fp16", "8.6.1", "8.7")
    assert plan.sparse_weights and "--sparsity=enable" in trt_plan.trtexec_command(plan)
    export.export_onnx(models.build("detection", width=8).eval(), "detection", path)
    dense = package_version(path, "detection", "9.0.0", str(tmp_path / "engines"), with_golden=False)
    plan = trt_plan.make_plan(dense, "fp16", "8.6.1", "8.7")
    assert not plan.sparse_weights and "--sparsity=enable" not in trt_plan.trtexec_command(plan)
