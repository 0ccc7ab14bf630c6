"""report.html of ``pix2pred diagnose`` and ``pix2pred experiment`` folders: written at the end
of the command, rebuilt by ``pix2pred report``, escaped, and rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from pix2pred.cli import main
from test_report import check_self_contained, render_in_chromium

DATA = ["--dataset", "synthetic", "--n-train", "200", "--n-test", "40", "--image-size", "8"]


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _run(*args) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 0


def _titles(document: str) -> list[str]:
    return re.findall(r'<section id="[^"]+"><h2>(.*?)</h2>', document)


@pytest.fixture(scope="module")
def diagnose_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "diag"
    _run("diagnose", "mlp", *DATA, "--hidden", "16", "--lr-range-steps", "30", "--out", out)
    return out


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    """An lr ablation whose lr=10000 diverges (plain SGD, several steps an epoch)."""
    out = tmp_path_factory.mktemp("runs") / "ablate"
    _run(
        *("experiment", "ablate", "--model", "mlp", "--hidden", "32", "--batch-size", "50"),
        *("--optimizer", "sgd", "--param", "lr", "--values", "1e4,1e-1", "--epochs", "2"),
        *DATA,
        *("--out", out),
    )
    return out


def _probe_ok(path, tmp_path, n_images: int) -> dict:
    sizes = check_self_contained(path.read_text(encoding="utf-8"))
    assert len(sizes) == n_images
    probe = render_in_chromium(path, tmp_path)
    assert probe["errors"] == []
    assert len(probe["imgs"]) == n_images
    assert all(i["complete"] and i["w"] > 100 and i["h"] > 100 for i in probe["imgs"])
    return probe


def test_diagnose_writes_a_report_that_renders(diagnose_run, tmp_path):
    checks = json.loads((diagnose_run / "diagnostics.json").read_text())["checks"]
    document = (diagnose_run / "report.html").read_text(encoding="utf-8")
    assert _titles(document) == ["Summary", "Checks", "Figures", "Configuration"]
    passed = sum(c["status"] == "pass" for c in checks)
    assert f"{passed}/{len(checks)} passed" in document
    # overfit, update ratios, activations, lr range: one figure each, with its reading
    probe = _probe_ok(diagnose_run / "report.html", tmp_path, 4)
    text = probe["text"]
    for c in checks:
        row = f"{c['title']}\t{c['status']}\t{c['measured']}"
        assert row in text, row
    assert "why it matters" in text and "healthy lines stay inside the green band" in text
    assert "lr_range_steps\t30" in text and "hidden\t[16]" in text


def test_experiment_reports_render_and_mark_divergence(ablation_run, tmp_path, capsys):
    results = json.loads((ablation_run / "results.json").read_text())
    assert [r["diverged"] for r in results["runs"]] == [True, False]
    document = (ablation_run / "report.html").read_text(encoding="utf-8")
    assert _titles(document) == ["Summary", "Results", "Figures", "Configuration"]
    probe = _probe_ok(ablation_run / "report.html", tmp_path, 3)
    text = probe["text"]
    for line in results["summary"]:
        assert line in text
    big, small = results["runs"]
    assert "10000\t–\t–\t–\t–\t" in text and f"diverged in epoch {big['diverged_epoch']}" in text
    cells = ["0.1", *(f"{small[k]:.1%}" for k in ("final_train_acc", "final_val_acc"))]
    cells += [f"{small[k]:.1%}" for k in ("best_val_acc", "test_acc")]
    assert re.search(r"\s+".join(map(re.escape, cells)) + r"\s+[0-9.]+ (ms|s)\s+ok", text)
    assert "lr (ablated)\t[10000.0, 0.1]" in text

    out = tmp_path / "opt"
    code, stdout, _ = _cli(
        capsys,
        *("experiment", "optimizers", "--model", "softmax", *DATA, "--epochs", "1"),
        *("--optimizers", "sgd,adam", "--lrs", "sgd=5e-2", "--out", out),
    )
    assert code == 0 and "report: " in stdout and (out / "report.html").is_file()
    probe = _probe_ok(out / "report.html", tmp_path, 3)
    assert "sgd\t0.05\t0\t" in probe["text"] and "adam\t0.001\t–\t" in probe["text"]
    assert "optimizer sgd\tsgd, lr 0.05" in probe["text"]
    assert "optimizer adam\tadam, lr 0.001" in probe["text"]


def test_report_command_rebuilds_both_kinds(diagnose_run, ablation_run, tmp_path, capsys):
    for run in (diagnose_run, ablation_run):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        (copy / "report.html").unlink()
        if run is diagnose_run:
            (copy / "lr_range.png").unlink()  # drawn again from diagnostics.json
        code, out, _ = _cli(capsys, "report", copy)
        assert code == 0 and "wrote" in out and (copy / "report.html").is_file()
        before = (run / "report.html").read_text(encoding="utf-8")
        after = (copy / "report.html").read_text(encoding="utf-8")
        assert _titles(after) == _titles(before)
        assert after.count("<img ") == before.count("<img ")


def test_report_command_names_what_is_missing(diagnose_run, ablation_run, tmp_path, capsys):
    for run, name in ((diagnose_run, "diagnostics.json"), (ablation_run, "results.json")):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        (copy / name).unlink()
        code, _, err = _cli(capsys, "report", copy)
        assert code == 2 and name in err and run.name in err


def test_text_from_the_folder_is_escaped(diagnose_run, ablation_run, tmp_path, capsys):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    diag = tmp_path / "diag"
    shutil.copytree(diagnose_run, diag)
    saved = json.loads((diag / "diagnostics.json").read_text())
    saved["checks"][0]["measured"] = evil
    saved["model"] = evil
    (diag / "diagnostics.json").write_text(json.dumps(saved))
    abl = tmp_path / "abl"
    shutil.copytree(ablation_run, abl)
    saved = json.loads((abl / "results.json").read_text())
    saved["summary"] = [evil]
    saved["runs"][0]["error"] = evil
    saved["runs"][1]["name"] = "lr=" + evil
    (abl / "results.json").write_text(json.dumps(saved))
    for run, n_images in ((diag, 4), (abl, 3)):
        assert _cli(capsys, "report", run)[0] == 0
        document = (run / "report.html").read_text(encoding="utf-8")
        assert "<script>" not in document and "&lt;script&gt;alert(1)" in document
        probe = _probe_ok(run / "report.html", tmp_path, n_images)
        assert evil in probe["text"]


def test_a_failing_report_only_warns(tmp_path, capsys, monkeypatch):
    from pix2pred import report_diagnose, report_experiment

    def broken(*args):
        raise RuntimeError("figure exploded")

    monkeypatch.setattr(report_diagnose, "build_sections", broken)
    monkeypatch.setattr(report_experiment, "results_section", broken)
    diag = tmp_path / "diag"
    code, _, err = _cli(
        capsys, "diagnose", "softmax", *DATA, "--checks", "initial_loss", "-o", diag
    )
    assert code == 0 and "warning: could not write" in err and "figure exploded" in err
    assert (diag / "diagnostics.json").is_file() and not (diag / "report.html").exists()
    abl = tmp_path / "abl"
    code, _, err = _cli(
        capsys,
        *("experiment", "ablate", "--model", "softmax", "--param", "lr", "--values", "1e-2"),
        *(*DATA, "--epochs", "1", "--out", abl),
    )
    assert code == 0 and "figure exploded" in err
    assert (abl / "results.json").is_file() and not (abl / "report.html").exists()
