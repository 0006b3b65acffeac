"""Output for programs stays valid whatever the file names (issue 9): csv rows split as
written, every line is UTF-8, JSON has no NaN, and a terminal sees no control characters."""
import csv
import io
import json
import os
import shutil

import pytest

from retrain.cli import main
from retrain.output import csv_line, json_line, printable

# A lone CR, a tab, a newline, a byte that is not UTF-8, an escape sequence.
NAMES = ["cr\rhere.png", "tab\there.png", "new\nline.png", os.fsdecode(b"caf\xe9.png"),
         "esc\x1b[2J.png"]
SHOWN = ["cr\rhere.png", "tab\there.png", "new\nline.png", "caf\\xe9.png", "esc\x1b[2J.png"]


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def test_json_line_writes_null_for_non_finite_numbers():
    line = json_line({"loss": float("nan"), "top": [float("inf"), -float("inf"), 0.5]})
    assert json.loads(line, parse_constant=_refuse_constant) == {"loss": None,
                                                                 "top": [None, None, 0.5]}


def test_json_line_escapes_c1_controls_and_bytes_of_non_utf8_names():
    line = json_line({"path": os.fsdecode(b"\xff\x9b.png"), "label": "a\x9bb\x7f"})
    line.encode("utf-8")                                  # strict: raises on a surrogate
    assert "\x9b" not in line and "\x7f" not in line
    # b"\xff\x9b" holds no UTF-8 character: both bytes appear as escapes, as os.fsencode
    # then decode("utf-8", "backslashreplace") shows them.
    assert json.loads(line) == {"path": "\\xff\\x9b.png", "label": "a\x9bb\x7f"}


def test_csv_line_round_trips_every_name():
    text = "".join(csv_line([name, "x"]) for name in NAMES)
    assert list(csv.reader(io.StringIO(text, newline=""))) == [[n, "x"] for n in SHOWN]


def test_printable_escapes_controls_and_keeps_text():
    assert printable("ant\x1b]0;pwned\x07\x9b\u202e") == "ant\\x1b]0;pwned\\x07\\x9b\\u202e"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"


@pytest.fixture
def odd_names(trained, small_data, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(small_data / "red" / "red0.png", folder / name)
    return folder


def test_classify_csv_and_json_with_odd_file_names(trained, odd_names, capsys):
    assert main(["classify", str(trained / "model.h5"), str(odd_names), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")
    rows = list(csv.reader(io.StringIO(out, newline="")))[1:]
    assert sorted(os.path.basename(row[0]) for row in rows) == sorted(SHOWN)
    assert all(row[1] == "red" for row in rows)

    assert main(["classify", str(trained / "model.h5"), str(odd_names), "--format", "json"]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in records) == sorted(SHOWN)

    assert main(["classify", str(trained / "model.h5"), str(odd_names)]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")
    assert "\x1b" not in out and "\r" not in out and "esc\\x1b[2J.png" in out
