"""Data-parallel training: the sampler, the helpers alone, and two gloo processes under torchrun.

The two-process test launches this file as the worker (``python -m torch.distributed.run ...
test_distributed.py --worker DIR``) on the loopback address and a free port, and checks that
training a small float64 net without batch norm on two processes ends with the weights (and
losses) of one process trained on the same global batches. A net with batch norm trains on
each process's local statistics (no SyncBatchNorm on CPUs), so for FastResNet the test checks
only that every process ends with the same weights, and that rank 0 alone wrote checkpoints.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pix2pred.checkpoint import load_safetensors, save_safetensors
from pix2pred.nn_torch import distributed as D
from pix2pred.nn_torch.fast_train import FastTrainConfig, train_fast
from pix2pred.nn_torch.resnet import FastResNet

CFG = FastTrainConfig(
    epochs=2, batch_size=8, translate=1, amp="none", lr=0.1, head_lr=0.05, bias_lr=0.05, seed=3
)


class TinyNet(nn.Module):
    """conv3x3 (3->4) → ReLU → global average → linear (4->3), no batch norm."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # NOTE: a test fixture's weights; library code never does this
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x / 255.0))
        return self.fc(x.mean((2, 3)))


def tiny_data(n: int = 24, size: int = 8):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, n)
    X = rng.integers(0, 90, (n, size, size, 3)) + (y * 70)[:, None, None, None]
    return X.astype(np.uint8), y


def train_tiny(device: str = "cpu", checkpoint_dir: Path | None = None):
    model = TinyNet(seed=1).double()
    X, y = tiny_data()
    result = train_fast(model, X, y, CFG, device=device, checkpoint_dir=checkpoint_dir)
    return model, result


# ---------------------------------------------------------------------------------------------
# Without a process group


def test_sampler_splits_each_global_batch_over_the_ranks():
    n, B, W = 50, 12, 3
    single = D.DistributedBatchSampler(n, B, rank=0, world_size=1, seed=4)
    shards = [D.DistributedBatchSampler(n, B, rank=r, world_size=W, seed=4) for r in range(W)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        batches = list(single)
        assert len(batches) == len(single) == 4  # 50 // 12, the rest dropped
        for b, parts in enumerate(zip(*shards, strict=True)):
            assert all(len(p) == B // W for p in parts)
            assert sorted(torch.cat(parts).tolist()) == sorted(batches[b].tolist())
    single.set_epoch(0)
    first = single.permutation()
    single.set_epoch(1)
    assert not torch.equal(first, single.permutation())
    single.set_epoch(0)
    assert torch.equal(first, single.permutation())
    keep = D.DistributedBatchSampler(n, B, rank=0, world_size=1, drop_last=False)
    assert len(keep) == 5 and len(list(keep)[-1]) == 2


def test_sampler_validation():
    with pytest.raises(ValueError, match="multiple of the 4 processes, got 10"):
        D.DistributedBatchSampler(100, 10, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank=2 of 2"):
        D.DistributedBatchSampler(100, 10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="larger than the 5 examples"):
        D.DistributedBatchSampler(5, 10, rank=0, world_size=1)


def test_helpers_are_identities_in_a_single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = D.init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)
    assert D.rank_and_world() == (0, 1) and D.is_main_process()
    model = nn.Linear(2, 2)
    assert D.wrap_model(model, torch.device("cpu")) is model
    t = torch.tensor([1.0, 2.0])
    assert D.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert D.broadcast_float(2.5, torch.device("cpu")) == 2.5
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match=r"RANK=5 is outside 0\.\.1"):
        D.init_from_env("cpu")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK must be an integer, got 'one'"):
        D.init_from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="backend 'nccl' needs CUDA"):
        D.init_from_env("cpu", backend="nccl")


# ---------------------------------------------------------------------------------------------
# Two processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_over_the_same_global_batches(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        __file__, "--worker", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, result = train_tiny()
    finally:
        torch.set_num_threads(saved)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    assert ranks[0]["steps"] == result.steps == 6
    np.testing.assert_allclose(ranks[0]["loss"], result.history["loss"], rtol=1e-12)
    assert ranks[0]["loss"] == ranks[1]["loss"]  # all-reduced: the same in every process
    for r in range(2):
        state = load_safetensors(tmp_path / f"tiny{r}.safetensors")
        for name, value in model.state_dict().items():
            np.testing.assert_allclose(state[name], value.numpy(), rtol=1e-10, atol=1e-12)
    # Rank 0 alone writes checkpoints, though both were given a folder.
    assert (tmp_path / "ckpt0" / "last.safetensors").is_file()
    assert not (tmp_path / "ckpt1").exists()
    # FastResNet with batch norm, a time budget and the whitening bias frozen mid-run: the
    # processes follow rank 0's clock and end with identical weights and statistics.
    a, b = (load_safetensors(tmp_path / f"resnet{r}.safetensors") for r in range(2))
    assert ranks[0]["resnet_steps"] == ranks[1]["resnet_steps"] > 0
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert ranks[0]["sync_bn_error"].startswith("sync_bn needs CUDA")


def _worker(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = D.init_from_env("cpu")
    try:
        assert ctx.backend == "gloo"
        model, result = train_tiny(checkpoint_dir=out / f"ckpt{ctx.rank}")
        arrays = {k: v.numpy() for k, v in model.state_dict().items()}
        save_safetensors(out / f"tiny{ctx.rank}.safetensors", arrays)

        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, 64)
        X = (rng.integers(0, 60, (64, 12, 12, 3)) + (y * 80)[:, None, None, None]).astype(np.uint8)
        resnet = FastResNet(num_classes=3, widths=(4, 8, 8), seed=0)
        cfg = FastTrainConfig(epochs=50, batch_size=16, time_budget=2.0, amp="none", seed=1)
        res = train_fast(resnet, X, y, cfg, device=ctx.device)
        arrays = {k: v.numpy() for k, v in resnet.state_dict().items()}
        save_safetensors(out / f"resnet{ctx.rank}.safetensors", arrays)
        try:
            D.wrap_model(nn.BatchNorm2d(2), ctx.device, sync_bn=True)
            sync_bn_error = ""
        except ValueError as e:
            sync_bn_error = str(e)
        record = {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "steps": result.steps,
            "loss": result.history["loss"],
            "resnet_steps": res.steps,
            "sync_bn_error": sync_bn_error,
        }
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(record))
    finally:
        D.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: torchrun ... test_distributed.py --worker DIR")
