"""Odd inputs from issue 9: a diverging run, class names that would break labels.txt,
skipped.tsv names that must name their files, FIFOs and devices, non-finite outputs."""
import json
import os
import re

import h5py
import numpy as np
import pytest

from retrain.cli import main
from retrain.files import atomic_write_json


def fit(data, run, cache, *extra):
    return main(["fit", str(data), "--out", str(run), "--cache", str(cache), "--epochs", "3",
                 "-q", *extra])


def one_error(err):
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 2 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_diverging_run_stops_with_one_line_and_writes_nothing(small_data, tmp_path,
                                                                stand_in, capsys):
    assert fit(small_data, tmp_path / "run", tmp_path / "cache", "--lr", "1e38") == 2
    # epoch 1 warms the learning rate up from 0, so the loss may stay finite through it
    assert re.search(r"Training diverged: after epoch [12] the loss is",
                     one_error(capsys.readouterr().err))
    assert not (tmp_path / "run").exists()


def test_a_class_name_with_a_newline_is_refused(small_data, tmp_path, stand_in, capsys):
    os.rename(small_data / "blue", small_data / "bl\nue")
    assert fit(small_data, tmp_path / "run", tmp_path / "cache") == 2
    assert "'bl\\nue' holds control characters" in one_error(capsys.readouterr().err)


def _read_tsv_field(text):
    """The README's reading of a skipped.tsv field: \\\\, \\t, \\n, \\r unescaped."""
    escapes = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    out, chars = [], iter(text)
    for c in chars:
        out.append(escapes[next(chars)] if c == "\\" else c)
    return "".join(out)


def test_skipped_tsv_names_each_file_exactly(small_data, tmp_path, stand_in):
    names = ["tab\there.png", "new\nline.png", "back\\slash.png", "cr\rhere.png"]
    for name in names:
        (small_data / "red" / name).write_bytes(b"not an image")
    assert fit(small_data, tmp_path / "run", tmp_path / "cache") == 0
    lines = (tmp_path / "run" / "skipped.tsv").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "path\treason" and lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert all(len(row) == 2 for row in rows)
    listed = {_read_tsv_field(path) for path, _ in rows}
    assert listed == {f"red/{name}" for name in names + ["broken.png"]}
    assert all((small_data / path).is_file() for path in listed)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                    reason="needs FIFOs and /dev/zero")
def test_a_fifo_and_dev_zero_are_not_regular_files(trained, tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    assert main(["classify", str(trained / "model.h5"), str(tmp_path / "pipe.png"),
                 "/dev/zero", "--format", "json"]) == 1         # nothing could be classified
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["error"] for r in records] == ["not a regular file (a FIFO, device or socket)"] * 2


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                    reason="needs FIFOs and /dev/zero")
def test_a_fifo_or_dev_zero_as_the_model_is_refused_without_reading(tmp_path, capsys):
    os.mkfifo(tmp_path / "model.h5")
    for model in (tmp_path / "model.h5", "/dev/zero"):
        assert main(["info", str(model)]) == 2
        assert "is not a regular file" in one_error(capsys.readouterr().err)


def test_a_non_finite_model_output_is_an_error_for_that_file(trained, small_data, capsys):
    """Weights of 3e38 are finite (the loader accepts them) but overflow to inf."""
    with h5py.File(trained / "model.h5", "a") as f:
        weights = f["model_weights"]["predictions"]
        kernel = weights["predictions"]["kernel:0"]
        kernel[...] = np.full(kernel.shape, 3e38, np.float32)
    assert main(["classify", str(trained / "model.h5"), str(small_data / "red" / "red0.png"),
                 "--format", "json"]) == 1                     # its one file failed
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert record["error"] == "the model's output for it is not finite (NaN or infinity)"
    assert "1 file(s) could not be classified" in err


def test_json_files_write_null_for_non_finite_numbers(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"loss": [0.5, float("nan"), float("inf")]})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": [0.5, None, None]}
