"""GradientTape's behaviour beyond the TensorFlow numbers: TensorFlow's rules (None for an
unconnected source, nested structures, persistent tapes), layers and models recorded through
their own backward for every layer kind, a custom training step equal to train_on_batch, and
clear errors where a gradient cannot be computed."""
import threading

import numpy as np
import pytest

from test_layer_contract import CASES as LAYER_CASES
from retrain import (SGD, Adam, BatchNormalization, ConfigError, Conv2D, Dense, Dropout,
                     Flatten, GradientError, GradientTape, Input, MaxPooling2D, Model,
                     Sequential, ShapeError, SparseCategoricalCrossentropy, Tensor, Variable,
                     constant, ops, set_random_seed, sparse_categorical_crossentropy)
from retrain.engine.layers import LAYERS


def test_unconnected_sources_get_none_and_the_structure_of_sources_is_kept():
    x, y, unused = Variable([1.0, 2.0]), Variable(3.0), Variable(5.0)
    with GradientTape() as tape:
        loss = ops.reduce_sum(x * y)
    grads = tape.gradient(loss, {"pair": [x, (y, unused)], "alone": unused})
    assert grads["alone"] is None and grads["pair"][1][1] is None
    assert isinstance(grads["pair"][1], tuple)
    np.testing.assert_array_equal(grads["pair"][0].numpy(), [3.0, 3.0])
    assert float(grads["pair"][1][0]) == 3.0


def test_constants_need_watch_and_frozen_variables_are_not_watched():
    c, frozen = constant([2.0]), Variable([2.0], trainable=False)
    with GradientTape() as tape:
        loss = ops.reduce_sum(c * c + frozen * frozen)
    assert tape.gradient(loss, [c, frozen]) == [None, None]
    with GradientTape() as tape:
        tape.watch([c, frozen])
        loss = ops.reduce_sum(c * c + frozen * frozen)
    assert [g.numpy().tolist() for g in tape.gradient(loss, [c, frozen])] == [[4.0], [4.0]]


def test_a_persistent_tape_answers_twice_and_a_plain_one_once():
    x = Variable(3.0)
    with GradientTape(persistent=True) as tape:
        y = x * x
        z = y * y
    assert float(tape.gradient(z, x)) == 108.0     # 4 x^3
    assert float(tape.gradient(y, x)) == 6.0
    with GradientTape() as tape:
        y = x * x
    tape.gradient(y, x)
    with pytest.raises(GradientError, match="persistent=True"):
        tape.gradient(y, x)


def test_a_persistent_tape_differentiates_its_own_gradient_inside_its_block():
    x = Variable(2.0)
    with GradientTape(persistent=True) as tape:
        y = x ** 3
        dy_dx = tape.gradient(y, x)
    assert float(dy_dx) == 12.0 and float(tape.gradient(dy_dx, x)) == 12.0   # 3x^2, 6x


def test_losses_scale_with_the_gradient_that_reaches_them():
    p = constant([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    for loss_fn in (lambda: SparseCategoricalCrossentropy()([1, 0], p),
                    lambda: ops.reduce_mean(sparse_categorical_crossentropy([1, 0], p))):
        grads = []
        for scale in (1.0, 3.0):
            with GradientTape() as tape:
                tape.watch(p)
                loss = scale * loss_fn()
            grads.append(tape.gradient(loss, p).numpy())
        np.testing.assert_allclose(grads[1], 3 * grads[0], rtol=1e-6)
        assert np.any(grads[0])


def test_a_tape_records_its_own_thread_only():
    dense, outputs = Dense(2), []
    with GradientTape():
        worker = threading.Thread(target=lambda: outputs.append(dense(np.ones((1, 3)))))
        worker.start()
        worker.join()
        inside = dense(np.ones((1, 3)))
    assert isinstance(outputs[0], np.ndarray) and isinstance(inside, Tensor)


def test_broadcast_gradients_are_summed_back_to_each_input_shape():
    """Central differences in float64 on shapes numpy broadcasts both ways."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 2, (2, 1, 3)), rng.uniform(1, 2, (4, 1))
    for op in (ops.add, ops.subtract, ops.multiply, ops.divide):
        ta, tb = constant(a), constant(b)
        with GradientTape() as tape:
            tape.watch([ta, tb])
            loss = ops.reduce_sum(ops.square(op(ta, tb)))
        ga, gb = tape.gradient(loss, [ta, tb])
        for value, grad, other in ((a, ga, lambda v: op(v, b)), (b, gb, lambda v: op(a, v))):
            assert grad.shape == value.shape
            numeric = np.zeros_like(value)
            for i in np.ndindex(value.shape):
                step = np.zeros_like(value)
                step[i] = 1e-6
                up = np.sum(np.square(np.asarray(other(value + step))))
                down = np.sum(np.square(np.asarray(other(value - step))))
                numeric[i] = (up - down) / 2e-6
            np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_numpy_operands_stay_on_the_tape():
    x = Variable([1.0, 2.0])
    with GradientTape() as tape:
        y = np.float32(3.0) * x + np.array([1.0, 1.0], np.float32)
    assert isinstance(y, Tensor) and y.dtype == np.float32
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [3.0, 3.0])


def test_the_tape_keeps_the_value_a_variable_had_when_the_op_ran():
    w = Variable(2.0)
    with GradientTape() as tape:
        y = w * w * w
    w.assign(5.0)
    assert float(tape.gradient(y, w)) == 12.0      # 3 w^2 at w = 2, as TensorFlow


def _layer_inputs(class_name):
    shape = LAYER_CASES[class_name][1]
    rng = np.random.default_rng(1)
    if isinstance(shape, list):
        return [rng.normal(size=s).astype(np.float32) for s in shape]
    return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("class_name", sorted(LAYER_CASES))
def test_every_layer_kind_is_recorded_through_its_own_backward(class_name):
    kwargs = LAYER_CASES[class_name][0]
    layer = LAYERS[class_name](**kwargs)
    x = _layer_inputs(class_name)
    xs = [constant(a) for a in (x if isinstance(x, list) else [x])]
    set_random_seed(3)
    direct = layer(x, training=True)
    dy = np.random.default_rng(2).normal(size=direct.shape).astype(np.float32)
    layer.zero_grads()
    dx = layer.backward(dy)
    expected = (dx if isinstance(x, list) else [dx]) + [w.grad.copy() for w in
                                                         layer.trainable_weights]
    set_random_seed(3)
    with GradientTape() as tape:
        tape.watch(xs)
        y = layer(xs if isinstance(x, list) else xs[0], training=True)
        loss = ops.reduce_sum(y * dy)
    np.testing.assert_array_equal(y.numpy(), direct)
    grads = tape.gradient(loss, xs + layer.trainable_weights)
    assert len(grads) == len(expected)
    for ours, reference in zip(grads, expected):
        np.testing.assert_array_equal(ours.numpy(), reference)


def test_a_layer_called_twice_gets_the_gradient_of_both_calls():
    dense = Dense(3, bias_initializer="ones")
    x = constant(np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32))
    dense(x)
    with GradientTape() as tape:
        by_layer = ops.reduce_sum(ops.square(dense(dense(x))))
    with GradientTape() as tape_of_ops:
        k, b = dense.kernel, dense.bias
        by_ops = ops.reduce_sum(ops.square(ops.matmul(ops.matmul(x, k) + b, k) + b))
    assert float(by_layer) == pytest.approx(float(by_ops), rel=1e-6)
    for ours, reference in zip(tape.gradient(by_layer, [k, b]),
                               tape_of_ops.gradient(by_ops, [k, b])):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5)
    assert not np.any(k.grad) and not np.any(b.grad)   # the engine's accumulators untouched


def _course_cnn():
    set_random_seed(0)
    return Sequential([Input((8, 8, 1)), Conv2D(4, 3, activation="relu"), BatchNormalization(),
                       MaxPooling2D(2), Flatten(), Dropout(0.3), Dense(3, activation="softmax")])


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.1, momentum=0.9), lambda: Adam(0.01)],
                         ids=["sgd_momentum", "adam"])
def test_a_custom_training_step_equals_train_on_batch(optimizer):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 8, 8, 1)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])
    engine, custom = _course_cnn(), _course_cnn()
    engine.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
    custom_optimizer, loss_fn = optimizer(), SparseCategoricalCrossentropy()
    for step in range(3):
        set_random_seed(10 + step)      # the same dropout masks on both sides
        engine.train_on_batch(x, y)
        set_random_seed(10 + step)
        with GradientTape() as tape:
            loss = loss_fn(y, custom(x if step else constant(x), training=True))
        grads = tape.gradient(loss, custom.trainable_weights)
        custom_optimizer.apply_gradients(zip(grads, custom.trainable_weights))
    for ours, reference in zip(custom.get_weights(), engine.get_weights()):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)
    assert any(np.any(w != v) for w, v in zip(custom.get_weights(), _course_cnn().get_weights()))


@pytest.mark.parametrize("what", ["layer", "crossentropy", "loss"])
def test_a_second_derivative_through_a_layer_or_a_loss_is_a_clear_error(what):
    model = Sequential([Input((3,)), Dense(2, activation="softmax", name="head")])
    x, w = constant(np.ones((1, 3), np.float32)), Variable(np.ones((3, 2)))
    with GradientTape() as outer:
        outer.watch(x)
        with GradientTape() as inner:
            inner.watch(x)
            if what == "layer":
                loss = ops.reduce_sum(ops.square(model(x)))
            elif what == "crossentropy":
                loss = ops.reduce_mean(sparse_categorical_crossentropy([1], ops.softmax(x @ w)))
            else:
                loss = SparseCategoricalCrossentropy()([1], ops.softmax(x @ w))
        grad = inner.gradient(loss, x)
        assert grad is not None             # the first derivative is fine
    message = {"layer": "Sequential 'sequential", "crossentropy": "A crossentropy",
               "loss": "Loss 'sparse_categorical_crossentropy'"}[what]
    with pytest.raises(GradientError, match=f"{message}.* is differentiable once"):
        outer.gradient(grad, x)


def test_bad_arguments_are_typed_errors_that_say_what_to_do():
    with GradientTape() as tape:
        with pytest.raises(ConfigError, match=r"retrain.constant"):
            tape.watch(np.ones(2))
        y = ops.square(Variable(1.0))
    with pytest.raises(ConfigError, match="Received: ndarray"):
        tape.gradient(y, np.ones(2))
    with pytest.raises(ConfigError, match="exponent"):
        Variable(2.0) ** Variable(2.0)
    with pytest.raises(ConfigError, match="No gradients provided"):
        SGD().apply_gradients([(None, Variable(1.0))])
    with pytest.raises(ShapeError, match="rank >= 2"):
        ops.matmul(constant([1.0, 2.0]), constant([[1.0], [2.0]]))
    inputs = Input((2,))
    two_outputs = Model(inputs, [Dense(1)(inputs), Dense(1)(inputs)])
    with GradientTape(), pytest.raises(ConfigError, match="several outputs"):
        two_outputs(np.ones((1, 2)))
