"""The torch backend mirrors the numpy backend name for name; the numpy half never imports torch.

The rule, which every module of `pix2pred.nn_numpy` falls under (a new module fails
`test_every_numpy_module_is_classified` until it is given a place):

- MIRRORED modules have their twins in the torch module named here. ``layers`` and
  ``fast_layers`` (the loop/fast split of the same ops under the same names) both map to
  ``nn_torch.layers``, and so do the ``losses``, which the torch backend keeps beside its layers.
- SHARED modules are used by the torch backend as they are (weight init, the ConvNet spec):
  there is one copy, so nothing to mirror.
- NUMPY_ONLY modules are the numpy backend's speed machinery (im2col buffers and workspaces);
  torch has its own kernels.

The public names of a mirrored module are its ``__all__``, or else the functions and classes it
defines without a leading underscore. Each public function, class or registry (a dict such as
``MODELS``) needs a twin of the same name, with the same argument names and defaults (the
optimizers excepted: a torch optimizer over named parameters replaces the per-array rule
``next_w, config = rule(w, dw, config)``), and a registry the same keys. A class's arguments are
those of its constructor, compared for the classes users build (those registered, as in
``MODELS``); an abstract base such as ``Model`` is matched by name only, since each backend
builds its models its own way. Type aliases need no twin, and neither does any ``*_backward``:
autograd is the torch backend's backward pass.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import pix2pred.nn_numpy

MIRRORED = {
    "layers": "layers",
    "fast_layers": "layers",
    "losses": "layers",
    "models": "models",
    "optim": "optim",
}
SHARED = {"init", "convnet_spec"}
NUMPY_ONLY = {"im2col", "fast_batchnorm", "workspace"}
# Twins whose call signature differs by design (see the module docstring).
OWN_SIGNATURE = {"optim"}


def _numpy_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(pix2pred.nn_numpy.__path__))


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__
        ]
    return sorted(names)


def _needs_twin(name: str, obj: object) -> bool:
    if name.endswith("_backward"):
        return False
    return inspect.isfunction(obj) or inspect.isclass(obj) or isinstance(obj, dict)


def _arguments(obj: object) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults of a function's (or a class constructor's) arguments."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    return [(p.name, p.kind, p.default) for p in inspect.signature(target).parameters.values()]


def _is_registered(cls: type, numpy_module: str) -> bool:
    module = importlib.import_module(f"pix2pred.nn_numpy.{numpy_module}")
    public = [getattr(module, name) for name in _public_names(module)]
    return any(isinstance(obj, dict) and cls in obj.values() for obj in public)


def _twins() -> list[tuple[str, str, str]]:
    return [
        (numpy_name, torch_name, name)
        for numpy_name, torch_name in MIRRORED.items()
        for name in _public_names(importlib.import_module(f"pix2pred.nn_numpy.{numpy_name}"))
    ]


def test_every_numpy_module_is_classified() -> None:
    unclassified = set(_numpy_modules()) - set(MIRRORED) - SHARED - NUMPY_ONLY
    assert not unclassified, (
        f"classify {sorted(unclassified)} in tests/test_symmetry.py (MIRRORED, SHARED or "
        "NUMPY_ONLY)"
    )
    assert set(MIRRORED) <= set(_numpy_modules())


@pytest.mark.parametrize(("numpy_module", "torch_module", "name"), _twins())
def test_numpy_name_has_torch_twin(numpy_module: str, torch_module: str, name: str) -> None:
    numpy_obj = getattr(importlib.import_module(f"pix2pred.nn_numpy.{numpy_module}"), name)
    if not _needs_twin(name, numpy_obj):
        return
    torch_mod = importlib.import_module(f"pix2pred.nn_torch.{torch_module}")
    assert hasattr(torch_mod, name), (
        f"pix2pred.nn_numpy.{numpy_module}.{name} has no twin in pix2pred.nn_torch.{torch_module}"
    )
    torch_obj = getattr(torch_mod, name)
    if isinstance(numpy_obj, dict):
        assert list(torch_obj) == list(numpy_obj), f"{name}: keys differ"
        return
    abstract = inspect.isclass(numpy_obj) and not _is_registered(numpy_obj, numpy_module)
    if numpy_module not in OWN_SIGNATURE and not abstract:
        assert _arguments(torch_obj) == _arguments(numpy_obj), f"{name}: arguments differ"


def test_twins_exist_for_the_ops_the_issue_names() -> None:
    """The rule above really walks the ops (a sanity check on `_public_names`)."""
    twins = {name for _, _, name in _twins()}
    for name in ("conv_forward", "batchnorm_forward", "dropout_forward", "softmax_loss"):
        assert name in twins
    for name in ("FullyConnectedNet", "ConvNet", "MODELS", "UPDATE_RULES", "adamw"):
        assert name in twins
    assert "conv_backward" in twins  # walked, then excluded by the *_backward rule


def test_shared_modules_are_the_ones_torch_uses() -> None:
    from pix2pred.nn_numpy import convnet_spec
    from pix2pred.nn_numpy import models as numpy_models
    from pix2pred.nn_torch import models as torch_models

    assert torch_models.parse_spec is convnet_spec.parse_spec
    assert torch_models.BN_EPS == numpy_models.BN_EPS
    assert torch_models.BN_MOMENTUM == numpy_models.BN_MOMENTUM


def _torch_modules_after(code: str) -> list[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys\n"
            "import json\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_numpy_backend_does_not_import_torch() -> None:
    code = (
        "import importlib, pkgutil, pix2pred.nn_numpy as p\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    importlib.import_module(f'pix2pred.nn_numpy.{m.name}')"
    )
    assert _torch_modules_after(code) == []


def test_nothing_outside_nn_torch_imports_torch() -> None:
    code = (
        "import importlib, pkgutil, pix2pred\n"
        "for m in pkgutil.walk_packages(pix2pred.__path__, 'pix2pred.'):\n"
        "    if not m.name.startswith('pix2pred.nn_torch'):\n"
        "        importlib.import_module(m.name)"
    )
    assert _torch_modules_after(code) == []
    # The probe is able to see torch when it is imported.
    assert "torch" in _torch_modules_after("import pix2pred.nn_torch.layers")
