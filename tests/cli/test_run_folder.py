"""A run folder always holds one run's complete outputs (issue 9): a second fit into a
folder in use is refused, a failed or killed run leaves the old set as it was (a full disk
during export included), and leftovers of killed runs are removed. And never a user's file
(issue 21): a folder with anything else in it, dotfiles included, a mount point and a cache
inside RUN are refused before any work; RUN's name is never a glob pattern."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrain.cli import main
from retrain.fit import HeadOptions
from retrain.pipeline import RunOptions
from retrain.pipeline import run as pipeline_run
from retrain.run_folder import _staging_prefix, run_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from full_disk import fill_disk_at_write  # noqa: E402


def fit(data, run, cache, *extra):
    return main(["fit", str(data), "--out", str(run), "--cache", str(cache), "--epochs", "3",
                 "-q", *extra])


def snapshot(folder):
    """The run's files (not the empty lock file .retrain.lock)."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and p.name != ".retrain.lock"}


def error_lines(err):
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    return lines[0]


def test_a_second_fit_into_a_folder_in_use_is_refused(trained, small_data, tmp_path, capsys):
    before = snapshot(trained)
    with pytest.raises(InterruptedError):
        with run_folder(trained):                  # another fit holds the folder...
            assert fit(small_data, trained, tmp_path / "cache", "--seed", "7") == 2
            raise InterruptedError                 # ...and is stopped before it commits
    assert "is in use by another `retrain fit`" in error_lines(capsys.readouterr().err)
    assert snapshot(trained) == before


def test_a_full_disk_during_export_keeps_the_old_run_whole(trained, small_data, tmp_path,
                                                           monkeypatch, capsys):
    """The cache is warm, so the only binary file the second fit writes is model.h5."""
    before = snapshot(trained)
    capsys.readouterr()
    fill_disk_at_write(monkeypatch, after_bytes=1000, binary_only=True)
    assert fit(small_data, trained, tmp_path / "cache", "--seed", "7") == 2
    err = capsys.readouterr().err
    line = error_lines(err)
    assert "No space left on device" in line and "model.h5" in line
    assert f"note: this run failed; the earlier run's files in {trained} are untouched" in err
    assert snapshot(trained) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "run"]  # no staging
    monkeypatch.undo()
    assert main(["info", str(trained / "model.h5")]) == 0


def test_a_failed_first_run_leaves_no_folder(small_data, tmp_path, stand_in, monkeypatch,
                                             capsys):
    fill_disk_at_write(monkeypatch, after_bytes=10)
    assert fit(small_data, tmp_path / "new", tmp_path / "cache") == 2
    assert "No space left on device" in error_lines(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]


def test_an_unwritable_out_is_reported_before_any_image_is_read(small_data, tmp_path,
                                                                 stand_in, capsys):
    (tmp_path / "file").write_text("x")
    assert fit(small_data, tmp_path / "file" / "run", tmp_path / "cache") == 2
    assert "Cannot write the run folder" in error_lines(capsys.readouterr().err)
    assert stand_in["images"] == 0


def test_a_folder_with_other_files_is_refused(small_data, tmp_path, stand_in, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert fit(small_data, tmp_path / "mine", tmp_path / "cache") == 2
    assert "holds files that retrain did not write (notes.txt)" in error_lines(
        capsys.readouterr().err)
    assert stand_in["images"] == 0 and snapshot(tmp_path / "mine") == {"notes.txt": b"keep me"}


def test_leftovers_of_killed_runs_are_removed_and_the_new_set_replaces_the_old(
        trained, small_data, tmp_path, capsys):
    (trained / ".model.h5.0123456789ab.tmp").write_bytes(b"half a model")
    staging = tmp_path / f"{_staging_prefix('run')}killed"
    staging.mkdir()
    (staging / "metrics.json").write_text("{}")
    old = snapshot(trained)
    assert fit(small_data, trained, tmp_path / "cache", "--seed", "7") == 0
    new = snapshot(trained)
    assert sorted(new) == sorted(n for n in old if not n.endswith(".tmp"))
    assert new["model.h5"] != old["model.h5"] and new["split.json"] == old["split.json"]
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "run"]


def test_out_may_be_the_current_folder_or_a_symlink(small_data, tmp_path, stand_in,
                                                    monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert fit(small_data, ".", tmp_path / "cache") == 0
    (tmp_path / "link").symlink_to(here)
    assert fit(small_data, tmp_path / "link", tmp_path / "cache", "--seed", "7") == 0
    assert (tmp_path / "link").is_symlink()
    assert sorted(snapshot(here)) == ["history.json", "labels.txt", "metrics.json", "model.h5",
                                      "report.html", "skipped.tsv", "split.json"]


# -- issue 21: the user's files are never thrown away with an old run ----------------------
def test_hidden_files_in_out_are_kept_by_refusing_the_folder(small_data, tmp_path, stand_in,
                                                            capsys):
    """`git init proj; fit --out proj` lost .git and .env: dot-entries count as the user's."""
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / ".env").write_text("SECRET=s\n")
    assert fit(small_data, project, tmp_path / "cache") == 2
    assert "holds files that retrain did not write (.env, .git)" in error_lines(
        capsys.readouterr().err)
    assert stand_in["images"] == 0
    assert (project / ".env").read_text() == "SECRET=s\n"
    assert (project / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"


def test_a_file_put_into_run_while_it_trains_is_kept(small_data, tmp_path, stand_in):
    """The folder was checked at the start; what appears later is the user's too, and moves
    into the new set instead of going with the old one."""
    run = tmp_path / "run"

    def on_stage(name):
        if name == "fit":
            (run / "notes.txt").write_text("written during the run")

    options = RunOptions(cache_dir=tmp_path / "cache", progress=False,
                         head=HeadOptions(epochs=2))
    pipeline_run(small_data, run, options, on_stage=on_stage)
    assert (run / "notes.txt").read_text() == "written during the run"
    assert (run / "model.h5").exists()


def test_glob_characters_in_a_run_name_touch_no_other_run(small_data, tmp_path, stand_in):
    """`--out 'g/run[lr]'` once removed `g/.runl.staging-*`, the folder a run into g/runl was
    writing."""
    other = tmp_path / "g" / f"{_staging_prefix('runl')}working"
    other.mkdir(parents=True)
    (other / "metrics.json").write_text("{}")
    for name in ("run[lr]", "run*", "run?"):
        assert fit(small_data, tmp_path / "g" / name, tmp_path / "cache") == 0
    assert (other / "metrics.json").read_text() == "{}"


def test_a_cache_inside_or_equal_to_out_is_refused_before_any_work(small_data, tmp_path,
                                                                   stand_in, capsys):
    """Each commit swapped the cache away with the old run: 0 hits, every run, unsaid."""
    run = tmp_path / "run"
    for cache in (run, run / "cache", run / "." / "deeper" / "cache"):
        assert fit(small_data, run, cache) == 2
        assert f"--cache {cache} is inside --out {run}" in error_lines(capsys.readouterr().err)
    assert stand_in["images"] == 0 and not run.exists()


@pytest.fixture
def mount_point(tmp_path, monkeypatch):
    """An empty tmpfs mount where this process may mount one (root), else a folder that
    os.path.ismount says is one."""
    folder = tmp_path / "volume"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "none", str(folder)],
                             capture_output=True).returncode == 0 if shutil.which("mount") \
        else False
    if not mounted:
        real_ismount = os.path.ismount
        monkeypatch.setattr(os.path, "ismount",
                            lambda p: os.path.realpath(p) == str(folder) or real_ismount(p))
    yield folder
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_mount_point_run_folder_is_refused_before_any_work(small_data, tmp_path,
                                                             mount_point, stand_in, capsys):
    """A tmpfs or a Docker volume cannot be swapped: every stage ran, then "Device or
    resource busy" and nothing written."""
    assert fit(small_data, mount_point, tmp_path / "cache") == 2
    line = error_lines(capsys.readouterr().err)
    assert f"--out {mount_point} is a mount point" in line
    assert stand_in["images"] == 0 and list(mount_point.iterdir()) == []


def test_a_run_name_of_250_bytes_works(small_data, tmp_path, stand_in):
    """The staging folder's name adds bytes to RUN's: 250 + 18 passed the 255 allowed."""
    run = tmp_path / ("r" * 125 + "é" * 62 + "x")            # 250 bytes in UTF-8
    assert len(os.fsencode(run.name)) == 250
    assert fit(small_data, run, tmp_path / "cache") == 0
    assert fit(small_data, run, tmp_path / "cache", "--seed", "3") == 0
    assert sorted(snapshot(run)) == ["history.json", "labels.txt", "metrics.json", "model.h5",
                                     "report.html", "skipped.tsv", "split.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cache", "data", run.name])
