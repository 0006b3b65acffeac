"""A run folder (`retrain fit --out RUN`) always holds the outputs of exactly one run.

* One run at a time: RUN/.retrain.lock is locked (flock) for the whole run, so a second
  `fit` into a folder in use is refused at once instead of mixing its files with the first's.
* Outputs are staged: the run writes into a new sibling folder `.RUN.staging-*`, and only a
  complete set replaces RUN, in one step (Linux renameat2 RENAME_EXCHANGE swaps the two
  folders). A killed or failed run leaves RUN as it was; its staging folder is removed by
  the next run. Where the swap is not available (other systems, some file systems), the
  files are renamed one by one, model.h5 last.
* RUN holds nothing else: a folder with other files is refused rather than swapped away.
"""
import contextlib
import ctypes
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .engine import fsync_directory, remove_stale_temps
from .errors import ConfigError

__all__ = ["RUN_OUTPUTS", "run_folder"]

# What `fit` writes into RUN, in the order the fallback renames them (model.h5 last).
RUN_OUTPUTS = ("split.json", "skipped.tsv", "history.json", "metrics.json", "report.html",
               "labels.txt", "model.h5")
_LOCK = ".retrain.lock"
_HINT = "Give --out a new folder, or one that an earlier `retrain fit` wrote."


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
            foreign = sorted(e.name for e in run_dir.iterdir()
                             if e.name not in RUN_OUTPUTS and not e.name.startswith("."))
        if foreign:
            raise ConfigError(f"--out {run_dir} holds files that retrain did not write "
                              f"({', '.join(foreign[:5])}); a run folder holds one run's "
                              "outputs only.", hint=_HINT)
        with _locked(run_dir):
            with _writing(run_dir):
                _remove_leftovers(run_dir)
                staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.staging-",
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
    for leftover in run_dir.parent.glob(f".{run_dir.name}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _commit(staging, run_dir):
    """Make the staged outputs RUN's. After the swap, `staging` holds the old run (removed
    by the caller)."""
    if not (staging / "model.h5").exists():
        raise ConfigError(f"The run wrote no model; {run_dir} is left as it was.")
    if _exchange(staging, run_dir):
        return
    for path in sorted(staging.iterdir(), key=lambda p: p.name == "model.h5"):
        os.replace(path, run_dir / path.name)


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
