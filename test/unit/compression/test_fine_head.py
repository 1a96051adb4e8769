"""Detection at 0.4 m: the fine head, its targets, its packaging and its compress step."""

import os

import numpy as np
import pytest
import torch

from airside_perception import classes
from airside_perception.compression import recipe
from airside_perception.errors import ConfigError
from airside_perception.ops.bev import BevSpec
from airside_perception.ops.detection import DecodeParams, decode_centerpoint
from airside_perception.ota.package import package_version
from airside_perception.pipelines import store
from airside_perception.training import distill, export, models, targets

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
PERSON = classes.DETECTION_CLASS_NAMES.index("person")


def _logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))[None].astype(np.float32)


@pytest.mark.parametrize("stride", [1, 2])
def test_targets_decode_back_to_their_boxes(stride):
    """Targets at either stride, decoded as if a network had output them, give back the boxes."""
    spec = BevSpec()
    boxes = np.array([[3.25, -2.3, 0.9, 0.6, 0.6, 1.8, 0.0], [3.7, -2.3, 0.9, 0.6, 0.6, 1.8, 0.0],
                      [-10.2, 7.7, 1.0, 4.5, 1.9, 1.6, 0.7]], np.float32)
    labels = np.array([classes.CLASS_IDS["person"], classes.CLASS_IDS["person"], classes.CLASS_IDS["vehicle"]])
    heat, reg, mask = targets.detection_targets(boxes, labels, np.array([50, 50, 400]), spec, stride)
    assert heat.shape == (len(classes.DETECTION_CLASS_NAMES), spec.size // stride, spec.size // stride)
    params = DecodeParams(0.5, 50, 0.2, spec.half_extent_m, spec.resolution_m * stride)
    out = decode_centerpoint(_logits(heat), reg[None], params)
    persons = out.boxes[out.labels == PERSON]
    # two persons 0.45 m apart: one 0.8 m cell holds both centres (one survives), 0.4 m cells one each
    assert len(persons) == (2 if stride == 1 else 1)
    for b in persons:
        assert np.min(np.hypot(*(boxes[:2, :2] - b[:2]).T)) < 1e-4
    vehicle = out.boxes[out.labels == classes.DETECTION_CLASS_NAMES.index("vehicle")]
    assert np.allclose(vehicle[0], boxes[2], atol=1e-4)


def test_fine_head_network_exports_and_packages_at_stride_one(tmp_path):
    torch.manual_seed(0)
    net = models.build("detection", width=8)
    coarse_params = models.count_params(net)
    models.with_fine_head(net, 8)
    assert net.stride == 1 and models.count_params(net) > coarse_params
    with pytest.raises(ValueError, match="fine head already"):
        models.with_fine_head(net, 8)
    heat, reg = net(torch.rand(1, 8, 256, 256))
    assert heat.shape == (1, 5, 256, 256) and reg.shape == (1, 8, 256, 256)
    path = str(tmp_path / "det.onnx")
    export.export_onnx(net.eval(), "detection", path)
    manifest = package_version(path, "detection", "9.0.0", str(tmp_path), with_golden=False)
    assert manifest.postprocessing["stride"] == 1
    engine = store.open_engine(manifest, "onnxruntime", 1)
    assert engine.decode.cell_m == pytest.approx(0.4)
    from airside_perception.ops.bev import encode
    from airside_perception.sim.world import make_scan

    result = engine.run(encode(make_scan(110_000).points, engine.bev_spec))
    assert np.isfinite(result.boxes.boxes).all() and 0.0 <= result.confidence <= 1.0
    engine.close()
    # the shipped 0.8 m detectors keep stride 2
    coarse = models.build("detection", width=8).eval()
    export.export_onnx(coarse, "detection", path)
    assert package_version(path, "detection", "9.0.1", str(tmp_path), with_golden=False).postprocessing["stride"] == 2


def test_finer_student_learns_from_a_coarse_teacher():
    """Response loss of a 0.4 m student under a 0.8 m teacher: its strongest sub-cell per teacher
    cell is compared; zero when they agree, and gradients reach the fine head."""
    adaptor = distill.adaptor_for("detection")
    rec = distill.DistillRecipe()
    t_heat = torch.randn(1, 5, 4, 4)
    s_heat = torch.nn.functional.interpolate(t_heat, scale_factor=2.0, mode="nearest").requires_grad_()
    reg_t, reg_s = torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 8, 8)
    assert adaptor.response_loss((s_heat, reg_s), (t_heat, reg_t), {}, rec).item() == pytest.approx(0.0, abs=1e-6)
    loss = adaptor.response_loss((s_heat * 0.5, reg_s), (t_heat, reg_t), {}, rec)
    loss.backward()
    assert loss.item() > 0 and s_heat.grad.abs().sum() > 0


@pytest.mark.parametrize("head, needle", [
    ({"stride": 2}, "head.stride"), ({"width": 2}, "head.width"), ({"widht": 8}, "head.widht")])
def test_bad_head_steps_fail_naming_the_key(head, needle):
    base = {"task": "detection", "base": {"version": "1.0.0", "checkpoint": "models/detection-1.0.0.pt"},
            "distill": {"steps": 1}}
    with pytest.raises(ConfigError, match=needle):
        recipe.parse({**base, "head": head}, "r.yaml")
    with pytest.raises(ConfigError, match="needs a distill step"):
        recipe.parse({**base, "head": {"width": 8}, "distill": None}, "r.yaml")
    with pytest.raises(ConfigError, match="only detection"):
        recipe.parse({**base, "task": "occupancy", "head": {"width": 8}}, "r.yaml")


def test_compress_prunes_refines_the_head_and_trains_it_at_0_4_m(tmp_path):
    """prune -> head -> distill on the shipped detector (its own 0.8 m network as the teacher):
    the result is pruned, outputs at 0.4 m, and a rerun finds every step done."""
    from airside_perception.compression.pipeline import Compressor

    shipped = recipe.load(os.path.join(ROOT, "config", "compression", "detection-2.1.0.yaml"))
    assert shipped.steps() == ["prune", "head", "distill"] and shipped.head.width == 16
    r = recipe.parse({"task": "detection", "teacher": "base",
                      "base": {"version": "1.0.0", "checkpoint": os.path.join(ROOT, "models", "detection-1.0.0.pt")},
                      "prune": {"method": "magnitude", "ratio": 0.25}, "head": {"width": 8},
                      "distill": {"steps": 2, "batch": 1, "control": False,
                                  "features": [{"student": "backbone", "teacher": "backbone"}]}}, "r.yaml")
    c = Compressor(r, "9.9.9", str(tmp_path / "engines"), work_dir=str(tmp_path / "work"), workers=0,
                   progress=False, log=lambda *_: None)
    net = c.train()
    assert c.state["done"] == ["prune", "head", "distill"]
    assert c.state["steps"]["head"]["width"] == 8
    assert net.stride == 1 and net.fine.point[0].out_channels == 8
    assert net.backbone.stem[0][0].out_channels < 24  # pruned before the head was added
    heat, _ = net(torch.rand(1, 8, 256, 256))
    assert heat.shape[-1] == 256 and torch.isfinite(heat).all()
    again = Compressor(r, "9.9.9", str(tmp_path / "engines"), work_dir=str(tmp_path / "work"), workers=0,
                       progress=False, log=lambda *_: None).train()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), net.state_dict().values()))
