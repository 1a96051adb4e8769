"""PyTorch -> plain ONNX (opset 17) for the three reference networks (offline tool)."""

from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import torch

OPSET = 17


def io_names(task: str) -> Tuple[List[str], List[str]]:
    if task == "segmentation":
        return ["bev", "point_cells", "point_features"], ["point_logits"]
    if task == "detection":
        return ["bev"], ["heatmap", "regression"]
    if task == "occupancy":
        return ["bev"], ["occupancy_logits"]
    raise ValueError(f"unknown task '{task}': segmentation, detection or occupancy")


def example_inputs(task: str, size: int = 256, n_points: int = 1000):
    bev = torch.rand(1, 8, size, size)
    if task == "segmentation":
        cells = torch.randint(0, size * size, (n_points,), dtype=torch.int64)
        return (bev, cells, torch.rand(n_points, 5))
    return (bev,)


def export_onnx(model: torch.nn.Module, task: str, path: str, size: int = 256) -> None:
    """Writes ``model`` to ``path``; the point count of segmentation stays dynamic."""
    inputs, outputs = io_names(task)
    dynamic: Dict[str, Dict[int, str]] = {}
    if task == "segmentation":
        dynamic = {"point_cells": {0: "n_points"}, "point_features": {0: "n_points"},
                   "point_logits": {0: "n_points"}}
    model = model.eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs(task, size), path, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic or None, opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)
