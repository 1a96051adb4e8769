import os

import pytest

from airside_perception.compression import recipe
from airside_perception.errors import ConfigError
from airside_perception.tools import engine_tool

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
BASE = {"task": "segmentation", "base": {"version": "1.2.0", "checkpoint": "models/segmentation-1.0.0.pt"}}


def test_shipped_recipes_parse():
    for task in ("segmentation", "detection", "occupancy"):
        r = recipe.load(os.path.join(ROOT, "config", "compression", f"{task}.yaml"))
        assert r.task == task and r.steps() == ["prune", "distill", "sparsity", "qat"]
    seg = recipe.load(os.path.join(ROOT, "config", "compression", "segmentation.yaml"))
    assert seg.prune.protect == ("person", "fod", "cone", "aircraft")


@pytest.mark.parametrize("data, needle", [
    ({**BASE, "prune": {"ratoi": 0.3}}, "prune.ratoi"),
    ({**BASE, "prune": {"ratio": 0.95}}, "prune.ratio"),
    ({**BASE, "prune": {"ratio": "half"}}, "prune.ratio"),
    ({**BASE, "prune": {"method": "random"}}, "prune.method"),
    ({**BASE, "prune": {"protect": ["dog"]}}, "prune.protect"),
    ({**BASE, "distill": {"steps": 0}}, "distill.steps"),
    ({**BASE, "distill": {"features": [{"student": "backbone"}]}}, "distill.features[0]"),
    ({**BASE, "distill": {"temprature": 2}}, "distill.temprature"),
    ({**BASE, "qat": {"keep_float": 3}}, "qat.keep_float"),
    ({**BASE, "sparsity": {"pattern": "1:4"}}, "sparsity.pattern"),
    ({**BASE, "quantise": {}}, "quantise"),
    ({"task": "lidar", "base": BASE["base"]}, "task"),
    ({"task": "segmentation"}, "base"),
])
def test_bad_recipes_fail_naming_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        recipe.parse(data, "r.yaml")
    assert needle in str(err.value)


def test_compress_refuses_a_bad_key_at_once(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("task: segmentation\nbase: {version: 1.2.0, checkpoint: models/segmentation-1.0.0.pt}\n"
                    "prune: {ratio: 0.5, protect_shar: 0.2}\n")
    with pytest.raises(SystemExit) as exit_:
        engine_tool.main(["compress", "--task", "segmentation", "--recipe", str(path), "--out-version", "9.9.9",
                          "--engines-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "prune.protect_shar" in capsys.readouterr().err


def test_compress_refuses_a_recipe_of_another_task(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        engine_tool.main(["compress", "--task", "detection", "--recipe",
                          os.path.join(ROOT, "config", "compression", "segmentation.yaml"), "--out-version", "9.9.9",
                          "--engines-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "segmentation recipe" in capsys.readouterr().err


def test_distill_stages_parse_inherit_and_name_their_errors():
    r = recipe.parse({**BASE, "distill": {"steps": 3000, "lr": 0.002, "alpha": 0.5, "features": [
        {"student": "backbone", "teacher": "backbone"}], "then": [{"from": "alone", "lr": 0.001, "alpha": 0.8}]}})
    first, second = r.distill.stages()
    assert (first.steps, first.lr, first.recipe.alpha, len(first.recipe.features)) == (3000, 0.002, 0.5, 1)
    assert (second.start, second.steps, second.lr, second.recipe.alpha) == ("alone", 3000, 0.001, 0.8)
    assert second.recipe.features == ()  # weights are the stage's own; steps, batch and lr carry over
    for bad, needle in (({"then": [{"from": "teacher"}]}, "then[0].from"),
                        ({"then": [{"stpes": 3}]}, "then[0].stpes"),
                        ({"then": {"steps": 3}}, "distill.then must be a list"),
                        ({"control": False, "then": [{"from": "alone"}]}, "needs the control"),
                        ({"control": False, "keep": "alone"}, "keep: alone needs the control"),
                        ({"keep": "best"}, "distill.keep"),
                        ({"then": [{"prune": {"ratios": {"mlp.0": 1.5}}}]}, "then[0].prune.ratios"),
                        ({"then": [{"prune": {"protect": ["dog"]}}]}, "then[0].prune.protect")):
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            recipe.parse({**BASE, "distill": bad}, "r.yaml")


def test_two_distill_stages_run_in_order_from_the_control(tmp_path):
    """A compress run whose distillation has a second stage from the first stage's control: both
    stages train (and report) a distilled network and its control, the step ends on the second."""
    import torch

    from airside_perception.compression.pipeline import Compressor
    from airside_perception.training import checkpoint

    r = recipe.parse({**BASE, "base": {"version": "1.2.0", "checkpoint": os.path.join(
        ROOT, "models", "segmentation-1.0.0.pt")}, "teacher": "base",
        "distill": {"steps": 2, "batch": 1, "lr": 0.001, "then": [{"from": "alone", "steps": 2, "alpha": 0.8}]}})
    c = Compressor(r, "9.9.9", str(tmp_path / "engines"), work_dir=str(tmp_path / "work"), workers=0,
                   progress=False, log=lambda *_: None)
    net = c.train()
    stages = c.state["steps"]["distill"]["stages"]
    assert [(s["from"], s["steps"], s["alpha"]) for s in stages] == [("distilled", 2, 0.5), ("alone", 2, 0.8)]
    assert all(set(s["curves"]) == {"distilled", "alone"} for s in stages)
    alone = checkpoint.load_network("segmentation", str(tmp_path / "work" / "distill-alone.pt"))
    base = checkpoint.load_network("segmentation", os.path.join(ROOT, "models", "segmentation-1.0.0.pt"))
    changed = [not torch.equal(a, b) for a, b in zip(net.state_dict().values(), base.state_dict().values())]
    assert any(changed)
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), alone.state_dict().values()))


def test_a_later_stage_prunes_its_start_and_keep_alone_returns_the_control(tmp_path):
    """The route of segmentation 2.2.0 in one recipe: a second stage that first prunes the first
    stage's control (only the per-point head), then trains it distilled and alone; with
    ``keep: alone`` the control is the step's result and the distilled twin stays beside it."""
    import torch

    from airside_perception.compression.pipeline import Compressor
    from airside_perception.training import checkpoint

    r = recipe.parse({**BASE, "base": {"version": "1.2.0", "checkpoint": os.path.join(
        ROOT, "models", "segmentation-1.0.0.pt")}, "teacher": "base",
        "distill": {"steps": 1, "batch": 1, "lr": 0.001, "keep": "alone", "then": [
            {"from": "alone", "steps": 1, "prune": {"ratio": 0.0, "ratios": {"mlp.0": 0.5}, "calibration_batches": 1,
                                                    "protect": ["person"]}}]}})
    assert r.distill.stages()[1].prune.ratios == {"mlp.0": 0.5} and r.distill.keep == "alone"
    c = Compressor(r, "9.9.9", str(tmp_path / "engines"), work_dir=str(tmp_path / "work"), workers=0,
                   progress=False, log=lambda *_: None)
    net = c.train()
    report = c.state["steps"]["distill"]
    assert report["keep"] == "alone"
    assert report["stages"][0]["pruned"] is None
    assert report["stages"][1]["pruned"]["params_after"] < report["stages"][1]["pruned"]["params_before"]
    assert net.mlp[0].out_features == 24 and net.mlp[2].in_features == 24  # 48 -> 24; the backbone as it was
    assert net.backbone.stem[0][0].out_channels == 24
    alone = checkpoint.load_network("segmentation", str(tmp_path / "work" / "distill-alone.pt"))
    twin = checkpoint.load_network("segmentation", str(tmp_path / "work" / "distill-distilled.pt"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), alone.state_dict().values()))
    assert twin.mlp[0].out_features == 24
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))


def test_an_interrupted_staged_distillation_resumes_after_its_last_finished_stage(tmp_path, monkeypatch):
    """A crash in the second stage (of a pruned start) loses only that stage: the rerun loads the
    first stage's networks from the work directory and trains the second one alone."""
    import torch

    from airside_perception.compression import pipeline
    from airside_perception.training import checkpoint

    r = recipe.parse({**BASE, "base": {"version": "1.2.0", "checkpoint": os.path.join(
        ROOT, "models", "segmentation-1.0.0.pt")}, "teacher": "base",
        "distill": {"steps": 1, "batch": 1, "lr": 0.001, "keep": "alone", "then": [
            {"from": "alone", "steps": 1, "prune": {"ratio": 0.0, "ratios": {"mlp.0": 0.5}, "calibration_batches": 1,
                                                    "protect": ["person"]}}]}})
    real = pipeline.train_jobs
    calls = []

    def crash_in_stage_2(jobs, batches, steps, device, **kw):
        calls.append(kw["desc"])
        if kw["desc"].startswith("distill 2"):
            raise KeyboardInterrupt("power cut")
        real(jobs, batches, steps, device, **kw)

    def new():
        return pipeline.Compressor(r, "9.9.9", str(tmp_path / "engines"), work_dir=str(tmp_path / "work"),
                                   workers=0, progress=False, log=lambda *_: None)

    monkeypatch.setattr(pipeline, "train_jobs", crash_in_stage_2)
    with pytest.raises(KeyboardInterrupt):
        new().train()
    assert calls == ["distill 1/2", "distill 2/2"]
    stage1 = checkpoint.load_network("segmentation", str(tmp_path / "work" / "distill-stage1-alone.pt"))
    assert stage1.mlp[0].out_features == 48  # saved before the second stage pruned its start

    monkeypatch.setattr(pipeline, "train_jobs", lambda *a, **kw: (calls.append(kw["desc"]), real(*a, **kw)))
    c = new()
    net = c.train()
    assert calls[2:] == ["distill 2/2"]  # the first stage was not trained again
    stages = c.state["steps"]["distill"]["stages"]
    assert len(stages) == 2 and stages[1]["pruned"]["params_after"] < stages[1]["pruned"]["params_before"]
    assert "distill_stages" not in c.state and c.state["done"] == ["distill"]
    assert net.mlp[0].out_features == 24
    # the second stage started from the saved first-stage control (same backbone shape) and trained it
    assert net.backbone.stem[0][0].out_channels == stage1.backbone.stem[0][0].out_channels
    assert any(not torch.equal(a, b) for a, b in zip(net.backbone.state_dict().values(),
                                                     stage1.backbone.state_dict().values()))
