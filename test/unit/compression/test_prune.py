"""Structured pruning end to end on small networks: channels really go, the ONNX graph
shrinks and runs, protected channels survive."""

import numpy as np
import onnxruntime as ort
import torch

from airside_perception.compression import prune
from airside_perception.training import export, models
from airside_perception.training.distill import sim_batches


def _tiny(task):
    if task == "segmentation":
        return models.build(task, width=8, mlp_hidden=[16])
    return models.build(task, width=8)


def _run_onnx(path, task):
    inputs = [x.numpy() for x in export.example_inputs(task, 256, 300)]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip([i.name for i in sess.get_inputs()], inputs)))


def test_magnitude_pruning_shrinks_every_task_and_exports(tmp_path):
    for task in ("segmentation", "detection", "occupancy"):
        torch.manual_seed(0)
        net = _tiny(task).eval()
        before = prune.channel_widths(net)
        report = prune.prune(net, task, "magnitude", 0.5, round_to=1)
        after = prune.channel_widths(net)
        assert report["params_after"] < 0.5 * report["params_before"], task
        heads = {n for n, m in net.named_modules() if m in prune.head_layers(net, task)}
        shrunk = [n for n in before if n not in heads and after[n] < before[n]]
        assert len(shrunk) >= 5, (task, before, after)
        assert all(after[n] == before[n] for n in heads), "heads keep their classes"
        path = str(tmp_path / f"{task}.onnx")
        export.export_onnx(net, task, path)
        outputs = _run_onnx(path, task)
        assert all(np.isfinite(o).all() for o in outputs)
        assert outputs[0].shape[-1] == (9 if task == "segmentation" else outputs[0].shape[-1])


def test_safety_pruning_keeps_the_protected_channels():
    torch.manual_seed(0)
    net = _tiny("segmentation")
    batches = [next(sim_batches(1, 0, start_seed=5))]
    stem_before = net.backbone.stem[0][0].weight.detach().clone()
    report = prune.prune(net, "segmentation", "safety", 0.5, batches, protect=("person", "cone"), protect_share=0.25,
                         round_to=1)
    protected = report["protected_channels"]["backbone.stem.0.0"]
    assert protected, "the stem has channels that matter to person or cone"
    stem_after = net.backbone.stem[0][0].weight.detach()
    assert stem_after.shape[0] < stem_before.shape[0]
    for i in protected:  # the first layer's filters see the raw raster: a kept one is unchanged
        assert any(torch.equal(stem_before[i], stem_after[j]) for j in range(stem_after.shape[0])), i


def test_safety_importance_ranks_protected_channels_first():
    import torch_pruning as tp

    torch.manual_seed(0)
    net = _tiny("segmentation")
    batches = [next(sim_batches(1, 0, start_seed=5))]
    grads = prune.accumulate_gradients(net, "segmentation", batches, ("person",), torch.device("cpu"))
    assert {"all", "person"} <= set(grads)
    importance = prune.SafetyAwareImportance(grads, ("person",), 0.25)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=export.example_inputs("segmentation", 256, 64))
    group = dg.get_pruning_group(net.backbone.stem[0][0], tp.prune_conv_out_channels, idxs=list(range(8)))
    scores = importance(group)
    kept = importance.protected[net.backbone.stem[0][0]]
    assert len(kept) == 2
    others = [i for i in range(8) if i not in kept.tolist()]
    assert scores[kept].min() > scores[others].max()


def test_point_mlp_alone_pruned_to_chosen_widths(tmp_path):
    """Per-layer ratios with a global ratio of 0 (how segmentation 2.2.0's point MLP was narrowed):
    only the named layers lose channels, to the widths asked for, and the network still exports,
    folds and runs."""
    import onnx

    from airside_perception.tools.graph_fold import fold_point_head

    torch.manual_seed(0)
    net = models.build("segmentation", width=8, mlp_hidden=[16, 12])
    batches = [next(sim_batches(1, 0, start_seed=5))]
    before = prune.channel_widths(net)
    prune.prune(net, "segmentation", "safety", 0.0, batches, ratios={"mlp.0": 0.25, "mlp.2": 0.5},
                protect=("person",), round_to=1)
    after = prune.channel_widths(net)
    assert (after["mlp.0"], after["mlp.2"], after["mlp.4"]) == (12, 6, 9)
    assert {n: w for n, w in after.items() if not n.startswith("mlp")} == \
        {n: w for n, w in before.items() if not n.startswith("mlp")}, "the backbone is untouched"
    raw = str(tmp_path / "seg.onnx")
    export.export_onnx(net, "segmentation", raw)
    folded, _ = fold_point_head(onnx.load(raw), 32768)
    path = str(tmp_path / "seg_folded.onnx")
    onnx.save(folded, path)
    torch.manual_seed(1)
    a = _run_onnx(raw, "segmentation")[0]
    torch.manual_seed(1)  # the same random inputs for the folded graph
    b = _run_onnx(path, "segmentation")[0]
    assert a.shape == (300, 9) and np.isfinite(b).all()
    assert np.abs(a - b).max() < 1e-3
