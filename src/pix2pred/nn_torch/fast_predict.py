"""Scoring a `FastResNet`: mixed precision where the hardware has it, test-time augmentation.

``tta=1`` averages each image's scores with its mirror's; ``tta=2`` adds the two one-pixel
diagonal translations (each with its mirror), weighted one half for the untranslated pair and
one half for the four translated views.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pix2pred.nn_torch.fast_data import _check_images

__all__ = ["AMP_MODES", "predict_logits", "predict_tta", "resolve_amp"]

AMP_MODES = ("auto", "bf16", "none")


def resolve_amp(amp: str, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """bf16 for ``amp="bf16"``, or for ``"auto"`` on a float32 model where bf16 is native."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "none":
        return None
    if dtype != torch.float32:
        if amp == "bf16":
            raise ValueError(f"amp='bf16' applies to float32 models, this one is {dtype}")
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def _images(X: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` → pixels ``(N, C, H, W)`` in NHWC memory on ``device``."""
    X = np.ascontiguousarray(X)
    if not X.flags.writeable:  # torch warns on read-only memory (a broadcast or a mapped file)
        X = X.copy()
    return torch.from_numpy(X).to(device).permute(0, 3, 1, 2).to(dtype)


@torch.no_grad()
def predict_tta(
    model: nn.Module,
    X: np.ndarray,
    *,
    max_tta: int = 2,
    batch_size: int = 1000,
    amp: str = "auto",
) -> dict[int, np.ndarray]:
    """Scores ``(N, K)`` (float32) of uint8 images ``X`` ``(N, H, W, C)`` at every TTA level.

    Returns ``{0: ..., 1: ..., max_tta: ...}``: level 0 the image alone; 1 the mean with its
    mirror; 2 half that plus a quarter for each one-pixel translation (up-left, down-right,
    reflect padding) averaged with its mirror. The levels share their forward passes (six for
    level 2). Runs on the model's device, in eval mode.
    """
    if max_tta not in (0, 1, 2):
        raise ValueError(f"tta must be 0, 1 or 2, got {max_tta!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    X = _check_images(X)
    p = next(model.parameters())
    device, dtype = p.device, p.dtype
    amp_dtype = resolve_amp(amp, device, dtype)
    was_training = model.training
    model.eval()

    def scores(x: torch.Tensor) -> torch.Tensor:
        on = amp_dtype is not None
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=on):
            return model(x).to(torch.float32)

    def mirrored(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plain = scores(x)
        return plain, 0.5 * (plain + scores(x.flip(3)))

    levels: dict[int, list[torch.Tensor]] = {k: [] for k in range(max_tta + 1)}
    try:
        for i in range(0, len(X), batch_size):
            x = _images(X[i : i + batch_size], device, dtype)
            if max_tta == 0:
                levels[0].append(scores(x))
                continue
            plain, flip = mirrored(x)
            levels[0].append(plain)
            levels[1].append(flip)
            if max_tta == 2:
                H, W = x.shape[2:]
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                shifted = mirrored(padded[:, :, :H, :W])[1] + mirrored(padded[:, :, 2:, 2:])[1]
                levels[2].append(0.5 * flip + 0.25 * shifted)
    finally:
        model.train(was_training)
    K = getattr(model, "num_classes", 0)
    return {
        k: torch.cat(v).cpu().numpy() if v else np.zeros((0, K), np.float32)
        for k, v in levels.items()
    }


def predict_logits(
    model: nn.Module,
    X: np.ndarray,
    *,
    tta: int = 2,
    batch_size: int = 1000,
    amp: str = "auto",
) -> np.ndarray:
    """Scores ``(N, K)`` of uint8 images ``X`` ``(N, H, W, C)`` at TTA level ``tta`` (0, 1, 2).

    See `predict_tta` for the levels.
    """
    return predict_tta(model, X, max_tta=tta, batch_size=batch_size, amp=amp)[tta]
