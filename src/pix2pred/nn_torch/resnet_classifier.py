"""A trained FastResNet behind the estimator interface, so `evaluate` and `predict` take its runs.

`ResNetClassifier.load` rebuilds the network of a `pix2pred train resnet` run and scores images
with the test-time augmentation level the run was trained and measured with.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from pix2pred.estimators import softmax


class ResNetClassifier:
    """Prediction-only estimator over a saved FastResNet (``fit`` is `pix2pred train resnet`)."""

    _has_proba: ClassVar[bool] = True
    backend = "torch"

    def __init__(self, model: Any, meta: dict[str, Any], tta: int, amp: str = "auto") -> None:
        self.model_ = model
        self.tta = tta
        self.amp = amp
        self.classes_ = np.arange(len(meta["classes"]))
        self.image_shape_ = tuple(int(s) for s in meta["image_shape"])
        self.device_ = str(next(model.parameters()).device)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | None = None,
        tta: int | None = None,
        amp: str = "auto",
    ) -> ResNetClassifier:
        """The network saved at ``path`` (``model.json`` + ``model.safetensors``) on ``device``
        ("auto" or None: CUDA, then MPS, then the CPU); ``tta`` defaults to the run's level,
        ``amp`` (auto, bf16, none) is the precision of the scores."""
        from pix2pred.nn_torch.resnet import load_model
        from pix2pred.nn_torch.train import choose_device

        model, meta = load_model(path, choose_device(device))
        level = meta.get("tta", 2) if tta is None else tta
        if level not in (0, 1, 2):
            raise ValueError(f"tta must be 0, 1 or 2, got {level!r}")
        return cls(model, meta, level, amp)

    def decision_function(self, X: Any, batch_size: int = 1000) -> np.ndarray:
        """Scores ``(N, K)`` of uint8 images ``X`` ``(N, H, W, C)``, averaged over TTA views."""
        from pix2pred.nn_torch.fast_train import predict_logits

        X = np.asarray(X)
        if X.ndim != 4 or tuple(X.shape[1:]) != self.image_shape_:
            raise ValueError(
                f"X must be images (N, {', '.join(map(str, self.image_shape_))}), "
                f"got shape {X.shape}"
            )
        return predict_logits(self.model_, X, tta=self.tta, batch_size=batch_size, amp=self.amp)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, K)``."""
        return softmax(self.decision_function(X))

    def predict(self, X: Any) -> np.ndarray:
        """Class indices ``(N,)``."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
