"""Compiled runtimes kept between processes, found by what their model is made of.

A fit's frozen bottom is the same network run after run: the same backbone, weights file,
cut and code. Its compiled form is kept in retrain's cache folder (files.default_cache_dir,
`compiled/`) under a key computed from those sources alone (`source_key`), so that the next
run loads it while the numpy model is still being built, without exporting it to ONNX
first: on the sample, the runtime is then loaded and checked before the features stage
starts (runtimes.start_runtime).

The key cannot see everything a model is, so nothing found here is trusted on its key: the
runtime's first use compares its outputs with numpy's (runtimes.py), and a stored model
that disagrees is deleted and compiled again from the model itself. Each file holds the
sha256 of its contents: a damaged or foreign file reads as missing.
"""
import hashlib
import os
import threading
from pathlib import Path

from .files import atomic_write_bytes, default_cache_dir, sha256_file
from .version import __version__

__all__ = ["COMPILED_CACHE_BYTES", "compiled_cache_dir", "source_key", "read_compiled",
           "write_compiled", "write_compiled_soon", "settle", "drop_compiled", "trim"]

# How much of the cache folder compiled models may take: 37 EfficientNet-Lite0s.
COMPILED_CACHE_BYTES = 512 << 20
_SUFFIX = ".compiled"
_DIGEST = hashlib.sha256().digest_size
# The modules whose code decides the network a backbone cut computes and how it is handed to
# a runtime: a change to any of them makes every stored runtime a stranger.
_CODE = ("engine", "backbones", "onnx_export.py", "onnx_wire.py", "runtime_backends.py")


def compiled_cache_dir():
    """Where compiled runtimes are kept: in retrain's cache folder (files.py), `compiled/`;
    safe to delete, like the rest of it."""
    return default_cache_dir() / "compiled"


def source_key(parts, files):
    """A hex key naming a compiled model by its sources: `parts` (strings: the backbone,
    the cut, the runtime, its version, precision and threads...) and the contents of
    `files` (the weights), with retrain's version and the code of the modules that build
    and export the network (_CODE)."""
    digest = hashlib.sha256(f"retrain {__version__}".encode())
    for part in parts:
        digest.update(f"\0{part}".encode())
    for path in files:
        digest.update(bytes.fromhex(sha256_file(path)))
    digest.update(_code_digest())
    return digest.hexdigest()


_code = []


def _code_digest():
    if not _code:
        root = Path(__file__).parent
        digest = hashlib.sha256()
        for name in _CODE:
            top = root / name
            for path in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes())
        _code.append(digest.digest())
    return _code[0]


def _path(key, folder=None):
    return (folder or compiled_cache_dir()) / f"{key}{_SUFFIX}"


def read_compiled(key):
    """The compiled model stored under `key`, or None: none there, unreadable, or not what
    was written (its sha256 differs)."""
    try:
        data = _path(key).read_bytes()
    except OSError:
        return None
    body = data[_DIGEST:]
    return body if len(data) > _DIGEST and hashlib.sha256(body).digest() == data[:_DIGEST] \
        else None


def write_compiled(key, body, folder=None):
    """Store `body` under `key` (in `folder`, compiled_cache_dir by default), atomically;
    False where the folder cannot be written (the runtime still runs: it is compiled again
    next time)."""
    path = _path(key, folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, hashlib.sha256(body).digest() + body)
    except OSError:
        return False
    return True


_writing = []


def write_compiled_soon(key, body):
    """write_compiled in a thread of its own, then trim: 20-35 ms for EfficientNet-Lite0 that
    the runtime's first batches need not wait for. Not a daemon: the interpreter's exit
    waits for it (settle, for a caller that must see the file)."""
    folder = compiled_cache_dir()           # the cache folder of now, as for every file

    def write():
        write_compiled(key, body, folder)
        trim(folder)
    thread = threading.Thread(target=write, name="retrain-keep")
    _writing.append(thread)
    thread.start()


def settle():
    """Wait for the writes write_compiled_soon started."""
    while _writing:
        _writing.pop().join()


def drop_compiled(key):
    try:
        _path(key).unlink()
    except OSError:
        pass


def trim(folder=None):
    """Delete the oldest files of `folder` (compiled_cache_dir by default; by the time they
    were written) until the rest take COMPILED_CACHE_BYTES at the most. A model compiled
    again is written anew, so those in use stay; a file another process is reading stays
    readable to it once deleted."""
    folder, most = folder or compiled_cache_dir(), COMPILED_CACHE_BYTES
    try:
        files = sorted((entry.stat().st_mtime, entry.stat().st_size, entry.path)
                       for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False))
    except OSError:
        return
    total = sum(size for _, size, _ in files)
    for _, size, path in files:
        if total <= most:
            break
        try:
            os.remove(path)
            total -= size
        except OSError:
            pass
