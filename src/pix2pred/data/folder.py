"""Class-per-folder image datasets, read from a directory, a ``.zip`` or a tarball, and cached.

Two layouts are understood, with any number of wrapping folders above them:

- ``root/<split>/<class>/<image>`` with splits ``train`` and ``test`` (and optionally ``val``);
- ``root/<class>/<image>``, split into train and test later, stratified and seeded.

Archives are read member by member in memory, never extracted. The decoded arrays are cached
as a pickle-free ``.npz`` plus a JSON file, keyed by the source's content and the decode
options, so a second load only reads the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pix2pred.checkpoint import load_arrays, read_json, save_arrays, write_json
from pix2pred.data.sources import (
    IMAGE_EXTENSIONS,
    DirSource,
    Progress,
    file_sha256,
    open_source,
    source_kind,
)
from pix2pred.data.split import split_indices

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderImages",
    "decode_folder",
    "default_cache_dir",
    "load_folder",
    "load_folder_cached",
    "parse_image_size",
    "resize_images",
]

SPLITS = ("train", "val", "test")
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$PIX2PRED_CACHE`` if set, else ``~/.cache/pix2pred``."""
    return Path(os.environ.get("PIX2PRED_CACHE") or Path.home() / ".cache" / "pix2pred")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_image_size(image_size: Any) -> tuple[int, int] | None:
    """Validate ``image_size``: None, a positive int, or a ``(height, width)`` pair."""
    if image_size is None:
        return None
    if _is_int(image_size):
        hw = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, tuple | list)
        and len(image_size) == 2
        and all(_is_int(s) for s in image_size)
    ):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(
            f"image_size must be None, an int or a (height, width) pair, got {image_size!r}"
        )
    if min(hw) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw


def resize_images(X: np.ndarray, image_size: int | tuple[int, int]) -> np.ndarray:
    """Resize a batch of images with bilinear (antialiased) filtering.

    Parameters
    ----------
    X : ndarray of shape (N, H, W, C), uint8
        C is 1 or 3.
    image_size : int or (int, int)
        New side, or ``(height, width)``.

    Returns
    -------
    ndarray of shape (N, h, w, C), uint8
    """
    h, w = parse_image_size(image_size)  # type: ignore[misc]
    if X.ndim != 4 or X.dtype != np.uint8 or X.shape[3] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, H, W, 1 or 3), got {X.dtype} {X.shape}")
    if X.shape[1:3] == (h, w):
        return X
    out = np.empty((len(X), h, w, X.shape[3]), dtype=np.uint8)
    for i, x in enumerate(X):
        img = Image.fromarray(x[..., 0] if x.shape[2] == 1 else x)
        out[i] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR)).reshape(h, w, -1)
    return out


# ---------------------------------------------------------------------------------------------
# Layout and decoding.


def _assign(names: list[str], root: Path) -> tuple[str, dict[str, list[tuple[str, str]]], int]:
    """Map member names to ``(split, class)``.

    Returns the layout (``"split"`` or ``"class"``), ``{split: [(name, class), ...]}`` (split
    ``"all"`` for the class layout) and the number of images outside the layout.
    """
    parts = [tuple(n.split("/")) for n in names]
    if not parts:
        raise ValueError(
            f"{root}: no images found; expected root/<class>/<image> or "
            f"root/<train|test>/<class>/<image> with one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    # Wrapping folders (an archive of "mydata/train/cat/1.png") are stepped through.
    depth = 0
    while True:
        firsts = {p[depth] for p in parts if len(p) > depth + 2}
        if len(firsts) != 1 or firsts & set(SPLITS):
            break
        if any(len(p) <= depth + 2 or p[depth] not in firsts for p in parts):
            break
        depth += 1
    tops = {p[depth] for p in parts if len(p) > depth + 1}
    out: dict[str, list[tuple[str, str]]] = {}
    if "train" in tops:
        if "test" not in tops:
            raise ValueError(
                f"{root}: found a train/ folder but no test/ folder; add test/<class>/... or "
                "put the class folders at the top level to split them with test_size"
            )
        layout, min_len = "split", depth + 3
        for name, p in zip(names, parts, strict=True):
            if len(p) >= min_len and p[depth] in SPLITS:
                out.setdefault(p[depth], []).append((name, p[depth + 1]))
    else:
        layout, min_len = "class", depth + 2
        for name, p in zip(names, parts, strict=True):
            if len(p) >= min_len:
                out.setdefault("all", []).append((name, p[depth]))
    ignored = len(names) - sum(len(v) for v in out.values())
    if ignored:
        example = next(
            n
            for n, p in zip(names, parts, strict=True)
            if len(p) < min_len or (layout == "split" and p[depth] not in SPLITS)
        )
        warnings.warn(
            f"{root}: ignored {ignored} image(s) outside the {layout} layout, e.g. {example}",
            stacklevel=3,
        )
    return layout, out, ignored


def decode_image(data: bytes, hw: tuple[int, int] | None) -> np.ndarray:
    """Decode one image to ``(H, W)`` (grey) or ``(H, W, 3)`` (colour) uint8."""
    img = Image.open(io.BytesIO(data))
    if hw is not None and img.format == "JPEG":
        # Let libjpeg decode at a reduced scale (still at least the target size).
        img.draft(img.mode, (hw[1], hw[0]))
    mode = img.mode
    if mode in ("1", "LA"):
        img = img.convert("L")
    elif mode.startswith(("I", "F")):
        # 16-bit or float grey: scale the 16-bit range down to 8 bits.
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.rint(np.clip(a, 0, 65535) / 257.0).astype(np.uint8))
    elif mode in ("P", "PA"):
        img = img.convert("RGBA").convert("RGB")
    elif mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if hw is not None and img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(img)


@dataclass
class FolderImages:
    """Decoded images of a folder dataset, before any train/test split of the class layout.

    ``splits`` maps ``"train"``, ``"test"`` (and ``"val"``) to ``(X, y)`` in the split layout,
    or ``"all"`` to ``(X, y)`` in the class layout; ``X`` has shape ``(N, H, W, C)`` uint8 with
    C 1 or 3, ``y`` shape ``(N,)`` int64, rows in sorted file-name order.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]
    layout: str
    skipped: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _check_sizes(images: list[tuple[str, np.ndarray]], labels: dict[str, str]) -> None:
    if not images:
        return
    ref_name, ref = images[0]
    for name, a in images:
        if a.shape[:2] != ref.shape[:2]:
            raise ValueError(
                f"{labels[name]} is {a.shape[1]}x{a.shape[0]} pixels but {labels[ref_name]} is "
                f"{ref.shape[1]}x{ref.shape[0]}; images of different sizes need a common size, "
                "e.g. image_size=32"
            )


def _stack(images: list[tuple[str, np.ndarray]], hw: tuple[int, int], C: int) -> np.ndarray:
    """Stack ``(H, W)`` grey and ``(H, W, 3)`` colour images into ``(N, H, W, C)`` uint8."""
    if images and all(a.ndim == 3 for _, a in images):
        return np.stack([a for _, a in images])
    X = np.empty((len(images), *hw, C), dtype=np.uint8)
    for i, (_, a) in enumerate(images):
        X[i] = a[..., None] if a.ndim == 2 else a  # grey (H, W, 1) broadcasts to C channels
    return X


def _decode_source(
    src: Any, root: Path, hw: tuple[int, int] | None, bar: Progress, skip_corrupt: bool
) -> FolderImages:
    layout, groups, ignored = _assign(src.names, root)
    classes = sorted({c for members in groups.values() for _, c in members})
    index = {c: i for i, c in enumerate(classes)}
    labels = {name: src.label(name) for members in groups.values() for name, _ in members}
    total = sum(len(m) for m in groups.values())
    task = bar.add("decoding images", total)
    done, skipped = 0, []
    decoded: dict[str, tuple[list[tuple[str, np.ndarray]], list[int]]] = {}
    for split, members in groups.items():
        images, ys = decoded.setdefault(split, ([], []))
        for name, cls in members:
            try:
                a = decode_image(src.read(name), hw)
            except Exception as e:  # PIL raises many types for broken files
                if not skip_corrupt:
                    raise ValueError(
                        f"{labels[name]}: cannot decode image ({type(e).__name__}: {e}); "
                        "pass skip_corrupt=True to skip unreadable images"
                    ) from None
                warnings.warn(f"skipping unreadable image {labels[name]} ({e})", stacklevel=3)
                skipped.append(labels[name])
            else:
                images.append((name, a))
                ys.append(index[cls])
            done += 1
            if done % 256 == 0 or done == total:
                bar.update(task, done)

    everything = [item for images, _ in decoded.values() for item in images]
    if not everything:
        raise ValueError(f"{root}: none of the {total} images could be decoded")
    _check_sizes(everything, labels)
    size = everything[0][1].shape[:2]
    C = 1 if all(a.ndim == 2 for _, a in everything) else 3
    splits = {
        split: (_stack(images, size, C), np.asarray(ys, dtype=np.int64))
        for split, (images, ys) in decoded.items()
    }
    info = {"layout": layout, "ignored": ignored, "skipped": len(skipped)}
    return FolderImages(splits, classes, layout, skipped, info)


def decode_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    progress: bool = False,
    skip_corrupt: bool = False,
) -> FolderImages:
    """Read and decode every image of a folder dataset (no cache; see :func:`load_folder_cached`).

    Parameters
    ----------
    root : path
        A directory, ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz``.
    image_size : int or (int, int), optional
        Resize every image to this side or ``(height, width)``; when None all images must share
        one size.
    progress : bool
        Show progress bars on stderr.
    skip_corrupt : bool
        Skip unreadable images with a warning naming each, instead of raising.

    Raises
    ------
    ValueError
        An image cannot be decoded (the message names the file, or ``archive:member``), images
        differ in size without ``image_size``, or no images are found.
    FileNotFoundError
        ``root`` does not exist.
    """
    root = Path(root)
    hw = parse_image_size(image_size)
    kind = source_kind(root)
    with Progress(progress) as bar:
        src = open_source(root, kind, bar)
        try:
            return _decode_source(src, root, hw, bar, skip_corrupt)
        finally:
            src.close()


# ---------------------------------------------------------------------------------------------
# Cache: <cache_dir>/folder-<key>.npz (arrays) and .json (metadata, written last).


def _cache_key(content_hash: str, hw: tuple[int, int] | None, skip_corrupt: bool) -> str:
    spec = {
        "format": CACHE_FORMAT,
        "content": content_hash,
        "image_size": list(hw) if hw else None,
        "skip_corrupt": skip_corrupt,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _read_cache(npz: Path, meta_path: Path, key: str) -> FolderImages | None:
    if not (npz.is_file() and meta_path.is_file()):
        return None
    try:
        meta = read_json(meta_path)
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            raise ValueError("its key does not match")
        arrays = load_arrays(npz)
        classes, shape = list(meta["classes"]), tuple(meta["image_shape"])
        splits = {}
        for split, n in meta["counts"].items():
            X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
            if X.dtype != np.uint8 or X.shape != (n, *shape) or y.shape != (n,):
                raise ValueError(f"split {split!r} has shape {X.shape}, expected {(n, *shape)}")
            if y.dtype != np.int64 or (n and not 0 <= y.min() <= y.max() < len(classes)):
                raise ValueError(f"split {split!r} has invalid labels")
            splits[split] = (X, y)
        skipped = list(meta.get("skipped", []))
        info = {"layout": meta["layout"], "ignored": meta["ignored"], "skipped": len(skipped)}
        return FolderImages(splits, classes, meta["layout"], skipped, info)
    except Exception as e:  # any damage (truncated zip, bad JSON, wrong keys) means rebuild
        warnings.warn(
            f"ignoring unreadable cache {npz} ({e}); decoding the images again", stacklevel=3
        )
        return None


def _write_cache(npz: Path, meta_path: Path, key: str, root: Path, data: FolderImages) -> None:
    arrays = {}
    for split, (X, y) in data.splits.items():
        arrays[f"X_{split}"], arrays[f"y_{split}"] = X, y
    X0 = next(iter(data.splits.values()))[0]
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "source": str(root),
        "layout": data.layout,
        "classes": data.classes,
        "image_shape": list(X0.shape[1:]),
        "counts": {split: len(y) for split, (_, y) in data.splits.items()},
        "ignored": data.info["ignored"],
        "skipped": data.skipped,
    }
    try:
        save_arrays(npz, arrays)
        write_json(meta_path, meta)  # last: a cache without its JSON is never used
    except OSError as e:
        warnings.warn(f"could not write the dataset cache {npz} ({e})", stacklevel=3)


def load_folder_cached(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    progress: bool = False,
    skip_corrupt: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FolderImages:
    """:func:`decode_folder`, through an on-disk cache keyed by content and decode options.

    The key hashes the archive's bytes (sha256), or for a directory the relative paths, sizes
    and modification times of its images, together with ``image_size`` and ``skip_corrupt``.
    A damaged cache is ignored with a warning and rebuilt.

    Parameters
    ----------
    root, image_size, progress, skip_corrupt
        As for :func:`decode_folder`.
    cache_dir : path, optional
        Where the cache lives; default :func:`default_cache_dir`.

    Returns
    -------
    FolderImages
        Its ``info`` holds ``cache`` (the ``.npz`` path) and ``from_cache`` (bool).
    """
    root = Path(root)
    hw = parse_image_size(image_size)
    kind = source_kind(root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with Progress(progress) as bar:
        src = DirSource(root) if kind == "dir" else None
        content = src.content_hash() if src is not None else file_sha256(root)
        key = _cache_key(content, hw, skip_corrupt)
        npz, meta = cache / f"folder-{key[:32]}.npz", cache / f"folder-{key[:32]}.json"
        data = _read_cache(npz, meta, key)
        if data is not None:
            if data.skipped:
                warnings.warn(
                    f"{len(data.skipped)} unreadable image(s) were skipped, e.g. {data.skipped[0]}",
                    stacklevel=2,
                )
            data.info.update(cache=str(npz), from_cache=True)
            return data
        src = src or open_source(root, kind, bar)
        try:
            data = _decode_source(src, root, hw, bar, skip_corrupt)
        finally:
            src.close()
    _write_cache(npz, meta, key, root, data)
    data.info.update(cache=str(npz), from_cache=False)
    return data


def load_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    test_size: float | int = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    skip_corrupt: bool = False,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], dict[str, Any]]:
    """Load a folder dataset as shuffled ``train``, ``test`` (and ``val``) splits.

    In the class layout ``test_size`` (fraction or count) of the images become the test split,
    stratified and seeded; in the split layout the folders decide and ``test_size`` is unused.

    Returns
    -------
    splits : dict of str to (ndarray of shape (N, H, W, C), ndarray of shape (N,))
        ``"train"``, ``"test"`` and, when the source has a ``val/`` folder, ``"val"``; rows in
        an order shuffled with ``seed``.
    classes : list of str
        Class folder names, sorted.
    info : dict
        ``layout``, ``cache``, ``from_cache``, ``ignored`` and ``skipped`` counts.
    """
    data = load_folder_cached(
        root,
        image_size=image_size,
        progress=progress,
        skip_corrupt=skip_corrupt,
        cache_dir=cache_dir,
    )
    splits = dict(data.splits)
    if data.layout == "class":
        X, y = splits.pop("all")
        keep, out = split_indices(y, test_size, seed, name="test_size")
        splits = {"train": (X[keep], y[keep]), "test": (X[out], y[out])}
    rng = np.random.default_rng(seed)
    shuffled = {}
    for split in SPLITS:
        if split in splits:
            X, y = splits[split]
            perm = rng.permutation(len(y))
            shuffled[split] = (X[perm], y[perm])
    return shuffled, data.classes, data.info
