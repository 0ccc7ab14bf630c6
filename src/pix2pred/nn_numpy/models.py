"""The numpy backend's classifiers: linear, two-layer, fully-connected and convolutional nets.

Every model holds ``params`` (trainable arrays by name), ``buffers`` (batch-norm running
statistics by name) and ``rng`` (its ``numpy.random.Generator``: weight init, then dropout masks),
and computes ``loss(X, y=None)``: the scores ``(N, num_classes)`` in eval mode when ``y`` is None,
else ``(loss, grads)`` in train mode, with ``grads`` keyed like ``params``. The loss is the data
loss only; weight decay belongs to the optimizer. ``config()`` returns the constructor arguments
as plain JSON, so ``type(model)(**model.config())`` rebuilds the same architecture (and, with the
same seed, the same initial weights). The contract is written out in ``docs/models.md``.

The layers come from ``layers`` (affine, relu, norms, dropout) and ``fast_layers`` (conv, pool,
spatial batch norm); no model does its own maths. A train-mode pass records each layer's cache
on a ``_Tape``; the backward pass pops them in reverse, freeing each cache once used, and asks
the first conv for no input gradient. An eval-mode pass keeps no cache at all, except in
``backward_to_input``, which records an eval-mode pass to backpropagate to the input (saliency).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pix2pred.nn_numpy import fast_layers, layers, losses
from pix2pred.nn_numpy import workspace as WS
from pix2pred.nn_numpy.convnet_spec import POOL, ConvSpec, parse_spec
from pix2pred.nn_numpy.init import (
    check_dropout,
    check_init,
    check_input_shape,
    check_positive_int,
    check_seed,
    init_weight,
    resolve_dtype,
)

__all__ = [
    "MODELS",
    "ConvNet",
    "FullyConnectedNet",
    "LinearClassifier",
    "Model",
    "SimpleCNN",
    "TwoLayerNet",
    "build_model",
    "parse_spec",
]


class Layer(NamedTuple):
    """A forward/backward pair; ``skip_dx``: backward takes ``need_dx`` (False on the input)."""

    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., Any]
    skip_dx: bool = False


AFFINE = Layer(fast_layers.affine_forward, fast_layers.affine_backward)
AFFINE_RELU = Layer(fast_layers.affine_relu_forward, fast_layers.affine_relu_backward)
AFFINE_NORM_RELU = Layer(
    fast_layers.affine_norm_relu_forward, fast_layers.affine_norm_relu_backward
)
RELU = Layer(layers.relu_forward, layers.relu_backward)
DROPOUT = Layer(layers.dropout_forward, layers.dropout_backward)
CONV = Layer(fast_layers.conv_forward, fast_layers.conv_backward, skip_dx=True)
CONV_RELU = Layer(fast_layers.conv_relu_forward, fast_layers.conv_relu_backward, skip_dx=True)
CONV_RELU_POOL = Layer(
    fast_layers.conv_relu_pool_forward, fast_layers.conv_relu_pool_backward, skip_dx=True
)
MAX_POOL = Layer(fast_layers.max_pool_forward, fast_layers.max_pool_backward)
SPATIAL_BN = Layer(fast_layers.spatial_batchnorm_forward, fast_layers.spatial_batchnorm_backward)

# PyTorch's BatchNorm defaults: momentum is the weight of the new batch statistic.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
LN_EPS = 1e-5


class _Tape:
    """Runs layers forward and, in train mode, keeps their caches to backpropagate in reverse.

    ``record`` (default: ``train``) keeps the caches in eval mode too, so an eval-mode pass
    (running batch-norm statistics, no dropout) can be backpropagated to its input.
    """

    def __init__(
        self, params: dict[str, np.ndarray], train: bool, record: bool | None = None
    ) -> None:
        self.params = params
        self.train = train
        self.mode = "train" if train else "eval"
        self.record = train if record is None else record
        self._entries: list[tuple[Layer, Any, tuple[str, ...]]] = []
        self.input_grad: np.ndarray | None = None

    def __call__(
        self, layer: Layer, x: np.ndarray, *args: Any, names: tuple[str, ...] = (), **kwargs: Any
    ) -> np.ndarray:
        """``layer``'s forward of ``x``, the params called ``names``, then ``args``/``kwargs``."""
        out, cache = layer.forward(x, *(self.params[n] for n in names), *args, **kwargs)
        if self.record:
            self._entries.append((layer, cache, names))
        return out

    def backward(self, dout: np.ndarray, need_input_grad: bool = False) -> dict[str, np.ndarray]:
        """Backpropagate ``dout`` through every recorded layer; return the parameter grads.

        With ``need_input_grad`` the gradient of the input is kept in ``self.input_grad``.
        """
        grads: dict[str, np.ndarray] = {}
        # Popping frees each cache as soon as its layer is done.
        while self._entries:
            layer, cache, names = self._entries.pop()
            if layer.skip_dx and not self._entries and not need_input_grad:  # nobody needs dX
                result = layer.backward(dout, cache, need_dx=False)
            else:
                result = layer.backward(dout, cache)
            del cache
            if names:
                dout = result[0]
                grads.update(zip(names, result[1 : 1 + len(names)], strict=True))
            else:
                dout = result
        if need_input_grad:
            self.input_grad = dout
        return grads


class Model:
    """Base of every numpy model: validation, parameter bookkeeping, ``loss`` and ``config``.

    Parameters
    ----------
    input_shape : (C, H, W) of one input image
    num_classes : number of classes, at least 2
    init : "he", "xavier" or "normal" (see ``pix2pred.nn_numpy.init``)
    weight_scale : standard deviation of the "normal" init
    dtype : float32 (training) or float64 (gradient checks); params, buffers and the arithmetic
    seed : int seeding ``rng``, the generator of the initial weights and of dropout masks
    """

    name: ClassVar[str]
    flat_input: ClassVar[bool] = False

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        init: str,
        weight_scale: float,
        dtype: Any,
        seed: int,
    ) -> None:
        self.input_shape = check_input_shape(input_shape)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        check_init(init, weight_scale)
        self.init = init
        self.weight_scale = float(weight_scale)
        self.dtype = resolve_dtype(dtype)
        self.seed = check_seed(seed)
        self.rng = np.random.default_rng(self.seed)
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ building

    def _add_weight(self, i: int, shape: tuple[int, ...]) -> None:
        """``W{i}``: affine (D, M) or conv (F, C, K, K), and its zero bias ``b{i}`` (M,) or (F,)."""
        self.params[f"W{i}"] = init_weight(
            self.rng, shape, self.init, self.weight_scale, self.dtype
        )
        self.params[f"b{i}"] = np.zeros(shape[1] if len(shape) == 2 else shape[0], self.dtype)

    def _add_norm(self, i: int, D: int, running: bool) -> None:
        """``gamma{i}`` ones and ``beta{i}`` zeros (D,); batch norm's running stats if asked."""
        self.params[f"gamma{i}"] = np.ones(D, dtype=self.dtype)
        self.params[f"beta{i}"] = np.zeros(D, dtype=self.dtype)
        if running:
            self.buffers[f"running_mean{i}"] = np.zeros(D, dtype=self.dtype)
            self.buffers[f"running_var{i}"] = np.ones(D, dtype=self.dtype)

    def _batchnorm(self, tape: _Tape, layer: Layer, x: np.ndarray, i: int) -> np.ndarray:
        """Batch norm ``i`` of ``x``, reading and updating the buffers of layer ``i``."""
        bn_param = self._bn_param(tape, i)
        out = tape(layer, x, bn_param, names=(f"gamma{i}", f"beta{i}"))
        self._keep_stats(tape, bn_param, i)
        return out

    def _bn_param(self, tape: _Tape, i: int) -> dict[str, Any]:
        return {
            "mode": tape.mode,
            "eps": BN_EPS,
            "momentum": BN_MOMENTUM,
            "running_mean": self.buffers[f"running_mean{i}"],
            "running_var": self.buffers[f"running_var{i}"],
        }

    def _keep_stats(self, tape: _Tape, bn_param: dict[str, Any], i: int) -> None:
        if not tape.train:
            return
        # In place, so the buffer arrays keep their identity (the Solver restores them so).
        np.copyto(self.buffers[f"running_mean{i}"], bn_param["running_mean"])
        np.copyto(self.buffers[f"running_var{i}"], bn_param["running_var"])

    def _dropout(self, tape: _Tape, x: np.ndarray, p: float) -> np.ndarray:
        """Dropout with masks drawn from ``self.rng``; the identity in eval mode or at p = 0."""
        if not tape.train or p == 0:
            return x
        return tape(DROPOUT, x, {"mode": "train", "p": p, "seed": self.rng})

    # ------------------------------------------------------------ public API

    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain JSON: ``type(self)(**self.config())`` rebuilds."""
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            **self._arch_config(),
            "init": self.init,
            "weight_scale": self.weight_scale,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def _arch_config(self) -> dict[str, Any]:
        return {}

    def num_params(self) -> int:
        """Number of trainable scalars (buffers not counted)."""
        return sum(int(p.size) for p in self.params.values())

    def loss(
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        """Scores, or the data loss and its gradients.

        Parameters
        ----------
        X : ndarray of shape (N, C, H, W) matching ``input_shape`` (flat models also take
            (N, C * H * W)); cast to the model's dtype
        y : ndarray of shape (N,), integer labels in [0, num_classes), or None

        Returns
        -------
        scores : ndarray of shape (N, num_classes), when y is None (eval mode: batch norm uses
            its running statistics, dropout is off)
        (loss, grads) : float and dict of ndarrays shaped like ``params``, when y is given
            (train mode: batch norm uses and records batch statistics, dropout is on)
        """
        X = self._check_input(X)
        # Every GEMM inside splits its work over the layers' own threads (see workspace).
        with WS.blas_one_thread():
            if y is None:
                return self._forward(X, _Tape(self.params, train=False))
            tape = _Tape(self.params, train=True)
            scores = self._forward(X, tape)
            loss, dscores = self._data_loss(scores, np.asarray(y))
            grads = tape.backward(dscores)
        return loss, {k: grads[k] for k in self.params}  # in the order of params

    def backward_to_input(
        self, X: np.ndarray, dscores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode scores of ``X`` and the gradient of ``sum(scores * dscores)`` w.r.t. ``X``.

        The layers' own backward passes carry ``dscores`` (N, num_classes) back to the input;
        nothing in the model changes (as ``loss(X)``). Returns ``(scores, dX)``, ``dX`` shaped
        like ``X``: what saliency maps and class visualisations need.
        """
        X = self._check_input(X)
        with WS.blas_one_thread():
            tape = _Tape(self.params, train=False, record=True)
            scores = self._forward(X, tape)
            dscores = np.asarray(dscores, dtype=self.dtype)
            if dscores.shape != scores.shape:
                raise ValueError(f"dscores must have shape {scores.shape}, got {dscores.shape}")
            tape.backward(dscores, need_input_grad=True)
        return scores, np.asarray(tape.input_grad).reshape(X.shape)

    def _forward(self, X: np.ndarray, tape: _Tape) -> np.ndarray:
        raise NotImplementedError

    def _data_loss(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return losses.softmax_loss(scores, y)

    def _check_input(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if not np.issubdtype(X.dtype, np.floating):
            raise ValueError(f"X must hold floats (preprocessed images), got dtype {X.dtype}")
        flat = (math.prod(self.input_shape),)
        if X.shape[1:] != self.input_shape and not (self.flat_input and X.shape[1:] == flat):
            expected = f"(N, {', '.join(map(str, self.input_shape))})"
            if self.flat_input:
                expected += f" or (N, {flat[0]})"
            raise ValueError(f"{type(self).__name__} expects X of shape {expected}, got {X.shape}")
        return X.astype(self.dtype, copy=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class LinearClassifier(Model):
    """One template per class: ``scores = X @ W + b``, trained with the softmax or SVM loss.

    Parameters
    ----------
    input_shape, num_classes, init, weight_scale, dtype, seed : as ``Model``
    loss : "softmax" (cross-entropy) or "svm" (multiclass hinge, margin 1)

    Params: ``W`` (D, num_classes), ``b`` (num_classes,), with D = C * H * W.
    """

    name = "linear"
    flat_input = True

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        loss: str = "softmax",
        init: str = "normal",
        weight_scale: float = 1e-3,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(
            input_shape, num_classes, init=init, weight_scale=weight_scale, dtype=dtype, seed=seed
        )
        if loss not in ("softmax", "svm"):
            raise ValueError(f"loss must be 'softmax' or 'svm', got {loss!r}")
        self.loss_name = loss
        D = math.prod(self.input_shape)
        self.params["W"] = init_weight(
            self.rng, (D, self.num_classes), self.init, self.weight_scale, self.dtype
        )
        self.params["b"] = np.zeros(self.num_classes, dtype=self.dtype)

    def _arch_config(self) -> dict[str, Any]:
        return {"loss": self.loss_name}

    def _forward(self, X: np.ndarray, tape: _Tape) -> np.ndarray:
        return tape(AFFINE, X, names=("W", "b"))

    def _data_loss(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        if self.loss_name == "svm":
            return losses.svm_loss(scores, y)
        return losses.softmax_loss(scores, y)


class TwoLayerNet(Model):
    """affine - relu - affine, with the softmax loss.

    Parameters
    ----------
    input_shape, num_classes, init, weight_scale, dtype, seed : as ``Model``
    hidden_dim : width H of the hidden layer

    Params: ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, num_classes), ``b2`` (num_classes,).
    """

    name = "twolayer"
    flat_input = True

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        hidden_dim: int = 100,
        init: str = "he",
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(
            input_shape, num_classes, init=init, weight_scale=weight_scale, dtype=dtype, seed=seed
        )
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self._add_weight(1, (math.prod(self.input_shape), self.hidden_dim))
        self._add_weight(2, (self.hidden_dim, self.num_classes))

    def _arch_config(self) -> dict[str, Any]:
        return {"hidden_dim": self.hidden_dim}

    def _forward(self, X: np.ndarray, tape: _Tape) -> np.ndarray:
        h = tape(AFFINE_RELU, X, names=("W1", "b1"))
        return tape(AFFINE, h, names=("W2", "b2"))


class FullyConnectedNet(Model):
    """``{affine - [norm] - relu - [dropout]} x (L - 1) - affine``, with the softmax loss.

    Parameters
    ----------
    input_shape, num_classes, init, weight_scale, dtype, seed : as ``Model``
    hidden_dims : widths of the L - 1 hidden layers (empty: a linear softmax classifier)
    normalization : None, "batchnorm" or "layernorm", after each hidden affine
    dropout : probability of dropping a hidden unit (``torch.nn.Dropout``'s p); 0 disables it

    Params: ``W{i}``, ``b{i}`` for i = 1..L; ``gamma{i}``, ``beta{i}`` (hidden_dims[i - 1],) for
    i < L when normalised. Buffers: ``running_mean{i}``, ``running_var{i}`` with batch norm.
    """

    name = "fcnet"
    flat_input = True

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        hidden_dims: Sequence[int] = (100, 100),
        normalization: str | None = None,
        dropout: float = 0.0,
        init: str = "he",
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(
            input_shape, num_classes, init=init, weight_scale=weight_scale, dtype=dtype, seed=seed
        )
        if isinstance(hidden_dims, str) or not isinstance(hidden_dims, Sequence):
            raise ValueError(f"hidden_dims must be a list of positive ints, got {hidden_dims!r}")
        self.hidden_dims = [
            check_positive_int(h, "every entry of hidden_dims") for h in hidden_dims
        ]
        if normalization not in (None, "batchnorm", "layernorm"):
            raise ValueError(
                f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
            )
        self.normalization = normalization
        self.dropout = check_dropout(dropout)
        dims = [math.prod(self.input_shape), *self.hidden_dims, self.num_classes]
        self.num_layers = len(dims) - 1
        for i in range(1, self.num_layers + 1):
            self._add_weight(i, (dims[i - 1], dims[i]))
            if normalization is not None and i < self.num_layers:
                self._add_norm(i, dims[i], running=normalization == "batchnorm")

    def _arch_config(self) -> dict[str, Any]:
        return {
            "hidden_dims": list(self.hidden_dims),
            "normalization": self.normalization,
            "dropout": self.dropout,
        }

    def _forward(self, X: np.ndarray, tape: _Tape) -> np.ndarray:
        h = X
        for i in range(1, self.num_layers):
            if self.normalization is None:
                h = tape(AFFINE_RELU, h, names=(f"W{i}", f"b{i}"))
            else:
                bn = self.normalization == "batchnorm"
                norm_param = self._bn_param(tape, i) if bn else {"eps": LN_EPS}
                names = (f"W{i}", f"b{i}", f"gamma{i}", f"beta{i}")
                h = tape(AFFINE_NORM_RELU, h, norm_param, self.normalization, names=names)
                if bn:
                    self._keep_stats(tape, norm_param, i)
            h = self._dropout(tape, h, self.dropout)
        L = self.num_layers
        return tape(AFFINE, h, names=(f"W{L}", f"b{L}"))


class SimpleCNN(Model):
    """conv 5x5 (32) - relu - pool - conv 3x3 (64) - relu - pool - affine (256) - relu - affine.

    The course notes' mini AlexNet. Convs have stride 1 and "same" padding (2, then 1), both
    pools are 2x2 max pools of stride 2 (sizes rounded down), and the pooled maps are flattened
    in (C, H, W) order, as torch's ``x.flatten(1)``. On 3x32x32 inputs with 10 classes that is
    1,072,330 parameters.

    Parameters
    ----------
    input_shape, num_classes, init, weight_scale, dtype, seed : as ``Model``; H and W at least 4

    Params: ``W1`` (32, C, 5, 5), ``b1`` (32,), ``W2`` (64, 32, 3, 3), ``b2`` (64,),
    ``W3`` (64 * (H // 4) * (W // 4), 256), ``b3`` (256,), ``W4`` (256, num_classes), ``b4``.
    """

    name = "simplecnn"

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        init: str = "he",
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(
            input_shape, num_classes, init=init, weight_scale=weight_scale, dtype=dtype, seed=seed
        )
        C, H, W = self.input_shape
        if H < 4 or W < 4:
            raise ValueError(f"SimpleCNN pools twice, so H and W must be at least 4, got {H}x{W}")
        self._add_weight(1, (32, C, 5, 5))
        self._add_weight(2, (64, 32, 3, 3))
        self._add_weight(3, (64 * (H // 4) * (W // 4), 256))
        self._add_weight(4, (256, self.num_classes))

    def _forward(self, X: np.ndarray, tape: _Tape) -> np.ndarray:
        pool_param = {"pool": 2, "stride": 2}
        h = tape(CONV_RELU_POOL, X, {"stride": 1, "pad": 2}, pool_param, names=("W1", "b1"))
        h = tape(CONV_RELU_POOL, h, {"stride": 1, "pad": 1}, pool_param, names=("W2", "b2"))
        h = tape(AFFINE_RELU, h, names=("W3", "b3"))
        return tape(AFFINE, h, names=("W4", "b4"))


class ConvNet(Model):
    """A VGG-style net described by a spec string (see ``convnet_spec``).

    Each number F before ``|`` is conv 3x3 (F filters, stride 1, padding 1) - [spatial batch
    norm] - relu, each ``M`` a 2x2 max pool of stride 2 (sizes rounded down); each number after
    ``|`` is a hidden affine - relu - [dropout]; a final affine gives the scores. Softmax loss.

    Parameters
    ----------
    input_shape, num_classes, init, weight_scale, dtype, seed : as ``Model``
    spec : str, e.g. "64,64,M,128,128,M,256,M|256"
    batchnorm : spatial batch norm after every conv
    dropout : probability of dropping a hidden fc unit; 0 disables it

    Params, numbered consecutively: for the k-th conv ``Wk`` (F, C_in, 3, 3), ``bk`` (F,) and,
    with batch norm, ``gammak``, ``betak`` (F,) plus buffers ``running_meank``, ``running_vark``;
    then ``W``/``b`` of each fc layer, the last one (D, num_classes).
    """

    name = "convnet"

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        spec: str = "64,64,M,128,128,M,256,M|256",
        batchnorm: bool = True,
        dropout: float = 0.0,
        init: str = "he",
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(
            input_shape, num_classes, init=init, weight_scale=weight_scale, dtype=dtype, seed=seed
        )
        self.spec: ConvSpec = parse_spec(spec)
        if not isinstance(batchnorm, bool):
            raise ValueError(f"batchnorm must be True or False, got {batchnorm!r}")
        self.batchnorm = batchnorm
        self.dropout = check_dropout(dropout)
        convs, D = self.spec.conv_shapes(self.input_shape)
        for i, (C, F) in enumerate(convs, start=1):
            self._add_weight(i, (F, C, 3, 3))
            if batchnorm:
                self._add_norm(i, F, running=True)
        i = len(convs)
        for D_in, D_out in itertools.pairwise([D, *self.spec.hidden, self.num_classes]):
            i += 1
            self._add_weight(i, (D_in, D_out))
        self.num_layers = i

    def _arch_config(self) -> dict[str, Any]:
        return {"spec": str(self.spec), "batchnorm": self.batchnorm, "dropout": self.dropout}

    def _forward(self, X: np.ndarray, tape: _Tape) -> np.ndarray:
        h = X
        i = 0
        for token in self.spec.features:
            if token == POOL:
                h = tape(MAX_POOL, h, pool=2, stride=2)
                continue
            i += 1
            if self.batchnorm:
                h = tape(CONV, h, names=(f"W{i}", f"b{i}"), stride=1, pad=1)
                h = tape(RELU, self._batchnorm(tape, SPATIAL_BN, h, i))
            else:
                h = tape(CONV_RELU, h, {"stride": 1, "pad": 1}, names=(f"W{i}", f"b{i}"))
        for _ in self.spec.hidden:
            i += 1
            h = tape(AFFINE_RELU, h, names=(f"W{i}", f"b{i}"))
            h = self._dropout(tape, h, self.dropout)
        L = self.num_layers
        return tape(AFFINE, h, names=(f"W{L}", f"b{L}"))


MODELS: dict[str, type[Model]] = {
    cls.name: cls for cls in (LinearClassifier, TwoLayerNet, FullyConnectedNet, SimpleCNN, ConvNet)
}


def build_model(name: str, **config: Any) -> Model:
    """Build the model registered as ``name`` in ``MODELS`` from its constructor arguments.

    ``build_model(m.name, **m.config())`` rebuilds the architecture of ``m``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**config)
