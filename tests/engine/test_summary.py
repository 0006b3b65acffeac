"""The Keras-style summary table against tables Keras itself printed: MobileNetV2 (Keras 3
and tf_keras), the seed CNN's parameter counts, totals and frozen layers."""
import json
from pathlib import Path

import numpy as np
import pytest

from seed_models import seed_cnn
from retrain.engine import (Add, BatchNormalization, Dense, Input, Model, Sequential,
                            clear_session)
from retrain.engine.summary import readable_size, summary_table

SEED_CNN = Path(__file__).parents[1] / "fixtures" / "keras" / "seed_cnn" / "seed_cnn.json"
MOBILENET_V2 = Path(__file__).parents[1] / "fixtures" / "keras" / "mobilenet_v2"


def _cells(table):
    """The rows of a box-drawn table as lists of cells, a cell wrapped over several lines
    joined with spaces (Keras wraps long names; column widths differ between printers)."""
    rows, current = [], None
    for line in table.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            current = current or [[] for _ in cells]
            for parts, cell in zip(current, cells):
                if cell:
                    parts.append(cell)
        elif current is not None:
            rows.append([" ".join(parts) for parts in current])
            current = None
    return rows


def test_mobilenet_v2_summary_equals_what_keras_3_printed():
    from retrain.backbones import mobilenet_v2
    clear_session()
    model = mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3), pooling="avg", weights=None)
    ours = summary_table(model)
    keras = (MOBILENET_V2 / "mobilenet_v2_summary_keras3.txt").read_text(encoding="utf-8")
    assert ours.splitlines()[0] == keras.splitlines()[0] == 'Model: "mobilenetv2_0.35_96"'
    assert len(_cells(keras)) == len(model.layers) == 155
    assert _cells(ours) == _cells(keras)          # names, types, shapes, params, wiring
    assert ours.strip().splitlines()[-3:] == keras.strip().splitlines()[-3:]
    # tf_keras prints the same totals without thousands separators
    tf_keras = (MOBILENET_V2 / "mobilenet_v2_summary_tf_keras.txt").read_text(encoding="utf-8")
    totals = [line.replace(",", "").strip() for line in ours.strip().splitlines()[-3:]]
    assert totals == [line for line in tf_keras.splitlines() if "params:" in line]


def _row(table, name):
    rows = [line for line in table.splitlines() if line.startswith(f"│ {name} (")]
    assert len(rows) == 1, name
    return [cell.strip() for cell in rows[0].strip("│").split("│")]


def test_seed_cnn_rows_match_the_keras_model():
    table = summary_table(seed_cnn())
    assert table.splitlines()[0].startswith('Model: "sequential')
    assert _row(table, "conv2d") == ["conv2d (Conv2D)", "(None, 28, 28, 32)", "832"]
    assert _row(table, "conv2d_1") == ["conv2d_1 (Conv2D)", "(None, 14, 14, 64)", "8,256"]
    assert _row(table, "flatten") == ["flatten (Flatten)", "(None, 3136)", "0"]
    assert _row(table, "dense") == ["dense (Dense)", "(None, 1000)", "3,137,000"]
    assert _row(table, "dense_1") == ["dense_1 (Dense)", "(None, 10)", "10,010"]
    # Every layer of the Keras fixture appears, with Keras's output shape.
    for layer in json.loads(SEED_CNN.read_text())["layers"]:
        assert _row(table, layer["name"])[1] == str(tuple(layer["output_shape"]))
    assert "Connected to" not in table
    assert table.splitlines()[-3:] == [" Total params: 3,156,098 (12.04 MB)",
                                       " Trainable params: 3,156,098 (12.04 MB)",
                                       " Non-trainable params: 0 (0.00 B)"]


def test_a_frozen_layer_moves_to_non_trainable():
    model = seed_cnn()
    model.get_layer("dense").trainable = False
    assert summary_table(model).splitlines()[-3:] == [" Total params: 3,156,098 (12.04 MB)",
                                                      " Trainable params: 19,098 (74.60 KB)",
                                                      " Non-trainable params: 3,137,000 (11.97 MB)"]


def test_batch_norm_statistics_are_non_trainable_params():
    clear_session()
    table = summary_table(Sequential([Input((4,)), Dense(3), BatchNormalization()]))
    assert _row(table, "batch_normalization")[2] == "12"
    assert table.splitlines()[-3:] == [" Total params: 27 (108.00 B)",
                                       " Trainable params: 21 (84.00 B)",
                                       " Non-trainable params: 6 (24.00 B)"]


def test_an_unbuilt_model_shows_unknown_shapes():
    clear_session()
    table = summary_table(Sequential([Dense(3)]))
    assert _row(table, "dense") == ["dense (Dense)", "?", "0 (unbuilt)"]
    assert " Total params: 0 (0.00 B)" in table


def test_model_summary_prints_through_print_fn():
    model = seed_cnn()
    lines = []
    model.summary(print_fn=lines.append)
    assert lines == [summary_table(model)]


def test_merges_add_a_connected_to_column():
    clear_session()
    inputs = Input((4,))
    hidden = Dense(4, name="hidden")(inputs)
    outputs = Add(name="add")([inputs, hidden])
    table = summary_table(Model(inputs, outputs))
    header = [c.strip() for c in table.splitlines()[2].strip("┃").split("┃")]
    assert header == ["Layer (type)", "Output Shape", "Param #", "Connected to"]
    assert _row(table, "input_layer") == ["input_layer (InputLayer)", "(None, 4)", "0", "-"]
    assert _row(table, "hidden") == ["hidden (Dense)", "(None, 4)", "20", "input_layer[0][0]"]
    lines = table.splitlines()
    add_line = next(n for n, line in enumerate(lines) if line.startswith("│ add ("))
    assert _row(table, "add")[3] == "input_layer[0][0],"
    assert lines[add_line + 1].strip("│").split("│")[3].strip() == "hidden[0][0]"


@pytest.mark.parametrize("num_bytes, text", [(0, "0.00 B"), (1023, "1023.00 B"),
                                             (56320, "55.00 KB"), (1024 ** 3 * 3, "3.00 GB")])
def test_readable_size_uses_powers_of_1024(num_bytes, text):
    assert readable_size(num_bytes) == text


def test_count_params_agrees_with_the_table():
    model = seed_cnn()
    assert model.count_params() == 3156098 == sum(np.prod(w.shape) for w in model.weights)
