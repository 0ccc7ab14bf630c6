"""The fast training recipe for `FastResNet`: Muon + Nesterov SGD, label smoothing, TTA.

`train_fast` follows the public airbench recipes (Keller Jordan; written afresh here), for a
CPU or a GPU, one process or many (``torchrun``; see `pix2pred.nn_torch.distributed`):

1. Normalisation statistics and the whitening filters come from the training images.
2. Each epoch draws, from ``(seed, epoch)``, an order of the images and a random translation
   of up to ``translate`` pixels per image (reflect padding). Flips alternate: a random half of
   the images is mirrored on even epochs, the other half on odd epochs (``flip="alternating"``),
   so that over two epochs every image is seen both ways.
3. One step: the loss is cross-entropy with label smoothing, summed over the batch; the conv
   filters take a Muon step (Nesterov momentum, then the update orthogonalised by a few
   Newton-Schulz iterations, the filters renormalised), the head and the batch-norm shifts a
   Nesterov SGD step with weight decay ``weight_decay · batch_size / lr`` (so the decay per
   step does not depend on the learning rate). Learning rates follow one schedule of the
   training progress p in [0, 1]: a linear warm-up over ``warmup``, then a linear decay to 0.
   The whitening bias trains only while p < ``whiten_bias_until``; then it is frozen, which
   also spares the first conv's input gradient.
4. Optionally an exponential moving average of the weights (``ema``), whose decay grows as
   ``ema · p³`` (little averaging early, strong at the end), is what the run returns.
5. Mixed precision: bf16 autocast on a CPU with native bf16 or on CUDA (``amp="auto"``); the
   parameters, batch-norm statistics and the loss stay float32. Images and conv weights are
   channels-last (NHWC memory), which oneDNN and cuDNN run fastest.

Progress p counts steps (``epochs``), or wall-clock time when ``time_budget`` (seconds) is set:
then p = max(steps done / steps planned, seconds spent / time_budget) and training stops at
p = 1, which fits a run into a deadline on a shared machine (the step count then varies from
run to run, so such a run is not bit-reproducible; a step-counted one is, on the same machine).

The optimizer is in `pix2pred.nn_torch.muon`, the images' augmentation in
`pix2pred.nn_torch.fast_data`, and scoring with test-time augmentation (`predict_logits`) in
`pix2pred.nn_torch.fast_predict`; this module re-exports their public names.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pix2pred.checkpoint import (
    load_safetensors,
    read_safetensors_metadata,
    save_safetensors,
    write_json,
)
from pix2pred.data.preprocess import channel_mean_std
from pix2pred.nn_torch import distributed as D
from pix2pred.nn_torch.fast_data import _Augmenter, _check_data
from pix2pred.nn_torch.fast_predict import (
    AMP_MODES,
    _images,
    predict_logits,
    predict_tta,
    resolve_amp,
)
from pix2pred.nn_torch.muon import Muon, newton_schulz
from pix2pred.nn_torch.resnet import FastResNet, save_model

__all__ = [
    "FLIP_MODES",
    "FastTrainConfig",
    "FastTrainResult",
    "Muon",
    "lr_factor",
    "newton_schulz",
    "predict_logits",
    "predict_tta",
    "resolve_amp",
    "train_fast",
]

FLIP_MODES = ("alternating", "random", "none")
WHITENING_IMAGES = 5000
STATE_FORMAT = "pix2pred-fast-train-state"


@dataclass
class FastTrainConfig:
    """Hyperparameters of `train_fast` (defaults: the 94% airbench recipe with Muon).

    Attributes
    ----------
    epochs : passes over the training set (fractions allowed)
    batch_size : global batch size, over all processes
    lr, momentum : Muon learning rate and Nesterov momentum of the conv filters
    head_lr, bias_lr, sgd_momentum : Nesterov SGD of the head and of the batch-norm and
        whitening shifts
    weight_decay : decay per example; each SGD step decays by ``weight_decay · batch_size``
        times the schedule's factor
    label_smoothing : weight of the uniform distribution in the targets
    warmup : fraction of training over which learning rates rise linearly from 0
    whiten_bias_until : fraction of training after which the whitening bias is frozen
    translate : largest random translation in pixels (0: none)
    cutout : side of a random square of each training image painted in the mean colour, after
        translation and flip (0: none)
    flip : "alternating", "random" or "none"
    ema : decay of the weights' moving average at the end of training, or None for none
    amp : "auto", "bf16" or "none"
    channels_last : keep images and conv weights in NHWC memory
    time_budget : seconds of training after which it stops (None: run every epoch)
    newton_schulz_steps : iterations of the orthogonalisation
    sync_bn : batch-norm statistics over the global batch when distributed (CUDA only)
    seed : order, augmentation and nothing else (the network has its own seed)
    eval_batch_size : images per forward pass when scoring
    """

    epochs: float = 8.0
    batch_size: int = 2000
    lr: float = 0.24
    momentum: float = 0.6
    head_lr: float = 0.67
    bias_lr: float = 0.053
    sgd_momentum: float = 0.85
    weight_decay: float = 2e-6
    label_smoothing: float = 0.2
    warmup: float = 0.0
    whiten_bias_until: float = 0.375
    translate: int = 2
    cutout: int = 0
    flip: str = "alternating"
    ema: float | None = None
    amp: str = "auto"
    channels_last: bool = True
    time_budget: float | None = None
    newton_schulz_steps: int = 3
    sync_bn: bool = False
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        def real(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        def integer(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(real(self.epochs) and self.epochs > 0, "epochs", "a positive number")
        need(
            integer(self.batch_size) and self.batch_size >= 1,
            "batch_size",
            "an integer >= 1",
        )
        for name in ("lr", "head_lr", "bias_lr", "weight_decay"):
            need(
                real(getattr(self, name)) and getattr(self, name) >= 0,
                name,
                "a number >= 0",
            )
        for name in ("momentum", "sgd_momentum", "label_smoothing", "warmup"):
            need(
                real(getattr(self, name)) and 0 <= getattr(self, name) < 1,
                name,
                "in [0, 1)",
            )
        need(
            real(self.whiten_bias_until) and 0 <= self.whiten_bias_until <= 1,
            "whiten_bias_until",
            "in [0, 1]",
        )
        need(
            integer(self.translate) and self.translate >= 0,
            "translate",
            "an integer >= 0",
        )
        need(integer(self.cutout) and self.cutout >= 0, "cutout", "an integer >= 0")
        need(self.flip in FLIP_MODES, "flip", f"one of {', '.join(FLIP_MODES)}")
        need(
            self.ema is None or (real(self.ema) and 0 < self.ema < 1),
            "ema",
            "None or in (0, 1)",
        )
        need(self.amp in AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}")
        need(
            self.time_budget is None or (real(self.time_budget) and self.time_budget > 0),
            "time_budget",
            "None or a positive number of seconds",
        )
        need(
            integer(self.newton_schulz_steps) and self.newton_schulz_steps >= 1,
            "newton_schulz_steps",
            "an integer >= 1",
        )
        need(integer(self.seed), "seed", "an integer")
        need(
            integer(self.eval_batch_size) and self.eval_batch_size >= 1,
            "eval_batch_size",
            "an integer >= 1",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FastTrainResult:
    """What `train_fast` did: ``history`` (per iteration ``loss``; per epoch ``train_acc``,
    ``val_acc`` when validation data was given, ``lr`` and ``seconds`` of training),
    ``epochs`` completed (a fraction when stopped mid-epoch), ``steps``, ``train_seconds``
    (training only, validation excluded), the global ``batch_size`` used and ``notes``."""

    history: dict[str, list[float]]
    epochs: float
    steps: int
    train_seconds: float
    batch_size: int
    notes: list[str] = field(default_factory=list)


def lr_factor(progress: float, warmup: float) -> float:
    """The schedule at ``progress`` in [0, 1]: linear warm-up over ``warmup``, then to 0."""
    if progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def _distributed_accuracy(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    cfg: FastTrainConfig,
    device: torch.device,
) -> float:
    """Accuracy (no TTA) with the images shared out over the processes."""
    rank, world = D.rank_and_world()
    mine = slice(rank, None, world)
    logits = predict_logits(model, X[mine], tta=0, batch_size=cfg.eval_batch_size, amp=cfg.amp)
    correct = float((logits.argmax(1) == y[mine]).sum()) if len(logits) else 0.0
    counts = D.all_reduce_sum(torch.tensor([correct, float(len(y[mine]))], device=device))
    return float(counts[0] / counts[1])


# ---------------------------------------------------------------------------------------------
# Training


def _param_groups(model: nn.Module, cfg: FastTrainConfig, batch_size: int) -> dict[str, Any]:
    """Filters (4-D) → Muon; the whitening bias, other 1-D shifts and 2-D weights → SGD."""
    whiten_bias = None
    if isinstance(model, FastResNet) and model.whiten.bias.requires_grad:
        whiten_bias = model.whiten.bias
    filters, biases, heads = [], [], []
    for p in model.parameters():
        if not p.requires_grad or (isinstance(model, FastResNet) and p is model.whiten.bias):
            continue
        (filters if p.ndim == 4 else heads if p.ndim >= 2 else biases).append(p)
    wd = cfg.weight_decay * batch_size
    groups = []
    for name, params, lr in (
        ("whiten_bias", [whiten_bias] if whiten_bias is not None else [], cfg.bias_lr),
        ("biases", biases, cfg.bias_lr),
        ("head", heads, cfg.head_lr),
    ):
        if params:
            decay = wd / lr if lr > 0 else 0.0
            groups.append({"params": params, "lr": lr, "weight_decay": decay, "name": name})
    sgd = torch.optim.SGD(groups, lr=cfg.bias_lr, momentum=cfg.sgd_momentum, nesterov=True)
    muon = Muon(filters, cfg.lr, cfg.momentum, nesterov=True, ns_steps=cfg.newton_schulz_steps)
    return {"sgd": sgd, "muon": muon, "base": {g["name"]: g["lr"] for g in groups}}


def _save_state(
    directory: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    opt: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> None:
    """Everything needed to go on after this epoch, as one atomic ``state.safetensors``.

    Tensors: ``model.<name>``, ``ema.<name>`` and ``<optimizer>.<parameter name>`` (momentum
    buffers); the counters, history and config are JSON in the file's metadata, so the file
    is complete or absent, never half of one epoch and half of another.
    """
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema_model is not None:
        arrays.update({f"ema.{k}": v for k, v in ema_model.state_dict().items()})
    names = {id(p): n for n, p in model.named_parameters()}
    for kind in ("muon", "sgd"):
        for group in opt[kind].param_groups:
            for p in group["params"]:
                buf = opt[kind].state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    arrays[f"{kind}.{names[id(p)]}"] = buf
    numpy_arrays = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    save_safetensors(
        directory / "state.safetensors",
        numpy_arrays,
        metadata={"format": STATE_FORMAT, "state": json.dumps(dict(meta))},
    )


def _load_state(directory: Path, cfg: FastTrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, tensors)`` of ``directory/state.safetensors``, checked against ``cfg``."""
    path = directory / "state.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    header = read_safetensors_metadata(path)
    if header.get("format") != STATE_FORMAT or "state" not in header:
        raise ValueError(f"{path}: not a {STATE_FORMAT} file")
    meta = json.loads(header["state"])
    saved, now = meta["config"], cfg.to_dict()
    differ = sorted(k for k in now if k != "eval_batch_size" and saved.get(k) != now[k])
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise ValueError(f"{path}: saved with other settings ({changes}); resume with the same")
    tensors = {k: torch.from_numpy(v) for k, v in load_safetensors(path).items()}
    return meta, tensors


def _restore(
    model: nn.Module,
    ema_model: nn.Module | None,
    opt: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    if ema_model is not None:
        ema_model.load_state_dict(part("ema."))
    names = {id(p): n for n, p in model.named_parameters()}
    for kind in ("muon", "sgd"):
        saved = part(f"{kind}.")
        for group in opt[kind].param_groups:
            for p in group["params"]:
                if names[id(p)] in saved:
                    buf = saved[names[id(p)]].to(device=p.device, dtype=p.dtype)
                    opt[kind].state[p]["momentum_buffer"] = buf


def _checkpoint(model: nn.Module, directory: Path, meta: Mapping[str, Any]) -> None:
    """Rank 0 writes the weights as ``last.safetensors`` + ``last.json``, atomically."""
    if isinstance(model, FastResNet):
        save_model(model, directory / "last", meta)
        return
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    save_safetensors(directory / "last.safetensors", arrays)
    write_json(directory / "last.json", dict(meta))


def train_fast(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    config: FastTrainConfig | None = None,
    *,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> FastTrainResult:
    """Train ``model`` in place with the fast recipe; see the module docstring.

    Parameters
    ----------
    model : a `FastResNet` (any ``nn.Module`` taking pixels ``(N, C, H, W)`` also trains, without
        the whitening and normalisation set-up)
    X : ndarray of shape (N, H, W, C), uint8 — training images
    y : ndarray of shape (N,), int — labels
    config : the hyperparameters (default `FastTrainConfig()`)
    X_val, y_val : optional validation images and labels, scored (without TTA) after each epoch
    device : where to train ("auto": CUDA, then MPS, then the CPU); in a process group, pass
        this process's device (`pix2pred.nn_torch.distributed.init_from_env` gives it)
    checkpoint_dir : if given, rank 0 writes there after every epoch the weights (``last.*``,
        the averaged ones with ``ema``) and the whole training state (``state.safetensors``)
    resume : go on from the training state in ``checkpoint_dir`` (written by a run with the
        same data and config; it continues from the last completed epoch exactly as the
        interrupted run would have, except for time-budgeted runs). Every process reads it, so
        under torchrun the folder must be visible to all of them.
    progress : called by rank 0 after each epoch with that epoch's numbers

    In a ``torch.distributed`` process group every process calls this with the same data and
    config; each trains on its share of every global batch (see `DistributedBatchSampler`).
    """
    from pix2pred.nn_torch.train import choose_device

    cfg = config or FastTrainConfig()
    X, y = _check_data(X, y)
    if (X_val is None) != (y_val is None):
        raise ValueError("give both X_val and y_val, or neither")
    if X_val is not None:
        X_val, y_val = _check_data(X_val, y_val, "X_val")
    dev = choose_device(device)
    rank, world = D.rank_and_world()
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and ckpt is None:
        raise ValueError("resume=True needs the checkpoint_dir of the interrupted run")
    notes: list[str] = []
    t_start = time.perf_counter()

    N = len(y)
    batch = cfg.batch_size
    if batch > N:
        batch = N - N % world
        notes.append(f"batch_size {cfg.batch_size} > {N} training images: using {batch}")
    if batch < world or batch % world:
        raise ValueError(f"batch_size {batch} must be a positive multiple of the {world} processes")
    sampler = D.DistributedBatchSampler(N, batch, rank=rank, world_size=world, seed=cfg.seed)
    steps_per_epoch = len(sampler)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))

    mean, std = channel_mean_std(X)
    if isinstance(model, FastResNet):
        model.set_input_stats(mean, np.maximum(std, 1e-3))
        rng = np.random.default_rng(cfg.seed)
        some = np.sort(rng.choice(N, size=min(N, WHITENING_IMAGES), replace=False))
        model.init_whitening(_images(X[some], torch.device("cpu"), torch.float32))
        model.whiten.bias.requires_grad_(cfg.whiten_bias_until > 0)
    meta, tensors = _load_state(ckpt, cfg) if resume and ckpt is not None else ({}, {})
    if meta.get("whiten_bias_frozen") and isinstance(model, FastResNet):
        model.whiten.bias.requires_grad_(False)
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = next(model.parameters()).dtype
    amp_dtype = resolve_amp(cfg.amp, dev, dtype)
    model.train()
    net = D.wrap_model(model, dev, cfg.sync_bn)
    opt = _param_groups(model, cfg, batch)
    ema_model = copy.deepcopy(model) if cfg.ema else None
    if tensors:
        _restore(model, ema_model, opt, tensors)
        del tensors
    aug = _Augmenter(X, cfg, dev, fill=mean)
    labels = torch.from_numpy(y).to(dev)
    if ckpt is not None and rank == 0:
        ckpt.mkdir(parents=True, exist_ok=True)

    history: dict[str, list[float]] = {
        "loss": [],
        "train_acc": [],
        "lr": [],
        "seconds": [],
    }
    if X_val is not None:
        history["val_acc"] = []
    train_seconds = time.perf_counter() - t_start
    step, epoch, progress_p = 0, 0, 0.0
    if meta:
        history = meta["history"]
        step, epoch, train_seconds = meta["step"], meta["epoch"], meta["train_seconds"]
        progress_p = meta["progress"]
    while progress_p < 1.0:
        t_epoch = time.perf_counter()
        sampler.set_epoch(epoch)
        aug.start_epoch(epoch)
        correct = seen = 0.0
        factor = 0.0
        for idx in sampler:
            factor = lr_factor(progress_p, cfg.warmup)
            for g in opt["sgd"].param_groups:
                if g["name"] == "whiten_bias":
                    wb = cfg.whiten_bias_until
                    g["lr"] = opt["base"][g["name"]] * max(0.0, 1.0 - progress_p / wb)
                else:
                    g["lr"] = opt["base"][g["name"]] * factor
            for g in opt["muon"].param_groups:
                g["lr"] = cfg.lr * factor

            x = aug.batch(idx, dtype)
            yb = labels[idx.to(dev)]
            with torch.autocast(
                dev.type, dtype=amp_dtype or torch.bfloat16, enabled=bool(amp_dtype)
            ):
                logits = net(x)
            logits = logits.to(torch.promote_types(dtype, torch.float32))
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing, reduction="sum")
            # DDP averages gradients over processes; scaling by the world size makes the
            # result the gradient of the loss summed over the global batch.
            (loss * world).backward()
            opt["muon"].step()
            opt["sgd"].step()
            model.zero_grad(set_to_none=True)
            step += 1

            stats = torch.stack(
                [
                    loss.detach().to(torch.float64),
                    (logits.detach().argmax(1) == yb).sum().to(torch.float64),
                    torch.tensor(float(len(yb)), dtype=torch.float64, device=dev),
                ]
            )
            stats = D.all_reduce_sum(stats).tolist()
            history["loss"].append(stats[0] / stats[2])
            correct, seen = correct + stats[1], seen + stats[2]

            elapsed = train_seconds + time.perf_counter() - t_epoch
            progress_p = step / total_steps
            if cfg.time_budget is not None:
                # Every process must follow rank 0's clock, or their schedules would part.
                elapsed_0 = D.broadcast_float(elapsed, dev)
                progress_p = max(progress_p, elapsed_0 / cfg.time_budget)
            if ema_model is not None:
                _ema_update(ema_model, model, cfg.ema * progress_p**3)
            if (
                isinstance(model, FastResNet)
                and model.whiten.bias.requires_grad
                and progress_p >= cfg.whiten_bias_until
            ):
                model.whiten.bias.requires_grad_(False)
                # DDP fixes the set of parameters it reduces when it is built.
                net = D.wrap_model(model, dev, cfg.sync_bn)
            if progress_p >= 1.0:
                break
        epoch_seconds = time.perf_counter() - t_epoch
        train_seconds += epoch_seconds
        D.broadcast_buffers(model)
        history["train_acc"].append(correct / max(seen, 1.0))
        history["lr"].append(cfg.lr * factor)
        history["seconds"].append(epoch_seconds)
        eval_model = ema_model if ema_model is not None else model
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "epochs_done": step / steps_per_epoch,
            "train_loss": float(np.mean(history["loss"][-steps_per_epoch:])),
            "train_acc": history["train_acc"][-1],
            "train_seconds": train_seconds,
        }
        if X_val is not None:
            D.broadcast_buffers(eval_model)
            record["val_acc"] = _distributed_accuracy(eval_model, X_val, y_val, cfg, dev)
            history["val_acc"].append(record["val_acc"])
        if rank == 0:
            if ckpt is not None:
                _checkpoint(eval_model, ckpt, {**record, "config": cfg.to_dict()})
                frozen = isinstance(model, FastResNet) and not model.whiten.bias.requires_grad
                state = {
                    "epoch": epoch + 1,
                    "step": step,
                    "progress": progress_p,
                    "train_seconds": train_seconds,
                    "history": history,
                    "whiten_bias_frozen": frozen,
                    "config": cfg.to_dict(),
                }
                _save_state(ckpt, model, ema_model, opt, state)
            if progress is not None:
                progress(record)
        epoch += 1

    if ema_model is not None:
        model.load_state_dict(ema_model.state_dict())
    D.broadcast_buffers(model)
    model.eval()
    return FastTrainResult(history, step / steps_per_epoch, step, train_seconds, batch, notes)


@torch.no_grad()
def _ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """Move every float parameter and buffer of ``ema_model`` towards ``model``'s."""
    live = model.state_dict()
    for name, value in ema_model.state_dict().items():
        if value.is_floating_point():
            value.lerp_(live[name], 1.0 - decay)
        else:
            value.copy_(live[name])
