"""options.OPTIONS is the one declaration of each option: the parsers, HeadOptions,
RunOptions and the Python API take their defaults and checks from it, a bad value reads the
same from the command line and from retrain.train, and the run records what it declares."""
import argparse
import inspect
import json
from dataclasses import fields

import pytest

import retrain
from retrain.api import ImageClassifier
from retrain.cli import build_parser, main
from retrain.constraints import AnyOf, Flag, Integer, Literal, Number, OneOf, Text
from retrain.fit import HeadOptions
from retrain.options import OPTIONS, VARIANTS, OptionError, record
from retrain.pipeline import RunOptions


def assert_one_error(err, fragment):
    """`err` is one `error:` line holding `fragment`, and its `hint:` line."""
    lines = err.strip().split("\n")
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert fragment in lines[0], err

NOT_OPTIONS = {"head", "cluster"}          # RunOptions' fields that are objects, not options


def _subparsers():
    return next(a for a in build_parser()._actions
                if isinstance(a, argparse._SubParsersAction)).choices


def test_every_parsers_defaults_are_the_tables():
    checked = 0
    for command, parser in _subparsers().items():
        for action in parser._actions:
            option = next((o for o in OPTIONS.values() if o.flags
                           and tuple(action.option_strings) == o.flags), None)
            if option is None:
                continue
            allowed = {option.default} | {v.default for v in VARIANTS.values()
                                          if v.name == option.name}
            assert action.dest == option.name, (command, action.dest)
            assert action.default in allowed, (command, option.name, action.default)
            checked += 1
    assert checked >= 50            # fit, lr-find, evaluate, classify and serve all take some


@pytest.mark.parametrize("cls", [HeadOptions, RunOptions])
def test_head_and_run_options_take_their_defaults_from_the_table(cls):
    for item in fields(cls):
        if item.name in NOT_OPTIONS:
            continue
        assert item.name in OPTIONS, f"{cls.__name__}.{item.name} is not declared in OPTIONS"
        assert item.default == OPTIONS[item.name].default, (cls.__name__, item.name)


def test_the_servers_defaults_are_the_tables():
    pytest.importorskip("starlette")
    from retrain.serve.batcher import BatchOptions
    from retrain.serve.uploads import UploadLimits

    batch, limits = BatchOptions(), UploadLimits()
    for name in ("max_batch", "max_wait_ms", "max_queue", "workers", "min_confidence"):
        assert getattr(batch, name) == OPTIONS[name].default, name
    assert batch.tta == VARIANTS["tta_override"].default
    assert limits.max_bytes == OPTIONS["max_upload_mb"].default * 2**20
    assert (limits.max_files, limits.read_timeout_s) == (OPTIONS["max_files"].default,
                                                         OPTIONS["read_timeout_s"].default)


def test_fit_takes_every_option_head_and_run_options_have_flags_for():
    fit = _subparsers()["fit"]
    dests = {a.dest for a in fit._actions}
    wanted = {f.name for cls in (HeadOptions, RunOptions) for f in fields(cls)
              if f.name in OPTIONS and OPTIONS[f.name].flags}
    assert wanted <= dests, wanted - dests


def test_the_python_apis_defaults_are_the_tables():
    predict = inspect.signature(ImageClassifier.predict).parameters
    assert predict["batch_size"].default == OPTIONS["batch_size"].default
    assert predict["workers"].default == OPTIONS["workers"].default


def _bad_value(constraint):
    """A value the constraint refuses that the command line can spell."""
    if isinstance(constraint, Text):
        return ""
    for value in (-1, -0.5, 10**12, 0.5, 1):
        if not constraint.accepts(value):
            return value
    raise AssertionError(f"no bad value for {constraint}")


CONSTRAINED = sorted(name for cls in (HeadOptions, RunOptions) for name in
                     (f.name for f in fields(cls)) if name in OPTIONS
                     and OPTIONS[name].flags and not isinstance(OPTIONS[name].constraint,
                                                                (Flag, OneOf)))


@pytest.mark.parametrize("name", CONSTRAINED)
def test_a_bad_value_is_the_same_one_line_error_from_the_cli_and_from_python(
        name, tmp_path, capsys):
    option = OPTIONS[name]
    bad = _bad_value(option.constraint)
    words = f"must be {option.constraint.words(cli=True)}"
    assert main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 option.flags[0], str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error(err, f"{option.flags[0]} {words}")
    with pytest.raises(OptionError) as raised:
        retrain.train(tmp_path / "data", out=tmp_path / "py", **{name: bad})
    assert str(raised.value) == (f"{name} must be {option.constraint.words()}. "
                                 f"Received: {name}={bad!r}.")
    assert not (tmp_path / "run").exists() and not (tmp_path / "py").exists()


@pytest.mark.parametrize("name", ["backbone", "runtime", "precision"])
def test_an_unknown_choice_is_refused_from_the_cli_and_from_python(name, tmp_path, capsys):
    option = OPTIONS[name]
    assert main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 option.flags[0], "nope"]) == 2
    assert_one_error(capsys.readouterr().err, f"unknown {option.flags[0]} 'nope'")
    with pytest.raises(OptionError, match=f"{name} must be one of .*Received: {name}='nope'"):
        retrain.train(tmp_path / "data", out=tmp_path / "py", **{name: "nope"})


def test_shares_that_leave_nothing_to_train_on_read_alike(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--val-percent", "60", "--test-percent", "50"]) == 2
    assert_one_error(capsys.readouterr().err, "--val-percent + --test-percent must add up "
                     "to under 100, to leave images to train on; got --val-percent 60.0 "
                     "--test-percent 50.0")
    with pytest.raises(OptionError, match=r"val_percent \+ test_percent must add up to under "
                                          r"100.*Received: val_percent=60, test_percent=50"):
        retrain.train(tmp_path / "data", out=tmp_path / "py", val_percent=60, test_percent=50)


def test_the_run_records_the_options_the_table_marks(small_data, tmp_path, stand_in):
    head = HeadOptions(epochs=2, seed=7, hidden_units=4, dropout=0.1, label_smoothing=0.05)
    trained = retrain.train(small_data, out=tmp_path / "run", cache_dir=tmp_path / "cache",
                            progress=False, **{f.name: getattr(head, f.name)
                                               for f in fields(head)})
    expected = record(head.validate())
    assert set(expected) == {f.name for f in fields(HeadOptions)}
    training = trained.metrics["training"]
    for name in ("seed", "hidden_units", "dropout", "label_smoothing", "batch_size",
                 "warmup_epochs", "learning_rate", "flip"):
        assert training[name] == expected[name], name
    assert trained.model.metadata["provenance"]["head"] == json.loads(json.dumps(expected))


def test_the_constraints_say_what_they_accept():
    assert Integer(0, 8).words() == "a whole number from 0 to 8"
    assert Number(0, 100, open_high=True).accepts(99.9) and not Number(
        0, 100, open_high=True).accepts(100)
    assert not Integer(1).accepts(True) and not Number(0).accepts(False)
    patience = AnyOf((Literal("auto"), Integer(0), Literal(None, "no early stopping")))
    assert patience.words(cli=True) == "auto or a whole number (0 or more)"
    assert patience.accepts(None) and patience.parse("auto") == "auto"
    with pytest.raises(ValueError):
        patience.parse("many")
