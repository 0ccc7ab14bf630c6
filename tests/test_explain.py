"""Explanations: the same maps in both backends, and each map means what it says."""

import numpy as np
import pytest

from pix2pred import explain as E
from pix2pred.introspect import scores
from pix2pred.nn_numpy.models import build_model
from pix2pred.nn_torch.transfer import to_torch

SHAPE = (3, 8, 8)


def make_model(name: str, seed: int = 0, **config):
    model = build_model(
        name, input_shape=SHAPE, num_classes=4, dtype=np.float64, seed=seed, **config
    )
    rng = np.random.default_rng(seed + 1)
    for k, p in model.params.items():
        if k.startswith("b") or k.startswith("beta"):
            p[...] = rng.normal(0, 0.1, p.shape)
    for k, v in model.buffers.items():
        v[...] = rng.uniform(0.5, 2, v.shape) if "var" in k else rng.normal(0, 0.3, v.shape)
    return model


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE))


CNN = ("convnet", {"spec": "4,M,6|5", "batchnorm": True})
PARITY = {
    "saliency": lambda m, X, y: E.saliency(m, X, y),
    "smoothgrad": lambda m, X, y: E.smoothgrad(m, X, y, samples=3, seed=1),
    "integrated_gradients": lambda m, X, y: E.integrated_gradients(m, X, y, steps=8),
    "gradcam": lambda m, X, y: E.gradcam(m, X, y),
    "occlusion": lambda m, X, y: E.occlusion(m, X, y, patch=3, stride=2),
    "class_visualization": lambda m, X, y: E.class_visualization(m, 1, steps=6, jitter=1),
    "fooling_image": lambda m, X, y: E.fooling_image(m, X[:1], 2, max_steps=3).x,
    "activation_maps": lambda m, X, y: np.concatenate(
        [a.ravel() for a in E.activation_maps(m, X).values()]
    ),
}


@pytest.mark.parametrize("method", PARITY)
@pytest.mark.parametrize("arch", [CNN, ("simplecnn", {}), ("twolayer", {"hidden_dim": 6})])
def test_both_backends_give_the_same_maps(method, arch):
    name, config = arch
    model = make_model(name, **config)
    if name == "twolayer" and method in ("gradcam", "activation_maps"):
        with pytest.raises(ValueError, match="twolayer"):
            PARITY[method](model, images(), np.array([0, 3]))
        return
    X, y = images(), np.array([0, 3])
    ours = PARITY[method](model, X, y)
    theirs = PARITY[method](to_torch(model), X, y)
    assert np.abs(ours).max() > 0
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-9 * np.abs(ours).max())


def test_saliency_of_a_linear_model_is_its_template():
    model = make_model("linear")
    X = images(3)
    y = np.array([2, 0, 1])
    expected = np.abs(model.params["W"].T.reshape(4, *SHAPE)).max(axis=1)[y]
    np.testing.assert_allclose(E.saliency(model, X, y), expected)


def test_integrated_gradients_are_complete():
    model = make_model("simplecnn")
    X, y = images(2), np.array([1, 2])
    baseline = np.full(SHAPE, 0.2)
    attr = E.integrated_gradients(model, X, y, baseline=baseline, steps=128)
    s, s0 = scores(model, X), scores(model, np.broadcast_to(baseline, X.shape))
    gap = s[[0, 1], y] - s0[[0, 1], y]
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), gap, rtol=0.02)
    linear = make_model("linear")
    attr = E.integrated_gradients(linear, X, y, steps=1)  # exact for a linear model
    gap = scores(linear, X)[[0, 1], y] - scores(linear, np.zeros_like(X))[[0, 1], y]
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), gap, rtol=1e-10)


def test_occlusion_finds_the_only_pixels_that_matter():
    model = make_model("linear")
    W = model.params["W"]
    W[...] = 0
    mask = np.zeros(SHAPE, bool)
    mask[:, 5:8, 0:3] = True  # class 1 reads only the bottom-left corner
    W[mask.ravel(), 1] = 1.0
    X = np.abs(images(1)) + 0.5
    heat = E.occlusion(model, X, 1, patch=2, stride=1)
    assert heat.shape == (1, 8, 8)
    assert heat[0, 5:, :3].min() > 0
    assert np.abs(heat[0, :4]).max() == 0 and np.abs(heat[0, :, 4:]).max() == 0


def test_gradcam_is_zero_where_the_last_conv_layer_sees_nothing():
    model = build_model("simplecnn", input_shape=(3, 16, 16), num_classes=4, dtype=np.float64)
    X = np.zeros((4, 3, 16, 16))
    X[:, :, :, :4] = np.random.default_rng(0).standard_normal((4, 3, 16, 4))
    cam = E.gradcam(model, X, np.arange(4))  # biases are 0: no content, no activation
    assert cam.shape == (4, 16, 16) and cam.min() >= 0
    assert cam[:, :, :8].max() > 0
    assert np.abs(cam[:, :, 10:]).max() == 0


def test_gradcam_refuses_a_layer_that_is_not_a_map():
    model = make_model("simplecnn")
    with pytest.raises(ValueError, match="feature maps"):
        E.gradcam(model, images(), [0, 1], layer="fc3")


def test_fooling_image_flips_the_prediction_with_a_small_change():
    model = make_model("simplecnn")
    X = images(1)
    target = (int(np.argmax(scores(model, X))) + 1) % 4
    fooled = E.fooling_image(model, X, target, lr=0.2)
    assert fooled.fooled and fooled.steps > 0
    assert int(np.argmax(scores(model, fooled.x))) == target
    assert np.abs(fooled.x - X).max() < 0.5 * np.abs(X).max()
    clipped = E.fooling_image(model, X, target, lr=0.2, max_steps=2, project=lambda x: X)
    assert not clipped.fooled and clipped.steps == 2


def test_class_visualization_raises_the_class_score_and_is_seeded():
    model = make_model("simplecnn")
    plain = E.class_visualization(model, 3, steps=40, lr=1.0, jitter=0, blur_every=0)
    assert int(np.argmax(scores(model, plain)[0])) == 3
    start = scores(model, E.class_visualization(model, 3, steps=0))[0, 3]
    img = E.class_visualization(model, 3, steps=40, lr=1.0, jitter=1, blur_sigma=0.5)
    assert scores(model, img)[0, 3] > start + 0.5
    again = E.class_visualization(model, 3, steps=40, lr=1.0, jitter=1, blur_sigma=0.5)
    np.testing.assert_array_equal(img, again)
    clip = E.class_visualization(model, 3, steps=5, project=lambda x: np.clip(x, -0.1, 0.1))
    assert np.abs(clip).max() <= 0.1 + 1e-12


def test_helpers_and_bad_arguments():
    maps = np.arange(4.0).reshape(1, 2, 2)
    up = E.resize_bilinear(maps, (4, 4))
    assert up.shape == (1, 4, 4)
    np.testing.assert_allclose(up.mean(), maps.mean())
    np.testing.assert_allclose(up[0, 0], [0, 0.25, 0.75, 1])
    X = images(1)
    blurred = E.blur(X, 1.0)
    assert blurred.std() < X.std()
    np.testing.assert_allclose(blurred.mean(axis=(2, 3)), X.mean(axis=(2, 3)), atol=0.15)
    model = make_model("twolayer", hidden_dim=5)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 4\)"):
        E.saliency(model, X, 4)
    with pytest.raises(ValueError, match="float images"):
        E.saliency(model, X.reshape(1, -1), 0)
    with pytest.raises(ValueError, match="target must be in"):
        E.class_visualization(model, 7)
    with pytest.raises(ValueError, match="one image"):
        E.fooling_image(model, images(2), 1)


# ------------------------------------------------------------------ figures and the CLI

TINY = ["--dataset", "synthetic", "--n-train", "120", "--n-test", "20", "--image-size", "16"]


def cli(capsys, *args):
    from pix2pred.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny CNN and a tiny MLP run folder, trained by the CLI, and a test image file."""
    from PIL import Image

    from pix2pred.cli import main

    root = tmp_path_factory.mktemp("runs")
    for kind in ("cnn", "mlp"):
        with pytest.raises(SystemExit) as exc:
            main(["train", kind, *TINY, "--epochs", "2", "--out", str(root / kind)])
        assert exc.value.code == 0
    image = root / "red square.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(image)
    return root, image


def test_saliency_figure_handles_conv_and_flat_models(runs, tmp_path):
    from pix2pred.data import load_dataset
    from pix2pred.estimators import NeuralClassifier
    from pix2pred.explain_figures import ImageSpace, saliency_figure, weights_figure

    root, _ = runs
    ds = load_dataset("synthetic", n_train=20, n_test=3, image_size=16)
    for kind in ("cnn", "mlp"):
        est = NeuralClassifier.load(root / kind / "model")
        space = ImageSpace(est)
        X = space.to_input(ds.X_test)
        np.testing.assert_allclose(space.to_pixels(X) * 255, ds.X_test, atol=1e-3)
        assert np.array_equal(space.to_uint8(X), ds.X_test)
        for method in ("saliency", "integrated-gradients"):
            png = saliency_figure(
                est, ds.X_test, ds.y_test, ds.classes, tmp_path / f"{kind}.png", method
            )
            assert png.stat().st_size > 5000
        assert weights_figure(est, ds.classes, tmp_path / f"{kind}-w.png").stat().st_size > 2000


def test_explain_command_writes_one_png_per_image_and_never_overwrites(capsys, runs):
    root, image = runs
    run_dir = root / "cnn"
    for method in ("saliency", "gradcam", "activations", "occlusion"):
        code, _, err = cli(capsys, "explain", str(run_dir), str(image), "--method", method)
        assert code == 0, err
        assert (run_dir / "explain" / f"red square-{method}.png").is_file()
    from pix2pred.cli_explain import load_run

    cls = load_run(run_dir)[1][1]
    code, _, err = cli(capsys, "explain", str(run_dir), str(image), str(image), "--class", cls)
    assert code == 0, err
    written = sorted(p.name for p in (run_dir / "explain").glob("red square-saliency*.png"))
    assert written == [f"red square-saliency{s}.png" for s in ("-2", "-3", "")]


def test_visualize_class_and_fool_commands(capsys, runs):
    root, image = runs
    run_dir = root / "mlp"
    from pix2pred.cli_explain import load_run, read_images

    est, classes = load_run(run_dir)
    code, _, err = cli(
        capsys, "visualize-class", str(run_dir), "--class", classes[2], "--steps", "20"
    )
    assert code == 0, err
    assert (run_dir / "explain" / f"class-{classes[2]}.png").is_file()
    pred = int(est.predict(read_images(est, [image]))[0])
    target = classes[(pred + 1) % len(classes)]
    code, out, err = cli(capsys, "fool", str(run_dir), str(image), "--target", target)
    assert code == 0, err
    assert out.startswith("fooled") and f"red square-fool-{target}.png" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "{root}/mlp", "{image}", "--method", "gradcam"], "needs a conv net"),
        (["explain", "{root}/cnn", "{image}", "--method", "lime"], "--method must be one of"),
        (["explain", "{root}/cnn", "{image}", "--class", "zebra"], "'zebra' is not a class"),
        (["explain", "{root}", "{image}"], "not a pix2pred run folder"),
        (["explain", "{root}/knn", "{image}"], "a kNN run"),
        (["explain", "{root}/cnn", "{root}/nothing.png"], "nothing.png: no such file"),
        (["fool", "{root}/cnn", "{image}", "--target", "zebra"], "--target 'zebra'"),
        (["visualize-class", "{root}/cnn", "--class", "zebra"], "--class 'zebra'"),
    ],
)
def test_bad_runs_methods_and_classes_get_a_clear_error(capsys, runs, args, message):
    import json

    root, image = runs
    knn = root / "knn"
    if not knn.exists():
        knn.mkdir()
        (knn / "config.json").write_text(json.dumps({"model": "knn", "classes": ["a", "b"]}))
    args = [a.format(root=root, image=image) for a in args]
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert message in err and err.count("\n") == 1
