"""The feature cache never trains on wrong features (issue 21): a shard records its namespace
and the sha256 of its keys and features and is verified when read; a damaged or foreign one
is set aside once (renamed, not deleted) and its entries computed again, never used and
never fatal; a file changed between hashing and decoding is never cached under its old
key; the cache deleted during a run costs a recomputation, not the run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrain.feature_cache import SET_ASIDE_SUFFIX, FeatureCache, _shard_bytes
from retrain.features import cache_namespace
from retrain.files import sha256_file
from stand_in import RECIPE, stand_in_backbone
from test_feature_cache import Counting, extract, make_images, open_cache, reference_features


def expected_features(paths):
    expected = reference_features(paths)
    return np.stack([expected[sha256_file(p)] for p in paths])


def one_shard(cache_root):
    shards = sorted(open_cache(cache_root).directory.glob("shard-*.h5"))
    assert len(shards) == 1
    return shards[0]


def overwrite(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def dataset_offset(shard, name):
    with h5py.File(shard, "r") as f:
        return f[name].id.get_offset(), f[name].nbytes


@pytest.fixture
def warm(tmp_path):
    """40 images whose features sit in one shard of tmp_path/cache."""
    paths = make_images(tmp_path / "data", 40)
    extract(paths, open_cache(tmp_path / "cache"), chunk_size=100)
    return paths, tmp_path / "cache", one_shard(tmp_path / "cache")


def assert_set_aside_once_and_recomputed(paths, cache_root, shard, words):
    """The damage is reported by the first run only, the shard is renamed aside, and the
    run's features are those computed from the images."""
    cache, backbone = open_cache(cache_root), Counting()
    result = extract(paths, cache, backbone)
    assert [(name, words in reason) for name, reason in result.discarded] == [
        (str(shard), True)], result.discarded
    assert backbone.images == len(paths) and result.misses == len(paths)
    np.testing.assert_allclose(result.features, expected_features(paths), rtol=0, atol=1e-6)
    assert not shard.exists() and shard.with_name(shard.name + SET_ASIDE_SUFFIX).exists()
    again, backbone = extract(paths, open_cache(cache_root), Counting()), None
    assert again.discarded == [] and again.hits == len(paths)


@pytest.mark.parametrize("damage, words", [
    ("zeros", "the features do not match their sha256"),
    ("random", "the features do not match their sha256"),
    ("key byte", "the keys do not match their sha256")])
def test_damaged_bytes_are_caught_by_the_checksums(warm, damage, words):
    """64 KiB of zeros in the features trained silently (train accuracy 1.0 -> 0.875), 4 KiB
    of random bytes put NaNs in, one bad byte in the keys was 'unexpected
    UnicodeDecodeError' on every later run."""
    paths, cache_root, shard = warm
    offset, size = dataset_offset(shard, "keys" if damage == "key byte" else "features")
    data = {"zeros": bytes(min(size, 65536)),
            "random": np.random.default_rng(0).bytes(min(size, 4096)),
            "key byte": b"\xff"}[damage]
    overwrite(shard, offset + (size // 2 if damage == "key byte" else 0), data)
    assert_set_aside_once_and_recomputed(paths, cache_root, shard, words)


def test_a_shard_of_another_model_is_never_used(warm):
    """A Lite1 shard put in Lite0's folder was used: train accuracy 1.000, and 0.29 when the
    exported model was evaluated on the same images."""
    paths, cache_root, own = warm
    other = FeatureCache(cache_root, cache_namespace(stand_in_backbone(seed=1), RECIPE))
    extract(paths, other, Counting())
    foreign = sorted(other.directory.glob("shard-*.h5"))[0]
    own.unlink()
    shard = own.with_name(foreign.name)
    shutil.copy(foreign, shard)
    assert_set_aside_once_and_recomputed(paths, cache_root, shard,
                                         "written for another model or recipe")


def forge(shard, namespace, keys, features):
    """A shard as add() writes it, from any keys and features."""
    shard.write_bytes(bytes(_shard_bytes(keys, features, namespace)))


@pytest.mark.parametrize("kind, words", [
    ("7 wide", "7 features wide, the others 16"),
    ("integer keys", "keys int64"),
    ("over-declared", "/keys declares 64000000 bytes, stores 0"),
    ("not a key", "a key is not a content hash"),
    ("old format", "format None, not 2")])
def test_malformed_shards_are_set_aside(warm, kind, words):
    """A 7-wide, integer-keyed or over-declared shard stopped every later run."""
    paths, cache_root, _ = warm
    cache = open_cache(cache_root)
    shard = cache.directory / "shard-forged.h5"
    key = sha256_file(paths[0])
    if kind == "7 wide":
        forge(shard, cache.namespace, [key], np.zeros((1, 7), np.float32))
    elif kind == "not a key":
        forge(shard, cache.namespace, ["../../etc/passwd"], np.zeros((1, 16), np.float32))
    else:
        forge(shard, cache.namespace, [key], np.zeros((1, 16), np.float32))
        with h5py.File(shard, "r+") as f:
            if kind == "integer keys":
                del f["keys"]
                f["keys"] = np.arange(1)
            elif kind == "over-declared":           # consistent shapes, nothing stored
                del f["keys"], f["features"]
                f.create_dataset("keys", (10**6,), "S64", chunks=(1024,))
                f.create_dataset("features", (10**6, 16), np.float32, chunks=(1024, 16))
                f.attrs["count"] = 10**6
            else:
                del f.attrs["format"]
    result = extract(paths, open_cache(cache_root), Counting())
    assert [(name, words in reason) for name, reason in result.discarded] == [
        (str(shard), True)], result.discarded
    assert result.hits == len(paths)           # the good shard is used, the forged one not
    np.testing.assert_allclose(result.features, expected_features(paths), rtol=0, atol=1e-6)
    assert shard.with_name(shard.name + SET_ASIDE_SUFFIX).exists()


def test_a_fifo_named_like_a_shard_does_not_hang(warm):
    """`mkfifo shard-x.h5` made every fit wait for ever (in h5py's open, holding the GIL:
    hence a child process with a timeout)."""
    paths, cache_root, _ = warm
    fifo = open_cache(cache_root).directory / "shard-fifo.h5"
    os.mkfifo(fifo)
    child = ("import json, sys; from test_feature_cache import open_cache; "
             "cache = open_cache(sys.argv[1]); print(json.dumps([cache.discarded, len(cache)]))")
    done = subprocess.run([sys.executable, "-c", child, str(cache_root)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [[[str(fifo), "not a regular file"]], len(paths)]
    assert fifo.with_name(fifo.name + SET_ASIDE_SUFFIX).exists()


def test_a_file_changed_after_hashing_is_never_cached_under_its_old_key(tmp_path,
                                                                         monkeypatch):
    """fit hashed a dress image, then decoded the trouser image written over it, and cached
    trouser features under the dress's key. The bytes decoded are now the bytes hashed."""
    paths = make_images(tmp_path / "data", 6)
    replacement = make_images(tmp_path / "other", 1)[0]
    old_key = sha256_file(paths[2])
    real_hash = sha256_file

    def hash_then_change(path):
        digest = real_hash(path)
        if str(path) == str(paths[2]):
            shutil.copy(replacement, path)           # changed between hashing and decoding
        return digest

    monkeypatch.setattr("retrain.features.sha256_file", hash_then_change)
    result = extract(paths, open_cache(tmp_path / "cache"), batch_size=2)
    monkeypatch.undo()
    assert [(path, "changed after this run hashed it" in reason)
            for path, reason in result.skipped] == [(str(paths[2]), True)]
    assert old_key not in open_cache(tmp_path / "cache")
    assert result.kept == [0, 1, 3, 4, 5]
    np.testing.assert_allclose(result.features, expected_features([paths[i] for i in
                                                                   result.kept]),
                               rtol=0, atol=1e-6)


def test_the_cache_deleted_during_a_run_costs_a_recomputation_not_the_run(tmp_path):
    """`--help` calls the cache safe to delete; deleting it mid-run failed the run at its
    end ("Unable to synchronously open file ... shard-....h5"), all extraction lost."""
    paths = make_images(tmp_path / "data", 12)
    cache = open_cache(tmp_path / "cache")
    real_add, calls = cache.add, []

    def add_then_delete(keys, features):
        real_add(keys, features)
        calls.append(len(keys))
        if len(calls) == 2:
            shutil.rmtree(tmp_path / "cache")

    cache.add = add_then_delete
    backbone = Counting()
    result = extract(paths, cache, backbone, batch_size=2, chunk_size=2)
    np.testing.assert_allclose(result.features, expected_features(paths), rtol=0, atol=1e-6)
    assert result.recomputed == 4                          # the two shards written before
    assert backbone.images == 12 + 4
    assert "features will not be cached" in result.cache_warning
