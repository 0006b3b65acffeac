"""The models the serve tests use (serving.py has the helpers that start servers)."""
import importlib.util
import sys

import numpy as np
import pytest
from PIL import Image

from serving import ROOT


def _stand_in():
    path = ROOT / "tests" / "pipeline" / "stand_in.py"
    spec = importlib.util.spec_from_file_location("stand_in", path)
    module = sys.modules.get("stand_in") or importlib.util.module_from_spec(spec)
    if "stand_in" not in sys.modules:
        spec.loader.exec_module(module)
        sys.modules["stand_in"] = module
    return module


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory):
    """model.h5 of `retrain fit` on 3 colour classes (10 images each) with the stand-in."""
    from retrain.cli import main

    root = tmp_path_factory.mktemp("colours")
    for label, channel in (("blue", 2), ("green", 1), ("red", 0)):
        (root / "data" / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.full((10, 12, 3), 40 + 3 * i, np.uint8)
            pixels[..., channel] = 200 - 5 * i
            Image.fromarray(pixels).save(root / "data" / label / f"{label}{i}.png")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _stand_in().use_stand_in(monkeypatch)
        assert main(["fit", str(root / "data"), "--out", str(root / "run"), "--cache",
                     str(root / "cache"), "--epochs", "30", "--lr", "0.05", "-q"]) == 0
    return root / "run" / "model.h5"
