"""Trains the three reference networks on the synthetic world and exports them to ONNX.

    python -m airside_perception.training.train --minutes 6 --out-dir /tmp/models
    python -m airside_perception.training.train --minutes 6 --randomize --out-dir /tmp/models \
        --init segmentation=models/segmentation-1.0.0.pt detection=models/detection-1.0.0.pt ...
    python -m airside_perception.training.train --minutes 10 --out-dir /tmp/own \
        --init segmentation=models/segmentation-1.0.0.pt --data semantickitti:DIR \
        --class-map config/class_maps/semantickitti.yaml --sensor-pose "0 0 1.73 0 0 0" --intensity-max 1

Samples are simulated on the fly by CPU workers from the ``train`` seed range, so no scene
is seen twice; all three networks learn from the same batches. ``--randomize`` draws sites,
sensors and mount errors (``training.randomize``). ``--data`` fine-tunes the segmentation
network on the vehicle team's own labelled scans instead (points whose class the map does
not list are ignored). A CUDA GPU is used when present.

Several GPUs (or CPU processes) with DistributedDataParallel, each rank simulating its own
seeds, rank 0 writing the checkpoint and the curve (``--batch`` is per rank)::

    torchrun --nproc_per_node 2 -m airside_perception.training.train --arch teacher --steps 3000 \
        --batch 4 --out-dir /tmp/teachers

``--check-every N`` scores the segmentation network on held-out validation scans every N steps
and ``--final-check-scans M`` on M test scans at the end (rank 0; ``check.csv``; the time the
checks take is off the training clock, so time-to-accuracy figures compare across GPU counts).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from airside_perception import classes, cli
from airside_perception.evaluation.metrics import SegmentationMeter
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.sim.world import SPLITS, make_scan, split_seeds
from airside_perception.training import distributed, export, models, targets
from airside_perception.training.randomize import Randomization

TASKS = ("segmentation", "detection", "occupancy")

#: Cross-entropy weights against class imbalance, about (frequency)^-0.4.
SEG_CLASS_WEIGHTS = [1.0, 3.0, 5.0, 2.5, 4.0, 8.0, 8.0, 2.0, 3.0]


class SimStream(IterableDataset):
    """Endless, never-repeating training samples: worker ``w`` of ``n`` (over all ranks) takes
    seeds w, w + n, ..."""

    def __init__(self, spec: BevSpec, start_seed: int, randomization=None, rank: int = 0, world: int = 1,
                 colour: bool = False, det_stride: int = targets.DET_STRIDE):
        self.spec = spec
        self.colour = colour
        self.det_stride = det_stride
        self.start_seed = start_seed
        self.randomization = randomization
        self.rank, self.world = rank, world

    def __iter__(self):
        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        wid, n = self.rank * n + wid, n * self.world  # ranks draw disjoint seeds
        rng = np.random.default_rng(self.start_seed + wid)
        seed = SPLITS["train"][0] + self.start_seed + wid
        while seed < SPLITS["train"][1]:
            yield targets.as_dict(targets.make_sample(seed, self.spec, rng, self.randomization, self.colour,
                                                          self.det_stride))
            seed += n


class OwnScans(IterableDataset):
    """The vehicle team's labelled scans, endlessly, each turned about z by a random angle."""

    def __init__(self, spec: BevSpec, scans):
        self.spec = spec
        self.scans = scans  # list of semantickitti.LabelledScan, base_link, engine intensity

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng(info.id if info else 0)
        while True:
            s = self.scans[int(rng.integers(len(self.scans)))]
            a = rng.uniform(-np.pi, np.pi)
            pts = s.points.copy()
            c, si = np.cos(a), np.sin(a)
            pts[:, 0], pts[:, 1] = c * s.points[:, 0] - si * s.points[:, 1], si * s.points[:, 0] + c * s.points[:, 1]
            enc = encode(pts, self.spec)
            yield {"bev": enc.bev[0], "point_cells": enc.point_cells, "point_features": enc.point_features,
                   "point_labels": s.labels[enc.kept].astype(np.int64)}


def collate(batch: List[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(np.stack([b[k] for b in batch])) for k in
           ("bev", "heatmap", "regression", "reg_mask", "occupancy") if k in batch[0]}
    cells_per_sample = batch[0]["bev"].shape[1] * batch[0]["bev"].shape[2]
    out["point_cells"] = torch.from_numpy(np.concatenate([b["point_cells"] for b in batch]))
    out["point_batch"] = torch.from_numpy(np.concatenate(
        [np.full(len(b["point_cells"]), i, np.int64) for i, b in enumerate(batch)]))
    out["point_features"] = torch.from_numpy(np.concatenate([b["point_features"] for b in batch]))
    out["point_labels"] = torch.from_numpy(np.concatenate([b["point_labels"] for b in batch]))
    if "point_colour" in batch[0]:
        out["point_colour"] = torch.from_numpy(np.concatenate([b["point_colour"] for b in batch]))
    out["cells_per_sample"] = torch.tensor(cells_per_sample)
    return out


def seg_forward_batched(net: models.SegmentationNet, bev, cells, batch_idx, feats):
    """SegmentationNet.forward for a batch: each point gathers from its own sample."""
    s = net.size
    ctx = net.backbone(bev)  # (B, w, S/2, S/2)
    b, w = ctx.shape[:2]
    iy = torch.div(cells, s, rounding_mode="floor")
    ix = cells - iy * s
    half = torch.div(iy, 2, rounding_mode="floor") * (s // 2) + torch.div(ix, 2, rounding_mode="floor")
    ctx_flat = ctx.permute(0, 2, 3, 1).reshape(-1, w)
    raw_flat = bev.permute(0, 2, 3, 1).reshape(-1, bev.shape[1])
    ctx_pts = ctx_flat[batch_idx * (s // 2) ** 2 + half]
    raw_pts = raw_flat[batch_idx * s * s + cells]
    return net.mlp(torch.cat([ctx_pts, raw_pts, feats], dim=1))


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - target) ** 4 * neg
    n_pos = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n_pos


def detection_loss(heat_logits, reg, batch) -> torch.Tensor:
    mask = batch["reg_mask"].unsqueeze(1)
    reg_err = F.l1_loss(reg * mask, batch["regression"] * mask, reduction="sum") / mask.sum().clamp(min=1)
    return focal_heatmap_loss(heat_logits, batch["heatmap"]) + 2.0 * reg_err


class BatchedSegmentation(torch.nn.Module):
    """A segmentation network's training forward on a collated batch (DDP needs a forward)."""

    def __init__(self, net: models.SegmentationNet):
        super().__init__()
        self.net = net

    def forward(self, bev, cells, batch_idx, feats):
        return seg_forward_batched(self.net, bev, cells, batch_idx, feats)


def task_losses(nets, batch, seg_weights) -> Dict[str, torch.Tensor]:
    """The hard-label loss of every network in ``nets`` (task -> module) on one batch."""
    out: Dict[str, torch.Tensor] = {}
    if "segmentation" in nets:
        logits = nets["segmentation"](batch["bev"], batch["point_cells"], batch["point_batch"],
                                      batch["point_features"]).float()
        out["segmentation"] = F.cross_entropy(logits, batch["point_labels"], weight=seg_weights,
                                              ignore_index=classes.UNLABELLED)
    if "detection" in nets:
        heat, reg = nets["detection"](batch["bev"])
        out["detection"] = detection_loss(heat.float(), reg.float(), batch)
    if "occupancy" in nets:
        occ = nets["occupancy"](batch["bev"]).float()
        out["occupancy"] = F.binary_cross_entropy_with_logits(occ, batch["occupancy"],
                                                              pos_weight=torch.tensor(3.0, device=occ.device))
    return out


LOSS_WEIGHTS = {"segmentation": 1.0, "detection": 1.0, "occupancy": 2.0}


def _held_out_scan(seed: int) -> Tuple[np.ndarray, ...]:
    scan = make_scan(int(seed), "default")
    enc = encode(scan.points, BevSpec())
    return enc.bev, enc.point_cells, enc.point_features, scan.labels[enc.kept].astype(np.int64)


class SegmentationCheck:
    """The segmentation network's mIoU on held-out scans of ``split`` (the scans
    ``tools.evaluate`` reads, default density), simulated once by ``workers`` processes."""

    def __init__(self, split: str, scans: int, workers: int):
        seeds = [int(s) for s in split_seeds(split, scans)]
        with multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool:
            self.scans = pool.map(_held_out_scan, seeds, chunksize=1)

    @torch.no_grad()
    def __call__(self, net: models.SegmentationNet, device: torch.device) -> Dict[str, object]:
        meter = SegmentationMeter()
        was_training = net.training
        net.eval()
        for bev, cells, feats, labels in self.scans:
            cells_t = torch.from_numpy(cells).to(device)
            logits = seg_forward_batched(net, torch.from_numpy(bev).to(device), cells_t,
                                         torch.zeros_like(cells_t), torch.from_numpy(feats).to(device))
            meter.add(labels, logits.argmax(1).cpu().numpy())
        net.train(was_training)
        return meter.summary()


class OwnScansCheck(SegmentationCheck):
    """The segmentation network's mIoU on the team's own held-out labelled scans (--val-data);
    labels the class map leaves out are not scored."""

    def __init__(self, scans):  # not super().__init__: that simulates scans, these are read from disk
        self.scans = []
        for scan in scans:
            enc = encode(scan.points, BevSpec())
            labels = scan.labels[enc.kept]
            keep = labels != classes.UNLABELLED
            self.scans.append((enc.bev, enc.point_cells[keep], enc.point_features[keep],
                               labels[keep].astype(np.int64)))


#: Files of a run in --out-dir: their presence means an earlier run is there.
EARLIER_RUN = ("train_state.pt", "curve.csv", "check.csv", "segmentation.pt", "detection.pt", "occupancy.pt",
               "segmentation.onnx", "detection.onnx", "occupancy.onnx")


def _missing_dirs(path: str) -> List[str]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out


def _remove_if_empty(paths: List[str]) -> None:
    for path in paths:  # deepest first: each goes only when empty
        try:
            os.rmdir(path)
        except OSError:
            return


def main() -> None:
    parser = cli.Parser(prog="airside_perception.training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="wall-clock training budget")
    parser.add_argument("--steps", type=int, default=0,
                        help="train this many optimizer steps instead of --minutes (same on every rank)")
    parser.add_argument("--batch", type=int, default=8, help="scans per step and rank (global batch: x ranks)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="simulation workers per rank")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--start-seed", type=int, default=0)
    parser.add_argument("--arch", choices=sorted(models.ARCHITECTURES), default="student",
                        help="student: the vehicle's networks; teacher: the large GPU teachers")
    parser.add_argument("--reuse", type=int, default=1,
                        help="optimizer steps per simulated batch (>1 where the simulation, not the GPU, is slow)")
    parser.add_argument("--seg-mlp", type=int, nargs="*", default=None,
                        help="hidden widths of the segmentation per-point MLP (default: the architecture's)")
    parser.add_argument("--randomize", action="store_true", help="domain randomisation (training.randomize)")
    parser.add_argument("--street-share", type=float, default=Randomization.street_share,
                        help="with --randomize: share of street scenes")
    parser.add_argument("--single-sensor-share", type=float, default=Randomization.single_sensor_share,
                        help="with --randomize: share of scans from one roof sensor of another kind")
    parser.add_argument("--chunk-minutes", type=float, default=0.0,
                        help="stop after this many minutes of this run with a checkpoint (train_state.pt in "
                             "--out-dir); --resume continues it, here or on another machine")
    parser.add_argument("--resume", action="store_true", help="continue from --out-dir/train_state.pt")
    parser.add_argument("--tasks", nargs="*", default=["segmentation", "detection", "occupancy"],
                        choices=["segmentation", "detection", "occupancy"], help="networks to train")
    parser.add_argument("--init", nargs="*", default=[], metavar="TASK=FILE.pt",
                        help="start from these state dicts (fine-tuning) instead of random weights")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on a CUDA GPU (the teachers)")
    parser.add_argument("--no-export", action="store_true", help="write the .pt files only (teachers: fp16)")
    parser.add_argument("--data", help="semantickitti:DIR: fine-tune segmentation on the vehicle's own scans")
    parser.add_argument("--class-map", help="with --data: source id -> airside class (config/class_maps/)")
    parser.add_argument("--sensor-pose", default="0 0 0 0 0 0", help="with --data: \"x y z roll pitch yaw\"")
    parser.add_argument("--intensity-max", type=float, default=255.0, help="with --data: the scans' intensity range")
    parser.add_argument("--check-every", type=int, default=0,
                        help="every this many steps, rank 0 scores segmentation on --check-scans validation "
                             "scans (check.csv; the time it takes is not counted as training time)")
    parser.add_argument("--check-scans", type=int, default=48)
    parser.add_argument("--final-check-scans", type=int, default=0,
                        help="at the end, segmentation mIoU on this many test scans (written to check.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out-dir")
    parser.add_argument("--val-data", default="", help="with --data: semantickitti:DIR of held-out labelled scans, "
                                                       "scored every --check-every steps and at the end (check.csv, "
                                                       "and on the progress bar)")
    args = parser.parse_args()
    earlier = [n for n in EARLIER_RUN if os.path.exists(os.path.join(args.out_dir, n))]
    if args.val_data and not args.data:
        parser.error("--val-data scores the team's own held-out scans: give the training scans with --data too")
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --out-dir, --overwrite replaces it: give one of them")
    if earlier and not (args.resume or args.overwrite):
        parser.error(f"{args.out_dir} holds an earlier run ({', '.join(earlier)}): --resume continues it, "
                     "--overwrite replaces it, or pick another --out-dir")
    dist = distributed.setup()
    created = _missing_dirs(args.out_dir)  # a run that fails before writing leaves none of them behind
    os.makedirs(args.out_dir, exist_ok=True)
    atexit.register(_remove_if_empty, created)
    device = dist.device
    torch.manual_seed(args.start_seed)  # every rank builds the same initial weights
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    spec = BevSpec()
    overrides = {"segmentation": {"mlp_hidden": args.seg_mlp} if args.seg_mlp else {}}
    nets = {t: models.build(t, args.arch, **overrides.get(t, {})).to(device) for t in TASKS}
    whole = set()  # tasks started from a whole network: saved whole (their shape is not the architecture's)
    for item in args.init:
        task, _, path = item.partition("=")
        if task not in nets or not os.path.isfile(path):
            parser.error(f"--init {item}: write TASK=FILE.pt with TASK one of {sorted(nets)} and an existing file")
        loaded = torch.load(path, map_location=device, weights_only=False)
        if isinstance(loaded, torch.nn.Module):  # a whole network (a pruned or compressed version): its own shape
            nets[task] = loaded.float().to(device)
            whole.add(task)
        else:
            nets[task].load_state_dict({k: v.float() for k, v in loaded.items()})
        dist.log(f"{task}: starting from {path}")
    nets = {t: n for t, n in nets.items() if t in args.tasks or (args.data and t == "segmentation")}
    if args.data:  # own scans carry point labels: segmentation alone
        nets = {"segmentation": nets["segmentation"]}
        dataset = OwnScans(spec, _own_scans(args, parser))
    else:
        randomization = Randomization(street_share=args.street_share, single_sensor_share=args.single_sensor_share)
        dataset = SimStream(spec, args.start_seed, randomization if args.randomize else None,
                            rank=dist.rank, world=dist.world)
    if args.overwrite:  # only now, with every argument checked: a refused command keeps the earlier run
        for name in earlier:
            os.remove(os.path.join(args.out_dir, name))
    params = [p for n in nets.values() for p in n.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    state_path = os.path.join(args.out_dir, "train_state.pt")
    step, trained_s = 0, 0.0
    if args.resume:
        if not os.path.isfile(state_path):
            parser.error(f"--resume: {state_path} does not exist: start without --resume")
        state = torch.load(state_path, map_location=device)
        for task, net in nets.items():
            net.load_state_dict(state["nets"][task])
        opt.load_state_dict(state["optimizer"])
        step, trained_s = int(state["step"]), float(state["trained_s"])
        if not args.data:  # fresh scenes: skip every seed the earlier chunks may have drawn
            dataset = SimStream(spec, int(state["next_seed"]), dataset.randomization, rank=dist.rank, world=dist.world)
        dist.log(f"resumed at step {step}, {trained_s:.0f} s trained")
    train_nets = {t: distributed.wrap(BatchedSegmentation(n) if t == "segmentation" else n, dist)
                  for t, n in nets.items()}
    seg_weights = torch.tensor(SEG_CLASS_WEIGHTS, device=device)
    loader = DataLoader(dataset, batch_size=args.batch, num_workers=args.workers,
                        collate_fn=collate, prefetch_factor=4, persistent_workers=True)
    checks = {}
    if dist.rank == 0 and "segmentation" in nets and not args.data:
        if args.check_every > 0:
            checks["val"] = SegmentationCheck("val", args.check_scans, args.workers)
        if args.final_check_scans > 0:
            checks["test"] = SegmentationCheck("test", args.final_check_scans, args.workers)
    if dist.rank == 0 and args.data and args.val_data:  # the team's own split: scored every --check-every steps
        checks["val"] = OwnScansCheck(_own_scans(args, parser, args.val_data))
    dist.agree(False)  # the other ranks wait for the held-out scans before their clocks start
    check_log = None
    if checks:
        check_log = open(os.path.join(args.out_dir, "check.csv"), "a")
        if check_log.tell() == 0:
            check_log.write("step,trained_s,split,scans,miou,person_iou,fod_iou\n")

    last_check: Dict[str, float] = {}

    def run_check(split: str) -> None:
        """Rank 0 scores the network while the other ranks wait; the time is taken off the clock."""
        nonlocal start
        t = time.time()
        if split in checks:
            r = checks[split](nets["segmentation"], device)
            check_log.write(f"{step},{t - start:.1f},{split},{len(checks[split].scans)},{r['miou']:.2f},"
                            f"{r['iou']['person']:.2f},{r['iou']['fod']:.2f}\n")
            check_log.flush()
            dist.log(f"step {step:5d}  {split} mIoU {r['miou']:.2f}  person {r['iou']['person']:.2f}")
            last_check[split] = r["miou"]
        dist.agree(False)  # a barrier: every rank resumes together
        start += time.time() - t

    budget_s = args.minutes * 60.0
    chunk_s = args.chunk_minutes * 60.0 if args.chunk_minutes > 0 else float("inf")
    start = time.time() - trained_s
    run_start = time.time()
    curve = None
    if dist.rank == 0:
        curve = open(os.path.join(args.out_dir, "curve.csv"), "a")
        if curve.tell() == 0:
            curve.write("step,elapsed_s,lr,seg_loss,det_loss,occ_loss,scans_per_s,data_wait_s,compute_s\n")
    finished, data_wait, compute, scans, window_start = True, 0.0, 0.0, 0, time.time()
    total_wait = total_compute = 0.0
    batches = iter(loader)
    # rank 0: a bar over the steps or the time budget, with the rate, the ETA and the latest losses
    bar = tqdm(total=args.steps or int(budget_s), initial=min(step, args.steps) if args.steps else int(trained_s),
               unit="step" if args.steps else "s", desc="train", disable=dist.rank != 0, dynamic_ncols=True)
    while True:
        t0 = time.time()
        batch = next(batches)
        elapsed = time.time() - start
        progress = step / args.steps if args.steps else elapsed / budget_s
        over_chunk = time.time() - run_start > chunk_s
        stop = dist.agree(progress >= 1.0 or over_chunk)  # every rank stops at the same step
        if stop:
            finished = progress >= 1.0
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        t1 = time.time()
        for _ in range(args.reuse):
            for group in opt.param_groups:  # cosine decay over the budget
                group["lr"] = float(args.lr * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))
            for n in nets.values():
                n.train()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
                losses = task_losses(train_nets, batch, seg_weights)
            loss = sum(LOSS_WEIGHTS[t] * v for t, v in losses.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        data_wait += t1 - t0
        compute += time.time() - t1
        total_wait += t1 - t0
        total_compute += time.time() - t1
        scans += args.batch * dist.world
        bar.update((min(step, args.steps) if args.steps else min(int(elapsed), int(budget_s))) - bar.n)
        if curve is not None and step % 50 < args.reuse:
            rate = scans / max(time.time() - window_start, 1e-9)
            parts = [losses.get(t, torch.zeros(())).item() for t in TASKS]
            bar.set_postfix_str(" ".join(f"{t[:3]} {v:.3f}" for t, v in zip(TASKS, parts) if t in losses)
                                + f" {rate:.1f} scans/s"
                                + (f" val mIoU {last_check['val']:.1f}" if "val" in last_check else ""))
            dist.log(f"step {step:5d}  {elapsed:6.0f}s  seg {parts[0]:.3f}  det {parts[1]:.3f}  occ {parts[2]:.3f}  "
                     f"{rate:5.1f} scans/s  data wait {data_wait:5.1f}s compute {compute:5.1f}s")
            curve.write(f"{step},{elapsed:.1f},{opt.param_groups[0]['lr']:.6g},{parts[0]:.5f},{parts[1]:.5f},"
                        f"{parts[2]:.5f},{rate:.2f},{data_wait:.2f},{compute:.2f}\n")
            curve.flush()
            data_wait = compute = 0.0
            scans, window_start = 0, time.time()
        if args.check_every > 0 and step % args.check_every < args.reuse:
            paused = time.time()
            run_check("val")
            window_start += time.time() - paused
    bar.close()
    if finished and ((args.check_every > 0 and step % args.check_every >= args.reuse)
                     or (args.val_data and args.check_every <= 0)):
        run_check("val")
    if finished:
        run_check("test")
    if curve is not None:
        curve.close()
    if check_log is not None:
        check_log.close()
    dist.log(f"rank timing: {dist.rank_report(total_wait, total_compute)}")
    trained_s = time.time() - start
    if dist.rank == 0:
        torch.save({"nets": {t: n.state_dict() for t, n in nets.items()}, "optimizer": opt.state_dict(),
                    "step": step, "trained_s": trained_s, "arch": args.arch,
                    "next_seed": getattr(dataset, "start_seed", 0) + (step + 64) * args.batch * dist.world
                    + 4 * args.workers * args.batch * dist.world}, state_path)
    dist.log(f"trained {step} steps x {args.batch} x {dist.world} scans in {trained_s:.0f}s; checkpoint {state_path}")
    if not finished:
        dist.log("chunk done: continue with the same arguments and --resume")
        dist.close()
        return
    if dist.rank == 0:
        for task, net in nets.items():
            net = net.cpu().eval()
            state = net.state_dict()
            if args.arch == "teacher":  # stored compactly: the teachers only ever run on a GPU
                # (batch-norm statistics stay float32: a running variance can exceed fp16's range)
                state = {k: v.half() if v.is_floating_point() and "running_" not in k else v for k, v in state.items()}
            torch.save(net if task in whole else state, os.path.join(args.out_dir, f"{task}.pt"))
            if not args.no_export:
                export.export_onnx(net, task, os.path.join(args.out_dir, f"{task}.onnx"))
        dist.log(f"exported {sorted(os.listdir(args.out_dir))}")
    dist.close()


def _own_scans(args, parser, data=None):
    from airside_perception.errors import AirsideError
    from airside_perception.evaluation import semantickitti
    from airside_perception.frames import IntensityScale, parse_sensor_pose

    if not args.class_map:
        parser.error("--data needs --class-map FILE (e.g. config/class_maps/semantickitti.yaml)")
    try:
        data = data or args.data
        for line in semantickitti.settings_warnings(semantickitti.data_dir(data), args.sensor_pose,
                                                    args.intensity_max):
            print(f"training: warning: {line}", file=sys.stderr, flush=True)  # the network would learn it wrong
        scans = list(semantickitti.read_scans(semantickitti.data_dir(data),
                                              semantickitti.load_class_map(args.class_map),
                                              parse_sensor_pose(args.sensor_pose), IntensityScale(args.intensity_max)))
    except AirsideError as exc:
        parser.error(str(exc))
    print(f"{len(scans)} labelled scans from {data}", flush=True)
    return scans


if __name__ == "__main__":
    main()
