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

The shards themselves, written once and verified when read, are feature_cache.py's. The
cache is documented as safe to delete: entries lost during a run (the folder deleted, a
shard damaged) are computed again, and a cache that cannot be written never stops a run.
"""
import functools
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .augment import augmentation_hash, view_parameters
from .errors import ClusterError, DataError, Interrupted
from .feature_cache import EntriesLost, FeatureCache
from .files import default_cache_dir, sha256_file
from .preprocess import iter_batches, recipe_hash
from .runtimes import predict_batches
from .progress import progress_bar

_FORMAT_VERSION = 2          # 2: shards record their namespace and checksums

__all__ = ["FeatureCache", "FeatureSet", "cache_namespace", "default_cache_dir",
           "extract_features", "extract_views", "forward_entries", "model_fingerprint"]


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
    discarded: list = field(default_factory=list)  # shards set aside: (path, reason)
    cache_warning: str = None                      # why features were not cached, if not
    recomputed: int = 0                            # cached, then lost during the run


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
    failed = _extract_misses(todo, backbone, recipe, cache, batch_size=batch_size,
                             workers=workers, chunk_size=chunk_size,
                             flush_seconds=flush_seconds, progress=progress, cached=cached,
                             cluster=cluster)
    skipped += [(path, failed[key]) for path, key in zip(paths, keys) if key in failed]
    kept = [i for i, key in enumerate(keys) if key is not None and key not in failed]
    sources = {keys[i]: (paths[i], None) for i in kept}
    features, recomputed = _gather(cache, [keys[i] for i in kept], sources, functools.partial(
        _extract_misses, backbone=backbone, recipe=recipe, cache=cache, batch_size=batch_size,
        workers=workers, chunk_size=chunk_size, flush_seconds=flush_seconds,
        progress=progress, cluster=cluster))
    # A copy of an image computed in this run is neither: not a hit on a cold cache. An
    # entry found damaged when read, computed again, is a miss.
    hits = sum(1 for i in kept if keys[i] not in todo and keys[i] not in recomputed)
    return FeatureSet(features=features, kept=kept, keys=[keys[i] for i in kept],
                      skipped=sorted(skipped), hits=hits,
                      misses=len(todo) - len(failed) + len(recomputed - todo.keys()),
                      discarded=list(cache.discarded), cache_warning=cache.warning,
                      recomputed=len(recomputed))


def _gather(cache, entries, sources, compute):
    """cache.get(entries), computing again any entries whose shard was lost since it was
    indexed (the cache folder deleted during the run, a shard found damaged): then kept in
    memory, so that a second loss cannot happen. `sources` {entry: (path, view)} says how
    to compute an entry; `compute(todo)` is _extract_misses bound to the backbone.
    Returns (features, the set of entries computed again)."""
    recomputed = set()
    while True:
        try:
            return cache.get(entries), recomputed
        except EntriesLost as lost:
            cache.keep_in_memory()
            todo = {entry: sources[entry] for entry in dict.fromkeys(lost.entries)
                    if entry in sources}
            failed = compute(todo)
            recomputed.update(todo)
            if failed:
                entry, reason = next(iter(failed.items()))
                raise DataError(f"{todo[entry][0]} could not be decoded again ({reason}), "
                                "though it was earlier in this run.",
                                hint="Was it changed during the run? Run the same command "
                                     "again.") from None


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
    failed = _extract_misses(todo, backbone, recipe, cache, batch_size=batch_size,
                             workers=workers, chunk_size=chunk_size,
                             flush_seconds=flush_seconds, progress=progress, cached=cached,
                             dtype=np.float16, desc="views", cluster=cluster)
    if failed:
        entry, reason = next(iter(failed.items()))
        raise DataError(f"{todo[entry][0]} could not be decoded for its augmented views "
                        f"({reason}), though it was earlier in this run.",
                        hint="Was it changed during the run? Run the same command again.")
    entries = [f"{key}:{view}" for key in keys for view in range(1, views + 1)]
    sources = {f"{key}:{view}": (str(path), view_parameters(key, view, augmentation))
               for path, key in zip(paths, keys) for view in range(1, views + 1)}
    found, _ = _gather(cache, entries, sources, functools.partial(
        _extract_misses, backbone=backbone, recipe=recipe, cache=cache, batch_size=batch_size,
        workers=workers, chunk_size=chunk_size, flush_seconds=flush_seconds,
        progress=progress, dtype=np.float16, desc="views", cluster=cluster))
    if not entries:
        found = np.empty((0, 0), np.float16)
    return found.reshape(len(keys), views, -1), len(entries) - len(todo), len(todo)


def _extract_misses(todo, backbone, recipe, cache, *, batch_size, workers, chunk_size,
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
    except ClusterError:          # the scheduler lost: what arrived is kept, as on Ctrl-C
        flush()
        raise
    flush()
    return failed


def forward_entries(items, backbone, recipe, batch_size=32, workers=2, dtype=np.float32):
    """Yield (count, failed, kept, block) per batch of `items` [(cache key, path, view
    parameters or None)]: `count` entries done, `failed` {key: reason} for those that could
    not be decoded, `kept` the keys of the others and `block` their outputs, flat, in
    `dtype` ((len(kept), D), None when kept is empty). The one forward loop: in process,
    and inside each Dask task of a cluster run. `backbone`: anything with predict(x,
    batch_size), a model or a runtimes.Runtime (which may compute a batch while the next
    one is decoded: runtimes.predict_batches)."""
    keys = [key for key, _, _ in items]
    paths = [path for _, path, _ in items]
    views = [view for _, _, view in items]
    position = 0
    hashes = [key.split(":")[0] for key in keys]     # decode what was hashed, or nothing
    batches = iter_batches(paths, recipe, batch_size, workers, views, hashes)
    for batch, outputs in predict_batches(backbone, batches):
        batch_keys = keys[position:position + len(batch)]
        position += len(batch)
        failed = {key: reason for key, (_, reason) in zip(batch_keys, batch) if reason}
        kept = [key for key, (_, reason) in zip(batch_keys, batch) if not reason]
        block = None
        if outputs is not None:
            block = np.asarray(outputs).reshape(len(outputs), -1).astype(dtype)
        yield len(batch), failed, kept, block
