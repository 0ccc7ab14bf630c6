"""One-line parity tests for forward/backward pairs: against torch autograd and numerically.

``check_layer(forward, backward, torch_fn, inputs)`` draws (or copies) the inputs, runs
``out, cache = forward(*arrays)`` and ``backward(dout, cache)`` for a random, non-uniform
upstream gradient ``dout`` (all ones would hide bugs, e.g. in batch norm), and asserts that

1. ``out`` equals ``torch_fn(*tensors)`` on the same values,
2. every gradient equals torch autograd's for the same ``dout``,
3. every gradient equals central differences (``pix2pred.gradcheck.check_layer_numerically``).

``compare_layers`` does 1-2 between two numpy implementations (fast layers vs reference).

Errors are elementwise relative errors ``|a - b| / max(|a| + |b|, floor * scale)``, where
``scale`` is the largest ``|a| + |b|`` over the output (for 1) or over all the gradients (for
2, 3): entries far below the scale (a bias before batch norm, whose gradient is zero) are
judged by their absolute error against it, because there both sides are rounding noise.

Examples (``L`` = ``pix2pred.nn_numpy.layers``, ``F`` = ``torch.nn.functional``)::

    check_layer(L.relu_forward, L.relu_backward, torch.relu, [random_away_from_zero(rng, (4, 5))])
    check_layer(
        lambda x, w, b: L.conv_forward(x, w, b, stride=2, pad=1),
        L.conv_backward,
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
        [(2, 3, 5, 5), (4, 3, 3, 3), (4,)],
    )

Inputs that are not differentiated (labels, ``bn_param``, strides) go into the lambdas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pix2pred.gradcheck import check_layer_numerically, rel_error

Forward = Callable[..., tuple[Any, Any]]
Backward = Callable[[Any, Any], Any]
Inputs = Sequence[tuple[int, ...] | np.ndarray]


def make_inputs(inputs: Inputs, rng: np.random.Generator, dtype: type) -> list[np.ndarray]:
    """Arrays for ``inputs``: a shape tuple becomes standard normal draws from ``rng``, an
    array is copied (so perturbing it never touches the caller's); all cast to ``dtype``."""
    return [
        rng.standard_normal(x).astype(dtype) if isinstance(x, tuple) else np.array(x, dtype=dtype)
        for x in inputs
    ]


def assert_all_close(
    what: str,
    actual: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    rtol: float,
    floor: float,
) -> None:
    """Assert each ``actual[i]`` equals ``expected[i]`` to ``rtol``, with one shared scale."""
    assert len(actual) == len(expected), f"{what}: {len(actual)} arrays, expected {len(expected)}"
    actual = [np.asarray(a, dtype=np.float64) for a in actual]
    expected = [np.asarray(e, dtype=np.float64) for e in expected]
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, f"{what} {i}: shape {a.shape}, expected {e.shape}"
    scale = max(
        (
            float(np.max(np.abs(a) + np.abs(e), initial=0))
            for a, e in zip(actual, expected, strict=True)
        ),
        default=0.0,
    )
    eps = max(floor * scale, 1e-300)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        error = rel_error(a, e, eps=eps)
        assert error <= rtol, f"{what} {i}: relative error {error:.3g} > {rtol:.0e}"


def _as_tuple(grads: Any) -> tuple[Any, ...]:
    return grads if isinstance(grads, tuple) else (grads,)


def check_layer(
    forward: Forward,
    backward: Backward,
    torch_fn: Callable[..., Any] | None,
    inputs: Inputs,
    *,
    seed: int = 0,
    dtype: type = np.float64,
    rtol: float = 1e-8,
    floor: float = 1e-4,
    numeric: bool = True,
    numeric_rtol: float = 1e-7,
    h: float = 1e-5,
) -> list[np.ndarray]:
    """Check a forward/backward pair against torch autograd and central differences.

    Parameters
    ----------
    forward : ``forward(*arrays) -> (out, cache)``
    backward : ``backward(dout, cache)``: the gradient of each array, in order (a tuple, or
        one array for one input)
    torch_fn : ``torch_fn(*tensors) -> Tensor``, the same op in torch; None to skip 1-2
    inputs : shape tuples (standard normal draws from ``seed``) or arrays (copied); keep
        them away from kinks (``pix2pred.gradcheck.random_away_from_zero``, ...)
    seed : seeds the drawn inputs
    dtype : of inputs and tensors; the numerical check needs float64
    rtol, floor : tolerance against torch, and the floor of the scale (see module docstring)
    numeric, numeric_rtol, h : whether and how tightly to check central differences (the
        floor there is 1e-2; see ``check_layer_numerically``)

    Returns
    -------
    grads : list of ndarray, the gradients ``backward`` returned, for further assertions
    """
    rng = np.random.default_rng(seed)
    arrays = make_inputs(inputs, rng, dtype)
    out, cache = forward(*arrays)
    dout = rng.standard_normal(np.shape(out)).astype(dtype)
    grads = _as_tuple(backward(dout, cache))
    assert len(grads) == len(arrays), f"backward returned {len(grads)} gradients for {len(arrays)}"
    if torch_fn is not None:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        t_out = torch_fn(*tensors)
        assert_all_close("forward", [out], [t_out.detach().numpy()], rtol, floor)
        t_out.backward(torch.from_numpy(np.asarray(dout)))
        t_grads = [
            np.zeros_like(a) if t.grad is None else t.grad.numpy()
            for a, t in zip(arrays, tensors, strict=True)
        ]
        assert_all_close("gradient vs torch of input", grads, t_grads, rtol, floor)
    if numeric:
        assert dtype == np.float64, f"the numerical check needs float64 inputs, got {dtype}"
        errors = check_layer_numerically(forward, backward, arrays, dout, h=h)
        for i, error in enumerate(errors):
            assert error <= numeric_rtol, (
                f"numerical gradient of input {i}: relative error {error:.3g} > {numeric_rtol:.0e}"
            )
    return list(grads)


def compare_layers(
    forward: Forward,
    backward: Backward,
    ref_forward: Forward,
    ref_backward: Backward,
    inputs: Inputs,
    *,
    seed: int = 0,
    dtype: type = np.float64,
    rtol: float = 1e-8,
    floor: float = 1e-4,
) -> None:
    """Assert two numpy implementations of a layer agree: output, then every gradient for
    the same random upstream gradient. Arguments as ``check_layer``; each pair gets its own
    copy of the inputs."""
    rng = np.random.default_rng(seed)
    arrays = make_inputs(inputs, rng, dtype)
    ref_arrays = [a.copy() for a in arrays]
    out, cache = forward(*arrays)
    ref_out, ref_cache = ref_forward(*ref_arrays)
    dout = rng.standard_normal(np.shape(ref_out)).astype(dtype)
    grads = _as_tuple(backward(dout, cache))
    ref_grads = _as_tuple(ref_backward(dout, ref_cache))
    assert out.dtype == ref_out.dtype, f"output dtype {out.dtype}, reference {ref_out.dtype}"
    assert_all_close("forward", [out], [ref_out], rtol, floor)
    assert_all_close("gradient vs reference of input", grads, ref_grads, rtol, floor)
