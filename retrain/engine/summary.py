"""The Keras 3 style summary table. Reads only layer names, shapes, wiring and weight lists."""

_BYTES_PER_PARAM = 4  # every weight is float32


def summary_table(model):
    """Layer (type) | Output Shape | Param # [| Connected to], then the parameter totals.

    "Connected to" appears, as in Keras 3, only for graphs that are not a plain chain
    (a merge such as Add, or one tensor feeding several layers)."""
    connected = not _is_chain(model)
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connected else [])
    rows = []
    for layer in model.layers:
        row = [[f"{layer.name} ({type(layer).__name__})"], [_shape(layer.output_shape)],
               [_params(layer)]]
        if connected:
            row.append(_inbound(layer))
        rows.append(row)
    trainable = sum(w.value.size for w in model.trainable_weights)
    frozen = sum(w.value.size for w in model.non_trainable_weights)
    lines = [f'Model: "{model.name}"'] + _box(header, rows) + [
        f" Total params: {_count(trainable + frozen)}",
        f" Trainable params: {_count(trainable)}",
        f" Non-trainable params: {_count(frozen)}"]
    return "\n".join(lines)


def _is_chain(model):
    consumers = {}
    for layer in model.layers:
        if len(layer.inbound) > 1:
            return False
        for tensor in layer.inbound:
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    return all(n == 1 for n in consumers.values())


def _shape(shape):
    return "?" if shape is None else str(tuple(shape))


def _params(layer):
    return f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"


def _inbound(layer):
    names = [f"{t.layer.name}[0][{t.index}]" for t in layer.inbound]
    if not names:
        return ["-"]
    return [name + "," for name in names[:-1]] + names[-1:]


def _count(params):
    return f"{params:,} ({readable_size(params * _BYTES_PER_PARAM)})"


def readable_size(num_bytes):
    """Keras's memory format: 12624392 -> '12.04 MB' (powers of 1024, two decimals)."""
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} TB"


def _box(header, rows):
    """Rows of multi-line cells drawn with Keras 3's box characters; Param # right-aligned."""
    widths = [max([len(header[i])] + [len(line) for row in rows for line in row[i]])
              for i in range(len(header))]

    def rule(left, fill, mid, right):
        return left + mid.join(fill * (w + 2) for w in widths) + right

    def cells(values, edge):
        parts = [f" {v.rjust(w) if i == 2 else v.ljust(w)} "
                 for i, (v, w) in enumerate(zip(values, widths))]
        return edge + edge.join(parts) + edge

    lines = [rule("┏", "━", "┳", "┓"), cells(header, "┃"),
             rule("┡", "━", "╇", "┩")]
    for n, row in enumerate(rows):
        if n:
            lines.append(rule("├", "─", "┼", "┤"))
        height = max(len(cell) for cell in row)
        for k in range(height):
            lines.append(cells([cell[k] if k < len(cell) else "" for cell in row], "│"))
    lines.append(rule("└", "─", "┴", "┘"))
    return lines
