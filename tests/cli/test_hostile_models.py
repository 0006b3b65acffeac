"""Hostile model files (issue 9) through `retrain info` and `retrain classify`: every one is
refused with a one-line error and exit status 2, nothing outside the file is read (the FIFOs
would hang), memory stays bounded, and nothing printed from a file drives the terminal."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hostile_models as corpus

HARNESS = Path(__file__).with_name("hostile_harness.py")
MAX_RSS_MB = 300
# C0 controls but newline, DEL and C1 controls: what a terminal interprets.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case through info and classify, in one subprocess run by the harness."""
    folder = tmp_path_factory.mktemp("hostile")
    image = folder / "image.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(image)
    cases = []
    for build in corpus.REFUSED + corpus.ACCEPTED:
        path = str(build(folder))
        cases += [[f"info {build.__name__}", ["info", path]],
                  [f"classify {build.__name__}", ["classify", path, str(image)]]]
    cases.append(["info --layers escape_sequences",
                  ["info", "--layers", str(folder / "escapes.h5")]])
    cases_file = folder / "cases.json"
    cases_file.write_text(json.dumps(cases))
    done = subprocess.run([sys.executable, str(HARNESS), str(cases_file)], capture_output=True,
                          text=True, timeout=600, cwd=HARNESS.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("command", ["info", "classify"])
@pytest.mark.parametrize("build", corpus.REFUSED, ids=lambda build: build.__name__)
def test_hostile_file_is_refused_in_one_line(results, command, build):
    result = results[f"{command} {build.__name__}"]
    lines = result["stderr"].splitlines()
    assert result["status"] == 2, result["stderr"]
    assert lines[0].startswith("error: ") and "unexpected" not in lines[0]
    assert len(lines) <= 2 and all(l.startswith(("error: ", "hint: ")) for l in lines)
    assert result["stdout"] == ""
    assert not CONTROL.search(result["stderr"])


@pytest.mark.parametrize("build", corpus.ACCEPTED, ids=lambda build: build.__name__)
def test_unusual_legitimate_file_works_and_prints_no_control_characters(results, build):
    for command in ("info", "classify"):
        result = results[f"{command} {build.__name__}"]
        assert result["status"] == 0, result["stderr"]
        assert not CONTROL.search(result["stdout"] + result["stderr"])
    assert not CONTROL.search(results["info --layers escape_sequences"]["stdout"])


def test_escaped_text_stays_readable(results):
    """The escapes are shown as text (\\x1b), not dropped: the label is still recognisable."""
    out = results["info escape_sequences"]["stdout"]
    assert "ant\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m" in out


def test_memory_stays_bounded(results):
    """Peak RSS of each case at most 300 MB (the interpreter and libraries take about 60),
    and what numpy and Python allocated per case well under that."""
    for name, result in results.items():
        assert result["peak_rss_mb"] <= MAX_RSS_MB, name
        assert result["traced_peak_mb"] <= 100, name


def test_error_names_the_problem(results):
    """Each refusal says what is wrong (several guards would stop some files: the message
    shows which one did)."""
    expected = {"external_file": "in an external file", "external_fifo": "in an external file",
                "virtual_dataset": "is a virtual dataset", "huge_dense_units": "parameters",
                "unstored_dataset": "bytes stored", "huge_input_size": "input_size [30000",
                "deep_json": "levels deep", "deep_metadata": "levels deep",
                "non_string_labels": "labels must be a list of strings",
                "non_numeric_metrics": "must be a number",
                "ragged_confusion_matrix": "rows of 3 counts", "lambda_layer": "'Lambda'",
                "unknown_class": "'MyCustomPooling'", "module_registered_name": "'system'",
                "foreign_module_layer": "class 'GlobalAveragePooling2D' of module 'os'",
                "foreign_module_initializer": "class 'Dense' of module 'os'",
                "soft_link_loop": "is a link (SoftLink)",
                "external_link": "is a link (ExternalLink)",
                "nan_weights": "not finite", "mismatched_labels": "3 outputs but",
                "string_weights": "dtype |S1",
                "bad_seen_record": "seen['train'] must be a list of hex digests"}
    for name, words in expected.items():
        assert words in results[f"info {name}"]["stderr"].splitlines()[0], name
