"""``engine_tool compress``: a recipe's steps in order, every intermediate a version directory.

    prune -> head -> distill -> (2:4 sparsity | QAT) -> export

The float network after pruning and distillation is ``<V>``; the 2:4-sparse fine-tune
(``<V>-sparse``) and the quantization-aware INT8 network (``<V>-int8``, with ``<V>-ptq``, its
calibrated starting point, for comparison) are variants of it for the GPU and INT8 targets.

Training steps run in PyTorch (a CUDA GPU when present) and checkpoint into a work directory
(``<engines>/<task>/.compress-<V>/`` unless ``--work-dir``): ``state.json`` lists the finished
steps (and the finished stages of a staged distillation), and a rerun resumes after the last
one, here or on another machine (copy the work directory). ``--stop-after STEP`` ends after a
training step (train on a GPU machine, finish on the machine the engines are measured on). The
export phase writes, for each step, each version directory with manifest, golden inputs,
metrics on the test split and a gate report against the recipe's base version, then
``compression_report.md`` (+ .json, plots) into ``<V>``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Dict, List, Optional

import torch

from airside_perception.compression import prune as prune_mod
from airside_perception.compression import qat as qat_mod
from airside_perception.compression import sparsity as sparsity_mod
from airside_perception.compression.recipe import Recipe
from airside_perception.errors import ConfigError
from airside_perception.training import checkpoint, models
from airside_perception.training.distill import Distiller, DistillRecipe, Job, adaptor_for, sim_batches, train_jobs
from airside_perception.training.targets import DET_STRIDE

#: Seeds of the calibration batches (pruning importance, QAT ranges): apart from training's.
CALIBRATION_SEED = 90_000


class Compressor:
    def __init__(self, recipe: Recipe, out_version: str, engines_dir: str, work_dir: Optional[str] = None,
                 workers: int = 1, progress: bool = True, log=print, reuse: int = 1):
        self.recipe = recipe
        self.task = recipe.task
        self.version = out_version
        self.engines_dir = engines_dir
        self.work = work_dir or os.path.join(engines_dir, recipe.task, f".compress-{out_version}")
        self.workers = workers
        self.reuse = reuse
        self.progress = progress
        self.log = log
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        os.makedirs(self.work, exist_ok=True)
        self.state_path = os.path.join(self.work, "state.json")
        self.state = self._load_state()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> Dict:
        if os.path.isfile(self.state_path):
            with open(self.state_path) as fh:
                state = json.load(fh)
            if state.get("recipe") != os.path.abspath(self.recipe.path) and state.get("task") != self.task:
                raise ConfigError(f"{self.work} holds another compression ({state.get('task')}): pick another "
                                  "--work-dir or remove it")
            return state
        return {"task": self.task, "version": self.version, "recipe": os.path.abspath(self.recipe.path),
                "done": [], "steps": {}}

    def _save_state(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.state, fh, indent=2)
        os.replace(tmp, self.state_path)

    def _net_path(self, step: str) -> str:
        return os.path.join(self.work, f"{step}.pt")

    def _stage_path(self, k: int, name: str) -> str:
        return os.path.join(self.work, f"distill-stage{k + 1}-{name}.pt")

    def _save_stage(self, k: int, net, control, report: Dict) -> None:
        """A finished distillation stage: its networks, then its report in state.json (in that
        order, so a crash between the two repeats the stage rather than loses it)."""
        checkpoint.save_network(net, self._stage_path(k, "distilled"))
        if control is not None:
            checkpoint.save_network(control, self._stage_path(k, "alone"))
        self.state.setdefault("distill_stages", []).append(report)
        self._save_state()

    def _load_stage(self, k: int, with_control: bool):
        net = checkpoint.load_network(self.task, self._stage_path(k, "distilled"))
        control = checkpoint.load_network(self.task, self._stage_path(k, "alone")) if with_control else None
        return net, control

    # ------------------------------------------------------------------ training steps
    def _batches(self, batch: int, seed: int, net: torch.nn.Module):
        return sim_batches(batch, self.workers, seed, reuse=self.reuse, det_stride=getattr(net, "stride", DET_STRIDE))

    def _calibration(self, n: int, batch: int = 4) -> List[Dict[str, torch.Tensor]]:
        it = sim_batches(batch, min(self.workers, 4), CALIBRATION_SEED)
        return [next(it) for _ in range(n)]

    def _teacher(self, base: torch.nn.Module) -> Optional[torch.nn.Module]:
        if self.recipe.teacher == "base":
            return copy.deepcopy(base).to(self.device).eval()
        return checkpoint.load_network(self.task, self.recipe.teacher, "teacher").to(self.device).eval()

    def _prune(self, net: torch.nn.Module, p, label: str) -> Dict:
        """Prunes ``net`` in place (left on the CPU); returns the pruning report."""
        calib = self._calibration(p.calibration_batches) if p.method == "safety" else None
        report = prune_mod.prune(net, self.task, p.method, p.ratio, calib, self.device, p.ratios, p.protect,
                                 p.protect_share, p.round_to)
        net.cpu()
        self.log(f"[{label}] {p.method} pruning {p.ratio:.0%}{' ' + str(p.ratios) if p.ratios else ''}: "
                 f"{report['params_before']} -> {report['params_after']} parameters")
        return report

    def train(self, stop_after: Optional[str] = None) -> torch.nn.Module:
        """Runs the training steps not yet done; returns the last network."""
        r = self.recipe
        torch.manual_seed(0)
        base = checkpoint.load_network(self.task, r.base_checkpoint)
        net = copy.deepcopy(base)
        main = net  # the float network: pruned, then distilled; 2:4 and QAT start from it
        adaptor = adaptor_for(self.task)
        distill_recipe = r.distill.recipe if r.distill else DistillRecipe()
        for i, step in enumerate(r.steps()):
            if step in ("sparsity", "qat"):  # variants of the float network, each from it
                net = copy.deepcopy(main)
            if step in self.state["done"]:
                if step in ("prune", "head", "distill"):
                    main = checkpoint.load_network(self.task, self._net_path(step))
                    net = copy.deepcopy(main)
                self.log(f"[{step}] done earlier: {self._net_path(step)}")
                continue
            started = time.time()
            seed = 1000 * (i + 1)  # each step draws its own training scenes
            if step == "prune":
                report = self._prune(net, r.prune, "prune")
            elif step == "head":
                before = models.count_params(net)
                models.with_fine_head(net, r.head.width)
                self.log(f"[head] heads at 0.4 m (fine width {r.head.width}): {before} -> "
                         f"{models.count_params(net)} parameters")
                report = {"stride": 1, "width": r.head.width, "params_before": before}
            elif step == "distill":
                d = r.distill
                teacher = self._teacher(base)
                control = copy.deepcopy(net) if d.control else None  # before the teacher's hooks attach
                report = {"steps": d.steps, "batch": d.batch, "teacher": r.teacher, "stages": []}
                finished = self.state.setdefault("distill_stages", [])  # stages of an interrupted run
                for k, stage in enumerate(d.stages()):
                    if k < len(finished):  # resumed: this stage's networks are in the work dir
                        report["stages"].append(finished[k])
                        if k == len(finished) - 1:
                            net, control = self._load_stage(k, control is not None)
                        self.log(f"[distill {k + 1}/{len(d.stages())}] done earlier: "
                                 f"{self._stage_path(k, 'distilled')}")
                        continue
                    pruned = None
                    if k:  # a later stage: both jobs start from the stage before's distilled or alone network
                        start = control if stage.start == "alone" else net  # both jobs get copies below
                        if stage.prune is not None:  # pruned again first (e.g. only the per-point head)
                            pruned = self._prune(start, stage.prune, f"distill {k + 1}")
                        net = copy.deepcopy(start)
                        control = copy.deepcopy(start) if d.control else None
                    jobs = [Job("distilled", Distiller(net, teacher, adaptor, stage.recipe), stage.lr)]
                    if control is not None:
                        jobs.append(Job("alone", Distiller(control, None, adaptor, stage.recipe), stage.lr))
                    train_jobs(jobs, self._batches(stage.batch, seed + 100 * k, net), stage.steps, self.device,
                               progress=self.progress, desc=f"distill {k + 1}/{len(d.stages())}")
                    net = jobs[0].distiller.student.cpu()
                    control = jobs[1].distiller.student.cpu() if control is not None else None
                    report["stages"].append({"from": stage.start, "steps": stage.steps, "batch": stage.batch,
                                             "lr": stage.lr, "alpha": stage.recipe.alpha,
                                             "temperature": stage.recipe.temperature, "pruned": pruned,
                                             "curves": {j.name: j.curve for j in jobs}})
                    self._save_stage(k, net, control, report["stages"][-1])
                if control is not None:
                    checkpoint.save_network(control, self._net_path("distill-alone"))
                report["keep"] = d.keep
                if d.keep == "alone":  # the control is the result; its distilled twin stays in the work dir
                    checkpoint.save_network(net, self._net_path("distill-distilled"))
                    net = control
            elif step == "sparsity":
                s = r.sparsity
                masks = sparsity_mod.apply(net, prune_mod.head_layers(net, self.task))
                teacher = self._teacher(base) if r.distill else None
                job = Job("sparse", Distiller(net, teacher, adaptor, distill_recipe), s.lr,
                          after_step=lambda student, m=masks: sparsity_mod.reapply(student, m))
                train_jobs([job], self._batches(s.batch, seed, net), s.steps, self.device, progress=self.progress,
                           desc="2:4 fine-tune")
                net = job.distiller.student.cpu()
                ok = all(sparsity_mod.is_2_4(net.get_submodule(n).weight) for n in masks)
                report = {"steps": s.steps, "layers": sorted(masks), "pattern_intact": ok, "curve": job.curve}
            elif step == "qat":
                net, report = self._qat(net, base, adaptor, distill_recipe)
            else:  # pragma: no cover - recipe.STEPS and this list are the same
                raise ConfigError(f"unknown step {step}")
            report["seconds"] = round(time.time() - started, 1)
            report["params"] = models.count_params(net)
            checkpoint.save_network(net, self._net_path(step))
            if step in ("prune", "head", "distill"):
                main = net
            self.state["done"].append(step)
            self.state["steps"][step] = report
            if step == "distill":
                self.state.pop("distill_stages", None)  # the step's report holds them now
            self._save_state()
            if stop_after == step:
                self.log(f"stopped after {step}: rerun without --stop-after to continue (work dir {self.work})")
                break
        return main

    def _qat(self, net, base, adaptor, distill_recipe):
        q = self.recipe.qat
        net = net.cpu().eval()
        qat_mod.fold_batch_norms(net)
        qat_mod.wrap(net)
        calib = self._calibration(q.calibration_batches)

        def run(n, batch):
            return adaptor.forward(n, {k: v.to(self.device) for k, v in batch.items()})

        net = net.to(self.device)
        qat_mod.calibrate(net, run, calib)
        errors = qat_mod.sensitivity(net, run, calib)
        if q.keep_float == "auto":
            keep = qat_mod.choose_float_layers(errors, q.max_float_layers, q.min_share)
        else:
            keep = list(q.keep_float)
            unknown = [k for k in keep if k not in errors]
            if unknown:
                raise ConfigError(f"qat.keep_float: no quantizable layer {unknown} (layers: {sorted(errors)})")
        qat_mod.unwrap(net, keep)
        self.log(f"[qat] kept in float by sensitivity: {keep or 'none'}")
        ptq = copy.deepcopy(net).cpu()
        qat_mod.freeze(ptq)
        checkpoint.save_network(ptq, self._net_path("ptq"))  # calibrated, not fine-tuned: what PTQ gives
        teacher = self._teacher(base)
        job = Job("qat", Distiller(net, teacher, adaptor, distill_recipe), q.lr)
        train_jobs([job], self._batches(q.batch, 5000, net), q.steps, self.device, progress=self.progress,
                   desc="QAT")
        net = job.distiller.student.cpu()
        qat_mod.freeze(net)
        return net, {"steps": q.steps, "kept_float": keep, "sensitivity": errors, "curve": job.curve}

    # ------------------------------------------------------------------ export, gates, report
    def version_names(self) -> Dict[str, str]:
        """Step (or "ptq") -> version directory name, for the finished steps."""
        return planned_versions(list(self.state["done"]), self.version)

    def export(self, budget_ms: float, overwrite: bool = False) -> Dict[str, object]:
        """Exports every finished step, gates it against the base version, writes the report."""
        from airside_perception.engines.manifest import write_manifest
        from airside_perception.evaluation.gates import run_gates, write_reports
        from airside_perception.ota.package import package_version
        from airside_perception.pipelines import store
        from airside_perception.training import export as export_mod

        r = self.recipe
        if not self.state["done"]:
            raise ConfigError(f"{self.work}: no finished step to export")
        base_manifest = store.load_version(self.engines_dir, self.task, r.base_version)
        base_engine = store.open_engine(base_manifest, "onnxruntime", 2)
        rows = []
        targets = [(s, v, self.engines_dir) for s, v in self.version_names().items()]
        # the other network of the last stage: measured, not shipped (the control, or with
        # distill.keep: alone the distilled twin)
        kept_alone = r.distill is not None and r.distill.keep == "alone"
        twin = "distill-distilled" if kept_alone else "distill-alone"
        if os.path.isfile(self._net_path(twin)):
            suffix = "distilled" if kept_alone else "alone"
            targets.append((twin, f"{self.version}-{suffix}", os.path.join(self.work, "engines")))
        for step, version, root in targets:
            net = checkpoint.load_network(self.task, self._net_path(step))
            quantized = step in ("qat", "ptq")
            raw = os.path.join(self.work, f"{step}.onnx")
            export_mod.export_onnx(net, self.task, raw)
            target = os.path.join(root, self.task, version)
            if os.path.isdir(target) and not overwrite:
                raise ConfigError(f"{target} exists: versions are immutable (pass --overwrite to rebuild it)")
            manifest = package_version(raw, self.task, version, root, precision="int8" if quantized else "fp32",
                                       overwrite=True)
            os.remove(raw)
            cand = store.open_engine(manifest, "onnxruntime", 2)
            self.log(f"[export] {version}: gates against {r.base_version}")
            report = run_gates(base_engine, cand, r.eval_scans, r.eval_frames, budget_ms, progress=self.progress)
            cand.close()
            write_reports(report, os.path.join(manifest.directory, "gate_report"), manifest)
            metrics = dict(report["candidate_metrics"], split="test", scans=r.eval_scans)
            sparse = {"sparsity": "2:4"} if step == "sparsity" else {}  # the mask held through the fine-tune
            write_manifest(manifest.__class__(**{**manifest.__dict__, "metrics": _rounded(metrics), **sparse}),
                           manifest.directory)
            rows.append(_row(step, version, net, manifest, report))
        base_engine.close()
        result = {"task": self.task, "version": self.version, "base_version": r.base_version,
                  "teacher": r.teacher, "recipe": r.path, "steps": self.state["steps"], "rows": rows,
                  "baseline": _baseline_row(r.base_version, base_manifest, rows)}
        out_dir = os.path.join(self.engines_dir, self.task, self.version)
        if not any(r["version"] == self.version for r in rows):  # no float step: beside the first variant
            out_dir = os.path.join(self.engines_dir, self.task, rows[0]["version"])
        result["report"] = write_report(result, out_dir)[-1]
        return result


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if value != value else round(value, 2)
    return value


def _latency(values: List[float]) -> Dict[str, float]:
    from airside_perception.stats import Percentiles

    p = Percentiles.of(values)
    return {"p50_ms": round(p.p50, 2), "p99_ms": round(p.p99, 2)}


def _headline(task: str, metrics: Dict) -> Dict[str, float]:
    if task == "segmentation":
        iou = metrics["iou"]
        return {"metric": round(metrics["miou"], 2), "person": iou["person"], "fod": iou["fod"],
                "cone": iou["cone"], "aircraft": iou["aircraft"]}
    if task == "detection":
        ap = metrics["ap"]
        return {"metric": round(metrics["map"], 2), "person": ap["person"], "cone": ap["cone"],
                "aircraft": ap["aircraft"], "person_recall_20m": metrics.get("person_recall_20m")}
    return {"metric": round(metrics["iou"], 2)}


def _row(step: str, version: str, net, manifest, report: Dict) -> Dict[str, object]:
    task = manifest.task
    return {"step": step, "version": version, "model_sha256": manifest.sha256, "params": models.count_params(net),
            "file_kb": round(os.path.getsize(manifest.model_path) / 1024, 1),
            "cpu": _latency(report["latency_ms"]["candidate"]),
            "baseline_cpu_same_run": _latency(report["latency_ms"]["baseline"]),
            "accuracy": _headline(task, report["candidate_metrics"]),
            "baseline_accuracy": _headline(task, report["baseline_metrics"]),
            "gates_passed": report["passed"],
            "failed_gates": [g["name"] for g in report["gates"] if not g["passed"]]}


def _baseline_row(version: str, manifest, rows) -> Dict[str, object]:
    first = rows[0]
    return {"version": version, "file_kb": round(os.path.getsize(manifest.model_path) / 1024, 1),
            "accuracy": first["baseline_accuracy"]}


def write_report(result: Dict[str, object], out_dir: str) -> List[str]:
    """compression_report.json / .md and a plot of accuracy and latency after each step."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "compression_report.json")]
    from airside_perception import cli

    result.setdefault("machine", cli.machine())  # what the latencies were measured on
    result.setdefault("command", cli.command_line(None, "engine_tool"))
    with open(paths[0], "w") as fh:
        json.dump(result, fh, indent=2, default=float)
    rows = result["rows"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        names = [result["base_version"]] + [r["version"] for r in rows]
        acc = [result["baseline"]["accuracy"]["metric"]] + [r["accuracy"]["metric"] for r in rows]
        p99 = [rows[0]["baseline_cpu_same_run"]["p99_ms"]] + [r["cpu"]["p99_ms"] for r in rows]
        a1.bar(range(len(names)), acc, color=["grey"] + ["tab:blue"] * len(rows))
        a1.set_ylim(min(acc) - 5, max(acc) + 1)
        a1.set_ylabel("accuracy (test split)")
        a2.bar(range(len(names)), p99, color=["grey"] + ["tab:orange"] * len(rows))
        a2.set_ylabel("CPU P99 ms (2 threads)")
        for a in (a1, a2):
            a.set_xticks(range(len(names)))
            a.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        fig.suptitle(f"{result['task']}: compression steps")
        fig.tight_layout()
        plot = os.path.join(out_dir, "compression_report.png")
        fig.savefig(plot, dpi=90)
        plt.close(fig)
        paths.append(plot)
    except ImportError:
        pass
    lines = [f"# Compression report: {result['task']} {result['version']}", "",
             f"Recipe `{result['recipe']}`, teacher `{result['teacher']}`, gates against {result['base_version']}. "
             "CPU latency: the engine alone, warm, 2 threads, measured beside the base version in the same run.", "",
             "| step | version | params | file KB | CPU P50 / P99 ms | base P99 same run | accuracy | person | "
             "gates |", "|---|---|---|---|---|---|---|---|---|"]
    b = result["baseline"]
    lines.append(f"| base | {b['version']} | | {b['file_kb']} | | | {b['accuracy']['metric']} | "
                 f"{b['accuracy'].get('person', '')} | |")
    for r in rows:
        lines.append(f"| {r['step']} | {r['version']} | {r['params']} | {r['file_kb']} | {r['cpu']['p50_ms']} / "
                     f"{r['cpu']['p99_ms']} | {r['baseline_cpu_same_run']['p99_ms']} | {r['accuracy']['metric']} | "
                     f"{r['accuracy'].get('person', '')} | "
                     f"{'pass' if r['gates_passed'] else 'FAIL: ' + ', '.join(r['failed_gates'])} |")
    lines += ["", "Per-class accuracy after each step (safety classes):", ""]
    for r in rows:
        deltas = {k: round(v - r["baseline_accuracy"][k], 2) for k, v in r["accuracy"].items()
                  if isinstance(v, (int, float)) and isinstance(r["baseline_accuracy"].get(k), (int, float))}
        lines.append(f"- {r['version']}: {r['accuracy']} (delta to base: {deltas})")
    if len(paths) > 1:
        lines += ["", "![steps](compression_report.png)"]
    md = os.path.join(out_dir, "compression_report.md")
    with open(md, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    paths.append(md)
    return paths


def planned_versions(steps: List[str], version: str) -> Dict[str, str]:
    """The version directories a recipe's steps write: the float network is ``version``."""
    names = {}
    if "prune" in steps:
        names["prune"] = f"{version}-pruned" if "distill" in steps else version
    if "distill" in steps:
        names["distill"] = version
    if "sparsity" in steps:
        names["sparsity"] = f"{version}-sparse"
    if "qat" in steps:
        names["ptq"] = f"{version}-ptq"
        names["qat"] = f"{version}-int8"
    return names
