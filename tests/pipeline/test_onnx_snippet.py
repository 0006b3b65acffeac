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


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent: run `make pretrained`")
def test_the_onnx_runtime_snippet_matches_retrain(tmp_path, monkeypatch, capsys):
    # The snippet's relative paths, in a folder of its own (the clone's pretrained/ is
    # left alone): the exported file, and the photo through a link.
    (tmp_path / "pretrained").mkdir()
    assert main(["export", str(WEIGHTS), "--format", "onnx", "--out",
                 str(tmp_path / "pretrained" / "efficientnet_lite0.onnx")]) == 0
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    (tmp_path / "tests" / "fixtures" / "photos").symlink_to(ROOT / "tests" / "fixtures" /
                                                          "photos")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet(), "docs/onnx.md", "exec"), namespace)   # noqa: S102 - our docs
    printed = capsys.readouterr().out.strip()
    ours = retrain.load(WEIGHTS).predict(ROOT / "tests" / "fixtures" / "photos" / "chelsea.png")
    np.testing.assert_allclose(namespace["probabilities"], ours.probabilities, rtol=0,
                               atol=1e-5)
    assert printed == f"{ours.label} {round(ours.probability, 4)}" == "tiger cat 0.4084"
