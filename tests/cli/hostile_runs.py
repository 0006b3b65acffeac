"""A corpus of hostile run folders, caches, export targets, option values and DATA trees
(issue 21), built fresh from the issue's descriptions and run through the CLI as a user
would: each case a function (folder, data) -> Case, whose `check(result)` lists what fell
short (an empty list: the promise held). `data` is three classes of 10 small PNGs.

Items run in process elsewhere, because they need a moment inside a run (a file changed
between hashing and decoding, the cache deleted mid-run, a scheduler killed mid-run, a
port that is no scheduler): tests/pipeline/test_cache_integrity.py and test_cluster.py."""
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

import hostile_models

OUTPUTS = ["history.json", "labels.txt", "metrics.json", "model.h5", "report.html",
           "skipped.tsv", "split.json"]


@dataclass
class Case:
    argv: list
    check: object                    # result -> [what fell short]
    cwd: str = None
    cleanup: list = field(default_factory=list)   # callables run after the harness


def fit(data, out, cache, *extra):
    return ["fit", str(data), "--out", str(out), "--cache", str(cache), "--epochs", "2",
            "-q", *extra]


def refused(words, *also):
    """A refusal: exit 2, exactly `error:` + `hint:`, naming `words`, before any output;
    `also` are further checks (callables -> falls-short list)."""
    def check(result):
        lines = result["stderr"].strip().splitlines()
        short = []
        if result["status"] != 2:
            short.append(f"exit status {result['status']}, not 2")
        if len(lines) != 2 or not lines[0].startswith("error: ") \
                or not lines[1].startswith("hint: "):
            short.append(f"not one error line and a hint: {lines[:4]}")
        elif words not in lines[0]:
            short.append(f"the error does not say {words!r}: {lines[0]}")
        if "unexpected" in result["stderr"]:
            short.append("reported as a bug")
        for more in also:
            short += more(result)
        return short
    return check


def works(*also):
    def check(result):
        short = [] if result["status"] == 0 else [
            f"exit status {result['status']}: {result['stderr'].strip()[-300:]}"]
        for more in also:
            short += more(result)
        return short
    return check


def warned(words):
    """The run's stderr says `words` once (a warning)."""
    def check(result):
        count = result["stderr"].count(words)
        return [] if count == 1 else [f"{words!r} said {count} times, not once"]
    return check


def unchanged(path, content):
    return lambda result=None: [] if Path(path).read_bytes() == content else [f"{path} changed"]


def absent(path):
    return lambda result=None: [] if not os.path.lexists(path) else [f"{path} exists"]


def present(path):
    return lambda result=None: [] if os.path.lexists(path) else [f"{path} is gone"]


def skipped_lists(run, relative, words):
    def check(result=None):
        lines = (Path(run) / "skipped.tsv").read_text().splitlines()
        return [] if any(l.startswith(relative + "\t") and words in l for l in lines) else [
            f"skipped.tsv does not list {relative} ({words}): {lines}"]
    return check


# -- 1-4: the user's files ------------------------------------------------------------------
def hidden_files_in_out(folder, data):
    project = folder / "proj"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    (project / ".env").write_bytes(b"SECRET=s\n")
    return Case(fit(data, project, folder / "cache"), refused(
        "holds files that retrain did not write (.env, .git)",
        unchanged(project / ".env", b"SECRET=s\n"),
        unchanged(project / ".git" / "HEAD", b"ref: refs/heads/main\n")))


def empty_out_in_home(folder, data):
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_bytes(b"alias ll='ls -l'\n")
    return Case(["fit", str(data), "--out", "", "-q"], refused(
        "--out must be a path; got an empty one", unchanged(home / ".bashrc",
                                                             b"alias ll='ls -l'\n"),
        present(home / ".ssh"), absent(home / "model.h5")), cwd=str(home))


def _special_export(folder, name, make):
    target = folder / name
    make(target)
    mode = target.lstat().st_mode
    return Case(["export", str(folder / "trained" / "model.h5"), "--format", "onnx", "--out",
                 str(target)],
                refused("it is not a regular file",
                        lambda result=None: [] if target.lstat().st_mode == mode else [
                            f"{target} was replaced"]))


def export_to_a_fifo(folder, data):
    return _special_export(folder, "fifo.onnx", os.mkfifo)


def export_to_a_device_node(folder, data):
    """A null device of our own (mknod needs root: otherwise a FIFO stands in)."""
    def make(path):
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            os.mkfifo(path)
    return _special_export(folder, "null", make)


def glob_characters_in_a_run_name(folder, data):
    """g/run[lr] beside g/runl, whose run is writing its staging folder."""
    from retrain.run_folder import _staging_prefix

    other = folder / "g" / f"{_staging_prefix('runl')}working"
    other.mkdir(parents=True)
    (other / "metrics.json").write_bytes(b"{}")
    return Case(fit(data, folder / "g" / "run[lr]", folder / "cache"),
                works(present(other / "metrics.json")))


def cache_equal_to_out(folder, data):
    run = folder / "same"
    return Case(fit(data, run, run), refused("is inside --out", absent(run)))


def cache_inside_out(folder, data):
    run = folder / "holder"
    return Case(fit(data, run, run / "cache"), refused("is inside --out", absent(run)))


# -- 6-7: the cache's shards ----------------------------------------------------------------
def _namespace_folder(cache):
    (folder,) = [p for p in Path(cache).iterdir() if p.is_dir()]
    return folder


def _shard(folder):
    return sorted(_namespace_folder(folder / "warm-cache").glob("shard-*.h5"))[0]


def _damaged_shard(name, damage):
    def case(folder, data):
        cache = folder / f"cache-{name}"
        shutil.copytree(folder / "warm-cache", cache)
        shard = sorted(_namespace_folder(cache).glob("shard-*.h5"))[0]
        damage(shard)
        return Case(fit(data, folder / f"run-{name}", cache),
                    works(warned("set aside the damaged or foreign cache file"),
                          present(f"{shard}.set-aside"), absent(shard)))
    case.__name__ = name
    return case


def _overwrite(dataset, data, at=0.0):
    def damage(shard):
        with h5py.File(shard, "r") as f:
            offset, size = f[dataset].id.get_offset(), f[dataset].nbytes
        with open(shard, "r+b") as handle:
            handle.seek(offset + int(size * at))
            handle.write(data[:size])
    return damage


def _foreign(shard):
    """A shard of another model's namespace, put in this one's folder."""
    other = sorted(Path(shard).parents[1].parent.glob("other-cache/*/shard-*.h5"))[0]
    shard.unlink()
    shutil.copy(other, shard)


def _seven_wide(shard):
    from retrain.feature_cache import _shard_bytes

    with h5py.File(shard, "r") as f:
        key, namespace = f["keys"][0].decode(), f.attrs["namespace"]
    forged = shard.with_name("shard-forged.h5")
    forged.write_bytes(bytes(_shard_bytes([key], np.zeros((1, 7), np.float32), namespace)))
    shard.rename(shard.with_name("shard-zz-kept.h5"))
    forged.rename(shard)                                  # the forged one takes its name


zeros_in_features = _damaged_shard("zeros_in_features", _overwrite("features", bytes(65536)))
random_bytes_in_features = _damaged_shard(
    "random_bytes_in_features",
    _overwrite("features", np.random.default_rng(0).bytes(4096), at=0.25))
bad_byte_in_keys = _damaged_shard("bad_byte_in_keys", _overwrite("keys", b"\xff", at=0.5))
foreign_shard = _damaged_shard("foreign_shard", _foreign)
seven_wide_shard = _damaged_shard("seven_wide_shard", _seven_wide)


def fifo_named_like_a_shard(folder, data):
    cache = folder / "cache-fifo"
    shutil.copytree(folder / "warm-cache", cache)
    fifo = _namespace_folder(cache) / "shard-fifo.h5"
    os.mkfifo(fifo)
    return Case(fit(data, folder / "run-fifo", cache),
                works(warned("set aside the damaged or foreign cache file"),
                      lambda result: [] if "shard-fifo.h5.set-aside (not a regular file)" in
                      result["stderr"] else ["the warning does not name shard-fifo.h5"],
                      present(f"{fifo}.set-aside")))


# -- 9-15: odd files and folders, option values ---------------------------------------------
def transparent_4700_png_in_classify(folder, data):
    """Classify a 4700x4700 transparent PNG: 1.3 GB before; the memory bound is checked by
    the test (peak RSS)."""
    rgba = np.zeros((4700, 4700, 4), np.uint8)
    rgba[::97, ::89] = (200, 10, 10, 128)
    Image.fromarray(rgba).save(folder / "clear.png")
    return Case(["classify", str(folder / "trained" / "model.h5"), str(folder / "clear.png")],
                works())


def _copy_data(folder, data, name):
    copy = folder / name
    shutil.copytree(data, copy, symlinks=True)
    return copy


def symlink_loop_in_data(folder, data):
    tree = _copy_data(folder, data, "loop-data")
    os.symlink("loop.png", tree / "bag" / "loop.png")
    run = folder / "run-loop"
    return Case(fit(tree, run, folder / "cache"),
                works(skipped_lists(run, "bag/loop.png", "Too many levels of symbolic links")))


def class_folder_linked_into_another(folder, data):
    tree = _copy_data(folder, data, "linked-data")
    os.symlink("../coat", tree / "bag" / "more")
    run = folder / "run-linked"

    def not_read_as_bag(result=None):
        split = (run / "split.json").read_text()
        return ["coat's images were read as bag"] if "bag/more/" in split else []
    return Case(fit(tree, run, folder / "cache"),
                works(warned("did not follow bag/more"), not_read_as_bag))


def file_in_two_classes(folder, data):
    tree = _copy_data(folder, data, "twice-data")
    os.symlink("../coat/coat1.png", tree / "dress" / "c1.png")
    run = folder / "run-twice"
    return Case(fit(tree, run, folder / "cache"),
                works(skipped_lists(run, "dress/c1.png", "its label is ambiguous"),
                      skipped_lists(run, "coat/coat1.png", "its label is ambiguous")))


def nested_1100_deep(folder, data):
    tree = _copy_data(folder, data, "deep-data")
    deep = tree / "bag"
    for _ in range(1100):
        deep = deep / "d"
        deep.mkdir()
    shutil.copy(tree / "bag" / "bag0.png", deep / "x.png")

    def take_apart():            # shutil.rmtree would recurse once per level
        level = tree / "bag"
        for number in range(1100):
            os.rename(level / "d", folder / f"level{number}")
            level = folder / f"level{number}"
    return Case(fit(tree, folder / "run-deep", folder / "cache"), works(),
                cleanup=[take_apart])


def seed_minus_one(folder, data):
    return Case(fit(data, folder / "run-seed", folder / "cache", "--seed", "-1"),
                refused("--seed must be a whole number from 0"))


def a_billion_hidden_units(folder, data):
    return Case(fit(data, folder / "run-units", folder / "cache", "--hidden-units",
                    "1000000000"), refused("--hidden-units must be a whole number from 0"))


def out_name_of_250_bytes(folder, data):
    run = folder / ("r" * 125 + "é" * 62 + "x")
    return Case(fit(data, run, folder / "cache"),
                works(lambda result=None: [] if sorted(p.name for p in run.iterdir()
                                           if p.name != ".retrain.lock") == OUTPUTS
                      else [f"{run.name[:20]}... holds {sorted(os.listdir(run))}"]))


def mount_point_run_folder(folder, data):
    """An empty tmpfs (where this process may mount one) or, elsewhere, an empty folder
    (which must simply work)."""
    import subprocess

    volume = folder / "volume"
    volume.mkdir()
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "none", str(volume)],
        capture_output=True).returncode == 0
    if not mounted:
        return Case(fit(data, volume, folder / "cache"), works())
    return Case(fit(data, volume, folder / "cache"),
                refused("is a mount point", lambda result=None: [] if os.listdir(volume) == [] else [
                    f"{volume} holds {os.listdir(volume)}"]),
                cleanup=[lambda: subprocess.run(["umount", str(volume)], check=True)])


# -- 18: model files ------------------------------------------------------------------------
def layer_of_another_module(folder, data):
    path = hostile_models.foreign_module_layer(folder)
    return Case(["info", str(path)], refused("of module 'os', which retrain cannot load"))


def initializer_of_another_module(folder, data):
    path = hostile_models.foreign_module_initializer(folder)
    return Case(["info", str(path)], refused("of module 'os', which retrain cannot load"))


CASES = [hidden_files_in_out, empty_out_in_home, export_to_a_fifo, export_to_a_device_node,
         glob_characters_in_a_run_name, cache_equal_to_out, cache_inside_out,
         zeros_in_features, random_bytes_in_features, bad_byte_in_keys, foreign_shard,
         seven_wide_shard, fifo_named_like_a_shard, transparent_4700_png_in_classify,
         symlink_loop_in_data, class_folder_linked_into_another, file_in_two_classes,
         nested_1100_deep, seed_minus_one, a_billion_hidden_units, out_name_of_250_bytes,
         mount_point_run_folder, layer_of_another_module, initializer_of_another_module]
