"""``pix2pred explain``, ``pix2pred visualize-class`` and ``pix2pred fool``: figures of a run.

RUN is a folder written by ``pix2pred train softmax|svm|mlp|fcnet|cnn|convnet|resnet``; images are
read and resized as ``pix2pred predict`` reads them. Figures go to ``RUN/explain/`` (or
``--out-dir``) and never replace a file: a taken name gets ``-2``, ``-3``, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pix2pred.cli_options import DeviceOpt, console, out
from pix2pred.cli_train import KINDS

EXPLAIN_METHODS = (
    "saliency",
    "smoothgrad",
    "integrated-gradients",
    "gradcam",
    "occlusion",
    "activations",
)
EXPLAINABLE = (*KINDS, "resnet")
CONV_NETS = ("simplecnn", "convnet", "resnet")
RunArg = Annotated[Path, typer.Argument(help="A run folder written by pix2pred train.")]
OutDirOpt = Annotated[
    Path | None, typer.Option("--out-dir", help="Folder for the PNGs (default: RUN/explain).")
]


def load_run(run: Path, device: str | None = None) -> tuple[Any, list[str]]:
    """The estimator and class names of a run folder; a clear error for runs we cannot explain."""
    from pix2pred.estimators import NeuralClassifier
    from pix2pred.runs import read_run

    config, _ = read_run(run)
    kind = config.get("model")
    if kind not in EXPLAINABLE:
        what = {"knn": "a kNN run (it has no gradients)"}.get(kind, f"a {kind!r} run")
        raise ValueError(f"{run}: {what}; explanations need a run of {', '.join(EXPLAINABLE)}")
    if not (run / "model.json").is_file():
        raise FileNotFoundError(f"{run}: no model.json (did the training finish?)")
    if kind == "resnet":
        from pix2pred.nn_torch.resnet_classifier import ResNetClassifier

        # the figures' predictions are those of the float32 network the maps explain
        est = ResNetClassifier.load(run / "model", device=device, tta=0, amp="none")
    else:
        est = NeuralClassifier.load(run / "model", device=device)
    classes = [str(c) for c in (config.get("classes") or est.classes_)]
    return est, classes


def read_images(est: Any, paths: list[Path]) -> np.ndarray:
    """Image files as uint8 (N, H, W, C), resized to the model's input as ``predict`` does."""
    from pix2pred.data.image_file import read_image

    H, W, C = est.image_shape_
    return np.stack([read_image(path, (H, W), C) for path in paths])


def class_index(name: str, classes: list[str], option: str) -> int:
    """The index of class ``name``; the error lists the run's classes."""
    if name not in classes:
        raise ValueError(
            f"{option} {name!r} is not a class of this run; its classes: {', '.join(classes)}"
        )
    return classes.index(name)


def free_path(folder: Path, stem: str) -> Path:
    """``folder/stem.png``, or ``stem-2.png``, ``stem-3.png``, ... if that is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"{stem}.png", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.png"
    return path


def explain(
    run: RunArg,
    images: Annotated[list[Path], typer.Argument(help="Image files (any format Pillow reads).")],
    method: Annotated[
        str, typer.Option("--method", "-m", help=f"One of: {', '.join(EXPLAIN_METHODS)}.")
    ] = "saliency",
    class_name: Annotated[
        str | None,
        typer.Option("--class", help="Explain this class (default: the predicted one)."),
    ] = None,
    out_dir: OutDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Write a PNG per image showing why the model predicts what it does."""
    from pix2pred.explain_figures import activations_figure, explanation_figure

    if method not in EXPLAIN_METHODS:
        raise ValueError(f"--method must be one of {', '.join(EXPLAIN_METHODS)}, got {method!r}")
    est, classes = load_run(run, device)
    if method in ("gradcam", "activations") and est.model_.name not in CONV_NETS:
        raise ValueError(
            f"--method {method} needs a conv net; {run} holds a {est.model_.name} model "
            "(use saliency, smoothgrad, integrated-gradients or occlusion)"
        )
    target = None if class_name is None else class_index(class_name, classes, "--class")
    pixels = read_images(est, images)
    folder = out_dir or run / "explain"
    for path, image in zip(images, pixels, strict=True):
        png = free_path(folder, f"{path.stem}-{method}")
        if method == "activations":
            activations_figure(est, image, classes, png)
        else:
            explanation_figure(est, image, method, classes, png, target=target, name=path.name)
        out.print(f"wrote {png}", soft_wrap=True)


def visualize_class(
    run: RunArg,
    class_name: Annotated[str, typer.Option("--class", help="The class to visualise, or 'all'.")],
    steps: Annotated[int, typer.Option(min=1, help="Gradient-ascent steps.")] = 400,
    lr: Annotated[float, typer.Option(min=0.0, help="Step length (normalised gradient).")] = 2.0,
    l2: Annotated[float, typer.Option(min=0.0, help="L2 penalty on the image.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the start noise and the jitter.")] = 0,
    out_dir: OutDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Synthesise an image the model scores highest for a class (gradient ascent on pixels)."""
    from pix2pred.explain_figures import class_visualization_figure

    est, classes = load_run(run, device)
    if est.model_.name == "resnet":
        raise ValueError(
            f"{run}: visualize-class is tuned for the course's networks, whose inputs are "
            "normalised; a resnet takes raw pixel values (use explain or fool)"
        )
    if class_name == "all":
        targets = list(range(len(classes)))
    else:
        targets = [class_index(class_name, classes, "--class")]
    png = free_path(out_dir or run / "explain", f"class-{class_name}")
    with console.status(f"gradient ascent for {class_name} ({steps} steps)"):
        class_visualization_figure(est, targets, classes, png, steps=steps, lr=lr, l2=l2, seed=seed)
    out.print(f"wrote {png}", soft_wrap=True)


def fool(
    run: RunArg,
    image: Annotated[Path, typer.Argument(help="An image file.")],
    target: Annotated[str, typer.Option("--target", help="The class to make the model predict.")],
    lr: Annotated[float, typer.Option(min=0.0, help="Step length (normalised gradient).")] = 0.5,
    max_steps: Annotated[int, typer.Option(min=1, help="Give up after this many steps.")] = 200,
    out_dir: OutDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Change an image slightly so that the model predicts --target; show the change magnified."""
    from pix2pred.explain_figures import fooling_figure

    est, classes = load_run(run, device)
    t = class_index(target, classes, "--target")
    pixels = read_images(est, [image])
    png = free_path(out_dir or run / "explain", f"{image.stem}-fool-{target}")
    _, ok, fooled = fooling_figure(est, pixels[0], t, classes, png, lr=lr, max_steps=max_steps)
    change = int(np.abs(fooled.astype(int) - pixels[0]).max())
    if ok:
        out.print(f"fooled: predicted {target!r} after a change of at most {change}/255 per pixel")
    else:
        out.print(
            f"not fooled: {target!r} not reached in {max_steps} steps (a change of at most "
            f"{change}/255 per pixel); try a larger --lr or --max-steps"
        )
    out.print(f"wrote {png}", soft_wrap=True)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``explain``, ``visualize-class`` and ``fool`` to the CLI."""
    app.command("explain")(explain)
    app.command("visualize-class")(visualize_class)
    app.command("fool")(fool)
