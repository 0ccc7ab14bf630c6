"""Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration.

The conv filters of `FastResNet` train with it (Keller Jordan, 2024; written afresh here): an
orthogonalised update moves every direction of a filter bank by the same amount, which lets
the fast recipes use large steps in few epochs.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["Muon", "newton_schulz"]

# Quintic Newton-Schulz coefficients from the Muon optimizer (Keller Jordan, 2024): they push
# every singular value of the normalised matrix towards 1 in very few iterations.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with the singular vectors of ``G`` ``(M, N)``.

    The quintic iteration ``X ← aX + (bXXᵀ + c(XXᵀ)²)X`` on ``G / ‖G‖`` moves every singular
    value into roughly [0.7, 1.2] in three steps (not exactly to 1: the coefficients trade
    precision for speed). Runs in bf16 for float32 input, in the input's dtype for float64.
    """
    if G.ndim != 2:
        raise ValueError(f"newton_schulz takes a matrix, got shape {tuple(G.shape)}")
    a, b, c = _NS_COEFFS
    work = torch.float64 if G.dtype == torch.float64 else torch.bfloat16
    X = G.to(work)
    X = X / (X.norm() + eps)
    tall = G.shape[0] > G.shape[1]
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    if tall:
        X = X.T
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose update is orthogonalised, for conv filters ``(F, C, HH, WW)``.

    Each step: ``buf = momentum · buf + grad``; the update is ``grad + momentum · buf``
    (Nesterov) or ``buf``, reshaped to ``(F, C·HH·WW)`` and passed through `newton_schulz`;
    the filters are rescaled to a Frobenius norm of ``sqrt(F)`` and moved by ``lr`` times the
    update. The rescaling is harmless where batch norm follows the conv (its output does not
    depend on the filters' scale) and keeps the step's relative size equal to ``lr``.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.6,
        nesterov: bool = True,
        ns_steps: int = 3,
    ) -> None:
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"Invalid momentum: {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov})
        self.ns_steps = ns_steps

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            m = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(m).add_(g)
                u = g.add(buf, alpha=m) if group["nesterov"] else buf
                p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp_min(1e-12))
                update = newton_schulz(u.reshape(len(u), -1), self.ns_steps)
                p.add_(update.view(p.shape), alpha=-group["lr"])
