"""FastResNet, its training recipe (Muon, schedule, augmentation, TTA) and `train resnet`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from pix2pred.cli_resnet import register
from pix2pred.nn_torch import fast_data, fast_predict, muon
from pix2pred.nn_torch import fast_train as FT
from pix2pred.nn_torch.resnet import FastResNet, load_model, save_model

TINY = (8, 16, 16)


@pytest.fixture(autouse=True)
def one_thread():
    # NOTE: two OpenMP threads on a busy two-core machine make tiny ops 100x slower.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def blobs(n: int = 192, size: int = 12, classes: int = 3, seed: int = 0):
    """Images whose brightness says the class, plus noise: uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.integers(0, 60, (n, size, size, 3)) + (y * 80)[:, None, None, None]
    return X.astype(np.uint8), y


# ---------------------------------------------------------------------------------------------
# The network


def test_forward_shapes_and_parameter_count():
    model = FastResNet(num_classes=5, widths=TINY, seed=0)
    x = torch.rand(4, 3, 12, 12) * 255
    assert model(x).shape == (4, 5)
    assert model.features(x).shape == (4, TINY[-1])
    # 3->8, 8->8, 8->16, 16->16, 16->16, 16->16 convs, 6 BN shifts, the head, the whiten bias
    convs = 9 * (24 * 8 + 8 * 8 + 8 * 16 + 16 * 16 + 16 * 16 + 16 * 16)
    assert model.num_params() == convs + (8 + 8 + 16 * 4) + 16 * 5 + 24


def test_depth_three_adds_a_skip_connection_and_a_conv():
    model = FastResNet(num_classes=3, widths=TINY, depth=3)
    assert all(len(g.convs) == 3 and g.residual for g in model.groups)
    assert model(torch.rand(2, 3, 12, 12) * 255).shape == (2, 3)
    assert not FastResNet(widths=TINY).groups[0].residual


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (FastResNet(widths=TINY, seed=s) for s in (1, 1, 2))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)


def test_dirac_init_makes_each_conv_an_identity_on_its_first_channels():
    model = FastResNet(widths=TINY)
    w = model.groups[1].convs[1].weight  # (16, 16, 3, 3)
    x = torch.randn(2, 16, 5, 5)
    # The first 16 filters are the identity (plus nothing): conv(x) == x on them.
    y = torch.nn.functional.conv2d(x, w, padding=1)
    assert torch.allclose(y, x, atol=1e-6)
    w_up = model.groups[1].convs[0].weight  # (16, 8, 3, 3): identity on the first 8 outputs
    x8 = torch.randn(2, 8, 5, 5)
    assert torch.allclose(torch.nn.functional.conv2d(x8, w_up, padding=1)[:, :8], x8, atol=1e-6)


def test_batch_norm_scale_frozen_shift_trained_head_unit_std():
    model = FastResNet(widths=TINY)
    for g in model.groups:
        for bn in g.norms:
            assert not bn.weight.requires_grad and bn.bias.requires_grad
            assert bn.eps == 1e-12 and bn.momentum == 0.4
    assert not model.whiten.weight.requires_grad
    assert model.head.weight.std().item() == pytest.approx(1.0, rel=1e-5)


def test_whitening_filters_decorrelate_the_patches():
    rng = np.random.default_rng(0)
    # Strongly correlated channels: the whitened patch coordinates must come out uncorrelated.
    base = rng.normal(120, 40, (64, 1, 10, 10))
    x = torch.tensor(
        np.concatenate(
            [
                base,
                base * 0.9 + rng.normal(5, 4, base.shape),
                base * 0.5 + rng.normal(0, 3, base.shape),
            ],
            1,
        )
    )
    model = FastResNet(widths=TINY).double()
    model.set_input_stats(x.mean((0, 2, 3)), x.std((0, 2, 3)))
    model.init_whitening(x, eps=0.0)
    z = torch.nn.functional.conv2d(model.normalize(x), model.whiten.weight[:12])  # (N, 12, 9, 9)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=1e-6)
    w = model.whiten.weight
    assert torch.equal(w[12:], -w[:12])


def test_constructor_and_input_validation():
    with pytest.raises(ValueError, match="widths must be three"):
        FastResNet(widths=(8, 16))
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        FastResNet(depth=0)
    with pytest.raises(ValueError, match="bn_momentum"):
        FastResNet(bn_momentum=1.5)
    with pytest.raises(
        ValueError, match=r"expected images \(N, 3, H, W\), got shape \(2, 1, 12, 12\)"
    ):
        FastResNet(widths=TINY)(torch.zeros(2, 1, 12, 12))
    with pytest.raises(ValueError, match="std must be positive"):
        FastResNet(widths=TINY).set_input_stats([0, 0, 0], [1, 0, 1])


def test_save_load_round_trip_and_refusals(tmp_path):
    model = FastResNet(num_classes=4, widths=TINY, depth=3, seed=3)
    model.set_input_stats([10, 20, 30], [1, 2, 3])
    weights, meta = save_model(model, tmp_path / "model", {"classes": ["a", "b", "c", "d"]})
    assert weights.name == "model.safetensors" and meta.name == "model.json"
    loaded, info = load_model(tmp_path / "model.json")
    assert info["classes"] == ["a", "b", "c", "d"] and info["architecture"]["depth"] == 3
    x = torch.rand(3, 3, 12, 12) * 255
    model.eval()
    assert torch.equal(model(x), loaded(x))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a pix2pred-fast-resnet file"):
        load_model(tmp_path / "bad")
    other = FastResNet(num_classes=4, widths=(8, 16, 32))
    save_model(other, tmp_path / "other")
    meta_other = json.loads((tmp_path / "other.json").read_text())
    meta_other["architecture"]["widths"] = list(TINY)
    (tmp_path / "other.json").write_text(json.dumps(meta_other))
    with pytest.raises(ValueError, match="has shape"):
        load_model(tmp_path / "other")


# ---------------------------------------------------------------------------------------------
# The recipe's parts


def test_newton_schulz_pushes_singular_values_towards_one():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(16, 40, generator=g, dtype=torch.float64) @ torch.diag(
        torch.logspace(-2, 1, 40, dtype=torch.float64)
    )
    s_in = torch.linalg.svdvals(G)
    assert s_in.max() / s_in.min() > 30
    for shape in ((16, 40), (40, 16)):
        M = G if shape == (16, 40) else G.T
        X = muon.newton_schulz(M, steps=5)
        assert X.shape == M.shape and X.dtype == torch.float64
        s = torch.linalg.svdvals(X)
        assert s.min() > 0.6 and s.max() < 1.25
        # Same singular vectors: X is U f(S) V^T, so X^T M is symmetric positive semi-definite.
        P = X.T @ M if shape == (16, 40) else M @ X.T
        assert torch.allclose(P, P.T, atol=1e-8)
    assert muon.newton_schulz(torch.randn(8, 8)).dtype == torch.float32
    with pytest.raises(ValueError, match="takes a matrix"):
        muon.newton_schulz(torch.zeros(2, 2, 2))


def test_muon_step_matches_its_definition():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    grads = [torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    p = torch.nn.Parameter(w0.clone())
    opt = muon.Muon([p], lr=0.1, momentum=0.5, nesterov=True, ns_steps=3)
    w, buf = w0.clone(), torch.zeros_like(w0)
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        buf = 0.5 * buf + grad
        u = grad + 0.5 * buf
        w = w * (2.0 / w.norm())
        w = w - 0.1 * muon.newton_schulz(u.reshape(4, -1), 3).reshape(w.shape)
    assert torch.allclose(p.detach(), w, atol=1e-12)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        muon.Muon([p], lr=-1)


def test_lr_factor_warms_up_then_decays_linearly_to_zero():
    assert FT.lr_factor(0.0, 0.0) == 1.0
    assert FT.lr_factor(0.5, 0.0) == 0.5
    assert FT.lr_factor(1.0, 0.0) == 0.0
    assert FT.lr_factor(0.1, 0.2) == pytest.approx(0.5)
    assert FT.lr_factor(0.2, 0.2) == 1.0
    assert FT.lr_factor(0.6, 0.2) == pytest.approx(0.5)
    assert FT.lr_factor(1.2, 0.2) == 0.0


def test_config_validation_names_the_field_and_value():
    with pytest.raises(ValueError, match="epochs must be a positive number, got 0"):
        FT.FastTrainConfig(epochs=0)
    with pytest.raises(ValueError, match="flip must be one of alternating, random, none, got 'up'"):
        FT.FastTrainConfig(flip="up")
    with pytest.raises(ValueError, match=r"ema must be None or in \(0, 1\), got 1.0"):
        FT.FastTrainConfig(ema=1.0)
    with pytest.raises(ValueError, match="time_budget"):
        FT.FastTrainConfig(time_budget=-5)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 2\.5"):
        FT.FastTrainConfig(batch_size=2.5)


def test_augmenter_crops_translate_and_alternating_flips_cover_both_ways():
    X, _ = blobs(n=40, size=10)
    cfg = FT.FastTrainConfig(translate=2, flip="alternating", seed=5)
    aug = fast_data._Augmenter(X, cfg, torch.device("cpu"), fill=np.zeros(3))
    idx = torch.arange(40)
    aug.start_epoch(0)
    x0, flips0, shifts0 = (
        aug.batch(idx, torch.float32),
        aug.flips.clone(),
        aug.shifts.clone(),
    )
    aug.start_epoch(1)
    assert torch.equal(aug.flips, ~flips0)  # every image flipped the other way next epoch
    assert x0.shape == (40, 3, 10, 10) and x0.is_contiguous(memory_format=torch.channels_last)
    pad = np.pad(X, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(40):
        dy, dx = shifts0[i].tolist()
        crop = pad[i, dy : dy + 10, dx : dx + 10]
        if flips0[i]:
            crop = crop[:, ::-1]
        np.testing.assert_array_equal(x0[i].permute(1, 2, 0).numpy(), crop)
    aug.start_epoch(0)
    assert torch.equal(aug.batch(idx, torch.float32), x0)  # (seed, epoch) decides everything


def test_cutout_paints_one_square_per_image_in_the_fill_colour():
    X, _ = blobs(n=30, size=10)
    cfg = FT.FastTrainConfig(translate=0, flip="none", cutout=4, seed=2)
    aug = fast_data._Augmenter(X, cfg, torch.device("cpu"), fill=np.array([1.2, 2.6, 255.0]))
    aug.start_epoch(3)
    x = aug.batch(torch.arange(30), torch.float32).permute(0, 2, 3, 1).numpy()  # (30, 10, 10, 3)
    for i in range(30):
        cy, cx = aug.corners[i].tolist()
        expect = X[i].astype(np.float32)
        expect[cy : cy + 4, cx : cx + 4] = [1, 3, 255]
        np.testing.assert_array_equal(x[i], expect)
    with pytest.raises(ValueError, match="cutout=11 is larger than the 10x10 images"):
        fast_data._Augmenter(
            X, FT.FastTrainConfig(cutout=11), torch.device("cpu"), fill=np.zeros(3)
        )


def test_predict_tta_levels_are_the_documented_averages():
    model = FastResNet(num_classes=3, widths=TINY, seed=0).double().eval()
    X, _ = blobs(n=5, size=12)
    levels = fast_predict.predict_tta(model, X, max_tta=2, batch_size=2, amp="none")
    x = torch.from_numpy(X).permute(0, 3, 1, 2).double()
    with torch.no_grad():
        f = lambda v: model(v).float()  # noqa: E731
        mirror = lambda v: 0.5 * (f(v) + f(v.flip(3)))  # noqa: E731
        p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        expect = [
            f(x),
            mirror(x),
            0.5 * mirror(x) + 0.25 * (mirror(p[:, :, :12, :12]) + mirror(p[:, :, 2:, 2:])),
        ]
    for level in range(3):
        np.testing.assert_allclose(levels[level], expect[level].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(
        fast_predict.predict_logits(model, X, tta=1, amp="none"), levels[1]
    )
    with pytest.raises(ValueError, match="tta must be 0, 1 or 2, got 3"):
        fast_predict.predict_logits(model, X, tta=3)


# ---------------------------------------------------------------------------------------------
# Training end to end


def test_train_fast_learns_and_is_reproducible(tmp_path):
    X, y = blobs(n=192, size=12)
    Xv, yv = blobs(n=60, size=12, seed=1)
    cfg = FT.FastTrainConfig(epochs=3, batch_size=48, seed=0)
    seen = []
    runs = []
    for k in range(2):
        model = FastResNet(num_classes=3, widths=TINY, seed=0)
        res = FT.train_fast(
            model,
            X,
            y,
            cfg,
            X_val=Xv,
            y_val=yv,
            device="cpu",
            checkpoint_dir=tmp_path / f"ck{k}",
            progress=seen.append,
        )
        runs.append((model, res))
    (m1, r1), (m2, r2) = runs
    assert r1.steps == 12 and r1.epochs == 3.0 and r1.batch_size == 48
    assert len(r1.history["loss"]) == 12 and len(r1.history["val_acc"]) == 3
    assert r1.history["loss"] == r2.history["loss"]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert r1.history["val_acc"][-1] >= 0.9
    assert r1.history["lr"][-1] == pytest.approx(0.24 / 12)  # the last of 12 steps
    assert [r["epoch"] for r in seen[:3]] == [1, 2, 3]
    assert not m1.whiten.bias.requires_grad  # frozen after 3/8 of training
    ckpt, meta = load_model(tmp_path / "ck0" / "last")
    assert meta["epoch"] == 3 and meta["config"]["batch_size"] == 48
    x = torch.from_numpy(Xv).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert torch.equal(ckpt(x), m1.eval()(x))


def test_resume_after_an_interruption_ends_where_the_uninterrupted_run_ends(tmp_path):
    X, y = blobs(n=96, size=12)
    cfg = FT.FastTrainConfig(epochs=3, batch_size=32, ema=0.5, seed=1)
    whole = FastResNet(num_classes=3, widths=TINY, seed=0)
    r_whole = FT.train_fast(whole, X, y, cfg, device="cpu", checkpoint_dir=tmp_path / "a")

    class Interrupt(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Interrupt

    part = FastResNet(num_classes=3, widths=TINY, seed=0)
    with pytest.raises(Interrupt):
        FT.train_fast(
            part,
            X,
            y,
            cfg,
            device="cpu",
            checkpoint_dir=tmp_path / "b",
            progress=stop_after_two,
        )
    fresh = FastResNet(num_classes=3, widths=TINY, seed=7)  # its own weights are replaced
    r_rest = FT.train_fast(
        fresh, X, y, cfg, device="cpu", checkpoint_dir=tmp_path / "b", resume=True
    )
    assert r_rest.steps == r_whole.steps == 9
    assert r_rest.history["loss"] == r_whole.history["loss"]
    for name, value in whole.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    other = FT.FastTrainConfig(epochs=4, batch_size=32, ema=0.5, seed=1)
    with pytest.raises(ValueError, match="saved with other settings \\(epochs: 3 -> 4\\)"):
        FT.train_fast(fresh, X, y, other, device="cpu", checkpoint_dir=tmp_path / "b", resume=True)
    with pytest.raises(FileNotFoundError, match="no training state to resume from"):
        FT.train_fast(fresh, X, y, cfg, device="cpu", checkpoint_dir=tmp_path / "c", resume=True)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint_dir"):
        FT.train_fast(fresh, X, y, cfg, device="cpu", resume=True)


def test_ema_update_moves_float_tensors_and_copies_counters():
    ema, live = FastResNet(widths=TINY, seed=1), FastResNet(widths=TINY, seed=2)
    live.groups[0].norms[0].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    FT._ema_update(ema, live, decay=0.75)
    for name, value in ema.state_dict().items():
        if value.is_floating_point():
            expected = 0.75 * before[name] + 0.25 * live.state_dict()[name]
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(value, live.state_dict()[name])
    assert int(ema.groups[0].norms[0].num_batches_tracked) == 7


@pytest.mark.parametrize("ema", [None, 0.9])
def test_train_fast_returns_the_averaged_weights_with_ema(ema, tmp_path):
    from pix2pred.checkpoint import load_safetensors

    X, y = blobs(n=96)
    cfg = FT.FastTrainConfig(epochs=2, batch_size=32, ema=ema, amp="none", seed=3)
    model = FastResNet(num_classes=3, widths=TINY)
    FT.train_fast(model, X, y, cfg, device="cpu", checkpoint_dir=tmp_path)
    state = load_safetensors(tmp_path / "state.safetensors")
    returned = model.state_dict()
    live = {k: state[f"model.{k}"] for k in returned}
    if ema is None:
        assert not any(k.startswith("ema.") for k in state)
        for k, v in returned.items():
            assert torch.equal(v.cpu(), torch.as_tensor(live[k]))
        return
    averaged = {k: state[f"ema.{k}"] for k in returned}
    for k, v in returned.items():
        assert torch.equal(v.cpu(), torch.as_tensor(averaged[k]))
    w = "groups.1.convs.0.weight"
    assert not np.allclose(np.asarray(live[w]), np.asarray(averaged[w])), "EMA equals live"


def test_train_fast_time_budget_ema_and_small_data_note():
    X, y = blobs(n=40, size=12)
    cfg = FT.FastTrainConfig(epochs=1000, batch_size=64, time_budget=1.5, ema=0.9, amp="none")
    model = FastResNet(num_classes=3, widths=TINY)
    res = FT.train_fast(model, X, y, cfg, device="cpu")
    assert res.batch_size == 40 and "batch_size 64 > 40" in res.notes[0]
    assert 1.5 <= res.train_seconds < 8 and res.epochs < 1000
    assert not model.training


def test_train_fast_rejects_bad_data():
    model = FastResNet(num_classes=3, widths=TINY)
    X, y = blobs(n=20, size=12)
    with pytest.raises(ValueError, match="must be uint8 images"):
        FT.train_fast(model, X.astype(np.float32), y)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(20,\)"):
        FT.train_fast(model, X, y[:5])
    with pytest.raises(ValueError, match="give both X_val and y_val"):
        FT.train_fast(model, X, y, X_val=X)
    with pytest.raises(ValueError, match="translate=12 needs images larger"):
        FT.train_fast(model, X, y, FT.FastTrainConfig(translate=12), device="cpu")


# ---------------------------------------------------------------------------------------------
# The command


def test_cli_train_resnet_writes_a_run_folder(tmp_path):
    app = typer.Typer()
    train_app = typer.Typer()
    app.add_typer(train_app, name="train")
    register(train_app)
    out = tmp_path / "run"
    args = [
        "train",
        "resnet",
        "--dataset",
        "synthetic",
        "--n-train",
        "120",
        "--n-test",
        "40",
        "--image-size",
        "12",
        "--epochs",
        "2",
        "--batch-size",
        "40",
        "--widths",
        "8,16,16",
        "--val-size",
        "20",
        "--tta",
        "1",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "metrics.json",
        "model.safetensors",
        "model.json",
        "training_curves.png",
        "confusion_matrix.png",
        "checkpoint",
    } <= files
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_accuracy_by_tta"]) == {"0", "1"}
    assert metrics["test_accuracy"] == metrics["test_accuracy_by_tta"]["1"]
    assert metrics["epochs_run"] == 2 and len(metrics["history"]["val_acc"]) == 2
    assert metrics["num_params"] > 0 and metrics["train_seconds"] > 0
    _, meta = load_model(out / "model")
    assert meta["image_shape"] == [12, 12, 3] and len(meta["classes"]) == 10
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "x"), "--widths", "8,16"])
    assert bad.exit_code != 0 and "--widths must be three positive integers" in str(bad.exception)
    assert json.loads((out / "config.json").read_text())["train"]["whiten_bias_until"] == 0.375
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "y"), "--whiten-bias-until", "2"])
    assert bad.exit_code != 0 and "whiten_bias_until" in str(bad.exception)
    assert not (tmp_path / "y").exists()


def test_cli_resume_reads_the_run_config_and_state(tmp_path):
    app = typer.Typer()
    train_app = typer.Typer()
    app.add_typer(train_app, name="train")
    register(train_app)
    out = tmp_path / "run"
    args = ["train", "resnet", "-d", "synthetic", "--n-train", "60", "--n-test", "30",
            "--image-size", "12", "--epochs", "1", "--batch-size", "30", "--widths", "4,8,8",
            "--tta", "0", "--out", str(out)]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    before = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()
    again = CliRunner().invoke(app, ["train", "resnet", "--resume", str(out)])
    assert again.exit_code == 0, again.output
    after = json.loads((out / "metrics.json").read_text())
    assert after["test_accuracy"] == before["test_accuracy"]
    assert after["history"]["loss"] == before["history"]["loss"]
    missing = CliRunner().invoke(app, ["train", "resnet", "--epochs", "1"])
    assert "--dataset is required" in str(missing.exception)


def test_evaluate_and_predict_take_a_resnet_run(tmp_path, capsys):
    from PIL import Image

    from pix2pred.cli import main
    from pix2pred.nn_torch.resnet import FORMAT
    from pix2pred.run_model import RESNET_FORMAT, load_run_model

    assert FORMAT == RESNET_FORMAT

    def cli(*args: str) -> str:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        assert exc.value.code == 0
        return capsys.readouterr().out

    out = tmp_path / "run"
    cli("train", "resnet", "-d", "synthetic", "--n-train", "60", "--n-test", "30",
        "--image-size", "12", "--epochs", "1", "--batch-size", "30", "--widths", "4,8,8",
        "--tta", "1", "--out", str(out))  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.html").read_text()
    assert "Worst mistakes" in report and "Not shown" not in report
    assert f"accuracy {metrics['test_accuracy']:.2%}" in cli("evaluate", str(out))

    est = load_run_model(out, device="cpu")
    assert est.tta == 1 and est.image_shape_ == (12, 12, 3)
    image = np.random.default_rng(0).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    printed = cli("predict", str(out), str(tmp_path / "x.png"), "--top", "2")
    assert "x.png" in printed and printed.count("%") == 2
    with pytest.raises(ValueError, match=r"X must be images \(N, 12, 12, 3\)"):
        est.predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="no saved model"):
        load_run_model(tmp_path)

    assert "Grad-CAM" in report  # the report's saliency section covers the resnet too
    methods = ("saliency", "smoothgrad", "integrated-gradients", "gradcam", "occlusion")
    for method in (*methods, "activations"):
        printed = cli("explain", str(out), str(tmp_path / "x.png"), "--method", method)
        assert f"x-{method}.png" in printed
    from pix2pred.data.image_file import read_image
    from pix2pred.nn_torch.resnet_classifier import ResNetClassifier

    plain = ResNetClassifier.load(out / "model", device="cpu", tta=0, amp="none")
    classes = json.loads((out / "config.json").read_text())["classes"]
    pixels = read_image(tmp_path / "x.png", (12, 12), 3)[None]  # as fool reads it
    target = classes[(int(plain.predict(pixels)[0]) + 1) % len(classes)]
    with pytest.raises(SystemExit) as exc:  # exit 1 when the tiny net is not fooled in time
        main(["fool", str(out), str(tmp_path / "x.png"), "--target", target, "--max-steps", "5"])
    assert exc.value.code in (0, 1) and target in capsys.readouterr().out
    assert (out / "explain" / f"x-fool-{target}.png").is_file()
    assert (out / "explain" / "x-gradcam.png").stat().st_size > 0
    with pytest.raises(SystemExit) as exc:
        main(["visualize-class", str(out), "--class", "airplane"])
    assert exc.value.code == 2 and "a resnet takes raw pixel values" in capsys.readouterr().err


def test_explanations_of_a_resnet_are_its_autograd_gradients():
    from pix2pred import explain, introspect

    model = FastResNet(num_classes=3, widths=TINY, seed=0)  # in train mode, as after training
    model.groups[0].norms[0].running_mean.fill_(3.0)  # eval mode must use these
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    X = np.random.default_rng(0).uniform(0, 255, (2, 3, 12, 12)).astype(np.float32)
    y = np.array([0, 2])
    groups = ["group1", "group2", "group3"]
    assert introspect.conv_layer_names(model) == groups
    assert introspect.layer_names(model) == [*groups, "scores"]
    x = torch.tensor(X, requires_grad=True)
    scores = model.eval()(x)
    model.train()
    (dx,) = torch.autograd.grad(scores[[0, 1], y].sum(), x)
    np.testing.assert_allclose(explain.saliency(model, X, y), dx.abs().amax(1).numpy(), rtol=1e-5)

    outputs = introspect.layer_outputs(model, X)
    assert list(outputs) == [*groups, "scores"] and outputs["group3"].shape == (2, 16, 1, 1)
    np.testing.assert_allclose(outputs["scores"], scores.detach().numpy(), rtol=1e-5)
    acts = {}
    handle = model.groups[1].register_forward_hook(lambda _m, _i, out: acts.update(a=out))
    (d_act,) = torch.autograd.grad(model.eval()(torch.tensor(X))[[0, 1], y].sum(), acts["a"])
    model.train()
    handle.remove()
    dscores = np.eye(3)[y]
    _, act, grad = introspect.layer_gradient(model, X, dscores, "group2")
    np.testing.assert_allclose(act, acts["a"].detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(grad, d_act.numpy(), rtol=1e-5, atol=1e-8)
    cam = explain.gradcam(model, X, y, layer="group2")
    assert cam.shape == (2, 12, 12) and cam.min() >= 0
    with pytest.raises(ValueError, match="eval-mode only"):
        introspect.layer_outputs(model, X, train=True)
    with pytest.raises(ValueError, match="no fixed input shape"):
        explain.class_visualization(model, 0)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
