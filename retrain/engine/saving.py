"""HDF5 weight and model files that interoperate with Keras; weights always match by layer name.

Reads the four layouts described in tests/fixtures/keras/README.md ("HDF5 layout conventions"):
1. legacy weights-only files (root @layer_names; per layer @weight_names and datasets), as
   tf_keras `save_weights('x.h5')` and the Keras Applications `*_no_top.h5` files;
2. full-model `.h5` (root @model_config, weights in /model_weights in layout 1), from tf_keras
   ('conv2d/kernel:0') or Keras 3 ('sequential/conv2d/kernel');
3. Keras 3 `.weights.h5` (/layers/<key>/vars @name=<layer name>, datasets 0, 1, ...);
4. our own model files: layout 2 plus a root @retrain_metadata JSON string.
Inside a layer, arrays pair with `layer.weights` by position: weight_names order is Keras's
weights order (trainable first), and Keras 3 even renames the depthwise kernel to 'kernel'.
Nothing read from a file is executed: layers are rebuilt through the LAYERS registry only.
A file is untrusted input (h5reading.py): nothing outside it is read, and the config may not
ask for more weights, or larger layer outputs, than the file and _MAX_OUTPUT_VALUES allow.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import TYPE_CHECKING

import h5py
import numpy as np

from .atomic import PathLike, atomic_write
from .errors import ConfigError, EngineError, ModelFileError, UnsupportedLayerError, WeightsError
from .h5reading import check_file, dataset, member, read_array
from .layer import weight_budget
from .naming import to_snake_case
from .serialization import model_from_config, model_to_config

if TYPE_CHECKING:             # for annotations only: model.py imports this module
    from .model import Model

__all__ = ["load_weights", "save_weights", "save_model", "load_model", "read_metadata",
           "model_to_config", "model_from_config"]

# The tf_keras release whose layout the writer mirrors. Keras readers only test this attribute
# for "1" (Keras 1 kernels need converting); any 2.x value means "use the arrays as stored".
KERAS_VERSION = "2.21.0"
# A layer's output per sample (64 MiB of float32): Lite0's largest is 1.2M values; a config
# declaring a 30000x30000 input or a huge ZeroPadding2D would exhaust memory at predict time.
_MAX_OUTPUT_VALUES = 1 << 24
_MAX_JSON_DEPTH = 100   # Keras configs nest about 10 levels
_MATCH_HINT = ("Weights load by layer name into the architecture that saved them; check the "
               "layer names, include_top and the number of classes.")


# -- public API ----------------------------------------------------------------------------
def load_weights(model, path):
    """Set every weight of `model` from a Keras HDF5 file (any layout above), by layer name.

    Every model layer with weights must be in the file with the same shapes; file layers the
    model lacks are allowed only if they hold no weights (e.g. an old 'Conv1_pad'). Nothing
    is assigned unless everything matches."""
    _check_built(model, "load into")
    keys = {key: layer.name for key, layer in _keras3_keys(model)}
    pairs = _read(path, lambda f, _: _read_matched(model, _weight_groups(f, path, keys), path))
    for variable, value in pairs:
        variable.assign(value)


def save_weights(model, path):
    """Write the weights: Keras 3's layout for a `.weights.h5` name (the only suffix Keras 3
    reads that layout from), else the legacy layout that tf_keras and Keras 3 both read."""
    _check_built(model, "save")
    writer = _write_keras3 if os.fspath(path).endswith(".weights.h5") else _write_legacy
    _atomic_write(path, lambda f: writer(f, model))


def save_model(model, path, metadata=None):
    """Write a Keras full-model `.h5` as tf_keras does, plus @retrain_metadata (JSON of a dict).

    The file appears complete or not at all (written to a temporary file, then renamed)."""
    _check_built(model, "save")
    config = json.dumps(model_to_config(model))
    metadata = _metadata_json(metadata)

    def write(f):
        f.attrs["model_config"] = config
        f.attrs["keras_version"] = KERAS_VERSION
        f.attrs["backend"] = "tensorflow"
        f.attrs["retrain_metadata"] = metadata
        _write_legacy(f.create_group("model_weights"), model)

    _atomic_write(path, write)


def load_model(path: PathLike) -> Model:
    """Rebuild a model from a full-model `.h5` (ours, tf_keras or Keras 3) and load its weights.

    `model.metadata` is the dict saved with `save_model`, or {} for a plain Keras file."""
    return _read(path, lambda f, stored_values: _load_model(f, path, stored_values))


def _load_model(f, path, stored_values):
    config_text, metadata_text = _model_parts(f, path)
    config = _parse_json(config_text, "model_config", path)
    metadata = _metadata_dict(metadata_text, path)
    try:
        with weight_budget(stored_values):
            model = model_from_config(config)
    except UnsupportedLayerError as error:
        raise UnsupportedLayerError(f"{error} File: {path}.", hint=error.hint) from None
    except (ConfigError, ValueError) as error:
        raise ModelFileError(f"{path}: the model_config cannot be rebuilt. {error}",
                             hint="The file is damaged or was written by an unsupported "
                                  "Keras feature.") from None
    _check_output_sizes(model, path)
    for variable, value in _read_matched(model, _weight_groups(f, path, {}), path):
        variable.assign(value)
    model.metadata = metadata
    return model


def _check_output_sizes(model, path):
    for layer in model.layers:
        shape = layer.output_shape or (None,)
        if all(isinstance(d, int) for d in shape[1:]):
            values = int(np.prod(shape[1:], dtype=object))
            if values > _MAX_OUTPUT_VALUES:
                raise ModelFileError(f"{path}: layer {layer.name!r} outputs shape {shape}, "
                                     f"{values:,} values per input; retrain loads models "
                                     f"whose layers output at most {_MAX_OUTPUT_VALUES:,}.")


def read_metadata(path: PathLike) -> dict:
    """The metadata dict saved with `save_model` ({} for a plain Keras file), without
    building the model."""
    text = _read(path, lambda f, _: f.attrs.get("retrain_metadata"))
    return _metadata_dict(None if text is None else _text(text), path)


def _metadata_dict(text, path):
    metadata = _parse_json(text, "retrain_metadata", path) if text else {}
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: retrain_metadata must be a JSON object. "
                             f"Received: {type(metadata).__name__}.")
    return metadata


def _check_built(model, action):
    unbuilt = [layer.name for layer in model.layers if not layer.built]
    if unbuilt:
        raise WeightsError(f"Model {model.name!r} is not built, so layers {unbuilt} have no "
                           f"weights to {action}.",
                           hint="Start the model with Input(shape) or give the first layer "
                                "input_shape=, or call model.build((None, ...)) first.")


# -- reading ----------------------------------------------------------------------------------
def _read(path, reader):
    """Run `reader(h5file, stored values)` once `check_file` passed, turning every h5py
    failure into a ModelFileError naming `path`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a folder, not a model file.",
                             hint="Give the .h5 file itself, e.g. RUN/model.h5.")
    if os.path.exists(path) and not os.path.isfile(path):     # a FIFO would block for ever
        raise ModelFileError(f"{path} is not a regular file (a FIFO or a device).",
                             hint="Give the path of a model file.")
    if not os.path.isfile(path):
        raise ModelFileError(f"No such file: {path}.", hint="Check the path.")
    if not h5py.is_hdf5(path):
        kind = ("a zip archive (a Keras 3 .keras file?)" if zipfile.is_zipfile(path)
                else "not an HDF5 file")
        raise ModelFileError(f"Cannot read {path}: it is {kind}.",
                             hint="retrain reads Keras .h5 and .weights.h5 files.")
    try:
        with h5py.File(path, "r") as f:
            return reader(f, check_file(f, path))
    except EngineError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ModelFileError(f"Cannot read {path}: the HDF5 file is damaged or truncated "
                             f"({error}).", hint="Copy or download the file again.") from None


def _model_parts(f, path):
    """(model_config text, retrain_metadata text or None) of a full-model file."""
    if "model_config" not in f.attrs:
        raise ModelFileError(f"{path} holds weights only (no model_config attribute).",
                             hint="Build the architecture in code and call "
                                  "model.load_weights(path).")
    metadata = f.attrs.get("retrain_metadata")
    return _text(f.attrs["model_config"]), None if metadata is None else _text(metadata)


def _weight_groups(f, path, keras3_keys):
    """{layer name: [(weight name, dataset), ...] in weights order}, whatever the layout;
    nothing is read yet (see _read_matched)."""
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return _read_legacy(f, path)
    if "model_weights" in f:
        return _read_legacy(member(f, "model_weights", path), path)
    if "layers" in f:
        return _read_keras3(member(f, "layers", path), keras3_keys, path)
    raise ModelFileError(f"{path} holds no Keras weights: it has no 'layer_names' attribute "
                         "(legacy), '/model_weights' group (full model) or '/layers' group "
                         "(Keras 3 .weights.h5).", hint="Pass a file saved by Keras or retrain.")


def _read_legacy(group, path):
    """Layout 1. The order comes from the attributes, never from h5py's alphabetical iteration."""
    names = _attr_strings(group.attrs, "layer_names")
    if names is None:
        raise ModelFileError(f"{path}: group {group.name!r} has no 'layer_names' attribute; it "
                             "is not a Keras weights group or the file is damaged.")
    groups = {}
    for name in names:
        if name not in group:
            raise ModelFileError(f"{path}: 'layer_names' lists {name!r} but the file has no "
                                 "group of that name; the file is damaged.")
        layer = member(group, name, path)
        weight_names = _attr_strings(layer.attrs, "weight_names") or []
        # 'conv2d/kernel:0' (tf_keras) or 'sequential/conv2d/kernel' (Keras 3) -> 'kernel'
        groups[name] = [(w.split("/")[-1].split(":")[0], dataset(layer, w, path))
                        for w in weight_names]
    return groups


def _read_keras3(layers, keras3_keys, path):
    """Layout 3. Keys are class-based ('conv2d_3'); the real layer name is vars@name. Files
    from Keras 3 releases before that attribute map through the model's own keys instead."""
    groups = {}
    for key in layers:
        if "vars" not in member(layers, key, path):
            continue
        variables = member(layers, f"{key}/vars", path)
        if "name" in variables.attrs:
            name = _text(variables.attrs["name"])
        else:
            name = keras3_keys.get(key, f"layers/{key}")
        groups[name] = [(str(i), dataset(variables, str(i), path))
                        for i in range(len(variables))]
    return groups


def _attr_strings(attrs, name):
    """A list-of-strings attribute, or None. Keras splits long lists into name0, name1, ...
    (HDF5 caps an object header at 64 KB)."""
    if name in attrs:
        return _strings(attrs[name])
    chunks = []
    while f"{name}{len(chunks)}" in attrs:
        chunks.append(_strings(attrs[f"{name}{len(chunks)}"]))
    return [s for chunk in chunks for s in chunk] if chunks else None


def _strings(values):
    """h5py gives str (variable-length strings), bytes (fixed-length '|S', files written before
    h5py 3) or, for a weightless layer, an empty float64 array."""
    return [_text(v) for v in np.asarray(values).ravel()]


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _parse_json(text, attribute, path):
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ModelFileError(f"{path}: the {attribute} attribute is not valid JSON ({error}).",
                             hint="The file is damaged; save the model again.") from None
    except RecursionError:   # nested past Python's own limit
        value = None
    stack = [(value, 1 if value is not None else _MAX_JSON_DEPTH + 1)]
    while stack:   # iterative: deeper than any real config is refused, never recursed into
        item, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise ModelFileError(f"{path}: the {attribute} attribute is nested more than "
                                 f"{_MAX_JSON_DEPTH} levels deep; no Keras file is.",
                                 hint="The file is damaged or crafted.")
        children = item.values() if isinstance(item, dict) else (
            item if isinstance(item, list) else ())
        stack.extend((child, depth + 1) for child in children)
    return value


def _keras3_keys(model):
    """[(key, layer)] as Keras 3 names its .weights.h5 groups: the snake_case class name with a
    per-class counter, in Keras's layer order (Conv1 -> 'conv2d', bn_Conv1 ->
    'batch_normalization')."""
    keys, used = [], {}
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        count = used.get(base, -1) + 1
        used[base] = count
        keys.append((base if count == 0 else f"{base}_{count}", layer))
    return keys


def _read_matched(model, groups, path):
    """(variable, float32 array) for every weight, read only once every shape matched."""
    return [(variable, read_array(ds, path)) for variable, ds in _match(model, groups, path)]


def _match(model, groups, path):
    """(variable, dataset) pairs for every weight of `model`, all checked before any is set."""
    pairs = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in groups:
            stored = [name for name, arrays in groups.items() if arrays]
            raise WeightsError(f"Layer {layer.name!r} ({type(layer).__name__}) is not in {path}. "
                               f"The file has weights for: {_short_list(stored)}.",
                               hint=_MATCH_HINT)
        stored = groups[layer.name]
        if len(stored) != len(layer.weights):
            raise WeightsError(
                f"Layer {layer.name!r} has {len(layer.weights)} weights "
                f"({', '.join(w.name for w in layer.weights)}) but {path} holds {len(stored)} "
                f"for it ({', '.join(name for name, _ in stored) or 'none'}).", hint=_MATCH_HINT)
        for variable, (name, value) in zip(layer.weights, stored):
            if value.shape != variable.shape:
                raise WeightsError(
                    f"Layer {layer.name!r} weight {variable.name!r} expects shape "
                    f"{variable.shape}. Received: shape={value.shape} ({name!r}) from {path}.",
                    hint=_MATCH_HINT)
            pairs.append((variable, value))
    names = {layer.name for layer in model.layers}
    extra = [name for name, arrays in groups.items() if arrays and name not in names]
    if extra:
        raise WeightsError(f"{path} holds weights for layer(s) the model does not have: "
                           f"{_short_list(extra)}.", hint=_MATCH_HINT)
    return pairs


def _short_list(names, limit=10):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "") or "none"


# -- writing ----------------------------------------------------------------------------------
def _atomic_write(path, write):
    """Run `write(h5file)` on an HDF5 file built in memory, then write its bytes with the one
    atomic writer. h5py never touches the disk, so a full disk is one OSError from a plain
    write (h5py crashed in close() after a failed write of its own) and the old file stays."""
    path = os.fspath(path)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write(f)
    try:
        with atomic_write(path, "wb") as handle:
            handle.write(buffer.getbuffer())
    except OSError as error:
        raise ModelFileError(f"Cannot write {path}: {error.strerror or error}.",
                             hint="Check that the folder exists, is writable and has "
                                  f"{buffer.getbuffer().nbytes:,} bytes free.") from None


def _write_legacy(group, model):
    """Layout 1, as tf_keras writes it (also the /model_weights group of a full model)."""
    layers = model.layers
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"Model {model.name!r} has several layers named {duplicates}; "
                          "weights are stored by layer name, so names must be unique.")
    group.attrs["backend"] = "tensorflow"
    group.attrs["keras_version"] = KERAS_VERSION
    group.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())
    for layer in layers:
        weight_names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
        layer_group = group.create_group(layer.name)
        # Keras marks a weightless layer with an empty float64 array, not an empty string list.
        layer_group.attrs["weight_names"] = (np.array(weight_names, dtype=h5py.string_dtype())
                                             if weight_names else np.array([]))
        for name, variable in zip(weight_names, layer.weights):
            layer_group.create_dataset(name, data=variable.value)
    # tf_keras's group for weights owned by the model itself (none here); readers look for it.
    group.create_group("top_level_model_weights").attrs["weight_names"] = np.array([])


def _write_keras3(f, model):
    """Layout 3, as Keras 3 writes it; every layer gets a `vars` group, weightless ones too."""
    f.create_group("vars").attrs["name"] = model.name
    layers = f.create_group("layers")
    for key, layer in _keras3_keys(model):
        variables = layers.create_group(key).create_group("vars")
        variables.attrs["name"] = layer.name
        for index, variable in enumerate(layer.weights):
            variables.create_dataset(str(index), data=variable.value)


def _metadata_json(metadata):
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigError(f"metadata must be a dict. Received: {type(metadata).__name__}.")
    try:
        return json.dumps(metadata or {}, default=_json_default)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"metadata must be JSON-serializable: {error}.") from None


def _json_default(value):
    """numpy scalars and arrays (metrics, for instance) as plain JSON numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
