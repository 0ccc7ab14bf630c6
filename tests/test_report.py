"""The HTML report: escaping, self-containment, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from pix2pred import report

# ------------------------------------------------------------------------------ checks


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def check_self_contained(document: str) -> list[tuple[int, int]]:
    """Assert no scripts, no external references; every image an embedded PNG. Its sizes."""
    parser = _Collect()
    parser.feed(document)
    sizes = []
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None and key == "href":
                assert value.startswith("#"), value
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,"), src[:40]
            png = base64.b64decode(src.split(",", 1)[1], validate=True)
            with Image.open(io.BytesIO(png)) as im:
                im.verify()
                sizes.append(im.size)
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", document.replace("\n", " "))
    return sizes


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


_PROBE = """<script nonce="p2p-probe">
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' +
  (e.message || (e.target && (e.target.outerHTML || '').slice(0, 80)))), true);
document.addEventListener('securitypolicyviolation', e =>
  window.__errors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = (...a) => { window.__errors.push(level + ': ' + a.join(' ')); orig(...a); };
}
window.addEventListener('load', () => {
  const imgs = Array.from(document.images).map(i => ({
    alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, complete: i.complete}));
  const pre = document.createElement('pre');
  pre.id = 'p2p-probe';
  pre.textContent = JSON.stringify({imgs, errors: window.__errors,
    title: document.title, text: document.body.innerText});
  document.body.appendChild(pre);
});
</script>"""


def render_in_chromium(path: Path, tmp_path: Path) -> dict:
    """Load ``path`` in headless Chromium; return its images, errors and visible text.

    A probe script is added to a copy of the page (with a nonce the page's policy is widened to
    allow, nothing else); it records load errors, policy violations and console errors, and
    each image's natural size, and the DOM Chromium dumps carries that record back.
    """
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") or os.environ.get("PIX2PRED_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed, and CI requires the browser test")
        pytest.skip("chromium not installed (Debian: apt-get install chromium; .ci/run does)")
    document = path.read_text(encoding="utf-8")
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert csp in document
    probed = document.replace(csp, csp + "; script-src 'nonce-p2p-probe'", 1)
    probed = probed.replace("<head>", "<head>" + _PROBE, 1)
    copy = tmp_path / ("probed-" + path.name)
    copy.write_text(probed, encoding="utf-8")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        copy.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="p2p-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium did not run the page (rc {res.returncode}): {res.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


# ------------------------------------------------------------------------------ blocks


def test_escape_and_markup():
    assert report.escape("<script>alert('x')</script> & \"q\"") == (
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"
    )
    m = report.Markup("<b>bold</b>")
    assert report.escape(m) is m
    t = report.table([["<cat>", 0.123456, report.Markup("<i>ok</i>")]], ["name", "acc", "x"])
    assert "&lt;cat&gt;" in t and "<i>ok</i>" in t and ">0.1235<" in t
    s = report.section("A & B", "x<y", note="n>1")
    assert 'id="a-b"' in s and "A &amp; B" in s and "x&lt;y" in s and "n&gt;1" in s


def test_percent_and_duration_are_shared_and_mark_missing_values():
    assert report.percent(0.1234) == "12.3%" and report.percent(None) == "–"
    assert report.percent(float("nan")) == "–" and report.percent("x") == "–"
    assert report.duration(0.0084) == "8.4 ms" and report.duration(0.84) == "0.84 s"
    assert report.duration(42.2) == "42 s" and report.duration(863) == "14 min 23 s"
    assert report.duration(7500) == "2 h 05 min" and report.duration(None) == "–"
    from pix2pred import compare, compare_report, experiments_summary, report_experiment, report_run

    assert compare.duration is compare_report._duration is report_run.duration is report.duration
    assert report_run._pct is report_experiment._pct is experiments_summary._pct is report.percent


def test_bar_and_cards():
    b = report.bar(0.25)
    assert "width:25.0%" in b and "25.0%" in b
    assert "width:100.0%" in report.bar(3.0, "over")
    assert "width:0.0%" in report.bar(float("nan"), "nan")
    with pytest.raises(ValueError, match="tone"):
        report.bar(0.5, tone="purple")
    c = report.cards([("test accuracy", "91.0%"), ("<k>", 3)])
    assert c.count('class="card"') == 2 and "&lt;k&gt;" in c


def test_images_are_embedded_pngs(tmp_path):
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    png_path = tmp_path / "f.png"
    fig.savefig(png_path)
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    parts = [
        report.image(fig, "from a figure"),
        report.image(png_path, "from a file"),
        report.image(png_path.read_bytes(), "from bytes", width=50),
        report.pixels(rgb, "rgb", size=60),
        report.pixels(rgb[:, :, :1], "gray"),
    ]
    sizes = check_self_contained(report.page("t", [report.section("s", parts)]))
    assert sizes[3] == (6, 4) and sizes[4] == (6, 4)
    assert 'width="60" height="40"' in parts[3]
    with pytest.raises(ValueError, match="not a PNG"):
        report.image(b"GIF89a", "gif")
    with pytest.raises(ValueError, match="uint8"):
        report.pixels(rgb.astype(np.float32), "float")
    with pytest.raises(TypeError, match="cannot embed"):
        report.image(3, "number")


def test_page_renders_in_chromium_with_escaped_text(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = 255
    evil = "<script>alert(1)</script>"
    doc = report.page(
        f"Report of {evil}",
        [
            report.section("Numbers", report.cards([("accuracy", "50.0%")])),
            report.section(
                "Classes",
                report.table([[evil, report.bar(0.5)], ["ok", report.bar(1.0)]], ["class", "acc"]),
                report.pixels(rgb, evil),
            ),
        ],
        subtitle=evil,
    )
    check_self_contained(doc)
    path = report.write_html(tmp_path / "page.html", doc)
    probe = render_in_chromium(path, tmp_path)
    assert probe["errors"] == []
    assert probe["title"] == f"Report of {evil}"
    assert evil in probe["text"]
    assert [i["w"] for i in probe["imgs"]] == [8]


def test_chromium_probe_sees_broken_images_and_fetches(tmp_path):
    """The browser check can fail: a corrupt PNG has no width, a remote image is blocked."""
    broken = report.Markup(
        '<img alt="corrupt" src="data:image/png;base64,'
        + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode()
        + '"><img alt="remote" src="http://192.0.2.1/x.png">'
    )
    path = report.write_html(
        tmp_path / "bad.html", report.page("bad", [report.section("s", broken)])
    )
    probe = render_in_chromium(path, tmp_path)
    assert [i["w"] for i in probe["imgs"]] == [0, 0]
    assert any("csp" in e and "192.0.2.1" in e for e in probe["errors"]), probe["errors"]


# ------------------------------------------------------------------------------ run reports


def _cli(capsys, *args):
    from pix2pred.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _section_titles(document: str) -> list[str]:
    return re.findall(r'<section id="[^"]+"><h2>(.*?)</h2>', document)


SMALL = ["--n-train", "300", "--n-test", "80", "--image-size", "16"]


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    """A quick softmax run on synthetic data, trained once for the tests below."""
    from pix2pred.cli import main

    out = tmp_path_factory.mktemp("runs") / "softmax"
    with pytest.raises(SystemExit) as exc:
        main(["train", "softmax", "-d", "synthetic", *SMALL, "--epochs", "2", "-o", str(out)])
    assert exc.value.code == 0
    return out


def test_training_writes_a_report_that_renders(softmax_run, tmp_path):
    path = softmax_run / "report.html"
    document = path.read_text(encoding="utf-8")
    assert _section_titles(document) == [
        "Summary",
        "Training curves",
        "Confusion matrix",
        "Per-class accuracy",
        "Worst mistakes",
        "What the model learned",
        "Saliency",
        "Configuration",
    ]
    metrics = json.loads((softmax_run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.1%}" in document
    sizes = check_self_contained(document)
    # curves, confusion, templates; 16 mistakes; 8 saliency tiles of 2 images each
    n_wrong = round((1 - metrics["test_accuracy"]) * 80)
    assert len(sizes) == 3 + min(16, n_wrong) + 16
    assert document.count("class='tile'") == min(16, n_wrong) + 8
    probe = render_in_chromium(path, tmp_path)
    assert probe["errors"] == []
    assert len(probe["imgs"]) == len(sizes)
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in probe["imgs"])
    for word in ("test accuracy", "worst mistakes", "predicted:", "spiral-0"):
        assert word in probe["text"].lower()


def test_report_command_rebuilds_the_same_report(softmax_run, tmp_path, capsys):
    import shutil as sh

    copy = tmp_path / "copy"
    sh.copytree(softmax_run, copy)
    (copy / "report.html").unlink()
    code, out, _ = _cli(capsys, "report", copy)
    assert code == 0 and "report.html" in out
    before = (softmax_run / "report.html").read_text(encoding="utf-8")
    after = (copy / "report.html").read_text(encoding="utf-8")
    assert _section_titles(after) == _section_titles(before)
    # the same mistakes: the same embedded test images in the same order
    imgs = re.findall(r'<img class="pixels" src="([^"]+)"', before)
    assert imgs == re.findall(r'<img class="pixels" src="([^"]+)"', after)


def test_report_without_the_data_says_why_and_shows_the_rest(softmax_run, tmp_path, capsys):
    import shutil as sh

    copy = tmp_path / "copy"
    sh.copytree(softmax_run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["data"] |= {"dataset": "folder", "root": str(tmp_path / "moved-away")}
    (copy / "config.json").write_text(json.dumps(config))
    code, _, _ = _cli(capsys, "report", copy)
    assert code == 0
    document = (copy / "report.html").read_text(encoding="utf-8")
    assert "Not shown: the test images could not be loaded again" in document
    assert "moved-away" in document
    assert "Saliency" not in _section_titles(document)
    assert "What the model learned" in _section_titles(document)  # from the run's PNG
    check_self_contained(document)


def test_report_command_errors_name_the_folder(tmp_path, capsys):
    code, _, err = _cli(capsys, "report", tmp_path)
    assert code == 2 and str(tmp_path) in err and "not a pix2pred run folder" in err


def test_a_failing_report_does_not_lose_the_run(tmp_path, capsys, monkeypatch):
    from pix2pred import report_run

    def broken(view):
        raise RuntimeError("figure exploded")

    monkeypatch.setattr(report_run, "build_sections", broken)
    out = tmp_path / "run"
    code, _, err = _cli(
        capsys, "train", "svm", "-d", "synthetic", *SMALL, "--epochs", "1", "-o", out
    )
    assert code == 0
    assert "warning: could not write" in err and "figure exploded" in err
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert not (out / "report.html").exists()


def test_a_pca_run_gets_a_report_without_saliency(tmp_path, capsys):
    # saliency needs pixels; a softmax on PCA features sees flat vectors, so it is skipped
    out = tmp_path / "pca"
    args = ["--n-train", "200", "--n-test", "40", "--image-size", "8", "--epochs", "1"]
    code, _, err = _cli(
        capsys, "train", "softmax", "-d", "synthetic", *args, "--preprocessing", "pca", "-o", out
    )
    assert code == 0 and "could not write" not in err
    document = (out / "report.html").read_text(encoding="utf-8")
    titles = _section_titles(document)
    assert "Worst mistakes" in titles and "Saliency" in titles and "Configuration" in titles
    assert "Not shown: the model was trained on PCA features, not on pixels." in document
    check_self_contained(document)


def test_a_failing_picture_section_becomes_a_note(softmax_run, tmp_path, capsys, monkeypatch):
    import shutil as sh

    from pix2pred import report_pictures

    def broken(view):
        raise RuntimeError("gradient exploded")

    monkeypatch.setattr(report_pictures, "saliency_section", broken)
    copy = tmp_path / "copy"
    sh.copytree(softmax_run, copy)
    (copy / "report.html").unlink()
    code, _, _ = _cli(capsys, "report", copy)
    assert code == 0
    document = (copy / "report.html").read_text(encoding="utf-8")
    assert "Not shown: it could not be drawn (RuntimeError: gradient exploded)." in document
    assert _section_titles(document)[-2:] == ["Saliency", "Configuration"]


def test_knn_and_cnn_reports(tmp_path, capsys):
    knn = tmp_path / "knn"
    code, _, _ = _cli(capsys, "train", "knn", "-d", "synthetic", *SMALL, "--ks", "1,3", "-o", knn)
    assert code == 0
    document = (knn / "report.html").read_text(encoding="utf-8")
    titles = _section_titles(document)
    assert titles[:2] == ["Summary", "Choosing k"]
    assert "Nearest neighbours of the worst mistakes" in titles and "Saliency" not in titles
    check_self_contained(document)
    cnn = tmp_path / "cnn"
    code, _, _ = _cli(
        capsys,
        "train",
        "cnn",
        "-d",
        "synthetic",
        *SMALL,
        "--epochs",
        "1",
        "--batch-size",
        "100",
        "-o",
        cnn,
    )
    assert code == 0
    document = (cnn / "report.html").read_text(encoding="utf-8")
    assert "Grad-CAM" in document and "first convolution layer" in document
    probe = render_in_chromium(cnn / "report.html", tmp_path)
    assert probe["errors"] == [] and all(i["w"] > 0 for i in probe["imgs"])


def test_class_names_are_escaped_in_a_run_report(tmp_path, capsys):
    """A folder dataset whose class is called <script>: the report shows it as text."""
    rng = np.random.default_rng(0)
    names = ["<script>", 'a&b "q"']
    for split, n in (("train", 12), ("test", 6)):
        for c, name in enumerate(names):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (8, 8, 3)) + 150 * c
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    code, _, err = _cli(
        capsys,
        "train",
        "softmax",
        "-d",
        "folder",
        "--root",
        tmp_path / "data",
        "--epochs",
        "1",
        "--val-size",
        "0",
        "-o",
        out,
    )
    assert code == 0, err
    document = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in document and "&lt;script&gt;" in document
    probe = render_in_chromium(out / "report.html", tmp_path)
    assert probe["errors"] == []
    assert "<script>" in probe["text"] and 'a&b "q"' in probe["text"]
