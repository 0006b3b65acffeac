"""`retrain serve --min-confidence P` answers "unknown" where `retrain classify` does."""
from retrain.classify import classify
from retrain.model_file import load_model_file

from serving import needs_serve, running

pytestmark = needs_serve


def test_serve_answers_unknown_where_classify_does(colour_model):
    model = load_model_file(colour_model)
    images = sorted((colour_model.parent / ".." / "data").resolve().rglob("*.png"))[::3]
    tops = sorted(r["top"][0]["probability"] for r in classify(model, images))
    p = (tops[len(tops) // 2 - 1] + tops[len(tops) // 2]) / 2
    with running(colour_model, "-q", "--min-confidence", str(p)) as server:
        expected = list(classify(model, images, min_confidence=p, **server.runtime()))
        status, _, answer = server.classify([(i.name, i.read_bytes()) for i in images])
        assert status == 200, answer
        assert server.stop()[0] == 0
    predictions = [r["prediction"] for r in answer["results"]]
    assert predictions == [r["prediction"] for r in expected]
    assert 0 < predictions.count("unknown") < len(images)


def test_serve_averages_the_test_time_views_as_classify_does(tmp_path):
    """A model recording --tta 3, on noisy images where mirrors and crops differ."""
    import numpy as np
    import pytest
    from PIL import Image

    from retrain.cli import main
    from conftest import _stand_in

    rng = np.random.default_rng(0)
    for label, channel in (("blue", 2), ("red", 0)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 120, (16, 16, 3)).astype(np.uint8)
            pixels[..., channel] += 100
            pixels[:, :4] = 255
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _stand_in().use_stand_in(monkeypatch)
        assert main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--cache",
                     str(tmp_path / "cache"), "--epochs", "5", "--tta", "3", "-q"]) == 0
    path = tmp_path / "run" / "model.h5"
    model = load_model_file(path)
    images = sorted((tmp_path / "data").rglob("*.png"))[::3]
    with running(path, "-q") as server:
        expected = list(classify(model, images, top_k=2, **server.runtime()))
        plain = list(classify(model, images, top_k=2, tta=0, **server.runtime()))
        status, _, answer = server.classify([(i.name, i.read_bytes()) for i in images],
                                            top_k=2)
        assert status == 200, answer
        assert server.stop()[0] == 0
    for got, want, alone in zip(answer["results"], expected, plain, strict=True):
        got = {t["label"]: t["probability"] for t in got["top"]}
        assert got == pytest.approx({t["label"]: t["probability"] for t in want["top"]},
                                    abs=1e-5)
    assert max(abs(e["top"][0]["probability"] - a["top"][0]["probability"])
               for e, a in zip(expected, plain) if e["top"][0]["label"] == a["top"][0]["label"]
               ) > 1e-3
