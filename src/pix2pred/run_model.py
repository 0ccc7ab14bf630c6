"""The trained model of a run folder, whichever command wrote it, as a predict-ready estimator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pix2pred.checkpoint import read_json

RESNET_FORMAT = "pix2pred-fast-resnet"


def load_run_model(run: str | os.PathLike[str], device: str | None = None) -> Any:
    """The estimator saved in ``run/model.*``: a `NeuralClassifier` or, for a `train resnet`
    run, a `ResNetClassifier`. A folder without a saved model gets an error naming it."""
    meta_path = Path(run) / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{run}: no saved model (model.json); kNN runs keep no model, and a run that "
            "stopped before the end saves only its checkpoint"
        )
    meta = read_json(meta_path)
    if isinstance(meta, dict) and meta.get("format") == RESNET_FORMAT:
        from pix2pred.nn_torch.resnet_classifier import ResNetClassifier

        return ResNetClassifier.load(Path(run) / "model", device=device)
    from pix2pred.estimators import NeuralClassifier

    return NeuralClassifier.load(Path(run) / "model", device=device)
