"""Every command block in README.md and docs/*.md runs as pasted: each `retrain ...` line
parses with the real argument parser, the cheap ones (their files exist, no training) are
run, each `make ...` line is one the Makefile accepts, with DATA and ARGS reaching
`retrain fit` as the user quoted them, the README's files exist when its lines are run top
to bottom, and every `pip install` line, there or in the command's help and hints,
installs this project (PyPI's `retrain` is another one)."""
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
from retrain.distribution import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def command_lines(text):
    """The command lines of the ```sh blocks, backslash continuations joined."""
    lines = []
    for block in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, re.M | re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").split("\n")
                  if line.strip() and not line.strip().startswith("#")]
    return lines


README_ARGVS = [shlex.split(line, comments=True)
                for line in command_lines(README.read_text(encoding="utf-8"))]
ARGVS = [shlex.split(line, comments=True) for page in PAGES
         for line in command_lines(page.read_text(encoding="utf-8"))]
RETRAIN = [argv for argv in ARGVS if argv[0].endswith("retrain")]
MAKE = [argv for argv in ARGVS if argv[0] == "make"]
DASK = [argv for argv in ARGVS if argv[0] == "dask"]
PIP = [argv for argv in ARGVS if argv[:2] == ["pip", "install"]]
SHELL = [argv for argv in ARGVS if argv[0] in ("mkdir", "cp")]   # making a folder of one's own
CURL = [argv for argv in ARGVS if argv[0] == "curl"]      # against the `retrain serve` line


def test_the_readme_has_command_blocks_and_every_line_is_understood():
    assert len(RETRAIN) >= 5 and len(MAKE) >= 3
    assert len(RETRAIN) + len(MAKE) + len(DASK) + len(PIP) + len(SHELL) + len(CURL) \
        == len(ARGVS), ARGVS


def _made_by(argv):
    """The paths a README line creates (a run folder, an export, a folder of one's own)."""
    words = [w for w in argv if w != "&&"]
    if words[0] == "make" and words[1:2] == ["retrain"]:
        given = dict(w.split("=", 1) for w in words[2:] if "=" in w)
        data = given.get("DATA", "data/fashion-mnist-sample")
        return [given.get("RUN") or f"runs/{Path(data).name}"]
    if words[0].endswith("retrain") and words[1] in ("fit", "export"):
        if "--out" in words:
            return [words[words.index("--out") + 1]]
        model = Path(words[2])      # a run's model is exported beside its run folder
        beside = model.parent.parent / f"{model.parent.name}.onnx"
        return ([str(beside if model.name == "model.h5" else model.with_suffix(".onnx"))]
                if words[1] == "export" else [])
    if words[0] == "mkdir":
        return [w for w in words[1:] if not w.startswith("-")][:1] + (
            _made_by(words[words.index("cp"):]) if "cp" in words else [])
    if words[0] == "cp":
        return [str(Path(words[-1]) / Path(w).name) for w in words[1:-1] if not w.startswith("-")]
    return []


def test_the_readme_runs_top_to_bottom_on_a_fresh_clone():
    """Each file a README line names exists in the clone (or after `make pretrained`), or an
    earlier line made it: no `flowers/` that nobody has."""
    made = [Path("pretrained")]      # make retrain and make test run make pretrained first
    for argv in README_ARGVS:
        if argv[0].endswith("retrain"):
            args = vars(build_parser().parse_args(argv[1:]))
        else:
            args = {k.lower(): v for k, v in (w.split("=", 1) for w in argv if "=" in w)}
        if argv[0].endswith("retrain") or argv[:2] == ["make", "retrain"]:
            for word in [args.get("model"), args.get("data"), *args.get("paths", [])]:
                path = Path(word or ".")
                assert (ROOT / path).exists() or any(
                    path == m or m in path.parents for m in made), (argv, word)
        made += [Path(p) for p in _made_by(argv)]


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


@pytest.mark.parametrize("argv", CURL, ids=" ".join)
def test_each_curl_line_runs_against_the_readme_s_retrain_serve(argv, tmp_path):
    """The README's `retrain serve` line, run (on a free port instead of its 8000, which may
    be taken), answers the curl line as pasted, but for that port: JSON, a cat for Chelsea."""
    import importlib.util
    import shutil
    if shutil.which("curl") is None or importlib.util.find_spec("fastapi") is None:
        pytest.skip("needs curl and the serve extra (make install)")
    if not (pretrained_dir() / "efficientnet_lite0.h5").exists():
        pytest.skip("pretrained weights not converted (make pretrained)")
    (serve,) = [a for a in README_ARGVS if a[0].endswith("retrain") and a[1] == "serve"]
    server = subprocess.Popen([sys.executable, "-m", "retrain", *serve[1:], "--port", "0", "-q"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().split("http://127.0.0.1:")[1].split()[0]
        pasted = [w.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for w in argv]
        done = subprocess.run(pasted, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    if "chelsea.png" in " ".join(argv):
        assert "cat" in answer["results"][0]["top"][0]["label"], answer


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
        pytest.skip("the dask command is not installed (pip install -e '.[dask]')")
    done = subprocess.run([str(dask), argv[1], "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for word in argv[2:]:
        if word.startswith("--"):
            assert f"{word.split('=')[0]} " in done.stdout, word


def _project(folder):
    import tomllib
    toml = Path(folder) / "pyproject.toml"
    return tomllib.loads(toml.read_text(encoding="utf-8"))["project"] if toml.is_file() else {}


def _help_texts():
    """Every help text of the command line, and the hints that name a pip line."""
    from retrain.cli_options import DASK_INSTALL
    from retrain.onnx_export import _INSTALL as ONNX_INSTALL
    parser = build_parser()
    texts = [parser.format_help(), DASK_INSTALL, ONNX_INSTALL]
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                texts.append(action.choices[sub].format_help())
    return texts


def pip_lines(text):
    """The `pip install ...` commands in a text, whatever line wrapping split them."""
    text = " ".join(text.split())
    return [["pip", "install", *shlex.split(m)]
            for m in re.findall(r"pip install ((?:-e )?(?:'[^']*'|[^\s'),;]+))", text)]


HELP_PIP = [argv for text in _help_texts() for argv in pip_lines(text)]


def test_the_help_texts_name_their_pip_lines():
    assert len(HELP_PIP) >= 3, HELP_PIP     # --dask (fit, classify, evaluate), export
    assert pip_lines("needs pip install -e\n'/x y[dask]'), or") == [
        ["pip", "install", "-e", "/x y[dask]"]]


@pytest.mark.parametrize("argv", PIP + HELP_PIP, ids=" ".join)
def test_each_pip_line_installs_this_project_and_its_extras(argv):
    """`pip install 'retrain[dask]'` would install PyPI's unrelated retrain: each line names
    this project's distribution, or a folder (the clone, `.`) whose pyproject.toml is it."""
    ours = _project(ROOT)
    words = [w for w in argv[2:] if w != "-e"]
    assert words, argv
    for word in words:
        name, _, extras = word.partition("[")
        if argv[2] == "-e" or name == "." or "/" in name:
            folder = ROOT / name if not Path(name).is_absolute() else Path(name)
            assert _project(folder).get("name") == ours["name"], word
        else:
            assert name == ours["name"] == DISTRIBUTION, word
        assert set(extras.rstrip("]").split(",")) <= set(ours["optional-dependencies"]), word
