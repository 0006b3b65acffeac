"""What the CLI prints, as lines of text built from plain data (cli.py does the printing):
`retrain info`'s readable key: value lines and `retrain classify`'s table."""

from .evaluate import small_sample_warnings, wilson_interval

__all__ = ["FAILED_WHERE", "ClassifyTable", "accuracy_text", "backbone_lines", "cv_lines",
           "fit_lines", "info_lines", "metrics_lines", "runtime_lines", "selection_lines"]

# Where `retrain classify` says why a file was not classified, by --format.
FAILED_WHERE = {"table": "each such row ends with the reason, after the path",
                "csv": "see the error column", "json": 'see each record\'s "error"'}

_LABELS_SHOWN = 20
_LABEL_WIDTH_MOST = 24          # longer labels (a few ImageNet ones) are cut with an ellipsis


class ClassifyTable:
    """Rows of label/probability columns, then the path. The columns' width comes from the
    model's labels, so rows line up while they stream, before all paths are known."""

    def __init__(self, labels, top_k, answer=False):
        self.k = min(top_k, len(labels))
        self.width = min(max([len("label 1"), len("unknown")] + [len(label) for label in labels]),
                         _LABEL_WIDTH_MOST)
        self.answer = answer                # a first column: the label, or "unknown"

    def header(self):
        cells = [f"{f'label {rank}':<{self.width}}  {'prob':>5}" for rank in
                 range(1, self.k + 1)]
        return "  ".join([f"{'answer':<{self.width}}"] * self.answer + cells + ["path"])

    def row(self, record):
        if "error" in record:   # no label, no "error" where a label goes: the reason last
            span = self.k * (self.width + 9) - 2 + self.answer * (self.width + 2)
            return f"{'-':<{span}}  {record['path']}  (not classified: {record['error']})"
        cells = [f"{self._fit(t['label']):<{self.width}}  {t['probability']:5.3f}"
                 for t in record["top"]]
        answer = [f"{self._fit(record['prediction']):<{self.width}}"] if self.answer else []
        return "  ".join(answer + cells + [str(record["path"])])

    def _fit(self, label):
        return label if len(label) <= self.width else label[:self.width - 1] + "…"


def accuracy_text(accuracy, count, images=False):
    """An accuracy with its 95% Wilson interval: '0.8614 (95% CI 0.781-0.916)', with
    `images` '0.8614 (95% CI 0.781-0.916, 101 images)'. The interval is recomputed from
    the count, so older model files' figures get one too."""
    low, high = wilson_interval(round(accuracy * count), count)
    return f"{accuracy:.4f} (95% CI {low:.3f}-{high:.3f}" + (f", {count} images)" if images
                                                               else ")")


def fit_lines(result, seconds, augment):
    """`retrain fit`'s results (pipeline.RunResult): counts, accuracies with their
    intervals, the cache, the epoch kept, the cross-validation, where the files are."""
    m = result.metrics
    searched = (m.get("training") or {}).get("search")     # the final model: train+val
    lines = [f"trained on {searched['trained_on']} images (train+val)" if searched else
             f"trained on {m['train']['count']} images"]
    lines[0] += f" of {len(m['classes'])} classes in {seconds:.1f} s"
    for split in ("val", "test"):
        n = m[split]["count"]
        if n:
            lines.append(f"  {split} accuracy {accuracy_text(m[split]['accuracy'], n, True)}"
                         + (f", top-{m[split]['top_k']} "
                            f"{accuracy_text(m[split]['top_k_accuracy'], n)}"
                            if m[split]["top_k"] else ""))
    lines.append(f"  features: {m['cache']['hits']} from the cache, {m['cache']['misses']} "
                 "computed")
    ran, best = len(result.history["loss"]), result.history["best_epoch"]
    if ran < result.history["epochs_planned"]:
        lines.append(f"  stopped early at epoch {ran}; kept epoch {best} (best val loss)")
    elif best < ran:
        lines.append(f"  kept epoch {best} of {ran} (best val loss)")
    if augment:
        lines.append(f"  augmented views: {m['cache']['view_hits']} from the cache, "
                     f"{m['cache']['view_misses']} computed")
    if m["skipped"]:
        lines.append(f"  skipped {m['skipped']} files: see {result.run_dir / 'skipped.tsv'}")
    return lines + cv_lines(m.get("cross_validation")) + [
        f"  model:  {result.model_path}", f"  report: {result.report_path}"]


def cv_lines(cv):
    """`retrain fit --cv K`'s lines: each fold, then the mean and spread (crossval.py)."""
    if not cv:
        return []
    lines = [f"  {cv['folds']}-fold cross-validation of {cv['what']} (fine-tuning is not "
             "cross-validated):"]
    lines += [f"    fold {f['fold']}: accuracy {accuracy_text(f['accuracy'], f['count'], True)}"
              f"; trained on {f['train']}, {f['val']} for early stopping"
              for f in cv["per_fold"]]
    pooled = cv["pooled"]
    lines.append(f"    mean accuracy {cv['mean_accuracy']:.4f}, standard deviation "
                 f"{cv['std_accuracy']:.4f} over {cv['folds']} folds (min "
                 f"{cv['min_accuracy']:.4f}, max {cv['max_accuracy']:.4f}); all "
                 f"{pooled['count']} images: {accuracy_text(pooled['accuracy'], pooled['count'])}")
    return lines


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
    if info.get("epochs_run") is not None and isinstance(provenance.get("head"), dict):
        asked = provenance["head"].get("epochs")   # fine-tuning's epochs come after the freeze
        provenance["head"] = dict(provenance["head"], epochs=info["epochs_run"],
                                  epochs_asked=asked)
    if provenance:
        lines.append("provenance:")
        rows = list(_key_values(provenance))
        width = max(len(key) for key, _ in rows) + 1
        for key, value in rows:
            lines.append(f"  {key + ':':<{width}} {value}")
    if info.get("seen"):
        lines.append(f"learnt from:  {info['seen']['train']} training and {info['seen']['val']} "
                     "validation images, recorded by content (evaluate leaves them out)")
    elif info["labels"] and info["split"]:
        lines.append("learnt from:  not recorded (a file from before 2026-12-07): evaluate "
                     "recomputes the split from file names")
    for split, m in (info["metrics"] or {}).items():
        if m.get("count"):
            lines.append(f"{split} accuracy at export: "
                         f"{accuracy_text(m['accuracy'], m['count'], images=True)}")
    return lines


def selection_lines(selection, data, per_class):
    """`retrain evaluate`'s first lines: which images of DATA were scored, and why (the
    "selection" of pipeline.evaluate_model), then a note on each file skipped."""
    n, images, split = selection["scored"], selection["images"], selection["split"]
    if selection["by"] == "name":
        lines = [f"scored {n} of {images} images in {data}: the {split} split, recomputed "
                 "from the file names",
                 "note: this model file does not record which images it trained on (written "
                 "before 2026-12-07), so the split is right only in the folder it was trained "
                 "on; fit again to record it"]
    else:
        seen = {"train": selection["trained_on"], "val": selection["validated_on"]}
        which = {"test": "the ones the model neither trained nor validated on",
                 "val": "the ones the model validated on",
                 "train": "the ones the model trained on",
                 "all": "all of them, training images included"}[split]
        if split == "test" and not seen["train"] + seen["val"]:
            which = "the model has seen none of them"
        lines = [f"scored {n} of {images} images in {data}: {which} (by content; "
                 f"{seen['train']} trained on, {seen['val']} validated on)"]
    lines += [f"note: skipped {item['path']}: {item['reason']}" for item in
              selection["skipped"]]
    return lines + [f"warning: {text}" for text in small_sample_warnings(
        {split: n}, {name: c["support"] for name, c in per_class.items()})]


def metrics_lines(metrics):
    """`retrain evaluate`'s table: accuracy, loss, per-class scores, confusion matrix."""
    if not metrics["count"]:
        return []
    n = metrics["count"]
    lines = [f"accuracy        {accuracy_text(metrics['accuracy'], n)}"]
    if metrics["top_k"]:
        lines.append(f"top-{metrics['top_k']} accuracy  "
                     f"{accuracy_text(metrics['top_k_accuracy'], n)}")
    lines += [f"loss            {metrics['loss']:.4f}",
              f"macro F1        {metrics['macro_f1']:.4f}", ""]
    width = max(len("class"), *(len(n) for n in metrics["per_class"]))
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for name, c in metrics["per_class"].items():
        lines.append(f"{name:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  "
                     f"{c['f1']:6.4f}  {c['support']:7d}")
    lines.append("\nconfusion matrix (rows: true class, columns: predicted, in the order above)")
    lines += [" ".join(f"{v:5d}" for v in row) for row in metrics["confusion_matrix"]]
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



def backbone_lines(rows):
    """`retrain backbones`: a table of backbones.describe_backbones() rows, and its legend."""
    lines = [f"{'backbone':<19} {'parameters':>10}  input  top-1  images/s  weights"]
    for r in rows:
        speed = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}"
        where = "present" if r["weights_present"] else f"missing: {r['how_to_get']}"
        lines.append(f"{r['name']:<19} {r['params']:>10,}  {r['input_size'][0]:>5}  "
                     f"{r['top1']:.1f}%  {speed:>8}  {where}")
    sources = "; ".join(dict.fromkeys(r["top1_source"] for r in rows))  # each once, in order
    return lines + ["", f"top-1: ImageNet, as published ({sources}); images/s: "
                    "this machine, from `make bench` (- if it has not run)"]


def runtime_lines(rows):
    """`retrain runtimes`: a table of runtimes.describe_runtimes() rows, and its legend."""
    lines = [f"{'runtime':<12} {'version':<10} {'precisions':<10} {'f32 img/s':>9} "
             f"{'bf16 img/s':>10}  installed"]
    for r in rows:
        rates = ["-" if r["images_per_s"][p] is None else f"{r['images_per_s'][p]:.1f}"
                 for p in ("f32", "bf16")]
        version = (r["version"] or "-").split("-")[0]
        lines.append(f"{r['name']:<12} {version:<10} {','.join(r['precisions']) or '-':<10} "
                     f"{rates[0]:>9} {rates[1]:>10}  "
                     f"{'yes' if r['installed'] else 'no: ' + r['how_to_get']}")
    return lines + ["", "images/s: EfficientNet-Lite0 features at batch 32 on this machine, from "
                    "`make bench` (- if it has not run); --runtime auto takes the fastest "
                    "installed"]
