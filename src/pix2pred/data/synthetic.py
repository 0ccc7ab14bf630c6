"""A procedural, CIFAR-like image dataset: ten pattern classes drawn on Gaussian noise.

Each image is a pattern ``m`` in ``[0, 1]`` blended between a dark background colour and a bright
foreground colour, both random per image, plus Gaussian pixel noise. The classes differ in shape
(spiral orientation, checkerboard frequency, gradient kind, circle size) while colours, phase and
position are jittered, so a linear classifier does clearly better than chance but a CNN does
better still. Generation is vectorised and seeded: the same arguments give identical arrays, and
the test set does not depend on ``n_train``.

``difficulty`` (default 1) adds nuisances that the classes do not share: a colour ramp of uneven
lighting across each image, a few random rectangles of clutter, a random zoom of every pattern,
turned checkerboards and now and then a dark pattern on a light ground. They move pixel
distances far more than class evidence, so kNN falls to about linear accuracy while a CNN keeps
learning the shapes: the course's kNN/linear < MLP < CNN. ``difficulty=0`` gives the easier
set of earlier versions, image for image.
"""

from __future__ import annotations

import functools
import numbers
import statistics

import numpy as np

__all__ = ["CLASSES", "DEFAULT_DIFFICULTY", "DEFAULT_NOISE", "make_synthetic"]

CLASSES: tuple[str, ...] = (
    "spiral-0",
    "spiral-120",
    "spiral-240",
    "checker-coarse",
    "checker-medium",
    "checker-fine",
    "gradient-linear",
    "gradient-radial",
    "circle-small",
    "circle-large",
)
DEFAULT_NOISE = 0.25
DEFAULT_DIFFICULTY = 1.0

_SPIRAL_ROTATIONS = np.deg2rad([0.0, 120.0, 240.0])
_CHECKER_SQUARES = (0.5, 0.25, 0.125)  # side of one square, in units where the image spans 2
_CIRCLE_RADII = (0.3, 0.65)
_CHUNK_PIXELS = 1 << 18  # pixels generated per step, bounds memory for large images


def _image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        h = w = int(image_size)
    elif (
        isinstance(image_size, tuple | list)
        and len(image_size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in image_size)
    ):
        h, w = (int(s) for s in image_size)
    else:
        raise ValueError(f"image_size must be an int or a (height, width) pair, got {image_size!r}")
    if h < 4 or w < 4:
        raise ValueError(f"image_size must be at least 4 pixels per side, got {image_size!r}")
    return h, w


@functools.cache
def _normal_quantiles() -> np.ndarray:
    """The 65,536 quantiles of N(0, 1) at ``(i + 0.5) / 65536``; shape (65536,), float32."""
    nd = statistics.NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / 65536) for i in range(65536)], dtype=np.float32)


def _patterns(
    label: np.ndarray, p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """Intensity patterns in ``[0, 1]``.

    Parameters
    ----------
    label : ndarray of shape (n,)
    p : dict of ndarray of shape (n,)
        Per-image jitter: centre ``cx, cy``, ``angle``, ``phase_x, phase_y``, ``scale``.
    u, v : ndarray of shape (H, W)
        Pixel coordinates, ``u`` across and ``v`` down, spanning ``[-1, 1]``.

    Returns
    -------
    ndarray of shape (n, H, W), float32
    """
    m = np.empty((len(label), *u.shape), dtype=np.float32)
    ex = (slice(None), None, None)  # (n,) -> (n, 1, 1) to broadcast over pixels
    for c in np.unique(label):
        k = np.flatnonzero(label == c)
        du = u - p["cx"][k][ex]  # (k, H, W)
        dv = v - p["cy"][k][ex]
        if "zoom" in p:  # the harder set: every pattern scaled, checkerboards turned too
            du, dv = du / p["zoom"][k][ex], dv / p["zoom"][k][ex]
        if c < 3:
            theta = np.arctan2(dv, du)
            r = np.hypot(du, dv)
            rot = _SPIRAL_ROTATIONS[c] + p["angle"][k][ex]
            m[k] = np.clip(0.5 + 1.5 * np.cos(theta - 3.0 * np.pi * r - rot), 0.0, 1.0)
        elif c < 6:
            f = np.pi / _CHECKER_SQUARES[c - 3]
            if "zoom" in p:
                cos, sin = np.cos(p["angle"][k][ex]), np.sin(p["angle"][k][ex])
                du, dv = du * cos + dv * sin, dv * cos - du * sin
            else:
                du, dv = u, v
            sx = np.sin(f * (du + p["phase_x"][k][ex]))
            sy = np.sin(f * (dv + p["phase_y"][k][ex]))
            m[k] = np.clip(0.5 + 4.0 * sx * sy, 0.0, 1.0)
        elif c == 6:
            a = 2.0 * np.pi * p["phase_x"][k][ex]  # any direction
            m[k] = np.clip(0.5 + 0.4 * (du * np.cos(a) + dv * np.sin(a)), 0.0, 1.0)
        elif c == 7:
            m[k] = np.clip(1.0 - 0.8 * np.hypot(du, dv), 0.0, 1.0)
        else:
            radius = _CIRCLE_RADII[c - 8] * p["scale"][k][ex]
            edge = 2.0 / u.shape[1]  # about one pixel of soft edge
            m[k] = np.clip((radius - np.hypot(du, dv)) / edge + 0.5, 0.0, 1.0)
    return m


def _clutter(
    n: int, u: np.ndarray, v: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random soft-edged rectangles drawn over the pattern, for nuisance the classes do not share.

    ``u`` ``(W,)`` and ``v`` ``(H,)`` are the pixel coordinates across and down. Returns
    ``alpha (n, count, H, W)`` float32 in ``[0, 1]`` and ``colour (n, count, 3)`` float32.
    """
    centre = rng.uniform(-1.0, 1.0, (2, n, count, 1)).astype(np.float32)
    half = rng.uniform(0.08, 0.25, (2, n, count, 1)).astype(np.float32)
    edge = np.float32(2.0 / len(u))
    inside_u = (half[0] - np.abs(u - centre[0])) / edge + 0.5  # (n, count, W)
    inside_v = (half[1] - np.abs(v - centre[1])) / edge + 0.5  # (n, count, H)
    alpha = np.minimum(inside_u[:, :, None, :], inside_v[:, :, :, None])  # (n, count, H, W)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    alpha *= rng.uniform(0.6, 1.0, (n, count, 1, 1)).astype(np.float32)
    return alpha, rng.uniform(0.0, 1.0, (n, count, 3)).astype(np.float32)


def _generate(
    n: int, hw: tuple[int, int], noise: float, difficulty: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` balanced, shuffled images; returns ``X (n, H, W, 3) uint8, y (n,) int64``."""
    H, W = hw
    d = difficulty
    y = rng.permutation(np.arange(n, dtype=np.int64) % len(CLASSES))
    p = {
        "cx": rng.uniform(-0.2, 0.2, n),
        "cy": rng.uniform(-0.2, 0.2, n),
        "angle": rng.uniform(-0.5, 0.5, n),
        "phase_x": rng.uniform(0.0, 1.0, n),
        "phase_y": rng.uniform(0.0, 1.0, n),
        "scale": rng.uniform(0.8, 1.2, n),
    }
    p = {k: a.astype(np.float32) for k, a in p.items()}
    fg = rng.uniform(0.55, 1.0, (n, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 0.45, (n, 3)).astype(np.float32)
    if d > 0:
        # NOTE: drawn after the easy set's parameters, so difficulty=0 keeps its exact images.
        swap = rng.random(n) < 0.05 * d  # dark pattern on a light ground
        fg[swap], bg[swap] = bg[swap].copy(), fg[swap].copy()
        # zoom x0.82-1.22 keeps classes that differ by 2x in scale (checkers, circles) apart
        p["zoom"] = np.exp(rng.uniform(-0.2, 0.2, n) * min(d, 1.0)).astype(np.float32)
        # uneven lighting: a colour ramp across each image, which moves pixel distances a lot
        # and class evidence not at all
        ramp = rng.uniform(-0.6 * d, 0.6 * d, (n, 2, 3)).astype(np.float32)
    n_clutter = max(1, round(2 * d))
    v, u = np.meshgrid(
        np.linspace(-1.0, 1.0, H, dtype=np.float32),
        np.linspace(-1.0, 1.0, W, dtype=np.float32),
        indexing="ij",
    )  # (H, W) each

    X = np.empty((n, H, W, 3), dtype=np.uint8)
    base = 255.0 * bg + 0.5  # (n, 3); the +0.5 makes the uint8 truncation below round
    span = 255.0 * (fg - bg)  # (n, 3)
    quantiles = _normal_quantiles() * np.float32(255.0 * noise)  # (65536,)
    step = max(1, _CHUNK_PIXELS // (H * W))
    # NOTE: the arithmetic runs channel-first, (b, 3, H, W), so that every per-pixel broadcast
    # has a long contiguous inner loop; with channels last its inner loop is 3 long and slow.
    for s in range(0, n, step):
        sl = slice(s, min(s + step, n))
        m = _patterns(y[sl], {k: a[sl] for k, a in p.items()}, u, v)[:, None]  # (b, 1, H, W)
        # Gaussian noise by inverse-CDF lookup of 16-bit uniforms: indistinguishable from
        # rng.standard_normal after uint8 rounding, and about twice as fast.
        idx = rng.integers(0, 65536, (len(m), H, W, 3), dtype=np.uint16)
        img = quantiles[idx.transpose(0, 3, 1, 2)]  # (b, 3, H, W)
        img += base[sl, :, None, None]
        img += m * span[sl, :, None, None]
        if d > 0:
            # NOTE: one scratch buffer and in-place ops: fresh (b, 3, H, W) temporaries cost
            # more in page faults than the arithmetic. The ramp is u * r0 + v * r1 per channel,
            # one small matrix product over the pixels.
            uv = np.stack([u.ravel(), v.ravel()])  # (2, H * W)
            r = 255.0 * ramp[sl].transpose(0, 2, 1)  # (b, 3, 2)
            tmp = np.matmul(r, uv).reshape(img.shape)  # (b, 3, H, W)
            img += tmp
            alpha, colour = _clutter(len(m), u[0], v[:, 0], n_clutter, rng)
            for j in range(n_clutter):
                np.subtract(255.0 * colour[:, j, :, None, None], img, out=tmp)
                tmp *= alpha[:, j, None]  # (b, 1, H, W)
                img += tmp
        np.clip(img, 0.0, 255.0, out=img)
        X[sl] = img.transpose(0, 2, 3, 1)  # NOTE: float -> uint8 truncates; values are >= 0
    return X, y


def make_synthetic(
    n_train: int = 5000,
    n_test: int = 1000,
    *,
    image_size: int | tuple[int, int] = 32,
    noise: float = DEFAULT_NOISE,
    difficulty: float = DEFAULT_DIFFICULTY,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Generate the synthetic dataset.

    Parameters
    ----------
    n_train, n_test : int
        Number of training and test images (each class gets an equal share, up to one).
    image_size : int or (int, int)
        Side, or ``(height, width)``, of the images; at least 4.
    noise : float
        Standard deviation of the Gaussian pixel noise, on the ``[0, 1]`` intensity scale.
    difficulty : float
        Strength of the nuisances (lighting ramp, clutter, zoom, inverted colours), in
        ``[0, 2]``; 0 leaves them out.
    seed : int
        Non-negative seed; the training and test images come from independent streams.

    Returns
    -------
    X_train : ndarray of shape (n_train, H, W, 3), uint8
    y_train : ndarray of shape (n_train,), int64
    X_test : ndarray of shape (n_test, H, W, 3), uint8
    y_test : ndarray of shape (n_test,), int64
    classes : list of str
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    hw = _image_hw(image_size)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative float, got {noise!r}")
    if (
        isinstance(difficulty, bool)
        or not isinstance(difficulty, numbers.Real)
        or not 0 <= difficulty <= 2
    ):
        raise ValueError(f"difficulty must be a float in [0, 2], got {difficulty!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    ss_train, ss_test = np.random.SeedSequence(int(seed)).spawn(2)
    X_train, y_train = _generate(
        int(n_train), hw, float(noise), float(difficulty), np.random.default_rng(ss_train)
    )
    X_test, y_test = _generate(
        int(n_test), hw, float(noise), float(difficulty), np.random.default_rng(ss_test)
    )
    return X_train, y_train, X_test, y_test, list(CLASSES)
