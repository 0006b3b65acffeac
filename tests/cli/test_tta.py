"""`--tta N`: each image's probabilities are the mean over its plain view and N fixed views;
the model records N (and whether mirrors are allowed), so fit's test figures, classify,
evaluate and serve all average the same views."""
import json

import numpy as np
import pytest

from retrain.augment import tta_views
from retrain.classify import iter_image_files
from retrain.cli import main
from retrain.images import decode_image
from retrain.model_file import load_model_file
from retrain.preprocess import crop_and_resize, crop_and_resize_view, normalize
from PIL import Image


@pytest.fixture
def textured(tmp_path):
    """3 classes of 12 noisy 16x16 images, a colour per class and a bright left edge, so
    that mirrors and crops change what the model sees; one corrupt file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "textured"
    for label, channel in (("blue", 2), ("green", 1), ("red", 0)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 120, (16, 16, 3)).astype(np.uint8)
            pixels[..., channel] += 100
            pixels[:, :4] = 255
            Image.fromarray(pixels).save(root / label / f"{label}{i}.png")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _fit(data, tmp_path, name, *extra):
    run = tmp_path / name
    assert main(["fit", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "--epochs", "30", "--lr", "0.05", "-q", *extra]) == 0
    return run


def _by_hand(model, path, views):
    """The oracle: the model on the plain view and on each view, one image at a time."""
    recipe = model.metadata["preprocessing"]
    image = decode_image(path)
    batch = np.stack([crop_and_resize(image, recipe)] +
                     [crop_and_resize_view(image, recipe, v) for v in views])
    return np.asarray(model.predict(normalize(batch, recipe)), np.float64).mean(axis=0)


def _classify(capsys, model, data, *extra):
    capsys.readouterr()
    assert main(["classify", str(model), str(data), "--format", "json", "--top-k", "3",
                 *extra]) == 0
    out = {}
    for line in capsys.readouterr().out.splitlines():
        record = json.loads(line)
        if "top" in record:
            out[record["path"]] = {t["label"]: t["probability"] for t in record["top"]}
    return out


@pytest.mark.parametrize("flip", [True, False])
def test_the_model_records_tta_and_classify_averages_its_views(textured, tmp_path, stand_in,
                                                               capsys, flip):
    small_data = textured
    run = _fit(small_data, tmp_path, "run", "--tta", "3", *([] if flip else ["--no-flip"]))
    model = load_model_file(run / "model.h5")
    assert model.metadata["tta"] == {"views": 3, "flip": flip}
    views = tta_views(3, flip)
    assert any(v["flip"] for v in views) == flip
    answers = _classify(capsys, run / "model.h5", small_data)
    labels = model.metadata["labels"]
    for path in iter_image_files([small_data]):
        if "broken" in path.name:
            continue
        want = _by_hand(model, path, views)
        got = answers[str(path)]
        for label, probability in got.items():
            assert probability == pytest.approx(want[labels.index(label)], abs=1e-5)
    plain = _classify(capsys, run / "model.h5", small_data, "--tta", "0")
    path = next(p for p in iter_image_files([small_data]) if "broken" not in p.name)
    want = _by_hand(model, path, [])
    assert plain[str(path)][labels[int(np.argmax(want))]] == pytest.approx(want.max(), abs=1e-5)
    differences = [abs(plain[p][l] - answers[p][l]) for p in plain for l in plain[p]
                   if l in answers[p]]
    assert max(differences) > 1e-3                # the views change the probabilities


def test_fit_and_evaluate_score_the_test_split_with_the_same_views(textured, tmp_path,
                                                                   stand_in, capsys):
    small_data = textured
    run = _fit(small_data, tmp_path, "run", "--tta", "2", "--test-percent", "30")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["tta"] == 2
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.h5"), str(small_data), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["tta"] == 2 and scored["count"] == metrics["test"]["count"]
    # fit averages the cached views (float16), evaluate the views it computes (float32)
    assert scored["loss"] == pytest.approx(metrics["test"]["loss"], abs=2e-3)
    assert main(["evaluate", str(run / "model.h5"), str(small_data), "--json",
                 "--tta", "0"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["tta"] == 0 and abs(plain["loss"] - scored["loss"]) > 1e-3


def test_a_bad_tta_is_refused_in_one_line(trained, small_data, capsys):
    assert main(["classify", str(trained / "model.h5"), str(small_data), "--tta", "9"]) == 2
    assert "--tta" in capsys.readouterr().err


def test_tta_on_a_model_without_a_record_mirrors_only_if_it_trained_with_mirrors(
        textured, tmp_path, stand_in, capsys):
    run = _fit(textured, tmp_path, "run", "--no-flip")
    model = load_model_file(run / "model.h5")
    assert model.metadata["tta"] == {"views": 0, "flip": False}
    del model.metadata["tta"]                       # as a model file without the record
    model.metadata["provenance"]["head"]["flip"] = False
    from retrain.classify import classify
    path = next(p for p in iter_image_files([textured]) if "broken" not in p.name)
    (got,) = classify(model, [path], top_k=1, tta=1)
    want = _by_hand(model, path, tta_views(1, False))
    assert tta_views(1, False)[0]["flip"] is False and tta_views(1, True)[0]["flip"] is True
    assert got["top"][0]["probability"] == pytest.approx(want.max(), abs=1e-5)
