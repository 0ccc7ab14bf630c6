"""Read one image file for prediction, decoded and resized exactly as the folder loader does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from pix2pred.data.folder import decode_image

# ITU-R 601-2 luma, the weights of Pillow's RGB -> L conversion.
_LUMA = np.array([0.299, 0.587, 0.114])


def read_image(path: str | os.PathLike[str], size: tuple[int, int], channels: int) -> np.ndarray:
    """An image file as uint8 ``(H, W, C)`` with ``(H, W) = size`` and ``C = channels`` (1 or 3).

    Decoding and resizing are the folder loader's; a grey image given to a colour model is
    repeated over three channels and a colour image given to a grey model becomes its luma.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    try:
        a = decode_image(path.read_bytes(), tuple(size))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is a folder, not an image") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 3 and channels == 1:
        a = np.rint(a @ _LUMA).clip(0, 255).astype(np.uint8)[:, :, None]
    elif a.shape[2] == 1 and channels == 3:
        a = np.repeat(a, 3, axis=2)
    return a
