"""Every command block in README.md runs as pasted: each `retrain ...` line parses with the
real argument parser, the cheap ones (their files exist, no training) are run, and each
`make ...` line is one the Makefile accepts, with DATA and ARGS reaching `retrain fit`
as the user quoted them."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from retrain.backbones.weights import pretrained_dir
from retrain.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def command_lines(text):
    """The command lines of the ```sh blocks, backslash continuations joined."""
    lines = []
    for block in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, re.M | re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").split("\n")
                  if line.strip() and not line.strip().startswith("#")]
    return lines


LINES = command_lines(README.read_text(encoding="utf-8"))
RETRAIN = [shlex.split(line, comments=True) for line in LINES
           if shlex.split(line, comments=True)[0].endswith("retrain")]
MAKE = [shlex.split(line, comments=True) for line in LINES
        if shlex.split(line, comments=True)[0] == "make"]
DASK = [shlex.split(line, comments=True) for line in LINES
        if shlex.split(line, comments=True)[0] == "dask"]
PIP = [shlex.split(line, comments=True) for line in LINES
       if shlex.split(line, comments=True)[:2] == ["pip", "install"]]


def test_the_readme_has_command_blocks_and_every_line_is_understood():
    assert len(RETRAIN) >= 5 and len(MAKE) >= 3
    assert len(RETRAIN) + len(MAKE) + len(DASK) + len(PIP) == len(LINES), LINES   # none ignored


def test_extraction_sees_what_a_shell_sees():
    text = "```sh\nretrain classify m.h5 a/ --format table|csv  # note\nmake x\n```\n"
    assert [shlex.split(line, comments=True) for line in command_lines(text)] == [
        ["retrain", "classify", "m.h5", "a/", "--format", "table|csv"], ["make", "x"]]


@pytest.mark.parametrize("argv", RETRAIN, ids=" ".join)
def test_each_retrain_line_parses(argv):
    args = build_parser().parse_args(argv[1:])
    for value in vars(args).values():      # a pasted `[--json]` or `a|b` would land here
        for word in value if isinstance(value, list) else [value]:
            assert not re.search(r"[\[\]|]", str(word)), word


CHEAP = [argv for argv in RETRAIN if argv[1] in ("info", "classify", "evaluate")
         and all((ROOT / word).exists() for word in argv[2:] if not word.startswith("-")
                 and ("/" in word or "." in word))]


@pytest.mark.skipif(not (pretrained_dir() / "efficientnet_lite0.h5").exists(),
                    reason="pretrained weights not converted (make pretrained)")
def test_the_cheap_lines_run(capsys, monkeypatch):
    assert CHEAP, "the README should show at least one command that runs on a fresh clone"
    monkeypatch.chdir(ROOT)
    for argv in CHEAP:
        assert main(argv[1:]) == 0, argv
        out, err = capsys.readouterr()
        assert "error" not in err, (argv, err)
        if argv[1] == "classify" and argv[-1].endswith("chelsea.png"):
            row = next(line for line in out.split("\n") if "chelsea.png" in line)
            assert "cat" in row.split()[0:2], out    # Chelsea is a tabby ("tiger cat")


def make_dry_run(argv):
    # Under `make test` the outer make's MAKEFLAGS/MAKELEVEL would add "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "-n", "--no-print-directory", *argv[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("argv", MAKE, ids=" ".join)
def test_each_make_line_is_accepted(argv):
    make_dry_run(argv)


@pytest.mark.parametrize("data, args, run, expected", [
    ("dir with space/", "--epochs 3", "",
     ["dir with space/", "--out", "runs/dir with space", "--epochs", "3"]),
    ("it's here", "--epochs 5 --cache 'my cache'", "runs/x y",
     ["it's here", "--out", "runs/x y", "--epochs", "5", "--cache", "my cache"]),
])
def test_make_retrain_passes_data_run_and_args_to_fit_as_quoted(data, args, run, expected,
                                                                tmp_path):
    """The recipe `make -n` prints, run by sh with `retrain fit` replaced by an argv echo."""
    script = make_dry_run(["make", "retrain", f"DATA={data}", f"ARGS={args}", f"RUN={run}"])
    recipe = script[script.index("data="):]
    echo = f"{shlex.quote(sys.executable)} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    assert ".venv/bin/python -m retrain fit" in recipe
    recipe = recipe.replace(".venv/bin/python -m retrain fit", echo)
    done = subprocess.run(["sh", "-c", recipe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown, argv = done.stdout.strip().split("\n")
    assert json.loads(argv) == expected
    assert f"'{expected[0]}' --out '{expected[2]}'" in shown      # the command, as quoted


def test_make_retrain_refuses_a_variable_it_would_ignore():
    done = subprocess.run(["make", "-n", "--no-print-directory", "retrain", "EPOCHS=5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "EPOCHS" in done.stderr and 'ARGS="--epochs 5"' in done.stderr


@pytest.mark.parametrize("argv", DASK, ids=" ".join)
def test_each_dask_line_is_one_the_dask_command_accepts(argv):
    """`dask scheduler`, `dask worker ADDRESS --option ...`: the subcommand exists and
    knows every option shown (the dask command comes with the `dask` extra)."""
    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip("the dask command is not installed (pip install 'retrain[dask]')")
    done = subprocess.run([str(dask), argv[1], "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for word in argv[2:]:
        if word.startswith("--"):
            assert f"{word.split('=')[0]} " in done.stdout, word


@pytest.mark.parametrize("argv", PIP, ids=" ".join)
def test_each_pip_line_names_an_extra_of_this_package(argv):
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for word in argv[2:]:
        name, _, extras = word.partition("[")
        assert name == project["name"], word
        assert set(extras.rstrip("]").split(",")) <= set(project["optional-dependencies"])
