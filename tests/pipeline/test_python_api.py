"""retrain in three lines of Python (api.py): the same labels and probabilities as
`retrain classify`, for files, folders, PIL images and arrays; training from Python."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrain
from retrain.backbones.weights import pretrained_dir
from retrain.cli import main
from retrain.errors import ConfigError
from retrain.fit import HeadOptions
from retrain.pipeline import RunOptions, run
from stand_in import use_stand_in

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def trained(image_tree, tmp_path, monkeypatch):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 20, "b": 20, "c": 20}, size=(11, 9))
    (data / "b" / "broken.png").write_bytes(b"not a png")
    result = run(data, tmp_path / "run", RunOptions(cache_dir=tmp_path / "cache",
                                                   progress=False, head=HeadOptions(epochs=5)))
    return data, result.model_path


def classify_json(capsys, model, *paths):
    assert main(["classify", str(model), *map(str, paths), "--format", "json",
                 "--top-k", "3"]) in (0, 1)
    return [json.loads(line) for line in capsys.readouterr().out.strip().split("\n")]


def test_predict_gives_the_labels_and_probabilities_of_retrain_classify(trained, capsys):
    data, model_path = trained
    cli = classify_json(capsys, model_path, data)
    m = retrain.load(model_path)
    predictions = m.predict(data)
    assert [p.path for p in predictions] == [r["path"] for r in cli] and len(cli) == 61
    for prediction, record in zip(predictions, cli):
        if "error" in record:
            assert prediction.error == record["error"] and prediction.label is None
            continue
        assert prediction.top(3) == [(t["label"], t["probability"]) for t in record["top"]]
        assert (prediction.label, prediction.probability) == (record["top"][0]["label"],
                                                              record["top"][0]["probability"])
        assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    one = m.predict(data / "a" / "img003.png")
    assert isinstance(one, retrain.Prediction) and one.path == str(data / "a" / "img003.png")
    # a batch of 1 against one of 32: float32 sums in another order, so not bit for bit
    assert one.label == predictions[3].label
    np.testing.assert_allclose(one.probabilities, predictions[3].probabilities, atol=1e-6)


def test_pil_images_and_arrays_give_what_their_files_give(trained):
    data, model_path = trained
    m = retrain.load(model_path)
    files = sorted((data / "c").glob("*.png"))
    by_file = m.predict(files)
    with_pil = m.predict([Image.open(f) for f in files])
    arrays = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    for batch in (with_pil, m.predict(arrays), m.predict(list(arrays))):
        for got, expected in zip(batch, by_file):
            # the same pixels, crop, resize and batches of 32: the same float32 results
            assert got.label == expected.label
            np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    single = m.predict(arrays[0])
    assert single.label == by_file[0].label and single.path is None
    mixed = m.predict([files[0], arrays[1], files[2]])
    assert [p.label for p in mixed] == [p.label for p in by_file[:3]]


def test_bad_inputs_are_clear_errors(trained):
    m = retrain.load(trained[1])
    with pytest.raises(ConfigError, match=r"must be uint8 pixels .* dtype=float32"):
        m.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match=r"cannot predict on a dict"):
        m.predict([{"x": 1}])
    with pytest.raises(retrain.errors.DataError, match="No such file or folder"):
        m.predict("no/such/photo.jpg")


def test_train_from_python_is_retrain_fit(image_tree, tmp_path, monkeypatch, capsys):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 15, "b": 15})
    m = retrain.train(data, out=tmp_path / "py", cache_dir=tmp_path / "cache", epochs=4,
                      progress=False)
    assert main(["fit", str(data), "--out", str(tmp_path / "cli"), "--cache",
                 str(tmp_path / "cache"), "--epochs", "4", "-q"]) == 0
    capsys.readouterr()
    on_disk = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m.metrics["test"] == on_disk["test"] and m.run_dir == tmp_path / "py"
    cli = retrain.load(tmp_path / "cli" / "model.h5")
    for got, expected in zip(m.predict(data), cli.predict(data)):
        np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['epoch'\]"):
        retrain.train(data, out=tmp_path / "x", epoch=3)


def _python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


@pytest.mark.skipif(not (pretrained_dir() / "efficientnet_lite0.h5").exists(),
                    reason="pretrained weights not converted (make pretrained)")
def test_the_readmes_three_lines_run_as_pasted(monkeypatch, capsys):
    """The README's Python block that loads a model runs as pasted, from the clone."""
    blocks = [b for b in _python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
              if "retrain.load(" in b]
    assert blocks
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})        # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "Prediction(label='tiger cat'" in out, out
