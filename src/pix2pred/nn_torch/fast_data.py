"""The training images of `train_fast` on the device: checks and augmentation.

Images arrive as uint8 ``(N, H, W, C)``; each epoch's random translations, flips and cutout
squares are drawn from ``(seed, epoch)`` alone, so a resumed or distributed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pix2pred.nn_torch import distributed as D

if TYPE_CHECKING:
    from pix2pred.nn_torch.fast_train import FastTrainConfig


def _reflect_index(n: int, pad: int) -> torch.Tensor:
    """Source index of each of ``n + 2·pad`` positions under reflect padding."""
    i = torch.arange(-pad, n + pad).abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def _check_images(X: Any, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.dtype != np.uint8 or X.ndim != 4:
        raise ValueError(f"{name} must be uint8 images (N, H, W, C), got {X.dtype} {X.shape}")
    return X


def _check_data(X: Any, y: Any, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    X = _check_images(X, name)
    y = np.asarray(y)
    if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({len(X)},), got {y.dtype} {y.shape}")
    return X, y.astype(np.int64)


class _Augmenter:
    """Reflect-padded images on the device; per-epoch crops and flips from ``(seed, epoch)``."""

    def __init__(
        self,
        X: np.ndarray,
        cfg: FastTrainConfig,
        device: torch.device,
        fill: np.ndarray,
    ) -> None:
        N, H, W, _ = X.shape
        t = cfg.translate
        if t >= min(H, W):
            raise ValueError(f"translate={t} needs images larger than {t}x{t}, got {H}x{W}")
        if cfg.cutout > min(H, W):
            raise ValueError(f"cutout={cfg.cutout} is larger than the {H}x{W} images")
        self.fill = torch.from_numpy(np.rint(fill).astype(np.uint8)).to(device)  # (C,)
        x = torch.from_numpy(X)
        self.padded = x[:, _reflect_index(H, t)][:, :, _reflect_index(W, t)].to(device)
        self.N, self.H, self.W, self.t = N, H, W, t
        self.cfg, self.device = cfg, device
        g = torch.Generator().manual_seed(D.epoch_seed(cfg.seed, 0, stream=2))
        self.base_flip = torch.rand(N, generator=g) < 0.5

    def start_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(D.epoch_seed(self.cfg.seed, epoch, stream=1))
        shifts = torch.randint(0, 2 * self.t + 1, (self.N, 2), generator=g)
        if self.cfg.flip == "alternating":
            flips = self.base_flip ^ bool(epoch % 2)
        elif self.cfg.flip == "random":
            flips = torch.rand(self.N, generator=g) < 0.5
        else:
            flips = torch.zeros(self.N, dtype=torch.bool)
        self.shifts, self.flips = shifts.to(self.device), flips.to(self.device)
        k = self.cfg.cutout
        corners = torch.stack(
            [
                torch.randint(0, self.H - k + 1, (self.N,), generator=g),
                torch.randint(0, self.W - k + 1, (self.N,), generator=g),
            ],
            1,
        )
        self.corners = corners.to(self.device)  # (N, 2): top-left of each cutout square

    def batch(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Augmented pixels of images ``idx`` as ``(b, C, H, W)`` in NHWC memory."""
        idx = idx.to(self.device)
        rows = self.shifts[idx, 0, None] + torch.arange(self.H, device=self.device)  # (b, H)
        cols = self.shifts[idx, 1, None] + torch.arange(self.W, device=self.device)  # (b, W)
        cols = torch.where(self.flips[idx, None], cols.flip(1), cols)
        x = self.padded[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (b, H, W, C)
        k = self.cfg.cutout
        if k:
            dy = torch.arange(self.H, device=self.device) - self.corners[idx, 0, None]  # (b, H)
            dx = torch.arange(self.W, device=self.device) - self.corners[idx, 1, None]  # (b, W)
            inside = ((dy >= 0) & (dy < k))[:, :, None] & ((dx >= 0) & (dx < k))[:, None, :]
            x = torch.where(inside[..., None], self.fill, x)
        return x.permute(0, 3, 1, 2).to(dtype)  # (b, C, H, W), channels-last strides
