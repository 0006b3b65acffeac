"""The converted ImageNet model used directly: `retrain classify` and `retrain info`."""
import json
from pathlib import Path

from retrain import cli
from retrain.backbones import pretrained_dir

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
