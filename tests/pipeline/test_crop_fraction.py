"""--crop-fraction: the centre crop of the recipe, set by the user, recorded in the model file
so that every consumer crops as fit did, and part of the feature cache's key."""
import json

import numpy as np
import pytest
from PIL import Image

from retrain.cli import main
from retrain.engine import load_model
from retrain.images import decode_image
from retrain.options import OptionError
from retrain.pipeline import RunOptions
from retrain.preprocess import preprocess_batch

from stand_in import use_stand_in


def _folder(root):
    """Two classes of 16x16 images that differ in their border, which a crop of half the
    side leaves out (and in their centre, so that both crops can learn them)."""
    rng = np.random.default_rng(0)
    for index, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (16, 16, 3), np.uint8)
            pixels[:3], pixels[-3:] = 255 * index, 255 * index
            pixels[6:10, 6:10] = 200 * index
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_fit_records_the_crop_fraction_and_classify_crops_as_fit_did(tmp_path, monkeypatch,
                                                                     capsys):
    use_stand_in(monkeypatch)
    data = _folder(tmp_path / "data")
    recipes = {}
    for flag in ([], ["--crop-fraction", "0.5"]):
        out = tmp_path / f"run{len(flag)}"
        assert main(["fit", str(data), "--out", str(out), "--cache", str(tmp_path / "cache"),
                     "--epochs", "2", "-q", *flag]) == 0
        recipes[bool(flag)] = load_model(out / "model.h5").metadata["preprocessing"]
        # The cropped run's features are not the uncropped run's: none come from the cache.
        assert "features: 0 from the cache, 12 computed" in capsys.readouterr().out
    assert recipes[False]["crop_fraction"] == 1.0       # the stand-in backbone's own
    assert recipes[True] == dict(recipes[False], crop_fraction=0.5)
    model = load_model(tmp_path / "run2" / "model.h5")
    image = data / "b" / "0.png"
    assert main(["classify", str(tmp_path / "run2" / "model.h5"), str(image), "--format",
                 "json", "--top-k", "2", "--runtime", "numpy"]) == 0
    printed = {t["label"]: t["probability"]
               for t in json.loads(capsys.readouterr().out)["top"]}
    expected = model.predict(preprocess_batch([decode_image(image)], recipes[True]))[0]
    uncropped = model.predict(preprocess_batch([decode_image(image)], recipes[False]))[0]
    labels = model.metadata["labels"]
    assert printed == pytest.approx({labels[j]: float(expected[j]) for j in range(2)}, abs=1e-6)
    assert printed != pytest.approx({labels[j]: float(uncropped[j]) for j in range(2)},
                                    abs=1e-6)


@pytest.mark.parametrize("value", ["0", "1.5", "half"])
def test_a_crop_fraction_outside_0_to_1_is_refused_in_one_line(tmp_path, capsys, value):
    assert main(["fit", str(tmp_path), "--crop-fraction", value]) == 2
    err = capsys.readouterr().err
    assert "--crop-fraction must be a number more than 0 and at most 1" in err
    assert "Traceback" not in err


def test_the_python_api_refuses_the_same_crop_fractions():
    with pytest.raises(OptionError, match=r"crop_fraction must be a number more than 0 and "
                                          r"at most 1 or None \(the backbone's own\)\. "
                                          r"Received: crop_fraction=0\."):
        RunOptions(crop_fraction=0).validate()
    assert RunOptions().crop_fraction is None         # the default: the backbone's own
