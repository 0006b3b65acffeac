"""Where retrain writes, and the numbers it is given (issue 21): `export --out` never
replaces a device node, FIFO or socket; an empty path is refused rather than read as the
current folder; --seed and --hidden-units out of range are usage errors, not crashes.
Each refusal is one `error:` line and a `hint:`, exit status 2, before any work."""
import os
import stat

import pytest

from retrain.cli import main


def refused(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "unexpected" not in lines[0]
    return lines[0]


def special_files(folder):
    """A FIFO always; a null character device where this process may make one (root)."""
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    made = {"fifo": fifo}
    try:
        os.mknod(folder / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made["device"] = folder / "null"
    except (PermissionError, AttributeError):
        pass
    return made


def test_export_never_replaces_a_device_node_or_fifo(trained, tmp_path, capsys):
    """`mknod x c 1 3; export ... --out x` turned the node into a 13.7 MB regular file."""
    pytest.importorskip("onnx")
    capsys.readouterr()
    for kind, target in special_files(tmp_path).items():
        mode = target.lstat().st_mode
        assert main(["export", str(trained / "model.h5"), "--format", "onnx",
                     "--out", str(target)]) == 2, kind
        assert f"Cannot write {target}: it is not a regular file" in refused(capsys)
        assert target.lstat().st_mode == mode, kind
    assert main(["export", str(trained / "model.h5"), "--format", "onnx",
                 "--out", str(tmp_path / "fine.onnx")]) == 0


@pytest.mark.parametrize("option", ["--out", "--cache"])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(small_data, tmp_path,
                                                                   stand_in, monkeypatch,
                                                                   capsys, option):
    """`--out ""` ran in the current folder and threw away its dotfiles (.bashrc, .ssh)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'\n")
    monkeypatch.chdir(home)
    argv = {"--out": str(tmp_path / "run"), "--cache": str(tmp_path / "cache")}
    argv[option] = ""
    assert main(["fit", str(small_data), "--out", argv["--out"], "--cache", argv["--cache"],
                 "-q"]) == 2
    assert f"retrain fit: {option} must be a path; got an empty one" in refused(capsys)
    assert stand_in["images"] == 0
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]


def test_an_empty_export_out_is_refused(trained, capsys):
    capsys.readouterr()
    assert main(["export", str(trained / "model.h5"), "--format", "onnx", "--out", ""]) == 2
    assert "--out must be a path; got an empty one" in refused(capsys)


@pytest.mark.parametrize("option, value, words", [
    ("--seed", "-1", "--seed must be a whole number from 0 to 4,294,967,295; got -1"),
    ("--seed", "4294967296", "from 0 to 4,294,967,295"),
    ("--hidden-units", "1000000000", "--hidden-units must be a whole number from 0 to 16,384"),
    ("--hidden-units", "-3", "from 0 to 16,384; got -3")])
def test_numbers_out_of_range_are_usage_errors(small_data, tmp_path, stand_in, capsys,
                                               option, value, words):
    """They were "unexpected ValueError / MemoryError ... a bug", after the extraction."""
    assert main(["fit", str(small_data), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "-q", option, value]) == 2
    assert words in refused(capsys)
    assert stand_in["images"] == 0


def test_the_library_refuses_them_too():
    from retrain.errors import ConfigError
    from retrain.fit import HeadOptions

    with pytest.raises(ConfigError, match=r"seed must be a whole number from 0 to "
                                          r"4,294,967,295\. Received: seed=-1"):
        HeadOptions(seed=-1).validate()
    with pytest.raises(ConfigError, match=r"hidden_units must be a whole number from 0 to "
                                          r"16,384\. Received: hidden_units=1000000000"):
        HeadOptions(hidden_units=10**9).validate()
