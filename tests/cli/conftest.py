"""Fixtures for the CLI tests: the stand-in backbone (shared with tests/pipeline) and a
small trained run made through `retrain fit`."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _load_stand_in():
    """tests/pipeline/stand_in.py, the one definition of the stand-in backbone (the test
    folders are not packages, so it is loaded by path)."""
    if "stand_in" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "pipeline" / "stand_in.py"
        spec = importlib.util.spec_from_file_location("stand_in", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["stand_in"] = module
    return sys.modules["stand_in"]


@pytest.fixture
def stand_in(monkeypatch):
    """`retrain fit` uses the stand-in backbone; yields the forward-pass counter."""
    return _load_stand_in().use_stand_in(monkeypatch)


@pytest.fixture
def small_data(tmp_path):
    """DATA with classes red, green, blue (10 slightly varied 12x10 PNGs each) and one
    corrupt file."""
    root = write_small_data(tmp_path / "data")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def write_small_data(root, names=("blue", "green", "red")):
    """root/<name>/<name><i>.png: 10 slightly varied 12x10 PNGs for each of three names,
    mostly blue, green and red in that order."""
    for label, channel in zip(names, (2, 1, 0)):
        (root / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.full((10, 12, 3), 40 + 3 * i, np.uint8)
            pixels[..., channel] = 200 - 5 * i
            Image.fromarray(pixels).save(root / label / f"{label}{i}.png")
    return root


@pytest.fixture
def trained(small_data, tmp_path, stand_in):
    """A run folder made by `retrain fit -q` on small_data with the stand-in backbone."""
    from retrain.cli import main

    run = tmp_path / "run"
    assert main(["fit", str(small_data), "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "--epochs", "30", "--lr", "0.05", "-q"]) == 0
    return run
