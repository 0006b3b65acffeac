"""Model and weight files: round trips, the tf_keras layout they mirror, loading by name, and
typed errors that name the file, the layer and the shapes."""
import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrain.engine import (Add, BatchNormalization, ConfigError, Conv2D, Dense,
                            DepthwiseConv2D, Dropout, Flatten, GlobalAveragePooling2D, Input,
                            Model, ModelFileError, ReLU, Sequential, UnsupportedLayerError,
                            WeightsError, load_model, model_to_config)
from retrain.engine import saving

SEED_CNN = Path(__file__).resolve().parents[1] / "fixtures" / "keras" / "seed_cnn"
METADATA = {"labels": ["cat", "dog", "eel"], "outputs": "probabilities",
            "preprocessing": {"input_size": [6, 6], "mean": [127.5] * 3, "std": [127.5] * 3},
            "metrics": {"accuracy": np.float32(0.75), "confusion": np.eye(2, dtype=np.int64)}}
KERAS_NOISE = ("_initializer", "_regularizer", "_constraint")


def small_sequential(dense_units=3):
    return Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(6, 6, 2), name="conv"),
        BatchNormalization(name="bn"),
        Dropout(0.5, name="dropout"),
        Flatten(name="flatten"),
        Dense(dense_units, activation="softmax", name="dense"),
    ], name="seq")


def small_functional():
    inputs = Input((5, 5, 3), name="image")
    x = Conv2D(3, 1, name="expand")(inputs)
    y = DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = Add(name="add")([x, y])
    x = ReLU(6.0, name="relu")(x)
    x = GlobalAveragePooling2D(name="pool")(x)
    return Model(inputs, Dense(2, name="head")(x), name="residual")


def randomized(model, seed=0):
    """Every weight random (BN variances > 0): a weight loaded into the wrong place shows."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(size=weight.shape)
        weight.assign(np.abs(value) + 0.5 if weight.name == "moving_variance" else value)
    return model


def batch_for(model, seed=1):
    shape = (3,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def assert_same_weights(got, expected):
    assert len(got.weights) == len(expected.weights)
    for a, b in zip(got.weights, expected.weights):
        np.testing.assert_array_equal(a.value, b.value)


def legacy_file(path, layers):
    """Write a legacy weights file: `layers` = [(layer name, [(weight name, array)])]."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n for n, _ in layers], dtype=h5py.string_dtype())
        for name, weights in layers:
            group = f.create_group(name)
            names = [f"{name}/{w}:0" for w, _ in weights]
            group.attrs["weight_names"] = (np.array(names, dtype=h5py.string_dtype())
                                           if names else np.array([]))
            for full, (_, value) in zip(names, weights):
                group.create_dataset(full, data=value)
    return path


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("build", [small_sequential, small_functional])
def test_save_then_load_model_predicts_identically(build, tmp_path):
    model = randomized(build())
    model.layers[1].trainable = False
    path = tmp_path / "model.h5"
    model.save(path, metadata=METADATA)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.name == model.name
    assert [(type(l).__name__, l.get_config()) for l in loaded.layers] == [
        (type(l).__name__, l.get_config()) for l in model.layers]
    assert not loaded.layers[1].trainable
    x = batch_for(model)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    assert loaded.metadata == {**METADATA, "metrics": {"accuracy": 0.75,
                                                       "confusion": [[1, 0], [0, 1]]}}
    assert saving.read_metadata(path) == loaded.metadata


def test_keras_2_2_sequential_config(tmp_path):
    """Keras <= 2.2 wrote a Sequential's config as the bare layer list, the input shape on the
    first layer; weight names were already 'conv/kernel:0'."""
    path = tmp_path / "old.h5"
    model = randomized(small_sequential())
    model.save(path)
    config = model_to_config(model)
    layers = config["config"]["layers"][1:]
    layers[0]["config"]["batch_input_shape"] = [None, 6, 6, 2]
    rewrite_config(path, json.dumps({"class_name": "Sequential", "config": layers}))
    x = batch_for(model)
    np.testing.assert_array_equal(load_model(path).forward(x), model.forward(x))


def test_plain_keras_file_has_empty_metadata(tmp_path):
    model = load_model(SEED_CNN / "seed_cnn_small_model_tfkeras.h5")
    assert model.metadata == {}
    model.save(tmp_path / "again.h5")
    assert load_model(tmp_path / "again.h5").metadata == {}
    assert saving.read_metadata(SEED_CNN / "seed_cnn_small_model_tfkeras.h5") == {}


@pytest.mark.parametrize("filename", ["weights.h5", "model.weights.h5"])
def test_save_weights_then_load_weights(filename, tmp_path):
    model = randomized(small_functional(), seed=3)
    saving.save_weights(model, tmp_path / filename)
    fresh = randomized(small_functional(), seed=4)
    fresh.load_weights(tmp_path / filename)
    assert_same_weights(fresh, model)


def test_weights_h5_name_gets_keras3_layout(tmp_path):
    model = small_functional()
    model.save_weights(tmp_path / "model.weights.h5")
    with h5py.File(tmp_path / "model.weights.h5", "r") as f:
        assert f["vars"].attrs["name"] == "residual"
        assert f["layers/depthwise_conv2d/vars"].attrs["name"] == "dw"
        assert f["layers/conv2d/vars/0"].shape == (1, 1, 3, 3)
        assert len(f["layers/add/vars"]) == 0
        assert "layer_names" not in f.attrs


# -- the layout written is tf_keras's ---------------------------------------------------------
def h5_tree(group):
    """{path: attrs or dataset shape} for everything under `group`; strings decoded."""
    tree = {}

    def visit(name, item):
        tree[name] = item.shape if isinstance(item, h5py.Dataset) else {
            key: [v.decode() if isinstance(v, bytes) else v for v in np.ravel(value)]
            for key, value in item.attrs.items()}

    group.visititems(visit)
    return tree


def test_saved_model_mirrors_the_tf_keras_file(tmp_path):
    original = SEED_CNN / "seed_cnn_small_model_tfkeras.h5"
    saving.save_model(load_model(original), tmp_path / "ours.h5", metadata={"labels": ["a"]})
    with h5py.File(original, "r") as theirs, h5py.File(tmp_path / "ours.h5", "r") as ours:
        assert {"model_config", "keras_version", "backend"} <= set(ours.attrs)
        assert json.loads(ours.attrs["retrain_metadata"]) == {"labels": ["a"]}
        assert ours.attrs["keras_version"] == theirs.attrs["keras_version"]
        assert h5_tree(ours["model_weights"]) == h5_tree(theirs["model_weights"])
        mine = json.loads(ours.attrs["model_config"])
        keras = json.loads(theirs.attrs["model_config"])
    assert mine["class_name"] == keras["class_name"] == "Sequential"
    assert len(mine["config"]["layers"]) == len(keras["config"]["layers"])
    for ours_layer, keras_layer in zip(mine["config"]["layers"], keras["config"]["layers"]):
        assert ours_layer["class_name"] == keras_layer["class_name"]
        # 'optional' (new in tf_keras 2.16) is left out: older Keras 2 readers reject it
        shared = {k for k in keras_layer["config"]
                  if not k.endswith(KERAS_NOISE) and k != "optional"}
        assert set(ours_layer["config"]) - set(keras_layer["config"]) <= set(
            k for k in ours_layer["config"] if k.endswith(KERAS_NOISE))
        assert {k: ours_layer["config"].get(k, "missing") for k in shared} == {
            k: keras_layer["config"][k] for k in shared}


def test_functional_config_is_in_tf_keras_vocabulary():
    config = model_to_config(small_functional())
    assert config["class_name"] == "Functional"
    inner = config["config"]
    assert inner["input_layers"] == [["image", 0, 0]]
    assert inner["output_layers"] == [["head", 0, 0]]
    layers = {entry["name"]: entry for entry in inner["layers"]}
    assert set(layers["add"]) == {"class_name", "config", "name", "inbound_nodes"}
    assert layers["add"]["inbound_nodes"] == [[["expand", 0, 0, {}], ["dw", 0, 0, {}]]]
    assert layers["image"]["inbound_nodes"] == []
    assert layers["image"]["config"]["batch_input_shape"] == [None, 5, 5, 3]
    assert layers["dw"]["config"]["depth_multiplier"] == 1
    json.dumps(config)


def test_parallel_heads_are_written_in_keras_order(tmp_path):
    """Keras 3.15 orders this graph x, a, b, c (deepest first) and reads layer_names by
    position; the engine's own topological order is x, b, a, c. Written in that order, Keras
    would swap the equally shaped 'a' and 'b' without an error."""
    inputs = Input((4,), name="x")
    a = Dense(3, name="a")(inputs)
    model = Model(inputs, [Dense(3, name="b")(inputs), Dense(3, name="c")(a)])
    model.save(tmp_path / "m.h5")
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.h5", "r") as f:
        assert list(f["model_weights"].attrs["layer_names"]) == ["x", "a", "b", "c"]
        config = json.loads(f.attrs["model_config"])
    assert [entry["name"] for entry in config["config"]["layers"]] == ["x", "a", "b", "c"]
    with h5py.File(tmp_path / "m.weights.h5", "r") as f:
        assert [f[f"layers/{key}/vars"].attrs["name"] for key in ("dense", "dense_1", "dense_2")
                ] == ["a", "b", "c"]


# -- loading by name ----------------------------------------------------------------------------
def test_load_weights_takes_order_from_attributes_not_iteration(tmp_path):
    """Twelve same-shaped layers: h5py iterates 'dense_10' before 'dense_2', and the file lists
    the layers backwards; any positional pairing would load the wrong arrays silently."""
    model = Sequential([Dense(4, input_shape=(4,), name=f"dense_{i}") for i in range(12)])
    rng = np.random.default_rng(0)
    stored = {layer.name: [("kernel", rng.normal(size=(4, 4))), ("bias", rng.normal(size=4))]
              for layer in model.layers}
    path = legacy_file(tmp_path / "w.h5", list(reversed(stored.items())))
    model.load_weights(path)
    for layer in model.layers:
        np.testing.assert_array_equal(layer.weights[0].value, stored[layer.name][0][1]
                                      .astype(np.float32))
        np.testing.assert_array_equal(layer.weights[1].value, stored[layer.name][1][1]
                                      .astype(np.float32))


def test_load_weights_reads_chunked_layer_names(tmp_path):
    """Keras splits a long layer_names attribute into layer_names0, layer_names1, ..."""
    model = randomized(small_sequential())
    path = tmp_path / "chunked.h5"
    model.save_weights(path)
    with h5py.File(path, "a") as f:
        names = list(f.attrs["layer_names"])
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = np.array(names[:2], dtype=h5py.string_dtype())
        f.attrs["layer_names1"] = np.array(names[2:], dtype=h5py.string_dtype())
    fresh = randomized(small_sequential(), seed=9)
    fresh.load_weights(path)
    assert_same_weights(fresh, model)


# -- errors ---------------------------------------------------------------------------------------
def test_model_layer_missing_from_file(tmp_path):
    model = randomized(small_sequential())
    model.save_weights(tmp_path / "w.h5")
    bigger = Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(6, 6, 2), name="conv"),
        BatchNormalization(name="bn"), Flatten(name="flatten"), Dense(5, name="extra"),
        Dense(3, name="dense")])
    with pytest.raises(WeightsError, match=r"Layer 'extra' \(Dense\) is not in .*w\.h5\. "
                                           r"The file has weights for: 'conv', 'bn', 'dense'"):
        bigger.load_weights(tmp_path / "w.h5")


def test_wrong_shape_names_layer_weight_and_shapes(tmp_path):
    randomized(small_sequential(dense_units=5)).save_weights(tmp_path / "w.h5")
    model = randomized(small_sequential(dense_units=3))
    before = [w.value.copy() for w in model.weights]
    with pytest.raises(WeightsError, match=r"Layer 'dense' weight 'kernel' expects shape "
                                           r"\(144, 3\)\. Received: shape=\(144, 5\) .*w\.h5"):
        model.load_weights(tmp_path / "w.h5")
    for weight, value in zip(model.weights, before):  # nothing assigned, not even 'conv'
        np.testing.assert_array_equal(weight.value, value)


def test_weight_count_mismatch(tmp_path):
    inputs = Input((4,), name="x")
    model = Model(inputs, BatchNormalization(scale=False, name="bn")(inputs))
    legacy_file(tmp_path / "w.h5", [("bn", [(n, np.ones(4)) for n in (
        "gamma", "beta", "moving_mean", "moving_variance")])])
    with pytest.raises(WeightsError, match=r"Layer 'bn' has 3 weights \(beta, moving_mean, "
                                           r"moving_variance\) but .* holds 4 for it"):
        model.load_weights(tmp_path / "w.h5")


def test_file_layer_with_weights_absent_from_model(tmp_path):
    randomized(small_functional()).save_weights(tmp_path / "w.h5")
    inputs = Input((5, 5, 3), name="image")
    x = Conv2D(3, 1, name="expand")(inputs)
    y = DepthwiseConv2D(3, padding="same", name="dw")(x)
    headless = Model(inputs, GlobalAveragePooling2D(name="pool")(Add(name="add")([x, y])))
    with pytest.raises(WeightsError, match=r"holds weights for layer\(s\) the model does not "
                                           r"have: 'head'"):
        headless.load_weights(tmp_path / "w.h5")


def test_unbuilt_model_cannot_load_or_save_weights(tmp_path):
    randomized(small_functional()).save_weights(tmp_path / "w.h5")
    unbuilt = Sequential([Dense(2, name="head")], name="unbuilt")
    with pytest.raises(WeightsError, match=r"Model 'unbuilt' is not built, so layers \['head'\] "
                                           r"have no weights to load into"):
        unbuilt.load_weights(tmp_path / "w.h5")
    with pytest.raises(WeightsError, match=r"have no weights to save"):
        unbuilt.save(tmp_path / "unbuilt.h5")


def test_truncated_file(tmp_path):
    path = tmp_path / "model.h5"
    randomized(small_sequential()).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelFileError, match=r"Cannot read .*model\.h5: the HDF5 file is "
                                             r"damaged or truncated"):
        load_model(path)
    with pytest.raises(ModelFileError, match=r"model\.h5"):
        small_sequential().load_weights(path)


@pytest.mark.parametrize("content,message", [
    (b"labels,cat,dog\n", "it is not an HDF5 file"),
    (None, r"it is a zip archive \(a Keras 3 \.keras file\?\)"),
])
def test_not_an_hdf5_file(tmp_path, content, message):
    path = tmp_path / "model.h5"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("config.json", "{}")
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=rf"Cannot read .*model\.h5: {message}"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"No such file: .*nowhere\.h5"):
        load_model(tmp_path / "nowhere.h5")


def test_a_folder_is_not_a_model_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"is a folder, not a model file"):
        load_model(tmp_path)


def test_hdf5_without_keras_weights(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("features", data=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"other\.h5 holds no Keras weights"):
        small_sequential().load_weights(tmp_path / "other.h5")


def test_load_model_on_weights_only_file(tmp_path):
    randomized(small_sequential()).save_weights(tmp_path / "w.h5")
    with pytest.raises(ModelFileError, match=r"w\.h5 holds weights only"):
        load_model(tmp_path / "w.h5")


def rewrite_config(path, config_text):
    with h5py.File(path, "a") as f:
        f.attrs["model_config"] = config_text


def test_malformed_model_config_json(tmp_path):
    path = tmp_path / "model.h5"
    small_sequential().save(path)
    rewrite_config(path, '{"class_name": "Sequential", "config": {')
    with pytest.raises(ModelFileError, match=r"model\.h5: the model_config attribute is not "
                                             r"valid JSON"):
        load_model(path)


def test_model_config_with_dangling_inbound(tmp_path):
    path = tmp_path / "model.h5"
    model = small_functional()
    model.save(path)
    config = model_to_config(model)
    config["config"]["layers"][2]["inbound_nodes"] = [[["ghost", 0, 0, {}]]]
    rewrite_config(path, json.dumps(config))
    with pytest.raises(ModelFileError, match=r"model_config cannot be rebuilt.*layer 'dw' reads "
                                             r"from layer 'ghost'"):
        load_model(path)


def test_a_damaged_layer_setting_is_a_file_error(tmp_path):
    path = tmp_path / "model.h5"
    model = small_sequential()
    model.save(path)
    config = model_to_config(model)
    entry = next(e for e in config["config"]["layers"] if e["config"]["name"] == "bn")
    entry["config"]["epsilon"] = "tiny"
    rewrite_config(path, json.dumps(config))
    with pytest.raises(ModelFileError, match=r"model\.h5.*'bn' \(BatchNormalization\) cannot be built"):
        load_model(path)


@pytest.mark.parametrize("class_name", ["Lambda", "MyCustomLayer"])
def test_unsupported_layer_is_named_and_never_run(tmp_path, class_name):
    """A Lambda's config carries marshalled Python bytecode; it must be refused, not decoded."""
    path = tmp_path / "model.h5"
    model = small_functional()
    model.save(path)
    config = model_to_config(model)
    config["config"]["layers"][2] = {
        "class_name": class_name, "name": "lam", "inbound_nodes": [[["expand", 0, 0, {}]]],
        "config": {"name": "lam", "function": ["4wEAAAAAAAAA", None, None],
                   "function_type": "lambda", "module": "os", "output_shape": None}}
    rewrite_config(path, json.dumps(config))
    with pytest.raises(UnsupportedLayerError, match=rf"Layer 'lam' has class '{class_name}', "
                                                    r"which retrain cannot load.*model\.h5"):
        load_model(path)


def test_metadata_must_be_a_json_dict(tmp_path):
    model = small_sequential()
    with pytest.raises(ConfigError, match="metadata must be a dict"):
        model.save(tmp_path / "m.h5", metadata=["labels"])
    with pytest.raises(ConfigError, match="metadata must be JSON-serializable"):
        model.save(tmp_path / "m.h5", metadata={"path": object()})
    assert not (tmp_path / "m.h5").exists()


# -- atomic writes -------------------------------------------------------------------------
def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.h5"
    first = randomized(small_sequential(), seed=1)
    first.save(path, metadata={"version": 1})
    before = path.read_bytes()

    def crash(group, model):
        group.create_group("partial")
        raise RuntimeError("disk pulled out mid-write")

    monkeypatch.setattr(saving, "_write_legacy", crash)
    with pytest.raises(RuntimeError, match="mid-write"):
        randomized(small_sequential(), seed=2).save(path, metadata={"version": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.h5"]
    assert load_model(path).metadata == {"version": 1}


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"Cannot write .*nowhere.*model\.h5"):
        small_sequential().save(tmp_path / "nowhere" / "model.h5")
