"""`--min-confidence P`: below P the answer is "unknown", in every output format; evaluate
prints the coverage each threshold leaves, so the user can choose P."""
import csv
import io
import json

import numpy as np
import pytest

from retrain.cli import main


def _classify_json(capsys, *args):
    capsys.readouterr()
    assert main(["classify", *map(str, args), "--format", "json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _threshold_between(records):
    """A P that splits the images' top probabilities in two non-empty groups."""
    tops = sorted(r["top"][0]["probability"] for r in records if "top" in r)
    middle = len(tops) // 2
    assert tops[middle - 1] < tops[middle], "the toy model gives equal confidences"
    return (tops[middle - 1] + tops[middle]) / 2


def test_classify_answers_unknown_below_the_threshold_in_every_format(trained, small_data,
                                                                       capsys):
    model = trained / "model.h5"
    plain = _classify_json(capsys, model, small_data)
    assert all("prediction" not in r for r in plain)           # nothing changes without it
    p = _threshold_between(plain)
    marked = _classify_json(capsys, model, small_data, "--min-confidence", p)
    assert [r["path"] for r in marked] == [r["path"] for r in plain]
    unknown = 0
    for before, after in zip(plain, marked):
        if "error" in before:
            assert "prediction" not in after
            continue
        assert after["top"] == before["top"]                   # the model's view is kept
        best = before["top"][0]
        expected = best["label"] if best["probability"] >= p else "unknown"
        assert after["prediction"] == expected
        unknown += expected == "unknown"
    assert 0 < unknown < len(plain) - 1

    assert main(["classify", str(model), str(small_data), "--format", "csv",
                 "--min-confidence", str(p)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["prediction"] for row in rows] == [r.get("prediction", "") for r in marked]
    assert main(["classify", str(model), str(small_data), "--min-confidence", str(p)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "answer"
    assert sum(line.split()[0] == "unknown" for line in lines[1:]) == unknown


def test_evaluate_reports_coverage_against_accuracy(trained, small_data, capsys):
    model = trained / "model.h5"
    records = [r for r in _classify_json(capsys, model, small_data) if "top" in r]
    p = _threshold_between(records)
    assert main(["evaluate", str(model), str(small_data), "--split", "all", "--json",
                 "--min-confidence", str(p)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    truth = {r["path"]: r["path"].split("/")[-2] for r in records}
    confident = [r for r in records if r["top"][0]["probability"] >= p]
    chosen = metrics["min_confidence"]
    assert chosen["threshold"] == pytest.approx(p)
    assert chosen["answered"] == len(confident)
    assert chosen["coverage"] == pytest.approx(len(confident) / len(records))
    right = sum(r["top"][0]["label"] == truth[r["path"]] for r in confident)
    assert chosen["accuracy"] == pytest.approx(right / len(confident))
    rows = metrics["coverage"]
    assert rows[0]["threshold"] == 0.0 and rows[0]["coverage"] == 1.0
    assert rows[0]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert chosen in rows
    coverages = [row["coverage"] for row in rows]
    assert coverages == sorted(coverages, reverse=True)

    assert main(["evaluate", str(model), str(small_data), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "min confidence  coverage  answered  accuracy (95% CI)" in out
    assert np.isclose(float(out.split("min confidence")[1].splitlines()[1].split()[1]), 1.0)


@pytest.mark.parametrize("value", ["1", "-0.1", "x"])
def test_a_threshold_outside_zero_to_one_is_refused(trained, small_data, capsys, value):
    assert main(["classify", str(trained / "model.h5"), str(small_data),
                 "--min-confidence", value]) == 2
    assert "--min-confidence" in capsys.readouterr().err
