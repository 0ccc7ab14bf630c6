"""The CS231n-style Solver: minibatch training over epochs, with history and checkpoints.

One :class:`Solver` trains any model of the contract (``params``, ``buffers``, ``rng`` and
``loss(X, y=None)``) with any update rule of :mod:`pix2pred.nn_numpy.optim` and any schedule of
:mod:`pix2pred.schedules`, stepped once per iteration. Its histories are public, as in the
course. Beyond the course it is built to survive long runs:

- a non-finite loss or update stops training with :class:`TrainingDivergedError`, naming the step
  and the learning rate; the model keeps its last good parameters and no checkpoint is written;
- with ``checkpoint_dir`` every epoch ends with a checkpoint (safetensors arrays plus a JSON
  state, written atomically; see :mod:`pix2pred.solver_state`), and Ctrl-C leaves one too
  before ``KeyboardInterrupt`` propagates;
- :meth:`Solver.resume` continues a run bit for bit: all randomness comes from the solver's own
  ``numpy.random.Generator`` and the model's ``rng``, and both are saved.

Everything that touches the model or the optimizer is a small backend hook: the step
(:meth:`Solver._step`), prediction (:meth:`Solver._predict_scores`), batching, snapshots and the
getters and setters of parameters, buffers, generator and optimizer state, all in numpy arrays.
`pix2pred.nn_torch.train.TorchSolver` overrides just those to train torch models.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred import solver_state
from pix2pred.checkpoint import read_json
from pix2pred.data.augment import Augment, make_augment
from pix2pred.nn_numpy.optim import get_update_rule
from pix2pred.schedules import Schedule, WarmupLR, make_schedule
from pix2pred.solver_progress import ProgressBar
from pix2pred.solver_state import STATE_FILE

__all__ = ["STATE_FILE", "Solver", "TrainingDivergedError"]

_DATA_KEYS = ("X_train", "y_train", "X_val", "y_val")
# The rules with a momentum hyperparameter (torch's SGD and RMSprop); Adam's is betas[0].
_MOMENTUM_RULES = ("sgd", "sgd_momentum", "nesterov", "rmsprop")


class TrainingDivergedError(FloatingPointError):
    """The loss or an updated parameter became NaN or infinite."""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_count(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not (_is_int(value) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_data(data: Mapping[str, Any]) -> dict[str, np.ndarray | None]:
    """The four arrays of ``data``; ``X_val``, ``y_val`` are None when there is no validation."""
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping with keys {_DATA_KEYS}, got {type(data).__name__}")
    missing = [key for key in _DATA_KEYS[:2] if key not in data]
    if missing:
        raise ValueError(f"data is missing {', '.join(missing)}; expected keys {_DATA_KEYS}")
    arrays: dict[str, np.ndarray | None] = {}
    for split in ("train", "val"):
        X, y = data.get(f"X_{split}"), data.get(f"y_{split}")
        if split == "val" and (X is None) != (y is None):
            raise ValueError("data has one of X_val and y_val but not the other")
        if split == "val" and (X is None or len(X) == 0):
            arrays["X_val"] = arrays["y_val"] = None
            continue
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim < 2:
            raise ValueError(f"X_{split} must have shape (N, ...) with N samples, got {X.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"y_{split} must be integer labels of shape (N,), got {y.dtype} {y.shape}"
            )
        if len(X) != len(y):
            raise ValueError(f"X_{split} has {len(X)} samples but y_{split} has {len(y)} labels")
        if len(X) == 0:
            raise ValueError(f"X_{split} is empty")
        arrays[f"X_{split}"], arrays[f"y_{split}"] = X, y
    return arrays


class Solver:
    """Train a classifier with minibatch gradient descent, as the CS231n Solver does.

    Parameters
    ----------
    model
        Has ``params`` (dict of ndarrays), ``loss(X, y=None)`` returning scores ``(N, C)``
        without labels and ``(loss, grads)`` with them, and optionally ``buffers`` (dict of
        ndarrays, e.g. batch-norm running statistics), ``rng`` (its ``numpy.random.Generator``)
        and ``config()``.
    data : mapping
        ``X_train (N, ...)``, ``y_train (N,)``, ``X_val (M, ...)``, ``y_val (M,)``: float inputs
        already preprocessed (NCHW for images) and int labels. Without validation data (the
        ``X_val`` and ``y_val`` keys missing, None or empty) no validation accuracy is recorded
        and the model keeps the last epoch's parameters.
    optimizer : str
        A rule of :mod:`pix2pred.nn_numpy.optim`: "sgd", "sgd_momentum", "nesterov", "rmsprop",
        "adam", "adamw".
    optim_config : dict, optional
        Hyperparameters for the rule (``momentum``, ``betas``, ``eps``, ``alpha``, ...); its
        ``lr``, ``momentum`` and ``weight_decay``, when given, take precedence over the keywords
        below.
    lr : float
        Base learning rate, the schedule's peak.
    momentum : float, optional
        Momentum of "sgd", "sgd_momentum", "nesterov" and "rmsprop", with torch's meaning (so
        "sgd" with a momentum is momentum SGD); ignored by "adam" and "adamw", whose momentum is
        ``betas[0]``. None: the rule's default.
    weight_decay : float, optional
        PyTorch's ``weight_decay`` of the rule, applied only to parameters whose name starts with
        "W" (never to biases, gamma or beta). ``None``: the rule's default (0, and 1e-2 for
        "adamw", as torch).
    schedule : str or Schedule
        "constant", "step", "exponential", "inverse_time", "cosine", or any callable
        ``schedule(step) -> lr`` with an ``lr`` attribute. Steps are iterations.
    schedule_kwargs : dict, optional
        Extra arguments of a named schedule, in iterations (``step_size``, ``gamma``, ``decay``,
        ``min_lr``).
    warmup_epochs : int
        Epochs of linear warm-up before the schedule.
    batch_size, epochs : int
    augment : str or callable, optional
        A spec of :func:`pix2pred.data.augment.make_augment` ("flip,crop") or a callable
        ``augment(X, rng) -> X``, applied to each training batch.
    seed : int
        Seeds the solver's generator (shuffling, augmentation, accuracy subsamples).
    checkpoint_dir : path, optional
        Folder for the checkpoint written after each epoch and on Ctrl-C. A folder that already
        holds one is refused unless ``resume=True``.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one.
    early_stopping : int, optional
        Stop after this many epochs without a better validation accuracy.
    restore_best : bool
        Load the parameters (and buffers) of the best validation epoch into the model at the end.
    num_train_samples : int, optional
        Training accuracy is measured on this many samples, a seeded subsample drawn anew each
        epoch (None: all of them).
    num_val_samples : int, optional
        Validation accuracy on a fixed seeded subsample of this size (None: all of them).
    drop_last : bool
        Skip the last, incomplete batch of each epoch.
    progress : bool
        Show a progress bar with loss and accuracies.
    verbose : bool
        Print one summary line per epoch.
    callback : callable, optional
        ``callback(solver)`` after every iteration.
    epoch_callback : callable, optional
        ``epoch_callback(solver)`` after every epoch (and its checkpoint).

    Attributes
    ----------
    loss_history : list of float
        Training loss of every iteration.
    train_acc_history, val_acc_history, lr_history : list of float
        Per epoch; ``lr_history`` holds the rate of the epoch's last update.
    best_val_acc : float
    best_epoch : int
        1-based epoch of ``best_val_acc`` (0 before the first epoch ends).
    best_params, best_buffers : dict of ndarray or None
    epoch, step : int
        Epochs and iterations completed.
    stopped_early : bool
    notes : list of str
        What the backend changed from what was asked (printed when training starts, if verbose).
    backend : str
        "numpy" here; checkpoints record it and resume only in the same backend.
    """

    def __init__(
        self,
        model: Any,
        data: Mapping[str, Any],
        *,
        optimizer: str = "adam",
        optim_config: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        momentum: float | None = None,
        weight_decay: float | None = None,
        schedule: str | Schedule = "constant",
        schedule_kwargs: Mapping[str, Any] | None = None,
        warmup_epochs: int = 0,
        batch_size: int = 128,
        epochs: int = 10,
        augment: str | Augment | None = None,
        seed: int = 0,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        early_stopping: int | None = None,
        restore_best: bool = True,
        num_train_samples: int | None = 1000,
        num_val_samples: int | None = None,
        drop_last: bool = False,
        progress: bool = True,
        verbose: bool = True,
        callback: Callable[[Solver], None] | None = None,
        epoch_callback: Callable[[Solver], None] | None = None,
    ) -> None:
        if not (isinstance(getattr(model, "params", None), dict) and callable(model.loss)):
            raise TypeError(f"model must have a params dict and a loss method, got {model!r}")
        self.model = model
        self.notes: list[str] = []
        arrays = _check_data(data)
        self.X_train, self.y_train = arrays["X_train"], arrays["y_train"]
        self.X_val, self.y_val = arrays["X_val"], arrays["y_val"]

        _check_count("batch_size", batch_size, 1)
        _check_count("epochs", epochs, 1)
        _check_count("warmup_epochs", warmup_epochs, 0)
        _check_count("seed", seed, 0)
        _check_count("early_stopping", early_stopping, 1, allow_none=True)
        _check_count("num_train_samples", num_train_samples, 1, allow_none=True)
        _check_count("num_val_samples", num_val_samples, 1, allow_none=True)
        if early_stopping is not None and self.X_val is None:
            raise ValueError(
                f"early_stopping={early_stopping} needs validation data (X_val, y_val)"
            )
        if warmup_epochs >= epochs:
            raise ValueError(
                f"warmup_epochs ({warmup_epochs}) must be smaller than epochs ({epochs})"
            )
        num_train = len(self.X_train)
        self.iterations_per_epoch = (
            num_train // batch_size if drop_last else -(-num_train // batch_size)
        )
        if self.iterations_per_epoch == 0:
            raise ValueError(
                f"drop_last with batch_size {batch_size} leaves no batch of {num_train} samples"
            )
        self.batch_size, self.epochs, self.seed = batch_size, epochs, seed
        self.warmup_epochs, self.early_stopping, self.drop_last = (
            warmup_epochs,
            early_stopping,
            drop_last,
        )
        self.num_train_samples, self.num_val_samples = num_train_samples, num_val_samples
        self.restore_best, self.progress, self.verbose = restore_best, progress, verbose
        self.callback, self.epoch_callback = callback, epoch_callback

        self.optimizer = optimizer
        get_update_rule(optimizer)  # a clear error for an unknown name, in either backend
        self._optim_config = dict(optim_config or {})
        base = {"lr": lr, **self._optim_config}
        if weight_decay is not None:
            base.setdefault("weight_decay", weight_decay)
        if momentum is not None and optimizer in _MOMENTUM_RULES:
            base.setdefault("momentum", momentum)
        if not (isinstance(base["lr"], numbers.Real) and base["lr"] >= 0):
            raise ValueError(f"Invalid learning rate: {base['lr']}")
        self.lr, self.momentum, self.weight_decay = float(base["lr"]), momentum, weight_decay
        self._init_optimizer(base)

        self.schedule_name = schedule if isinstance(schedule, str) else None
        self._schedule_kwargs = dict(schedule_kwargs or {})
        self.schedule = self._build_schedule(schedule)
        self.augment_spec = augment if isinstance(augment, str) or augment is None else None
        self.augment = self._make_augment(augment) if self.augment_spec is not None else augment
        if self.augment is not None and not callable(self.augment):
            raise TypeError(f"augment must be a spec string or a callable, got {augment!r}")

        self.rng = np.random.default_rng(seed)
        self.epoch = self.step = self.batch = 0
        self._perm: np.ndarray | None = None
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.lr_history: list[float] = []
        self.best_val_acc, self.best_epoch = 0.0, 0
        self.best_params: dict[str, np.ndarray] | None = None
        self.best_buffers: dict[str, np.ndarray] | None = None
        self.stopped_early = False
        self._last_lr = self.schedule(0)
        self._in_iteration = self._sigint_pending = False

        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")
        if self.checkpoint_dir is not None and (self.checkpoint_dir / STATE_FILE).exists():
            if not resume:
                raise ValueError(
                    f"{self.checkpoint_dir} already holds a checkpoint; pass resume=True to "
                    "continue it, or choose another checkpoint_dir"
                )
            solver_state.restore(self, *solver_state.read_checkpoint(self.checkpoint_dir))

    # ----------------------------------------------------------------------------- construction

    backend = "numpy"

    def _init_optimizer(self, base: Mapping[str, Any]) -> None:
        """One config per parameter; weight decay only on "W" weights (torch's two groups)."""
        self.update_rule = get_update_rule(self.optimizer)
        self.optim_configs: dict[str, dict[str, Any]] = {}
        for name, w in self.model.params.items():
            config = dict(base)
            if not name.startswith("W"):
                config["weight_decay"] = 0.0
            # A dry run on a scalar surfaces a bad key or value now rather than at step 1.
            dtype = w.dtype if np.issubdtype(w.dtype, np.floating) else np.float64
            self.update_rule(np.zeros(1, dtype), np.zeros(1, dtype), dict(config))
            self.optim_configs[name] = config

    def _make_augment(self, spec: str | None) -> Callable[..., Any] | None:
        """The augmentation of a spec string, ``augment(X_batch, rng) -> X_batch``."""
        return make_augment(spec)

    def _build_schedule(self, schedule: str | Schedule) -> Schedule:
        total = self.epochs * self.iterations_per_epoch
        warmup = self.warmup_epochs * self.iterations_per_epoch
        if isinstance(schedule, str):
            return make_schedule(
                schedule, self.lr, total, warmup_steps=warmup, **self._schedule_kwargs
            )
        if not callable(schedule):
            raise TypeError(
                f"schedule must be a name or a callable schedule(step), got {schedule!r}"
            )
        if self._schedule_kwargs:
            raise ValueError("schedule_kwargs only apply to a schedule given by name")
        return WarmupLR(schedule, warmup) if warmup else schedule

    @classmethod
    def resume(
        cls, checkpoint_dir: str | Path, model: Any, data: Mapping[str, Any], **overrides: Any
    ) -> Solver:
        """Rebuild the solver saved in ``checkpoint_dir`` around ``model`` and ``data``.

        The settings come from the checkpoint; ``overrides`` replace any of them (``epochs`` to
        train longer, ``progress``...). A schedule or augmentation given as a callable is not
        saved, so it must be passed again. Call :meth:`train` to continue.
        """
        state_path = Path(checkpoint_dir) / STATE_FILE
        state = read_json(state_path)
        if state.get("backend") != cls.backend:
            raise ValueError(
                f"{state_path}: written by the {state.get('backend')} backend; resume it with "
                f"backend={state.get('backend')!r}, not {cls.backend!r}"
            )
        settings = solver_state.settings_of(state)
        for key in ("schedule", "augment"):
            if settings.pop(f"custom_{key}") and key not in overrides:
                raise ValueError(f"the checkpoint's {key} was a callable; pass {key}= to resume")
        settings.update(overrides)
        return cls(model, data, checkpoint_dir=checkpoint_dir, resume=True, **settings)

    # ----------------------------------------------------------------------------- training

    def train(self) -> Solver:
        """Train until ``epochs`` are done or early stopping; return ``self``.

        Raises
        ------
        TrainingDivergedError
            When the loss or an update is not finite; the model keeps its last good parameters.
        KeyboardInterrupt
            Re-raised after saving a checkpoint of the last completed iteration.
        """
        with self._progress_bar() as bar, self._deferred_sigint():
            for note in self.notes if self.verbose else ():
                if bar is not None:
                    bar.print(note)
                else:
                    print(note, flush=True)
            try:
                while self.epoch < self.epochs and not self.stopped_early:
                    self._train_epoch(bar)
            except KeyboardInterrupt:
                self.save_checkpoint()
                raise
        if self.restore_best and self.best_params is not None:
            self._set_params(self.best_params)
            self._set_buffers(self.best_buffers or {})
        return self

    def _train_epoch(self, bar: Any) -> None:
        if self._perm is None:
            self._perm = self.rng.permutation(len(self.X_train))
        while self.batch < self.iterations_per_epoch:
            self._train_iteration()
            if bar is not None:
                bar.advance(loss=self.loss_history[-1])
            if self.callback is not None:
                self.callback(self)
        self._end_epoch(bar)

    def _train_iteration(self) -> None:
        """One update; a failure part-way leaves the solver as it was before the iteration."""
        snapshot = self._snapshot()
        self._in_iteration = True
        try:
            start = self.batch * self.batch_size
            X_batch, y_batch = self._batch(self._perm[start : start + self.batch_size])
            loss = self._step(X_batch, y_batch)
            self.loss_history.append(loss)
            self.step += 1
            self.batch += 1
        except BaseException:
            self._restore(snapshot)
            raise
        finally:
            self._in_iteration = False
        if self._sigint_pending:
            self._sigint_pending = False
            raise KeyboardInterrupt

    def _batch(self, idx: np.ndarray) -> tuple[Any, Any]:
        """The (augmented) training batch of the sample indices ``idx`` ``(B,)``."""
        X_batch, y_batch = self.X_train[idx], self.y_train[idx]
        if self.augment is not None:
            X_batch = self.augment(X_batch, self.rng)
        return X_batch, y_batch

    def _snapshot(self) -> Any:
        """What an iteration may change before it fails: generator states and buffers."""
        return self.rng.bit_generator.state, self._model_rng_state(), self._buffers_copy()

    def _restore(self, snapshot: Any) -> None:
        rng_state, model_rng_state, buffers = snapshot
        self.rng.bit_generator.state = rng_state
        self._set_model_rng_state(model_rng_state)
        self._set_buffers(buffers)

    def _step(self, X_batch: np.ndarray, y_batch: np.ndarray) -> float:
        """Forward, backward and one update on a batch; return the loss.

        Parameters
        ----------
        X_batch : ndarray of shape (B, ...)
        y_batch : ndarray of shape (B,)

        Nothing reaches ``model.params`` unless the loss and every updated parameter are finite;
        the update is committed all at once.
        """
        loss, grads = self.model.loss(X_batch, y_batch)
        loss = float(loss)
        lr = self.schedule(self.step)
        if not math.isfinite(loss):
            raise self._diverged(f"the loss is {loss}", lr)
        if grads.keys() != self.model.params.keys():
            raise ValueError(
                f"model.loss returned gradients for {sorted(grads)}, params are "
                f"{sorted(self.model.params)}"
            )
        new_params = {}
        for name, w in self.model.params.items():
            config = self.optim_configs[name]
            config["lr"] = lr
            next_w, self.optim_configs[name] = self.update_rule(w, grads[name], config)
            if not np.isfinite(next_w).all():
                raise self._diverged(f"the update of {name!r} is not finite", lr)
            new_params[name] = next_w
        self.model.params.update(new_params)
        self._last_lr = lr
        return loss

    def _diverged(self, what: str, lr: float) -> TrainingDivergedError:
        kept = ""
        if self.checkpoint_dir is not None and (self.checkpoint_dir / STATE_FILE).exists():
            kept = f" The last good checkpoint is kept in {self.checkpoint_dir}."
        return TrainingDivergedError(
            f"Training diverged at epoch {self.epoch + 1}/{self.epochs}, iteration "
            f"{self.batch + 1}/{self.iterations_per_epoch} (step {self.step + 1}): {what}. "
            f"The learning rate {lr:g} is probably too high; try {lr / 10:g}.{kept}"
        )

    def _end_epoch(self, bar: Any) -> None:
        epoch = self.epoch + 1
        train_rng = np.random.default_rng((self.seed, 1, epoch))
        train_acc = self.check_accuracy(
            self.X_train, self.y_train, num_samples=self.num_train_samples, rng=train_rng
        )
        val_acc = None
        if self.X_val is not None:
            val_rng = np.random.default_rng((self.seed, 2))
            val_acc = self.check_accuracy(
                self.X_val, self.y_val, num_samples=self.num_val_samples, rng=val_rng
            )
        self._in_iteration = True
        try:
            self.train_acc_history.append(train_acc)
            self.lr_history.append(self._last_lr)
            if val_acc is not None:
                self.val_acc_history.append(val_acc)
            if val_acc is not None and (self.best_epoch == 0 or val_acc > self.best_val_acc):
                self.best_val_acc, self.best_epoch = val_acc, epoch
                self.best_params = self._params_copy()
                self.best_buffers = self._buffers_copy()
            if self.early_stopping is not None and epoch - self.best_epoch >= self.early_stopping:
                self.stopped_early = True
            self.epoch, self.batch, self._perm = epoch, 0, None
        finally:
            self._in_iteration = False
        self.save_checkpoint()
        line = f"epoch {epoch}/{self.epochs}  loss {self.loss_history[-1]:.4f}  "
        line += f"train acc {train_acc:.3f}  "
        line += f"val acc {val_acc:.3f}  " if val_acc is not None else ""
        line += f"lr {self._last_lr:.3g}"
        if self.stopped_early:
            line += (
                f"  (early stop: best val acc {self.best_val_acc:.3f} at epoch {self.best_epoch})"
            )
        if bar is not None:
            bar.end_epoch(line if self.verbose else None)
        elif self.verbose:
            print(line, flush=True)
        if self._sigint_pending:
            self._sigint_pending = False
            raise KeyboardInterrupt
        if self.epoch_callback is not None:
            self.epoch_callback(self)

    def history(self) -> dict[str, Any]:
        """The run so far as plain JSON: histories, best epoch, where it stopped."""
        return {
            "loss": list(self.loss_history),
            "train_acc": list(self.train_acc_history),
            "val_acc": list(self.val_acc_history),
            "lr": list(self.lr_history),
            "best_val_acc": self.best_val_acc if self.best_epoch else None,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "iterations_per_epoch": self.iterations_per_epoch,
            "stopped_early": self.stopped_early,
        }

    # ----------------------------------------------------------------------------- evaluation

    def _predict_scores(self, X_batch: np.ndarray) -> np.ndarray:
        """Class scores ``(B, C)`` of a batch ``(B, ...)`` in eval mode."""
        return self.model.loss(X_batch)

    def check_accuracy(
        self,
        X: np.ndarray,
        y: np.ndarray,
        num_samples: int | None = None,
        batch_size: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> float:
        """Fraction of ``X`` classified as ``y``, predicted in batches.

        Parameters
        ----------
        X : ndarray of shape (N, ...)
        y : ndarray of shape (N,)
        num_samples : int, optional
            Score a random subsample of this size (None: all of ``X``).
        batch_size : int, optional
            Samples per forward pass (default: the solver's ``batch_size``).
        rng : numpy.random.Generator, optional
            Draws the subsample; default: a generator seeded with the solver's ``seed``.
        """
        X, y = np.asarray(X), np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)} labels")
        if len(X) == 0:
            raise ValueError("cannot measure accuracy on an empty set")
        _check_count("num_samples", num_samples, 1, allow_none=True)
        _check_count("batch_size", batch_size, 1, allow_none=True)
        if num_samples is not None and num_samples < len(X):
            rng = np.random.default_rng(self.seed) if rng is None else rng
            idx = rng.choice(len(X), num_samples, replace=False)
            X, y = X[idx], y[idx]
        batch_size = batch_size or self.batch_size
        correct = 0
        for start in range(0, len(X), batch_size):
            scores = self._predict_scores(X[start : start + batch_size])  # (B, C)
            correct += int(np.sum(np.argmax(scores, axis=1) == y[start : start + batch_size]))
        return correct / len(X)

    # ----------------------------------------------------------------------------- model state
    # The backend hooks: model and optimizer state in and out, always as numpy arrays.

    def _params_copy(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.model.params.items()}

    def _set_params(self, params: Mapping[str, np.ndarray]) -> None:
        self.model.params.update({k: v.copy() for k, v in params.items()})

    def _buffers_copy(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in getattr(self.model, "buffers", {}).items()}

    def _set_buffers(self, buffers: Mapping[str, np.ndarray]) -> None:
        for name, value in buffers.items():
            # In place, so that whatever holds a reference to the buffer sees the new values.
            np.copyto(self.model.buffers[name], value)

    def _model_rng_state(self) -> dict[str, Any] | np.ndarray | None:
        rng = getattr(self.model, "rng", None)
        return rng.bit_generator.state if isinstance(rng, np.random.Generator) else None

    def _set_model_rng_state(self, state: dict[str, Any] | np.ndarray | None) -> None:
        if state is not None:
            self.model.rng.bit_generator.state = state

    def _optimizer_state(self) -> dict[str, dict[str, Any]]:
        """Per parameter name, the update rule's state (arrays, numpy scalars, plain values)."""
        return self.optim_configs

    def _load_optimizer_state(self, saved: Mapping[str, Mapping[str, Any]]) -> None:
        # The optimizer's state comes from the checkpoint, hyperparameters given now win.
        self.optim_configs = {k: {**saved[k], **config} for k, config in self.optim_configs.items()}

    def _extra_state(self) -> dict[str, Any]:
        """Backend state for the checkpoint's JSON beyond the common one (none here)."""
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------------------- checkpoints

    def _settings(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "optim_config": self._optim_config,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule_name or "constant",
            "custom_schedule": self.schedule_name is None,
            "schedule_kwargs": self._schedule_kwargs,
            "warmup_epochs": self.warmup_epochs,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "augment": self.augment_spec,
            "custom_augment": self.augment_spec is None and self.augment is not None,
            "seed": self.seed,
            "early_stopping": self.early_stopping,
            "restore_best": self.restore_best,
            "num_train_samples": self.num_train_samples,
            "num_val_samples": self.num_val_samples,
            "drop_last": self.drop_last,
        }

    def save_checkpoint(self) -> Path | None:
        """Write the training state to ``checkpoint_dir`` (no-op without one); return its path.

        See :mod:`pix2pred.solver_state`: an interrupted save leaves the previous checkpoint
        whole, and parameters that are not finite are never written.
        """
        if self.checkpoint_dir is None:
            return None
        params = self._params_copy()
        for name, w in params.items():
            if not np.isfinite(w).all():
                raise TrainingDivergedError(
                    f"parameter {name!r} is not finite; the checkpoint in {self.checkpoint_dir} "
                    "was left as it was"
                )
        return solver_state.write_checkpoint(
            self.checkpoint_dir, *solver_state.capture(self, params)
        )

    # ----------------------------------------------------------------------------- interaction

    @contextlib.contextmanager
    def _deferred_sigint(self) -> Iterator[None]:
        """Let Ctrl-C finish the current iteration, so the checkpoint it leaves is consistent.

        A second Ctrl-C interrupts at once. Only installed from the main thread over Python's
        default handler; elsewhere ``KeyboardInterrupt`` arrives as usual.
        """
        install = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if not install:
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._in_iteration and not self._sigint_pending:
                self._sigint_pending = True
                return
            raise KeyboardInterrupt

        self._sigint_pending = False
        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextlib.contextmanager
    def _progress_bar(self) -> Iterator[ProgressBar | None]:
        if not self.progress:
            yield None
            return
        with ProgressBar(self) as bar:
            yield bar
