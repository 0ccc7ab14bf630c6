"""Random data augmentation of float ``(N, C, H, W)`` batches on their device, without torchvision.

The twins of `pix2pred.data.augment`: the same transforms, arguments, defaults and spec
(``"flip,crop=2,jitter"``), computed batched on the batch's device (CPU or GPU) with random
numbers drawn from the ``torch.Generator`` given, so the same generator state gives the same
batch. The draws are not numpy's, so the two backends augment differently. Inputs are never
modified; outputs keep the input's shape, dtype and device.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pix2pred.data import augment as numpy_augment

__all__ = ["Augment", "color_jitter", "make_augment", "random_crop", "random_flip"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# Grey-level weights of ITU-R 601-2, as in `pix2pred.data.augment`.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"expected a batch tensor of shape (N, C, H, W), got {shape}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"expected a floating-point batch, got dtype {x.dtype}")


def _uniform(generator: torch.Generator, n: int, x: torch.Tensor) -> torch.Tensor:
    """``n`` uniform draws in [0, 1) from ``generator``, on ``x``'s device, float64."""
    u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    return u.to(x.device)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), floats
    generator : torch.Generator, source of the coin flips (one draw per image)
    p : float in [0, 1]

    Returns
    -------
    Tensor of shape (N, C, H, W); flipped images reversed along W
    """
    _check_batch(x)
    if not (isinstance(p, numbers.Real) and 0.0 <= p <= 1.0):
        raise ValueError(f"flip probability p must be in [0, 1], got {p!r}")
    flip = _uniform(generator, x.shape[0], x) < p  # (N,)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(
    x: torch.Tensor, generator: torch.Generator, padding: int = 4, mode: str = "constant"
) -> torch.Tensor:
    """Pad each image by ``padding`` pixels and crop it back to ``(H, W)`` at a random offset.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), floats
    generator : torch.Generator, source of the offsets: a (row, column) pair per image, each
        in [0, 2 * padding]
    padding : int, pixels added on every side; 0 returns a copy of ``x``
    mode : {"constant", "reflect"}, zero padding or mirror padding without the edge

    Returns
    -------
    Tensor of shape (N, C, H, W), each image shifted by up to ``padding`` pixels per direction
    """
    _check_batch(x)
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    if mode not in ("constant", "reflect"):
        raise ValueError(f"padding mode must be 'constant' or 'reflect', got {mode!r}")
    N, _, H, W = x.shape
    if mode == "reflect" and padding >= min(H, W):
        raise ValueError(f"reflect padding {padding} must be smaller than the image ({H}x{W})")
    pad = int(padding)
    k = 2 * pad + 1
    offsets = torch.randint(0, k, (2, N), generator=generator, device=generator.device)
    if pad == 0:
        return x.clone()
    offsets = offsets.to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)  # (N, C, H + 2 pad, W + 2 pad)
    rows = offsets[0][:, None] + torch.arange(H, device=x.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(W, device=x.device)  # (N, W)
    n = torch.arange(N, device=x.device)[:, None, None]
    # Advanced indices around a slice put the indexed axes first: (N, H, W, C).
    crops = padded[n, :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2)  # (N, C, H, W), in channels-last memory order


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Grey level of each pixel, ``(N, 1, H, W)``: ITU-R 601-2 for 3 channels, else the mean."""
    if x.shape[1] == 3:
        r, g, b = _GRAY_WEIGHTS
        return (r * x[:, 0] + g * x[:, 1] + b * x[:, 2])[:, None]
    return x.mean(dim=1, keepdim=True)


def _factors(generator: torch.Generator, strength: float, x: torch.Tensor) -> torch.Tensor:
    low = max(0.0, 1.0 - strength)
    u = _uniform(generator, x.shape[0], x)
    return (low + (1.0 + strength - low) * u).to(x.dtype)[:, None, None, None]  # (N, 1, 1, 1)


def color_jitter(
    x: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> torch.Tensor:
    """Scale brightness, contrast and saturation of each image by random factors.

    As `pix2pred.data.augment.color_jitter`: factors uniform in ``[max(0, 1 - s), 1 + s]`` per
    image, applied in that order; values are not clipped.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), floats
    generator : torch.Generator, source of the factors (three draws per image)
    brightness, contrast, saturation : float, non-negative strengths

    Returns
    -------
    Tensor of shape (N, C, H, W)
    """
    _check_batch(x)
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    for name, value in strengths.items():
        if not (isinstance(value, numbers.Real) and value >= 0.0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    b = _factors(generator, brightness, x)
    c = _factors(generator, contrast, x)
    s = _factors(generator, saturation, x)
    out = x * b
    mean = _gray(out.mean(dim=(2, 3), keepdim=True))  # (N, 1, 1, 1)
    out = c * out + (1 - c) * mean
    return s * out + (1 - s) * _gray(out)


_DEFAULTS = {"flip": 0.5, "crop": 4, "jitter": 0.4}


def _transform(name: str, value: float) -> Augment:
    if name == "flip":
        return lambda x, g: random_flip(x, g, p=value)
    if name == "crop":
        return lambda x, g: random_crop(x, g, padding=int(value))
    return lambda x, g: color_jitter(x, g, brightness=value, contrast=value, saturation=value)


def make_augment(spec: str | None) -> Augment | None:
    """Parse an augmentation spec into one ``augment(x, generator) -> x`` callable.

    Parameters
    ----------
    spec : str or None
        As `pix2pred.data.augment.make_augment`, which validates it with the same messages:
        comma-separated ``flip[=p]``, ``crop[=padding]``, ``jitter[=strength]``, applied in the
        order written; ``None``, ``""`` and ``"none"`` mean no augmentation.

    Returns
    -------
    callable or None
        ``augment(x, generator)`` mapping a ``(N, C, H, W)`` tensor to ``(N, C, H, W)``.
    """
    if numpy_augment.make_augment(spec) is None:  # raises on a bad spec
        return None
    transforms = []
    for token in spec.split(","):
        name, sep, arg = token.strip().lower().partition("=")
        name = name.strip()
        transforms.append(_transform(name, float(arg) if sep else _DEFAULTS[name]))

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in transforms:
            x = transform(x, generator)
        return x

    return augment
