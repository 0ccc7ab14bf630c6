"""Self-contained HTML reports: building blocks, and the report of a run folder.

A report is one ``.html`` file that opens anywhere, offline: its pictures are PNGs embedded as
``data:`` URIs, its style is a short inline stylesheet, it has no scripts, and a
Content-Security-Policy forbids the browser to fetch anything. Every piece of text goes through
:func:`escape`, so a class name such as ``<script>`` shows as text.

Building blocks (``pix2pred compare`` and others build their pages from these):

- :class:`Markup` — a ``str`` that is already HTML; plain ``str`` given to any block is escaped.
- :func:`escape` — text to HTML.
- :func:`image` (a PNG file, PNG bytes or a matplotlib figure) and :func:`pixels` (a uint8
  ``(H, W, C)`` array) — embedded ``<img>`` elements.
- :func:`figure` — an image with a caption.
- :func:`table` — rows of cells, each escaped unless it is :class:`Markup`.
- :func:`bar` — a horizontal bar for a fraction in [0, 1] (accuracies, probabilities).
- :func:`cards` — headline numbers as a row of labelled cards.
- :func:`columns` — blocks side by side (they wrap on a narrow screen).
- :func:`percent` and :func:`duration` — numbers as text, "–" where there is none.
- :func:`section` — a titled part of a page; :func:`page` — the whole document;
  :func:`write_html` — write it atomically.

Run reports: :func:`write_run_report` builds ``report.html`` for a run folder (see
:mod:`pix2pred.report_run`); :func:`try_write_run_report` does the same but only warns on
failure, so that a finished training run is never lost to a report error.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred.checkpoint import write_bytes

REPORT_FILE = "report.html"

# No network, no scripts: only inline styles and data: images may load.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da;
  --good: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
  font: 15px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 8px; padding-bottom: 12px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 10px; padding-top: 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.subtitle, .note, figcaption, .muted { color: var(--muted); }
.note { margin: 0 0 12px; max-width: 80ch; }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 14px; margin-top: 8px; }
nav a { color: var(--accent); text-decoration: none; }
section { padding: 14px 0 10px; border-bottom: 1px solid var(--soft); }
figure { margin: 8px 0 14px; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 13px; margin-top: 2px; }
img.pixels { image-rendering: pixelated; display: block; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 12px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: middle; }
th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 130px;
  background: var(--soft); }
.card .v { font-size: 21px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .k { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.bar { display: inline-flex; align-items: center; gap: 6px; min-width: 190px; }
.bar .track { position: relative; width: 140px; height: 10px; background: #eaeef2;
  border-radius: 5px; overflow: hidden; flex: none; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; background: var(--accent); }
.bar.bad .fill { background: var(--bad); }
.bar.good .fill { background: var(--good); }
.bar .lab { font-size: 13px; font-variant-numeric: tabular-nums; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 8px; width: 250px;
  font-size: 13px; }
.tile.wide { width: 290px; }
.tile .row { display: flex; gap: 10px; align-items: flex-start; margin-bottom: 4px; }
.tile table { width: 100%; margin: 0; font-size: 12px; }
.tile td { padding: 2px 4px; }
.tile .bar { min-width: 0; }
.tile .bar .track { width: 64px; }
.split { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
.split > * { flex: 0 1 auto; min-width: 0; }
.tag-true, .tag-good { color: var(--good); font-weight: 600; }
.tag-pred, .tag-bad { color: var(--bad); font-weight: 600; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--muted); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
"""


class Markup(str):
    """A string that is already HTML: the blocks insert it as is instead of escaping it.

    ``Markup + str`` (either order) escapes the plain string and stays Markup, so that text
    cannot slip into a page unescaped; build larger pieces with f-strings inside ``Markup()``.
    """

    __slots__ = ()

    def __add__(self, other: object) -> Markup:
        if not isinstance(other, str):
            return NotImplemented
        return Markup(str.__add__(self, escape(other)))

    def __radd__(self, other: object) -> Markup:
        if not isinstance(other, str):
            return NotImplemented
        return Markup(str.__add__(escape(other), self))


Content = str | Markup | Iterable["Content"] | None


def escape(value: Any) -> Markup:
    """``value`` as HTML text (``<``, ``>``, ``&`` and quotes escaped); Markup passes through."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def _join(body: Content) -> Markup:
    """Concatenate content: Markup as is, other strings escaped, iterables flattened."""
    if body is None:
        return Markup("")
    if isinstance(body, str):
        return escape(body)
    return Markup("".join(_join(part) for part in body))


def _data_uri(png: bytes) -> str:
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("image data is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_bytes(source: Any) -> bytes:
    """PNG bytes of a path, bytes or a matplotlib figure."""
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    if hasattr(source, "savefig"):
        buf = io.BytesIO()
        source.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return buf.getvalue()
    raise TypeError(f"cannot embed {type(source).__name__}: give a PNG path, bytes or a Figure")


def image(source: Any, alt: str, *, width: int | None = None) -> Markup:
    """An ``<img>`` that embeds a PNG: a file path, PNG bytes or a matplotlib ``Figure``."""
    size = f' width="{int(width)}"' if width else ""
    return Markup(f'<img src="{_data_uri(_png_bytes(source))}" alt="{escape(alt)}"{size}>')


def png_of_pixels(img: np.ndarray) -> bytes:
    """PNG bytes of an image array ``(H, W, C)`` (C = 1 or 3) or ``(H, W)``, uint8."""
    from PIL import Image

    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"pixels must have shape (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def pixels(img: np.ndarray, alt: str, *, size: int = 96) -> Markup:
    """A small uint8 image ``(H, W, C)`` shown ``size`` pixels wide, its pixels kept sharp."""
    uri = _data_uri(png_of_pixels(img))
    return Markup(
        f'<img class="pixels" src="{uri}" alt="{escape(alt)}" width="{int(size)}" '
        f'height="{round(size * img.shape[0] / img.shape[1])}">'
    )


def figure(img: Markup, caption: Content = None) -> Markup:
    """An image (from :func:`image`) with an optional caption under it."""
    cap = f"<figcaption>{_join(caption)}</figcaption>" if caption else ""
    return Markup(f"<figure>{img}{cap}</figure>")


def bar(fraction: float, label: str | None = None, *, tone: str = "") -> Markup:
    """A horizontal bar filled to ``fraction`` (clipped to [0, 1]) with a label beside it.

    ``tone`` is ``""`` (blue), ``"good"`` (green) or ``"bad"`` (red). The label defaults to
    the fraction as a percentage.
    """
    if tone not in ("", "good", "bad"):
        raise ValueError(f"tone must be '', 'good' or 'bad', got {tone!r}")
    f = float(np.clip(fraction, 0.0, 1.0)) if np.isfinite(fraction) else 0.0
    text = f"{fraction:.1%}" if label is None else label
    return Markup(
        f'<span class="bar {tone}"><span class="track"><span class="fill" '
        f'style="width:{100 * f:.1f}%"></span></span><span class="lab">{escape(text)}</span></span>'
    )


def table(
    rows: Iterable[Sequence[Any]],
    header: Sequence[Any] | None = None,
    *,
    numeric: Sequence[int] = (),
) -> Markup:
    """A table; each cell is escaped unless it is :class:`Markup`.

    ``numeric`` lists the columns to align right (numbers). Floats are shown with 4
    significant digits, other values with ``str``.
    """
    numeric = set(numeric)

    def cell(tag: str, j: int, value: Any) -> str:
        cls = ' class="num"' if j in numeric else ""
        text = f"{value:.4g}" if isinstance(value, float) else value
        return f"<{tag}{cls}>{escape('' if text is None else text)}</{tag}>"

    parts = ["<table>"]
    if header is not None:
        parts.append(f"<tr>{''.join(cell('th', j, h) for j, h in enumerate(header))}</tr>")
    for row in rows:
        parts.append(f"<tr>{''.join(cell('td', j, v) for j, v in enumerate(row))}</tr>")
    parts.append("</table>")
    return Markup("".join(parts))


def cards(items: Iterable[tuple[str, Any]]) -> Markup:
    """Headline numbers: one card per ``(label, value)``; values are escaped text or Markup."""
    body = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>'
        for k, v in items
    )
    return Markup(f'<div class="cards">{body}</div>')


def columns(*parts: Content) -> Markup:
    """Blocks side by side, wrapping under each other on a narrow screen."""
    return Markup(f'<div class="split">{"".join(f"<div>{_join(p)}</div>" for p in parts)}</div>')


def percent(x: Any) -> str:
    """A fraction as ``12.3%``; "–" when it is not a finite number."""
    return f"{x:.1%}" if isinstance(x, int | float) and np.isfinite(x) else "–"


def duration(seconds: float | None) -> str:
    """Seconds as ``8.4 ms``, ``0.84 s``, ``42 s``, ``14 min 23 s`` or ``2 h 05 min``; "–" when
    unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "–"
    if seconds < 0.1:
        return f"{seconds * 1000:.2g} ms"
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def section(title: str, *body: Content, note: Content = None) -> Markup:
    """A titled part of a page: a heading, an optional explanatory note, then the body."""
    intro = f'<p class="note">{_join(note)}</p>' if note else ""
    return Markup(
        f'<section id="{_anchor(title)}"><h2>{escape(title)}</h2>{intro}{_join(body)}</section>'
    )


def page(title: str, sections: Sequence[Markup], *, subtitle: Content = None) -> str:
    """A whole HTML document: title, optional subtitle, a table of contents, the sections.

    The document has no scripts and a Content-Security-Policy that blocks every fetch, so it
    shows the same offline as online.
    """
    links = []
    for s in sections:
        m = re.match(r'<section id="([^"]+)"><h2>(.*?)</h2>', s)
        if m:
            links.append(f'<a href="#{m.group(1)}">{m.group(2)}</a>')
    nav = f"<nav>{''.join(links)}</nav>" if len(links) > 1 else ""
    sub = f'<div class="subtitle">{_join(subtitle)}</div>' if subtitle else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main><header><h1>{escape(title)}</h1>{sub}{nav}</header>\n"
        + "\n".join(sections)
        + "\n</main></body></html>\n"
    )


def write_html(path: str | os.PathLike[str], document: str) -> Path:
    """Write a document atomically (a reader never sees half a file); returns the path."""
    write_bytes(path, document.encode("utf-8"))
    return Path(path)


def write_run_report(run_dir: str | os.PathLike[str], **inputs: Any) -> Path:
    """Build ``report.html`` in a run folder from its files; returns its path.

    ``inputs`` are what the training command still holds in memory (``dataset``,
    ``estimator``, ...), which spares reloading them; see
    :func:`pix2pred.report_run.write_run_report` for the list. Without them the data and the
    model are loaded again from the run's ``config.json`` and model files. A folder of
    ``pix2pred diagnose`` or ``pix2pred experiment`` gets its own page (see
    :mod:`pix2pred.report_diagnose`, :mod:`pix2pred.report_experiment`), built from its files.
    """
    from pix2pred import report_diagnose, report_experiment, report_run
    from pix2pred.runs import read_run

    config, _ = read_run(run_dir)
    if report_diagnose.is_diagnose_run(config):  # its checks need no data and no model
        return report_diagnose.write_diagnose_report(run_dir)
    if report_experiment.is_experiment_run(config):
        return report_experiment.write_experiment_report(run_dir)
    return report_run.write_run_report(Path(run_dir), **inputs)


def try_write_run_report(run_dir: str | os.PathLike[str], warn: Any = print, **inputs: Any):
    """:func:`write_run_report`, but a failure only calls ``warn(message)`` and returns None.

    Training commands use this: their model and metrics are already written, and a report
    error must not turn a finished run into a failed one.
    """
    try:
        return write_run_report(run_dir, **inputs)
    except Exception as e:  # NOTE: any report error is only a warning here
        warn(f"warning: could not write {Path(run_dir) / REPORT_FILE}: {type(e).__name__}: {e}")
        return None
