"""Where a folder dataset's images are read from: a directory, a ``.zip`` or a tarball.

Each source lists its image members under normalised ``a/b/c.png`` names, reads their bytes
and hashes its content for the decode cache. Archives are read in memory, never extracted.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = frozenset(
    ".bmp .gif .jpeg .jpg .png .pbm .pgm .pnm .ppm .tif .tiff .webp".split()
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_CHUNK = 1 << 20

__all__ = [
    "ARCHIVE_SUFFIXES",
    "IMAGE_EXTENSIONS",
    "DirSource",
    "Progress",
    "TarSource",
    "ZipSource",
    "file_sha256",
    "is_image_name",
    "open_source",
    "source_kind",
]


def is_image_name(name: str) -> bool:
    """True for an image file outside hidden folders and ``__MACOSX``; ``name`` is normalised."""
    parts = name.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    dot = parts[-1].rfind(".")
    return dot > 0 and parts[-1][dot:].lower() in IMAGE_EXTENSIONS


def _norm(name: str) -> str:
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


class DirSource:
    """The image files under a directory; its hash covers names, sizes and modification times."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []
        self._stats: list[tuple[str, int, int]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            rel = Path(dirpath).relative_to(root).as_posix()
            for f in sorted(filenames):
                name = _norm(f"{rel}/{f}")
                if is_image_name(name):
                    st = os.stat(Path(dirpath) / f)
                    self.names.append(name)
                    self._stats.append((name, st.st_size, st.st_mtime_ns))

    def content_hash(self) -> str:
        h = hashlib.sha256(b"dir\n")
        for name, size, mtime in self._stats:
            h.update(f"{name}\0{size}\0{mtime}\n".encode())
        return h.hexdigest()

    def label(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def close(self) -> None:
        pass


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ZipSource:
    """The image members of a zip archive, read on demand; hashed by the archive's bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"{path}: not a readable zip archive ({e})") from None
        self._members = {}
        for info in self._zip.infolist():
            name = _norm(info.filename)
            if not info.is_dir() and is_image_name(name):
                self._members[name] = info
        self.names = sorted(self._members)

    def content_hash(self) -> str:
        return file_sha256(self.path)

    def label(self, name: str) -> str:
        return f"{self.path}:{self._members[name].filename}"

    def read(self, name: str) -> bytes:
        return self._zip.read(self._members[name])

    def close(self) -> None:
        self._zip.close()


class TarSource:
    """A tarball read in one streaming pass (compressed tars do not seek cheaply)."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self.path = path
        self._data: dict[str, tuple[str, bytes]] = {}
        try:
            with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
                task = progress.add(f"reading {path.name}", path.stat().st_size)
                for member in tar:
                    name = _norm(member.name)
                    if member.isfile() and is_image_name(name):
                        f = tar.extractfile(member)
                        assert f is not None
                        self._data[name] = (member.name, f.read())
                        progress.update(task, raw.tell())
                progress.update(task, path.stat().st_size)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable tar archive ({e})") from None
        self.names = sorted(self._data)

    def content_hash(self) -> str:
        return file_sha256(self.path)

    def label(self, name: str) -> str:
        return f"{self.path}:{self._data[name][0]}"

    def read(self, name: str) -> bytes:
        return self._data[name][1]

    def close(self) -> None:
        self._data.clear()


def source_kind(root: Path) -> str:
    """``"dir"``, ``"zip"`` or ``"tar"``; a clear error for anything else or a missing path."""
    if root.is_dir():
        return "dir"
    if not root.is_file():
        raise FileNotFoundError(f"{root}: no such directory or archive")
    lower = root.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    raise ValueError(
        f"{root}: unsupported file type; give a directory or an archive ending in "
        f"{', '.join(ARCHIVE_SUFFIXES)}"
    )


class Progress:
    """A rich progress display on stderr with several tasks, or a no-op."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(console=Console(stderr=True), transient=True)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def add(self, description: str, total: int) -> int:
        return self._bar.add_task(description, total=total) if self._bar is not None else 0

    def update(self, task: int, completed: int) -> None:
        if self._bar is not None:
            self._bar.update(task, completed=completed)


def open_source(root: Path, kind: str, progress: Progress) -> Any:
    """The source for ``root``, of the ``kind`` that :func:`source_kind` gave."""
    if kind == "dir":
        return DirSource(root)
    if kind == "zip":
        return ZipSource(root)
    return TarSource(root, progress)
