"""The feature cache's storage: immutable shard files, each verified when it is read.

A namespace folder (`<cache dir>/<namespace>/`, see features.cache_namespace) holds
`shard-<id>.h5` files, each written once, whole, by the one atomic writer (engine/atomic.py):
a killed run leaves at most a `.shard-*.tmp` file, which readers never open (stale ones are
removed after a day). Shards are never rewritten, so concurrent runs are safe too.

Why shards and not one growing HDF5 file: HDF5 does not journal its metadata, so a process
killed while it appends can leave the whole file unreadable.

A shard records its format, its namespace, its entry count and the sha256 of its keys and
of its features. Its keys are checked when the folder is indexed (with the namespace and
that every dataset holds the bytes it declares), its features when they are read. A shard
that fails (disk damage, a shard copied from another model's folder, a FIFO named like one)
is never used and never fatal: it is renamed aside to `shard-<id>.h5.set-aside`, listed in
`set_aside` for one warning, and its entries are computed again. Entries whose shard goes
missing after indexing (the cache deleted during the run: it is documented as safe to
delete) raise EntriesLost from `get`, so that the caller computes them again.

A cache that cannot be created or written (permissions, a full disk) never stops a run
either: `warning` says why once, and this run's features are kept in memory instead.
"""
import hashlib
import io
import os
import re
import stat
import uuid
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from .engine import atomic_write, remove_stale_temps
from .errors import ModelFileError

__all__ = ["EntriesLost", "FeatureCache", "SET_ASIDE_SUFFIX"]

SET_ASIDE_SUFFIX = ".set-aside"
_SHARD_FORMAT = 2
_STALE_TEMP_SECONDS = 24 * 3600
# sha256 of an image file's bytes, and ":k" for its augmented view k
_KEY = re.compile(rb"[0-9a-f]{64}(:[0-9]{1,9})?")
_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class EntriesLost(Exception):
    """`get` found the shards of `entries` gone or damaged since they were indexed; they
    are forgotten (no longer `in` the cache), to be computed again."""

    def __init__(self, entries):
        super().__init__(f"{len(entries)} cached entries lost")
        self.entries = entries


class _Damaged(ValueError):
    """A shard fails its checks."""


class FeatureCache:
    """Immutable shard files mapping image-content keys (hex sha256) to feature vectors."""

    def __init__(self, root, namespace):
        self.directory = Path(root) / namespace
        self.namespace = namespace
        self.set_aside = []          # (shard path, reason): shards that failed their checks
        self.warning = None          # why features are not being cached, if they are not
        self._writable = True
        self._in_memory_too = False  # after a loss: new entries are also kept in memory
        self._where = {}             # key -> (shard path, row), or (None, vector) in memory
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.directory, older_than=_STALE_TEMP_SECONDS)
            shards = sorted(p for p in self.directory.iterdir()
                            if p.name.startswith("shard-") and p.name.endswith(".h5"))
        except OSError as exc:
            self._stop_caching(exc)
            shards = []
        indexed = {shard: self._index_shard(shard) for shard in shards}
        for shard, (keys, _) in self._keep_one_width(indexed).items():
            for row, key in enumerate(keys):
                self._where[key] = (shard, row)

    @property
    def discarded(self):
        """The shards set aside (the name the pipeline and older callers use)."""
        return self.set_aside

    def __contains__(self, key):
        return key in self._where

    def __len__(self):
        return len(self._where)

    def _index_shard(self, shard):
        """A shard's (keys, feature width), or None when it fails its checks (then it is
        set aside) or is gone."""
        try:
            status = os.stat(shard)
            if not stat.S_ISREG(status.st_mode):     # a FIFO would block h5py for ever
                raise _Damaged("not a regular file")
            with h5py.File(shard, "r") as f:
                keys, width = _read_keys(f, self.namespace, status.st_size)
        except FileNotFoundError:                    # set aside by a concurrent run
            return None
        except Exception as exc:  # noqa: BLE001  (h5py raises assorted errors on damage)
            self._set_aside(shard, _damage(shard, exc))
            return None
        return keys, width

    def _keep_one_width(self, indexed):
        """All entries of a namespace come from one model, so they have one width: shards
        of another width than most entries are set aside. Returns the shards kept."""
        indexed = {shard: found for shard, found in indexed.items() if found is not None}
        rows = Counter()
        for keys, width in indexed.values():
            rows[width] += len(keys)
        if len(rows) > 1:
            common = rows.most_common(1)[0][0]
            for shard, (_, width) in list(indexed.items()):
                if width != common:
                    del indexed[shard]
                    self._set_aside(shard, f"{width} features wide, the others {common}")
        return indexed

    def _set_aside(self, shard, reason):
        """A shard that fails its checks is never trusted: renamed aside (not deleted:
        someone may want to look at it), and reported once, by this run."""
        lines = " ".join(str(reason).split()) or type(reason).__name__
        self.set_aside.append((str(shard), lines))
        try:
            os.replace(shard, f"{shard}{SET_ASIDE_SUFFIX}")
        except OSError:                 # a read-only cache: left there, and never used
            pass

    def _forget(self, shard):
        lost = [key for key, (where, _) in self._where.items() if where == shard]
        for key in lost:
            del self._where[key]
        return lost

    def add(self, keys, features):
        """Write one shard holding `features[i]` under `keys[i]`, atomically (see module doc);
        in memory only once the cache could not be written. float16 features stay float16;
        anything else is stored as float32."""
        features = np.ascontiguousarray(features)
        if features.dtype != np.float16:
            features = features.astype(np.float32)
        final = self.directory / f"shard-{uuid.uuid4().hex}.h5"
        if self._writable:
            try:
                with atomic_write(final, "wb") as handle:
                    handle.write(_shard_bytes(keys, features, self.namespace))
            except OSError as exc:
                self._stop_caching(exc)
        in_memory = not self._writable or self._in_memory_too
        for row, key in enumerate(keys):
            self._where[key] = (None, features[row]) if in_memory else (final, row)

    def _stop_caching(self, exc):
        self._writable = False
        self.warning = (f"features will not be cached: {self.directory}: "
                        f"{exc.strerror or exc}; this run keeps them in memory")

    def keep_in_memory(self):
        """From now on, entries added are also kept in memory, so that they cannot be lost
        again (the cache folder was deleted during the run)."""
        self._in_memory_too = True

    def get(self, keys):
        """Features for `keys` (all must be present) as (len(keys), D), in the stored dtype.
        Raises EntriesLost (and forgets them) for entries whose shard is gone or fails its
        features' checksum; the others' shards are read and checked again next time."""
        by_shard, in_memory = {}, []
        for i, key in enumerate(keys):
            shard, row = self._where[key]
            if shard is None:
                in_memory.append((i, row))
            else:
                by_shard.setdefault(shard, []).append((i, row))
        out = None
        if in_memory:
            out = np.empty((len(keys), in_memory[0][1].shape[0]), in_memory[0][1].dtype)
            for i, vector in in_memory:
                out[i] = vector
        lost = []
        for shard, pairs in by_shard.items():
            block = self._read_features(shard)
            if block is None or (out is not None and block.shape[1:] != out.shape[1:]):
                lost += self._forget(shard)
                continue
            if out is None:
                out = np.empty((len(keys),) + block.shape[1:], block.dtype)
            idx, rows = zip(*pairs)
            out[list(idx)] = block[list(rows)]
        if lost:
            raise EntriesLost(lost)
        return out if out is not None else np.empty((0, 0), np.float32)

    def _read_features(self, shard):
        """A shard's features once its checksum matches; None if it is gone (then it is
        simply forgotten) or damaged since it was indexed (then it is set aside too)."""
        try:
            with h5py.File(shard, "r") as f:
                block = f["features"][...]
                expected = f.attrs["features_sha256"]
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            self._set_aside(shard, _damage(shard, exc))
            return None
        if _digest(block) != _text(expected):
            self._set_aside(shard, "the features do not match their sha256")
            return None
        return block


def _shard_bytes(keys, features, namespace):
    """One shard file, built in memory: keys, features and what verifies them."""
    key_array = np.array([k.encode("ascii") for k in keys])
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("keys", data=key_array)
        f.create_dataset("features", data=features)
        f.attrs.update({"format": _SHARD_FORMAT, "namespace": namespace, "count": len(keys),
                        "keys_sha256": _digest(key_array), "features_sha256": _digest(features)})
    return buffer.getbuffer()


def _read_keys(f, namespace, file_size):
    """The keys of an open shard, after every check that needs no feature value; returns
    (keys, feature width). Raises _Damaged naming the first check that fails."""
    if f.attrs.get("format") != _SHARD_FORMAT:
        raise _Damaged(f"format {f.attrs.get('format')!r}, not {_SHARD_FORMAT}")
    if _text(f.attrs.get("namespace")) != namespace:
        raise _Damaged(f"written for another model or recipe (namespace "
                       f"{_text(f.attrs.get('namespace'))!r:.40})")
    keys, features, count = f["keys"], f["features"], int(f.attrs["count"])
    if keys.dtype.kind != "S" or keys.shape != (count,):
        raise _Damaged(f"keys {keys.dtype} {keys.shape} for {count} entries")
    if features.dtype not in _DTYPES or features.ndim != 2 or features.shape[0] != count:
        raise _Damaged(f"features {features.dtype} {features.shape} for {count} entries")
    for dataset in (keys, features):    # declared sizes the file cannot hold: never read
        if dataset.id.get_storage_size() != dataset.nbytes or dataset.nbytes > file_size:
            raise _Damaged(f"{dataset.name} declares {dataset.nbytes} bytes, stores "
                           f"{dataset.id.get_storage_size()}")
    values = keys[...]
    if _digest(values) != _text(f.attrs.get("keys_sha256")):
        raise _Damaged("the keys do not match their sha256")
    if not all(_KEY.fullmatch(value) for value in values):
        raise _Damaged("a key is not a content hash")
    return [value.decode("ascii") for value in values], features.shape[1]


def _damage(shard, exc):
    """`exc`, raised reading `shard`, as the reason it is set aside; an OSError of the
    system (permissions, too many open files) is no damage: raised as ModelFileError."""
    if isinstance(exc, OSError) and exc.errno is not None:
        raise ModelFileError(f"Cannot read the feature cache file {shard}: "
                             f"{exc.strerror or exc}.",
                             hint="Check the cache folder's permissions, or pass --cache "
                                  "with a folder of your own.") from exc
    return exc


def _digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).data).hexdigest()


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
