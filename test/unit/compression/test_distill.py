"""Distillation losses on hand-computed cases, and a tiny distillation whose loss falls."""

import math

import pytest
import torch

from airside_perception.errors import ConfigError
from airside_perception.training import distill, models


def test_kd_kl_is_scaled_by_t_squared():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    for temp in (1.0, 4.0):
        ps = torch.softmax(s / temp, 1)[0]
        pt = torch.softmax(t / temp, 1)[0]
        expected = float((pt * (pt.log() - ps.log())).sum()) * temp * temp
        assert distill.kd_kl(s, t, temp).item() == pytest.approx(expected, rel=1e-5)
    assert distill.kd_kl(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_weighted_kd_weighs_rows():
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    only_first = distill.kd_kl(s, t, 1.0, torch.tensor([1.0, 0.0]))
    assert only_first.item() == pytest.approx(distill.kd_kl(s[:1], t[:1], 1.0).item())


def test_alpha_mixes_hard_and_soft():
    hard, soft = torch.tensor(2.0), torch.tensor(10.0)
    assert distill.mix(hard, soft, 1.0).item() == 2.0
    assert distill.mix(hard, soft, 0.0).item() == 10.0
    assert distill.mix(hard, soft, 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 10)


def test_soft_bce_and_feature_losses():
    z = torch.zeros(1, 1, 2, 2)
    assert distill.soft_bce(z, z).item() == pytest.approx(math.log(2.0), rel=1e-5)
    f = torch.randn(2, 6, 4, 4)
    assert distill.feature_loss(f, f, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert distill.feature_loss(f, -f, "cosine").item() == pytest.approx(2.0, abs=1e-5)
    assert distill.feature_loss(f, -f, "l2").item() == pytest.approx(4.0, abs=1e-4)
    coarse = torch.randn(2, 6, 2, 2)
    assert distill.feature_loss(coarse, f).dim() == 0  # resized to the teacher's map


def test_projector_shapes():
    assert distill.Projector(12, 64)(torch.randn(2, 12, 8, 8)).shape == (2, 64, 8, 8)
    assert distill.Projector(12, 64, spatial=False)(torch.randn(5, 12)).shape == (5, 64)


def test_recipe_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="distill.tempreature"):
        distill.DistillRecipe.from_dict({"tempreature": 2})
    with pytest.raises(ConfigError, match="alpha"):
        distill.DistillRecipe.from_dict({"alpha": 1.5})
    with pytest.raises(ConfigError, match="no module 'neck'"):
        distill.Distiller(models.build("occupancy", width=8), models.build("occupancy", width=8),
                          distill.adaptor_for("occupancy"),
                          distill.DistillRecipe.from_dict({"features": [{"student": "neck", "teacher": "backbone"}]}))


def test_tiny_distillation_lowers_the_students_loss():
    torch.manual_seed(0)
    batch = next(distill.sim_batches(2, 0, start_seed=11))
    teacher = models.build("segmentation", width=16, mlp_hidden=[32]).eval()
    student = models.build("segmentation", width=8, mlp_hidden=[16])
    recipe = distill.DistillRecipe.from_dict({"temperature": 2.0, "alpha": 0.5,
                                              "features": [{"student": "backbone", "teacher": "backbone"}]})
    d = distill.Distiller(student, teacher, distill.adaptor_for("segmentation"), recipe)
    job = distill.Job("s", d, 5e-3)
    distill.train_jobs([job], iter([batch] * 40), 40, torch.device("cpu"), log_every=1, progress=False)
    losses = [c["total"] for c in job.curve]
    assert {"hard", "response", "feature_backbone", "total"} <= set(job.curve[0])
    assert len(d.projectors) == 1 and d.projectors[0].proj.weight.shape[:2] == (16, 8)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert not d._s_taps, "hooks are removed after training"


def test_cross_modal_teacher_reads_colour_and_starts_as_its_lidar_teacher():
    """A teacher widened for camera colour gives its LiDAR teacher's logits until trained; the
    adaptor feeds colour to the network that takes it and LiDAR features alone to the student;
    samples and batches carry the colour of every kept point."""
    import numpy as np

    from airside_perception.ops.bev import BevSpec
    from airside_perception.training import targets
    from airside_perception.training.train import collate

    spec = BevSpec()
    samples = [targets.as_dict(targets.make_sample(s, spec, np.random.default_rng(s), colour=True)) for s in (3, 4)]
    for s in samples:
        assert s["point_colour"].shape == (len(s["point_cells"]), 4)
        assert set(np.unique(s["point_colour"][:, 3])) <= {0.0, 1.0} and s["point_colour"][:, 3].mean() > 0.5
    assert "point_colour" not in targets.as_dict(targets.make_sample(3, spec, np.random.default_rng(3)))
    batch = collate(samples)
    assert batch["point_colour"].shape[0] == batch["point_features"].shape[0]
    torch.manual_seed(0)
    lidar = models.build("segmentation", "student").eval()
    colour = models.add_point_inputs(lidar, 4).eval()
    assert colour.point_inputs == 9 and lidar.point_inputs == 5
    adaptor = distill.SegmentationAdaptor()
    with torch.no_grad():
        torch.testing.assert_close(adaptor.forward(colour, batch), adaptor.forward(lidar, batch))
        colour.mlp[0].weight[:, -4:] = 1.0  # once it uses the colour, the outputs move
        assert not torch.allclose(adaptor.forward(colour, batch), adaptor.forward(lidar, batch))
    with pytest.raises(ValueError, match="apron scenes only"):
        from airside_perception.training.randomize import Randomization

        targets.make_sample(3, spec, np.random.default_rng(3), Randomization(), colour=True)
    with pytest.raises(ValueError, match="no detection network"):
        models.build("detection", "teacher_colour")
