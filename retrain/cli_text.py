"""What the CLI prints, as lines of text built from plain data (cli.py does the printing):
`retrain info`'s readable key: value lines and `retrain classify`'s table."""

__all__ = ["STAGE_TEXT", "ClassifyTable", "info_lines"]

# `retrain fit`'s stage lines: what each stage of pipeline.STAGES does
STAGE_TEXT = {"ingest": "finding the images", "features": "computing backbone features",
              "skip": "setting aside files that cannot be decoded",
              "split": "splitting into train, val and test",
              "augment": "computing augmented views of the training images",
              "fit": "training the classifier",
              "evaluate": "scoring train, val and test", "report": "writing report.html",
              "export": "writing model.h5 and labels.txt"}

_LABELS_SHOWN = 20
_LABEL_WIDTH_MOST = 24          # longer labels (a few ImageNet ones) are cut with an ellipsis


class ClassifyTable:
    """Rows of label/probability columns, then the path. The columns' width comes from the
    model's labels, so rows line up while they stream, before all paths are known."""

    def __init__(self, labels, top_k):
        self.k = min(top_k, len(labels))
        self.width = min(max([len("label 1")] + [len(label) for label in labels]),
                         _LABEL_WIDTH_MOST)

    def header(self):
        cells = [f"{f'label {rank}':<{self.width}}  {'prob':>5}" for rank in
                 range(1, self.k + 1)]
        return "  ".join(cells + ["path"])

    def row(self, record):
        if "error" in record:               # the path stays in its column; the reason after
            span = self.k * (self.width + 9) - 2
            return f"{'error':<{span}}  {record['path']}: {record['error']}"
        cells = [f"{self._fit(t['label']):<{self.width}}  {t['probability']:5.3f}"
                 for t in record["top"]]
        return "  ".join(cells + [str(record["path"])])

    def _fit(self, label):
        return label if len(label) <= self.width else label[:self.width - 1] + "…"


def info_lines(info, path):
    """`retrain info` for the dict export.describe returns: one fact per line, nested
    provenance as dotted keys, nothing shown twice."""
    lines = []
    params = info["params"]
    lines.append(f"model:        {path} ({info['name']})")
    lines.append(f"backbone:     {info['backbone'] or '?'}")
    types = ", ".join(f"{n} {t}" for t, n in sorted(info["layer_types"].items()))
    lines.append(f"layers:       {info['layers']} ({types})")
    lines.append(f"parameters:   {params['total']:,} total, {params['trainable']:,} trainable, "
                 f"{params['non_trainable']:,} non-trainable")
    lines.append(f"input:        {tuple(info['input_shape'])}  output: "
                 f"{tuple(info['output_shape'])} ({info['outputs'] or 'unknown'})")
    recipe = info["preprocessing"]
    if recipe:
        lines.append(f"preprocessing: centre crop {recipe['crop_fraction']} of the short "
                     f"side, {recipe['resize_filter']} resize to {recipe['input_size'][0]}x"
                     f"{recipe['input_size'][1]}, (x - {recipe['mean']}) / {recipe['std']}, "
                     f"{recipe['channel_order']}")
    labels = info["labels"] or []
    shown = ", ".join(labels[:_LABELS_SHOWN]) if labels else "none recorded"
    more = f", ... (all {len(labels)} with --json)" if len(labels) > _LABELS_SHOWN else ""
    lines.append(f"classes ({len(labels)}): {shown}{more}")
    provenance = dict(info["provenance"] or {})
    if provenance.get("backbone") == info["backbone"]:
        del provenance["backbone"]                 # already on the backbone: line
    if provenance.get("weights_sha256") == (provenance.get("backbone_provenance") or {}).get(
            "weights_sha256"):
        provenance.pop("weights_sha256", None)     # the same hash, shown once
    if provenance:
        lines.append("provenance:")
        rows = list(_key_values(provenance))
        width = max(len(key) for key, _ in rows) + 1
        for key, value in rows:
            lines.append(f"  {key + ':':<{width}} {value}")
    for split, m in (info["metrics"] or {}).items():
        if m.get("count"):
            lines.append(f"{split} accuracy at export: {m['accuracy']:.4f} "
                         f"({m['count']} images)")
    return lines


def _key_values(mapping, prefix=""):
    """(dotted key, text) for each leaf of a nested dict, one line each."""
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _key_values(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            yield f"{prefix}{key}", ", ".join(str(v) for v in value)
        else:
            yield f"{prefix}{key}", value

