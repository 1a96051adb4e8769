"""DistributedDataParallel on the CPU: two gloo ranks, half the global batch each, end with
identical weights equal to one process trained on the whole batch."""

import os
import socket

import torch
import torch.multiprocessing as mp

from airside_perception.training import distributed

STEPS = 5


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(STEPS, 8, 6, generator=g), torch.randint(0, 3, (STEPS, 8), generator=g)


def _train(model, dist, rank, world):
    xs, ys = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in zip(xs, ys):
        n = len(x) // world
        loss = torch.nn.functional.cross_entropy(model(x[rank * n:(rank + 1) * n]), y[rank * n:(rank + 1) * n])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    dist = distributed.setup()
    assert (dist.rank, dist.world, dist.device.type) == (rank, world, "cpu")
    model = distributed.wrap(_model(), dist)
    _train(model, dist, rank, world)
    assert dist.agree(rank == 1) is True  # one rank's flag reaches every rank
    torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    single = _model()
    _train(single, distributed.Dist(0, 1, torch.device("cpu")), 0, 1)
    for k, v in single.state_dict().items():
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
        # tolerance: the all-reduce sums the two half-batch gradients in another order
        assert torch.allclose(r0[k], v, atol=1e-6), f"{k} differs from one process with the global batch"


def test_training_entry_point_on_two_ranks_scores_held_out_scans(tmp_path):
    """torchrun with two gloo ranks: the training entry point trains, rank 0 scores validation
    scans during the run and test scans at the end, off the training clock."""
    import csv
    import subprocess
    import sys

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "airside_perception.training.train", "--tasks", "segmentation", "--steps", "4",
           "--batch", "1", "--workers", "1", "--check-every", "2", "--check-scans", "2",
           "--final-check-scans", "2", "--no-export", "--out-dir", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "check.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["split"]) for r in rows] == [("2", "val"), ("4", "val"), ("4", "test")]
    assert all(0.0 <= float(r["miou"]) <= 100.0 for r in rows)
    assert "rank 1: data wait" in done.stdout
    assert (tmp_path / "segmentation.pt").is_file()


class _ToyAdaptor:
    """A classification task for distillation on fixed-size batches."""

    task = "toy"

    def forward(self, net, batch):
        return net(batch["x"])

    def hard_loss(self, out, batch):
        return torch.nn.functional.cross_entropy(out, batch["y"])

    def response_loss(self, out, teacher_out, batch, recipe):
        from airside_perception.training import distill

        return distill.kd_kl(out, teacher_out, recipe.temperature)


def _distill_jobs():
    from airside_perception.training import distill

    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    recipe = distill.DistillRecipe.from_dict({"temperature": 2.0, "alpha": 0.5,
                                              "features": [{"student": "0", "teacher": "0", "weight": 0.5}]})
    return [distill.Job("distilled", distill.Distiller(_model(), teacher, _ToyAdaptor(), recipe), 0.01),
            distill.Job("alone", distill.Distiller(_model(), None, _ToyAdaptor(), recipe), 0.01)]


def _distill_batches(rank, world):
    xs, ys = _data()
    n = len(xs[0]) // world
    return iter([{"x": x[rank * n:(rank + 1) * n], "y": y[rank * n:(rank + 1) * n]} for x, y in zip(xs, ys)])


def _distill_worker(rank, world, port, out_dir):
    from airside_perception.training import distill

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    dist = distributed.setup()
    jobs = _distill_jobs()
    torch.manual_seed(100 + rank)  # projectors drawn differently on each rank: rank 0's must win
    distill.train_jobs(jobs, _distill_batches(rank, world), STEPS, dist.device, progress=False, dist=dist)
    torch.save({j.name: j.distiller.student.state_dict() for j in jobs}, os.path.join(out_dir, f"d{rank}.pt"))
    dist.close()


def test_distillation_on_two_gloo_ranks_matches_one_process(tmp_path, monkeypatch):
    """The distillation entry point's training loop under torchrun: gradients of each job
    (student and feature projector) averaged over the ranks; the ranks end identical and equal
    to one process on the whole batch (AdamW, gradient clipping and a feature term included)."""
    from airside_perception.training import distill

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    mp.spawn(_distill_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "d0.pt"), torch.load(tmp_path / "d1.pt")
    jobs = _distill_jobs()
    torch.manual_seed(100)
    distill.train_jobs(jobs, _distill_batches(0, 1), STEPS, torch.device("cpu"), progress=False)
    for job in jobs:
        for k, v in job.distiller.student.state_dict().items():
            assert torch.equal(r0[job.name][k], r1[job.name][k]), k
            torch.testing.assert_close(r0[job.name][k], v, rtol=1e-5, atol=1e-6)
        start = _model().state_dict()
        assert any(not torch.equal(start[k], v) for k, v in job.distiller.student.state_dict().items())
