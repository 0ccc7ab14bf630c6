"""What ``pix2pred compare`` trains: the models of each budget, and the steps of a comparison.

A budget is a sequence of `ModelSpec`; `plan` turns one into `Step` s, one per model and
backend, in the course's order (kNN → LinearSVM → Softmax → TwoLayerNet → SimpleCNN, then the
larger models and the experiments). Epochs and learning rates are those measured on CIFAR-10
(``benchmarks/bench_accuracy.py``), halved in the quick budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BACKENDS", "BUDGETS", "FULL", "QUICK", "ModelSpec", "Step", "budget_help", "plan"]

BACKENDS = {"numpy": ("numpy",), "torch": ("torch",), "both": ("numpy", "torch")}


@dataclass(frozen=True)
class ModelSpec:
    """One model of a comparison.

    ``name`` names its subfolder (with the backend); ``kind`` picks the trainer: ``knn``,
    ``resnet``, ``optimizers`` / ``ablate-lr`` (the experiments) or a ``pix2pred train`` kind;
    ``options`` are that trainer's options; ``backends`` are those it runs on.
    """

    name: str
    label: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    backends: tuple[str, ...] = ("numpy", "torch")
    note: str = ""


_LINEAR = {"lr": 2e-2, "weight_decay": 1e-2}
_SVM = {"lr": 5e-3, "weight_decay": 1e-2}
_MLP = {"hidden": "500", "lr": 1e-3, "weight_decay": 1e-3}

QUICK = (
    ModelSpec("knn", "kNN", "knn", {"ks": "1,3,5,10", "folds": 3}, note="L2, k by 3-fold CV"),
    ModelSpec("svm", "LinearSVM", "svm", {"epochs": 10, **_SVM}),
    ModelSpec("softmax", "Softmax", "softmax", {"epochs": 10, **_LINEAR}),
    ModelSpec("mlp", "TwoLayerNet", "mlp", {"epochs": 10, **_MLP}),
    ModelSpec("cnn", "SimpleCNN", "cnn", {"epochs": 10, "augment": "flip,crop"}),
)
FULL = (
    ModelSpec("knn", "kNN", "knn", {"ks": "1,3,5,8,10,12,15,20", "folds": 5}, note="L2, 5-fold"),
    ModelSpec("svm", "LinearSVM", "svm", {"epochs": 20, **_SVM}),
    ModelSpec("softmax", "Softmax", "softmax", {"epochs": 20, **_LINEAR}),
    ModelSpec("mlp", "TwoLayerNet", "mlp", {"epochs": 20, **_MLP}),
    ModelSpec(
        "fcnet",
        "FullyConnectedNet",
        "fcnet",
        {"epochs": 30, "hidden": "1024,512,256", "dropout": 0.2, "augment": "flip"},
    ),
    ModelSpec("cnn", "SimpleCNN", "cnn", {"epochs": 20, "augment": "flip,crop"}),
    ModelSpec(
        "convnet",
        "ConvNet",
        "convnet",
        {"epochs": 14, "spec": "32,32,M,64,64,M,128,128,M|256", "augment": "flip,crop"},
    ),
    ModelSpec(
        "resnet",
        "ResNet",
        "resnet",
        {"epochs": 8.0},
        backends=("torch",),
        note="the fast CIFAR-10 recipe of pix2pred train resnet",
    ),
    ModelSpec(
        "optimizers",
        "TwoLayerNet: 5 update rules",
        "optimizers",
        {"model": "mlp", "epochs": 5},
        note="SGD, momentum, Nesterov, RMSProp, Adam from one initialisation",
    ),
    ModelSpec(
        "ablate-lr",
        "Softmax: learning rates",
        "ablate-lr",
        {"model": "softmax", "epochs": 5, "values": "1,1e-1,1e-2,1e-3,1e-5"},
        note="lr 1 … 1e-5: too high explodes, too low stalls",
    ),
)
BUDGETS: dict[str, tuple[ModelSpec, ...]] = {"quick": QUICK, "full": FULL}


def budget_help() -> str:
    """One line per budget listing its models and epochs, for ``--help``."""
    lines = []
    for budget, specs in BUDGETS.items():
        parts = []
        for s in specs:
            epochs = s.options.get("epochs")
            parts.append(f"{s.name} {epochs:g} ep" if epochs else s.name)
        lines.append(f"{budget}: {', '.join(parts)}")
    return "; ".join(lines)


@dataclass
class Step:
    """One model on one backend: a row of the table and a subfolder."""

    spec: ModelSpec
    backend: str

    @property
    def folder(self) -> str:
        return f"{self.spec.name}-{self.backend}"


def plan(budget: str, backend: str, specs: Sequence[ModelSpec] | None = None) -> list[Step]:
    """The steps of a comparison, in order: each model on each backend it supports."""
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if specs is None:
        specs = BUDGETS[budget]
    return [Step(s, b) for s in specs for b in BACKENDS[backend] if b in s.backends]
