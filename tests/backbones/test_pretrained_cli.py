"""The converted ImageNet model used directly: `retrain classify` and `retrain info`."""
import json
import re
from pathlib import Path

import pytest

from retrain import cli
from retrain.backbones import BACKBONES, describe_backbones, pretrained_dir

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "photos"
DOMESTIC_CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_classify_names_the_espresso_and_the_cat(capsys):
    model = pretrained_dir() / "efficientnet_lite0.h5"
    assert cli.main(["classify", str(model), str(PHOTOS / "coffee.png"),
                     str(PHOTOS / "chelsea.png"), "--top-k", "3", "--format", "json"]) == 0
    records = {Path(r["path"]).name: r for r in map(json.loads,
                                                    capsys.readouterr().out.splitlines())}
    assert records["coffee.png"]["top"][0]["label"] == "espresso"
    assert {t["label"] for t in records["chelsea.png"]["top"]} <= DOMESTIC_CATS
    probabilities = [t["probability"] for t in records["coffee.png"]["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.9


def test_info_summarises_the_pretrained_model(capsys):
    assert cli.main(["info", str(pretrained_dir() / "efficientnet_lite0.h5")]) == 0
    out = capsys.readouterr().out
    assert "4,694,024 total, 4,652,008 trainable, 42,016 non-trainable" in out
    assert "classes (1000): tench, goldfish" in out and "(all 1000 with --json)" in out
    assert "bicubic resize to 224x224" in out
    assert "wheel_sha256: f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be" in out


def test_classify_with_lite2_names_espresso_and_egyptian_cat(capsys):
    """`retrain classify pretrained/efficientnet_lite2.h5 tests/fixtures/photos`: the 260 px
    recipe travels in the file, so classify needs nothing else."""
    model = pretrained_dir() / "efficientnet_lite2.h5"
    if not model.is_file():
        pytest.skip(f"{model} is absent: run `make pretrained` (`make test` does)")
    assert cli.main(["classify", str(model), str(PHOTOS), "--format", "json"]) == 0
    top = {Path(r["path"]).name: r["top"][0]["label"]
           for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert top["coffee.png"] == "espresso"
    assert top["chelsea.png"] == "Egyptian cat"


def test_backbones_lists_each_with_its_figures(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path))
    (tmp_path / "efficientnet_lite1.h5").write_bytes(b"present")
    assert cli.main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(BACKBONES)
    lite1 = rows["efficientnet_lite1"]
    assert (lite1["params"], lite1["input_size"], lite1["top1"]) == (5_416_680, [240, 240], 76.7)
    assert lite1["weights_present"] and not rows["efficientnet_lite2"]["weights_present"]
    assert "tensorflow/tpu" in lite1["top1_source"]
    assert cli.main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"efficientnet_lite2 +6,092,072 +260 +77\.6% +- ", out)
    assert "missing: retrain pretrained --backbone efficientnet_lite2" in out


def test_backbones_reads_images_per_second_from_bench_json(tmp_path):
    bench = tmp_path / "bench.json"
    assert all(r["images_per_s"] is None for r in describe_backbones(bench))
    bench.write_text(json.dumps({"backbone": {"models": {
        "efficientnet_lite2": {"at_batch_size": {"images_per_s": 31.5}}}}}))
    speeds = {r["name"]: r["images_per_s"] for r in describe_backbones(bench)}
    assert speeds == {**{name: None for name in BACKBONES}, "efficientnet_lite2": 31.5}
    bench.write_text("{not json")
    assert all(r["images_per_s"] is None for r in describe_backbones(bench))
