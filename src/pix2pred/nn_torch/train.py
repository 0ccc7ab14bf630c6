"""Training torch models: the device, mixed precision, channels-last, determinism, the Solver.

`TorchSolver` is :class:`pix2pred.solver.Solver` with its backend hooks done in torch: the same
keywords, histories, best parameters, early stopping, NaN stop, checkpoints (the same
safetensors files, parameters under the numpy names and layout) and bit-identical resume. The
training set moves to the device once; each batch is gathered and augmented there
(`pix2pred.nn_torch.augment`); the update is ``torch.optim`` configured as the numpy rule
(`pix2pred.nn_torch.optim`), so from the same weights and batches both backends follow the same
trajectory (in float64, without augmentation or dropout, whose random draws differ).

What runs where:

- `choose_device`: ``"auto"`` takes CUDA, then Apple's MPS, then the CPU.
- Mixed precision (``amp``: bf16 or fp16 autocast, fp16 with a gradient scaler) and
  channels-last memory format are CUDA features; asked for elsewhere they are skipped with a
  note (``solver.notes``), never an error.
- ``deterministic=True`` turns on ``torch.use_deterministic_algorithms`` (and deterministic
  cuDNN) while training; every random draw already comes from seeded generators (the solver's
  ``numpy.random.Generator``, which also seeds each batch's augmentation generator, and the
  model's ``rng`` for dropout), so the same seed gives the same run. The global torch
  generator is never used.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pix2pred.nn_torch import augment as torch_augment
from pix2pred.nn_torch.optim import make_optimizer, set_lr
from pix2pred.solver import Solver

__all__ = [
    "AMP_MODES",
    "TorchSolver",
    "choose_device",
    "deterministic_mode",
    "resolve_amp",
    "resolve_channels_last",
]

AMP_MODES = ("auto", "bf16", "fp16", "none")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def choose_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device to train on: ``"auto"`` (or None) takes CUDA, then MPS, then the CPU.

    Parameters
    ----------
    device : "auto", "cpu", "cuda", "cuda:N", "mps", a torch.device, or None

    Raises
    ------
    ValueError
        For a device that is not one of those, or that this machine does not have.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r}: CUDA is not available here (torch {torch.__version__}); "
            "use device='cpu' or 'auto'"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {str(device)!r}: MPS is not available here; use 'cpu' or 'auto'")
    return dev


def resolve_amp(
    amp: str | None, device: torch.device, dtype: torch.dtype
) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype for ``amp`` on ``device`` with parameters of ``dtype``, and a note.

    ``"auto"`` is bf16 on a CUDA device that has it, for float32 models, and nothing
    elsewhere; ``"bf16"``/``"fp16"`` ask for it, and get a note instead where it does not apply
    (not CUDA, not a float32 model); ``"none"`` or None never uses it.

    Returns
    -------
    amp_dtype : torch.bfloat16, torch.float16 or None (full precision)
    note : str or None, why a requested mode is not used
    """
    mode = "none" if amp is None else amp
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)} or None, got {amp!r}")
    if mode == "none":
        return None, None
    precision = str(dtype).removeprefix("torch.")
    if device.type != "cuda":
        note = f"amp={mode!r} runs on CUDA only: training in {precision} on {device.type}"
        return None, None if mode == "auto" else note
    if dtype != torch.float32:
        note = f"amp={mode!r} applies to float32 models: training in {precision}"
        return None, None if mode == "auto" else note
    if mode == "auto":
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else None), None
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("amp='bf16': this GPU has no bfloat16 support; use amp='fp16'")
    return _AMP_DTYPES[mode], None


def resolve_channels_last(
    channels_last: bool | None, device: torch.device, model: nn.Module
) -> tuple[bool, str | None]:
    """Whether to keep images and conv weights channels-last, and a note when it is refused.

    None decides: on for a model with conv weights (4-D parameters) on CUDA. True asks for it
    and gets a note instead on another device or a model without convolutions.
    """
    conv = any(p.ndim == 4 for p in model.parameters())
    if channels_last is None:
        return device.type == "cuda" and conv, None
    if not channels_last:
        return False, None
    if device.type != "cuda":
        return False, f"channels_last applies on CUDA only: ignored on {device.type}"
    if not conv:
        return False, "channels_last applies to conv nets: ignored for this model"
    return True, None


@contextlib.contextmanager
def deterministic_mode(
    enabled: bool = True, device: torch.device | str | None = None
) -> Iterator[None]:
    """Run the block with deterministic algorithms (``enabled``), restoring the flags after.

    ``enabled=True``: ``torch.use_deterministic_algorithms(True)``, deterministic cuDNN without
    benchmarking and, on CUDA, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when it is unset (cuBLAS
    needs it). An op without a deterministic kernel then raises torch's ``RuntimeError``.
    ``enabled=False`` on CUDA lets cuDNN benchmark its algorithms (unless deterministic
    algorithms were already on).
    """
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    cuda = device is not None and torch.device(device).type == "cuda"
    if enabled:
        if cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        cudnn.deterministic, cudnn.benchmark = True, False
    elif cuda and not saved[0]:
        cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A C-ordered numpy copy of a tensor on any device (channels-last weights included)."""
    return np.ascontiguousarray(t.detach().cpu().numpy()).copy()


class TorchSolver(Solver):
    """The :class:`pix2pred.solver.Solver` for `pix2pred.nn_torch.models` (any ``nn.Module``
    whose ``loss(X, y)`` returns the data-loss tensor and ``loss(X)`` the scores).

    Parameters
    ----------
    model : nn.Module
        Moved to ``device``; its parameters are trained in place.
    data : mapping
        As for the Solver: numpy arrays ``X_train (N, ...)``, ``y_train (N,)``, ``X_val``,
        ``y_val``. The training set is copied to the device once, in the model's dtype.
    device : str or torch.device, optional
        See `choose_device`; None keeps the model where it is.
    amp : {"auto", "bf16", "fp16", "none"} or None
        Mixed precision on CUDA, see `resolve_amp`.
    channels_last : bool, optional
        Channels-last images and conv weights on CUDA, see `resolve_channels_last`.
    deterministic : bool
        Train under `deterministic_mode`.
    **kwargs
        Every keyword of the Solver. ``augment`` is a spec string (done on the device) or a
        callable ``augment(X, generator) -> X`` over ``(B, C, H, W)`` tensors.

    Attributes
    ----------
    device : torch.device
    amp_dtype : torch.dtype or None
        The autocast dtype in use.
    torch_optimizer : torch.optim.Optimizer
    notes : list of str
        Requests that did not apply here (AMP or channels-last off CUDA).
    """

    backend = "torch"

    def __init__(
        self,
        model: nn.Module,
        data: Mapping[str, Any],
        *,
        device: str | torch.device | None = None,
        amp: str | None = "auto",
        channels_last: bool | None = None,
        deterministic: bool = False,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(model, nn.Module) and callable(getattr(model, "loss", None))):
            raise TypeError(f"model must be an nn.Module with a loss method, got {model!r}")
        first = next(model.parameters(), None)
        if first is None:
            raise ValueError(f"{type(model).__name__} has no parameters to train")
        self.device = first.device if device is None else choose_device(device)
        if self.device.type == "mps" and first.dtype == torch.float64:
            raise ValueError("MPS has no float64: use a float32 model (dtype='float32') or 'cpu'")
        self.amp, self.deterministic = amp, bool(deterministic)
        self._channels_last_arg = channels_last
        self.amp_dtype, amp_note = resolve_amp(amp, self.device, first.dtype)
        self.channels_last, layout_note = resolve_channels_last(channels_last, self.device, model)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.scaler = (
            torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        )
        super().__init__(model, data, **kwargs)
        self.notes += [note for note in (amp_note, layout_note) if note]
        self._X_train = self._on_device(self.X_train)
        self._y_train = torch.as_tensor(
            self.y_train, dtype=torch.int64, device=self._X_train.device
        )

    def _on_device(self, X: np.ndarray) -> torch.Tensor:
        """``X`` as a tensor of the model's dtype on the device, or pinned in host memory when
        the device has no room for it (batches then move one at a time)."""
        dtype = next(self.model.parameters()).dtype
        try:
            return torch.as_tensor(X, dtype=dtype, device=self.device)
        except torch.OutOfMemoryError:
            self.notes.append(
                f"the training set does not fit on {self.device}: kept in host memory"
            )
            return torch.as_tensor(X, dtype=dtype).pin_memory()

    # ------------------------------------------------------------------------ construction

    def _init_optimizer(self, base: Mapping[str, Any]) -> None:
        self.torch_optimizer = make_optimizer(self.optimizer, self.model, **base)

    def _make_augment(self, spec: str | None) -> Callable[..., Any] | None:
        return torch_augment.make_augment(spec)

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "amp": self.amp,
            "channels_last": self._channels_last_arg,
            "deterministic": self.deterministic,
        }

    # ------------------------------------------------------------------------ training

    def train(self) -> TorchSolver:
        with deterministic_mode(self.deterministic, self.device):
            super().train()
        return self

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(idx).to(self._X_train.device)
        X = self._X_train[i].to(self.device, non_blocking=True)  # (B, ...)
        y = self._y_train[i].to(self.device, non_blocking=True)  # (B,)
        if self.augment is not None:
            # A fresh generator per batch, seeded from the solver's rng: resume needs no more.
            seed = int(self.rng.integers(2**63))
            X = self.augment(X, torch.Generator(device=self.device).manual_seed(seed))
        if self.channels_last:
            X = X.contiguous(memory_format=torch.channels_last)
        return X, y

    def _step(self, X_batch: torch.Tensor, y_batch: torch.Tensor) -> float:
        """Forward, backward and one ``torch.optim`` step on a batch; return the loss.

        A loss or updated parameter that is not finite raises `TrainingDivergedError`, and the
        Solver then restores the snapshot taken before the iteration (`_snapshot`).
        """
        lr = self.schedule(self.step)
        set_lr(self.torch_optimizer, lr)
        self.torch_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.model.loss(X_batch, y_batch)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.torch_optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.torch_optimizer.step()
        names, params = zip(*self.model.named_parameters(), strict=True)
        # One transfer for the loss and every finiteness flag: a single sync per step.
        wide = torch.float32 if self.device.type == "mps" else torch.float64  # MPS: no float64
        finite = [p.detach().isfinite().all().to(wide) for p in params]
        checks = torch.stack([loss.detach().to(wide), *finite]).tolist()
        loss_value = checks[0]
        if not math.isfinite(loss_value):
            raise self._diverged(f"the loss is {loss_value}", lr)
        for name, ok in zip(names, checks[1:], strict=True):
            if not ok:
                raise self._diverged(f"the update of {name!r} is not finite", lr)
        self._last_lr = lr
        return loss_value

    def _snapshot(self) -> Any:
        rng = getattr(self.model, "rng", None)
        state = self.torch_optimizer.state
        return (
            self.rng.bit_generator.state,
            rng.get_state() if isinstance(rng, torch.Generator) else None,
            [p.detach().clone() for p in self.model.parameters()],
            [b.clone() for b in self.model.buffers()],
            {
                p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                for p, s in state.items()
            },
            self.scaler.state_dict() if self.scaler is not None else None,
        )

    def _restore(self, snapshot: Any) -> None:
        rng_state, model_rng, params, buffers, optim_state, scaler = snapshot
        self.rng.bit_generator.state = rng_state
        if model_rng is not None:
            self.model.rng.set_state(model_rng)
        with torch.no_grad():
            for p, saved in zip(self.model.parameters(), params, strict=True):
                p.copy_(saved)
            for b, saved in zip(self.model.buffers(), buffers, strict=True):
                b.copy_(saved)
        self.torch_optimizer.state.clear()
        self.torch_optimizer.state.update(optim_state)
        if scaler is not None:
            self.scaler.load_state_dict(scaler)

    # ------------------------------------------------------------------------ evaluation

    def _predict_scores(self, X_batch: np.ndarray) -> np.ndarray:
        dtype = next(self.model.parameters()).dtype
        x = torch.as_tensor(X_batch).to(self.device, dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), self._autocast():
            scores = self.model.loss(x)  # (B, C), eval mode
        return scores.to(dtype).cpu().numpy()

    # ------------------------------------------------------------------------ state as numpy

    def _params_copy(self) -> dict[str, np.ndarray]:
        return {k: _to_numpy(v) for k, v in self.model.named_parameters()}

    def _set_params(self, params: Mapping[str, np.ndarray]) -> None:
        _copy_into(dict(self.model.named_parameters()), params)

    def _buffers_copy(self) -> dict[str, np.ndarray]:
        return {k: _to_numpy(v) for k, v in self.model.named_buffers()}

    def _set_buffers(self, buffers: Mapping[str, np.ndarray]) -> None:
        _copy_into(dict(self.model.named_buffers()), buffers)

    def _model_rng_state(self) -> np.ndarray | None:
        rng = getattr(self.model, "rng", None)
        return rng.get_state().numpy().copy() if isinstance(rng, torch.Generator) else None

    def _set_model_rng_state(self, state: np.ndarray | None) -> None:
        if state is not None:
            self.model.rng.set_state(torch.from_numpy(np.array(state, dtype=np.uint8)))

    def _optimizer_state(self) -> dict[str, dict[str, Any]]:
        state = self.torch_optimizer.state
        return {
            name: {
                k: _to_numpy(v) if torch.is_tensor(v) else v for k, v in state.get(p, {}).items()
            }
            for name, p in self.model.named_parameters()
        }

    def _load_optimizer_state(self, saved: Mapping[str, Mapping[str, Any]]) -> None:
        # torch.optim puts each value on its parameter's device and dtype (the step stays a
        # CPU float32 scalar); the hyperparameters of the groups are the ones given now.
        names = {id(p): name for name, p in self.model.named_parameters()}
        order = [
            names[id(p)] for group in self.torch_optimizer.param_groups for p in group["params"]
        ]
        state_dict = self.torch_optimizer.state_dict()
        state_dict["state"] = {
            i: {
                k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                for k, v in saved[name].items()
            }
            for i, name in enumerate(order)
            if saved.get(name)
        }
        self.torch_optimizer.load_state_dict(state_dict)

    def _extra_state(self) -> dict[str, Any]:
        return {"grad_scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])


def _copy_into(tensors: Mapping[str, torch.Tensor], arrays: Mapping[str, np.ndarray]) -> None:
    """Copy numpy arrays into same-named tensors in place (any device, dtype cast)."""
    with torch.no_grad():
        for name, value in arrays.items():
            tensors[name].copy_(torch.from_numpy(np.asarray(value)))
