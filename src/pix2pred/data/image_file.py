"""Read one image file for prediction, converted and resized as the training images were."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def read_image(path: str | os.PathLike[str], size: tuple[int, int], channels: int) -> np.ndarray:
    """An image file as uint8 ``(H, W, C)`` with ``(H, W) = size`` and ``C = channels`` (1 or 3).

    Colour images become grey (``L``) for a 1-channel model and grey ones RGB for a 3-channel
    model; resizing is bilinear, as the folder loader's.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            h, w = size
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    return a.reshape(h, w, channels)
