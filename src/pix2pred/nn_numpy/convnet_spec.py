"""The architecture string of ``ConvNet``: ``"64,64,M,128,128,M,256,M|256"``.

Before ``|``: comma-separated feature layers, a number ``F`` for a 3x3 convolution (padding 1)
with ``F`` filters, or ``M`` for a 2x2 max pool of stride 2. After ``|`` (optional): the widths of
the hidden fully-connected layers; the final layer to the classes is implicit. Spaces are
ignored; ``m`` reads as ``M``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["POOL", "ConvSpec", "parse_spec"]

POOL = "M"


@dataclass(frozen=True)
class ConvSpec:
    """A parsed ``ConvNet`` spec.

    Attributes
    ----------
    features : tuple of int or "M", the conv filter counts and pools in order
    hidden : tuple of int, the hidden fully-connected widths in order
    """

    features: tuple[int | str, ...]
    hidden: tuple[int, ...]

    @property
    def num_conv(self) -> int:
        """Number of conv layers."""
        return sum(1 for t in self.features if t != POOL)

    def conv_shapes(self, input_shape: tuple[int, int, int]) -> tuple[list[tuple[int, int]], int]:
        """Channels in and out of each conv for ``(C, H, W)`` inputs, and the flattened size.

        Returns
        -------
        convs : list of (C_in, F), one per conv layer in order
        D : int, the number of features after the last layer, flattened

        Raises
        ------
        ValueError
            When the pools shrink the maps below 1x1 (each pool halves H and W, rounded down).
        """
        C, H, W = input_shape
        convs = []
        for token in self.features:
            if token != POOL:
                convs.append((C, token))
                C = token
            elif H < 2 or W < 2:
                shape = "x".join(map(str, input_shape))
                raise ValueError(f"ConvNet spec '{self}' pools a {shape} input below 1x1")
            else:
                H, W = H // 2, W // 2
        return convs, C * H * W

    def __str__(self) -> str:
        """The canonical spec string, which ``parse_spec`` reads back to an equal spec."""
        features = ",".join(str(t) for t in self.features)
        return f"{features}|{','.join(map(str, self.hidden))}" if self.hidden else features


def _count(token: str, spec: str, where: str) -> int:
    """Read a positive layer width, or raise a ValueError that names ``token``."""
    if token.isascii() and token.isdigit() and int(token) > 0:
        return int(token)
    if not token:
        raise ValueError(f"empty {where} token in ConvNet spec {spec!r} (a stray comma?)")
    expected = "a positive filter count or 'M'" if where == "conv" else "a positive width"
    raise ValueError(f"bad {where} token {token!r} in ConvNet spec {spec!r}: expected {expected}")


def parse_spec(spec: str) -> ConvSpec:
    """Parse a ``ConvNet`` spec string.

    Parameters
    ----------
    spec : str, e.g. ``"64,64,M,128,128,M,256,M|256"``; ``"32,M"`` has no hidden fc layer

    Returns
    -------
    ConvSpec

    Raises
    ------
    ValueError
        Naming the bad token: an empty one (``"64,,M"``), a non-positive or non-integer width,
        an ``M`` after ``|``, more than one ``|``, or no conv layer at all.
    """
    if not isinstance(spec, str):
        raise ValueError(f"ConvNet spec must be a string, got {spec!r}")
    parts = spec.replace(" ", "").split("|")
    if len(parts) > 2:
        raise ValueError(f"ConvNet spec {spec!r} has more than one '|'")
    if not parts[0]:
        raise ValueError(f"ConvNet spec {spec!r} has no conv layer")
    features: list[int | str] = []
    for token in parts[0].split(","):
        features.append(POOL if token.upper() == POOL else _count(token, spec, "conv"))
    hidden: list[int] = []
    if len(parts) == 2 and parts[1]:
        hidden = [_count(token, spec, "fc") for token in parts[1].split(",")]
    parsed = ConvSpec(tuple(features), tuple(hidden))
    if parsed.num_conv == 0:
        raise ValueError(f"ConvNet spec {spec!r} has no conv layer")
    return parsed
