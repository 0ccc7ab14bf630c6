import tarfile
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from pix2pred.data import load_dataset
from pix2pred.data.folder import (
    decode_folder,
    default_cache_dir,
    load_folder,
    load_folder_cached,
    resize_images,
)


def _save(path, arr, fmt=None, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path, format=fmt)
    return arr


def _rgb(rng, h=8, w=8):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _class_tree(root, counts=(("cat", 6), ("dog", 4)), seed=0):
    """PNG images in root/<class>/, plus files that must be ignored; returns {bytes: label}."""
    rng = np.random.default_rng(seed)
    expected = {}
    for label, (cls, n) in enumerate(counts):
        for i in range(n):
            expected[_save(root / cls / f"{i:03d}.png", _rgb(rng)).tobytes()] = label
    _save(root / ".hidden" / "x.png", _rgb(rng))
    _save(root / "__MACOSX" / "cat" / "._000.png", _rgb(rng))
    _save(root / "cat" / ".thumb.png", _rgb(rng))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("hello")
    return expected


def _split_tree(root, seed=1):
    """root/wrapper/{train,val,test}/{a,b,c}/*.png; returns {split: {bytes: label}}."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        for label, cls in enumerate("abc"):
            for i in range(n):
                arr = _save(root / "wrapper" / split / cls / f"{i}.png", _rgb(rng))
                expected.setdefault(split, {})[arr.tobytes()] = label
    return expected


def _zip(src, dest):
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src).as_posix())
    return dest


def _tar(src, dest, mode="w:gz"):
    with tarfile.open(dest, mode) as t:
        t.add(src, arcname=".")
    return dest


def _assert_matches(X, y, expected):
    assert X.dtype == np.uint8 and y.dtype == np.int64
    assert {x.tobytes(): int(label) for x, label in zip(X, y, strict=True)} == expected


def test_class_layout_directory(tmp_path):
    expected = _class_tree(tmp_path / "data")
    splits, classes, info = load_folder(
        tmp_path / "data", test_size=0.2, seed=3, cache_dir=tmp_path / "cache"
    )
    assert classes == ["cat", "dog"] and set(splits) == {"train", "test"}
    (X_tr, y_tr), (X_te, y_te) = splits["train"], splits["test"]
    assert X_tr.shape == (8, 8, 8, 3) and np.bincount(y_te).tolist() == [1, 1]
    _assert_matches(np.concatenate([X_tr, X_te]), np.concatenate([y_tr, y_te]), expected)
    assert info["layout"] == "class" and info["from_cache"] is False
    again, _, info2 = load_folder(
        tmp_path / "data", test_size=0.2, seed=3, cache_dir=tmp_path / "cache"
    )
    assert info2["from_cache"] is True
    assert all(np.array_equal(a, b) for a, b in zip(again["test"], splits["test"], strict=True))
    other, _, _ = load_folder(
        tmp_path / "data", test_size=0.2, seed=4, cache_dir=tmp_path / "cache"
    )
    assert not np.array_equal(other["train"][0], X_tr)  # the seed shuffles and splits


@pytest.mark.parametrize("kind", ["dir", "zip", "tar", "tgz"])
def test_split_layout_with_val_from_any_source(tmp_path, kind):
    expected = _split_tree(tmp_path / "src")
    root = {
        "dir": lambda: tmp_path / "src",
        "zip": lambda: _zip(tmp_path / "src", tmp_path / "d.zip"),
        "tar": lambda: _tar(tmp_path / "src", tmp_path / "d.tar", "w"),
        "tgz": lambda: _tar(tmp_path / "src", tmp_path / "d.tgz"),
    }[kind]()
    ds = load_dataset("folder", root=root, val_size=0.5, cache_dir=tmp_path / "cache")
    assert ds.classes == ["a", "b", "c"] and ds.info["val_from"] == "val folder"
    _assert_matches(ds.X_train, ds.y_train, expected["train"])
    _assert_matches(ds.X_val, ds.y_val, expected["val"])
    _assert_matches(ds.X_test, ds.y_test, expected["test"])
    assert ds.info["layout"] == "split" and ds.info["source"] == str(root)


def test_load_dataset_folder_subsamples_and_carves_val(tmp_path):
    _class_tree(tmp_path / "data", counts=(("x", 20), ("y", 20)))
    ds = load_dataset(
        "folder", root=tmp_path / "data", test_size=10, n_train=20, val_size=0.25, seed=0
    )
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (15, 5, 10)
    assert ds.info["val_from"] == "train" and ds.info["counts"]["test"] == 10
    with pytest.raises(ValueError, match=r"test_size .*got 1\.5"):
        load_dataset("folder", root=tmp_path / "data", test_size=1.5)
    with pytest.raises(ValueError, match=r"unknown option.*workers.*allowed: test_size"):
        load_dataset("folder", root=tmp_path / "data", workers=2)


def test_different_sizes_need_image_size(tmp_path):
    rng = np.random.default_rng(0)
    _class_tree(tmp_path / "data")
    _save(tmp_path / "data" / "dog" / "wide.png", _rgb(rng, 6, 10))
    with pytest.raises(ValueError, match=r"wide\.png is 10x6 pixels but .* is 8x8.*image_size"):
        decode_folder(tmp_path / "data")
    data = decode_folder(tmp_path / "data", image_size=(4, 5))
    assert data.splits["all"][0].shape == (11, 4, 5, 3)


def test_resize_uses_jpeg_draft_and_matches_a_plain_resize(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(_rgb(rng, 4, 4), np.ones((16, 16, 1), dtype=np.uint8))  # (64, 64, 3)
    _save(tmp_path / "data" / "a" / "1.jpg", smooth, fmt="JPEG")
    _save(tmp_path / "data" / "b" / "1.jpg", smooth[::-1], fmt="JPEG")
    X, _ = decode_folder(tmp_path / "data", image_size=16).splits["all"]
    ref = resize_images(smooth[None], 16)[0]
    assert X.shape == (2, 16, 16, 3)
    assert np.abs(X[0].astype(int) - ref).mean() < 12


def test_grey_images_stay_one_channel_and_mixed_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    grey = {}
    for cls in "ab":
        arr = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        grey[cls] = _save(tmp_path / "g" / cls / "1.png", arr)
    X, y = decode_folder(tmp_path / "g").splits["all"]
    assert X.shape == (2, 8, 8, 1)
    assert np.array_equal(X[0, ..., 0], grey["a"]) and np.array_equal(X[1, ..., 0], grey["b"])

    _save(tmp_path / "g" / "c" / "1.png", _rgb(rng))
    X, y = decode_folder(tmp_path / "g").splits["all"]
    assert X.shape == (3, 8, 8, 3) and y.tolist() == [0, 1, 2]
    assert all(np.array_equal(X[0, ..., c], grey["a"]) for c in range(3))


def test_rgba_palette_and_16_bit_images(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    _save(tmp_path / "m" / "rgba" / "1.png", rgba)
    pal = Image.fromarray(_rgb(rng)).quantize(colors=16)
    (tmp_path / "m" / "pal").mkdir()
    pal.save(tmp_path / "m" / "pal" / "1.png")
    deep = (rng.integers(0, 256, (8, 8)) * 257).astype(np.uint16)
    _save(tmp_path / "m" / "zz16" / "1.png", deep)
    data = decode_folder(tmp_path / "m")
    X, y = data.splits["all"]
    assert data.classes == ["pal", "rgba", "zz16"] and X.shape == (3, 8, 8, 3)
    assert y.tolist() == [0, 1, 2]
    assert np.array_equal(X[0], np.asarray(pal.convert("RGB")))
    assert np.array_equal(X[1], rgba[..., :3])
    assert np.array_equal(X[2, ..., 1], deep // 257)


def test_corrupt_image_is_named_or_skipped(tmp_path):
    _class_tree(tmp_path / "data")
    bad = tmp_path / "data" / "dog" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(ValueError, match=rf"{bad}: cannot decode image.*skip_corrupt=True"):
        decode_folder(tmp_path / "data")
    with pytest.warns(UserWarning, match=rf"skipping unreadable image {bad}"):
        data = decode_folder(tmp_path / "data", skip_corrupt=True)
    assert len(data.splits["all"][1]) == 10 and data.skipped == [str(bad)]

    archive = _zip(tmp_path / "data", tmp_path / "data.zip")
    with pytest.raises(ValueError, match=r"data\.zip:dog/bad\.png: cannot decode"):
        decode_folder(archive)


def test_truncated_jpeg_inside_a_tarball_is_named(tmp_path):
    rng = np.random.default_rng(0)
    _class_tree(tmp_path / "data")
    jpg = tmp_path / "data" / "cat" / "cut.jpg"
    _save(jpg, _rgb(rng, 8, 8), fmt="JPEG")
    jpg.write_bytes(jpg.read_bytes()[:200])
    archive = _tar(tmp_path / "data", tmp_path / "data.tar.gz")
    with pytest.raises(ValueError, match=r"data\.tar\.gz:\./cat/cut\.jpg: cannot decode"):
        decode_folder(archive)


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    _class_tree(tmp_path / "data")
    assert Image.MAX_IMAGE_PIXELS is not None
    decode_folder(tmp_path / "data")
    assert Image.MAX_IMAGE_PIXELS is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # 8x8 images are now "bombs"
    with pytest.raises(ValueError, match=r"cannot decode image.*DecompressionBomb"):
        decode_folder(tmp_path / "data")


def test_cache_is_keyed_by_content_and_options_and_survives_corruption(tmp_path):
    _class_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_folder_cached(tmp_path / "data", cache_dir=cache)
    assert not first.info["from_cache"]
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npz"]
    second = load_folder_cached(tmp_path / "data", cache_dir=cache)
    assert second.info["from_cache"] and second.info["cache"] == first.info["cache"]
    assert np.array_equal(second.splits["all"][0], first.splits["all"][0])
    assert second.classes == first.classes

    resized = load_folder_cached(tmp_path / "data", cache_dir=cache, image_size=4)
    assert not resized.info["from_cache"] and resized.info["cache"] != first.info["cache"]

    with open(first.info["cache"], "r+b") as f:  # damage the cached arrays
        f.seek(100)
        f.write(b"\0" * 64)
    with pytest.warns(UserWarning, match="ignoring unreadable cache"):
        rebuilt = load_folder_cached(tmp_path / "data", cache_dir=cache)
    assert not rebuilt.info["from_cache"]
    assert np.array_equal(rebuilt.splits["all"][0], first.splits["all"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_folder_cached(tmp_path / "data", cache_dir=cache).info["from_cache"]

    rng = np.random.default_rng(9)
    _save(tmp_path / "data" / "dog" / "new.png", _rgb(rng))
    changed = load_folder_cached(tmp_path / "data", cache_dir=cache)
    assert not changed.info["from_cache"] and len(changed.splits["all"][1]) == 11
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_archive_cache_and_skipped_files_warn_again(tmp_path):
    _class_tree(tmp_path / "data")
    (tmp_path / "data" / "cat" / "bad.jpg").write_bytes(b"garbage")
    archive = _tar(tmp_path / "data", tmp_path / "data.tgz")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        load_folder_cached(archive, cache_dir=tmp_path / "c", skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"1 unreadable image\(s\) were skipped"):
        cached = load_folder_cached(archive, cache_dir=tmp_path / "c", skip_corrupt=True)
    assert cached.info["from_cache"]


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2PRED_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    _class_tree(tmp_path / "data")
    info = load_folder_cached(tmp_path / "data").info
    assert info["cache"].startswith(str(tmp_path / "env-cache"))


def test_progress_bar_runs(tmp_path):
    _class_tree(tmp_path / "data")
    archive = _tar(tmp_path / "data", tmp_path / "data.tgz")
    data = load_folder_cached(archive, cache_dir=tmp_path / "c", progress=True)
    assert len(data.splits["all"][1]) == 10


def test_layout_errors_and_warnings(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "s" / "train" / "a" / "1.png", _rgb(rng))
    with pytest.raises(ValueError, match="train/ folder but no test/ folder"):
        decode_folder(tmp_path / "s")
    _save(tmp_path / "s" / "test" / "a" / "1.png", _rgb(rng))
    _save(tmp_path / "s" / "train" / "loose.png", _rgb(rng))
    with pytest.warns(UserWarning, match=r"ignored 1 image\(s\) outside .* train/loose\.png"):
        decode_folder(tmp_path / "s")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        decode_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such directory or archive"):
        decode_folder(tmp_path / "missing")
    (tmp_path / "data.rar").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"data\.rar: unsupported file type"):
        decode_folder(tmp_path / "data.rar")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken\.zip: not a readable zip"):
        decode_folder(tmp_path / "broken.zip")


def test_resize_images_batch():
    X = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    assert resize_images(X, (4, 6)).shape == (3, 4, 6, 1)
    assert resize_images(X, 8) is X
    with pytest.raises(ValueError, match="image_size must be positive"):
        resize_images(X, 0)
