"""RUN/report.html: one self-contained page (inline CSS, images as data: URIs) showing the
numbers, the learning curves, the confusion matrix and the worst mistakes.

It computes no metrics: everything comes from metrics.json's dict and the training history."""
import base64
import html
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import DataError, ImageError
from .files import atomic_write_text, resolve_relative
from .images import decode_image
from .search import search_table_html

__all__ = ["render_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border:1px solid #ddd;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.mistakes{display:flex;flex-wrap:wrap;gap:1em}.mistakes figure{margin:0;width:150px;
font-size:.8em;word-break:break-all}.muted{color:#777}.curves{display:flex;gap:2em;flex-wrap:wrap}
.mistakes img{width:140px;height:140px;object-fit:contain;image-rendering:pixelated}
.side{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
table.confusion td{min-width:2.2em}table.confusion th{text-align:left;font-weight:normal}
"""
_SPLITS = ("train", "val", "test")
_INSET = 8      # px between the plot's border and epoch 1 or the last (a marker there too)
_CONFUSION_TABLE_MOST = 30      # classes; beyond that only the picture (a table too wide)


def _png_uri(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value, digits=4):
    return "–" if value is None else f"{value:.{digits}f}"


def _with_interval(value, interval):
    """An accuracy and its 95% Wilson interval (evaluate.wilson_interval)."""
    if value is None or not interval:
        return _fmt(value)
    return f"{value:.4f} <small>({interval[0]:.3f}–{interval[1]:.3f})</small>"


def _summary_table(metrics):
    rows = []
    for split in _SPLITS:
        m = metrics.get(split)
        if not m:
            continue
        top = (f"<td>{_with_interval(m['top_k_accuracy'], m.get('top_k_accuracy_interval'))}"
               "</td>" if m["top_k"] else "")
        accuracy = _with_interval(m["accuracy"], m.get("accuracy_interval"))
        rows.append(f"<tr><td>{split}</td><td>{m['count']}</td><td>{accuracy}</td>"
                    f"{top}<td>{_fmt(m['loss'])}</td><td>{_fmt(m['macro_f1'])}</td></tr>")
    k = next((metrics[s]["top_k"] for s in _SPLITS if metrics.get(s)), None)
    return ("<table><tr><th>split</th><th>images</th><th>accuracy (95% interval)</th>"
            + (f"<th>top-{k} accuracy (95% interval)</th>" if k else "") + "<th>loss</th><th>macro F1</th></tr>"
            + "".join(rows) + "</table>")


def _per_class_table(split_metrics):
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(c['precision'], 3)}</td>"
        f"<td>{_fmt(c['recall'], 3)}</td><td>{_fmt(c['f1'], 3)}</td><td>{c['support']}</td></tr>"
        for name, c in split_metrics["per_class"].items())
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th></tr>" + rows + "</table>")


def _ticks(low, high, count=6):
    """At most about `count` round tick values (1, 2, 2.5 or 5 times a power of 10) from the
    last one at or below `low` to the first at or above `high`: the axis spans them."""
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = np.floor(low / step + 1e-9) * step, np.ceil(high / step - 1e-9) * step
    return [round(float(v), 12) for v in np.arange(first, last + step / 2, step)]


def _curve_svg(title, series, best_epoch=None, width=480, height=280):
    """A line chart of {name: [value per epoch]} as inline SVG: epochs 1.. on x, ticks and
    a grid on both axes, the best epoch marked, the legend above the plot (never on a curve)."""
    series = {n: [float(v) for v in vals] for n, vals in series.items() if vals}
    if not series:
        return ""
    values = [v for vals in series.values() for v in vals if np.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    y_ticks = _ticks(low, high)
    low, high = min(low, y_ticks[0]), max(high, y_ticks[-1])
    epochs = max(len(v) for v in series.values())
    x_ticks = [int(t) for t in _ticks(1, max(epochs, 2)) if t == int(t) and 1 <= t <= epochs]
    left, right, top, bottom = 50, 12, 44, 36
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(epoch):
        return left + _INSET + (plot_w - 2 * _INSET) * (epoch - 1) / max(epochs - 1, 1)

    def y_of(v):
        return top + plot_h * (1 - (v - low) / (high - low))

    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="15" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for v in y_ticks:
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y_of(v):.1f}" '
                     f'y2="{y_of(v):.1f}" stroke="#e6e6e6"/><text x="{left - 5}" '
                     f'y="{y_of(v) + 3:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    for t in x_ticks:
        parts.append(f'<line class="grid" x1="{x_of(t):.1f}" x2="{x_of(t):.1f}" y1="{top}" '
                     f'y2="{top + plot_h}" stroke="#e6e6e6"/><text x="{x_of(t):.1f}" '
                     f'y="{top + plot_h + 13}" font-size="10" text-anchor="middle">{t}</text>')
    parts += [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
              'stroke="#999"/>',
              f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="11" '
              'text-anchor="middle">epoch</text>']
    if best_epoch and 1 <= best_epoch <= epochs:
        x, key = x_of(best_epoch), left + 90 * len(series)
        parts.append(f'<line class="best" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                     f'y2="{top + plot_h}" stroke="#555" stroke-dasharray="4 3"/>'
                     f'<g class="legend"><line x1="{key}" x2="{key + 18}" y1="30" y2="30" '
                     f'stroke="#555" stroke-dasharray="4 3"/><text x="{key + 23}" y="34" '
                     f'font-size="11">best epoch ({best_epoch})</text></g>')
    for n, (name, vals) in enumerate(series.items()):
        colour = colours[n % len(colours)]
        points = " ".join(f"{x_of(i + 1):.1f},{y_of(v):.1f}" for i, v in enumerate(vals)
                          if np.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{points}"/>')
        x = left + 90 * n             # the legend: a row above the plot area
        parts.append(f'<g class="legend"><line x1="{x}" x2="{x + 18}" y1="30" y2="30" '
                     f'stroke="{colour}" stroke-width="3"/><text x="{x + 23}" y="34" '
                     f'font-size="11">{html.escape(name)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _confusion_image(confusion, labels):
    """The confusion matrix as a PIL image: rows true, columns predicted, shaded by row share.
    Cells shrink with many classes (the picture stays about 1000 px); below 24 px they are
    too small for the counts, which metrics.json holds anyway."""
    confusion = np.asarray(confusion, np.int64)
    n = len(labels)
    cell = max(8, min(36, 1000 // max(n, 1)))
    font = ImageFont.load_default()
    names = [name if len(name) <= 14 else name[:13] + "…" for name in labels]
    margin = 12 + max((int(font.getlength(s)) for s in names), default=0)
    size = (margin + n * cell + 10, margin + n * cell + 10)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    for i in range(n):
        draw.text((margin - 6, margin + i * cell + cell / 2), names[i], fill="black",
                  font=font, anchor="rm")
        for j in range(n):
            level = int(255 - 200 * share[i, j])
            colour = (level, level, 255) if i == j else (255, level, level)
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline="#bbb")
            if cell >= 24:
                draw.text((x + cell / 2, y + cell / 2), str(confusion[i, j]), font=font,
                          fill="black" if share[i, j] < 0.6 else "white", anchor="mm")
    for j in range(n):
        label = Image.new("RGB", (int(font.getlength(names[j])) + 4, 14), "white")
        ImageDraw.Draw(label).text((0, 0), names[j], fill="black", font=font)
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (margin + j * cell + (cell - rotated.width) // 2,
                              margin - 6 - rotated.height))
    return image


def _thumbnail_uri(root, relative, side=140):
    """The image scaled to fit side x side: larger ones shrink smoothly, smaller ones (a
    28x28 digit) grow by nearest neighbour, so their pixels stay sharp squares."""
    try:
        image = Image.fromarray(decode_image(resolve_relative(root, relative)))
    except (ImageError, DataError, OSError):
        return None
    if max(image.size) < side:
        scale = side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.NEAREST)
    else:
        image.thumbnail((side, side))
    return _png_uri(image)


def _mistakes(split_metrics, image_root, limit):
    figures = []
    for m in split_metrics["misclassified"][:limit]:
        uri = _thumbnail_uri(image_root, m["path"]) if m["path"] else None
        img = (f'<img src="{uri}" alt="{html.escape(m["path"])}">' if uri
               else '<p class="muted">(image unavailable)</p>')
        figures.append(f"<figure>{img}<figcaption><b>{html.escape(m['predicted'])}</b> "
                       f"{m['probability']:.2f}<br>true: {html.escape(m['label'])}<br>"
                       f'<span class="muted">{html.escape(str(m["path"]))}</span>'
                       "</figcaption></figure>")
    if not figures:
        return "<p>No mistakes.</p>"
    return '<div class="mistakes">' + "".join(figures) + "</div>"


def _confusion_table(confusion, labels):
    """The counts as an HTML table (rows true, columns predicted), shaded like the picture:
    text at the page's size, readable at any zoom."""
    confusion = np.asarray(confusion, np.int64)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in labels)
    body = []
    for i, name in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            level = int(255 - 160 * share[i, j])
            colour = f"rgb({level},{level},255)" if i == j else f"rgb(255,{level},{level})"
            cells.append(f'<td style="background:{colour}">{confusion[i, j]}</td>')
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return ('<table class="confusion"><tr><th>true \\ predicted</th>' + head + "</tr>"
            + "".join(body) + "</table>")


def _skipped_list(skipped, limit=20):
    """"N files skipped" and the first `limit` of them with their reasons."""
    if not skipped:
        return "<p>No files skipped.</p>"
    items = "".join(f"<li><code>{html.escape(str(path))}</code>: {html.escape(str(reason))}"
                    "</li>" for path, reason in list(skipped)[:limit])
    more = (f"<p>... and {len(skipped) - limit} more: all are in skipped.tsv.</p>"
            if len(skipped) > limit else "")
    word = "file" if len(skipped) == 1 else "files"
    return f"<p>{len(skipped)} {word} skipped:</p><ul>{items}</ul>{more}"


def _best_epoch_note(history):
    epochs = len(history.get("loss") or [])
    if "val_loss" not in history:
        return f"<p>{epochs} epochs; no validation images, so no early stopping.</p>"
    freeze = history.get("freeze_epochs") or 0
    phases = (f" (the head alone for {freeze}, then the fine-tuned blocks with it)"
              if freeze else "")
    if not history.get("restored_best", True):
        return (f"<p>{epochs} epochs{phases}; the exported model has the last epoch's "
                "weights (no early stopping when fine-tuning: --patience turns it on).</p>")
    return (f"<p>Best validation loss at epoch {history['best_epoch']} of {epochs}; the "
            "exported model has that epoch's weights.</p>")


def _runtime(metrics):
    """What computed the features, as ' on openvino (f32)' (empty for older runs)."""
    record = metrics.get("runtime")
    if not isinstance(record, dict):
        return ""
    return (f" on <code>{html.escape(str(record.get('runtime')))}</code> "
            f"({html.escape(str(record.get('precision')))})")


def render_report(metrics, history, image_root, title="retrain report", mistakes=12,
                  skipped=None):
    """The report as one HTML string (see module doc). The misclassified files' paths are
    relative to `image_root` (the DATA folder); `skipped` lists (path, reason) of the files
    that could not be used (None: only their count, from metrics, is shown)."""
    split = "test" if metrics.get("test", {}).get("count") else "val"
    shown = metrics.get(split)
    best = (history.get("best_epoch") if "val_loss" in history
            and history.get("restored_best", True) else None)
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(metrics['classes'])} classes: "
            f"{html.escape(', '.join(metrics['classes']))}. Backbone "
            f"<code>{html.escape(str(metrics.get('backbone', '?')))}</code>{_runtime(metrics)}; "
            f"features from the cache: {metrics['cache']['hits']} hits, "
            f"{metrics['cache']['misses']} computed; {metrics['skipped']} files skipped.</p>",
            "<h2>Results</h2>", _summary_table(metrics),
            search_table_html((metrics.get("training") or {}).get("search")),
            "<h2>Learning curves</h2>", _best_epoch_note(history), '<div class="curves">',
            _curve_svg("loss", {"train": history.get("loss"), "val": history.get("val_loss")},
                       best),
            _curve_svg("accuracy", {"train": history.get("accuracy"),
                                    "val": history.get("val_accuracy")}, best),
            "</div>"]
    if shown and shown["count"]:
        # drawn once: a table of counts, or a picture where a table would be too wide
        matrix, classes = shown["confusion_matrix"], metrics["classes"]
        confusion = (_confusion_table(matrix, classes) if len(classes) <= _CONFUSION_TABLE_MOST
                     else f'<img src="{_png_uri(_confusion_image(matrix, classes))}" '
                          'alt="confusion matrix">')
        body += [f"<h2>Per class ({split})</h2>", _per_class_table(shown),
                 f"<h2>Confusion matrix ({split}; rows true, columns predicted)</h2>",
                 f'<div class="side">{confusion}</div>',
                 f"<h2>Worst mistakes ({split}, most confident first)</h2>",
                 _mistakes(shown, image_root, mistakes)]
    if skipped is not None:
        body += ["<h2>Skipped files</h2>", _skipped_list(skipped)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(path, metrics, history, image_root, title="retrain report", skipped=None):
    """Render and write the report atomically; returns the path."""
    atomic_write_text(path, render_report(metrics, history, image_root, title=title,
                                          skipped=skipped))
    return path
