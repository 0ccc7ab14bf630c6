"""Tests of pix2pred.data.augment: shapes, contents, determinism and the spec parser."""

import re

import numpy as np
import pytest

from pix2pred.data.augment import color_jitter, make_augment, random_crop, random_flip


def _batch(N=6, C=3, H=5, W=7, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    "transform",
    [
        lambda X, rng: random_flip(X, rng),
        lambda X, rng: random_crop(X, rng, padding=2),
        lambda X, rng: random_crop(X, rng, padding=2, mode="reflect"),
        lambda X, rng: color_jitter(X, rng),
        make_augment("flip,crop,jitter"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transforms_keep_shape_dtype_and_input(transform, dtype):
    X = _batch(dtype=dtype)
    before = X.copy()
    out = transform(X, _rng(1))
    assert out.shape == X.shape
    assert out.dtype == dtype
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(transform(X, _rng(1)), out)


def test_flip_twice_with_the_same_draws_is_the_identity():
    X = _batch(N=20)
    once = random_flip(X, _rng(3))
    assert not np.array_equal(once, X)
    np.testing.assert_array_equal(random_flip(once, _rng(3)), X)


def test_flip_mirrors_whole_images_or_leaves_them():
    X = _batch(N=40)
    out = random_flip(X, _rng(4), p=0.5)
    flipped = np.array([np.array_equal(o, x[..., ::-1]) for o, x in zip(out, X, strict=True)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(out, X, strict=True)])
    assert np.all(flipped ^ kept)
    assert 5 < flipped.sum() < 35
    np.testing.assert_array_equal(random_flip(X, _rng(4), p=1.0), X[..., ::-1])
    np.testing.assert_array_equal(random_flip(X, _rng(4), p=0.0), X)


def _shift_of(crop, padded, H, W):
    """Every (dy, dx) at which ``crop`` is the window of ``padded``."""
    return [
        (dy, dx)
        for dy in range(padded.shape[-2] - H + 1)
        for dx in range(padded.shape[-1] - W + 1)
        if np.array_equal(crop, padded[:, dy : dy + H, dx : dx + W])
    ]


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_crops_are_shifted_windows_of_the_padded_image(mode):
    pad = 2
    X = _batch(N=30, H=5, W=6)
    out = random_crop(X, _rng(5), padding=pad, mode=mode)
    padded = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    shifts = [_shift_of(o, p, 5, 6) for o, p in zip(out, padded, strict=True)]
    assert all(len(s) == 1 for s in shifts)
    # Offsets are drawn independently per image and cover the range.
    offsets = {s[0] for s in shifts}
    assert len(offsets) > 10
    assert all(0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad for dy, dx in offsets)


def test_zero_padding_shows_zeros_on_the_uncovered_border():
    X = np.ones((50, 1, 4, 4), dtype=np.float32)
    out = random_crop(X, _rng(6), padding=1)
    zeros_per_image = (out == 0).sum(axis=(1, 2, 3))
    # A shift of one row uncovers 4 pixels, of a row and a column 4 + 4 - 1 = 7.
    assert set(zeros_per_image.tolist()) == {0, 4, 7}


def test_identity_settings():
    X = _batch()
    np.testing.assert_array_equal(random_crop(X, _rng(), padding=0), X)
    np.testing.assert_array_equal(
        color_jitter(X, _rng(), brightness=0, contrast=0, saturation=0), X
    )


def test_different_seeds_give_different_batches():
    X = _batch(N=16)
    augment = make_augment("flip,crop")
    assert not np.array_equal(augment(X, _rng(0)), augment(X, _rng(1)))


def test_brightness_scales_each_image_by_one_factor():
    X = np.abs(_batch(N=8)) + 0.5
    out = color_jitter(X, _rng(7), brightness=0.5, contrast=0, saturation=0)
    ratio = out / X
    per_image = ratio.reshape(8, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), rtol=1e-5)
    assert np.all((per_image >= 0.5 - 1e-6) & (per_image <= 1.5 + 1e-6))
    assert np.ptp(per_image[:, 0]) > 0.05


def test_contrast_keeps_the_mean_grey_level_and_saturation_keeps_grey_images():
    X = _batch(N=8, dtype=np.float64)
    out = color_jitter(X, _rng(8), brightness=0, contrast=0.5, saturation=0)
    gray = np.einsum("nchw,c->nhw", X, [0.299, 0.587, 0.114])
    gray_out = np.einsum("nchw,c->nhw", out, [0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray_out.mean(axis=(1, 2)), gray.mean(axis=(1, 2)), atol=1e-12)
    grey_images = np.repeat(X[:, :1], 3, axis=1)
    np.testing.assert_allclose(
        color_jitter(grey_images, _rng(9), brightness=0, contrast=0, saturation=0.9),
        grey_images,
        atol=1e-12,
    )


def test_make_augment_applies_tokens_in_order_with_one_generator():
    X = _batch(N=10)
    rng = _rng(10)
    expected = random_crop(random_flip(X, rng, p=0.3), rng, padding=2)
    np.testing.assert_array_equal(make_augment(" flip=0.3 , crop=2")(X, _rng(10)), expected)


@pytest.mark.parametrize("spec", [None, "", "none", " None "])
def test_make_augment_nothing(spec):
    assert make_augment(spec) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flip,rotate", "'rotate'"),
        ("flip,flip", "'flip' appears twice"),
        ("crop=abc", "'abc' is not a number"),
        ("crop=1.5", "crop padding must be a non-negative integer, got 1.5"),
        ("flip=2", "flip probability must be in [0, 1], got 2.0"),
        ("jitter=-1", "jitter strength must be non-negative, got -1.0"),
    ],
)
def test_make_augment_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_augment(spec)


def test_bad_arguments_name_the_value():
    X = _batch()
    with pytest.raises(ValueError, match=r"shape \(3, 5, 7\)"):
        random_flip(X[0], _rng())
    with pytest.raises(ValueError, match=r"got 1\.5"):
        random_flip(X, _rng(), p=1.5)
    with pytest.raises(ValueError, match="got -1"):
        random_crop(X, _rng(), padding=-1)
    with pytest.raises(ValueError, match="'wrap'"):
        random_crop(X, _rng(), mode="wrap")
    with pytest.raises(ValueError, match="reflect padding 5"):
        random_crop(X, _rng(), padding=5, mode="reflect")
    with pytest.raises(ValueError, match=r"saturation must be a non-negative number, got -0\.1"):
        color_jitter(X, _rng(), saturation=-0.1)
    with pytest.raises(ValueError, match="dtype int64"):
        random_flip(np.zeros((1, 1, 2, 2), dtype=np.int64), _rng())
    with pytest.raises(TypeError, match="Generator"):
        random_flip(X, 0)
