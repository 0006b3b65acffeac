"""Backbone features for many images, through a crash-safe cache shared by all runs.

Cache layout: `<cache dir>/<namespace>/shard-<id>.h5`. The namespace is a hash of the
model that computes the entries (its architecture and weight values: the whole backbone for
pooled features, the layers below the cut point for fine-tuning's cut activations), the
preprocessing recipe, the augmentation recipe for augmented views, and this module's
format version, so a different backbone, cut point or recipe can never read another's
entries. Inside it, an entry's key is the sha256 of the image file's bytes (plain view),
or that sha256 and ":k" for augmented view k: renaming, moving or copying a file into
another dataset still hits, and raising the number of views computes only the new ones.
Entries are stored flat, float32 (pooled features, plain views) or float16 (augmented
views, to halve their memory).

Why shards and not one growing HDF5 file: HDF5 does not journal its metadata, so a process
killed while it appends can leave the whole file unreadable. Here a shard is written once,
built in memory and written with the one atomic writer (engine/atomic.py), so the next run
sees either the complete shard or nothing. A killed run leaves at most a `.shard-*.tmp`
file, which readers never open (stale ones are removed after a day). A shard that still
fails its checks on reading (disk damage) is discarded, never trusted. Shards are never
rewritten, so concurrent runs are safe too.

The cache is documented as safe to delete, so a cache that cannot be created or written
(permissions, a full disk) never stops a run: `warning` says why once, and the features
of this run are kept in memory instead.
"""
import hashlib
import io
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .augment import augmentation_hash, view_parameters
from .engine import atomic_write, remove_stale_temps
from .errors import DataError, Interrupted, ModelFileError
from .files import sha256_file
from .preprocess import iter_batches, recipe_hash
from .progress import progress_bar

_FORMAT_VERSION = 1
_STALE_TEMP_SECONDS = 24 * 3600

__all__ = ["FeatureCache", "FeatureSet", "cache_namespace", "default_cache_dir",
           "extract_features", "extract_views", "forward_entries", "model_fingerprint"]


def default_cache_dir():
    """$XDG_CACHE_HOME/retrain, else ~/.cache/retrain: shared by every run and dataset."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "retrain"


def model_fingerprint(model):
    """sha256 of what fixes a model's outputs: the architecture (each layer's type and
    config, and which layer feeds which) and every weight's shape and values, trainable or
    not (a backbone is loaded frozen, so its weights are all non-trainable).

    Layer names and trainable flags are left out on purpose: auto names (conv2d_1...)
    change with what else was built in the process, and freezing a layer does not change
    what it computes; neither may turn a cache hit into a miss."""
    layers = model.layers
    position = {id(layer): index for index, layer in enumerate(layers)}
    inputs = {id(t): index for index, t in enumerate(model.inputs)}
    digest = hashlib.sha256()
    digest.update(repr([tuple(t.shape[1:]) for t in model.inputs]).encode())
    for layer in layers:
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
        wiring = [f"layer{position[id(t.layer)]}" if id(t.layer) in position
                  else f"input{inputs[id(t)]}" for t in layer.inbound]
        digest.update(json.dumps([type(layer).__name__, config, wiring], sort_keys=True,
                                 default=repr).encode())
        for weight in layer.weights:
            value = np.ascontiguousarray(weight.value, np.float32)
            digest.update(repr(value.shape).encode())
            digest.update(value.tobytes())
    digest.update(repr([tuple(t.shape[1:]) for t in model.outputs]).encode())
    return digest.hexdigest()


def cache_namespace(backbone, recipe, augmentation=None, precision="f32"):
    """The cache folder name for outputs of `backbone` (a whole backbone, or the part below
    a cut point) on images prepared by `recipe`, augmented by `augmentation` if given,
    computed in `precision` (runtimes.py). f32 outputs of every runtime share entries (they
    agree within 1e-4); bf16 ones differ by up to 0.5 and never share an f32 entry."""
    text = f"v{_FORMAT_VERSION}:{model_fingerprint(backbone)}:{recipe_hash(recipe)}"
    if augmentation is not None:
        text += f":augment:{augmentation_hash(augmentation)}"
    if precision != "f32":
        text += f":precision:{precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class FeatureCache:
    """Immutable shard files mapping image-content keys (hex sha256) to feature vectors."""

    def __init__(self, root, namespace):
        self.directory = Path(root) / namespace
        self.discarded = []          # shards that failed their checks and were removed
        self.warning = None          # why features are not being cached, if they are not
        self._where = {}             # key -> (shard path, row), or (None, vector) in memory
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.directory, older_than=_STALE_TEMP_SECONDS)
            shards = sorted(self.directory.glob("shard-*.h5"))
        except OSError as exc:
            self._stop_caching(exc)
            shards = []
        for shard in shards:
            self._index_shard(shard)

    def __contains__(self, key):
        return key in self._where

    def __len__(self):
        return len(self._where)

    def _index_shard(self, shard):
        try:
            with h5py.File(shard, "r") as f:
                keys = f["keys"][...]
                count = int(f.attrs["count"])
                shape = f["features"].shape
            if len(keys) != count or shape[0] != count or len(shape) != 2:
                raise ValueError(f"{count} entries announced, {len(keys)} keys, features {shape}")
        except OSError as exc:
            if exc.errno is not None:    # permissions, too many open files: not damage
                raise ModelFileError(f"Cannot read the feature cache file {shard}: "
                                     f"{exc.strerror or exc}.",
                                     hint="Check the cache folder's permissions, or pass "
                                          "--cache with a folder of your own.") from exc
            self._discard(shard, exc)
            return
        except (KeyError, ValueError) as exc:
            self._discard(shard, exc)
            return
        for row, key in enumerate(keys):
            self._where[key.decode("ascii")] = (shard, row)

    def _discard(self, shard, reason):
        """A damaged shard (torn by disk failure, say) is never trusted: it is removed."""
        self.discarded.append((str(shard), str(reason)))
        shard.unlink(missing_ok=True)

    def add(self, keys, features):
        """Write one shard holding `features[i]` under `keys[i]`, atomically (see module doc);
        in memory only once the cache could not be written. float16 features stay float16;
        anything else is stored as float32."""
        features = np.asarray(features)
        if features.dtype != np.float16:
            features = features.astype(np.float32)
        final = self.directory / f"shard-{uuid.uuid4().hex}.h5"
        if self.warning is None:
            buffer = io.BytesIO()
            with h5py.File(buffer, "w") as f:
                f.create_dataset("keys", data=np.array([k.encode("ascii") for k in keys]))
                f.create_dataset("features", data=features)
                f.attrs["count"] = len(keys)
            try:
                with atomic_write(final, "wb") as handle:
                    handle.write(buffer.getbuffer())
            except OSError as exc:
                self._stop_caching(exc)
        for row, key in enumerate(keys):
            self._where[key] = (final, row) if self.warning is None else (None, features[row])

    def _stop_caching(self, exc):
        self.warning = (f"features will not be cached: {self.directory}: "
                        f"{exc.strerror or exc}; this run keeps them in memory")

    def get(self, keys):
        """Features for `keys` (all must be present) as (len(keys), D), in the stored dtype."""
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
        for shard, pairs in by_shard.items():
            with h5py.File(shard, "r") as f:
                block = f["features"][...]
            if out is None:
                out = np.empty((len(keys), block.shape[1]), block.dtype)
            idx, rows = zip(*pairs)
            out[list(idx)] = block[list(rows)]
        return out if out is not None else np.empty((0, 0), np.float32)


@dataclass
class FeatureSet:
    """Features of the usable images: row i belongs to input index `kept[i]`, whose content
    hash is `keys[i]`."""
    features: np.ndarray
    kept: list
    keys: list = field(default_factory=list)
    skipped: list = field(default_factory=list)   # (path, reason)
    hits: int = 0                                  # images found in the cache
    misses: int = 0                                # forward passes made
    discarded: list = field(default_factory=list)  # damaged cache shards: (path, reason)
    cache_warning: str = None                      # why features were not cached, if not


def _hash_or_reason(path):
    try:
        return sha256_file(path), None
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"


def extract_features(paths, backbone, recipe, cache, batch_size=32, workers=2,
                     chunk_size=512, flush_seconds=60.0, progress=True, cluster=None):
    """Features of `backbone` for every image in `paths`, computing only cache misses.

    Misses are written to `cache` every `chunk_size` images or `flush_seconds`, whichever
    comes first, so a killed run loses at most that much work. Files that cannot be read
    or decoded are returned in `skipped` with the reason, not raised. Identical files are
    computed once. With `cluster` (cluster.Cluster), the misses are computed by its workers;
    the hashing, and everything cached, stays here."""
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        hashed = list(pool.map(_hash_or_reason, paths))
    keys = [key for key, _ in hashed]
    skipped = [(path, reason) for path, (_, reason) in zip(paths, hashed) if reason]
    todo = {}
    for key, path in zip(keys, paths):
        if key is not None and key not in cache and key not in todo:
            todo[key] = (path, None)
    cached = sum(key is not None for key in keys) - len(todo)    # the bar counts them done
    failed = _extract_misses(todo, backbone, recipe, cache, batch_size, workers,
                             chunk_size, flush_seconds, progress, cached, cluster=cluster)
    skipped += [(path, failed[key]) for path, key in zip(paths, keys) if key in failed]
    kept = [i for i, key in enumerate(keys) if key is not None and key not in failed]
    # A copy of an image computed in this run is neither: not a hit on a cold cache.
    hits = sum(1 for i in kept if keys[i] not in todo)
    return FeatureSet(features=cache.get([keys[i] for i in kept]), kept=kept,
                      keys=[keys[i] for i in kept], skipped=sorted(skipped), hits=hits,
                      misses=len(todo) - len(failed), discarded=list(cache.discarded),
                      cache_warning=cache.warning)


def extract_views(paths, keys, backbone, recipe, cache, views, augmentation, batch_size=32,
                  workers=2, chunk_size=512, flush_seconds=60.0, progress=True, cluster=None):
    """Augmented views 1..`views` of each image (`paths[i]`, content hash `keys[i]`): the
    outputs of `backbone` as float16 (len(paths), views, D), computing only cache misses
    (cached under "<key>:<k>" in `cache`, whose namespace names `augmentation`). Returns
    (array, hits, misses)."""
    todo = {}
    for path, key in zip(paths, keys):
        for view in range(1, views + 1):
            entry = f"{key}:{view}"
            if entry not in cache and entry not in todo:
                todo[entry] = (str(path), view_parameters(key, view, augmentation))
    cached = len(paths) * views - len(todo)
    failed = _extract_misses(todo, backbone, recipe, cache, batch_size, workers, chunk_size,
                             flush_seconds, progress, cached, dtype=np.float16, desc="views",
                             cluster=cluster)
    if failed:
        entry, reason = next(iter(failed.items()))
        raise DataError(f"{todo[entry][0]} could not be decoded for its augmented views "
                        f"({reason}), though it was earlier in this run.",
                        hint="Was it changed during the run? Run the same command again.")
    entries = [f"{key}:{view}" for key in keys for view in range(1, views + 1)]
    found = cache.get(entries) if entries else np.empty((0, 0), np.float16)
    return found.reshape(len(keys), views, -1), len(entries) - len(todo), len(todo)


def _extract_misses(todo, backbone, recipe, cache, batch_size, workers, chunk_size,
                    flush_seconds, progress, cached=0, dtype=np.float32, desc="features",
                    cluster=None):
    """Run the backbone on `todo` {cache key: (path, view parameters or None)}, flushing to
    the cache in chunks. Outputs are stored flat (one row per entry) in `dtype`.
    Returns {cache key: reason} for the images that could not be decoded. Ctrl-C (or
    SIGTERM, which the CLI turns into KeyboardInterrupt) writes what is computed, then
    raises Interrupted, so that the same command resumes from there. With `cluster`
    (cluster.Cluster), the forward passes run as Dask tasks on its workers and their
    results arrive here a chunk at a time; caching, progress and Ctrl-C stay the same."""
    items = [(key, path, view) for key, (path, view) in todo.items()]
    results = (forward_entries(items, backbone, recipe, batch_size, workers, dtype)
               if cluster is None else cluster.features(items, backbone, recipe, batch_size,
                                                         dtype))
    failed, pending, saved = {}, [], [0]      # pending: (keys, features) per batch

    def flush():
        if pending:
            keys = [key for batch_keys, _ in pending for key in batch_keys]
            cache.add(keys, np.concatenate([block for _, block in pending]))
            saved[0] += len(keys)
            pending.clear()

    def take(result):
        count, batch_failed, kept, block = result
        failed.update(batch_failed)
        if kept:          # one append, so that an interrupt never splits keys from features
            pending.append((kept, block))
        return count

    last_flush = time.monotonic()
    try:
        with progress_bar(total=len(todo) + cached, initial=cached, unit="img",
                          desc=f"{desc} ({cached} cached)" if cached else desc,
                          disable=not progress) as bar:
            for result in results:
                bar.update(take(result))
                due = time.monotonic() - last_flush > flush_seconds
                waiting = sum(len(keys) for keys, _ in pending)
                if waiting and (waiting >= chunk_size or due):
                    flush()
                    last_flush = time.monotonic()
    except KeyboardInterrupt:
        for result in getattr(results, "stop", list)():    # a cluster's finished chunks
            take(result)
        flush()
        raise Interrupted(saved[0], len(todo)) from None
    flush()
    return failed


def forward_entries(items, backbone, recipe, batch_size=32, workers=2, dtype=np.float32):
    """Yield (count, failed, kept, block) per batch of `items` [(cache key, path, view
    parameters or None)]: `count` entries done, `failed` {key: reason} for those that could
    not be decoded, `kept` the keys of the others and `block` their outputs, flat, in
    `dtype` ((len(kept), D), None when kept is empty). The one forward loop: in process,
    and inside each Dask task of a cluster run. `backbone`: anything with predict(x,
    batch_size), a model or a runtimes.Runtime."""
    keys = [key for key, _, _ in items]
    paths = [path for _, path, _ in items]
    views = [view for _, _, view in items]
    position = 0
    for batch, inputs in iter_batches(paths, recipe, batch_size, workers, views):
        batch_keys = keys[position:position + len(batch)]
        position += len(batch)
        failed = {key: reason for key, (_, reason) in zip(batch_keys, batch) if reason}
        kept = [key for key, (_, reason) in zip(batch_keys, batch) if not reason]
        block = None
        if len(inputs):
            outputs = backbone.predict(inputs, batch_size=len(inputs))
            block = np.asarray(outputs).reshape(len(inputs), -1).astype(dtype)
        yield len(batch), failed, kept, block
