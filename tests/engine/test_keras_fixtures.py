"""Every Keras reference fixture reproduced from every HDF5 layout it ships in.

Fixtures and layouts: tests/fixtures/keras/README.md. Keras 3 wrote the outputs; tf_keras wrote
the legacy files. Tolerances are the README's: 1e-5 on small models, 1e-4 on batch norm
(Keras 3 and tf_keras themselves differ by 1.5e-5 there) and on MobileNetV2.
"""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrain.engine import (Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Model, Sequential,
                            load_model, model_from_config)

KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
SEED = KERAS / "seed_cnn"
EDGE = KERAS / "edge_cases"
MOBILENET = KERAS / "mobilenet_v2"
EDGE_GRAPHS = json.loads((EDGE / "edge_cases.json").read_text())["models"]
EDGE_NPZ = np.load(EDGE / "edge_cases.npz")
DTYPE_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                "registered_name": None}


# -- helpers ------------------------------------------------------------------------------
def keras3_model_config(graph):
    """A fixture graph (README "Common JSON schema") as Keras 3.15 writes `model_config` in a
    full-model .h5: DTypePolicy dicts, `batch_shape`, `inbound_nodes` holding `args` of
    `__keras_tensor__` dicts with `keras_history`, and a bare [name, 0, 0] for one input."""
    shapes = {entry["name"]: entry["output_shape"] for entry in graph["layers"]}

    def tensor(name):
        return {"class_name": "__keras_tensor__", "config": {
            "shape": shapes[name], "dtype": "float32", "keras_history": [name, 0, 0]}}

    layers = []
    for entry in graph["layers"]:
        nodes = []
        if entry["class_name"] != "InputLayer":
            args = [tensor(name) for name in entry["inbound"]]
            nodes = [{"args": [args if len(args) > 1 else args[0]], "kwargs": {}}]
        config = {"name": entry["name"], "trainable": True, "dtype": DTYPE_POLICY,
                  **entry["config"]}
        layers.append({"module": "keras.layers", "class_name": entry["class_name"],
                       "config": config, "registered_name": None, "name": entry["name"],
                       "inbound_nodes": nodes})
    inputs = [[e["name"], 0, 0] for e in graph["layers"] if e["class_name"] == "InputLayer"]
    outputs = [[name, 0, 0] for name in graph["outputs"]]
    return {"class_name": "Functional", "config": {
        "name": graph["model_name"], "trainable": True, "layers": layers,
        "input_layers": inputs[0] if len(inputs) == 1 else inputs,
        "output_layers": outputs[0] if len(outputs) == 1 else outputs}}


def fixture_model(graph):
    return model_from_config(keras3_model_config(graph))


def layer_outputs(model, x, names):
    """{name: output} for the named layers, from one inference pass of a probe model that
    shares the layers (and so the loaded weights) of `model`."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = Model(inputs, [model.get_layer(name).outputs[0] for name in names])
    return dict(zip(names, probe.forward(x, training=False)))


def seed_cnn_small():
    """The README's seed_cnn with Dense(1000) narrowed to Dense(8), written with the engine."""
    return Sequential([
        Conv2D(32, 5, padding="same", activation="relu", input_shape=(28, 28, 1), name="conv2d"),
        MaxPooling2D(2, name="max_pooling2d"),
        Conv2D(64, 2, padding="same", activation="relu", name="conv2d_1"),
        MaxPooling2D(2, name="max_pooling2d_1"),
        Dropout(0.25, name="dropout"),
        Flatten(name="flatten"),
        Dense(8, activation="relu", name="dense"),
        Dropout(0.5, name="dropout_1"),
        Dense(10, activation="softmax", name="dense_1"),
    ], name="sequential")


def check_seed_cnn_small(model):
    reference = np.load(SEED / "seed_cnn_small.npz")
    got = layer_outputs(model, reference["input"], ["dense", "dense_1"])
    np.testing.assert_allclose(got["dense"], reference["dense"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["dense_1"], reference["output"], rtol=0, atol=1e-5)


def edge_atol(model_name):
    return 1e-4 if model_name.startswith("batchnorm") else 1e-5


def check_edge_case(model_name, model):
    graph = EDGE_GRAPHS[model_name]
    x = EDGE_NPZ[graph["npz_input"]]
    got = layer_outputs(model, x, list(graph["npz_outputs"]))
    for layer, key in graph["npz_outputs"].items():
        np.testing.assert_allclose(got[layer], EDGE_NPZ[key], rtol=0, atol=edge_atol(model_name),
                                   err_msg=f"{model_name}/{layer}")


def copy_legacy_groups(source, target, weight_name):
    """Copy a legacy weights group into `target`, renaming each weight with
    `weight_name(layer, short name)` and using variable-length string attributes."""
    names = [n.decode() if isinstance(n, bytes) else n for n in source.attrs["layer_names"]]
    target.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())
    for layer in names:
        group = target.create_group(layer)
        stored = [w.decode() if isinstance(w, bytes) else w
                  for w in source[layer].attrs["weight_names"]]
        renamed = [weight_name(layer, w.split("/")[-1].split(":")[0]) for w in stored]
        group.attrs["weight_names"] = (np.array(renamed, dtype=h5py.string_dtype())
                                       if renamed else np.array([]))
        for old, new in zip(stored, renamed):
            group.create_dataset(new, data=source[layer][old][()])


# -- seed_cnn_small: all four layouts -----------------------------------------------------
@pytest.mark.parametrize("filename", ["seed_cnn_small_legacy.h5", "seed_cnn_small.weights.h5"])
def test_seed_cnn_small_load_weights(filename):
    model = seed_cnn_small()
    model.load_weights(SEED / filename)
    check_seed_cnn_small(model)


@pytest.mark.parametrize("filename", ["seed_cnn_small_model_tfkeras.h5",
                                      "seed_cnn_small_model_keras3.h5"])
def test_seed_cnn_small_load_model(filename):
    model = load_model(SEED / filename)
    assert isinstance(model, Sequential)
    assert [layer.name for layer in model.layers] == [
        "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "dropout", "flatten",
        "dense", "dropout_1", "dense_1"]
    assert model.metadata == {}
    check_seed_cnn_small(model)


# -- edge cases: every model, every layout ------------------------------------------------
EDGE_FILES = [(name, graph["files"][layout])
              for name, graph in EDGE_GRAPHS.items()
              for layout in ("legacy_weights", "keras3_weights") if graph["files"][layout]]
EDGE_FILES.append(("conv_same_s2_even", "conv_same_s2_even_legacy_fixedlen_attrs.h5"))
WEIGHTLESS = [name for name, graph in EDGE_GRAPHS.items() if not graph["files"]["legacy_weights"]]
WITH_WEIGHTS = [name for name, graph in EDGE_GRAPHS.items() if graph["files"]["legacy_weights"]]


@pytest.mark.parametrize("model_name,filename", EDGE_FILES, ids=[f for _, f in EDGE_FILES])
def test_edge_case_load_weights(model_name, filename):
    model = fixture_model(EDGE_GRAPHS[model_name])
    model.load_weights(EDGE / filename)
    check_edge_case(model_name, model)


@pytest.mark.parametrize("model_name", WITH_WEIGHTS)
def test_edge_case_keras3_weights_without_name_attributes(model_name, tmp_path):
    """Keras 3 releases before 3.6 wrote no vars@name; the keys then map through Keras's own
    rule (class counters in Keras's layer order: 'pre_big' is 'layers/dense_1')."""
    path = tmp_path / "old_keras3.weights.h5"
    path.write_bytes((EDGE / EDGE_GRAPHS[model_name]["files"]["keras3_weights"]).read_bytes())
    with h5py.File(path, "a") as f:
        for key in f["layers"]:
            del f["layers"][key]["vars"].attrs["name"]
    model = fixture_model(EDGE_GRAPHS[model_name])
    model.load_weights(path)
    check_edge_case(model_name, model)


@pytest.mark.parametrize("model_name", list(EDGE_GRAPHS) + ["mobilenet_v2"])
def test_written_layer_order_is_keras_order(model_name, tmp_path):
    """Keras's legacy reader pairs weighted layers with layer_names by position, so the order
    written must be Keras's model.layers order, which each fixture JSON records."""
    graph = (json.loads((MOBILENET / "mobilenet_v2.json").read_text())
             if model_name == "mobilenet_v2" else EDGE_GRAPHS[model_name])
    fixture_model(graph).save_weights(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert list(f.attrs["layer_names"]) == [entry["name"] for entry in graph["layers"]]


@pytest.mark.parametrize("model_name", WEIGHTLESS)
def test_edge_case_without_weights(model_name):
    check_edge_case(model_name, fixture_model(EDGE_GRAPHS[model_name]))


@pytest.mark.parametrize("model_name", WITH_WEIGHTS)
def test_edge_case_keras3_full_model(model_name, tmp_path):
    """A Keras 3 full-model .h5 of a functional model: Keras 3 model_config, and weights named
    '<layer>/<weight>' without ':0' (the depthwise one just 'kernel'), per the README."""
    graph = EDGE_GRAPHS[model_name]
    path = tmp_path / f"{model_name}_keras3.h5"
    keras3_names = {"depthwise_kernel": "kernel"}
    with h5py.File(EDGE / graph["files"]["legacy_weights"], "r") as source, \
            h5py.File(path, "w") as target:
        target.attrs["model_config"] = json.dumps(keras3_model_config(graph))
        target.attrs["keras_version"] = "3.15.1"
        target.attrs["backend"] = "tensorflow"
        copy_legacy_groups(source, target.create_group("model_weights"),
                           lambda layer, w: f"{layer}/{keras3_names.get(w, w)}")
    model = load_model(path)
    assert [l.name for l in model.layers] == [e["name"] for e in graph["layers"]]
    check_edge_case(model_name, model)


# -- MobileNetV2 (155 layers) -------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet_graph():
    return json.loads((MOBILENET / "mobilenet_v2.json").read_text())


@pytest.fixture(scope="module")
def mobilenet_legacy(mobilenet_graph):
    model = fixture_model(mobilenet_graph)
    model.load_weights(MOBILENET / "mobilenet_v2_legacy_no_top.h5")
    return model


def test_mobilenet_v2_legacy_outputs_and_trace(mobilenet_graph, mobilenet_legacy):
    assert len(mobilenet_legacy.layers) == 155
    assert mobilenet_legacy.count_params() == 410_208
    reference = np.load(MOBILENET / "mobilenet_v2.npz")
    trace = mobilenet_graph["trace_layers"]
    names = [mobilenet_graph["outputs"][0]] + trace
    got = layer_outputs(mobilenet_legacy, reference["input"], names)
    np.testing.assert_allclose(got[names[0]], reference["output"], rtol=1e-4, atol=1e-4)
    for name in trace:
        np.testing.assert_allclose(got[name][:1], reference[f"trace0/{name}"], rtol=0, atol=1e-4,
                                   err_msg=name)


@pytest.mark.parametrize("with_name_attr", [True, False], ids=["vars_name", "key_only"])
def test_mobilenet_v2_keras3_weights_keys(mobilenet_graph, mobilenet_legacy, tmp_path,
                                          with_name_attr):
    """A Keras 3 .weights.h5 laid out from the JSON's keras3_path of every weight: the keys
    ('Conv1' is 'layers/conv2d') are not layer names. Mapped through vars@name, or, as in files
    from Keras 3 releases that lacked that attribute, through Keras 3's own key rule."""
    path = tmp_path / "mobilenet_v2.weights.h5"
    with h5py.File(MOBILENET / "mobilenet_v2_legacy_no_top.h5", "r") as source, \
            h5py.File(path, "w") as target:
        target.create_group("vars").attrs["name"] = mobilenet_graph["model_name"]
        for entry in mobilenet_graph["layers"]:
            for weight in entry.get("weights", []):
                target.create_dataset(weight["keras3_path"], data=source[weight["legacy_path"]])
                if with_name_attr:
                    group = target[weight["keras3_path"].rsplit("/", 1)[0]]
                    group.attrs["name"] = entry["name"]
    model = fixture_model(mobilenet_graph)
    model.load_weights(path)
    for got, expected in zip(model.get_weights(), mobilenet_legacy.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_mobilenet_v2_published_style_file(mobilenet_graph, mobilenet_legacy, tmp_path):
    """Keras Applications files from h5py 2 days: fixed-length byte-string attributes and an
    extra weightless 'Conv1_pad' listed in layer_names; loading by name takes both in stride."""
    path = tmp_path / "published_style_no_top.h5"
    with h5py.File(MOBILENET / "mobilenet_v2_legacy_no_top.h5", "r") as source, \
            h5py.File(path, "w") as target:
        copy_legacy_groups(source, target, lambda layer, w: f"{layer}/{w}:0")
        names = [n.encode() for n in target.attrs["layer_names"]]
        target.attrs["layer_names"] = np.array(names[:1] + [b"Conv1_pad"] + names[1:])
        target.create_group("Conv1_pad").attrs["weight_names"] = np.array([])
        for name in names:
            stored = target[name.decode()].attrs["weight_names"]
            if len(stored):
                target[name.decode()].attrs["weight_names"] = np.array(
                    [w.encode() for w in stored])
    with h5py.File(path, "r") as written:
        assert written["Conv1"].attrs["weight_names"].dtype.kind == "S"
    model = fixture_model(mobilenet_graph)
    model.load_weights(path)
    for got, expected in zip(model.get_weights(), mobilenet_legacy.get_weights()):
        np.testing.assert_array_equal(got, expected)
