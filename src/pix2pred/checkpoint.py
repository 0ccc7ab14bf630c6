"""Safe, atomic persistence: JSON metadata, and weights as safetensors or pickle-free ``.npz``.

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a crash or Ctrl-C never leaves a half-written file where a good one stood.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``path``; move it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it in /proc.

    Elsewhere ``os.umask`` must set a value to return the old one, which briefly changes the
    mask for every thread; that is only the fallback.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NumPy scalars and arrays become lists)."""
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
    write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Save named arrays to an uncompressed ``.npz`` atomically (no pickled objects)."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(
                f"array {name!r} has dtype object, which cannot be saved without pickle"
            )
    with atomic_open(path) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` saved by :func:`save_arrays`; pickle is never allowed."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a pix2pred array file ({e})") from None


def save_safetensors(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save named arrays as a ``.safetensors`` file, atomically.

    The format both backends read (``safetensors.numpy`` here, ``safetensors.torch`` there):
    a JSON header of names, dtypes and shapes, then the raw little-endian bytes; nothing in it
    can run code when loaded.

    Parameters
    ----------
    path : path of the file to write
    arrays : mapping of name to ndarray of any shape (0-d included) and a numeric or bool dtype
    metadata : mapping of str to str, optional, kept in the header (see `read_safetensors_metadata`)
    """
    from safetensors.numpy import save

    contiguous = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype == object or a.dtype.kind not in "biufc":
            raise TypeError(f"array {name!r} has dtype {a.dtype}, which safetensors cannot hold")
        # NOTE: safetensors.numpy reads the raw buffer, so a strided view would be saved wrongly.
        # (np.ascontiguousarray would also turn a 0-d array into a 1-d one.)
        contiguous[name] = a if a.flags.c_contiguous else a.copy(order="C")
    write_bytes(path, save(contiguous, metadata=dict(metadata) if metadata else None))


def _open_safetensors(path: Path) -> Any:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return safe_open(path, framework="np")
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception)
        raise ValueError(f"{path}: not a safetensors file ({e})") from None


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load every array of a ``.safetensors`` file as writable numpy arrays (copies)."""
    path = Path(path)
    with _open_safetensors(path) as f:
        return {k: np.array(f.get_tensor(k)) for k in f.keys()}


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text metadata in the header of a ``.safetensors`` file (empty when it has none)."""
    path = Path(path)
    with _open_safetensors(path) as f:
        return dict(f.metadata() or {})
