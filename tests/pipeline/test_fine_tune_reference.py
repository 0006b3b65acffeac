"""The fine-tuned top (block6d, block7a, top + a softmax head) against the same top trained
in PyTorch from the same weights (tests/fixtures/finetune, made by its make_reference.py):
BatchNorm in inference mode with gamma/beta trained, AdamW with two learning rates, label
smoothing. Losses, probabilities, first gradients and weights after 3 steps agree to 1e-4."""
from pathlib import Path

import numpy as np
from retrain.backbones import load_backbone
from retrain.backbones.cut import split_backbone
from retrain.engine import AdamW, MultiOptimizer, SparseCategoricalCrossentropy
from retrain.fit import build_classifier, build_head

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "finetune" / "finetune_reference.npz"
WEIGHTS_SHA256 = "63b1ce839739497530d743f040142e8c98cbfcb43da83dd5331746ad777111de"


def _variable(top, head, key):
    layer, weight = key.split("/")
    part = head if layer == "predictions" else top
    return next(w for w in part.get_layer(layer).weights if w.name == weight)


def test_three_fine_tuning_steps_match_pytorch():
    ref = np.load(FIXTURE)
    backbone = load_backbone("efficientnet_lite0")
    # The fixture was made from a converted file with sha256 WEIGHTS_SHA256; later converter
    # versions write other metadata, same weights. Different weights would fail the
    # probabilities check below at once.
    _, top, cut = split_backbone(backbone, 3)
    assert cut == "block6d"
    head = build_head(1280, 10)
    head.get_layer("predictions").set_weights([ref["head_kernel"], ref["head_bias"]])
    classifier = build_classifier(head, top)
    optimizer = MultiOptimizer([
        (AdamW(1e-3, weight_decay=0.01, epsilon=1e-12), head.trainable_weights),
        (AdamW(1e-4, weight_decay=0.01, epsilon=1e-12), top.trainable_weights)])
    classifier.compile(optimizer, SparseCategoricalCrossentropy(label_smoothing=0.1), metrics=[])
    keys = sorted(k[len("final:"):] for k in ref.files if k.startswith("final:"))
    assert len(keys) == len(classifier.trainable_weights) == 2 + 2 * 9 + 3   # head; 2 MBConv blocks; top
    np.testing.assert_allclose(classifier.forward(ref["x"]), ref["probabilities"], atol=1e-5)
    losses = []
    for step in range(3):
        losses.append(classifier.train_on_batch(ref["x"], ref["y"]))
        if step == 0:
            for key in keys:
                grad = _variable(top, head, key).grad.reshape(-1)[ref[f"index:{key}"]]
                np.testing.assert_allclose(grad, ref[f"grad0:{key}"], rtol=1e-3, atol=1e-6,
                                           err_msg=key)
    np.testing.assert_allclose(losses, ref["losses"], atol=1e-5)
    for key in keys:
        final = _variable(top, head, key).value.reshape(-1)[ref[f"index:{key}"]]
        np.testing.assert_allclose(final, ref[f"final:{key}"], atol=1e-4, err_msg=key)
    for layer in top.layers:
        if type(layer).__name__ == "BatchNormalization":
            mean = backbone.get_layer(layer.name).moving_mean.value
            np.testing.assert_array_equal(layer.moving_mean.value, mean)
