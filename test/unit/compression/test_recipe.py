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
