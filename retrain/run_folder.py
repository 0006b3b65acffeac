"""A run folder (`retrain fit --out RUN`) always holds the outputs of exactly one run.

* One run at a time: RUN/.retrain.lock is locked (flock) for the whole run, so a second
  `fit` into a folder in use is refused at once instead of mixing its files with the first's.
* Outputs are staged: the run writes into a new sibling folder `.RUN.staging-*`, and only a
  complete set replaces RUN, in one step (Linux renameat2 RENAME_EXCHANGE swaps the two
  folders). A killed or failed run leaves RUN as it was; its staging folder is removed by
  the next run. Where the swap is not available (other systems, some file systems), the
  files are renamed one by one, model.h5 last.
* RUN holds nothing else: a folder with any other entry (a dotfile or a .git folder too)
  is refused rather than swapped away, and so is a mount point (it cannot be swapped) and
  a --cache inside RUN (the swap would throw it away at every commit). A file that appears
  in RUN while the run works is moved into the new set, not thrown away with the old one.
* Staging names are `.<RUN's name, cut to 64 bytes>.staging-<hash of the name>-*`: never
  longer than the file system allows, and never a pattern (a RUN named `run[lr]` matches
  no other run's staging folders).
"""
import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import re
import stat
import tempfile
from pathlib import Path

from .engine import fsync_directory, remove_stale_temps
from .errors import ConfigError

__all__ = ["RUN_OUTPUTS", "check_cache_outside", "is_run_folder", "run_folder"]

# What `fit` writes into RUN, in the order the fallback renames them (model.h5 last).
RUN_OUTPUTS = ("split.json", "skipped.tsv", "history.json", "metrics.json", "report.html",
               "labels.txt", "lr_find.html", "model.h5")
_LOCK = ".retrain.lock"
_HINT = "Give --out a new folder, or one that an earlier `retrain fit` wrote."
# What a killed run may leave in RUN: atomic_write's `.NAME.<12 hex>.tmp` of an output.
_TEMP = re.compile(r"\.(%s)\.[0-9a-f]{12}\.tmp" % "|".join(map(re.escape, RUN_OUTPUTS)))


@contextlib.contextmanager
def run_folder(out):
    """Yield the staging folder for one run's outputs; when the block ends without an
    error, its contents become RUN's, as a whole. RUN is checked (writable, not in use)
    before the block runs, so a problem shows before any image is read."""
    # The real folder: staging goes beside it, so "." and a symlink need their true name.
    run_dir = Path(os.path.realpath(out))
    created = not run_dir.exists()
    try:
        with _writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            foreign = _foreign(run_dir)
        if foreign:
            raise ConfigError(f"--out {run_dir} holds files that retrain did not write "
                              f"({', '.join(foreign[:5])}); a run folder holds one run's "
                              "outputs only.", hint=_HINT)
        if os.path.ismount(run_dir):
            raise ConfigError(f"--out {run_dir} is a mount point; a run's outputs replace "
                              "the folder as a whole, which a mount point cannot be.",
                              hint=f"Give --out a folder inside it, e.g. --out {run_dir / 'run'}.")
        with _locked(run_dir):
            with _writing(run_dir):
                _remove_leftovers(run_dir)
                staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(run_dir.name),
                                                dir=run_dir.parent))
                os.chmod(staging, stat.S_IMODE(run_dir.stat().st_mode))  # not mkdtemp's 0700
            try:
                yield staging
                with _writing(run_dir):
                    _commit(staging, run_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if created and run_dir.is_dir() and all(e.name == _LOCK for e in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)     # a failed first run: no trace


def is_run_folder(folder):
    """Whether `folder` holds a `retrain fit` run (its model.h5 and metrics.json): a file
    written into it (an export) would make the next `fit --out` there refuse the folder."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in ("model.h5", "metrics.json"))


def check_cache_outside(cache_dir, out):
    """Refuse a feature cache equal to RUN or inside it: each commit swaps RUN's folder
    away, so the cache would be thrown away with it (0 hits, every run) and its folder
    would make RUN hold files retrain did not write."""
    cache, run_dir = Path(os.path.realpath(cache_dir)), Path(os.path.realpath(out))
    if cache == run_dir or run_dir in cache.parents:
        raise ConfigError(f"--cache {cache_dir} is inside --out {out}; each run replaces "
                          "its run folder as a whole, and the cache would go with it.",
                          hint="Give --cache a folder outside the run folder (or leave it "
                               "out: the default cache is shared by all runs).")


def _foreign(run_dir):
    """RUN's entries that no run of retrain wrote, hidden ones included (sorted names)."""
    return sorted(e.name for e in run_dir.iterdir()
                  if e.name not in RUN_OUTPUTS and e.name != _LOCK and not _TEMP.fullmatch(e.name))


def _staging_prefix(name):
    """`.<name>.staging-<hash>-`: at most 64 bytes of the name (a 250-byte RUN name plus the
    suffix would pass the file system's 255), and the hash of the whole name, so that a
    prefix belongs to this RUN alone."""
    raw = os.fsencode(name)
    short = name if len(raw) <= 64 else raw[:64].decode("utf-8", "ignore")  # no half chars
    return f".{short}.staging-{hashlib.sha256(raw).hexdigest()[:12]}-"


@contextlib.contextmanager
def _writing(run_dir):
    """An OSError of the run folder's own bookkeeping as one clear error."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"Cannot write the run folder {run_dir}: {exc.strerror or exc}"
                          f"{f' ({exc.filename})' if exc.filename else ''}.",
                          hint="--out and the folder holding it must be writable, with "
                               "room for the model; RUN is left as it was.") from None


@contextlib.contextmanager
def _locked(run_dir):
    with _writing(run_dir):
        handle = open(run_dir / _LOCK, "a")
    try:
        try:
            import fcntl
        except ImportError:          # Windows: no flock; runs are not guarded there
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"--out {run_dir} is in use by another `retrain fit`.",
                                  hint="Wait for it to finish, or give --out another "
                                       "folder.") from None
        yield
    finally:
        handle.close()


def _remove_leftovers(run_dir):
    """What killed runs left: temporary files in RUN, staging folders beside it (no other
    run can be using them: this one holds RUN's lock)."""
    remove_stale_temps(run_dir)
    prefix = _staging_prefix(run_dir.name)
    for leftover in run_dir.parent.iterdir():       # no glob: RUN's name is not a pattern
        if leftover.name.startswith(prefix):
            shutil.rmtree(leftover, ignore_errors=True)


def _commit(staging, run_dir):
    """Make the staged outputs RUN's. After the swap, `staging` holds the old run (removed
    by the caller)."""
    if not (staging / "model.h5").exists():
        raise ConfigError(f"The run wrote no model; {run_dir} is left as it was.")
    if _exchange(staging, run_dir):
        _keep_newcomers(staging, run_dir)
        return
    for path in sorted(staging.iterdir(), key=lambda p: p.name == "model.h5"):
        os.replace(path, run_dir / path.name)


def _keep_newcomers(old, run_dir):
    """Entries that appeared in RUN while the run worked (checked empty of them at the
    start) are the user's: move them into the new RUN rather than remove them with `old`."""
    for name in _foreign(old):
        if not (run_dir / name).exists():
            os.rename(old / name, run_dir / name)


def _exchange(a, b):
    """Swap folders `a` and `b` in one step; False where the system cannot."""
    if os.name != "posix":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        fsync_directory(b.parent)
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
