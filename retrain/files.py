"""File plumbing shared by the stages: atomic writes, content hashes, relative paths.

Every file a run produces is written through `atomic_write` (the engine's one atomic
writer, also used for model files), so a crash, Ctrl-C or a full disk leaves either the
previous complete file or the new complete file, never half of one.
"""
import hashlib
import json
import os
from pathlib import Path, PurePosixPath

from .engine import atomic_write
from .errors import DataError
from .output import json_ready

__all__ = ["default_cache_dir", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "relative_posix", "resolve_relative", "sha256_file"]

_CHUNK = 1 << 20


def atomic_write_bytes(path, data):
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path, text, encoding="utf-8"):
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)


def atomic_write_json(path, obj, indent=2):
    """JSON in UTF-8, non-ASCII kept readable ('café', not 'caf\\u00e9'), newline-terminated;
    non-finite numbers as null (NaN is not JSON) and strings as output.utf8 gives them."""
    text = json.dumps(json_ready(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def default_cache_dir():
    """$XDG_CACHE_HOME/retrain, else ~/.cache/retrain: shared by every run and dataset (the
    feature cache, unless --cache names another, and the runtimes' compiled models)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "retrain"


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in 1 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def relative_posix(path, root):
    """`path` relative to `root` with '/' separators (the same string on every OS).

    Neither path is resolved, so a file reached through a symlinked folder keeps the
    name it has under `root`. Raises DataError if `path` is not under `root`.
    """
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError as exc:
        raise DataError(f"{path} is not inside {root}") from exc


def resolve_relative(root, relative):
    """`root / relative` for a '/'-separated path read from a file (split.json...).

    Refuses absolute paths and '..' parts, so a hand-edited or hostile file can never
    point outside `root`.
    """
    parts = PurePosixPath(relative).parts
    # On Windows a '\\' inside one part would act as a separator and could hide a '..'.
    foreign_separator = os.sep != "/" and any(os.sep in part for part in parts)
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or foreign_separator:
        raise DataError(f"refusing the path {relative!r}: it must be relative to {root} "
                        "and must not contain '..'")
    return Path(root).joinpath(*parts)

