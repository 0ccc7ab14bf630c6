"""Datasets and preprocessing: arrays in, arrays out.

:func:`load_dataset` is the one entry point. Every dataset comes back as a :class:`Dataset` of
``uint8`` images ``(N, H, W, C)`` and ``int64`` labels ``(N,)`` in three splits, with the class
names; :mod:`pix2pred.data.preprocess` turns them into float arrays for the models.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred.data.split import stratified_subsample, train_val_split

__all__ = ["DATASETS", "Dataset", "load_dataset", "stratified_subsample", "train_val_split"]

DATASETS: tuple[str, ...] = ("synthetic", "cifar10", "folder")

_OPTIONS: dict[str, tuple[str, ...]] = {
    "synthetic": ("noise", "difficulty"),
    "cifar10": ("download",),
    "folder": ("test_size", "cache_dir", "skip_corrupt"),
}


@dataclass(repr=False, eq=False)
class Dataset:
    """Images and labels in train, validation and test splits.

    Attributes
    ----------
    X_train, X_val, X_test : ndarray of shape (N, H, W, C), uint8
        Images; C is 3 (colour) or 1 (grey). ``X_val`` may have N = 0.
    y_train, y_val, y_test : ndarray of shape (N,), int64
        Labels in ``range(len(classes))``.
    classes : list of str
        Class names; label ``k`` is ``classes[k]``.
    name : str
        The dataset name given to :func:`load_dataset`.
    info : dict
        ``source``, ``image_shape``, ``counts`` (per split), ``seed`` and dataset-specific
        entries (e.g. ``cache`` and ``from_cache`` for folders); JSON-serialisable.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(self.X_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def title(self) -> str:
        """A name for figures and reports: a folder dataset goes by its folder or archive."""
        source = self.info.get("source")
        if self.name != "folder" or not source:
            return {"cifar10": "CIFAR-10"}.get(self.name, self.name)
        base = Path(str(source)).name
        for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base

    def __repr__(self) -> str:
        H, W, C = self.image_shape
        return (
            f"Dataset({self.name!r}, {len(self.classes)} classes, images {H}x{W}x{C}, "
            f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)})"
        )


def _check_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return int(value)


def _check_fraction_or_count(value: Any, name: str) -> None:
    ok = not isinstance(value, bool) and (
        (isinstance(value, numbers.Integral) and value >= 0)
        or (isinstance(value, numbers.Real) and 0.0 <= float(value) < 1.0)
    )
    if not ok:
        raise ValueError(f"{name} must be a fraction in [0, 1) or a count >= 0, got {value!r}")


def _subsample(
    X: np.ndarray, y: np.ndarray, n: int | None, name: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n == len(y):
        return X, y
    if n > len(y):
        raise ValueError(f"{name}={n} is more than the {len(y)} images available")
    return stratified_subsample(X, y, n, seed)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_size: float | int = 0.1,
    image_size: int | tuple[int, int] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    progress: bool = False,
    **options: Any,
) -> Dataset:
    """Load a dataset by name as uint8 images in train, validation and test splits.

    Parameters
    ----------
    name : {"synthetic", "cifar10", "folder"}
        ``"synthetic"``: the procedural ten-class generator (:mod:`.synthetic`; no ``root``).
        ``"cifar10"``: the official python batches at ``root``: the tarball, the extracted
        ``cifar-10-batches-py`` folder, or a folder holding either (default ``$PIX2PRED_DATA``
        or ``./data``). ``"folder"``: class-per-folder images at ``root``, a directory, ``.zip``
        or ``.tar(.gz)`` (:mod:`.folder`).
    root : path, optional
        Where the data lives.
    seed : int
        Seeds every random choice (generation, splits, subsamples, shuffling).
    val_size : float or int
        Validation set carved from the training images, stratified: a fraction in ``[0, 1)`` or
        a count; 0 gives empty validation arrays ``(0, H, W, C)``. A folder with its own
        ``val/`` split uses that instead.
    image_size : int or (int, int), optional
        Resize to this side or ``(height, width)``. Synthetic images are drawn at this size
        (default 32).
    n_train, n_test : int, optional
        Number of training images (before the validation split) and of test images. For
        ``"synthetic"`` the counts generated (default 5000 and 1000); otherwise a stratified,
        seeded subsample (default: all).
    progress : bool
        Show progress bars on stderr while reading or decoding.
    **options
        ``"synthetic"``: ``noise`` (float, default 0.25), ``difficulty`` (float in [0, 2],
        default 1: lighting ramps and clutter; 0 gives the easier set of earlier versions).
        ``"cifar10"``: ``download`` (bool, default False: fetch the tarball into ``root`` when
        missing).
        ``"folder"``: ``test_size`` (fraction or count, default 0.2; class layout only),
        ``cache_dir`` (default ``$PIX2PRED_CACHE`` or ``~/.cache/pix2pred``), ``skip_corrupt``
        (bool, default False: skip unreadable images with a warning instead of raising).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        An unknown name or option, or a bad value; the message names it and the choices.
    FileNotFoundError
        The data is not at ``root``; the message says how to get it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {name!r}; allowed: {allowed}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    _check_fraction_or_count(val_size, "val_size")
    n_train, n_test = _check_count(n_train, "n_train"), _check_count(n_test, "n_test")
    from pix2pred.data.folder import parse_image_size, resize_images

    hw = parse_image_size(image_size)
    X_val = y_val = None
    extra: dict[str, Any] = {}

    if name == "synthetic":
        from pix2pred.data.synthetic import DEFAULT_DIFFICULTY, DEFAULT_NOISE, make_synthetic

        if root is not None:
            raise ValueError(f"the synthetic dataset is generated and takes no root, got {root!r}")
        noise = options.get("noise", DEFAULT_NOISE)
        difficulty = options.get("difficulty", DEFAULT_DIFFICULTY)
        X_train, y_train, X_test, y_test, classes = make_synthetic(
            n_train if n_train is not None else 5000,
            n_test if n_test is not None else 1000,
            image_size=hw or 32,
            noise=noise,
            difficulty=difficulty,
            seed=seed,
        )
        source, extra["noise"], extra["difficulty"] = "generated", float(noise), float(difficulty)
    elif name == "cifar10":
        from pix2pred.data import cifar10

        download = options.get("download", False)
        if not isinstance(download, bool):
            raise ValueError(f"download must be True or False, got {download!r}")
        try:
            path = cifar10.find_cifar10(root)
        except FileNotFoundError:
            if not download:
                raise
            path = cifar10.download_cifar10(root, progress=progress)
        X_train, y_train, X_test, y_test, classes, src = cifar10.load_cifar10(path)
        X_train, y_train = _subsample(X_train, y_train, n_train, "n_train", seed)
        X_test, y_test = _subsample(X_test, y_test, n_test, "n_test", seed)
        if hw is not None:
            X_train, X_test = resize_images(X_train, hw), resize_images(X_test, hw)
        source = str(src)
    else:
        from pix2pred.data.folder import load_folder

        if root is None:
            raise ValueError("the folder dataset needs root= (a directory, .zip or .tar.gz)")
        test_size = options.get("test_size", 0.2)
        _check_fraction_or_count(test_size, "test_size")
        skip_corrupt = options.get("skip_corrupt", False)
        if not isinstance(skip_corrupt, bool):
            raise ValueError(f"skip_corrupt must be True or False, got {skip_corrupt!r}")
        splits, classes, extra = load_folder(
            root,
            image_size=hw,
            test_size=test_size,
            seed=seed,
            cache_dir=options.get("cache_dir"),
            progress=progress,
            skip_corrupt=skip_corrupt,
        )
        (X_train, y_train), (X_test, y_test) = splits["train"], splits["test"]
        X_train, y_train = _subsample(X_train, y_train, n_train, "n_train", seed)
        X_test, y_test = _subsample(X_test, y_test, n_test, "n_test", seed)
        if "val" in splits:
            X_val, y_val = splits["val"]
        source = str(Path(root))

    if X_val is None:
        X_train, y_train, X_val, y_val = train_val_split(X_train, y_train, val_size, seed)
        extra["val_from"] = "train"
    else:
        extra["val_from"] = "val folder"
    counts = {"train": len(y_train), "val": len(y_val), "test": len(y_test)}
    info = {
        "source": source,
        "image_shape": list(X_train.shape[1:]),
        "counts": counts,
        "seed": seed,
        **extra,
    }
    return Dataset(X_train, y_train, X_val, y_val, X_test, y_test, list(classes), name, info)
