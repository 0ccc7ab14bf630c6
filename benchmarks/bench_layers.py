"""Speed of the fast NumPy layers against torch.nn.functional on the CPU: one table.

Each framework runs in its own process (their thread pools slow each other down inside one):
this script starts itself with ``--worker numpy`` and ``--worker torch``, collects their
JSON and prints, per layer, the best forward and forward+backward times, their ratio
(ours / torch) and the effective GFLOP/s, next to each library's own float32 GEMM speed.
Both sides get the same input memory order: "nchw" (C-contiguous) or "channels_last".

Run from the repository root, alone on the machine (the timings share its cores)::

    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_layers.py
    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_layers.py --blas-env both

``--blas-env both`` also times the numpy worker with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` removed from its environment (as ``env -u``), to show what OpenBLAS does
when it is not forced onto particular kernels. The workers run ``--rounds`` times, taking
turns, and each time is the best over the rounds: a slow spell of the shared machine then
hits neither side alone.

For each convolution the numpy worker also times its three GEMMs alone (forward, filter
gradient, input gradient: the same shapes, whole matrices, numpy's BLAS): the column
"GEMMs alone" is the floor the numpy layer cannot go below without a faster BLAS, so "f+b
ours / GEMMs" shows what our copies and adds cost on top, and the rest of the ratio to torch
is BLAS's speed on these shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GEMM_SIZE = 2048

# name: (kind, input shape, parameters)
CASES: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "conv 3→32 5x5 p2, 32x32": ("conv", (128, 3, 32, 32), {"F": 32, "k": 5, "stride": 1, "pad": 2}),
    "conv 32→64 3x3 p1, 16x16": (
        "conv",
        (128, 32, 16, 16),
        {"F": 64, "k": 3, "stride": 1, "pad": 1},
    ),
    "conv 64→128 3x3 p1 s2, 8x8": (
        "conv",
        (128, 64, 8, 8),
        {"F": 128, "k": 3, "stride": 2, "pad": 1},
    ),
    "max pool 2x2, 32ch 32x32": ("max_pool", (128, 32, 32, 32), {"pool": 2, "stride": 2}),
    "spatial batch norm, 32ch 32x32": ("spatial_bn", (128, 32, 32, 32), {}),
    "affine 4096→256": ("affine", (128, 4096), {"M": 256}),
}
LAYOUTS = ("nchw", "channels_last")


def flops(kind: str, shape: tuple[int, ...], p: dict[str, Any]) -> float:
    """Multiply-adds x 2 of one forward pass (a backward pass is twice that)."""
    if kind == "conv":
        N, C, H, W = shape
        Ho = (H + 2 * p["pad"] - p["k"]) // p["stride"] + 1
        Wo = (W + 2 * p["pad"] - p["k"]) // p["stride"] + 1
        return 2.0 * N * Ho * Wo * p["F"] * C * p["k"] ** 2
    if kind == "affine":
        return 2.0 * shape[0] * shape[1] * p["M"]
    return 0.0


def best_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Best wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls.

    The best, not the median: on a shared machine other processes only ever add time.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


# ---------------------------------------------------------------- workers


def numpy_worker(repeats: int) -> dict[str, Any]:
    """Time every case with pix2pred.nn_numpy.fast_layers."""
    from pix2pred.nn_numpy import fast_layers as FL
    from pix2pred.nn_numpy import im2col as I

    rng = np.random.default_rng(0)

    def in_layout(a: np.ndarray, layout: str) -> np.ndarray:
        if layout == "channels_last" and a.ndim == 4:
            return I.nchw(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))
        return np.ascontiguousarray(a)

    results: dict[str, Any] = {}
    for name, (kind, shape, p) in CASES.items():
        for layout in LAYOUTS if len(shape) == 4 else ("nchw",):
            x = in_layout(rng.standard_normal(shape, dtype=np.float32), layout)
            if kind == "conv":
                w = 0.1 * rng.standard_normal((p["F"], shape[1], p["k"], p["k"]), dtype=np.float32)
                b = np.zeros(p["F"], np.float32)

                def fwd(x=x, w=w, b=b, p=p):
                    return FL.conv_forward(x, w, b, p["stride"], p["pad"])

                bwd = FL.conv_backward
            elif kind == "max_pool":

                def fwd(x=x, p=p):
                    return FL.max_pool_forward(x, p["pool"], p["stride"])

                bwd = FL.max_pool_backward
            elif kind == "spatial_bn":
                g, be = np.ones(shape[1], np.float32), np.zeros(shape[1], np.float32)

                def fwd(x=x, g=g, be=be):
                    return FL.spatial_batchnorm_forward(x, g, be, {"mode": "train"})

                bwd = FL.spatial_batchnorm_backward
            else:
                w = 0.01 * rng.standard_normal((shape[1], p["M"]), dtype=np.float32)
                b = np.zeros(p["M"], np.float32)

                def fwd(x=x, w=w, b=b):
                    return FL.affine_forward(x, w, b)

                bwd = FL.affine_backward
            out, _ = fwd()
            # The upstream gradient in the output's own memory order, as a model passes it.
            dout = np.empty_like(out)
            dout[...] = rng.standard_normal(out.shape, dtype=np.float32)

            def fwd_bwd(fwd=fwd, bwd=bwd, dout=dout):
                _, cache = fwd()
                return bwd(dout, cache)

            results[f"{name}|{layout}"] = {
                "fwd": best_ms(fwd, repeats),
                "fwd_bwd": best_ms(fwd_bwd, repeats),
            }
            if kind == "conv":
                results[f"{name}|{layout}"]["gemms"] = conv_gemms_ms(shape, p, repeats, rng)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    c = np.empty_like(a)
    gemm_ms = best_ms(lambda: np.matmul(a, a, out=c), repeats)
    return {"cases": results, "gemm_gflops": 2 * GEMM_SIZE**3 / gemm_ms / 1e6, "blas": blas_info()}


def conv_gemms_ms(
    shape: tuple[int, ...], p: dict[str, Any], repeats: int, rng: np.random.Generator
) -> float:
    """Best time of a convolution's three GEMMs alone, on whole matrices of its shapes."""
    N, C, H, W = shape
    Ho = (H + 2 * p["pad"] - p["k"]) // p["stride"] + 1
    Wo = (W + 2 * p["pad"] - p["k"]) // p["stride"] + 1
    M, K, F = N * Ho * Wo, C * p["k"] ** 2, p["F"]
    cols = rng.standard_normal((M, K + 1), dtype=np.float32)  # with the bias's ones column
    w_cols = rng.standard_normal((K + 1, F), dtype=np.float32)
    dout = rng.standard_normal((M, F), dtype=np.float32)
    out, dcols = np.empty((M, F), np.float32), np.empty((M, K), np.float32)

    def gemms() -> None:
        np.matmul(cols, w_cols, out=out)  # forward
        _ = cols.T @ dout  # filter gradient
        np.matmul(dout, w_cols[:-1].T, out=dcols)  # input gradient's columns

    return best_ms(gemms, repeats)


def torch_worker(repeats: int, threads: int) -> dict[str, Any]:
    """Time every case with torch.nn.functional (autograd for the backward)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    results: dict[str, Any] = {}
    for name, (kind, shape, p) in CASES.items():
        for layout in LAYOUTS if len(shape) == 4 else ("nchw",):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(shape, generator=gen).contiguous(memory_format=fmt)
            x.requires_grad_(True)
            params: list[torch.Tensor] = []
            if kind == "conv":
                w = 0.1 * torch.randn(p["F"], shape[1], p["k"], p["k"], generator=gen)
                w = w.contiguous(memory_format=fmt)
                params = [w.requires_grad_(True), torch.zeros(p["F"], requires_grad=True)]

                def op(x=x, w=params[0], b=params[1], p=p):
                    return F.conv2d(x, w, b, stride=p["stride"], padding=p["pad"])
            elif kind == "max_pool":

                def op(x=x, p=p):
                    return F.max_pool2d(x, p["pool"], p["stride"])
            elif kind == "spatial_bn":
                params = [
                    torch.ones(shape[1], requires_grad=True),
                    torch.zeros(shape[1], requires_grad=True),
                ]
                mean, var = torch.zeros(shape[1]), torch.ones(shape[1])

                def op(x=x, g=params[0], b=params[1], mean=mean, var=var):
                    return F.batch_norm(x, mean, var, g, b, training=True)
            else:
                w = 0.01 * torch.randn(p["M"], shape[1], generator=gen)
                params = [w.requires_grad_(True), torch.zeros(p["M"], requires_grad=True)]

                def op(x=x, w=params[0], b=params[1]):
                    return F.linear(x, w, b)

            with torch.no_grad():
                dout = torch.randn(op().shape, generator=gen).contiguous(
                    memory_format=fmt if len(shape) == 4 else torch.contiguous_format
                )

            def fwd(op=op):
                with torch.no_grad():
                    return op()

            def fwd_bwd(op=op, dout=dout, leaves=(x, *params)):
                for t in leaves:
                    t.grad = None
                op().backward(dout)

            results[f"{name}|{layout}"] = {
                "fwd": best_ms(fwd, repeats),
                "fwd_bwd": best_ms(fwd_bwd, repeats),
            }
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen)
    c = torch.empty_like(a)
    gemm_ms = best_ms(lambda: torch.mm(a, a, out=c), repeats)
    return {
        "cases": results,
        "gemm_gflops": 2 * GEMM_SIZE**3 / gemm_ms / 1e6,
        "blas": f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    }


def blas_info() -> str:
    """The BLAS numpy uses, its threads and (OpenBLAS) the kernel architecture it picked."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "numpy BLAS (threadpoolctl not installed)"
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            arch = pool.get("architecture", "?")
            return (
                f"{pool['internal_api']} {pool['version']}, {pool['num_threads']} threads, {arch}"
            )
    return "no BLAS found"


# ---------------------------------------------------------------- driver


def run_worker(kind: str, args: argparse.Namespace, unset: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run this script as a worker process and return its JSON."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    cmd = [sys.executable, __file__, "--worker", kind, "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{done.stderr}")
    return json.loads(done.stdout)


def best_of(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A worker's results with every time the smaller of ``old``'s and ``new``'s."""
    if not old:
        return new
    for key, times in new["cases"].items():
        for k, v in times.items():
            old["cases"][key][k] = min(old["cases"][key][k], v)
    old["gemm_gflops"] = max(old["gemm_gflops"], new["gemm_gflops"])
    return old


def format_table(ours: list[dict[str, Any]], labels: list[str], torch_res: dict[str, Any]) -> str:
    """One row per case and layout: ours (per BLAS environment) and torch, in ms."""
    head = ["layer", "layout"]
    for label in labels:
        head += [f"fwd {label}", f"f+b {label}"]
    head += ["fwd torch", "f+b torch"]
    head += [f"ratio f+b {label}" for label in labels]
    head += [f"GEMMs alone {label}" for label in labels]
    head += [f"f+b / GEMMs {label}" for label in labels]
    head += [f"GFLOP/s f+b {label}" for label in labels] + ["GFLOP/s f+b torch"]
    rows = []
    for key, t in torch_res["cases"].items():
        name, layout = key.split("|")
        kind, shape, p = CASES[name]
        fl = 3 * flops(kind, shape, p)
        row = [name, layout]
        for res in ours:
            row += [f"{res['cases'][key]['fwd']:.2f}", f"{res['cases'][key]['fwd_bwd']:.2f}"]
        row += [f"{t['fwd']:.2f}", f"{t['fwd_bwd']:.2f}"]
        row += [f"{res['cases'][key]['fwd_bwd'] / t['fwd_bwd']:.2f}x" for res in ours]
        cases = [res["cases"][key] for res in ours]
        row += [f"{c['gemms']:.2f}" if "gemms" in c else "-" for c in cases]
        row += [f"{c['fwd_bwd'] / c['gemms']:.2f}x" if "gemms" in c else "-" for c in cases]
        gf = [res["cases"][key]["fwd_bwd"] for res in ours] + [t["fwd_bwd"]]
        row += [f"{fl / ms / 1e6:.0f}" if fl else "-" for ms in gf]
        rows.append(row)
    gemm = ["float32 GEMM 2048³ (GFLOP/s)", ""]
    gemm += [v for res in ours for v in (f"{res['gemm_gflops']:.0f}", "")]
    gemm += [f"{torch_res['gemm_gflops']:.0f}", ""] + [""] * (4 * len(ours) + 1)
    rows.append(gemm)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for r in rows:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per case")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the workers, best kept")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads (numpy's BLAS uses its own default)",
    )
    parser.add_argument(
        "--blas-env",
        choices=["as-is", "both"],
        default="as-is",
        help="also time numpy without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE ('both')",
    )
    args = parser.parse_args()
    if args.worker == "numpy":
        print(json.dumps(numpy_worker(args.repeats)))
        return
    if args.worker == "torch":
        print(json.dumps(torch_worker(args.repeats, args.threads)))
        return

    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    labels, envs = ["ours"], [()]
    if args.blas_env == "both":
        labels.append("ours env -u")
        envs.append(BLAS_VARS)
    ours: list[dict[str, Any]] = [{} for _ in envs]
    torch_res: dict[str, Any] = {}
    for _ in range(args.rounds):
        for i, unset in enumerate(envs):
            ours[i] = best_of(ours[i], run_worker("numpy", args, unset=unset))
        torch_res = best_of(torch_res, run_worker("torch", args))
    set_vars = {k: os.environ[k] for k in BLAS_VARS if k in os.environ}
    print(
        f"batch 128, float32, best of {args.repeats} calls (after 3 warm-up calls) in each of "
        f"{args.rounds} rounds; times in ms"
    )
    print(f"numpy: {ours[0]['blas']}; environment {set_vars or 'sets no OPENBLAS_* variables'}")
    if len(ours) > 1:
        print(f"numpy with env -u {' -u '.join(BLAS_VARS)}: {ours[1]['blas']}")
    print(f"torch: {torch_res['blas']}")
    print(format_table(ours, labels, torch_res))


if __name__ == "__main__":
    main()
