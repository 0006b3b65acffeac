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
    backbone's forward passes (images), for tests that assert a cache hit."""
    from retrain import backbones

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
