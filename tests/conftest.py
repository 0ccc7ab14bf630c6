"""Test-wide settings: a private cache folder and a headless matplotlib."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep dataset caches of the tests out of the user's ~/.cache."""
    os.environ["PIX2PRED_CACHE"] = str(tmp_path_factory.mktemp("pix2pred-cache"))
