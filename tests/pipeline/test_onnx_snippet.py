"""docs/onnx.md's ONNX Runtime snippet (numpy + PIL, no retrain) runs as pasted and gives
retrain's probabilities within 1e-5."""
import re
from pathlib import Path

import numpy as np
import pytest

import retrain
from retrain.backbones.weights import pretrained_dir
from retrain.cli import main

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = pretrained_dir() / "efficientnet_lite0.h5"


def snippet():
    text = (ROOT / "docs" / "onnx.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    return block


def snippet_folder(root):
    """The snippet's relative paths under `root` (the clone's pretrained/ is left alone):
    the exported file, and the photos through a link."""
    (root / "pretrained").mkdir()
    assert main(["export", str(WEIGHTS), "--format", "onnx", "--out",
                 str(root / "pretrained" / "efficientnet_lite0.onnx")]) == 0
    (root / "tests" / "fixtures").mkdir(parents=True)
    (root / "tests" / "fixtures" / "photos").symlink_to(ROOT / "tests" / "fixtures" / "photos")


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent: run `make pretrained`")
def test_the_onnx_runtime_snippet_matches_retrain(tmp_path, monkeypatch, capsys):
    snippet_folder(tmp_path)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet(), "docs/onnx.md", "exec"), namespace)   # noqa: S102 - our docs
    printed = capsys.readouterr().out.strip()
    ours = retrain.load(WEIGHTS).predict(ROOT / "tests" / "fixtures" / "photos" / "chelsea.png")
    np.testing.assert_allclose(namespace["probabilities"], ours.probabilities, rtol=0,
                               atol=1e-5)
    assert printed == f"{ours.label} {round(ours.probability, 4)}" == "tiger cat 0.4084"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent: run `make pretrained`")
def test_the_snippets_preprocessing_is_retrains_for_jpegs_with_and_without_draft(
        tmp_path, monkeypatch, capsys):
    """The snippet's `preprocess`, given a recipe with and without jpeg_draft, makes the
    model input retrain makes, on a JPEG whose margins are odd both ways."""
    from PIL import Image
    from retrain.preprocess import iter_batches
    snippet_folder(tmp_path)
    photo = Image.open(ROOT / "tests" / "fixtures" / "photos" / "chelsea.png").convert("RGB")
    photo.resize((901, 603)).save(tmp_path / "big.jpg", quality=90)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet(), "docs/onnx.md", "exec"), namespace)   # noqa: S102 - our docs
    capsys.readouterr()
    for draft in (False, True):
        recipe = dict(namespace["recipe"], jpeg_draft=draft)
        namespace["recipe"] = recipe
        ((done, ours),) = list(iter_batches([tmp_path / "big.jpg"], recipe, 1, 1))
        np.testing.assert_array_equal(namespace["preprocess"](tmp_path / "big.jpg"), ours[0])
