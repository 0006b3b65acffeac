"""pipeline.run end to end: hostile data, the shared cache, the exported model, the report."""
import base64
import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.backbones.weights import pretrained_dir
from retrain.classify import classify
from retrain.engine import load_model
from retrain.errors import DataError
from retrain.features import FeatureCache, cache_namespace
from retrain.files import sha256_file
from retrain.fit import HeadOptions
from retrain import ingest, preprocess
from retrain.cli import main
from retrain.pipeline import STAGES, RunOptions, evaluate_model, run
from stand_in import use_stand_in

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WEIGHTS = pretrained_dir() / "efficientnet_lite0.h5"


def options(cache, **head):
    return RunOptions(cache_dir=cache, progress=False, head=HeadOptions(**head))


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def test_hostile_dataset_trains_to_the_end_listing_every_bad_file(hostile_dataset, tmp_path,
                                                                   monkeypatch):
    use_stand_in(monkeypatch)
    stages = []
    result = run(hostile_dataset.root, tmp_path / "run", options(tmp_path / "cache", epochs=5),
                 on_stage=stages.append)
    assert stages == list(STAGES)
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "history.json", "labels.txt", "metrics.json", "model.h5", "report.html", "skipped.tsv",
        "split.json"]
    rows = read_tsv(run_dir / "skipped.tsv")
    assert rows[0] == ["path", "reason"]
    reasons = dict(rows[1:])
    assert sorted(reasons) == sorted(hostile_dataset.bad)
    for path, pattern in hostile_dataset.bad.items():
        assert re.search(pattern, reasons[path]), (path, reasons[path])
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["classes"] == hostile_dataset.classes == result.metrics["classes"]
    assert metrics["skipped"] == len(hostile_dataset.bad)
    good = len(hostile_dataset.good)
    assert metrics["cache"] == {"hits": 0, "misses": good, "view_hits": 0, "view_misses": 0}
    assert sum(metrics[s]["count"] for s in ("train", "val", "test")) == good
    assert 0 <= metrics["test"]["accuracy"] <= 1 and 0 <= metrics["val"]["accuracy"] <= 1
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(hostile_dataset.good)
    assert (run_dir / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1] == \
        hostile_dataset.classes
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_loss"]) <= 5
    assert any("日本" in w and "no test images" in w for w in result.warnings)
    model = load_model(run_dir / "model.h5")
    assert model.metadata["labels"] == hostile_dataset.classes
    assert model.metadata["split"] == {"val_percent": 10, "test_percent": 10,
                                       "set_aside": [path for path, _ in rows[1:]]}
    assert model.metadata["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert model.metadata["metrics"]["test"]["confusion_matrix"] == \
        metrics["test"]["confusion_matrix"]               # drawn by `retrain serve`'s page
    assert model.metadata["provenance"]["weights_sha256"] == "stand-in-seed-0"


def test_second_fit_reports_zero_cache_misses(image_tree, tmp_path, monkeypatch):
    data = image_tree({"a": 8, "b": 8})
    forwards = use_stand_in(monkeypatch)
    first = run(data, tmp_path / "one", options(tmp_path / "cache", epochs=4))
    assert forwards["images"] == 16
    second = run(data, tmp_path / "two", options(tmp_path / "cache", epochs=4))
    assert forwards["images"] == 16
    assert first.metrics["cache"] == {"hits": 0, "misses": 16, "view_hits": 0, "view_misses": 0}
    assert second.metrics["cache"] == {"hits": 16, "misses": 0, "view_hits": 0,
                                       "view_misses": 0}
    assert second.history == first.history                      # seeded: the same run again
    assert second.metrics["test"] == first.metrics["test"]


def test_exported_model_agrees_with_the_fit_metrics(image_tree, tmp_path, monkeypatch):
    data = image_tree({"a": 12, "b": 12, "c": 12})
    use_stand_in(monkeypatch)
    result = run(data, tmp_path / "run", options(tmp_path / "cache", epochs=15))
    model = load_model(result.model_path)
    for split in ("test", "val", "train"):
        fit_view, model_view = result.metrics[split], evaluate_model(model, data, split)
        assert model_view["count"] == fit_view["count"] > 0
        assert model_view["confusion_matrix"] == fit_view["confusion_matrix"]
        assert model_view["accuracy"] == fit_view["accuracy"]
        assert model_view["loss"] == pytest.approx(fit_view["loss"], abs=1e-5)
        assert [m["path"] for m in model_view["misclassified"]] == \
            [m["path"] for m in fit_view["misclassified"]]
    everything = evaluate_model(model, data, "all")
    assert everything["count"] == 36
    test_files = json.loads((result.run_dir / "split.json").read_text())["test"]
    mistakes = {m["path"]: m for m in result.metrics["test"]["misclassified"]}
    records = list(classify(model, [data / f for f in test_files], top_k=2))
    assert [r["path"] for r in records] == [str(data / f) for f in test_files]
    for relative, record in zip(test_files, records):
        best = record["top"][0]
        if relative in mistakes:
            assert best["label"] == mistakes[relative]["predicted"]
            assert best["probability"] == pytest.approx(mistakes[relative]["probability"],
                                                        abs=1e-5)
        else:
            assert best["label"] == relative.split("/")[0]


def test_evaluate_refuses_classes_the_model_does_not_know(image_tree, tmp_path, monkeypatch):
    data = image_tree({"a": 4, "b": 4})
    use_stand_in(monkeypatch)
    result = run(data, tmp_path / "run", options(tmp_path / "cache", epochs=1))
    other = image_tree({"a": 3, "zebra": 3}, root=tmp_path / "other")
    with pytest.raises(DataError, match=r"class folder\(s\) the model does not know: \['zebra'\]"):
        evaluate_model(load_model(result.model_path), other, "all")


class _Checker(HTMLParser):
    """Collects <img> sources and checks that every opened element is closed in order."""
    VOID = {"meta", "img", "br", "hr", "link", "input", "polyline", "rect"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_valid_html_with_decodable_images(hostile_dataset, tmp_path,
                                                                   monkeypatch):
    use_stand_in(monkeypatch)
    result = run(hostile_dataset.root, tmp_path / "run", options(tmp_path / "cache", epochs=3))
    page = result.report_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    mistakes = len(result.metrics["test"]["misclassified"])
    # the thumbnails of the mistakes; the confusion counts are a table (report.py)
    assert len(checker.images) == min(mistakes, 12) >= 1
    for image in checker.images:
        prefix, payload = image["src"].split(",", 1)
        assert prefix == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as decoded:
            decoded.load()
            assert decoded.format == "PNG" and decoded.width > 0
    text = " ".join(checker.text)
    low, high = result.metrics["test"]["accuracy_interval"]
    assert re.search(fr"{result.metrics['test']['accuracy']:.4f}\s+\({low:.3f}–{high:.3f}\)",
                     text)
    assert page.count("<svg") == 2 and "日本" in text
    skipped = result.skipped
    assert f"{len(skipped)} files skipped:" in text and len(skipped) >= 2
    for path, _ in skipped[:20]:                              # each with its reason
        assert path in text


@pytest.mark.skipif(not WEIGHTS.is_file(),
                    reason=f"{WEIGHTS} is absent: run `make pretrained` (`make test` does)")
def test_real_efficientnet_end_to_end_on_two_reference_photos(tmp_path):
    """fit with the real backbone on two of the reference photos (both in train): the cached
    features equal reference.npz's, and the exported model classifies as the head did."""
    reference = np.load(FIXTURES / "effnet" / "reference.npz")
    rows = {str(name): row for row, name in enumerate(reference["names"])}
    data = tmp_path / "data"
    for label, name in (("animal", "chelsea"), ("drink", "coffee")):
        (data / label).mkdir(parents=True)
        shutil.copy(FIXTURES / "photos" / f"{name}.png", data / label / f"{name}.png")
    settings = options(tmp_path / "cache", epochs=3)
    settings.val_percent = settings.test_percent = 0
    result = run(data, tmp_path / "run", settings)
    assert result.metrics["cache"] == {"hits": 0, "misses": 2, "view_hits": 0, "view_misses": 0}
    assert result.metrics["train"]["count"] == 2
    model = load_model(result.model_path)
    cache = FeatureCache(tmp_path / "cache",
                         cache_namespace(_backbone_part(model), model.metadata["preprocessing"]))
    paths = [data / "animal" / "chelsea.png", data / "drink" / "coffee.png"]
    features = cache.get([sha256_file(p) for p in paths])
    np.testing.assert_allclose(features, reference["features"][[rows["chelsea"], rows["coffee"]]],
                               rtol=0, atol=1e-4)
    record = next(classify(model, paths[:1], top_k=2))
    kernel, bias = model.get_layer("predictions").get_weights()
    logits = features[0] @ kernel + bias
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    by_label = {t["label"]: t["probability"] for t in record["top"]}
    np.testing.assert_allclose([by_label["animal"], by_label["drink"]], expected,
                               rtol=0, atol=1e-5)


def _backbone_part(model):
    """The exported model without its head: the same layers up to the pooled features."""
    from retrain.engine import Model
    pooled = model.get_layer("predictions").inbound[0]
    return Model(model.inputs, pooled)


def test_evaluate_decodes_only_the_split_it_scores(image_tree, tmp_path, monkeypatch):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 10, "b": 10})
    (data / "a" / "broken.png").write_bytes(b"not a png")
    result = run(data, tmp_path / "run", options(tmp_path / "cache", epochs=2))
    decoded = []
    real_decode = preprocess.decode_image
    for module in (preprocess, ingest):      # the two stages that decode
        monkeypatch.setattr(module, "decode_image", lambda path, *a, **k: decoded.append(path)
                            or real_decode(path, *a, **k))
    metrics = evaluate_model(load_model(result.model_path), data, "test")
    assert metrics["accuracy"] == result.metrics["test"]["accuracy"]
    assert len(decoded) - 1 == metrics["count"] == result.metrics["test"]["count"] < 20
    assert metrics["selection"]["skipped"] == [{"path": "a/broken.png",
                                                "reason": metrics["selection"]["skipped"][0]
                                                ["reason"]}]


def test_evaluate_scores_every_image_of_a_folder_it_never_saw(image_tree, tmp_path,
                                                               monkeypatch, capsys):
    """The issue's case: 100 new images gave `split: test` and 16 scored."""
    use_stand_in(monkeypatch)
    data = image_tree({"a": 12, "b": 12})
    result = run(data, tmp_path / "run", options(tmp_path / "cache", epochs=2))
    new = image_tree({"a": 50, "b": 50}, root=tmp_path / "new", size=(9, 9))
    metrics = evaluate_model(load_model(result.model_path), new, "test")
    assert metrics["count"] == 100
    assert metrics["selection"] == {"by": "content", "split": "test", "images": 100,
                                    "trained_on": 0, "validated_on": 0, "unseen": 100,
                                    "skipped": [], "scored": 100}
    assert main(["evaluate", str(result.model_path), str(new)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"scored 100 of 100 images in {new}: the model has seen none of them")


def test_evaluate_on_the_training_folder_scores_exactly_what_it_did_not_train_on(
        image_tree, tmp_path, monkeypatch):
    """By content, whatever the names: a copy of a training image under a new name is a
    training image, a test image renamed is still a test image, a new image is scored."""
    use_stand_in(monkeypatch)
    data = image_tree({"a": 15, "b": 15})
    result = run(data, tmp_path / "run", options(tmp_path / "cache", epochs=2))
    parts = json.loads((result.run_dir / "split.json").read_text())
    shutil.copy(data / parts["train"][0], data / "a" / "copy-of-a-training-image.png")
    renamed = parts["test"][0].replace(".png", "-renamed.png")
    (data / parts["test"][0]).rename(data / renamed)
    image_tree({"a": 2}, root=tmp_path / "more", size=(9, 9))
    shutil.copy(tmp_path / "more" / "a" / "img001.png", data / "a" / "new.png")
    model = load_model(result.model_path)

    def scored(split):
        metrics = evaluate_model(model, data, split)
        everything = {m["path"] for m in evaluate_model(model, data, "all")["misclassified"]}
        assert {m["path"] for m in metrics["misclassified"]} <= everything
        return metrics

    test = scored("test")
    assert test["count"] == len(parts["test"]) + 1
    assert test["selection"]["trained_on"] == len(parts["train"]) + 1
    assert test["selection"]["validated_on"] == len(parts["val"])
    assert scored("train")["count"] == len(parts["train"]) + 1
    assert scored("val")["count"] == len(parts["val"])
    # Which files: a model that always answers "a" lists every b image it scores as a
    # mistake, one that always answers "b" every a image.
    answers = []
    for label in (0, 1):
        always = load_model(result.model_path)
        kernel, bias = always.layers[-1].get_weights()
        always.layers[-1].set_weights([np.zeros_like(kernel),
                                       np.eye(2, dtype=bias.dtype)[label] * 9])
        answers.append(always)
    for split, expected in (("test", parts["test"][1:] + [renamed, "a/new.png"]),
                            ("train", parts["train"] + ["a/copy-of-a-training-image.png"]),
                            ("val", parts["val"])):
        listed = [m["path"] for model in answers
                  for m in evaluate_model(model, data, split)["misclassified"]]
        assert sorted(listed) == sorted(expected), split


def test_an_older_model_file_without_the_record_is_split_by_name(image_tree, tmp_path,
                                                                  monkeypatch, capsys):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 15, "b": 15})
    result = run(data, tmp_path / "run", options(tmp_path / "cache", epochs=2))
    model = load_model(result.model_path)
    metadata = {k: v for k, v in model.metadata.items() if k != "seen"}
    model.save(tmp_path / "old.h5", metadata=metadata)
    metrics = evaluate_model(load_model(tmp_path / "old.h5"), data, "test")
    assert metrics["selection"]["by"] == "name"
    assert metrics["confusion_matrix"] == result.metrics["test"]["confusion_matrix"]
    assert main(["evaluate", str(tmp_path / "old.h5"), str(data)]) == 0
    out, err = capsys.readouterr()
    assert "the test split, recomputed from the file names" in out.split("\n")[0]
    assert "does not record which images it trained on" in err


def test_a_class_with_no_training_images_is_named_before_split_json(image_tree, tmp_path,
                                                                   monkeypatch):
    use_stand_in(monkeypatch)
    root = tmp_path / "data"
    image_tree({"apple": 3, "pear": 3}, root=root / "train")
    image_tree({"apple": 1, "pear": 1, "quince": 2}, root=root / "val")
    image_tree({"apple": 1, "pear": 1}, root=root / "test")
    with pytest.raises(DataError, match=r"No training images for class\(es\) quince in"):
        run(root, tmp_path / "run", options(tmp_path / "cache", epochs=1))
    assert not (tmp_path / "run" / "split.json").exists()
