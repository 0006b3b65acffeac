"""The course examples in examples/ run as a reader runs them (a fresh Python, from the
repository root) and print what the notes lead a reader to expect. The slow ones run in
their --short mode, on real Fashion-MNIST images (the shipped sample unless Debian's
dataset-fashion-mnist is installed)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrain import backbones

ROOT = Path(__file__).resolve().parents[1]
KERAS_CNN_SUMMARY = ROOT / "tests" / "fixtures" / "course" / "mnist_cnn_summary_keras3.txt"


def run_example(name, *args, env=None):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def number(output, label):
    """The number printed after `label` at the start of a line."""
    found = re.findall(rf"^{label} (-?[\d.]+)", output, re.MULTILINE)
    assert len(found) == 1, f"expected one line '{label} ...' in:\n{output}"
    return float(found[0])


def table_cells(text):
    """A summary table as rows of stripped cells and its other lines, without the box
    drawing: column widths follow the terminal in Keras (rich), and are fixed in ours."""
    rows = []
    for line in text.strip().splitlines():
        if line[:1] in "│┃":
            rows.append([cell.strip() for cell in re.split("[│┃]", line)[1:-1]])
        elif not re.fullmatch(r"[\s━─┏┓┗┛┡┩╇┳┻┼├┤└┘┬┴┃│]*", line):
            rows.append(line.strip())
    return rows


def test_the_linear_classifier_learns_the_two_blobs_in_40_steps():
    output = run_example("linear_classifier.py")
    losses = [float(x) for x in re.findall(r"^Loss at step \d+: ([\d.]+)$", output, re.M)]
    assert len(losses) == 40 and losses[-1] < losses[0] / 10
    assert number(output, "accuracy") > 0.95


def test_nested_tapes_give_the_acceleration_of_a_falling_body():
    output = run_example("second_derivative.py")
    assert number(output, "speed") == 0.0
    assert number(output, "acceleration") == 9.8


def test_the_mnist_mlp_fits_evaluates_saves_and_reloads(tmp_path):
    path = tmp_path / "mlp.h5"
    output = run_example("mnist_mlp.py", "--short", "--out", path)
    assert number(output, "val accuracy") >= 0.65     # measured 0.738 on the sample
    assert number(output, "test accuracy") >= 0.65    # measured 0.755 (chance: 0.10)
    assert "the reloaded model predicts the same: True" in output and path.is_file()


def test_the_mnist_cnn_summary_is_the_table_keras_prints():
    output = run_example("mnist_cnn.py", "--short")
    ours = output[output.index('Model: "'):output.index("Non-trainable params")]
    keras = KERAS_CNN_SUMMARY.read_text(encoding="utf-8")
    assert table_cells(ours) == table_cells(keras[:keras.index("Non-trainable params")])
    assert table_cells(ours)[1] == ["Layer (type)", "Output Shape", "Param #"]
    assert len(table_cells(ours)) == 1 + 1 + 9 + 2   # name, header, 9 layers, 2 totals
    assert number(output, "test accuracy") > 0.3     # one epoch, 900 images: 0.59


def test_retraining_a_pretrained_backbone_takes_ten_lines(tmp_path):
    if not backbones.weights_path("efficientnet_lite0").is_file():
        pytest.skip("pretrained/efficientnet_lite0.h5 is absent: run `make pretrained`")
    script = (ROOT / "examples" / "retrain_pretrained.py").read_text(encoding="utf-8")
    code = [line for line in script.split('"""')[2].splitlines() if line.strip()]
    assert len(code) <= 10
    data = tmp_path / "data"       # 20 images of each class: the suite's budget
    for folder in sorted((ROOT / "data" / "fashion-mnist-sample").iterdir()):
        (data / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:20]:
            (data / folder.name / image.name).write_bytes(image.read_bytes())
    output = run_example("retrain_pretrained.py", data, tmp_path / "run",
                         env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert number(output, "test accuracy") >= 0.6     # measured 0.821 (chance: 0.10)
    assert (tmp_path / "run" / "model.h5").is_file()
    classes = {folder.name for folder in data.iterdir()}
    assert re.search(r"^ankle_boot/0000\.png: (\S+)$", output, re.M).group(1) in classes
