"""The point-head fold: an exact rewrite of a shipped segmentation graph (ONNX Runtime, no PyTorch)."""

import json
import os
import shutil

import onnx
import pytest

from airside_perception.errors import AirsideError
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.sim.world import make_scan
from airside_perception.tools import engine_tool
from airside_perception.tools.graph_fold import fold_point_head, max_difference

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")
SEG = os.path.join(ENGINES, "segmentation", "1.2.0", "model.onnx")


def _feeds(seed=110003):
    enc = encode(make_scan(seed, "dense").points, BevSpec())
    return {"bev": enc.bev, "point_cells": enc.point_cells, "point_features": enc.point_features}


def test_fold_moves_the_context_part_onto_the_grid_with_the_same_outputs(tmp_path):
    folded, reports = fold_point_head(onnx.load(SEG), max_grid_cells=32768)
    path = str(tmp_path / "folded.onnx")
    onnx.save(folded, path)
    (report,) = reports
    assert [(c, cells) for _, c, cells in report.folded] == [(24, 128 * 128)]
    assert [w for _, w in report.per_point] == [8, 5]  # the raw input grid (256 x 256) stays per point
    ops = [n.op_type for n in folded.graph.node]
    first = next(n for n in folded.graph.node if n.name == "/mlp/mlp.0/Gemm")
    w = next(i for i in folded.graph.initializer if i.name == first.input[1])
    assert list(w.dims) == [48, 13]  # 37 inputs per point before
    assert ops.count("Conv") == sum(1 for n in onnx.load(SEG).graph.node if n.op_type == "Conv") + 1
    feeds = _feeds()
    assert max_difference(SEG, path, [feeds]) < 1e-4
    empty = {k: v[:0] if k != "bev" else v for k, v in feeds.items()}
    assert max_difference(SEG, path, [empty]) == 0.0  # no points: an empty result, no error


def test_folding_every_grid_also_matches(tmp_path):
    folded, (report,) = fold_point_head(onnx.load(SEG))
    assert [c for _, c, _ in report.folded] == [24, 8] and [w for _, w in report.per_point] == [5]
    path = str(tmp_path / "all.onnx")
    onnx.save(folded, path)
    assert max_difference(SEG, path, [_feeds(110007)]) < 1e-4


def test_a_graph_without_a_point_head_is_refused():
    with pytest.raises(AirsideError, match="no point head"):
        fold_point_head(onnx.load(os.path.join(ENGINES, "detection", "1.0.0", "model.onnx")))


def test_engine_tool_fold_writes_a_new_version(tmp_path, capsys):
    root = tmp_path / "engines"
    shutil.copytree(os.path.join(ENGINES, "segmentation", "1.2.0"), root / "segmentation" / "1.2.0")
    assert engine_tool.main(["fold", "--task", "segmentation", "--version", "1.2.0", "--out-version", "9.9.9",
                             "--engines-dir", str(root)]) == 0
    made = root / "segmentation" / "9.9.9"
    info = json.loads((made / "fold.json").read_text())
    assert info["source_version"] == "1.2.0" and info["max_output_difference"] < 1e-3
    assert (made / "manifest.yaml").is_file() and (made / "golden.npz").is_file()
    assert not [p for p in os.listdir(root) if p.endswith(".onnx")]  # no temporary left behind
    with pytest.raises(SystemExit):
        engine_tool.main(["fold", "--task", "detection", "--version", "1.0.0", "--out-version", "9.9.9",
                          "--engines-dir", str(root)])
    assert "only segmentation" in capsys.readouterr().err
