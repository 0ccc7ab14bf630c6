"""A small residual network for when accuracy matters, in the style of the fast CIFAR-10 recipes.

`FastResNet` is the network of the public "airbench" recipes (Keller Jordan, after tysam's
hlb-CIFAR10 and David Page's ResNet-9), written afresh for pix2pred, torch only::

    normalise per channel        (train-set mean and std, buffers ``input_mean``/``input_std``)
    whiten: conv k×k, 2·C·k² filters, frozen; set by `init_whitening` from the eigenvectors of
            the training patches' covariance (and their negatives), then GELU
    group g = 1, 2, 3 (widths w_g):
        conv3×3 → max-pool 2 → BN → GELU
        (depth - 1) × [conv3×3 → BN → GELU]; for depth >= 3 a skip connection joins the output
        of the first stage to the output of the last, before its GELU
    global max-pool → linear (no bias), divided by w_3

Why the parts look as they do:

- Every 3×3 conv with at least as many outputs as inputs starts as the identity on its first
  ``in`` filters (Dirac initialisation): each group is a residual block at initialisation even
  where the default depth of 2 has no explicit skip connection.
- Batch norm has a frozen scale of 1 (the conv in front of it already sets the scale) and a
  trained shift; ``eps=1e-12`` and a running-statistics momentum of 0.4 (torch meaning: the new
  batch's weight). The training recipe keeps it in float32 under bf16 autocast.
- The head's weights start at unit standard deviation and its output is divided by the width,
  the scale the recipe's learning rates were tuned for.

`save_model` writes ``path.safetensors`` (every parameter and buffer) beside ``path.json`` (the
architecture and any metadata); `load_model` rebuilds the network from them. No pickle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pix2pred.checkpoint import load_safetensors, read_json, save_safetensors, write_json

__all__ = ["FORMAT", "ConvGroup", "FastResNet", "load_model", "save_model"]

FORMAT = "pix2pred-fast-resnet"
BN_EPS = 1e-12
BN_MOMENTUM = 0.4


def _conv3x3(c_in: int, c_out: int, generator: torch.Generator) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
    bound = 1.0 / math.sqrt(c_in * 9)
    with torch.no_grad():
        nn.init.uniform_(conv.weight, -bound, bound, generator=generator)
        n = min(c_in, c_out)
        nn.init.dirac_(conv.weight[:n])
    return conv


def _batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=momentum)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Module):
    """conv3×3 → max-pool 2 → BN → GELU, then ``depth - 1`` × [conv3×3 → BN → GELU].

    Maps ``(N, c_in, H, W)`` to ``(N, c_out, H // 2, W // 2)``. With ``depth >= 3`` the output
    of the first stage is added to that of the last before its GELU.
    """

    def __init__(
        self, c_in: int, c_out: int, depth: int, bn_momentum: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [_conv3x3(c_in if i == 0 else c_out, c_out, generator) for i in range(depth)]
        )
        self.norms = nn.ModuleList([_batch_norm(c_out, bn_momentum) for _ in range(depth)])
        self.residual = depth >= 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.convs[0](x), 2)
        x = F.gelu(self.norms[0](x))
        skip = x
        last = len(self.convs) - 1
        for i in range(1, len(self.convs)):
            x = self.norms[i](self.convs[i](x))
            if i == last and self.residual:
                x = x + skip
            x = F.gelu(x)
        return x


class FastResNet(nn.Module):
    """The fast-recipe network (see the module docstring); scores ``(N, num_classes)``.

    Parameters
    ----------
    num_classes : number of classes K
    in_channels : image channels C (3 for colour, 1 for grey)
    widths : channels of the three conv groups
    depth : convs per group (2: the 94% recipe; 3 adds a skip connection per group)
    whiten_kernel : size k of the frozen whitening conv's k×k patches
    bn_momentum : batch norm running-statistics momentum (PyTorch meaning)
    seed : seed of the initial weights

    Notes
    -----
    ``forward(x)`` takes pixel values: float ``(N, C, H, W)`` in the 0..255 range (a uint8
    image converted with ``.float()``), normalises them with the buffers ``input_mean`` and
    ``input_std`` and returns the scores ``(N, K)``. Images need H, W >= 9 (``k - 1`` pixels go
    to the whitening conv, then three halvings).
    """

    name = "resnet"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 256, 256),
        depth: int = 2,
        whiten_kernel: int = 2,
        bn_momentum: float = BN_MOMENTUM,
        seed: int = 0,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        _check_int(num_classes, "num_classes", 2)
        _check_int(in_channels, "in_channels", 1)
        _check_int(depth, "depth", 1)
        _check_int(whiten_kernel, "whiten_kernel", 1)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive integers, got {widths}")
        if not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum}")
        self.num_classes, self.in_channels, self.widths = num_classes, in_channels, widths
        self.depth, self.whiten_kernel, self.bn_momentum = depth, whiten_kernel, bn_momentum
        self.seed = seed
        g = torch.Generator().manual_seed(seed)

        self.register_buffer("input_mean", torch.full((in_channels,), 127.5))
        self.register_buffer("input_std", torch.full((in_channels,), 64.0))
        n_white = 2 * in_channels * whiten_kernel**2
        self.whiten = nn.Conv2d(in_channels, n_white, whiten_kernel, padding=0, bias=True)
        with torch.no_grad():
            self.whiten.bias.zero_()
            # Until init_whitening sees data: +/- the identity on each patch pixel.
            eye = torch.eye(n_white // 2).reshape(n_white // 2, in_channels, whiten_kernel, -1)
            self.whiten.weight.copy_(torch.cat([eye, -eye]))
        self.whiten.weight.requires_grad_(False)
        c_in = n_white
        groups = []
        for w in widths:
            groups.append(ConvGroup(c_in, w, depth, bn_momentum, g))
            c_in = w
        self.groups = nn.ModuleList(groups)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(widths[-1])
            nn.init.uniform_(self.head.weight, -bound, bound, generator=g)
            self.head.weight.div_(self.head.weight.std())
        self.logit_scale = 1.0 / widths[-1]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``(N, C, H, W)`` (0..255) minus the channel means, over the channel stds."""
        C = self.in_channels
        if x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"expected images (N, {C}, H, W), got shape {tuple(x.shape)}")
        mean = self.input_mean.to(x.dtype).view(1, C, 1, 1)
        std = self.input_std.to(x.dtype).view(1, C, 1, 1)
        return (x - mean) / std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features ``(N, widths[-1])`` of pixels ``x`` ``(N, C, H, W)``."""
        x = F.gelu(self.whiten(self.normalize(x)))
        for group in self.groups:
            x = group(x)
        return torch.amax(x, dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale

    @torch.no_grad()
    def set_input_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the per-channel pixel mean and std ``(C,)`` that `normalize` uses."""
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean_t.numel() != self.in_channels or std_t.numel() != self.in_channels:
            raise ValueError(f"mean and std need {self.in_channels} values each")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.input_mean.copy_(mean_t)
        self.input_std.copy_(std_t)

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from pixels ``x`` ``(N, C, H, W)`` (0..255).

        The ``d = C·k²`` eigenvectors of the covariance of every k×k patch, each divided by
        the square root of its eigenvalue plus ``eps``, become ``d`` filters, and their
        negatives another ``d`` (so that the GELU after them keeps both signs).
        """
        k, C = self.whiten_kernel, self.in_channels
        z = self.normalize(x.to(torch.float64))
        if z.shape[2] < k or z.shape[3] < k:
            raise ValueError(f"images of shape {tuple(x.shape[2:])} are smaller than {k}x{k}")
        patches = z.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H-k+1, W-k+1, k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, C * k * k)  # (P, C·k·k)
        cov = patches.T @ patches / patches.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        filters = (eigvecs.T / torch.sqrt(eigvals.clamp_min(0) + eps)[:, None]).flip(0)
        filters = filters.reshape(C * k * k, C, k, k)
        w = self.whiten.weight
        w.copy_(torch.cat([filters, -filters]).to(w.dtype))

    def feature_modules(self) -> list[tuple[str, nn.Module]]:
        """The conv groups by name (``group1``..``group3``), whose outputs explanations read."""
        return [(f"group{i}", group) for i, group in enumerate(self.groups, 1)]

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return {
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "widths": list(self.widths),
            "depth": self.depth,
            "whiten_kernel": self.whiten_kernel,
            "bn_momentum": self.bn_momentum,
            "seed": self.seed,
        }

    def num_params(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_model(
    model: FastResNet, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``path.safetensors`` (state dict) and ``path.json`` (architecture, ``metadata``).

    Returns the two paths. Both writes are atomic; the weights are written first, so a JSON
    file always describes complete weights.
    """
    if not isinstance(model, FastResNet):
        raise TypeError(f"save_model takes a FastResNet, got {type(model).__name__}")
    weights, meta = _files(path)
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    save_safetensors(weights, arrays, metadata={"format": FORMAT})
    write_json(meta, {**dict(metadata or {}), "format": FORMAT, "architecture": model.config()})
    return weights, meta


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[FastResNet, dict[str, Any]]:
    """Rebuild a network written by `save_model`; returns ``(model in eval mode, metadata)``."""
    weights, meta_path = _files(path)
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path}: not a {FORMAT} file (format {found!r})")
    model = FastResNet(**meta["architecture"])
    state = load_safetensors(weights)
    expected = model.state_dict()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        raise ValueError(
            f"{weights}: weights do not match the architecture "
            f"(missing {missing}, unexpected {extra})"
        )
    for name, array in state.items():
        if tuple(array.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{weights}: {name} has shape {array.shape}, expected {tuple(expected[name].shape)}"
            )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.to(device).eval(), meta
