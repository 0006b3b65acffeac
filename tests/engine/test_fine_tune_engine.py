"""What fine-tuning adds to the engine: CosineDecay with warmup (Keras's schedule), optimizers
on a schedule, MultiOptimizer (two learning rates), fit on a batch source; and clone_model,
which cuts a backbone (retrain/backbones/cut.py)."""
import math

import numpy as np
import pytest

from retrain.engine import (SGD, Add, CosineDecay, Dense, Input, Model, MultiOptimizer,
                            Sequential, Variable, clone_model, set_random_seed)
from retrain.engine.errors import ConfigError


def test_cosine_decay_follows_keras_formula():
    # keras.optimizers.schedules.CosineDecay: initial * ((1 - alpha) * 0.5 * (1 + cos(pi *
    # min(step, decay_steps) / decay_steps)) + alpha)
    plain = CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert [plain(s) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert plain(2) == pytest.approx(0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)) + 0.1)
    # warmup: linear from initial to warmup_target over warmup_steps, then the cosine
    warm = CosineDecay(0.0, decay_steps=8, warmup_target=2.0, warmup_steps=4)
    assert [warm(s) for s in (0, 1, 2, 4, 8, 12, 50)] == pytest.approx(
        [0.0, 0.5, 1.0, 2.0, 1.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="decay_steps >= 1"):
        CosineDecay(1.0, decay_steps=0)


def test_an_optimizer_takes_each_step_at_its_scheduled_rate():
    variable = Variable(np.zeros(1), name="w")
    optimizer = SGD(learning_rate=CosineDecay(0.0, 2, warmup_target=1.0, warmup_steps=2))
    rates = []
    for _ in range(4):
        rates.append(optimizer.current_learning_rate)
        before = float(variable.value[0])
        optimizer.apply_gradients([(np.ones(1), variable)])
        assert float(variable.value[0]) == pytest.approx(before - rates[-1])
    assert rates == pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert optimizer.get_config()["learning_rate"]["class_name"] == "CosineDecay"


def test_multi_optimizer_gives_each_variable_its_own_rate():
    fast, slow = Variable(np.zeros(2), name="fast"), Variable(np.zeros(2), name="slow")
    for v in (fast, slow):
        v.grad = np.ones(2, np.float32)
    optimizer = MultiOptimizer([(SGD(1.0), [fast]), (SGD(0.01), [slow])])
    optimizer.apply([fast, slow])
    np.testing.assert_allclose(fast.value, [-1.0, -1.0])
    np.testing.assert_allclose(slow.value, [-0.01, -0.01])
    with pytest.raises(ConfigError, match="two optimizers"):
        MultiOptimizer([(SGD(1.0), [fast]), (SGD(0.1), [fast])])
    with pytest.raises(ConfigError, match="no optimizer was given 'stranger'"):
        optimizer.apply([Variable(np.zeros(1), name="stranger")])


class _Batches:
    """A batch source yielding fixed batches in a fixed order; counts epoch ends."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size, self.epochs = x, y, batch_size, 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, step):
        part = slice(step * self.batch_size, (step + 1) * self.batch_size)
        return self.x[part], self.y[part]

    def on_epoch_end(self):
        self.epochs += 1


def _model():
    set_random_seed(4)
    model = Sequential([Input((5,)), Dense(3, activation="softmax")])
    model.compile(SGD(0.1), "sparse_categorical_crossentropy")
    return model


def test_fit_on_a_batch_source_equals_fit_on_the_same_arrays():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 5)).astype(np.float32), rng.integers(0, 3, 10)
    weights = {0: 2.0, 1: 1.0, 2: 0.5}
    arrays, source = _model(), _model()
    a = arrays.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, class_weight=weights)
    batches = _Batches(x, y, 4)
    b = source.fit(batches, batch_size=4, epochs=3, verbose=0, class_weight=weights,
                   validation_data=(x, y))
    for left, right in zip(arrays.get_weights(), source.get_weights()):
        np.testing.assert_allclose(left, right, rtol=1e-6)
    assert a.history["loss"] == pytest.approx(b.history["loss"])
    assert batches.epochs == 3 and len(b.history["val_loss"]) == 3
    with pytest.raises(ConfigError, match="batch source"):
        source.fit(batches, y, epochs=1, verbose=0)


def test_clone_model_copies_the_layers_above_a_tensor():
    set_random_seed(1)
    inputs = Input((4,))
    low = Dense(4, name="low")(inputs)
    mid = Dense(4, name="mid")(low)
    out = Dense(2, name="out")(Add(name="add")([mid, low]))
    model = Model(inputs, out)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    top = clone_model(model, start=low)
    assert [layer.name for layer in top.layers][1:] == ["mid", "add", "out"]
    np.testing.assert_allclose(top.forward(model.get_layer("low").forward(x)), model.forward(x),
                               rtol=1e-6)
    top.get_layer("out").kernel.assign(np.zeros((4, 2)))      # the copies are independent
    assert np.any(model.get_layer("out").kernel.value != 0)
    with pytest.raises(ConfigError, match="cannot be cut there"):
        clone_model(model, start=mid)                          # Add also reads `low`



def test_clone_model_wires_a_copy_onto_another_graph():
    """input_tensors: the copy of a head reads a backbone's output; the new model runs from
    the backbone's input, and a name the backbone already has is refused."""
    set_random_seed(2)
    x_in = Input((4,))
    features = Dense(3, name="features")(x_in)
    head = Sequential([Input((3,)), Dense(2, name="predictions")])
    joined = clone_model(head, input_tensors=features, name="joined")
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    assert joined.inputs == [x_in] and [l.name for l in joined.layers][-1] == "predictions"
    np.testing.assert_allclose(joined.forward(x), head.forward(Model(x_in, features).forward(x)),
                               rtol=1e-6)
    clash = Sequential([Input((3,)), Dense(2, name="features")])
    with pytest.raises(ConfigError, match="'features'.*already in the graph"):
        clone_model(clash, input_tensors=features)