"""Checksummed, atomic downloads over ``urllib`` (no dependency beyond the standard library)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from pix2pred.checkpoint import atomic_open

__all__ = ["ChecksumError", "download_url", "md5sum"]

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file does not have the expected checksum."""


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hexadecimal MD5 digest of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _byte_progress(enabled: bool, description: str, total: int | None) -> Iterator[Callable]:
    """Yield ``advance(n_bytes)``: a rich download bar on stderr, or a no-op."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    columns += (TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def download_url(
    url: str, dest: str | os.PathLike[str], *, md5: str, progress: bool = True
) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; skip when ``dest`` already matches.

    The bytes go to a temporary file beside ``dest`` that is moved into place only once the
    checksum matches, so a failed, interrupted or corrupted download leaves nothing behind and
    never touches an existing ``dest``. An existing ``dest`` with the right checksum is kept
    (nothing is fetched); one with a wrong checksum is replaced only by a verified download.

    Parameters
    ----------
    url : str
        What to fetch (any scheme ``urllib`` opens).
    dest : path
        Destination file; its folder is created if needed.
    md5 : str
        Expected hexadecimal MD5 digest.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ChecksumError
        The downloaded bytes do not match ``md5``; the message names both digests and the URL.
    ConnectionError
        The URL cannot be fetched or the transfer breaks off.
    """
    dest = Path(dest)
    expected = md5.lower()
    if dest.is_file() and md5sum(dest) == expected:
        return dest
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_open(dest) as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            h = hashlib.md5(usedforsecurity=False)
            with _byte_progress(progress, f"downloading {dest.name}", total) as advance:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    advance(len(chunk))
            if h.hexdigest() != expected:
                raise ChecksumError(
                    f"checksum mismatch for {url}: expected md5 {expected}, got "
                    f"{h.hexdigest()}; the download was discarded and {dest} left as it was"
                )
    except ChecksumError:
        raise
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ConnectionError(f"could not download {url} to {dest}: {reason}") from None
    return dest
