"""Fine-tuning and augmented views through the pipeline: the cut-point cache, views that
repeat exactly, the trained top in the exported model, BatchNorm kept in inference mode."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from retrain import augment, preprocess
from retrain.backbones import block_names
from retrain.backbones.cut import split_backbone
from retrain.engine import Model, load_model
from retrain.cli_text import info_lines
from retrain.errors import ConfigError
from retrain.export import describe
from retrain.fit import HeadOptions, _Views, build_classifier, build_head, train_head
from retrain.pipeline import RunOptions, evaluate_model, run
from numerics import float32_paths_atol
from stand_in import LITE_RECIPE, lite_stand_in, use_lite_stand_in

ROOT = Path(__file__).resolve().parents[2]


def stripes(root, per_class=12, size=40, seed=0):
    """Three learnable classes of 40x40 images: horizontal stripes, vertical stripes, dots."""
    rng = np.random.default_rng(seed)
    for name in ("horizontal", "vertical", "dots"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            period = int(rng.integers(4, 9))
            grid = np.indices((size, size))
            if name == "horizontal":
                on = (grid[0] // (period // 2)) % 2 == 0
            elif name == "vertical":
                on = (grid[1] // (period // 2)) % 2 == 0
            else:
                on = (grid[0] % period < 2) & (grid[1] % period < 2)
            pixels = np.where(on[..., None], rng.integers(150, 255, 3), rng.integers(0, 90, 3))
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}{i:02d}.png")
    return root


def options(cache, **head):
    return RunOptions(cache_dir=cache, progress=False, val_percent=20, test_percent=20,
                      head=HeadOptions(**dict({"epochs": 3, "seed": 0}, **head)))


# -- views ----------------------------------------------------------------------------------
def test_views_repeat_exactly_and_stay_inside_their_bounds():
    recipe = augment.augmentation_recipe()
    first = [augment.view_parameters("ab" * 32, k, recipe) for k in range(1, 40)]
    again = [augment.view_parameters("ab" * 32, k, recipe) for k in range(1, 40)]
    other = [augment.view_parameters("cd" * 32, k, recipe) for k in range(1, 40)]
    assert first == again and first != other
    assert len({p["area"] for p in first}) == len(first)          # every view differs
    for p in first:
        assert recipe["scale"][0] <= p["area"] <= recipe["scale"][1]
        assert recipe["ratio"][0] <= p["ratio"] <= recipe["ratio"][1] + 1e-9
        assert 0.8 <= p["brightness"] <= 1.2 and 0.8 <= p["contrast"] <= 1.2
    assert {p["flip"] for p in first} == {True, False}
    no_flip = augment.augmentation_recipe(flip=False)
    assert not any(augment.view_parameters("ab" * 32, k, no_flip)["flip"] for k in range(1, 40))
    assert augment.augmentation_hash(recipe) != augment.augmentation_hash(no_flip)


def test_an_identity_view_is_the_plain_view_and_a_flip_mirrors_it():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    recipe = dict(LITE_RECIPE, crop_fraction=0.875)
    identity = {"area": 1.0, "ratio": 1.0, "x": 0.5, "y": 0.5, "flip": False,
                "brightness": 1.0, "contrast": 1.0}
    plain = preprocess.crop_and_resize(image, recipe)
    np.testing.assert_array_equal(preprocess.crop_and_resize_view(image, recipe, identity), plain)
    mirrored = preprocess.crop_and_resize_view(image, recipe, dict(identity, flip=True))
    np.testing.assert_array_equal(mirrored, plain[:, ::-1])
    darker = preprocess.crop_and_resize_view(image, recipe, dict(identity, brightness=0.5))
    assert abs(darker.mean() - plain.mean() / 2) < 1.0


def test_each_epoch_shows_every_image_once_in_a_new_view():
    plain = np.zeros((10, 2), np.float32)
    views = np.stack([np.full((10, 2), k, np.float16) for k in (1, 2, 3)], axis=1)
    source = _Views(plain, views, np.arange(10), (2,), batch_size=4, seed=0)
    seen = {i: [] for i in range(10)}
    for _ in range(4):
        labels = []
        for step in range(len(source)):
            x, y = source[step]
            labels += list(y)
            for row, label in zip(x, y):
                seen[int(label)].append(int(row[0]))
        source.on_epoch_end()
        assert sorted(labels) == list(range(10))
    assert all(sorted(v) == [0, 1, 2, 3] for v in seen.values())   # each view once in 4 epochs


# -- the trained top ---------------------------------------------------------------------------
def test_cut_points_follow_the_block_names():
    model = lite_stand_in()
    names = block_names(model)
    assert names[:2] == ["block1a", "block2a"] and names[-3:] == ["block6d", "block7a", "top"]
    assert len(names) == 17
    bottom, top, cut = split_backbone(model, 3)
    assert cut == "block6d" and bottom.outputs[0].layer.name == "block6c_add"
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    # Two computation paths: the top's layer-by-layer forward on the bottom's plan against
    # the whole model's plan (BatchNorm folded), so the sums run in other orders.
    whole = model.predict(x)
    np.testing.assert_allclose(top.forward(bottom.predict(x)), whole, rtol=0,
                               atol=float32_paths_atol(model, whole))
    with pytest.raises(ConfigError, match="between 0 and 17"):
        split_backbone(model, 18)


def test_top_blocks_train_with_batchnorm_in_inference_mode():
    """gamma/beta and kernels of the trained blocks move; moving statistics do not; the
    frozen part of the backbone is untouched."""
    model = lite_stand_in()
    before = {l.name: l.get_weights() for l in model.layers if l.weights}
    bottom, top, _ = split_backbone(model, 2)
    rng = np.random.default_rng(0)
    x = bottom.predict(rng.normal(size=(24, 32, 32, 3)).astype(np.float32))
    y = np.arange(24) % 3
    flat = x.reshape(len(x), -1)
    classifier, _ = train_head((flat, y), (flat[:0], y[:0]), 3,
                               HeadOptions(epochs=3, fine_tune=2), progress=False, top=top)
    bn = top.get_layer("block7a_bn")
    gamma, beta, mean, variance = bn.get_weights()
    old = before["block7a_bn"]
    assert not np.allclose(gamma, old[0]) and not np.allclose(beta, old[1])
    np.testing.assert_array_equal(mean, old[2])
    np.testing.assert_array_equal(variance, old[3])
    assert not np.allclose(top.get_layer("top_conv").get_weights()[0],
                           before["top_conv"][0])
    for layer in model.layers:
        for now, then in zip(layer.get_weights(), before.get(layer.name, [])):
            np.testing.assert_array_equal(now, then)


def test_the_head_trains_alone_first_then_with_the_top_at_half_its_rate(monkeypatch):
    """Phase 1 (freeze_epochs) moves the head and leaves the top exactly as it was; phase 2
    moves both, the head at half its rate and the top at the backbone rate; the history
    holds both phases."""
    model = lite_stand_in()
    bottom, top, _ = split_backbone(model, 2)
    rng = np.random.default_rng(0)
    x = bottom.predict(rng.normal(size=(24, 32, 32, 3)).astype(np.float32))
    flat, y = x.reshape(len(x), -1), np.arange(24) % 3
    phases, fit = [], Model.fit

    def recording_fit(self, *args, **kwargs):
        head = self.get_layer("head")
        before = [top.get_weights(), head.get_weights()]
        rates = [o.learning_rate.warmup_target or o.learning_rate.initial_learning_rate
                 for o, _ in getattr(self.optimizer, "pairs", [(self.optimizer, None)])]
        history = fit(self, *args, **kwargs)
        moved = [not all(np.array_equal(a, b) for a, b in zip(then, part.get_weights()))
                 for then, part in zip(before, (top, head))]
        phases.append((top.trainable, moved, rates, kwargs["epochs"]))
        return history

    monkeypatch.setattr(Model, "fit", recording_fit)
    options = HeadOptions(epochs=2, freeze_epochs=2, fine_tune=2, learning_rate=0.004,
                          backbone_learning_rate=0.001)
    _, history = train_head((flat, y), (flat[:6], y[:6]), 3, options, progress=False, top=top)
    assert phases == [(False, [False, True], [0.004], 2),
                      (True, [True, True], [0.002, 0.001], 2)]
    assert len(history["loss"]) == len(history["val_loss"]) == 4
    assert (history["freeze_epochs"], history["best_epoch"], history["restored_best"]) == (
        2, 4, False)
    # without a head-alone phase the head keeps its full rate from the start
    phases.clear()
    _, top, _ = split_backbone(model, 2)          # a model sits in one graph: a fresh top
    train_head((flat, y), (flat[:6], y[:6]), 3, replace(options, freeze_epochs=0),
               progress=False, top=top)
    assert [(trainable, rates) for trainable, _, rates, _ in phases] == [
        (True, [0.004, 0.001])]
    assert replace(options, freeze_epochs=0).tuning_head_rate == 0.004


def test_the_second_phase_restarts_its_schedule_and_warmup_is_clipped(monkeypatch):
    """Each phase gets a fresh schedule over its own epochs (documented; metrics.json
    reports it): a linear warmup of warmup_epochs, clipped to leave at least one epoch of
    cosine decay, then Keras's CosineDecay to 0 at the phase's end. Rates are read at every
    optimizer step and compared with the formula written out here."""
    from retrain.engine.optimizers import Optimizer

    steps, apply = [], Optimizer.apply_gradients

    def recording(self, grads_and_vars):
        steps.append((id(self), self.current_learning_rate))
        return apply(self, grads_and_vars)

    monkeypatch.setattr(Optimizer, "apply_gradients", recording)
    model = lite_stand_in()
    bottom, top, _ = split_backbone(model, 2)
    x = bottom.predict(np.random.default_rng(0).normal(size=(24, 32, 32, 3)).astype(np.float32))
    flat, y = x.reshape(len(x), -1), np.arange(24) % 3
    options = HeadOptions(epochs=3, freeze_epochs=1, warmup_epochs=1, fine_tune=2,
                          batch_size=8, learning_rate=0.004, backbone_learning_rate=0.001)
    train_head((flat, y), (flat[:0], y[:0]), 3, options, progress=False, top=top)
    by_optimizer = {}
    for owner, rate in steps:
        by_optimizer.setdefault(owner, []).append(rate)
    phase1_head, phase2_head, phase2_top = by_optimizer.values()

    def expected(peak, epochs, warmup_epochs, per_epoch=3):
        total, warmup = epochs * per_epoch, min(warmup_epochs, epochs - 1) * per_epoch
        return [peak * s / warmup if s < warmup else
                peak * 0.5 * (1 + np.cos(np.pi * (s - warmup) / (total - warmup)))
                for s in range(total)]

    np.testing.assert_allclose(phase1_head, expected(0.004, 1, 1), rtol=1e-12)
    np.testing.assert_allclose(phase2_head, expected(0.002, 3, 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(phase2_top, expected(0.001, 3, 1), rtol=1e-12, atol=1e-15)


def test_classifier_predict_equals_its_forward():
    model = lite_stand_in()
    _, top, _ = split_backbone(model, 1)
    head = build_head(1280, 3)
    classifier = build_classifier(head, top)
    x = np.random.default_rng(0).normal(size=(5,) + top.inputs[0].shape[1:]).astype(np.float32)
    np.testing.assert_allclose(classifier.predict(x), classifier.forward(x), atol=1e-6)


# -- the pipeline ------------------------------------------------------------------------------
def test_fine_tuned_run_caches_cut_activations_and_views_and_exports_the_trained_top(
        tmp_path, monkeypatch):
    forwards = use_lite_stand_in(monkeypatch)
    data = stripes(tmp_path / "data")
    cache = tmp_path / "cache"
    first = run(data, tmp_path / "run", options(cache, fine_tune=2, augment=2))
    train = first.metrics["train"]["count"]
    assert first.metrics["cache"] == {"hits": 0, "misses": 36, "view_hits": 0,
                                      "view_misses": 2 * train}
    assert forwards["images"] == 36 + 2 * train
    record = first.metrics["training"]
    assert (record["fine_tune"], record["cut"], record["augment"]) == (2, "block7a", 2)
    # 3 epochs of the head alone, then 3 with the top; fine-tuning keeps the last epoch
    assert (record["freeze_epochs"], record["epochs_run"], record["best_epoch"]) == (3, 6, 6)
    # a second run with the same N and K computes nothing; a third view computes only it
    again = run(data, tmp_path / "again", options(cache, fine_tune=2, augment=2))
    assert again.metrics["cache"] == {"hits": 36, "misses": 0, "view_hits": 2 * train,
                                      "view_misses": 0}
    more = run(data, tmp_path / "more", options(cache, fine_tune=2, augment=3))
    assert more.metrics["cache"]["view_misses"] == train
    assert more.metrics["cache"]["view_hits"] == 2 * train
    assert forwards["images"] == 36 + 3 * train
    # views without mirror images are other views: they are computed, not read
    unflipped = run(data, tmp_path / "unflipped", options(cache, fine_tune=2, augment=1,
                                                         flip=False))
    assert unflipped.metrics["cache"]["view_misses"] == train
    # the exported model holds the trained top, and evaluate reproduces fit's metrics
    model = load_model(first.model_path)
    pretrained = lite_stand_in()
    assert not np.allclose(model.get_layer("top_conv").get_weights()[0],
                           pretrained.get_layer("top_conv").get_weights()[0])
    np.testing.assert_array_equal(model.get_layer("block6d_project_conv").get_weights()[0],
                                  pretrained.get_layer("block6d_project_conv").get_weights()[0])
    assert model.metadata["training"]["fine_tune"] == 2
    for split in ("val", "test"):
        metrics = evaluate_model(model, data, split)
        assert metrics["accuracy"] == first.metrics[split]["accuracy"]
        assert metrics["loss"] == pytest.approx(first.metrics[split]["loss"], abs=1e-4)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["training"]["backbone_learning_rate"] == 5e-4
    assert saved["training"]["fine_tune_head_learning_rate"] == 1e-3
    # `retrain info` counts what trained (the head and the 2 blocks) and the 6 epochs run
    _, top, _ = split_backbone(lite_stand_in(), 2)
    trained = sum(w.value.size for w in top.trainable_weights) + 1280 * 3 + 3
    info = describe(model)
    assert info["params"]["trainable"] == saved["training"]["trainable_params"] == trained
    text = "\n".join(info_lines(info, first.model_path))
    assert f"{trained:,} trainable" in text
    assert re.search(r"head\.epochs: +6\n", text) and re.search(r"epochs_asked: +3\n", text)


def test_a_view_cache_killed_mid_write_resumes_without_a_corrupt_entry(tmp_path):
    """kill -9 while views are computed: the rerun completes, reads every shard, and
    computes only what was not yet stored."""
    data = stripes(tmp_path / "data", per_class=40)
    cache = tmp_path / "cache"
    script = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests' / 'pipeline')!r})
from stand_in import lite_stand_in
from retrain import backbones, features
backbones.load_backbone = lambda name: lite_stand_in()
from retrain.pipeline import RunOptions, run
from retrain.fit import HeadOptions
original = features.FeatureCache.add
def add(self, keys, values):
    original(self, keys, values)
    if ":" in keys[0]:
        print("view shard", flush=True)
features.FeatureCache.add = add
options = RunOptions(cache_dir={str(cache)!r}, progress=False, extract_batch_size=8,
                     head=HeadOptions(epochs=1, fine_tune=1, augment=int(sys.argv[1])))
extract = features._extract_misses
def small_chunks(todo, backbone, recipe, cache, **kw):
    return extract(todo, backbone, recipe, cache, **dict(kw, chunk_size=int(sys.argv[2])))
features._extract_misses = small_chunks
run({str(data)!r}, sys.argv[3], options)
"""
    child = subprocess.Popen([sys.executable, "-c", script, "6", "8", str(tmp_path / "r1")],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout.readline().strip() == "view shard"
    child.stdout.readline()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = subprocess.run([sys.executable, "-c", script, "6", "512", str(tmp_path / "r2")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    views = 6 * metrics["train"]["count"]
    assert 0 < metrics["cache"]["view_hits"] < views
    assert metrics["cache"]["view_hits"] + metrics["cache"]["view_misses"] == views
    for shard in cache.glob("*/shard-*.h5"):
        with h5py.File(shard, "r") as f:
            assert len(f["keys"]) == f["features"].shape[0] == int(f.attrs["count"])


def test_too_many_blocks_are_refused_before_any_image_is_read(tmp_path, monkeypatch):
    """--fine-tune 30 on a 17-block backbone: refused before step 1, naming the range, with
    no run folder made and no image read."""
    forwards = use_lite_stand_in(monkeypatch)
    import retrain.pipeline as pipeline
    monkeypatch.setattr(pipeline, "ingest", lambda data: pytest.fail("ingest ran"))
    stages = []
    with pytest.raises(ConfigError, match="between 0 and 17.*Received: 30"):
        run(stripes(tmp_path / "data", per_class=2), tmp_path / "run",
            options(tmp_path / "cache", fine_tune=30), on_stage=stages.append)
    assert stages == [] and forwards["images"] == 0 and not (tmp_path / "run").exists()
