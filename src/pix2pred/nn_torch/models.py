"""The numpy backend's classifiers as ``nn.Module``s: same names, parameters, buffers and maths.

Each model here is the twin of the `pix2pred.nn_numpy.models` class of the same name: the same
constructor keywords, ``config()``, ``name`` in ``MODELS``, parameters registered under the
numpy names (``W1``, ``b1``, ``gamma1``, ...; the affine weights keep the course's ``(D, M)``
layout) and buffers ``running_mean{i}``/``running_var{i}``, so ``state_dict()`` has exactly the
keys of the numpy ``params`` and ``buffers``. A twin takes its architecture, validation and
initial weights from the numpy class (built with the same arguments), so the same seed gives
the same initial weights in both backends; only the forward pass is written again, with
`pix2pred.nn_torch.layers`, and autograd does the backward.

``forward(x)`` returns the scores in the module's mode (``model.train()``/``model.eval()``:
batch norm's batch or running statistics, dropout on or off). ``loss(X, y=None)`` mirrors the
numpy signature: the scores in eval mode when ``y`` is None, else the data-loss tensor in train
mode (call ``.backward()`` on it for the gradients). Dropout masks come from ``model.rng``, a
``torch.Generator`` seeded with ``seed``: they are not the numpy masks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pix2pred.nn_numpy import models as numpy_models
from pix2pred.nn_numpy.convnet_spec import POOL, ConvSpec, parse_spec
from pix2pred.nn_numpy.models import BN_EPS, BN_MOMENTUM, LN_EPS
from pix2pred.nn_torch import layers as L

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


def _numpy_dtype(dtype: Any) -> Any:
    """Let a ``torch.dtype`` stand for the numpy dtype of the same name."""
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return dtype


class Model(nn.Module):
    """Base of every torch model: parameters from the numpy twin, ``loss``, ``config``.

    Parameters
    ----------
    twin : the `pix2pred.nn_numpy.models` model built with the same arguments; its parameters
        and buffers are taken over (as tensors of its dtype), its ``config()`` kept

    ``params`` is the numpy ``params`` dict's twin; the buffers are ``dict(named_buffers())``
    (``buffers`` is ``nn.Module``'s method), and ``rng`` is a ``torch.Generator``
    (checkpoint it with ``rng.get_state()``).
    """

    name: ClassVar[str]
    flat_input: ClassVar[bool] = False

    def __init__(self, twin: numpy_models.Model) -> None:
        super().__init__()
        self._config = twin.config()
        self.input_shape: tuple[int, int, int] = twin.input_shape
        self.num_classes: int = twin.num_classes
        self.seed: int = twin.seed
        for key, value in twin.params.items():
            self.register_parameter(key, nn.Parameter(torch.from_numpy(value)))
        for key, value in twin.buffers.items():
            self.register_buffer(key, torch.from_numpy(value))
        self.rng = torch.Generator().manual_seed(self.seed)

    # ------------------------------------------------------------ layers with state

    def _spatial_batchnorm(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Spatial batch norm ``i`` of ``x``; updates the buffers of layer ``i`` in train mode."""
        gamma, beta = self.get_parameter(f"gamma{i}"), self.get_parameter(f"beta{i}")
        return L.spatial_batchnorm_forward(x, gamma, beta, self._bn_param(i))

    def _bn_param(self, i: int) -> dict[str, Any]:
        return {
            "mode": "train" if self.training else "eval",
            "eps": BN_EPS,
            "momentum": BN_MOMENTUM,
            "running_mean": self.get_buffer(f"running_mean{i}"),
            "running_var": self.get_buffer(f"running_var{i}"),
        }

    def _dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Dropout with masks drawn from ``self.rng``; the identity in eval mode or at p = 0."""
        if not self.training or p == 0:
            return x
        return L.dropout_forward(x, {"mode": "train", "p": p, "seed": self.rng})

    def _affine(self, x: torch.Tensor, i: int | str, relu: bool = False) -> torch.Tensor:
        """Affine layer ``W{i}``, ``b{i}`` of ``x``, followed by a relu if asked."""
        forward = L.affine_relu_forward if relu else L.affine_forward
        return forward(x, self.get_parameter(f"W{i}"), self.get_parameter(f"b{i}"))

    # ------------------------------------------------------------ public API

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters, to which inputs are cast."""
        return next(self.parameters()).dtype

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The trainable parameters by name, as the numpy model's ``params``."""
        return dict(self.named_parameters())

    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain JSON, equal to the numpy twin's ``config()``."""
        config = copy.deepcopy(self._config)
        config["dtype"] = str(self.dtype).removeprefix("torch.")
        return config

    def num_params(self) -> int:
        """Number of trainable scalars (buffers not counted)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Scores of a batch in the module's current mode.

        Parameters
        ----------
        x : Tensor or ndarray of shape (N, C, H, W) matching ``input_shape`` (flat models also
            take (N, C * H * W)); cast to the parameters' dtype and device

        Returns
        -------
        scores : Tensor of shape (N, num_classes)
        """
        return self._forward(self._check_input(x))

    def loss(
        self, X: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Scores, or the data loss, as the numpy model's ``loss``; the module's mode is restored.

        Parameters
        ----------
        X : Tensor or ndarray of shape (N, C, H, W) (flat models also (N, C * H * W))
        y : Tensor or ndarray of shape (N,), integer labels in [0, num_classes), or None

        Returns
        -------
        scores : Tensor of shape (N, num_classes), when y is None (eval mode)
        loss : Tensor of shape (), when y is given (train mode; batch norm records its batch
            statistics); ``loss.backward()`` fills each parameter's ``.grad``
        """
        was_training = self.training
        self.train(y is not None)
        try:
            scores = self(X)
            if y is None:
                return scores
            return self._data_loss(scores, torch.as_tensor(y, device=scores.device))
        finally:
            self.train(was_training)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _data_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return L.softmax_loss(scores, y)

    def _check_input(self, X: Any) -> torch.Tensor:
        X = torch.as_tensor(X)
        if not X.dtype.is_floating_point:
            dtype = str(X.dtype).removeprefix("torch.")
            raise ValueError(f"X must hold floats (preprocessed images), got dtype {dtype}")
        flat = (math.prod(self.input_shape),)
        shape = tuple(X.shape)
        if shape[1:] != self.input_shape and not (self.flat_input and shape[1:] == flat):
            expected = f"(N, {', '.join(map(str, self.input_shape))})"
            if self.flat_input:
                expected += f" or (N, {flat[0]})"
            raise ValueError(f"{type(self).__name__} expects X of shape {expected}, got {shape}")
        reference = next(self.parameters())
        return X.to(dtype=reference.dtype, device=reference.device)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


class LinearClassifier(Model):
    """One template per class: ``scores = X @ W + b``, the softmax or SVM loss.

    Parameters and params as `pix2pred.nn_numpy.models.LinearClassifier`: ``W`` (D,
    num_classes), ``b`` (num_classes,).
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
        twin = numpy_models.LinearClassifier(
            input_shape,
            num_classes,
            loss=loss,
            init=init,
            weight_scale=weight_scale,
            dtype=_numpy_dtype(dtype),
            seed=seed,
        )
        super().__init__(twin)
        self.loss_name: str = twin.loss_name

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(x, "")

    def _data_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "svm":
            return L.svm_loss(scores, y)
        return L.softmax_loss(scores, y)


class TwoLayerNet(Model):
    """affine - relu - affine, the softmax loss.

    Parameters and params as `pix2pred.nn_numpy.models.TwoLayerNet`: ``W1`` (D, H), ``b1``
    (H,), ``W2`` (H, num_classes), ``b2`` (num_classes,).
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
        twin = numpy_models.TwoLayerNet(
            input_shape,
            num_classes,
            hidden_dim=hidden_dim,
            init=init,
            weight_scale=weight_scale,
            dtype=_numpy_dtype(dtype),
            seed=seed,
        )
        super().__init__(twin)
        self.hidden_dim: int = twin.hidden_dim

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(self._affine(x, 1, relu=True), 2)


class FullyConnectedNet(Model):
    """``{affine - [norm] - relu - [dropout]} x (L - 1) - affine``, the softmax loss.

    Parameters, params and buffers as `pix2pred.nn_numpy.models.FullyConnectedNet`: ``W{i}``,
    ``b{i}`` for i = 1..L; ``gamma{i}``, ``beta{i}`` for i < L when normalised; buffers
    ``running_mean{i}``, ``running_var{i}`` with batch norm.
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
        twin = numpy_models.FullyConnectedNet(
            input_shape,
            num_classes,
            hidden_dims=hidden_dims,
            normalization=normalization,
            dropout=dropout,
            init=init,
            weight_scale=weight_scale,
            dtype=_numpy_dtype(dtype),
            seed=seed,
        )
        super().__init__(twin)
        self.hidden_dims: list[int] = list(twin.hidden_dims)
        self.normalization: str | None = twin.normalization
        self.dropout: float = twin.dropout
        self.num_layers: int = twin.num_layers

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(1, self.num_layers):
            if self.normalization is None:
                h = self._affine(h, i, relu=True)
            else:
                norm_param = (
                    self._bn_param(i) if self.normalization == "batchnorm" else {"eps": LN_EPS}
                )
                h = L.affine_norm_relu_forward(
                    h,
                    self.get_parameter(f"W{i}"),
                    self.get_parameter(f"b{i}"),
                    self.get_parameter(f"gamma{i}"),
                    self.get_parameter(f"beta{i}"),
                    norm_param,
                    self.normalization,
                )
            h = self._dropout(h, self.dropout)
        return self._affine(h, self.num_layers)


class SimpleCNN(Model):
    """conv 5x5 (32) - relu - pool - conv 3x3 (64) - relu - pool - affine (256) - relu - affine.

    Parameters and params as `pix2pred.nn_numpy.models.SimpleCNN`: ``W1`` (32, C, 5, 5), ``b1``,
    ``W2`` (64, 32, 3, 3), ``b2``, ``W3`` (64 * (H // 4) * (W // 4), 256), ``b3``, ``W4`` (256,
    num_classes), ``b4``; the pooled maps are flattened in (C, H, W) order.
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
        twin = numpy_models.SimpleCNN(
            input_shape,
            num_classes,
            init=init,
            weight_scale=weight_scale,
            dtype=_numpy_dtype(dtype),
            seed=seed,
        )
        super().__init__(twin)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        pool_param = {"pool": 2, "stride": 2}
        h = x
        for i, pad in ((1, 2), (2, 1)):
            w, b = self.get_parameter(f"W{i}"), self.get_parameter(f"b{i}")
            h = L.conv_relu_pool_forward(h, w, b, {"stride": 1, "pad": pad}, pool_param)
        h = self._affine(h, 3, relu=True)  # flattens (N, 64, H // 4, W // 4) in (C, H, W) order
        return self._affine(h, 4)


class ConvNet(Model):
    """A VGG-style net described by a spec string (``parse_spec``, shared with numpy).

    Parameters, params and buffers as `pix2pred.nn_numpy.models.ConvNet`: conv 3x3 (padding 1)
    - [spatial batch norm] - relu per number before ``|``, 2x2 max pool per ``M``, affine - relu
    - [dropout] per number after it, then the final affine; numbered consecutively.
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
        twin = numpy_models.ConvNet(
            input_shape,
            num_classes,
            spec=spec,
            batchnorm=batchnorm,
            dropout=dropout,
            init=init,
            weight_scale=weight_scale,
            dtype=_numpy_dtype(dtype),
            seed=seed,
        )
        super().__init__(twin)
        self.spec: ConvSpec = twin.spec
        self.batchnorm: bool = twin.batchnorm
        self.dropout: float = twin.dropout
        self.num_layers: int = twin.num_layers

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        i = 0
        for token in self.spec.features:
            if token == POOL:
                h = L.max_pool_forward(h, pool=2, stride=2)
                continue
            i += 1
            h = L.conv_forward(
                h, self.get_parameter(f"W{i}"), self.get_parameter(f"b{i}"), stride=1, pad=1
            )
            if self.batchnorm:
                h = self._spatial_batchnorm(h, i)
            h = L.relu_forward(h)
        for _ in self.spec.hidden:
            i += 1
            h = self._dropout(self._affine(h, i, relu=True), self.dropout)
        return self._affine(h, self.num_layers)


MODELS: dict[str, type[Model]] = {
    cls.name: cls for cls in (LinearClassifier, TwoLayerNet, FullyConnectedNet, SimpleCNN, ConvNet)
}


def build_model(name: str, **config: Any) -> Model:
    """Build the model registered as ``name`` in ``MODELS`` from its constructor arguments.

    ``build_model(m.name, **m.config())`` rebuilds the architecture of ``m``, in either backend.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**config)
