"""A tiny deterministic stand-in for the ImageNet backbone, for tests where the 1.8 GFLOP
EfficientNet is not the point: 8x8 RGB -> 16 tanh features, weights from a fixed seed.

It is a real engine model (Flatten + Dense), so it saves, loads and exports like the real
backbone, and it carries the same metadata keys load_backbone gives."""
import numpy as np

from retrain.engine import Dense, Flatten, Input, Sequential

RECIPE = {"input_size": [8, 8], "crop": "center", "crop_fraction": 1.0,
          "resize_filter": "bilinear", "mean": [127.5, 127.5, 127.5],
          "std": [127.5, 127.5, 127.5], "channel_order": "RGB"}


def stand_in_backbone(seed=0):
    """A frozen feature extractor; the same `seed` always gives the same weights."""
    model = Sequential([Input((8, 8, 3)), Flatten(name="stand_in_flatten"),
                        Dense(16, activation="tanh", name="stand_in_features")],
                       name="stand_in")
    rng = np.random.default_rng(seed)
    dense = model.get_layer("stand_in_features")
    dense.set_weights([rng.normal(0, 0.1, (192, 16)).astype(np.float32),
                       np.zeros(16, np.float32)])
    model.trainable = False
    model.metadata = {"backbone": "stand_in", "preprocessing": dict(RECIPE),
                      "provenance": {"source": "tests/pipeline/stand_in.py",
                                     "weights_sha256": f"stand-in-seed-{seed}"}}
    return model


def use_stand_in(monkeypatch, seed=0):
    """Make the pipeline's load_backbone return the stand-in; returns a counter of the
    backbone's forward passes (images), for tests that assert a cache hit. `--runtime
    auto` then means numpy, whose predict the counter wraps (tests/test_runtimes.py runs
    the stand-in on the compiled runtimes)."""
    from retrain import backbones, runtimes

    monkeypatch.setattr(runtimes, "_PREFERENCE", ("numpy",))

    forwards = {"images": 0}

    def load_backbone(name):
        model = stand_in_backbone(seed)
        predict = model.predict

        def counting_predict(x, *args, **kwargs):
            forwards["images"] += len(x)
            return predict(x, *args, **kwargs)

        model.predict = counting_predict
        return model

    monkeypatch.setattr(backbones, "load_backbone", load_backbone)
    return forwards


LITE_RECIPE = dict(RECIPE, input_size=[32, 32])


_LITE_WEIGHTS = {}


def _init_batch_norms(model, seed):
    """Data-dependent init: each BatchNorm's moving statistics become those of its input on
    a random batch (momentum 0 for one training-mode pass), so activations keep their scale
    through the 17 blocks instead of vanishing as with mean 0 / variance 1."""
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    for layer in norms:
        layer.momentum = 0.0
    model.forward(np.random.default_rng(seed).normal(size=(16, 32, 32, 3)), training=True)
    for layer in norms:
        layer.momentum = 0.99


def lite_stand_in(seed=0):
    """The real EfficientNet-Lite0 graph at 32x32 with seeded random weights: named blocks
    to fine-tune (block7a, top, ...) at a fraction of the cost of the ImageNet one."""
    from retrain.backbones import efficientnet_lite0
    from retrain.engine import set_random_seed

    set_random_seed(seed)
    model = efficientnet_lite0(include_top=False, pooling="avg", weights=None,
                               input_shape=(32, 32, 3))
    if seed in _LITE_WEIGHTS:
        model.set_weights(_LITE_WEIGHTS[seed])
    else:
        _init_batch_norms(model, seed)
        # computed once a process: its matmuls round by OpenBLAS's thread count, which a
        # runtime loading in a thread sets to one (runtimes._Loading)
        _LITE_WEIGHTS[seed] = model.get_weights()
    model.trainable = False
    model.metadata = {"backbone": "lite_stand_in", "preprocessing": dict(LITE_RECIPE),
                      "provenance": {"source": "tests/pipeline/stand_in.py",
                                     "weights_sha256": f"lite-stand-in-seed-{seed}"}}
    return model


def use_lite_stand_in(monkeypatch, seed=0):
    """Make load_backbone return the Lite-shaped stand-in; returns a counter of the images
    its bottom part (what the cache stores) runs on. `--runtime auto` (RunOptions' default
    too) then means numpy, whose predict the counter wraps."""
    from retrain import backbones, runtimes
    from retrain.engine import Model

    forwards = {"images": 0}
    predict = Model.predict

    def counting_predict(self, x, *args, **kwargs):
        if self.name.startswith("efficientnet_lite0"):
            forwards["images"] += len(x)
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(Model, "predict", counting_predict)
    monkeypatch.setattr(runtimes, "_PREFERENCE", ("numpy",))
    monkeypatch.setattr(backbones, "load_backbone", lambda name: lite_stand_in(seed))
    return forwards
