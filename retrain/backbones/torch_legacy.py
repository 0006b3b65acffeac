"""Read a PyTorch state dict saved in the legacy (non-zip) format, with pickle and numpy only.

A legacy `.pth` is five pickles in a row, then raw bytes:
  1. a magic number, 2. the protocol version (1001), 3. system info (byte order, type sizes),
  4. the state dict, whose tensors refer to storages through persistent ids,
  5. the list of storage keys; then, for each key in that order, an 8-byte little-endian
  element count followed by the storage's little-endian data.

Unpickling runs whatever callables a file names, so a checkpoint is code. This reader allows
the four globals a state dict of float32/int64 tensors needs, each mapped to an inert numpy
stand-in, and refuses any other global before it is looked up: nothing in the file is
imported or executed. The stand-ins have no writable attributes, so a file cannot alter
them (pickle's BUILD opcode sets attributes) for a later file.
"""
import io
import pickle
import struct
from collections import OrderedDict

import numpy as np

from ..errors import ModelFileError, ShapeError, UnsafeFileError, WeightsError

__all__ = ["read_state_dict", "parse_state_dict", "convert_state_dict"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
# The first pickle of every legacy file: PROTO 2, LONG1 of 10 bytes (the magic), STOP.
_HEADER = b"\x80\x02\x8a\x0a" + _MAGIC.to_bytes(10, "little") + b"."


class _StorageType:
    """What `torch.FloatStorage` / `torch.LongStorage` unpickle to: just a dtype."""
    __slots__ = ()
    dtype = None


class _FloatStorage(_StorageType):
    __slots__ = ()
    dtype = np.dtype("<f4")


class _LongStorage(_StorageType):
    __slots__ = ()
    dtype = np.dtype("<i8")


class _Storage:
    """A storage named in the file; its bytes come after the pickles."""
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


class _TensorRef:
    """A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage."""
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _RebuildTensor:
    """Stand-in for `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    The trailing arguments (requires_grad, backward hooks, metadata) do not affect values."""
    __slots__ = ()

    def __call__(self, storage, storage_offset, size, stride, *unused):
        return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
    ("torch", "FloatStorage"): _FloatStorage(),
    ("torch", "LongStorage"): _LongStorage(),
}


# The pure-Python unpickler, not the C one: its memo is a dict, so a hostile LONG_BINPUT
# index cannot make it allocate a memo list of billions of slots.
class _RestrictedUnpickler(pickle._Unpickler):
    def __init__(self, stream, path, storages):
        super().__init__(stream)
        self._path = path
        self._storages = storages          # key -> (dtype, element count), owned by the reader

    def find_class(self, module, name):
        if not module or not name:  # a GLOBAL line cut short by the end of the file
            raise ModelFileError(f"{self._path} is truncated or corrupt (an incomplete "
                                 "global name).", hint="Download it again.")
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeFileError(
                f"{self._path} asks to import the Python global {module}.{name}, which a "
                "PyTorch state dict never needs. Refused before anything in the file ran.",
                hint="Only convert checkpoints from the pinned source; this file is not one.")
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise ModelFileError(f"{self._path}: malformed storage reference {pid!r:.200}.")
        _, storage_type, key, _location, count = pid[:5]
        previous = self._storages.setdefault(key, (storage_type.dtype, count))
        if previous != (storage_type.dtype, count):
            raise ModelFileError(f"{self._path}: storage {key!r} is declared twice with "
                                 f"different types or sizes.")
        return _Storage(key)


def read_state_dict(path):
    """Read the legacy PyTorch checkpoint at `path` into {name: numpy array}; see
    `parse_state_dict`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ModelFileError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return parse_state_dict(data, path)


def parse_state_dict(data, path):
    """A legacy checkpoint's bytes -> {name: numpy array}; `path` names it in errors.

    Raises UnsafeFileError if it names any global beyond a plain state dict's, and
    ModelFileError if it is truncated, corrupt, or not a legacy checkpoint."""
    if not data.startswith(_HEADER):
        kind = "a zip-format checkpoint" if data[:2] == b"PK" else "not a PyTorch checkpoint"
        raise ModelFileError(f"{path} is {kind}: it lacks the legacy .pth magic number.",
                             hint="This reader handles torch's legacy (non-zip) format only.")
    try:
        return _read(data, path)
    except (UnsafeFileError, ModelFileError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError, struct.error, RecursionError) as exc:
        raise ModelFileError(f"{path} is truncated or corrupt ({type(exc).__name__}: "
                             f"{str(exc):.200}).", hint="Download it again.") from exc


def _read(data, path):
    stream = io.BytesIO(data)
    storages = {}

    def load():
        return _RestrictedUnpickler(stream, path, storages).load()

    load()  # the magic number, already checked byte for byte
    protocol = load()
    if protocol != _PROTOCOL:
        raise ModelFileError(f"{path}: unsupported legacy protocol version. "
                             f"Received: {protocol!r}, expected {_PROTOCOL}.")
    sys_info = load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ModelFileError(f"{path} was written on a big-endian machine or has no system "
                             "info; only little-endian checkpoints are supported.")
    state = load()
    keys = load()
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelFileError(f"{path} does not hold a state dict (a mapping of names to "
                             f"tensors). Received: {type(state).__name__}.")
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise ModelFileError(f"{path}: the storage key list does not match the storages "
                             "the tensors use.")
    arrays = _read_storages(data, stream.tell(), keys, storages, path)
    return OrderedDict((name, _materialise(name, ref, arrays, path))
                       for name, ref in state.items())


def _read_storages(data, offset, keys, storages, path):
    """Each storage: an int64 element count, then count * itemsize bytes (little-endian)."""
    arrays = {}
    for key in keys:
        dtype, count = storages[key]
        (stored,) = struct.unpack_from("<q", data, offset)
        if stored != count:
            raise ModelFileError(f"{path}: storage {key!r} holds {stored} elements where its "
                                 f"tensors declare {count}.")
        offset += 8
        end = offset + count * dtype.itemsize
        if end > len(data):
            raise ModelFileError(f"{path} is truncated: storage {key!r} needs bytes up to "
                                 f"{end}, the file has {len(data)}.", hint="Download it again.")
        arrays[key] = np.frombuffer(data, dtype, count, offset)
        offset = end
    return arrays


def _materialise(name, ref, arrays, path):
    """Copy tensor `name` out of its storage, checking the view stays inside it."""
    def bad(why):
        return ModelFileError(f"{path}: tensor {name!r} {why}.")

    if not isinstance(ref, _TensorRef) or not isinstance(ref.storage, _Storage):
        raise bad(f"is not a tensor (got {type(ref).__name__})")
    if ref.storage.key not in arrays:
        raise bad("refers to an unknown storage")
    flat = arrays[ref.storage.key]
    size, stride, offset = ref.size, ref.stride, ref.offset
    ints = (type(offset) is int and isinstance(size, tuple) and isinstance(stride, tuple)
            and all(type(v) is int and v >= 0 for v in size + stride))
    if not ints or offset < 0 or len(size) != len(stride):
        raise bad("has a malformed offset, size or stride")
    if 0 in size:
        return np.zeros(size, flat.dtype.newbyteorder("="))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise bad(f"reads element {last} of a storage of {flat.size}")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride))
    return view.astype(flat.dtype.newbyteorder("="), order="C", copy=True)


# BatchNorm's training-step counter: 0 everywhere here (the weights came from TF), unused.
_IGNORED_SUFFIX = ".num_batches_tracked"


def convert_state_dict(model, state, mapping):
    """Copy PyTorch state dict `state` into `model` by `mapping`, [(torch module, our layer
    name)]: each layer's class says how its weights are named and laid out in PyTorch
    (`torch_weights`). Every tensor must find its layer and every layer weight its tensor."""
    used = set()
    for module, layer_name in mapping:
        layer = model.get_layer(layer_name)
        names = type(layer).torch_weights
        for weight in layer.weights:
            if weight.name not in names:
                raise WeightsError(f"Layer {layer_name!r} has a weight {weight.name!r} that "
                                   f"no tensor of {module!r} maps to.")
            param, axes = names[weight.name]
            key = f"{module}.{param}"
            if key not in state:
                raise WeightsError(f"The checkpoint has no tensor {key!r} for layer "
                                   f"{layer_name!r} weight {weight.name!r}.")
            try:
                weight.assign(state[key] if axes is None else state[key].transpose(axes))
            except ShapeError as exc:
                raise WeightsError(f"Tensor {key!r} of shape {state[key].shape} does not fit "
                                   f"layer {layer_name!r}: {exc}") from exc
            used.add(key)
    unused = [k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIX)]
    if unused:
        raise WeightsError(f"The checkpoint has {len(unused)} tensor(s) no layer takes, "
                           f"e.g. {unused[:3]}: it is not {model.name}.")
