"""The official CIFAR-10 "python version": checksummed download and a pickle-safe loader.

The batches are Python pickles. Unpickling runs whatever the file names, so they are read with
:class:`SafeUnpickler`, which resolves only the few NumPy names that rebuild an array and refuses
everything else before it can run.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred.data.download import ChecksumError, download_url

__all__ = [
    "ARCHIVE_NAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "FOLDER_NAME",
    "ChecksumError",
    "RefusedPickleError",
    "SafeUnpickler",
    "default_root",
    "download_cifar10",
    "find_cifar10",
    "load_cifar10",
    "safe_load_pickle",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"


# Exactly what the official batches reference: NumPy's array reconstruction, under its NumPy 1
# and NumPy 2 module names.
_ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle names something outside :class:`SafeUnpickler`'s allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds NumPy arrays and plain containers, and nothing else.

    ``find_class`` is the only door through which a pickle reaches code; every name outside the
    allow-list raises :class:`RefusedPickleError` before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise RefusedPickleError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            # Both spellings map to the current location, without importing the deprecated
            # numpy.core alias.
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def safe_load_pickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (``encoding="bytes"``).

    Parameters
    ----------
    data : bytes
        The pickle.
    source : str
        Where ``data`` came from, for error messages (a path, or ``archive:member``).
    """
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedPickleError as e:
        raise ValueError(f"{source}: not a safe CIFAR-10 batch ({e})") from None
    except Exception as e:  # a truncated or garbled pickle raises many kinds of error
        raise ValueError(f"{source}: unreadable CIFAR-10 batch ({type(e).__name__}: {e})") from None


def default_root() -> Path:
    """The folder used when no ``root`` is given: ``$PIX2PRED_DATA`` or ``./data``."""
    return Path(os.environ.get("PIX2PRED_DATA") or "data")


def download_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    progress: bool = True,
) -> Path:
    """Download the CIFAR-10 tarball into ``root`` and verify its MD5.

    See :func:`pix2pred.data.download.download_url`: the file appears only once verified, a
    failed download leaves nothing behind, and an existing valid file is kept without fetching.

    Parameters
    ----------
    root : path, optional
        Folder to download into (created if needed); default :func:`default_root`.
    url : str
        Where to fetch the tarball.
    md5 : str
        Expected hexadecimal MD5 of the tarball.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    Path
        ``root / "cifar-10-python.tar.gz"``, ready for :func:`load_cifar10`.

    Raises
    ------
    ChecksumError
        The downloaded bytes do not match ``md5`` (the message names both digests and the URL).
    ConnectionError
        The URL cannot be fetched.
    """
    root = Path(root if root is not None else default_root())
    return download_url(url, root / ARCHIVE_NAME, md5=md5, progress=progress)


def find_cifar10(root: str | os.PathLike[str] | None = None) -> Path:
    """Locate the CIFAR-10 data under ``root``.

    ``root`` may be the tarball itself, the extracted ``cifar-10-batches-py`` folder, or a folder
    holding either (the extracted folder wins when both are there).

    Raises
    ------
    FileNotFoundError
        Nothing usable is there; the message says how to download it.
    """
    root = Path(root if root is not None else default_root())
    candidates = [root / FOLDER_NAME, root / ARCHIVE_NAME]
    if root.is_file():
        return root
    if (root / META).is_file() or (root / TEST_BATCH).is_file():
        return root
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(
        f"CIFAR-10 not found at {root} (looked for {candidates[0]} and {candidates[1]}). "
        f"Download it with: pix2pred data download cifar10 --root {root}"
    )


def _read_members(path: Path) -> dict[str, tuple[bytes, str]]:
    """Raw bytes of the batch files and a label for error messages, from a folder or tarball."""
    wanted = (*TRAIN_BATCHES, TEST_BATCH, META)
    found: dict[str, tuple[bytes, str]] = {}
    if path.is_dir():
        for name in wanted:
            p = path / name
            if p.is_file():
                found[name] = (p.read_bytes(), str(p))
    else:
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in wanted and base not in found:
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        found[base] = (data, f"{path}:{member.name}")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable CIFAR-10 tarball ({e})") from None
    missing = [n for n in wanted if n not in found]
    if missing:
        raise FileNotFoundError(
            f"{path}: incomplete CIFAR-10 data, missing {', '.join(missing)}. Download it "
            f"again with: pix2pred data download cifar10 --root {path.parent}"
        )
    return found


def _decode_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch's images ``(N, 32, 32, 3) uint8`` and labels ``(N,) int64``."""
    batch = safe_load_pickle(data, source)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{source}: not a CIFAR-10 batch (expected a dict with data and labels)")
    x, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        shape = getattr(x, "shape", None)
        raise ValueError(f"{source}: data must be a uint8 array of shape (N, 3072), got {shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: labels must be a list of ints") from None
    if y.shape != (len(x),) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"{source}: expected {len(x)} labels in 0..9, got shape {y.shape}")
    X = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3, 32, 32) -> (N, 32, 32, 3)
    return np.ascontiguousarray(X), y


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], Path]:
    """Load the official CIFAR-10 batches from ``root`` (see :func:`find_cifar10`).

    Returns
    -------
    X_train : ndarray of shape (50000, 32, 32, 3), uint8
    y_train : ndarray of shape (50000,), int64
    X_test : ndarray of shape (10000, 32, 32, 3), uint8
    y_test : ndarray of shape (10000,), int64
    classes : list of str
    source : Path
        The folder or tarball read.
    """
    source = find_cifar10(root)
    members = _read_members(source)
    meta = safe_load_pickle(*members[META])
    try:
        classes = [n.decode("utf-8") for n in meta[b"label_names"]]
    except (TypeError, KeyError, AttributeError, UnicodeDecodeError):
        raise ValueError(f"{members[META][1]}: expected label_names in batches.meta") from None
    if len(classes) != 10:
        raise ValueError(f"{members[META][1]}: expected 10 label names, got {len(classes)}")
    train = [_decode_batch(*members[name]) for name in TRAIN_BATCHES]
    X_test, y_test = _decode_batch(*members[TEST_BATCH])
    X_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return X_train, y_train, X_test, y_test, classes, source
