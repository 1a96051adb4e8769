import os
import shutil

import pytest
import yaml

from airside_perception.engines.manifest import load_manifest
from airside_perception.errors import ManifestError, ModelLoadError
from airside_perception.pipelines import store

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


@pytest.fixture
def version_copy(tmp_path):
    dst = tmp_path / "detection" / "2.0.0"
    shutil.copytree(os.path.join(ENGINES, "detection", "1.0.0"), dst)
    return dst


def _edit(version_dir, fn):
    path = version_dir / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def test_shipped_versions_load_and_verify():
    for task in ("segmentation", "detection", "occupancy"):
        m = store.load_version(ENGINES, task, "1.0.0")
        assert m.task == task and m.version == "1.0.0" and len(m.sha256) == 64
        assert m.metrics, f"{task} manifest records no measured metrics"


def test_corrupt_model_is_refused_naming_the_file(version_copy):
    with open(version_copy / "model.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00garbage\x00")
    with pytest.raises(ManifestError, match=r"model\.onnx: sha256 .* does not match"):
        load_manifest(str(version_copy))


def test_checksum_mismatch_in_manifest(version_copy):
    _edit(version_copy, lambda d: d["model"].__setitem__("sha256", "0" * 64))
    with pytest.raises(ManifestError, match="does not match the manifest's 0000"):
        load_manifest(str(version_copy))


def test_missing_key_and_bad_format_version(version_copy):
    _edit(version_copy, lambda d: d.pop("preprocessing"))
    with pytest.raises(ManifestError, match="missing key 'preprocessing'"):
        load_manifest(str(version_copy))
    _edit(version_copy, lambda d: d.update(preprocessing={}, format_version=9))
    with pytest.raises(ManifestError, match="format_version 9 is not supported"):
        load_manifest(str(version_copy))


def test_not_yaml(version_copy):
    (version_copy / "manifest.yaml").write_text("task: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(str(version_copy))


def test_inputs_that_differ_from_the_model_are_named(version_copy):
    _edit(version_copy, lambda d: d["inputs"][0].__setitem__("shape", [1, 8, 128, 128]))
    manifest = load_manifest(str(version_copy))
    with pytest.raises(ModelLoadError, match=r"input 'bev': expected bev \[1, 8, 128, 128\] float32, "
                                             r"found bev \[1, 8, 256, 256\] float32"):
        store.open_engine(manifest, "onnxruntime")


def test_task_must_match_its_folder(tmp_path, version_copy):
    target = tmp_path / "occupancy" / "9.9.9"
    shutil.copytree(version_copy, target)
    with pytest.raises(ManifestError, match="is for task 'detection', not 'occupancy'"):
        store.load_version(str(tmp_path), "occupancy", "9.9.9")


def test_unknown_version_lists_what_exists():
    with pytest.raises(ManifestError, match=r"versions of detection here: \['1.0.0'"):
        store.load_version(ENGINES, "detection", "7.7.7")


def test_unreadable_engines_directory_is_a_manifest_error_naming_permissions(monkeypatch):
    import builtins
    import os

    import pytest

    from airside_perception.errors import ManifestError
    from airside_perception.pipelines import store

    root = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")
    real_open = builtins.open

    def denied(path, *args, **kwargs):
        if str(path).endswith("manifest.yaml"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(ManifestError, match="cannot be read.*permissions"):
        store.load_version(root, "detection", "1.0.0")
