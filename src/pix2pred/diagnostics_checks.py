"""The six babysitting checks of `pix2pred.diagnostics`, each ``check(model, X, y, settings)``
returning a `CheckResult`; see that module for what each one measures."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from pix2pred import diagnostics_model as dm
from pix2pred.lr_range import lr_range_test

INITIAL_LOSS_TOLERANCE = 0.10  # relative
GRADCHECK_TOLERANCE = 1e-5  # relative error, float64 (the course: < 1e-7 great, > 1e-4 suspect)
RATIO_BAND = (1e-4, 1e-2)  # a decade either side of the course's 1e-3
DEAD_RELU_LIMIT = 0.10  # fraction of a layer's units
OVERFIT_LOSS_FALL = 0.1  # the memorised images' loss must fall below this share of its start


@dataclasses.dataclass
class CheckResult:
    """One check's verdict.

    Attributes
    ----------
    key : the check's name in `CHECKS`
    title : a short title for tables
    status : "pass" or "warn"
    measured, expected : the number found and the one hoped for, as text
    why : one line on why the check matters
    value : the main measured number (None when there is none)
    details : plain JSON with everything measured (per-layer numbers, curves for the figures)
    """

    key: str
    title: str
    status: str
    measured: str
    expected: str
    why: str
    value: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DiagnosticSettings:
    """How the checks train: the run's optimizer settings, and each check's budget."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float | None = None  # None: the update rule's own, as the estimators do
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    overfit_size: int = 20
    overfit_steps: int = 200
    gradcheck_images: int = 4
    gradcheck_entries: int = 6
    ratio_warmup: int = 5
    ratio_steps: int = 20
    lr_range_steps: int = 200
    lr_min: float = 1e-7
    lr_max: float = 10.0

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, int | float) and self.lr >= 0):
            raise ValueError(f"lr must be a number >= 0, got {self.lr!r}")
        for name in ("batch_size", "overfit_steps", "gradcheck_entries", "ratio_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (isinstance(self.ratio_warmup, int) and self.ratio_warmup >= 0):
            raise ValueError(f"ratio_warmup must be an integer >= 0, got {self.ratio_warmup!r}")
        if not (isinstance(self.overfit_size, int) and self.overfit_size >= 2):
            raise ValueError(f"overfit_size must be an integer >= 2, got {self.overfit_size!r}")
        if not (isinstance(self.gradcheck_images, int) and self.gradcheck_images >= 2):
            raise ValueError(
                f"gradcheck_images must be an integer >= 2, got {self.gradcheck_images!r}"
            )
        if not (isinstance(self.lr_range_steps, int) and self.lr_range_steps >= 10):
            raise ValueError(
                f"lr_range_steps must be an integer >= 10, got {self.lr_range_steps!r}"
            )
        lo, hi = self.lr_min, self.lr_max
        if not (
            isinstance(lo, int | float) and isinstance(hi, int | float) and 0 < lo < hi < math.inf
        ):
            raise ValueError(f"need 0 < lr_min < lr_max, got lr_min={lo!r}, lr_max={hi!r}")


def _pass(ok: bool) -> str:
    return "pass" if ok else "warn"


# ------------------------------------------------------------------------------ the checks


def check_initial_loss(model: Any, X: np.ndarray, y: np.ndarray, s: DiagnosticSettings):
    """Check 1: the train-mode data loss at initialisation against its chance value."""
    C = model.num_classes
    svm = model.config().get("loss") == "svm"
    expected = float(C - 1) if svm else math.log(C)
    loss = dm.loss_value(dm.clone(model), X[:512], y[:512])
    ok = math.isfinite(loss) and abs(loss - expected) <= INITIAL_LOSS_TOLERANCE * expected
    name = f"C - 1 = {C - 1} (SVM, margin 1)" if svm else f"ln({C}) = {expected:.3f}"
    why = "small weights give equal scores, so chance loss; far off: init scale or loss wrong"
    conv = any(np.ndim(v) == 4 for v in dm.params_numpy(model).values())
    if conv and not ok and math.isfinite(loss) and loss > expected:
        why = (
            "a conv net with He init starts above chance (SimpleCNN near 4 for 10 classes): He "
            "init keeps unit-scale activations up to the last layer, so the first scores are "
            "spread out. A known effect of He init, not a bug; the loss falls in the first steps"
        )
    return CheckResult(
        "initial_loss",
        "initial loss",
        _pass(ok),
        f"{loss:.4g}",
        f"{name} ± {INITIAL_LOSS_TOLERANCE:.0%}",
        why,
        loss,
        {"expected": expected, "tolerance": INITIAL_LOSS_TOLERANCE, "images": len(X[:512])},
    )


def check_overfit(model: Any, X: np.ndarray, y: np.ndarray, s: DiagnosticSettings):
    """Check 2: full-batch training on ``overfit_size`` images must reach 100 % accuracy with
    the loss down to a tenth of its start (accuracy alone comes cheap: a linear model
    separates 20 images of 3,072 pixels after a few steps, long before it memorises them)."""
    idx = np.random.default_rng(s.seed).permutation(len(X))[: s.overfit_size]
    Xs, ys = X[idx], y[idx]
    overrides = {"dropout": 0.0} if "dropout" in model.config() else {}
    work = dm.clone(model, **overrides)
    accs: list[float] = []

    def after_epoch(solver: Any) -> None:  # one epoch is one step on the whole small set
        accs.append(solver.train_acc_history[-1])
        if (
            accs[-1] >= 1.0
            and solver.loss_history[-1] <= OVERFIT_LOSS_FALL * solver.loss_history[0]
        ):
            raise dm.StopTraining

    solver = dm.make_solver(
        work,
        Xs,
        ys,
        lrs=[s.lr] * s.overfit_steps,
        optimizer=s.optimizer,
        momentum=s.momentum,
        weight_decay=0.0,
        batch_size=len(Xs),
        seed=s.seed,
        num_train_samples=None,
        epoch_callback=after_epoch,
    )
    failure = dm.run_solver(solver)
    losses = list(solver.loss_history)
    final = accs[-1] if accs else 0.0
    ok = failure is None and final >= 1.0 and losses[-1] <= OVERFIT_LOSS_FALL * losses[0]
    if failure is not None:
        measured = f"diverged at step {len(losses) + 1}"
    else:
        measured = f"{final:.0%} of {len(Xs)} images after {len(accs)} steps, loss "
        measured += f"{losses[0]:.3g} → {losses[-1]:.3g}"
    why = "a model that cannot memorise a few images has a bug or an lr far off"
    return CheckResult(
        "overfit",
        "overfit",
        _pass(ok),
        measured,
        f"100% train accuracy and the loss below {OVERFIT_LOSS_FALL:.0%} of its start within "
        f"{s.overfit_steps} steps (lr {s.lr:g}, {s.optimizer})",
        why,
        final,
        {"loss": losses, "train_acc": accs, "images": len(Xs), "diverged": failure},
    )


def _entries(grad: np.ndarray, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """The ``k`` entries of largest magnitude and ``k`` random ones (distinct)."""
    flat = np.abs(grad).ravel()
    top = np.argsort(flat)[::-1][:k]
    rand = rng.choice(flat.size, size=min(k, flat.size), replace=False)
    picked = list(dict.fromkeys([*top.tolist(), *rand.tolist()]))
    return [np.unravel_index(i, grad.shape) for i in picked]


def check_gradients(model: Any, X: np.ndarray, y: np.ndarray, s: DiagnosticSettings):
    """Check 3: every parameter's gradient against central differences, in float64.

    Errors are ``|n - a| / max(|n| + |a|, floor)``, the floor being 1e-2 of the largest
    ``|n| + |a|`` of that parameter and at least 1e-3 of the largest over all parameters:
    entries near zero (a conv bias before batch norm has a zero gradient) count by their
    absolute error, which rounding keeps near 1e-10 of the largest gradient. An entry
    over the tolerance is measured again with steps 10x smaller and larger and keeps its best
    error, as a ReLU or max-pool kink crossed by the step (not a wrong gradient) explains it.
    """
    work = dm.clone(model, dtype="float64", device="cpu")
    Xg, yg = X[: s.gradcheck_images].astype(np.float64), y[: s.gradcheck_images]
    state = dm.rng_state(work)  # the same dropout masks for every evaluation

    def f() -> float:
        dm.set_rng_state(work, state)
        return dm.loss_value(work, Xg, yg)

    dm.set_rng_state(work, state)
    _, grads = dm.loss_and_grads(work, Xg, yg)
    params = dm.param_arrays(work)
    rng = np.random.default_rng(s.seed)
    picked = {name: _entries(grad, s.gradcheck_entries, rng) for name, grad in grads.items()}
    numeric = {
        name: {ix: dm.central_difference(f, params[name], ix, 1e-5) for ix in entries}
        for name, entries in picked.items()
    }
    scales = {
        name: max(abs(numeric[name][ix]) + abs(grads[name][ix]) for ix in entries)
        for name, entries in picked.items()
    }
    overall = max(scales.values())
    per_param: dict[str, float] = {}
    for name, grad in grads.items():
        floor = max(1e-2 * scales[name], 1e-3 * overall, 1e-300)
        worst = 0.0
        for ix in picked[name]:
            n = numeric[name][ix]
            err = abs(n - grad[ix]) / max(abs(n) + abs(grad[ix]), floor)
            for h in (1e-6, 1e-4) if err > GRADCHECK_TOLERANCE else ():
                n = dm.central_difference(f, params[name], ix, h)
                err = min(err, abs(n - grad[ix]) / max(abs(n) + abs(grad[ix]), floor))
            worst = max(worst, err)
        per_param[name] = worst
    worst_name = max(per_param, key=per_param.get)
    ok = per_param[worst_name] <= GRADCHECK_TOLERANCE
    return CheckResult(
        "gradcheck",
        "gradient check",
        _pass(ok),
        f"max rel. error {per_param[worst_name]:.1e} ({worst_name})",
        f"≤ {GRADCHECK_TOLERANCE:.0e} for every parameter",
        "a wrong backward pass trains in a wrong direction, however good the rest is",
        per_param[worst_name],
        {"rel_error": per_param, "tolerance": GRADCHECK_TOLERANCE, "images": len(Xg)},
    )


def check_update_ratio(model: Any, X: np.ndarray, y: np.ndarray, s: DiagnosticSettings):
    """Check 4: ``||W_after - W_before|| / ||W_before||`` per weight over a few real steps.

    The first ``ratio_warmup`` steps are run but not counted: from a small initialisation,
    and in Adam's first (bias-corrected) steps, the ratio starts high for a while whatever
    the rate."""
    work = dm.clone(model)
    names = [k for k in dm.params_numpy(work) if k.startswith("W")]
    previous = {"w": dm.params_numpy(work, names)}
    ratios: dict[str, list[float]] = {k: [] for k in names}

    def record(solver: Any) -> None:
        now = dm.params_numpy(solver.model, names)
        for k in names:
            norm = float(np.linalg.norm(previous["w"][k]))
            change = float(np.linalg.norm(now[k] - previous["w"][k]))
            ratios[k].append(change / norm if norm > 0 else math.inf)
        previous["w"] = now
        if len(ratios[names[0]]) >= total:
            raise dm.StopTraining

    total = s.ratio_warmup + s.ratio_steps
    solver = dm.make_solver(
        work,
        X,
        y,
        lrs=[s.lr] * total,
        optimizer=s.optimizer,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        batch_size=s.batch_size,
        seed=s.seed,
        num_train_samples=1,
        callback=record,
    )
    failure = dm.run_solver(solver)
    counted = {k: v[s.ratio_warmup :] for k, v in ratios.items()}
    medians = {k: float(np.median(v)) if v else math.nan for k, v in counted.items()}
    lo, hi = RATIO_BAND
    off = {k: v for k, v in medians.items() if not (lo <= v <= hi)}
    ok = failure is None and not off
    if failure is not None:
        measured = "diverged"
    else:
        first, last = min(medians.values()), max(medians.values())
        measured = f"{first:.1e} … {last:.1e} (median per layer, steps {s.ratio_warmup + 1}"
        measured += f"-{total})"
        if off:
            measured += "; off: " + ", ".join(f"{k} {v:.1e}" for k, v in off.items())
    return CheckResult(
        "update_ratio",
        "update ratio",
        _pass(ok),
        measured,
        f"~1e-3 (warn outside {lo:.0e}…{hi:.0e}), lr {s.lr:g} {s.optimizer}",
        "far below 1e-3 learning crawls (lr too low); far above it is unstable (too high)",
        max((v for v in medians.values() if math.isfinite(v)), default=None),
        {
            "ratios": ratios,
            "warmup": s.ratio_warmup,
            "median": medians,
            "band": list(RATIO_BAND),
            "diverged": failure,
        },
    )


def check_activations(model: Any, X: np.ndarray, y: np.ndarray, s: DiagnosticSettings):
    """Check 5: per-layer mean, std and dead-ReLU fraction of a train-mode pass on a batch."""
    from pix2pred.introspect import layer_outputs, layer_plan

    batch = X[: max(s.batch_size, 2)]
    kinds = {step.name: step.kind for step in layer_plan(model)}
    outputs = layer_outputs(model, batch, train=True, seed=s.seed)
    layers: dict[str, dict[str, Any]] = {}
    for name, out in outputs.items():
        a = np.asarray(out, dtype=np.float64)
        stats: dict[str, Any] = {
            "kind": kinds[name],
            "mean": float(a.mean()),
            "std": float(a.std()),
        }
        if kinds[name] == "relu":
            # A unit is a neuron of an fc layer or a whole feature map of a conv layer.
            units = a.reshape(a.shape[0], a.shape[1], -1).max(axis=(0, 2))
            stats["dead_fraction"] = float(np.mean(units <= 0))
        counts, edges = np.histogram(a.ravel(), bins=40)
        stats["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist()}
        layers[name] = stats
    input_std = float(np.std(batch))
    dead = {k: v["dead_fraction"] for k, v in layers.items() if "dead_fraction" in v}
    bad_dead = {k: v for k, v in dead.items() if v > DEAD_RELU_LIMIT}
    relu_std = {k: v["std"] for k, v in layers.items() if v["kind"] == "relu"}
    collapsed = {k: v for k, v in relu_std.items() if v < 1e-3 * input_std}
    ok = not bad_dead and not collapsed
    parts = [f"dead ReLUs max {max(dead.values()):.0%}" if dead else "no ReLU layers"]
    parts += [f"dead: {', '.join(f'{k} {v:.0%}' for k, v in bad_dead.items())}"] if bad_dead else []
    if collapsed:
        parts.append(f"collapsed: {', '.join(f'{k} std {v:.1e}' for k, v in collapsed.items())}")
    return CheckResult(
        "activations",
        "activations",
        _pass(ok),
        "; ".join(parts),
        f"≤ {DEAD_RELU_LIMIT:.0%} dead units per ReLU layer, no layer's std < 1e-3 × input's",
        "dead or vanishing units pass no gradient back: their weights stop learning",
        max(dead.values()) if dead else 0.0,
        {"layers": layers, "input_std": input_std, "images": len(batch)},
    )


def check_lr_range(model: Any, X: np.ndarray, y: np.ndarray, s: DiagnosticSettings):
    """Check 6: the learning-rate range test, and where the chosen lr sits in the range."""
    r = lr_range_test(
        model,
        X,
        y,
        optimizer=s.optimizer,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        lr_min=s.lr_min,
        lr_max=s.lr_max,
        steps=s.lr_range_steps,
        batch_size=s.batch_size,
        seed=s.seed,
    )
    if not r.found_range:
        ok, measured = False, f"the loss never fell between lr {s.lr_min:g} and {s.lr_max:g}"
    else:
        ok = r.start_lr <= s.lr <= r.min_loss_lr
        measured = f"fastest fall at lr {r.suggested_lr:.2g}; falls from {r.start_lr:.2g}"
        measured += f", lowest at {r.min_loss_lr:.2g}"
        if r.diverged_lr is not None:
            measured += f", diverges at {r.diverged_lr:.2g}"
    return CheckResult(
        "lr_range",
        "lr range",
        _pass(ok),
        measured,
        f"lr {s.lr:g} between where the loss starts to fall and where it is lowest",
        "too low an lr barely moves the loss, too high explodes; fastest fall: a good start",
        r.suggested_lr,
        {**r.to_json(), "optimizer": s.optimizer, "lr": s.lr},
    )
