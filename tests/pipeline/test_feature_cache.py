"""features.py: the cache is shared, hit by content, and survives kill -9 at any moment."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from retrain.engine import Dense, Flatten, Input, Sequential
from retrain.features import (FeatureCache, cache_namespace, extract_features,
                              model_fingerprint)
from retrain.errors import Interrupted, ModelFileError
from retrain.files import sha256_file
from retrain.images import decode_image
from retrain.preprocess import preprocess_batch
from stand_in import RECIPE, stand_in_backbone

HERE = Path(__file__).resolve().parent
# cache_namespace(stand_in_backbone(seed=0), RECIPE), and with augmentation {"flip": True}
NAMESPACE = "75bc93a5f1d89cafbc55362c696e1669"   # format 2: shards verified
AUGMENTED_NAMESPACE = "6d390c79f89939954efa3c5142fddce6"


def make_images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.full((8 + i % 3, 9, 3), (i * 7 % 256, i * 13 % 256, 255 - i), np.uint8)
        pixels[0, 0] = (i, i, i)
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def reference_features(paths):
    """The stand-in's features computed directly, keyed by file content hash."""
    inputs = preprocess_batch([decode_image(p) for p in paths], RECIPE)
    return dict(zip((sha256_file(p) for p in paths), stand_in_backbone().predict(inputs)))


class Counting:
    """The stand-in backbone, counting the images it is run on."""

    def __init__(self):
        self.model = stand_in_backbone()
        self.images = 0

    def predict(self, x, batch_size=32):
        self.images += len(x)
        return self.model.predict(x, batch_size=batch_size)


def open_cache(root):
    return FeatureCache(root, cache_namespace(stand_in_backbone(), RECIPE))


def extract(paths, cache, backbone=None, **options):
    backbone = backbone or Counting()
    return extract_features(paths, backbone, RECIPE, cache, progress=False, **options)


def assert_cache_entries_correct(cache_root, expected):
    cache = open_cache(cache_root)
    assert cache.discarded == []
    keys = [k for k in expected if k in cache]
    if keys:
        np.testing.assert_allclose(cache.get(keys), np.stack([expected[k] for k in keys]),
                                   rtol=0, atol=1e-6)
    return len(keys)


def test_second_run_makes_no_forward_pass(tmp_path):
    paths = make_images(tmp_path / "data", 10)
    first_backbone, second_backbone = Counting(), Counting()
    first = extract(paths, open_cache(tmp_path / "cache"), first_backbone, batch_size=4)
    second = extract(paths, open_cache(tmp_path / "cache"), second_backbone)
    assert (first.hits, first.misses, first_backbone.images) == (0, 10, 10)
    assert (second.hits, second.misses, second_backbone.images) == (10, 0, 0)
    expected = reference_features(paths)
    want = np.stack([expected[sha256_file(p)] for p in paths])
    np.testing.assert_allclose(first.features, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(second.features, first.features)
    assert first.kept == second.kept == list(range(10))


def test_entries_are_keyed_by_content_not_by_path(tmp_path):
    paths = make_images(tmp_path / "a", 3)
    extract(paths, open_cache(tmp_path / "cache"))
    moved = tmp_path / "b" / "elsewhere.png"
    moved.parent.mkdir()
    shutil.copy(paths[1], moved)
    duplicate = tmp_path / "b" / "copy.png"
    shutil.copy(paths[1], duplicate)
    backbone = Counting()
    result = extract([moved, duplicate], open_cache(tmp_path / "cache"), backbone)
    assert (result.hits, result.misses, backbone.images) == (2, 0, 0)


def test_identical_files_are_computed_once_and_are_no_hit_on_a_cold_cache(tmp_path):
    paths = make_images(tmp_path / "data", 2)
    shutil.copy(paths[0], tmp_path / "data" / "same.png")
    backbone = Counting()
    result = extract(paths + [tmp_path / "data" / "same.png"], open_cache(tmp_path / "c"),
                     backbone)
    assert (result.misses, result.hits, backbone.images) == (2, 0, 2)
    np.testing.assert_array_equal(result.features[2], result.features[0])


def test_a_cache_that_cannot_be_created_warns_and_keeps_features_in_memory(tmp_path):
    blocker = tmp_path / "not-a-folder"        # as a read-only folder would, even for root
    blocker.write_text("x")
    paths = make_images(tmp_path / "data", 3)
    cache = open_cache(blocker / "cache")
    result = extract(paths, cache, Counting())
    assert result.cache_warning.startswith("features will not be cached: ")
    expected = reference_features(paths)
    np.testing.assert_allclose(result.features, [expected[sha256_file(p)] for p in paths],
                               rtol=1e-6, atol=1e-6)


def test_a_full_disk_while_caching_warns_once_and_keeps_every_feature(tmp_path, monkeypatch):
    from full_disk import fill_disk_at_write

    paths = make_images(tmp_path / "data", 4)
    cache = open_cache(tmp_path / "cache")
    fill_disk_at_write(monkeypatch, after_bytes=100)
    result = extract(paths, cache, Counting(), batch_size=2, chunk_size=2)
    monkeypatch.undo()
    assert "No space left on device" in result.cache_warning
    assert (result.misses, result.hits) == (4, 0)
    expected = reference_features(paths)
    np.testing.assert_allclose(result.features, [expected[sha256_file(p)] for p in paths],
                               rtol=1e-6, atol=1e-6)
    assert list(cache.directory.iterdir()) == []          # no shard, no temporary file


def test_undecodable_files_are_skipped_with_a_reason_and_never_cached(tmp_path):
    paths = make_images(tmp_path / "data", 3)
    bad = tmp_path / "data" / "bad.png"
    bad.write_bytes(b"<html>404</html>")
    missing = tmp_path / "data" / "gone.png"
    for _ in range(2):
        backbone = Counting()
        result = extract([paths[0], bad, paths[1], missing, paths[2]],
                         open_cache(tmp_path / "cache"), backbone)
        assert result.kept == [0, 2, 4]
        assert [p for p, _ in result.skipped] == [str(bad), str(missing)]
        assert result.skipped[0][1].startswith("not an image Pillow can read")
        assert result.skipped[1][1].startswith("cannot read the file")
    assert backbone.images == 0 and len(open_cache(tmp_path / "cache")) == 3


def test_namespace_follows_weights_and_recipe_not_layer_names():
    def tiny():
        model = Sequential([Input((2, 2, 3)), Flatten(), Dense(3)])
        model.set_weights([np.ones((12, 3), np.float32), np.zeros(3, np.float32)])
        return model

    first, second = tiny(), tiny()
    assert first.layers[-1].name != second.layers[-1].name      # dense vs dense_1
    assert model_fingerprint(first) == model_fingerprint(second)
    other_weights = tiny()
    other_weights.layers[-1].set_weights([np.ones((12, 3), np.float32),
                                          np.full(3, 0.5, np.float32)])
    assert model_fingerprint(other_weights) != model_fingerprint(first)
    assert cache_namespace(first, RECIPE) == cache_namespace(second, RECIPE)
    assert cache_namespace(first, dict(RECIPE, crop_fraction=0.5)) != \
        cache_namespace(first, RECIPE)


def test_fingerprint_sees_every_weight_of_a_frozen_backbone():
    """Backbones are loaded frozen: all their weights are non-trainable, and must count."""
    first, second = stand_in_backbone(seed=0), stand_in_backbone(seed=1)
    assert not first.trainable_weights and not second.trainable_weights
    assert model_fingerprint(first) != model_fingerprint(second)
    assert model_fingerprint(first) == model_fingerprint(stand_in_backbone(seed=0))
    # freezing changes no output, so it changes no key
    thawed = stand_in_backbone(seed=0)
    thawed.trainable = True
    assert model_fingerprint(thawed) == model_fingerprint(first)


def test_fingerprint_sees_layer_configs_and_the_graph():
    """Same weights, different outputs: a different activation, or a skip connection taken
    from another layer, must give another key."""
    from retrain.engine import Add, Model, ReLU

    def dense(activation):
        model = Sequential([Input((4,)), Dense(3, activation=activation)])
        model.set_weights([np.eye(4, 3, dtype=np.float32), np.zeros(3, np.float32)])
        return model

    assert model_fingerprint(dense("relu")) != model_fingerprint(dense("linear"))

    def skip(from_relu):
        x = Input((3,))
        a = Dense(3)(x)
        b = ReLU()(a)
        c = Dense(3)(b)
        model = Model(x, Add()([b if from_relu else a, c]))
        model.set_weights([np.eye(3, dtype=np.float32), np.full(3, -1.0, np.float32)] * 2)
        return model

    probe = np.array([[-3.0, 2.0, 3.0]], np.float32)
    assert not np.allclose(skip(False).predict(probe), skip(True).predict(probe))
    assert [type(l) for l in skip(False).layers] == [type(l) for l in skip(True).layers]
    assert model_fingerprint(skip(False)) != model_fingerprint(skip(True))
    assert model_fingerprint(skip(False)) == model_fingerprint(skip(False))


def test_cache_keys_are_pinned():
    """Golden values: a change of hash, digest slice or format changes every key, and old
    caches would silently miss (or worse, another model's entries could hit). Changing
    them must be a deliberate edit of this test (and of _FORMAT_VERSION if entries change)."""
    assert cache_namespace(stand_in_backbone(seed=0), RECIPE) == NAMESPACE
    assert cache_namespace(stand_in_backbone(seed=0), RECIPE, {"flip": True}) == \
        AUGMENTED_NAMESPACE


def test_chunks_are_flushed_as_separate_shards(tmp_path):
    paths = make_images(tmp_path / "data", 9)
    extract(paths, open_cache(tmp_path / "cache"), batch_size=2, chunk_size=4)
    shards = sorted(open_cache(tmp_path / "cache").directory.glob("shard-*.h5"))
    sizes = [h5py.File(s, "r").attrs["count"] for s in shards]
    assert sorted(sizes) == [1, 4, 4]


def test_failure_between_write_and_rename_leaves_no_trusted_entry(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "data", 8)
    real_replace = os.replace
    calls = []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise Killed                # as if killed (kill -9) right before the second rename
        real_replace(src, dst)

    class Killed(BaseException):        # not Ctrl-C, which extraction catches to save work
        pass

    monkeypatch.setattr(os, "replace", replace_then_fail)        # every module's os
    with pytest.raises(Killed):
        extract(paths, open_cache(tmp_path / "cache"), batch_size=2, chunk_size=2)
    monkeypatch.undo()
    folder = open_cache(tmp_path / "cache").directory
    assert [p.name.startswith("shard-") for p in folder.iterdir()] == [True]
    expected = reference_features(paths)
    assert assert_cache_entries_correct(tmp_path / "cache", expected) == 2
    backbone = Counting()
    resumed = extract(paths, open_cache(tmp_path / "cache"), backbone)
    assert (resumed.hits, resumed.misses, backbone.images) == (2, 6, 6)


def test_an_unreadable_shard_is_an_error_not_damage(tmp_path, monkeypatch):
    """Permission errors are not disk damage: the shard stays and the user is told."""
    paths = make_images(tmp_path / "data", 2)
    extract(paths, open_cache(tmp_path / "cache"), batch_size=2, chunk_size=2)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(h5py, "File", refuse)
    with pytest.raises(ModelFileError, match=r"Cannot read the feature cache file .*shard-.*"
                                             r"Permission denied"):
        open_cache(tmp_path / "cache")
    monkeypatch.undo()
    assert len(open_cache(tmp_path / "cache")) == 2


def test_damaged_shards_and_temp_files_are_never_trusted(tmp_path):
    paths = make_images(tmp_path / "data", 4)
    extract(paths, open_cache(tmp_path / "cache"), batch_size=2, chunk_size=2)
    folder = open_cache(tmp_path / "cache").directory
    shard = sorted(folder.glob("shard-*.h5"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])            # torn by a disk fault
    (folder / "shard-garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    fresh = folder / f".shard-{'a' * 32}.h5.{'a' * 12}.tmp"
    stale = folder / f".shard-{'b' * 32}.h5.{'b' * 12}.tmp"
    fresh.write_bytes(data[:100])
    stale.write_bytes(data[:100])
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    cache = open_cache(tmp_path / "cache")
    assert sorted(Path(p).name for p, _ in cache.discarded) == sorted(
        [shard.name, "shard-garbage.h5"])
    assert len(cache) == 2 and fresh.exists() and not stale.exists()
    backbone = Counting()
    result = extract(paths, cache, backbone)
    assert (result.hits, result.misses, backbone.images) == (2, 2, 2)
    expected = reference_features(paths)
    np.testing.assert_allclose(result.features,
                               np.stack([expected[sha256_file(p)] for p in paths]),
                               rtol=0, atol=1e-6)


_CHILD = """
import sys, time
from pathlib import Path
from retrain.features import FeatureCache, cache_namespace, extract_features
from stand_in import RECIPE, stand_in_backbone

backbone = stand_in_backbone()
cache = FeatureCache(sys.argv[2], cache_namespace(backbone, RECIPE))
predict = backbone.predict

def slow_predict(x, batch_size=32):
    time.sleep(0.04)
    return predict(x, batch_size=batch_size)

backbone.predict = slow_predict
paths = sorted(Path(sys.argv[1]).glob("*.png"))
extract_features(paths, backbone, RECIPE, cache, batch_size=2, chunk_size=2, progress=False)
"""


def run_child_and_kill(data, cache_root, shards_before_kill, delay):
    """Start an extraction in a child process and SIGKILL it once `shards_before_kill`
    shards exist (then after `delay` more seconds: anywhere inside the next write)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(data), str(cache_root)],
                             env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while len(list(Path(cache_root).rglob("shard-*.h5"))) < shards_before_kill:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()


@pytest.mark.parametrize("shards_before_kill, delay", [(1, 0.0), (2, 0.013), (4, 0.031)])
def test_killed_extraction_resumes_with_no_corrupt_entry(tmp_path, shards_before_kill, delay):
    paths = make_images(tmp_path / "data", 24)
    expected = reference_features(paths)
    run_child_and_kill(tmp_path / "data", tmp_path / "cache", shards_before_kill, delay)
    cached = assert_cache_entries_correct(tmp_path / "cache", expected)
    assert 2 * shards_before_kill <= cached < 24
    backbone = Counting()
    resumed = extract(paths, open_cache(tmp_path / "cache"), backbone)
    assert (resumed.hits, resumed.misses, backbone.images) == (cached, 24 - cached, 24 - cached)
    np.testing.assert_allclose(resumed.features,
                               np.stack([expected[sha256_file(p)] for p in paths]),
                               rtol=0, atol=1e-6)


def test_time_based_flushes_write_every_batch_and_skip_empty_ones(tmp_path):
    paths = make_images(tmp_path / "data", 5)
    bad, worse = tmp_path / "data" / "bad.png", tmp_path / "data" / "worse.png"
    bad.write_bytes(b"junk")
    worse.write_bytes(b"more junk")                # the second batch has no usable image
    result = extract([paths[0], paths[1], bad, worse, paths[2], paths[3], paths[4]],
                     open_cache(tmp_path / "cache"), batch_size=2, flush_seconds=-1.0)
    assert result.misses == 5 and len(result.skipped) == 2
    shards = list(open_cache(tmp_path / "cache").directory.glob("shard-*.h5"))
    assert sorted(h5py.File(s, "r").attrs["count"] for s in shards) == [1, 2, 2]


class Interrupting(Counting):
    """Counting, but Ctrl-C arrives during forward pass number `at` (1-based)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def predict(self, x, batch_size=32):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().predict(x, batch_size)


def test_ctrl_c_writes_what_was_computed_and_the_same_call_resumes(tmp_path):
    paths = make_images(tmp_path / "data", 10)
    with pytest.raises(Interrupted) as stopped:        # nothing had reached the cache yet
        extract(paths, open_cache(tmp_path / "cache"), Interrupting(at=4), batch_size=2)
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert (stopped.value.kept, stopped.value.total) == (6, 10)
    assert assert_cache_entries_correct(tmp_path / "cache", reference_features(paths)) == 6
    again = Counting()
    found = extract(paths, open_cache(tmp_path / "cache"), again, batch_size=2)
    assert (found.hits, found.misses, again.images) == (6, 4, 4)
    # after a chunk was flushed, the count is of both: flushed and written on the way out
    with pytest.raises(Interrupted) as stopped:
        extract(paths, open_cache(tmp_path / "other"), Interrupting(at=5), batch_size=2,
                chunk_size=4)
    assert (stopped.value.kept, stopped.value.total) == (8, 10)
    assert assert_cache_entries_correct(tmp_path / "other", reference_features(paths)) == 8
