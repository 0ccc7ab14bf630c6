"""pix2pred: image classification from pixels to predictions.

The public API is imported lazily, so ``import pix2pred`` stays cheap and the NumPy half never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "load_dataset": "pix2pred.data",
    "Dataset": "pix2pred.data",
    "KNearestNeighbors": "pix2pred.knn",
    "Softmax": "pix2pred.estimators",
    "LinearSVM": "pix2pred.estimators",
    "MLP": "pix2pred.estimators",
    "CNN": "pix2pred.estimators",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'pix2pred' has no attribute {name!r}")
