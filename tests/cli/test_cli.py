"""retrain's command line: help, the four subcommands' outputs, and the error contract
(one `error:` line plus a hint, no traceback, exit 2; Ctrl-C 130; a bug 1)."""
import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrain import cli
from retrain.cli import build_parser, main
from retrain.pipeline import STAGES, RunResult

SUBCOMMANDS = ("fit", "evaluate", "classify", "info", "pretrained", "backbones", "runtimes")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(err, *fragments):
    """`err` is the error line and its hint (after any `[i/n] stage` progress lines)."""
    lines = [line for line in err.strip().split("\n")
             if not re.match(r"\[\d+/\d+\] [\w .]+$", line)
             and not re.match(r"warning: the (val|test) split holds \d+ image", line)]
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_explains_every_option_with_its_default(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    def squeeze(text):      # argparse re-wraps help text, even inside "--hidden-units"
        return "".join(text.split())

    text = squeeze(capsys.readouterr().out)
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    for action in subparsers.choices[command]._actions:
        if action.dest == "help":
            continue
        assert action.help and squeeze(action.help) in text, action.dest
        if action.option_strings and (action.nargs == 0 or action.default is None
                                      or "(default:" in action.help):
            # A flag says no "(default: False)", an option without one no "(default: None)",
            # and a help that tells its default no second one.
            assert squeeze(f"{action.help} (default:") not in text, action.dest
        elif action.option_strings and action.default is not argparse.SUPPRESS:
            assert squeeze(f"{action.help} (default: {action.default})") in text


def test_python_dash_m_retrain_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "retrain", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert all(command in done.stdout for command in SUBCOMMANDS)


def test_fit_prints_stages_on_stderr_and_results_on_stdout(small_data, tmp_path, stand_in,
                                                          capsys):
    code, out, err = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run", "--cache",
                             tmp_path / "cache", "--epochs", "3")
    assert code == 0
    count = len(STAGES)
    assert f"[1/{count}] finding the images" in err
    assert f"[{count}/{count}] writing model.h5 and labels.txt" in err
    assert f"[3/{count}] setting aside the files that failed to decode" in err
    assert "augmented views" not in err          # no --augment, no augmentation stage line
    assert "test accuracy" in out and "0 from the cache, 30 computed" in out
    assert re.search(r"^  test accuracy \d\.\d{4} \(95% CI \d\.\d{3}-\d\.\d{3}, \d+ images\)",
                     out, re.M), out
    assert "skipped 1 files" in out and str(tmp_path / "run" / "model.h5") in out
    # stderr is not a terminal here: whole progress lines, no carriage-return redraws
    assert "\r" not in err and re.search(r"^features: 31/31 \(100%\)", err, re.M), err
    assert re.search(r"^fit: 3/3 \(100%\)", err, re.M), err
    code, out, err = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run2", "--cache",
                             tmp_path / "cache", "--epochs", "3")
    assert code == 0 and "30 from the cache, 0 computed" in out
    # 30 from the cache; broken.png is decoded again (it never reaches the cache) and fails
    assert re.search(r"^features \(30 cached\): 31/31 \(100%\)", err, re.M), err
    code, out, err = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run3", "--cache",
                             tmp_path / "cache", "--epochs", "3", "-q")
    assert code == 0 and "30 from the cache, 0 computed" in out
    # -q leaves the warnings: here, that val and test are too small to trust
    assert [line.split(" image(s)")[0] for line in err.strip().split("\n")] == [
        "warning: the val split holds 5", "warning: the test split holds 3"], err


@pytest.mark.parametrize("ran, best, epochs, line", [
    (32, 27, 50, "  stopped early at epoch 32; kept epoch 27 (best val loss)"),
    (50, 44, 50, "  kept epoch 44 of 50 (best val loss)"),
    (50, 50, 50, None)])
def test_fit_says_which_epoch_it_kept(ran, best, epochs, line, small_data, tmp_path,
                                     monkeypatch, capsys):
    metrics = {"classes": ["a", "b"], "train": {"count": 8}, "val": {"count": 0},
               "test": {"count": 0}, "cache": {"hits": 0, "misses": 8}, "skipped": 0}
    result = RunResult(tmp_path, tmp_path / "model.h5", tmp_path / "report.html", metrics,
                           {"loss": [1.0] * ran, "best_epoch": best, "epochs_planned": epochs},
                       [], [])
    monkeypatch.setattr(cli, "run", lambda *args, **kwargs: result)
    code, out, _ = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run", "-q")
    assert code == 0
    kept = [text for text in out.split("\n") if "kept epoch" in text]
    assert kept == ([line] if line else [])


def test_evaluate_json_matches_the_split_in_metrics_json(trained, small_data, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("test", "val"):
        code, out, err = run_cli(capsys, "evaluate", trained / "model.h5", small_data,
                                 "--split", split, "--json")
        assert code == 0 and err == ""
        assert len(out.strip().split("\n")) == 1
        scored = json.loads(out)
        assert scored.keys() == metrics[split].keys() | {"selection", "coverage", "tta"}
        for key in ("count", "accuracy", "top_k", "top_k_accuracy", "confusion_matrix"):
            assert scored[key] == metrics[split][key]
        assert scored["loss"] == pytest.approx(metrics[split]["loss"], abs=1e-5)
    code, out, _ = run_cli(capsys, "evaluate", trained / "model.h5", small_data)
    assert code == 0 and out.startswith(f"scored {metrics['test']['count']} of ")
    assert "the ones the model neither trained nor validated on" in out.split("\n")[0]
    low, high = metrics["test"]["accuracy_interval"]
    assert f"accuracy        {metrics['test']['accuracy']:.4f} (95% CI {low:.3f}-{high:.3f})" in out
    assert "precision" in out and "confusion matrix" in out


def test_classify_json_lines(trained, small_data, capsys):
    code, out, err = run_cli(capsys, "classify", trained / "model.h5", small_data / "red",
                             small_data / "blue" / "blue0.png", "--format", "json",
                             "--top-k", "2")
    assert code == 0
    records = [json.loads(line) for line in out.strip().split("\n")]
    assert len(records) == 12                                   # 10 + broken + blue0
    assert records[0]["path"].endswith("red/broken.png") and "error" in records[0]
    assert "1 file(s) could not be classified" in err
    for record in records[1:]:
        assert [t["label"] for t in record["top"]][0] in ("red", "green", "blue")
        assert len(record["top"]) == 2
        assert record["top"][0]["probability"] >= record["top"][1]["probability"]
    assert records[-1]["path"].endswith("blue0.png")


def test_classify_csv_has_a_header_and_one_row_per_image(trained, small_data, capsys):
    code, out, _ = run_cli(capsys, "classify", trained / "model.h5", small_data / "green",
                           small_data / "red" / "broken.png", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2",
                       "label_3", "probability_3", "error"]
    assert len(rows) == 12 and all(len(r) == 8 for r in rows)
    assert rows[-1][0].endswith("broken.png") and rows[-1][1] == "" and rows[-1][7]
    assert all(0.0 <= float(r[2]) <= 1.0 and r[7] == "" for r in rows[1:-1])


def test_classify_table_has_a_header_and_aligned_columns(trained, small_data, capsys):
    code, out, _ = run_cli(capsys, "classify", trained / "model.h5", small_data / "green",
                           small_data / "red" / "broken.png", "--top-k", "2")
    assert code == 0
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 12                                       # header, 10 + broken
    assert lines[0].split() == ["label", "1", "prob", "label", "2", "prob", "path"]
    path_column = lines[0].index("path")
    for line in lines[1:]:
        assert line[path_column - 2: path_column] == "  " and line[path_column] != " ", out
        assert Path(line[path_column:].split("  (")[0]).name.startswith(("green", "broken"))
    rows = [line.split() for line in lines[1:-1]]
    assert all(row[0] in ("red", "green", "blue") and len(row) == 5 for row in rows)
    for line in lines[1:-1]:                    # each probability under its "prob"
        for match in re.finditer(r"prob", lines[0]):
            assert re.fullmatch(r"[01]\.\d{3}", line[match.start() - 1: match.end()]), line
    # no label column holds "error"; the reason comes last, as the message on stderr says
    assert lines[-1].split()[0] == "-" and "error" not in lines[-1][:path_column]
    assert "broken.png  (not classified: corrupt or truncated" in lines[-1]


def test_info_summarises_the_model(trained, capsys):
    code, out, _ = run_cli(capsys, "info", trained / "model.h5")
    assert code == 0
    assert "classes (3): blue, green, red" in out
    assert "trainable" in out and "non-trainable" in out and "input:        (8, 8, 3)" in out
    assert "bilinear resize to 8x8" in out
    lines = out.split("\n")
    assert sum(line.split(":", 1)[-1].strip() == "stand_in" for line in lines) == 1, out
    assert out.count("stand-in-seed-0") == 1, out
    assert "backbone:     stand_in" in lines
    assert re.search(r"^  backbone_provenance\.weights_sha256: +stand-in-seed-0$", out, re.M)
    assert re.search(r"^  backbone_provenance\.source: +tests/pipeline/stand_in.py$", out, re.M)
    assert re.search(r"^  head\.epochs: +30$", out, re.M)
    assert all("{" not in line for line in lines), out       # no JSON dumped on one line
    code, out, _ = run_cli(capsys, "info", trained / "model.h5", "--json")
    info = json.loads(out)
    assert info["labels"] == ["blue", "green", "red"]
    assert info["params"]["trainable"] == 16 * 3 + 3
    assert info["params"]["total"] == info["params"]["trainable"] + 192 * 16 + 16
    code, out, _ = run_cli(capsys, "info", trained / "model.h5", "--layers")
    assert "Total params" in out and "predictions (Dense)" in out


def test_fit_names_missing_backbone_weights_and_the_command_that_makes_them(
        small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path / "pretrained"))
    assert main(["fit", str(small_data), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "--backbone", "efficientnet_lite2", "-q"]) == 2
    err = capsys.readouterr().err
    assert_one_error(err, str(tmp_path / "pretrained" / "efficientnet_lite2.h5"))
    assert "retrain pretrained --backbone efficientnet_lite2" in err


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "fit", tmp_path / "nope", "--out", tmp_path / "run",
                             "--cache", tmp_path / "cache")
    assert code == 2 and out == ""
    assert_one_error(err, "nope", "does not exist")


def test_not_a_model_file_is_one_line(tmp_path, small_data, capsys):
    fake = tmp_path / "model.h5"
    fake.write_text("hello")
    for argv in (["classify", fake, small_data], ["evaluate", fake, small_data],
                 ["info", fake], ["info", tmp_path / "absent.h5"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_error(err, str(argv[1]))


def test_missing_image_path_is_one_line(trained, tmp_path, capsys):
    code, out, err = run_cli(capsys, "classify", trained / "model.h5", tmp_path / "nothing.jpg")
    assert code == 2 and out == ""
    assert_one_error(err, "No such file or folder", "nothing.jpg")


def test_os_errors_on_user_paths_are_one_line(small_data, tmp_path, stand_in, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "fit", small_data, "--out", blocker, "--cache",
                           tmp_path / "cache", "-q")
    assert code == 2
    assert_one_error(err, "--out must be a folder", "a_file")


def test_classify_says_when_it_found_no_images(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, "classify", trained / "model.h5", tmp_path / "empty")
    assert code == 1 and out == ""          # nothing could be classified
    assert err.strip() == f"warning: no image files found in {tmp_path / 'empty'}"


def test_ctrl_c_exits_130_without_traceback(small_data, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    code, _, err = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run")
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_a_bug_exits_1_with_one_line_and_a_debug_switch(small_data, tmp_path, monkeypatch,
                                                        capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "run", broken)
    code, _, err = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run")
    assert code == 1
    assert_one_error(err, "unexpected ZeroDivisionError: division by zero")
    monkeypatch.setenv("RETRAIN_DEBUG", "1")
    code, _, err = run_cli(capsys, "fit", small_data, "--out", tmp_path / "run")
    assert code == 1 and "Traceback" in err


@pytest.mark.parametrize("argv, error, hint", [
    (["fit", "d", "--out", "r", "--epochz", "5"], "retrain fit: unknown option --epochz",
     "did you mean --epochs?"),
    (["fit", "d", "--out", "r", "--lr", "abc"], "--lr must be auto or a positive number; got 'abc'",
     "For example --lr 0.002"),
    (["fit", "d", "--out", "r", "--epochs", "0"],
     "--epochs must be auto or a positive whole number", "For example --epochs auto"),
    (["fit", "d"], "retrain fit needs --out", "retrain fit DATA --out RUN"),
    (["fit", "d", "--out", "r", "--val-percent", "60", "--test-percent", "60"],
     "--val-percent + --test-percent must add up to under 100, to leave images to train on; "
     "got --val-percent 60.0 --test-percent 60.0", "For example --val-percent 10 --test-percent 10"),
    (["fit", "d", "--out", "r", "--test-percent", "100"],
     "--test-percent must be a number from 0 up to (not including) 100; got 100",
     "--test-percent 10"),
    (["classify", "--top-k", "0", "model.h5", "x.jpg"], "--top-k must be a positive whole",
     "--top-k 3"),
    (["evaluate", "m.h5", "d", "--split", "tset"], "unknown --split 'tset'",
     "did you mean test?"),
    (["fti", "d"], "unknown command 'fti'", "did you mean fit?"),
    (["fit", "d", "--out", "r", "more"], "unexpected argument 'more'", "Quote a path"),
])
def test_usage_errors_are_one_line_with_a_hint(argv, error, hint, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_error(err, error)
    assert hint in err.split("\n")[1], err
    assert "usage:" not in err and "val_percent" not in err


def test_the_keras_spelling_of_an_option_is_accepted():
    args = build_parser().parse_args(["fit", "d", "--out", "r", "--learning-rate", "0.01"])
    assert args.learning_rate == 0.01


def test_retrain_alone_prints_the_help(capsys):
    code, out, err = run_cli(capsys)
    assert code == 0 and err == ""
    assert out.startswith("usage: retrain") and all(c in out for c in SUBCOMMANDS)


def test_fit_says_when_it_replaces_an_earlier_run(small_data, tmp_path, stand_in, capsys):
    argv = ["fit", small_data, "--out", tmp_path / "run", "--cache", tmp_path / "cache",
            "--epochs", "2", "-q"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "replaced" not in err
    code, _, err = run_cli(capsys, *argv)
    assert code == 0
    assert f"note: {tmp_path / 'run'} holds an earlier run; its files are replaced" in err


def test_evaluate_scores_a_model_on_a_folder_of_one_of_its_classes(trained, small_data,
                                                                    tmp_path, capsys):
    one = tmp_path / "only_red"
    shutil.copytree(small_data / "red", one / "red")
    split = json.loads((trained / "split.json").read_text())
    red_test = [p for p in split["test"] if p.startswith("red/")]
    code, out, err = run_cli(capsys, "evaluate", trained / "model.h5", one, "--json")
    assert code == 0, err
    scored = json.loads(out)
    assert scored["count"] == len(red_test) >= 1         # the same split as the full folder
    assert scored["per_class"]["red"]["support"] == len(red_test)
    code, out, err = run_cli(capsys, "evaluate", trained / "model.h5", one, "--split", "all",
                             "--json")
    assert code == 0 and json.loads(out)["count"] == 10   # broken.png was set aside by fit
    (tmp_path / "empty" / "red").mkdir(parents=True)
    code, _, err = run_cli(capsys, "evaluate", trained / "model.h5", tmp_path / "empty")
    assert code == 2
    assert_one_error(err, "no class folder with images", "a class is needed")


def test_sigterm_during_extraction_keeps_the_computed_features(small_data, tmp_path, stand_in,
                                                               monkeypatch, capsys):
    """SIGTERM (as Ctrl-C) in the 2nd batch of 8: the first 8 images' features are written;
    the message says so; the same command computes only the rest."""
    import os
    import signal
    from retrain import backbones, extraction
    loaded = backbones.load_backbone

    def load_backbone(name):
        model, calls = loaded(name), []
        predict = model.predict

        def terminated_on_the_second_batch(x, *args, **kwargs):
            calls.append(len(x))
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return predict(x, *args, **kwargs)

        model.predict = terminated_on_the_second_batch
        return model

    monkeypatch.setattr(backbones, "load_backbone", load_backbone)
    extract = extraction.extract_features
    monkeypatch.setattr(extraction, "extract_features",
                        lambda *args, **kwargs: extract(*args, **dict(kwargs, batch_size=8)))
    before = signal.getsignal(signal.SIGTERM)
    argv = ["fit", small_data, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "-q"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 130 and out == "" and "Traceback" not in err
    assert ("interrupted: the features of 8 of the 31 images computed are kept in the cache; "
            "run the same command again to resume") in err
    assert signal.getsignal(signal.SIGTERM) == before            # the handler is put back
    monkeypatch.setattr(backbones, "load_backbone", loaded)
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "8 from the cache, 22 computed" in out


def test_assert_accuracy_at_least_is_a_ci_gate(small_data, tmp_path, stand_in, capsys):
    """Exit 0 when the test accuracy reaches X, 3 with a one-line message naming both
    numbers when it does not (make_image_classifier's --assert_accuracy_at_least)."""
    common = [small_data, "--cache", tmp_path / "cache", "--epochs", "1", "--lr", "0.0001",
              "--test-percent", "30", "-q"]
    code, out, _ = run_cli(capsys, "fit", *common, "--out", tmp_path / "a",
                           "--assert-accuracy-at-least", "0")
    assert code == 0
    test = json.loads((tmp_path / "a" / "metrics.json").read_text())["test"]
    accuracy, (low, high) = test["accuracy"], test["accuracy_interval"]
    assert accuracy < 1.0
    code, out, err = run_cli(capsys, "fit", *common, "--out", tmp_path / "b",
                             "--assert-accuracy-at-least", str(accuracy))
    assert code == 0, err
    code, out, err = run_cli(capsys, "fit", *common, "--out", tmp_path / "c",
                             "--assert-accuracy-at-least", str(accuracy + 0.001))
    assert code == 3
    assert [line for line in err.strip().split("\n") if line.startswith("error")][0] == (
        f"error: test accuracy {accuracy:.4f} (95% CI {low:.3f}-{high:.3f}) is below "
        f"--assert-accuracy-at-least {accuracy + 0.001:g}")
    assert_one_error(err, "is below")
    assert "test accuracy" in out          # the results are still printed and written
    assert (tmp_path / "c" / "model.h5").is_file()


@pytest.mark.parametrize("fmt, where", [("table", "each such row ends with the reason, after the path"),
                                        ("csv", "see the error column"),
                                        ("json", 'see each record\'s "error"')])
def test_classify_exits_1_when_nothing_could_be_classified(trained, small_data, capsys, fmt,
                                                           where):
    broken = small_data / "red" / "broken.png"
    code, out, err = run_cli(capsys, "classify", trained / "model.h5", broken, "--format", fmt)
    assert code == 1 and f"1 file(s) could not be classified ({where})" in err
    code, out, err = run_cli(capsys, "classify", trained / "model.h5", broken,
                             small_data / "blue" / "blue0.png", "--format", fmt)
    assert code == 0 and "1 file(s) could not be classified" in err
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0][-1] == "error" and rows[1][-1].startswith("corrupt")
        assert "error" not in rows[1][1:-1]


def test_class_folders_of_undecodable_files_are_named_as_such(tmp_path, capsys, stand_in):
    """The issue's case: only corrupt files gave 'found no class folder with images', which
    never said that files were there and failed to decode."""
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / name / f"{i}.png").write_bytes(b"not a png")
    code, out, err = run_cli(capsys, "fit", tmp_path / "data", "--out", tmp_path / "run",
                             "--cache", tmp_path / "cache", "-q")
    assert code == 2
    assert_one_error(err, "6 image file(s) in its class folders could not be used",
                     "a/0.png: not an image Pillow can read")
    assert err.strip().split("\n")[-1].startswith("hint: check that the files are images")
    # the run folder is never made, and the skipped files' list survives beside it
    kept = list(tmp_path.glob("retrain-skipped-*.tsv"))
    assert not (tmp_path / "run").exists() and len(kept) == 1 and str(kept[0]) in err
    rows = [line.split("\t") for line in kept[0].read_text().splitlines()]
    assert rows[0] == ["path", "reason"] and len(rows) == 7
    assert sorted(r[0] for r in rows[1:]) == [f"{c}/{i}.png" for c in "ab" for i in range(3)]
