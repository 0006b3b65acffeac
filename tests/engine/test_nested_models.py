"""A Model is a Layer (as in Keras 3): called on a tensor of another graph it is one node
of it, computing and differentiating exactly what its layers would compute inlined, and a
call's `training` pins its mode (Keras's `base_model(inputs, training=False)`)."""
import numpy as np
import pytest

from retrain.engine import (SGD, BatchNormalization, Dense, Dropout, GradientTape, Input, Model,
                            Sequential, clone_model, constant, ops, set_random_seed)
from retrain.engine.errors import ConfigError, ShapeError


def _nested_and_flat():
    """The same layers twice: as a model nested in a model, and as one flat graph made by
    hand (no clone_model), with the nested one's weights."""
    set_random_seed(1)
    inner_in = Input((5,))
    h = Dense(6, activation="relu", name="inner_dense")(inner_in)
    h = BatchNormalization(name="inner_bn")(h)
    inner = Model(inner_in, Dense(4, activation="tanh", name="inner_out")(h), name="inner")
    x = Input((3,))
    y = Dense(2, activation="softmax", name="out")(inner(Dense(5, name="first")(x)))
    nested = Model(x, y, name="outer")

    x = Input((3,))
    h = Dense(5, name="first")(x)
    h = Dense(6, activation="relu", name="inner_dense")(h)
    h = BatchNormalization(name="inner_bn")(h)
    h = Dense(4, activation="tanh", name="inner_out")(h)
    flat = Model(x, Dense(2, activation="softmax", name="out")(h), name="flat")
    for name in ("first", "inner_dense", "inner_bn", "inner_out", "out"):
        source = nested.get_layer("inner").get_layer(name) if name.startswith("inner") \
            else nested.get_layer(name)
        flat.get_layer(name).set_weights(source.get_weights())
    return nested, flat


def test_a_nested_model_computes_and_differentiates_what_its_layers_do_inlined():
    nested, flat = _nested_and_flat()
    assert [type(l).__name__ for l in nested.layers] == ["InputLayer", "Dense", "Model", "Dense"]
    assert nested.count_params() == flat.count_params()
    assert len(nested.trainable_weights) == len(flat.trainable_weights) == 10
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    dy = np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32)
    for training in (False, True):
        np.testing.assert_array_equal(nested.forward(x, training=training),
                                      flat.forward(x, training=training))
        nested.zero_grads(), flat.zero_grads()
        np.testing.assert_array_equal(nested.backward(dy, input_grad=True),
                                      flat.backward(dy, input_grad=True))
        for a, b in zip(nested.trainable_weights, flat.trainable_weights):
            assert a.name == b.name and a.grad.any()
            np.testing.assert_array_equal(a.grad, b.grad)
    # three training steps move both alike (BatchNorm's moving statistics included)
    y = np.arange(7) % 2
    for model in (nested, flat):
        model.compile(SGD(0.1), "sparse_categorical_crossentropy")
        for _ in range(3):
            model.train_on_batch(x, y)
    for a, b in zip(nested.weights, flat.weights):
        np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_allclose(nested.predict(x), flat.predict(x), rtol=0, atol=1e-6)


def test_a_gradient_tape_differentiates_a_nested_model_called_twice():
    """Each recorded call keeps the caches of the nested model's own layers too: the first
    call's gradient survives the second call's forward."""
    nested, flat = _nested_and_flat()
    rng = np.random.default_rng(3)
    x1, x2, w1, w2 = (rng.normal(size=(5, n)).astype(np.float32) for n in (3, 3, 2, 2))
    grads = []
    for model in (nested, flat):
        with GradientTape() as tape:
            loss = ops.add(ops.reduce_sum(ops.multiply(model(constant(x1)), constant(w1))),
                           ops.reduce_sum(ops.multiply(model(constant(x2)), constant(w2))))
        grads.append(tape.gradient(loss, model.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-7)


def test_a_pinned_submodel_keeps_its_mode_while_the_outer_model_trains():
    """Dropout and BatchNorm inside `inner(x, training=False)` stay in inference mode when
    the outer model trains, while the outer Dropout follows the outer mode; `training=True`
    pins the other way."""
    inner_in = Input((64,))
    bn = BatchNormalization(name="bn")
    inner = Model(inner_in, Dropout(0.5, name="inner_drop")(bn(inner_in)), name="inner")
    x = Input((64,))
    pinned = inner(x, training=False)
    outer = Model(x, [pinned, Dropout(0.5, name="outer_drop")(pinned)])
    ones = np.ones((8, 64), np.float32)
    inside, after = outer.forward(ones * 3, training=True)
    np.testing.assert_allclose(inside, ones * 3 / np.sqrt(1 + 1e-3), rtol=1e-6)  # inference
    np.testing.assert_array_equal(bn.moving_mean.value, np.zeros(64))   # no statistics update
    assert 0.3 < (after == 0).mean() < 0.7                              # the outer one drops
    x = Input((64,))
    always = Model(x, Sequential([Input((64,)), Dropout(0.5)], name="drop")(x, training=True))
    assert (always.forward(ones, training=False) == 0).any()            # pinned on


def test_the_inference_plan_inlines_a_nested_model():
    nested, flat = _nested_and_flat()
    x = np.random.default_rng(2).normal(size=(9, 3)).astype(np.float32)
    np.testing.assert_allclose(nested.predict(x), nested.forward(x), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(nested.predict(x), flat.predict(x))


def test_clone_model_inlines_nested_models_keeping_their_pins():
    inner = Sequential([Input((16,)), Dropout(0.5, name="pinned_drop")], name="inner")
    x = Input((16,))
    model = Model(x, Dense(3, name="head")(inner(x, training=False)))
    copy = clone_model(model)
    assert [l.name for l in copy.layers][1:] == ["pinned_drop", "head"]
    assert not any(isinstance(l, Model) for l in copy.layers)
    ones = np.ones((4, 16), np.float32)
    np.testing.assert_array_equal(copy.forward(ones, training=True),
                                  model.forward(ones, training=True))


def test_a_nested_model_is_saved_through_a_flat_copy(tmp_path):
    nested, _ = _nested_and_flat()
    with pytest.raises(ConfigError, match=r"holds model\(s\) \['inner'\]"):
        nested.save(tmp_path / "nested.h5")
    clone_model(nested).save(tmp_path / "flat.h5")


def test_a_model_called_on_a_tensor_of_the_wrong_shape_says_so():
    inner = Sequential([Input((4,)), Dense(2)], name="small")
    with pytest.raises(ShapeError, match=r"'small' expects input shape\(s\) \[\(None, 4\)\]"):
        inner(Input((5,)))
