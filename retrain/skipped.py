"""The files that failed to decode, set aside after extraction: dropped from the dataset and
listed with their reasons in RUN/skipped.tsv (beside those ingest refused). When nothing
usable is left, the list is kept beside RUN, since the staging folder goes."""
import os
import tempfile
from pathlib import Path

from .errors import DataError
from .files import atomic_write_text
from .ingest import exclude

__all__ = ["set_aside_failures"]


def set_aside_failures(dataset, found, run_dir):
    """Drop the files that could not be read or decoded; write RUN/skipped.tsv (all skipped
    files: those ingest refused and these). Returns (the smaller dataset, its features,
    their content keys)."""
    before = [relative for relative, _ in dataset.records]
    relative_of = {str(dataset.path(i)): relative for i, relative in enumerate(before)}
    failed = {relative_of[path]: reason for path, reason in found.skipped}
    try:
        dataset = exclude(dataset, failed)
    except DataError as error:       # the staging folder goes: keep the list beside RUN
        kept = _keep_skipped(dataset.skipped + list(failed.items()), run_dir.parent)
        raise DataError(f"{error} All skipped files are listed in {kept}.",
                        hint=error.hint) from error
    row_of = {before[i]: row for row, i in enumerate(found.kept)}
    rows = [row_of[relative] for relative, _ in dataset.records]
    # Without failures, no copy: at a fine-tuning cut this array can hold hundreds of MB.
    features = found.features if rows == list(range(len(found.kept))) else found.features[rows]
    keys = [found.keys[row] for row in rows]
    lines = ["path\treason\n"] + [f"{_tsv(path)}\t{_tsv(reason)}\n"
                                  for path, reason in dataset.skipped]
    atomic_write_text(run_dir / "skipped.tsv", "".join(lines))
    return dataset, features, keys


def _keep_skipped(skipped, folder):
    """A failed run's skipped.tsv, written atomically into a new file of its own in `folder`
    (never a name that exists: no user's file is replaced); its path."""
    handle, path = tempfile.mkstemp(prefix="retrain-skipped-", suffix=".tsv", dir=folder)
    os.close(handle)
    atomic_write_text(path, "".join(["path\treason\n"] + [f"{_tsv(p)}\t{_tsv(r)}\n"
                                                           for p, r in skipped]))
    return Path(path)


def _tsv(text):
    """A TSV field that names the file exactly: backslash, tab, newline and CR escaped as
    \\\\, \\t, \\n and \\r (the README shows how to read them back)."""
    return str(text).translate({ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n",
                                ord("\r"): "\\r"})
