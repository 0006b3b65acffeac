"""The few ONNX messages retrain writes, encoded as protobuf bytes without the onnx package.

Importing `onnx` takes about half a second (most of it ml_dtypes registering its dtypes
with numpy), and every `retrain fit`, `classify`, `evaluate` and `serve` on a compiled
runtime (runtimes.py) exported its model to ONNX at start-up: those processes paid it
before the first image. The messages retrain writes are few and simple, so they are
written here: each function returns one message's bytes, fields in field-number order,
as the onnx package (protobuf) serializes them, so the bytes are the same (the export
tests parse them with onnx and check them with onnx.checker).

Field numbers and types are those of onnx/onnx.proto (proto2: repeated numbers are not
packed). Only what retrain's export uses is here.
"""
import numbers
import struct

import numpy as np

__all__ = ["node", "tensor", "value_info", "model"]

_VARINT, _FIXED32, _BYTES = 0, 5, 2
# TensorProto.DataType and AttributeProto.AttributeType values (onnx.proto)
_DATA_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 6, np.dtype(np.int64): 7}
_FLOAT, _INT, _STRING, _FLOATS, _INTS = 1, 2, 3, 6, 7


def _varint(value):
    value &= (1 << 64) - 1                  # int64: negative numbers take ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _int(field, value):
    return _key(field, _VARINT) + _varint(int(value))


def _float(field, value):
    return _key(field, _FIXED32) + struct.pack("<f", value)


def _bytes(field, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _key(field, _BYTES) + _varint(len(value)) + value


def _attribute(name, value):
    """AttributeProto as onnx.helper.make_attribute writes a number, a string or a list of
    numbers (ints if all are integers, else floats)."""
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        body, kind = _int(3, value), _INT
    elif isinstance(value, numbers.Real):
        body, kind = _float(2, value), _FLOAT
    elif isinstance(value, (str, bytes)):
        body, kind = _bytes(4, value), _STRING
    elif all(isinstance(v, numbers.Integral) for v in value):
        body, kind = b"".join(_int(8, v) for v in value), _INTS
    elif all(isinstance(v, numbers.Real) for v in value):
        body, kind = b"".join(_float(7, v) for v in value), _FLOATS
    else:
        raise TypeError(f"attribute {name!r}: no ONNX form for {value!r}")
    return _bytes(1, name) + body + _int(20, kind)


def node(op, inputs, outputs, name, **attributes):
    """NodeProto (onnx.helper.make_node: attributes sorted by name)."""
    return b"".join([*(_bytes(1, x) for x in inputs), *(_bytes(2, y) for y in outputs),
                     _bytes(3, name), _bytes(4, op),
                     *(_bytes(5, _attribute(k, v)) for k, v in sorted(attributes.items()))])


def tensor(name, array):
    """TensorProto of a float32, int32 or int64 array (onnx.numpy_helper.from_array: the
    values as little-endian raw_data)."""
    array = np.asarray(array)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return b"".join([*(_int(1, d) for d in array.shape), _int(2, _DATA_TYPES[array.dtype]),
                     _bytes(8, name), _bytes(9, data)])


def value_info(name, dims):
    """ValueInfoProto of a float32 tensor; each of `dims` an int (dim_value) or a str
    (dim_param)."""
    shape = b"".join(_bytes(1, _int(1, d) if isinstance(d, numbers.Integral) else _bytes(2, d))
                     for d in dims)
    tensor_type = _int(1, _DATA_TYPES[np.dtype(np.float32)]) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(nodes, name, inputs, outputs, initializers, *, ir_version, opset, producer,
          producer_version, properties):
    """ModelProto of one graph (onnx.helper.make_graph, make_model with opset_imports
    [("", opset)], then set_model_props(properties))."""
    graph = b"".join([*(_bytes(1, n) for n in nodes), _bytes(2, name),
                      *(_bytes(5, t) for t in initializers), *(_bytes(11, i) for i in inputs),
                      *(_bytes(12, o) for o in outputs)])
    return b"".join([_int(1, ir_version), _bytes(2, producer), _bytes(3, producer_version),
                     _bytes(7, graph), _bytes(8, _bytes(1, "") + _int(2, opset)),
                     *(_bytes(14, _bytes(1, k) + _bytes(2, v)) for k, v in properties.items())])
