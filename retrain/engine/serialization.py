"""Model config <-> Model, in Keras's JSON vocabulary.

`model_to_config` writes what tf_keras writes (class_name Sequential/Functional, layers with
`inbound_nodes` as nested lists), so Keras 2 and Keras 3 can both read it. `model_from_config`
reads that, and Keras 3's variant (`batch_shape`, DTypePolicy dicts, `inbound_nodes` holding
`args` with `keras_history`). Classes come only from the `LAYERS` registry: nothing named in a
file is imported, evaluated or looked up as an attribute.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError, EngineError, UnsupportedLayerError
from .layer import MODELS
from .layers import LAYERS
from .layers.core import InputLayer

if TYPE_CHECKING:             # for annotations only: model.py imports this module
    from .model import Model

__all__ = ["model_to_config", "model_from_config", "layer_from_config"]

# Keras-only config noise, dropped before a layer is rebuilt (the one place that knows it):
# * initializers, regularizers and constraints: weights come from the file, and training here
#   has no weight penalties or projections;
# * dtypes and Keras 3 DTypePolicy dicts: the engine computes in float32 and casts on load;
# * InputLayer's sparse/ragged/optional flags and Keras 3's quantization_config;
# * switches for features the engine lacks, only while they hold Keras's default value, so
#   dropping them cannot change the maths. Any other value reaches the layer, which rejects it.
_DROP_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_DROP_KEYS = frozenset({"dtype", "sparse", "ragged", "optional", "quantization_config"})
_DROP_IF_DEFAULT = {"data_format": "channels_last", "groups": 1, "synchronized": False,
                    "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99,
                    "noise_shape": None, "seed": None}


def _clean_layer_config(config):
    """A Keras layer config reduced to the constructor arguments the engine's layers take."""
    clean = {}
    for key, value in config.items():
        if key in _DROP_KEYS or key.endswith(_DROP_SUFFIXES):
            continue
        if key in _DROP_IF_DEFAULT and value == _DROP_IF_DEFAULT[key]:
            continue
        clean[key] = value
    return clean


def layer_from_config(entry):
    """Rebuild one layer from `{"class_name": ..., "config": {...}}` through `LAYERS` only."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
        raise ConfigError("A layer entry must be a dict with a 'config' dict. "
                          f"Received: {entry!r}.")
    class_name = entry.get("class_name")
    config = dict(entry.get("config", {}))
    name = config.get("name") or entry.get("name")
    cls = LAYERS.get(class_name)
    # Keras names each class's module ("keras.layers"; "keras.initializers" for a config's
    # initializer): a class of Keras's name from another module (a custom one) is not Keras's.
    modules = [d.get("module") or "keras" for d in [entry, *config.values()] if isinstance(d, dict)]
    foreign = [m for m in modules if str(m).split(".")[0] not in ("keras", "tf_keras")]
    if cls is None or foreign:
        raise UnsupportedLayerError(
            f"Layer {name!r} has class {class_name!r}"
            f"{f' of module {foreign[0]!r}' if foreign else ''}, which retrain cannot load. "
            f"Supported classes: {', '.join(sorted(LAYERS))}.",
            hint="Lambda and custom layers hold Python code, which retrain never runs from a "
                 "file; rebuild the model from supported layers.")
    config["name"] = name
    try:
        return cls(**_clean_layer_config(config))
    except EngineError:
        raise
    except (TypeError, ValueError) as error:   # e.g. "epsilon": "x" in a damaged file
        raise ConfigError(f"Layer {name!r} ({class_name}) cannot be built from its config: "
                          f"{error}.") from None


def model_to_config(model: Model) -> dict:
    """The model as tf_keras's `model.get_config()` JSON structure."""
    nested = [layer.name for layer in model.layers if isinstance(layer, MODELS["Functional"])]
    if nested:
        raise ConfigError(f"Model {model.name!r} holds model(s) {nested} as layers, which "
                          "model files here store flat.",
                          hint="Save clone_model(model): it inlines nested models.")
    if isinstance(model, MODELS["Sequential"]):
        return {"class_name": "Sequential", "config": _sequential_config(model)}
    names = {id(t): t.layer.name for t in model.inputs + model.outputs}
    layers = []
    for layer in model.layers:
        nodes = [] if isinstance(layer, InputLayer) else [
            [[t.layer.name, 0, 0, {}] for t in layer.inbound]]
        layers.append({**_layer_entry(layer), "name": layer.name, "inbound_nodes": nodes})
    return {"class_name": "Functional", "config": {
        "name": model.name, "trainable": model.trainable, "layers": layers,
        "input_layers": [[names[id(t)], 0, 0] for t in model.inputs],
        "output_layers": [[names[id(t)], 0, 0] for t in model.outputs]}}


def _layer_entry(layer):
    config = layer.get_config()
    if isinstance(layer, InputLayer):
        # tf_keras writes these two flags, and every Keras 2 and 3 reader accepts them.
        config = {**config, "sparse": False, "ragged": False}
    return {"class_name": type(layer).__name__, "config": config}


def _sequential_config(model):
    layers = [_layer_entry(layer) for layer in model.layers]
    if model._input is not None:
        layers.insert(0, _layer_entry(model._input.layer))
    return {"name": model.name, "layers": layers}


def model_from_config(config: dict) -> Model:
    """A Sequential or functional Model from a Keras model config (tf_keras or Keras 3)."""
    try:
        return _model_from_config(config)
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ConfigError(f"Model config is malformed: {type(error).__name__}: {error}.") from None


def _model_from_config(config):
    if not isinstance(config, dict):
        raise ConfigError("A model config must be a dict with 'class_name' and 'config'. "
                          f"Received: {str(config)[:200]!r}.")
    class_name, inner = config.get("class_name"), config.get("config")
    if class_name == "Sequential" and isinstance(inner, list):
        inner = {"layers": inner}  # Keras <= 2.2 wrote a Sequential's layer list alone
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ConfigError(f"Model config has no 'layers' list. Received: {str(inner)[:200]!r}.")
    if class_name == "Sequential":
        return _sequential_from_config(inner)
    if class_name in ("Functional", "Model"):
        return _functional_from_config(inner)
    raise UnsupportedLayerError(f"Model class {class_name!r} cannot be loaded; retrain reads "
                                "'Sequential' and 'Functional' models.")


def _sequential_from_config(inner):
    model = MODELS["Sequential"]([layer_from_config(entry) for entry in inner["layers"]],
                       name=inner.get("name"))
    build_shape = inner.get("build_input_shape")
    if model._input is None and build_shape:
        model.build(build_shape)
    return model


def _functional_from_config(inner):
    tensors = {}
    for entry in inner["layers"]:
        layer = layer_from_config(entry)
        if isinstance(layer, InputLayer):
            tensors[layer.name] = layer.outbound
            continue
        names, as_list = _inbound_names(entry, layer.name)
        args = [_lookup(tensors, n, f"layer {layer.name!r}") for n in names]
        tensors[layer.name] = layer(args if as_list else args[0])
    inputs = [_lookup(tensors, n, "input_layers") for n in _refs(inner.get("input_layers"))]
    outputs = [_lookup(tensors, n, "output_layers") for n in _refs(inner.get("output_layers"))]
    return MODELS["Functional"](inputs if len(inputs) > 1 else inputs[0],
                 outputs if len(outputs) > 1 else outputs[0], name=inner.get("name"))


def _lookup(tensors, name, where):
    if name not in tensors:
        raise ConfigError(f"Model config: {where} reads from layer {name!r}, which is not "
                          "defined before it.")
    return tensors[name]


def _refs(refs):
    """Layer names from input_layers/output_layers: tf_keras [[name, 0, 0], ...] or Keras 3's
    single [name, 0, 0]."""
    if not isinstance(refs, list) or not refs:
        raise ConfigError(f"Model config needs input_layers and output_layers lists. "
                          f"Received: {refs!r}.")
    if isinstance(refs[0], str):
        refs = [refs]
    return [ref[0] for ref in refs]


def _inbound_names(entry, name):
    """(names of the layers this layer reads, whether it takes a list) from `inbound_nodes`.

    tf_keras: [[[name, node, tensor, kwargs], ...]]; Keras 3: [{"args": [tensor or [tensors]]}]
    where a tensor is {"class_name": "__keras_tensor__", "config": {"keras_history": [...]}}."""
    nodes = entry.get("inbound_nodes")
    if not isinstance(nodes, list) or len(nodes) != 1:
        count = len(nodes) if isinstance(nodes, list) else nodes
        raise ConfigError(f"Layer {name!r} must be called exactly once in the graph (shared "
                          f"layers are not supported). Received: inbound_nodes={count!r}.")
    node = nodes[0]
    if isinstance(node, dict):
        args = node.get("args") or [None]
        first = args[0]
        items = first if isinstance(first, list) else [first]
        names = [t["config"]["keras_history"][0] for t in items
                 if isinstance(t, dict) and t.get("class_name") == "__keras_tensor__"]
        as_list = isinstance(first, list)
    else:
        names = [ref[0] for ref in node]
        as_list = len(names) > 1
    if not names:
        raise ConfigError(f"Layer {name!r} has no input tensors in its inbound_nodes. "
                          f"Received: {node!r}.")
    return names, as_list
