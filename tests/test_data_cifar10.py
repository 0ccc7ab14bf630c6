import contextlib
import functools
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading

import numpy as np
import pytest

from pix2pred.data import load_dataset
from pix2pred.data.cifar10 import (
    ARCHIVE_NAME,
    FOLDER_NAME,
    ChecksumError,
    download_cifar10,
    load_cifar10,
    safe_load_pickle,
)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as the official (Python 2) batches do.

    Python 3's own protocol-2 pickler wraps bytes in ``_codecs.encode``, which the official
    files never reference and the safe loader rightly refuses.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING
        self.write(head + (b"" if n < 256 else struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str


def _official_pickle(obj, numpy1: bool) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    if numpy1:  # the module name NumPy 1 wrote, as in the real files
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return data


def _write_cifar(root, n=6, seed=0, numpy1=True):
    """Write a tiny CIFAR-10 in the official layout; returns the expected arrays."""
    rng = np.random.default_rng(seed)
    folder = root / FOLDER_NAME
    folder.mkdir(parents=True)
    X = rng.integers(0, 256, (6 * n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 6 * n)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        Xb, yb = X[b * n : (b + 1) * n], y[b * n : (b + 1) * n]
        batch = {
            b"batch_label": f"batch {b + 1} of 6".encode(),
            b"labels": [int(v) for v in yb],
            b"data": Xb.transpose(0, 3, 1, 2).reshape(n, 3072),  # row-major R, G, B planes
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n)],
        }
        (folder / name).write_bytes(_official_pickle(batch, numpy1))
    meta = {
        b"label_names": [c.encode() for c in CLASSES],
        b"num_cases_per_batch": n,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(_official_pickle(meta, numpy1))
    return X[: 5 * n], y[: 5 * n], X[5 * n :], y[5 * n :]


def _make_tarball(folder, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=FOLDER_NAME)
    return dest


def _check(loaded, expected):
    X_tr, y_tr, X_te, y_te, classes, _ = loaded
    assert classes == CLASSES
    for got, want in zip((X_tr, y_tr, X_te, y_te), expected, strict=True):
        assert np.array_equal(got, want)
    assert X_tr.dtype == np.uint8 and X_tr.flags.c_contiguous and y_tr.dtype == np.int64


@pytest.mark.parametrize("numpy1", [True, False])
def test_load_extracted_folder(tmp_path, numpy1):
    expected = _write_cifar(tmp_path, numpy1=numpy1)
    _check(load_cifar10(tmp_path), expected)
    _check(load_cifar10(tmp_path / FOLDER_NAME), expected)


def test_load_tarball_file_and_folder_holding_it(tmp_path):
    expected = _write_cifar(tmp_path / "src")
    tarball = _make_tarball(tmp_path / "src" / FOLDER_NAME, tmp_path / "dl" / ARCHIVE_NAME)
    _check(load_cifar10(tarball), expected)
    _check(load_cifar10(tarball.parent), expected)


def test_pixel_layout_matches_the_official_row_major_planes(tmp_path):
    _write_cifar(tmp_path)
    batch = safe_load_pickle((tmp_path / FOLDER_NAME / "data_batch_1").read_bytes(), "b1")
    X = load_cifar10(tmp_path)[0]
    row = batch[b"data"][2]
    # pixel (r=3, c=5): red at 3*32+5, green 1024 later, blue 2048 later
    assert X[2, 3, 5].tolist() == [row[101], row[1024 + 101], row[2048 + 101]]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / FOLDER_NAME / "data_batch_3"
    evil.write_bytes(_official_pickle({b"data": _Payload(marker)}, numpy1=True))
    with pytest.raises(ValueError, match=r"data_batch_3: not a safe CIFAR-10 batch.*system"):
        load_cifar10(tmp_path)
    assert not marker.exists()
    # the same inside a tarball names archive and member
    tarball = _make_tarball(tmp_path / FOLDER_NAME, tmp_path / ARCHIVE_NAME)
    with pytest.raises(ValueError, match=rf"{ARCHIVE_NAME}:{FOLDER_NAME}/data_batch_3"):
        load_cifar10(tarball)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # a global outside the allow-list
        b'c__builtin__\nexec\n(S\'open("x","w")\'\ntR.',
        b"cnumpy\nload\n(S'x.npy'\ntR.",  # numpy, but not an array-reconstruction name
    ],
)
def test_only_numpy_array_names_are_allowed(payload):
    with pytest.raises(ValueError, match="refusing to load"):
        safe_load_pickle(payload, "batch")


def test_garbage_and_wrong_content_name_the_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / FOLDER_NAME / "test_batch").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(ValueError, match="test_batch: unreadable CIFAR-10 batch"):
        load_cifar10(tmp_path)
    (tmp_path / FOLDER_NAME / "test_batch").write_bytes(_official_pickle({b"x": 1}, True))
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 batch"):
        load_cifar10(tmp_path)


def test_missing_data_says_how_to_download(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=f"pix2pred data download cifar10 --root {tmp_path}"
    ):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="pix2pred data download cifar10"):
        load_dataset("cifar10", root=tmp_path / "nowhere")
    _write_cifar(tmp_path)
    (tmp_path / FOLDER_NAME / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="missing data_batch_4"):
        load_cifar10(tmp_path)


def test_load_dataset_cifar10(tmp_path):
    _write_cifar(tmp_path, n=20)
    ds = load_dataset("cifar10", root=tmp_path, val_size=10, n_test=10, seed=0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (90, 10, 10)
    assert ds.classes == CLASSES and ds.X_test.shape == (10, 32, 32, 3)
    assert ds.info["source"] == str(tmp_path / FOLDER_NAME)
    small = load_dataset("cifar10", root=tmp_path, val_size=0, n_train=30, image_size=16)
    assert small.X_train.shape == (30, 16, 16, 3) and small.X_test.shape == (20, 16, 16, 3)
    with pytest.raises(ValueError, match="n_train=500 is more than the 100 images"):
        load_dataset("cifar10", root=tmp_path, n_train=500)


# ---------------------------------------------------------------------------------------------
# Download from a loopback HTTP server.


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012 (shared log, reset per server)

    def log_message(self, format, *args):
        type(self).requests.append(self.path)


@contextlib.contextmanager
def _serve(directory):
    _QuietHandler.requests = []
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    expected = _write_cifar(tmp_path / "src")
    tarball = _make_tarball(tmp_path / "src" / FOLDER_NAME, tmp_path / "www" / ARCHIVE_NAME)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    with _serve(tmp_path / "www") as base:
        yield f"{base}/{ARCHIVE_NAME}", md5, expected


def test_download_verifies_and_skips_a_good_file(tmp_path, served_tarball):
    url, md5, expected = served_tarball
    root = tmp_path / "data"
    path = download_cifar10(root, url=url, md5=md5, progress=False)
    assert path == root / ARCHIVE_NAME
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]
    _check(load_cifar10(root), expected)
    n_requests = len(_QuietHandler.requests)
    mtime = path.stat().st_mtime_ns
    assert download_cifar10(root, url=url, md5=md5, progress=False) == path
    assert len(_QuietHandler.requests) == n_requests  # valid file present: nothing fetched
    assert path.stat().st_mtime_ns == mtime


def test_download_with_progress_bar(tmp_path, served_tarball):
    url, md5, _ = served_tarball
    assert download_cifar10(tmp_path, url=url, md5=md5, progress=True).is_file()


def test_checksum_mismatch_leaves_nothing_and_keeps_existing_file(tmp_path, served_tarball):
    url, md5, _ = served_tarball
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as e:
        download_cifar10(tmp_path / "fresh", url=url, md5=wrong, progress=False)
    assert wrong in str(e.value) and md5 in str(e.value) and url in str(e.value)
    assert list((tmp_path / "fresh").iterdir()) == []

    old = tmp_path / "kept" / ARCHIVE_NAME
    old.parent.mkdir()
    old.write_bytes(b"an older, partial download")
    mtime = old.stat().st_mtime_ns
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        download_cifar10(old.parent, url=url, md5=wrong, progress=False)
    assert old.read_bytes() == b"an older, partial download"
    assert old.stat().st_mtime_ns == mtime
    assert list(old.parent.iterdir()) == [old]
    # a verified download does replace a damaged file
    download_cifar10(old.parent, url=url, md5=md5, progress=False)
    assert hashlib.md5(old.read_bytes()).hexdigest() == md5


def test_unreachable_url_is_a_connection_error(tmp_path, served_tarball):
    url, md5, _ = served_tarball
    root = tmp_path / "out"
    with pytest.raises(ConnectionError, match=r"could not download .*missing\.tar\.gz"):
        download_cifar10(root, url=url.replace(ARCHIVE_NAME, "missing.tar.gz"), md5=md5)
    assert not root.exists() or list(root.iterdir()) == []
