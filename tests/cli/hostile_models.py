"""A corpus of hostile model files, built with h5py from one small legitimate classifier.

Each case is a function (folder) -> path of a file that tries one attack or one kind of damage
described in issue 9: storage outside the file, allocations far beyond the bytes stored,
recursion, wrong metadata types, terminal escape sequences, code-bearing layers, links.
Files that would reveal a read outside the model (external data, virtual sources, external
links) point at a FIFO where they can: opening it blocks, so a read shows up as a hang."""
import json
import os

import h5py
import numpy as np

from retrain.engine import Activation, Conv2D, Dense, GlobalAveragePooling2D, Input, Model

RECIPE = {"input_size": [8, 8], "crop": "center", "crop_fraction": 1.0,
          "resize_filter": "bilinear", "mean": [127.5] * 3, "std": [127.5] * 3,
          "channel_order": "RGB"}
LABELS = ["ant", "bee", "cat"]
# What a terminal obeys: clear the screen, set the window title, a C1 control sequence.
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x9b31m"


def base_model(chain=0):
    """8x8 RGB -> Conv2D(1280, 1x1) -> average -> [chain of ReLU] -> Dense(3, softmax)."""
    inputs = Input((8, 8, 3), name="image")
    x = GlobalAveragePooling2D(name="pool")(Conv2D(1280, 1, name="features")(inputs))
    for i in range(chain):
        x = Activation("relu", name=f"relu_{i}")(x)
    outputs = Dense(3, activation="softmax", name="head")(x)
    model = Model(inputs, outputs, name="classifier")
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(0, 0.05, weight.shape))
    return model


def write_base(path, chain=0, **metadata):
    meta = {"labels": LABELS, "outputs": "probabilities", "preprocessing": dict(RECIPE),
            "backbone": "test", "provenance": {"source": "tests/cli/hostile_models.py"},
            "metrics": {"test": {"count": 4, "accuracy": 0.5}}}
    meta.update(metadata)
    base_model(chain).save(path, metadata=meta)
    return path


def _config(f):
    return json.loads(f.attrs["model_config"])


def _set_config(f, config):
    f.attrs["model_config"] = json.dumps(config)


def _layer(config, name):
    return next(entry for entry in config["config"]["layers"] if entry["name"] == name)


def _replace_dataset(f, layer, weight, **create):
    group = f["model_weights"][layer]
    name = f"{layer}/{weight}:0"
    del group[name]
    group.create_dataset(name, **create)


def _metadata(f):
    return json.loads(f.attrs["retrain_metadata"])


def _set_metadata(f, **changes):
    f.attrs["retrain_metadata"] = json.dumps({**_metadata(f), **changes})


def fifo(folder):
    path = folder / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return path


# -- the cases: each takes a folder and returns the file's path ---------------------------------
def external_file(folder):
    """The head's bias stored in /etc/passwd (any readable file would do)."""
    path = write_base(folder / "external.h5")
    with h5py.File(path, "a") as f:
        _replace_dataset(f, "head", "bias", shape=(3,), dtype="f4",
                         external=[("/etc/passwd", 0, 12)])
    return path


def external_fifo(folder):
    """External storage in a FIFO: reading it blocks for ever."""
    path = write_base(folder / "external_fifo.h5")
    with h5py.File(path, "a") as f:
        _replace_dataset(f, "head", "bias", shape=(3,), dtype="f4",
                         external=[(str(fifo(folder)), 0, 12)])
    return path


def virtual_dataset(folder):
    """The head's kernel as a virtual dataset whose source is another file."""
    source = folder / "vds_source.h5"
    with h5py.File(source, "w") as f:
        f.create_dataset("data", data=np.ones((1280, 3), np.float32))
    path = write_base(folder / "virtual.h5")
    layout = h5py.VirtualLayout(shape=(1280, 3), dtype="f4")
    layout[:] = h5py.VirtualSource(str(source), "data", shape=(1280, 3))
    with h5py.File(path, "a") as f:
        group = f["model_weights"]["head"]
        del group["head/kernel:0"]
        group.create_virtual_dataset("head/kernel:0", layout)
    return path


def huge_dense_units(folder):
    """The config says Dense(150000) (768 MB of kernel); the file stores 3 units' worth."""
    path = write_base(folder / "huge_units.h5")
    with h5py.File(path, "a") as f:
        config = _config(f)
        _layer(config, "head")["config"]["units"] = 150000
        _set_config(f, config)
    return path


def unstored_dataset(folder):
    """A 1280x200000 kernel (1 GB) declared but never written, and a config to match."""
    path = write_base(folder / "unstored.h5")
    with h5py.File(path, "a") as f:
        config = _config(f)
        _layer(config, "head")["config"]["units"] = 200000
        _set_config(f, config)
        _replace_dataset(f, "head", "kernel", shape=(1280, 200000), dtype="f4")
        _replace_dataset(f, "head", "bias", shape=(200000,), dtype="f4")
    return path


def huge_input_size(folder):
    """preprocessing.input_size 30000x30000 for a model that takes 8x8 images."""
    path = write_base(folder / "input_size.h5")
    with h5py.File(path, "a") as f:
        _set_metadata(f, preprocessing={**RECIPE, "input_size": [30000, 30000]})
    return path


def deep_json(folder):
    """A model_config nested 100,000 lists deep."""
    path = write_base(folder / "deep_json.h5")
    with h5py.File(path, "a") as f:
        f.attrs["model_config"] = "[" * 100000 + "]" * 100000
    return path


def deep_metadata(folder):
    """Metadata that parses (900 levels) but is deeper than any real one."""
    path = write_base(folder / "deep_metadata.h5")
    with h5py.File(path, "a") as f:
        f.attrs["retrain_metadata"] = ('{"provenance": ' + '{"a": ' * 900 + "1"
                                       + "}" * 900 + "}")
    return path


def long_chain(folder):
    """1,100 layers in one chain, a legitimate model: Python recurses only 1,000 deep, so
    the graph walks must be iterative."""
    return write_base(folder / "chain.h5", chain=1100)


def non_string_labels(folder):
    path = write_base(folder / "int_labels.h5")
    with h5py.File(path, "a") as f:
        _set_metadata(f, labels=[1, 2, {"x": 3}])
    return path


def non_numeric_metrics(folder):
    path = write_base(folder / "text_metrics.h5")
    with h5py.File(path, "a") as f:
        _set_metadata(f, metrics={"test": {"count": "many", "accuracy": "high"}})
    return path


def bad_seen_record(folder):
    """The record of the images a model learnt from, holding something that is no digest."""
    path = write_base(folder / "seen.h5")
    with h5py.File(path, "a") as f:
        _set_metadata(f, seen={"train": ["0123456789abcdef", {"x": 1}], "val": []})
    return path


def ragged_confusion_matrix(folder):
    """A confusion matrix `retrain serve`'s page would draw: rows of the wrong length."""
    path = write_base(folder / "ragged_confusion.h5")
    with h5py.File(path, "a") as f:
        _set_metadata(f, metrics={"test": {"count": 4, "accuracy": 0.5,
                                           "confusion_matrix": [[1, 2], [3, "x"], [1]]}})
    return path


def escape_sequences(folder):
    """Labels, provenance, backbone and a layer name that would drive the terminal."""
    path = write_base(folder / "escapes.h5", labels=[f"ant{ESCAPES}", "bee", "cat"],
                      backbone=ESCAPES, provenance={ESCAPES: ESCAPES})
    return path


def lambda_layer(folder):
    path = write_base(folder / "lambda.h5")
    with h5py.File(path, "a") as f:
        config = _config(f)
        entry = _layer(config, "pool")
        entry["class_name"] = "Lambda"
        entry["config"]["function"] = ["4wEAAAAAAAAA", None, None]
        _set_config(f, config)
    return path


def unknown_class(folder):
    path = write_base(folder / "unknown.h5")
    with h5py.File(path, "a") as f:
        config = _config(f)
        _layer(config, "pool")["class_name"] = "MyCustomPooling"
        _set_config(f, config)
    return path


def module_registered_name(folder):
    """A Keras 3 entry naming a module and a registered function to import."""
    path = write_base(folder / "module.h5")
    with h5py.File(path, "a") as f:
        config = _config(f)
        entry = _layer(config, "pool")
        entry.update(module="os", class_name="system", registered_name="os>system")
        _set_config(f, config)
    return path


def _edited_layer(folder, filename, layer, edit):
    """The base model with `edit(entry)` applied to the config entry of `layer`."""
    path = write_base(folder / filename)
    with h5py.File(path, "a") as f:
        config = _config(f)
        edit(_layer(config, layer))
        _set_config(f, config)
    return path


def foreign_module_layer(folder):
    """The layer entry of 'pool' names Keras's class from another module (issue 21): a
    custom class sharing a Keras name must not be taken for Keras's."""
    return _edited_layer(folder, "foreign_module.h5", "pool",
                         lambda entry: entry.update(module="os"))


def foreign_module_initializer(folder):
    """The kernel initializer in the config of 'head' comes from module 'os'."""
    initializer = {"module": "os", "class_name": "GlorotUniform", "config": {"seed": None},
                   "registered_name": None}
    return _edited_layer(folder, "foreign_initializer.h5", "head",
                         lambda entry: entry["config"].update(kernel_initializer=initializer))


def soft_link_loop(folder):
    """The layer group 'pool' is a soft link to itself."""
    path = write_base(folder / "soft_loop.h5")
    with h5py.File(path, "a") as f:
        del f["model_weights"]["pool"]
        f["model_weights"]["pool"] = h5py.SoftLink("/model_weights/pool")
    return path


def external_link(folder):
    """The layer group 'pool' is a link into another file, here a FIFO."""
    path = write_base(folder / "external_link.h5")
    with h5py.File(path, "a") as f:
        del f["model_weights"]["pool"]
        f["model_weights"]["pool"] = h5py.ExternalLink(str(fifo(folder)), "/")
    return path


def nan_weights(folder):
    path = write_base(folder / "nan.h5")
    with h5py.File(path, "a") as f:
        kernel = f["model_weights"]["head"]["head/kernel:0"]
        kernel[0, 0] = np.nan
    return path


def mismatched_labels(folder):
    path = write_base(folder / "labels.h5")
    with h5py.File(path, "a") as f:
        _set_metadata(f, labels=["ant", "bee"])
    return path


def string_weights(folder):
    """A weight dataset of strings where floats belong."""
    path = write_base(folder / "string_weights.h5")
    with h5py.File(path, "a") as f:
        _replace_dataset(f, "head", "bias", data=np.array(["a", "b", "c"], dtype="S1"))
    return path


# Cases that must be refused with exit status 2 by both `info` and `classify`.
REFUSED = [external_file, external_fifo, virtual_dataset, huge_dense_units, unstored_dataset,
           huge_input_size, deep_json, deep_metadata, non_string_labels, non_numeric_metrics,
           lambda_layer, unknown_class, module_registered_name, foreign_module_layer,
           foreign_module_initializer, soft_link_loop, external_link,
           nan_weights, mismatched_labels, string_weights, bad_seen_record,
           ragged_confusion_matrix]
# Legitimate but unusual: must work, and print nothing that drives a terminal.
ACCEPTED = [long_chain, escape_sequences]
