"""The one atomic file writer (model files here, every run output through retrain.files).

A crash, a kill or a full disk leaves either the previous complete file or the new complete
file, never half of one: the data goes to a temporary file beside the target (a rename is
atomic only within one file system), is fsynced, renamed over the target, and the folder
is fsynced so that the rename itself survives a power cut. On any error the temporary file
is removed and the target is untouched. Temporary names are `.NAME.<12 hex>.tmp`; one left
by a killed process is removed by `remove_stale_temps`.
"""
import contextlib
import os
import stat
import time
import uuid
from pathlib import Path
from typing import IO, ContextManager, Union

from .errors import ConfigError

PathLike = Union[str, os.PathLike]      # what every path argument of the engine takes

__all__ = ["atomic_write", "check_replaceable", "fsync_directory", "remove_stale_temps"]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w",
                 encoding: str = "utf-8") -> ContextManager[IO]:
    """Open a temporary file beside `path` for writing ("w" text or "wb" bytes); on success
    it replaces `path`. Permissions follow the umask, as for a plain `open(path, "w")`."""
    if mode not in ("w", "wb"):
        raise ConfigError(f"atomic_write supports mode 'w' or 'wb'. Received: mode={mode!r}")
    path = Path(path)
    check_replaceable(path)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, mode, encoding=None if mode == "wb" else encoding, newline=None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(path.parent)


def check_replaceable(path: PathLike) -> None:
    """Refuse a target that is there and is not a regular file: the rename would replace a
    device node (/dev/null itself, as root), a FIFO or a socket with a regular file."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:   # ELOOP, EACCES...: the open of the temporary file tells
        if exc.errno is None:
            raise
        return
    if stat.S_ISDIR(mode):
        raise ConfigError(f"Cannot write {path}: it is a folder.",
                          hint="Give the path of a file to write.")
    if not stat.S_ISREG(mode):
        raise ConfigError(f"Cannot write {path}: it is not a regular file (a device, FIFO "
                          "or socket), and writing would replace it.",
                          hint="Give the path of a new file, or of a regular file to replace.")


def fsync_directory(directory: PathLike) -> None:
    """Make a rename in `directory` durable (POSIX; Windows cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(directory: PathLike, older_than: float = 0.0) -> None:
    """Remove temporary files atomic_write left in `directory` (a killed process's), those
    last modified more than `older_than` seconds ago: pass 0 only where no other process
    can be writing (a locked run folder)."""
    now = time.time()
    for temp in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):   # another process removed it first
            if now - temp.stat().st_mtime >= older_than:
                temp.unlink()
