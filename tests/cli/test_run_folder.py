"""A run folder always holds one run's complete outputs (issue 9): a second fit into a
folder in use is refused, a failed or killed run leaves the old set as it was (a full disk
during export included), and leftovers of killed runs are removed."""
import sys
from pathlib import Path

import pytest

from retrain.cli import main
from retrain.run_folder import run_folder

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
    staging = tmp_path / ".run.staging-killed"
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
