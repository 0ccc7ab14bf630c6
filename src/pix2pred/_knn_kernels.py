"""Compiled (numba) kernels behind :mod:`pix2pred.knn`'s fast paths.

- :func:`l1_uint8` — L1 distances between uint8 rows, exact in integers. The inner loop is the
  x86 ``psadbw`` instruction (sum of absolute differences of 8 bytes into a 64-bit lane) on the
  widest vectors the CPU has, in 4 x 4 register tiles (four test rows against four train rows,
  16 accumulators) inside cache tiles (a block of test rows against 256 train rows, which stay
  in L2). Elsewhere a plain loop that the compiler vectorises (about 10x slower).
- :func:`l2_uint8` — squared L2 distances between uint8 rows, exact in integers, from dot
  products by the AVX-512 VNNI ``vpdpbusd`` instruction (64 byte products a cycle, 4x a float32
  GEMM) in the same tiles. Only where the CPU has it (``HAS_VNNI``).
- :func:`l1_float` — L1 distances between float64 rows, cache-tiled.
- :func:`topk_rows` — the k smallest entries of each row, ties kept in column order.
- :func:`l2_topk_exact` — exact L2 top-k from an approximate float32 Gram matrix: candidates by
  the approximation, then a provable error bound decides which columns to recompute exactly.

All kernels are parallel over test rows and cached on disk (``cache=True``), so only the first
call on a machine pays the compile time.
"""

from __future__ import annotations

import math
import types as _pytypes

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.core import cgutils, config
from numba.extending import intrinsic

_TRAIN_TILE = 256  # train rows per cache tile: 256 x 3072 B = 768 KiB, inside a 1 MiB L2
_TEST_BLOCK = 64  # most test rows per parallel task
_R = 4  # test rows per register tile
_C = 4  # train rows per register tile

# (CPU feature, vector bytes, LLVM intrinsic), widest first
_PSADBW = (
    ("avx512bw", 64, "llvm.x86.avx512.psad.bw.512"),
    ("avx2", 32, "llvm.x86.avx2.psad.bw"),
    ("sse2", 16, "llvm.x86.sse2.psad.bw"),
)
_VPDPBUSD = ("avx512vnni", 64, "llvm.x86.avx512.vpdpbusd.512")


def _host_features() -> set[str]:
    """CPU features the code numba generates may use: none unless it targets this x86 host."""
    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return set()  # NOTE: numba targets a chosen CPU here, not the host: stay portable.
    if not llvm.get_process_triple().startswith(("x86_64", "i686", "i386")):
        return set()
    flags = llvm.get_host_cpu_features().flatten().split(",")
    return {f[1:] for f in flags if f.startswith("+")}


def make_tile(rows: int, cols: int, op: str, width: int, name: str):
    """A numba intrinsic ``tile(a_ptr, a_stride, b_ptr, b_stride, n_vec, out_ptr)``.

    For every pair of ``rows`` byte rows at ``a_ptr + r * a_stride`` and ``cols`` byte rows at
    ``b_ptr + c * b_stride``, over their first ``n_vec * width`` bytes, it computes
    ``sum |a - b|`` (``op="sad"``, uint8 rows, psadbw) or ``sum a * b`` (``op="dot"``, uint8
    ``a`` and int8 ``b``, vpdpbusd), and writes the ``rows * cols`` int64 totals, row-major, to
    ``out_ptr``. The accumulators are vectors held in registers across the loop, which numba's
    own types cannot express.
    """
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    bytes_t = ir.VectorType(i8, width)
    if op == "sad":
        acc_t = ir.VectorType(i64, width // 8)
        fn_t = ir.FunctionType(acc_t, [bytes_t, bytes_t])
    elif op == "dot":
        acc_t = ir.VectorType(i32, width // 4)
        fn_t = ir.FunctionType(acc_t, [acc_t, acc_t, acc_t])
    else:
        raise ValueError(f"op must be 'sad' or 'dot', got {op!r}")

    @intrinsic
    def tile(typingctx, a_ptr, a_stride, b_ptr, b_stride, n_vec, out_ptr):
        sig = types.void(*([types.intp] * 6))

        def codegen(context, builder, signature, args):
            a_ptr, a_stride, b_ptr, b_stride, n_vec, out_ptr = args
            instr = cgutils.get_or_insert_function(builder.module, fn_t, name)
            accs = [
                cgutils.alloca_once_value(builder, ir.Constant(acc_t, None))
                for _ in range(rows * cols)
            ]
            a_rows = [builder.add(a_ptr, builder.mul(a_stride, i64(r))) for r in range(rows)]
            b_rows = [builder.add(b_ptr, builder.mul(b_stride, i64(c))) for c in range(cols)]
            load_t = bytes_t if op == "sad" else acc_t
            with cgutils.for_range(builder, n_vec) as loop:
                offset = builder.mul(loop.index, i64(width))

                def load(row_ptr):
                    ptr = builder.inttoptr(builder.add(row_ptr, offset), load_t.as_pointer())
                    return builder.load(ptr, align=1)

                av = [load(p) for p in a_rows]
                bv = [load(p) for p in b_rows]
                for r in range(rows):
                    for c in range(cols):
                        acc = accs[r * cols + c]
                        if op == "sad":
                            new = builder.add(
                                builder.load(acc), builder.call(instr, [av[r], bv[c]])
                            )
                        else:
                            new = builder.call(instr, [builder.load(acc), av[r], bv[c]])
                        builder.store(new, acc)
            out = builder.inttoptr(out_ptr, i64.as_pointer())
            for t, acc in enumerate(accs):
                vec = builder.load(acc)
                lanes = [
                    builder.sext(builder.extract_element(vec, i32(lane)), i64)
                    if op == "dot"
                    else builder.extract_element(vec, i32(lane))
                    for lane in range(acc_t.count)
                ]
                total = lanes[0]
                for lane in lanes[1:]:
                    total = builder.add(total, lane)
                builder.store(total, builder.gep(out, [i64(t)]))
            return context.get_dummy_value()

        return sig, codegen

    return tile


_FEATURES = _host_features()
_SAD = next(((w, n) for f, w, n in _PSADBW if f in _FEATURES), None)
HAS_VNNI = _VPDPBUSD[0] in _FEATURES
# Where the instructions are missing these are never called (the callers dispatch); any valid
# x86 intrinsic keeps them compilable.
_SAD_WIDTH, _SAD_NAME = _SAD if _SAD is not None else _PSADBW[-1][1:]
_sad_tile = make_tile(_R, _C, "sad", _SAD_WIDTH, _SAD_NAME)
_sad_one = make_tile(1, 1, "sad", _SAD_WIDTH, _SAD_NAME)
_DOT_WIDTH = _VPDPBUSD[1]
_dot_tile = make_tile(_R, _C, "dot", _DOT_WIDTH, _VPDPBUSD[2])
_dot_one = make_tile(1, 1, "dot", _DOT_WIDTH, _VPDPBUSD[2])


def _test_block(n: int) -> int:
    """Test rows per parallel task: a multiple of 4, at most 64, an even share per thread."""
    threads = get_num_threads()
    n_tasks = threads * max(1, -(-n // (threads * _TEST_BLOCK)))
    block = -(-n // n_tasks)
    return max(_R, -(-block // _R) * _R)


def _l1_uint8_psadbw(a, b, out, block):
    n, D = a.shape
    m = b.shape[0]
    n_vec = D // _SAD_WIDTH
    tail = n_vec * _SAD_WIDTH
    pa = a.ctypes.data
    pb = b.ctypes.data
    for task in prange(-(-n // block)):
        sums = np.empty(_R * _C, np.int64)
        ps = sums.ctypes.data
        i_end = min(n, (task + 1) * block)
        for j0 in range(0, m, _TRAIN_TILE):
            j_end = min(m, j0 + _TRAIN_TILE)
            for i in range(task * block, i_end, _R):
                rows = min(_R, i_end - i)
                for j in range(j0, j_end, _C):
                    cols = min(_C, j_end - j)
                    if rows == _R and cols == _C:
                        _sad_tile(pa + i * D, D, pb + j * D, D, n_vec, ps)
                    else:
                        for r in range(rows):
                            for c in range(cols):
                                pa_r = pa + (i + r) * D
                                _sad_one(pa_r, D, pb + (j + c) * D, D, n_vec, ps + 8 * (r * _C + c))
                    for r in range(rows):
                        for c in range(cols):
                            s = sums[r * _C + c]
                            for d in range(tail, D):
                                s += abs(np.int64(a[i + r, d]) - np.int64(b[j + c, d]))
                            out[i + r, j + c] = s


def _l1_uint8_loop(a, b, out, block):
    n, D = a.shape
    m = b.shape[0]
    for task in prange(-(-n // block)):
        i_end = min(n, (task + 1) * block)
        for j0 in range(0, m, _TRAIN_TILE):
            for i in range(task * block, i_end):
                for j in range(j0, min(m, j0 + _TRAIN_TILE)):
                    s = np.int32(0)
                    for d in range(D):
                        # NOTE: an int32 accumulator is what lets the loop vectorise (numba
                        # widens int32 + int32 to int64); the caller checks D * 255 < 2**31.
                        s = np.int32(s + abs(np.int32(a[i, d]) - np.int32(b[j, d])))
                    out[i, j] = s


_l1_uint8_psadbw_jit = njit(parallel=True, cache=True, nogil=True)(_l1_uint8_psadbw)
_l1_uint8_loop_jit = njit(parallel=True, cache=True, nogil=True)(_l1_uint8_loop)


def l1_uint8(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = sum_d |a[i, d] - b[j, d]|``, exact.

    Parameters
    ----------
    a : ndarray of shape (n, D), uint8, C-contiguous
    b : ndarray of shape (m, D), uint8, C-contiguous
    out : ndarray of shape (n, m), int32 (needs ``D * 255 < 2**31``) or int64, written in place
    """
    if _SAD is not None:
        _l1_uint8_psadbw_jit(a, b, out, _test_block(len(a)))
    elif a.shape[1] * 255 < 2**31:
        _l1_uint8_loop_jit(a, b, out, _test_block(len(a)))
    else:  # the loop's int32 sums would overflow; float64 sums of integers stay exact
        result = np.empty(out.shape)
        l1_float(a.astype(np.float64), b.astype(np.float64), result)
        out[...] = result


def l1_uint8_variant(width: int | None):
    """An uncached :func:`l1_uint8` for another psadbw width (64, 32, 16) or the portable loop
    (None), so tests can check every code path on one machine that has them all."""
    if width is None:
        kernel = njit(parallel=True)(_l1_uint8_loop)
    else:
        name = {w: n for _, w, n in _PSADBW}[width]
        g = dict(_l1_uint8_psadbw.__globals__)
        g.update(
            _SAD_WIDTH=width,
            _sad_tile=make_tile(_R, _C, "sad", width, name),
            _sad_one=make_tile(1, 1, "sad", width, name),
        )
        fn = _pytypes.FunctionType(_l1_uint8_psadbw.__code__, g, f"_l1_uint8_psadbw{width}")
        kernel = njit(parallel=True)(fn)

    def l1_uint8_other(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        kernel(a, b, out, _test_block(len(a)))

    return l1_uint8_other


@njit(parallel=True, cache=True, nogil=True)
def _l2_uint8_vnni(a, b_signed, sum_a, sq_a, sq_b, out, block):
    n, D = a.shape
    m = b_signed.shape[0]
    n_vec = D // _DOT_WIDTH
    tail = n_vec * _DOT_WIDTH
    pa = a.ctypes.data
    pb = b_signed.ctypes.data
    for task in prange(-(-n // block)):
        sums = np.empty(_R * _C, np.int64)
        ps = sums.ctypes.data
        i_end = min(n, (task + 1) * block)
        for j0 in range(0, m, _TRAIN_TILE):
            j_end = min(m, j0 + _TRAIN_TILE)
            for i in range(task * block, i_end, _R):
                rows = min(_R, i_end - i)
                for j in range(j0, j_end, _C):
                    cols = min(_C, j_end - j)
                    if rows == _R and cols == _C:
                        _dot_tile(pa + i * D, D, pb + j * D, D, n_vec, ps)
                    else:
                        for r in range(rows):
                            for c in range(cols):
                                pa_r = pa + (i + r) * D
                                _dot_one(pa_r, D, pb + (j + c) * D, D, n_vec, ps + 8 * (r * _C + c))
                    for r in range(rows):
                        for c in range(cols):
                            s = sums[r * _C + c]
                            for d in range(tail, D):
                                s += np.int64(a[i + r, d]) * np.int64(b_signed[j + c, d])
                            # a.b = a.(b - 128) + 128 sum(a);  |a - b|^2 = |a|^2 + |b|^2 - 2 a.b
                            dot = s + 128 * sum_a[i + r]
                            out[i + r, j + c] = sq_a[i + r] + sq_b[j + c] - 2 * dot


def l2_uint8(a: np.ndarray, b_signed: np.ndarray, sq_b: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = sum_d (a[i, d] - b[j, d])**2``, exact; needs ``HAS_VNNI``.

    Parameters
    ----------
    a : ndarray of shape (n, D), uint8, C-contiguous
    b_signed : ndarray of shape (m, D), int8, C-contiguous: ``b - 128`` (``b ^ 0x80`` viewed
        as int8), because vpdpbusd multiplies unsigned by signed bytes
    sq_b : ndarray of shape (m,), int64, ``sum_d b[j, d]**2``
    out : ndarray of shape (n, m), int32 (needs ``D * 255**2 < 2**31``) or int64
    """
    sum_a = a.sum(axis=1, dtype=np.int64)
    sq_a = np.einsum("ij,ij->i", a, a, dtype=np.int64)
    _l2_uint8_vnni(a, b_signed, sum_a, sq_a, sq_b, out, _test_block(len(a)))


def l1_float(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = sum_d |a[i, d] - b[j, d]|`` in float64.

    ``a`` (n, D) and ``b`` (m, D) are float64, ``out`` (n, m) float64. Reassociation lets the
    sum vectorise; it changes the last bits only.
    """
    _l1_float(a, b, out, _test_block(len(a)))


@njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
def _l1_float(a, b, out, block):
    n, D = a.shape
    m = b.shape[0]
    for task in prange(-(-n // block)):
        i_end = min(n, (task + 1) * block)
        for j0 in range(0, m, _TRAIN_TILE):
            for i in range(task * block, i_end):
                for j in range(j0, min(m, j0 + _TRAIN_TILE)):
                    s = 0.0
                    for d in range(D):
                        s += abs(a[i, d] - b[j, d])
                    out[i, j] = s


@njit(cache=True, inline="always")
def _insert(vals, idx, count, k, v, j) -> int:
    """Insert ``(v, j)`` into the sorted ``vals[:count]``, after equal values; keep at most k."""
    pos = count if count < k else k - 1
    while pos > 0 and vals[pos - 1] > v:
        if pos < k:
            vals[pos] = vals[pos - 1]
            idx[pos] = idx[pos - 1]
        pos -= 1
    vals[pos] = v
    idx[pos] = j
    return min(count + 1, k)


@njit(parallel=True, cache=True, nogil=True)
def topk_rows(dist: np.ndarray, k: int, out_vals: np.ndarray, out_idx: np.ndarray) -> None:
    """The ``k`` smallest entries of each row of ``dist`` (n, m), in order; equal values in
    column order. Writes ``out_vals`` (n, k) and ``out_idx`` (n, k) int64."""
    n, m = dist.shape
    for i in prange(n):
        vals = out_vals[i]
        idx = out_idx[i]
        count = 0
        for j in range(m):
            v = dist[i, j]
            if count < k or v < vals[k - 1]:
                count = _insert(vals, idx, count, k, v, j)


@njit(cache=True, fastmath={"reassoc"})
def _sq_dist(x, y) -> float:
    """Squared L2 distance in float64: exact for uint8 rows, whose partial sums are integers
    below 2**53 in any order (so reassociating to vectorise is free)."""
    s = 0.0
    for d in range(x.shape[0]):
        t = np.float64(x[d]) - np.float64(y[d])
        s += t * t
    return s


@njit(parallel=True, cache=True, nogil=True)
def l2_topk_exact(
    gram, x_test, x_train, sq_test, sq_train, gamma, k, n_candidates, out_vals, out_idx
) -> None:
    """Exact squared-L2 top-k of each test row, from an approximate Gram matrix.

    Parameters
    ----------
    gram : ndarray of shape (n, m), float32, ``x_test @ x_train.T`` computed in float32
    x_test : ndarray of shape (n, D); x_train : ndarray of shape (m, D) (uint8 or float64)
    sq_test : ndarray of shape (n,); sq_train : ndarray of shape (m,); float64 squared norms
    gamma : float, a bound on the relative error of each float32 dot product: ``|gram[i, j] -
        x_test[i] . x_train[j]| <= gamma * |x_test[i]| * |x_train[j]|``
    k, n_candidates : int, neighbours wanted and approximate candidates taken first (>= k)
    out_vals : ndarray of shape (n, k), float64, exact squared distances, ascending
    out_idx : ndarray of shape (n, k), int64, train indices; equal distances by index

    For each row: 1) the ``n_candidates`` smallest approximate distances; 2) their exact
    distances, whose k-th smallest ``t`` is >= the true k-th; 3) every column whose approximate
    distance minus its error bound is <= ``t`` is recomputed exactly and kept in a sorted top-k.
    Step 3 provably sees every true neighbour, so the result is exact; the band is a handful
    of columns.
    """
    n, m = gram.shape
    D = x_test.shape[1]
    # float64 rounding of norms, subtraction and the exact sums themselves
    tiny = 8.0 * (D + 4) * 2.0**-53
    norm_train = np.sqrt(sq_train)
    max_sq = sq_train.max()
    max_norm = math.sqrt(max_sq)
    for i in prange(n):
        xi = x_test[i]
        norm_i = math.sqrt(sq_test[i])
        cand_vals = np.empty(n_candidates)
        cand_idx = np.empty(n_candidates, np.int64)
        count = 0
        for j in range(m):
            v = sq_train[j] - 2.0 * np.float64(gram[i, j])
            if count < n_candidates or v < cand_vals[n_candidates - 1]:
                count = _insert(cand_vals, cand_idx, count, n_candidates, v, j)
        exact = np.empty(n_candidates)
        for t in range(n_candidates):
            exact[t] = _sq_dist(xi, x_train[cand_idx[t]])
        exact.sort()
        threshold = exact[k - 1] - sq_test[i]
        # the largest error bound of the row rejects most columns before the exact one
        loose = threshold + 2.0 * gamma * norm_i * max_norm + tiny * (sq_test[i] + max_sq)
        vals = out_vals[i]
        idx = out_idx[i]
        count = 0
        for j in range(m):
            v = sq_train[j] - 2.0 * np.float64(gram[i, j])
            if v > loose:
                continue
            err = 2.0 * gamma * norm_i * norm_train[j] + tiny * (sq_test[i] + sq_train[j])
            if not (v - err > threshold):  # NOTE: "not >" also keeps NaN (overflowed) columns
                e = _sq_dist(xi, x_train[j])
                if count < k or e < vals[k - 1]:
                    count = _insert(vals, idx, count, k, e, j)
