"""The model graph: frozen layers, where backward stops, and wiring errors."""
import numpy as np
import pytest

from retrain.engine import (Activation, Add, ConfigError, Dense, Input, Model, Sequential,
                            clear_session, set_random_seed)


def _frozen_base():
    clear_session()
    set_random_seed(0)    # unseeded, a ReLU kink within the finite-difference step was possible
    model = Sequential([Input((4,)), Dense(5, activation="relu"), Dense(5, activation="relu"),
                        Dense(3)])
    for layer in model.layers[:2]:
        layer.trainable = False
    return model


def _count_backward_calls(layer):
    calls = []
    original = layer.backward

    def spy(dy):
        calls.append(dy.shape)
        return original(dy)

    layer.backward = spy
    return calls


def test_backward_stops_below_the_lowest_trainable_layer():
    model = _frozen_base()
    calls = [_count_backward_calls(layer) for layer in model.layers]
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    model.forward(x)
    assert model.backward(np.ones((2, 3), np.float32)) is None
    assert [len(c) for c in calls] == [0, 0, 1]
    assert all(not w.grad.any() for l in model.layers[:2] for w in l.weights)
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 4


def test_input_gradient_passes_through_frozen_layers():
    model = _frozen_base()
    calls = [_count_backward_calls(layer) for layer in model.layers]
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    model.forward(x)
    dx = model.backward(np.ones((2, 3), np.float32), input_grad=True)
    assert dx.shape == (2, 4) and [len(c) for c in calls] == [1, 1, 1]
    assert all(not w.grad.any() for l in model.layers[:2] for w in l.weights)
    eps, grads = 1e-2, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grads[i] = (model.forward(x + step).sum() - model.forward(x - step).sum()) / (2 * eps)
    np.testing.assert_allclose(dx, grads, atol=2e-3)


def test_a_trainable_layer_above_a_frozen_branch_still_gets_gradients():
    clear_session()
    inputs = Input((3,))
    frozen = Dense(3, trainable=False)(inputs)
    trained = Dense(3)(inputs)
    model = Model(inputs, Add()([frozen, trained]))
    model.forward(np.ones((2, 3), np.float32))
    model.backward(np.ones((2, 3), np.float32))
    assert model.get_layer("dense_1").weights[0].grad.any()
    assert not model.get_layer("dense").weights[0].grad.any()


def test_a_layer_cannot_be_called_twice_in_a_graph():
    clear_session()
    inputs = Input((3,))
    dense = Dense(3)
    dense(inputs)
    with pytest.raises(ConfigError, match="already used in a graph"):
        dense(inputs)


def test_outputs_that_need_an_input_not_given_are_refused():
    clear_session()
    a, b = Input((3,)), Input((3,))
    with pytest.raises(ConfigError, match="not in `inputs`"):
        Model(a, Add()([a, b]))


def test_long_chains_are_wired_once_and_walked_without_recursion(monkeypatch):
    """A model file may hold thousands of layers: Sequential(list) sorts its graph once (not
    after every layer: quadratic), and the sort uses no recursion (Python stops at 1,000)."""
    from retrain.engine import model as model_module

    sorts = []
    real_sort = model_module._topological_order
    monkeypatch.setattr(model_module, "_topological_order",
                        lambda outputs: sorts.append(1) or real_sort(outputs))
    layers = [Input((3,))] + [Activation("relu", name=f"relu_{i}") for i in range(3000)]
    chain = Sequential(layers + [Dense(2, name="out")])
    assert len(sorts) == 1 and len(chain.layers) == 3001
    assert chain.layers[0].name == "relu_0" and chain.layers[-1].name == "out"
    np.testing.assert_allclose(chain.predict(np.ones((1, 3), np.float32)),
                               chain.get_layer("out")(np.ones((1, 3), np.float32)), rtol=1e-6)
