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
