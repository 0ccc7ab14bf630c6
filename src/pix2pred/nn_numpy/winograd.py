"""Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: 16 small GEMMs instead of one of 36.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). Each 4x4 tile ``d``
of the (padded) input gives a 2x2 tile of the output as

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (``*`` elementwise, g the 3x3 kernel),

so after the input transform ``V = B^T d B`` (16 numbers per tile and channel) and the kernel
transform ``U = G g G^T``, the channel sums are 16 independent GEMMs ``V[xi] (T, C) @ U[xi]
(C, F)`` over the T tiles: 16 multiply-adds per output 2x2 instead of 36, at the price of the
transforms, which are a few additions of shifted views (long contiguous runs in channels-last
memory).

The backward pass is Winograd too: ``dx`` is the same algorithm applied to ``dout`` with the
flipped, transposed kernel (a "full" correlation), and ``dw`` is ``G^T (sum over tiles of
V^T dM) G`` with ``dM = A dY A^T``, reusing the forward's V, so no column matrix exists at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pix2pred.nn_numpy.workspace import chunks, empty, parallel

# G (4x3) of F(2x2, 3x3); B^T and A^T are applied below as explicit additions.
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

#: Smallest number of input and of output channels for which Winograd beats im2col here.
MIN_CHANNELS = 16


def applicable(
    w_shape: tuple[int, ...], stride: tuple[int, int], pad: tuple[int, int], enabled: bool = True
) -> bool:
    """Whether ``conv_forward`` takes the Winograd path: 3x3, stride 1, pad at most 2, and
    enough channels on both sides for the GEMMs to dominate the transforms."""
    F, C, HH, WW = w_shape
    return (
        enabled
        and (HH, WW) == (3, 3)
        and stride == (1, 1)
        and max(pad) <= 2
        and min(C, F) >= MIN_CHANNELS
    )


def _kernel_transform(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """U = G g G^T of w (F, C, 3, 3), as (16, C, F) for the GEMMs."""
    F, C = w.shape[:2]
    return np.einsum("ia,fcab,jb->ijcf", G, w, G).reshape(16, C, F).astype(dtype)


def _split_columns(x: np.ndarray, pad: tuple[int, int], Th: int, Tw: int, X2: np.ndarray) -> None:
    """Zero-pad x (n, C, H, W) and split its columns by parity into X2 (n, 2 Th + 2, 2, Tw + 1, C).

    ``X2[n, h, p, m] = xp[n, h, 2 m + p]`` for the padded image xp: the tiles' columns 0 and
    2 are then ``X2[..., 0, :Tw]`` and ``X2[..., 0, 1:]``, contiguous runs of ``Tw * C``.
    """
    _, _, H, W = x.shape
    ph, pw = pad
    X2.fill(0)
    x_nhwc = x.transpose(0, 2, 3, 1)
    for p in range(2):
        w0 = (p - pw) % 2  # the first column of x whose padded column has parity p
        count = len(range(w0, W, 2))
        m0 = (pw + w0) // 2
        X2[:, ph : ph + H, p, m0 : m0 + count] = x_nhwc[:, :, w0::2]


def _input_transform(X2: np.ndarray, V: np.ndarray) -> None:
    """V = B^T d B of every 4x4 tile (stride 2) of the split image X2 into V (16, n, Th, Tw, C).

    The rows of B^T are (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1): first over
    the tile rows, on whole image rows at once, then over the tile columns.
    """
    n, _, _, Tw1, C = X2.shape
    Th = V.shape[2]
    r = [X2[:, k : k + 2 * Th - 1 : 2] for k in range(4)]  # (n, Th, 2, Tw + 1, C) each
    u = empty((4, n, Th, 2, Tw1, C), X2.dtype)
    np.subtract(r[0], r[2], out=u[0])
    np.add(r[1], r[2], out=u[1])
    np.subtract(r[2], r[1], out=u[2])
    np.subtract(r[1], r[3], out=u[3])
    for k in range(4):
        # Tile columns 0, 1, 2, 3 are even/odd columns m and m + 1.
        c = [u[k][:, :, 0, :-1], u[k][:, :, 1, :-1], u[k][:, :, 0, 1:], u[k][:, :, 1, 1:]]
        np.subtract(c[0], c[2], out=V[4 * k])
        np.add(c[1], c[2], out=V[4 * k + 1])
        np.subtract(c[2], c[1], out=V[4 * k + 2])
        np.subtract(c[1], c[3], out=V[4 * k + 3])


def _output_transform(M: np.ndarray, out6: np.ndarray) -> None:
    """Y = A^T m A of every tile of M (16, n, Th, Tw, F) into out6 (n, Th, 2, Tw, 2, F).

    The rows of A^T are (1, 1, 1, 0) and (0, 1, -1, -1). All but the last addition of each
    output run over whole contiguous arrays; the last one interleaves into out6.
    """
    s = empty((2, 4, *M.shape[1:]), M.dtype)  # (2, 4, n, Th, Tw, F)
    for j in range(4):
        np.add(M[j], M[4 + j], out=s[0, j])
        s[0, j] += M[8 + j]
        np.subtract(M[4 + j], M[8 + j], out=s[1, j])
        s[1, j] -= M[12 + j]
    for a in range(2):
        s[a, 0] += s[a, 1]
        s[a, 3] += s[a, 2]
        np.add(s[a, 0], s[a, 2], out=out6[:, :, a, :, 0])
        np.subtract(s[a, 1], s[a, 3], out=out6[:, :, a, :, 1])


def _tiles(size: int) -> int:
    return -(-size // 2)


def _conv(
    x: np.ndarray, U: np.ndarray, pad: tuple[int, int], out_hw: tuple[int, int], b=None
) -> tuple[np.ndarray, np.ndarray]:
    """Winograd convolution of x (N, C, H, W), any layout, with transformed kernel U (16, C, F).

    Returns out (N, H_out, W_out, F), a workspace buffer, and V (16, T, C), T = N * Th * Tw.
    """
    N, C = x.shape[:2]
    F = U.shape[2]
    Ho, Wo = out_hw
    Th, Tw = _tiles(Ho), _tiles(Wo)
    dtype = U.dtype
    T = N * Th * Tw
    V = empty((16, T, C), dtype)
    V6 = V.reshape(16, N, Th, Tw, C)
    per_sample = 16 * Th * Tw * max(C, F) * dtype.itemsize

    def transform_in(lo: int, hi: int) -> None:
        for a, z in chunks(hi - lo, 1, per_sample):
            a, z = a + lo, z + lo
            # Padded so that the tiles cover 2 Th x 2 Tw outputs (the extra is zero).
            X2 = empty((z - a, 2 * Th + 2, 2, Tw + 1, C), dtype)
            _split_columns(x[a:z], pad, Th, Tw, X2)
            _input_transform(X2, V6[:, a:z])

    parallel(transform_in, N)
    M = empty((16, T, F), dtype)
    np.matmul(V, U, out=M)  # 16 GEMMs (T, C) @ (C, F)
    if b is not None:
        M[5] += b  # A^T e_(1,1) A is all ones: a constant at xi = (1, 1) reaches every output
    M6 = M.reshape(16, N, Th, Tw, F)
    exact = (2 * Th, 2 * Tw) == (Ho, Wo)
    out = empty((N, Ho, Wo, F), dtype)

    def transform_out(lo: int, hi: int) -> None:
        for a, z in chunks(hi - lo, 1, per_sample):
            a, z = a + lo, z + lo
            grid = out[a:z] if exact else empty((z - a, 2 * Th, 2 * Tw, F), dtype)
            _output_transform(M6[:, a:z], grid.reshape(z - a, Th, 2, Tw, 2, F))
            if not exact:
                out[a:z] = grid[:, :Ho, :Wo]

    parallel(transform_out, N)
    return out, V


def conv_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[np.ndarray, Any]:
    """3x3 stride-1 convolution of x (N, C, H, W) → out (N, H_out, W_out, F) channels-last."""
    dtype = np.result_type(x, w, b)
    out, V = _conv(x, _kernel_transform(w, dtype), pad, out_hw, b.astype(dtype))
    return out, (V, w, x.shape, pad)


def conv_backward(
    dout_nhwc: np.ndarray, cache: Any, need_dx: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``conv_forward`` from dout (N, H_out, W_out, F), C-contiguous.

    Returns dx (N, H, W, C) channels-last (None unless ``need_dx``), dw (F, C, 3, 3), db (F,).
    """
    V, w, x_shape, (ph, pw) = cache
    N, C, H, W = x_shape
    _, Ho, Wo, F = dout_nhwc.shape
    Th, Tw = _tiles(Ho), _tiles(Wo)
    dtype = V.dtype
    dM = empty((16, N * Th * Tw, F), dtype)
    dM6 = dM.reshape(16, N, Th, Tw, F)
    if (2 * Th, 2 * Tw) == (Ho, Wo):
        dz = dout_nhwc
    else:  # zero gradient for the outputs the last tiles compute beyond the image
        dz = np.zeros((N, 2 * Th, 2 * Tw, F), dtype)
        dz[:, :Ho, :Wo] = dout_nhwc

    def transform(lo: int, hi: int) -> None:
        # dM = A dY A^T per 2x2 tile of dout; the rows of A are (1, 0), (1, 1), (1, -1), (0, -1).
        for a, z in chunks(hi - lo, 1, 16 * Th * Tw * F * dtype.itemsize):
            a, z = a + lo, z + lo
            y = [[dz[a:z, i::2, j::2] for j in range(2)] for i in range(2)]  # (n, Th, Tw, F)
            e = empty((4, 2, z - a, Th, Tw, F), dtype)
            for j in range(2):
                np.copyto(e[0, j], y[0][j])
                np.add(y[0][j], y[1][j], out=e[1, j])
                np.subtract(y[0][j], y[1][j], out=e[2, j])
                np.negative(y[1][j], out=e[3, j])
            for k in range(4):
                np.copyto(dM6[4 * k, a:z], e[k, 0])
                np.add(e[k, 0], e[k, 1], out=dM6[4 * k + 1, a:z])
                np.subtract(e[k, 0], e[k, 1], out=dM6[4 * k + 2, a:z])
                np.negative(e[k, 1], out=dM6[4 * k + 3, a:z])

    parallel(transform, N)
    dU = np.matmul(V.transpose(0, 2, 1), dM)  # (16, C, F): 16 GEMMs over the tiles
    dw = np.einsum("ia,ijcf,jb->fcab", G, dU.reshape(4, 4, C, F), G).astype(dtype)
    db = np.ones(len(dM[0]), dtype) @ dM[5]  # dM[(1, 1)] sums each 2x2 tile of dout
    if not need_dx:
        return None, dw, db
    # dx is the "full" correlation of dout with the flipped kernel, channels swapped.
    w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, F, 3, 3)
    dout_nchw = dout_nhwc.transpose(0, 3, 1, 2)
    dx, _ = _conv(dout_nchw, _kernel_transform(w_flip, dtype), (2 - ph, 2 - pw), (H, W))
    return dx, dw, db
