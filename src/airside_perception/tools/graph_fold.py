"""Exact rewrite of an exported per-point head: its first layer moved from the points onto the grid.

A point head gathers grid features at every point, concatenates them with the point's own
features and applies a fully connected layer::

    h = W [ctx[cell(p)], raw[cell(p)], f(p)] + b

The layer is linear, so the same ``h`` is ``(Wc * ctx)[cell(p)] + (Wr * raw)[cell(p)] + Wf f(p) + b``:
the grid parts become 1x1 convolutions over the grid's cells (a few tens of thousands) instead
of matrix products over every point (100k+ on a real scan), the concatenation of every point's
gathered features disappears, and only the point's own features stay a per-point product.
The outputs are the same up to float rounding (checked by :func:`max_difference`).

Offline only (``engine_tool fold``): needs ``onnx``; the vehicle runs the folded ONNX like any
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from airside_perception.errors import AirsideError


@dataclass
class FoldReport:
    gemm: str
    folded: List[Tuple[str, int, int]] = field(default_factory=list)  # (grid tensor, channels, cells)
    per_point: List[Tuple[str, int]] = field(default_factory=list)  # (tensor, width)

    def describe(self) -> str:
        grids = ", ".join(f"{n} ({c} ch, {cells} cells)" for n, c, cells in self.folded) or "none"
        points = ", ".join(f"{n} ({w})" for n, w in self.per_point) or "none"
        return f"{self.gemm}: onto the grid: {grids}; still per point: {points}"


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper, shape_inference

        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.constants: Dict[str, np.ndarray] = {k: numpy_helper.to_array(v) for k, v in self.inits.items()}
        for n in self.g.node:
            if n.op_type == "Constant":
                self.constants[n.output[0]] = numpy_helper.to_array(_attr(n, "value", None))
        self.producer = {o: n for n in self.g.node for o in n.output}
        inferred = shape_inference.infer_shapes(model)
        self.shapes: Dict[str, List[Optional[int]]] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def grid_gather(self, name: str):
        """(grid 4-D tensor, channels, H*W, index tensor) when ``name`` is Gather(Transpose(Reshape(grid,
        [c, -1])), index) along axis 0 of a (1, c, H, W) grid; else None."""
        gather = self.producer.get(name)
        if gather is None or gather.op_type != "Gather" or _attr(gather, "axis", 0) != 0:
            return None
        transpose = self.producer.get(gather.input[0])
        if transpose is None or transpose.op_type != "Transpose" or list(_attr(transpose, "perm", [])) != [1, 0]:
            return None
        reshape = self.producer.get(transpose.input[0])
        if reshape is None or reshape.op_type != "Reshape" or reshape.input[1] not in self.constants:
            return None
        target = self.constants[reshape.input[1]].reshape(-1).tolist()
        grid_shape = self.shapes.get(reshape.input[0])
        if len(target) != 2 or target[1] != -1 or not grid_shape or len(grid_shape) != 4:
            return None
        if grid_shape[0] != 1 or grid_shape[1] != target[0] or None in grid_shape:
            return None
        return reshape.input[0], int(target[0]), int(grid_shape[2] * grid_shape[3]), gather.input[1]

def fold_point_head(model, max_grid_cells: int = 1 << 62):
    """``model`` with every Concat -> Gemm point head folded; the grid inputs of at most
    ``max_grid_cells`` cells go onto the grid. Returns (new model, [FoldReport]). Raises
    AirsideError when the model has no such head."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    reports: List[FoldReport] = []
    for gemm in list(model.graph.node):
        if gemm.op_type != "Gemm" or gemm.input[0] not in g.producer:
            continue
        concat = g.producer[gemm.input[0]]
        if concat.op_type != "Concat" or _attr(concat, "axis", 0) not in (1, -1) or _attr(gemm, "transA", 0):
            continue
        if gemm.input[1] not in g.inits or (len(gemm.input) > 2 and gemm.input[2] and gemm.input[2] not in g.inits):
            continue
        w = g.constants[gemm.input[1]].astype(np.float32)
        w = w if _attr(gemm, "transB", 0) else w.T  # (out, in)
        alpha, beta = float(_attr(gemm, "alpha", 1.0)), float(_attr(gemm, "beta", 1.0))
        bias = beta * g.constants[gemm.input[2]].astype(np.float32) if len(gemm.input) > 2 and gemm.input[2] \
            else np.zeros(w.shape[0], np.float32)
        widths, parts = [], []
        for name in concat.input:
            gg = g.grid_gather(name)
            width = gg[1] if gg else (g.shapes.get(name) or [None, None])[-1]
            if width is None:
                break
            widths.append(width)
            parts.append(gg if gg and gg[2] <= max_grid_cells else None)
        if len(widths) != len(concat.input) or sum(widths) != w.shape[1] or not any(parts):
            continue
        report = FoldReport(gemm.name)
        out_ch = w.shape[0]
        new_nodes, summands, point_inputs, point_cols = [], [], [], []
        offset, tag = 0, gemm.name.strip("/").replace("/", "_")
        for k, (name, width, part) in enumerate(zip(concat.input, widths, parts)):
            cols = slice(offset, offset + width)
            offset += width
            if part is None:
                point_inputs.append(name)
                point_cols.append(cols)
                report.per_point.append((name, width))
                continue
            grid, channels, cells, index = part
            kernel = (alpha * w[:, cols]).reshape(out_ch, channels, 1, 1)
            conv_inputs = [grid, f"{tag}_fold{k}_w"]
            model.graph.initializer.append(numpy_helper.from_array(kernel.astype(np.float32), conv_inputs[1]))
            if not summands:  # the bias rides on the first grid part
                conv_inputs.append(f"{tag}_fold{k}_b")
                model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), conv_inputs[2]))
            shape_name = f"{tag}_fold{k}_shape"
            model.graph.initializer.append(numpy_helper.from_array(np.array([out_ch, -1], np.int64), shape_name))
            new_nodes += [
                helper.make_node("Conv", conv_inputs, [f"{tag}_fold{k}_grid"], name=f"{tag}_fold{k}_conv",
                                 kernel_shape=[1, 1]),
                helper.make_node("Reshape", [f"{tag}_fold{k}_grid", shape_name], [f"{tag}_fold{k}_flat"],
                                 name=f"{tag}_fold{k}_reshape"),
                helper.make_node("Transpose", [f"{tag}_fold{k}_flat"], [f"{tag}_fold{k}_cells"],
                                 name=f"{tag}_fold{k}_transpose", perm=[1, 0]),
                helper.make_node("Gather", [f"{tag}_fold{k}_cells", index], [f"{tag}_fold{k}_points"],
                                 name=f"{tag}_fold{k}_gather", axis=0),
            ]
            summands.append(f"{tag}_fold{k}_points")
            report.folded.append((grid, channels, cells))
        total = summands[0]
        for k, s in enumerate(summands[1:]):
            new_nodes.append(helper.make_node("Add", [total, s], [f"{tag}_fold_sum{k}"], name=f"{tag}_fold_add{k}"))
            total = f"{tag}_fold_sum{k}"
        if point_inputs:
            points = point_inputs[0]
            if len(point_inputs) > 1:
                points = f"{tag}_fold_point_concat"
                new_nodes.append(helper.make_node("Concat", point_inputs, [points], name=f"{tag}_fold_concat", axis=1))
            w_points = np.concatenate([w[:, c] for c in point_cols], axis=1)  # (out, in_points)
            model.graph.initializer.append(numpy_helper.from_array(w_points.astype(np.float32), f"{tag}_fold_wp"))
            new_nodes.append(helper.make_node("Gemm", [points, f"{tag}_fold_wp", total], list(gemm.output),
                                              name=gemm.name, alpha=alpha, beta=1.0, transB=1))
        else:
            new_nodes.append(helper.make_node("Identity", [total], list(gemm.output), name=gemm.name))
        position = list(model.graph.node).index(gemm)
        model.graph.node.remove(gemm)
        for k, node in enumerate(new_nodes):
            model.graph.node.insert(position + k, node)
        reports.append(report)
    if not reports:
        raise AirsideError("no point head to fold: the graph has no Gemm fed by a Concat of gathered grid features "
                           "(a segmentation network exported by engine_tool export)")
    _drop_dead(model)
    onnx.checker.check_model(model)
    return model, reports


def _drop_dead(model) -> None:
    """Removes nodes whose outputs nothing reads, and initializers no node reads."""
    outputs = {o.name for o in model.graph.output}
    changed = True
    while changed:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        changed = bool(dead)
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def max_difference(original: str, folded: str, feeds: Iterable[Dict[str, np.ndarray]]) -> float:
    """Largest absolute difference between the two models' first outputs over every input of ``feeds``."""
    import onnxruntime as ort

    a, b = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (original, folded))
    worst = 0.0
    for f in feeds:
        out_a, out_b = a.run(None, f)[0], b.run(None, f)[0]
        if out_a.size:
            worst = max(worst, float(np.max(np.abs(out_a - out_b))))
    return worst
