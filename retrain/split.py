"""Assign every record to train, val or test: stably, from a hash of its path.

Like TensorFlow's retrain.py (`which_set`), a file's split is decided by a hash of its
name, not by shuffling a list. A shuffle depends on every other file: add ten images and
half the old ones change split, so images the model was trained on leak into the test set
of the next run and its scores become meaningless. A hash depends on the file alone:
adding, removing or reordering other images never moves an existing one.

Details:
- The key is the path relative to DATA with '/' separators, in Unicode NFC (a dataset
  copied from macOS, which may store names decomposed, hashes the same on Linux).
- Anything from '_nohash_' to the end of the file name is dropped from the key, so
  'dog/rex_nohash_1.jpg' and 'dog/rex_nohash_2.jpg' (say, two photos of one dog) always
  share a split and can never sit on both sides of train/test.
- The first 8 bytes of the key's sha1 give a percentage p in [0, 100): val if
  p < val_percent, test if p < val_percent + test_percent, else train.
- A class with at least one image always gets a training image first, then a val image,
  then a test image, as far as its images go (1 image: train; 2: train and val; 3 or
  more: one of each at least). When hashing leaves a split empty for a class, the image
  whose p is nearest to that split's range is moved there. This is the one exception to stability: it concerns only classes too small
  to fill each split by chance, and a later image that hashes into the split naturally
  sends the borrowed one back.
- Explicit DATA/train, DATA/val, DATA/test folders are used as given; a missing val/ or
  test/ is carved out of train/ by the same hash.

What a model learnt from is recorded by content, not by name (`seen_record`): the model
file keeps the sha256 of every training and validation image's bytes, so `evaluate` can
score any folder (a new one, or the training folder with images added or renamed) on
exactly the images the model has not seen.
"""
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from .errors import ConfigError
from .files import atomic_write_json
from .options import OPTIONS, OptionError

__all__ = ["SPLITS", "SEEN_DIGITS", "Split", "check_percentages", "hash_percentage",
           "seen_record", "seen_role", "split", "write_split"]

SPLITS = ("train", "val", "test")
_FORMAT_VERSION = 1
_NOHASH = re.compile(r"_nohash_.*$")


@dataclass
class Split:
    """Record indices (into `Dataset.records`, ascending) of each split."""
    train: list
    val: list
    test: list
    val_percent: float
    test_percent: float
    warnings: list = field(default_factory=list)

    def indices(self, name):
        """The indices of split `name` ('train', 'val' or 'test')."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split. Received: name={name!r}; use one of {SPLITS}")
        return getattr(self, name)


def hash_percentage(relative):
    """The stable percentage in [0, 100) that places the file `relative` in a split."""
    folder, slash, name = relative.rpartition("/")
    key = unicodedata.normalize("NFC", folder + slash + _NOHASH.sub("", name))
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 * 100.0


def split(dataset, val_percent=10, test_percent=10):
    """Split `dataset` (from ingest) into train/val/test record indices. Deterministic.

    Args:
        val_percent, test_percent: shares of each class to carve out, 0 <= x, sum < 100.
            With explicit DATA/val or DATA/test folders, the matching share is unused.
    """
    check_percentages(val_percent, test_percent)
    carved = [name for name in ("val", "test") if name not in dataset.split_folders]
    share = {"val": val_percent if "val" in carved else 0,
             "test": test_percent if "test" in carved else 0}
    ranges = {"val": (0.0, share["val"]),
              "test": (share["val"], share["val"] + share["test"]),
              "train": (share["val"] + share["test"], 100.0)}
    wanted = ["train"] + [name for name in ("val", "test") if share[name] > 0]
    assigned = {name: [] for name in SPLITS}
    pools = {label: [] for label in range(len(dataset.classes))}
    for index, (relative, label) in enumerate(dataset.records):
        folder = dataset.folder_of(index)
        if folder in ("val", "test"):
            assigned[folder].append(index)
        else:
            pools[label].append((hash_percentage(relative), relative, index))
    for pool in pools.values():
        members = {name: [] for name in SPLITS}
        for item in pool:
            members[_natural_split(item[0], ranges)].append(item)
        _fill_empty(members, wanted, ranges)
        for name in SPLITS:
            assigned[name].extend(index for _, _, index in members[name])
    result = Split(*(sorted(assigned[name]) for name in SPLITS),
                   val_percent=val_percent, test_percent=test_percent)
    pool_sizes = {label: len(pool) for label, pool in pools.items()}
    result.warnings = _empty_split_warnings(dataset, result, wanted, pool_sizes)
    return result


def write_split(path, result, dataset):
    """Write split.json: the relative paths of each split, plus how they were made."""
    atomic_write_json(path, {
        "format": _FORMAT_VERSION,
        "method": "sha1 of the path relative to DATA (NFC, '_nohash_...' stripped)",
        "val_percent": result.val_percent,
        "test_percent": result.test_percent,
        "layout": dataset.layout,
        "classes": list(dataset.classes),
        **{name: [dataset.records[i][0] for i in result.indices(name)] for name in SPLITS},
    })


# 16 hex digits (64 bits) of each sha256: a chance collision among a million images is
# about 3e-8, and the record of 100,000 images stays under 2 MB of the model's metadata.
SEEN_DIGITS = 16


def seen_record(keys, result):
    """What a model file records of the images it learnt from: the first SEEN_DIGITS hex
    digits of the sha256 of each training and validation image's bytes (`keys[i]`, the
    feature cache's key of record i), sorted."""
    return {"digest": f"sha256 of the file's bytes, first {SEEN_DIGITS} hex digits",
            "train": sorted({keys[i][:SEEN_DIGITS] for i in result.train}),
            "val": sorted({keys[i][:SEEN_DIGITS] for i in result.val})}


def seen_role(sha256, record):
    """'train', 'val' or 'unseen': what the model that wrote `record` did with an image
    whose content has this sha256 (a copy of a training image is a training image)."""
    digest = sha256[:SEEN_DIGITS]
    for name in ("train", "val"):
        if digest in record[name]:
            return name
    return "unseen"


def check_percentages(val_percent, test_percent):
    """Refuse shares that leave no sensible split (callers check before any slow work):
    each as options.OPTIONS declares it, and together under 100."""
    OPTIONS["val_percent"].check(val_percent)
    OPTIONS["test_percent"].check(test_percent)
    if val_percent + test_percent >= 100:
        raise OptionError("must add up to under 100, to leave images to train on",
                          {"val_percent": val_percent, "test_percent": test_percent})


def _natural_split(percentage, ranges):
    for name in ("val", "test"):
        low, high = ranges[name]
        if low <= percentage < high:
            return name
    return "train"


def _fill_empty(members, wanted, ranges):
    """Give each wanted split of one class at least one image, in the order of priority
    train, val, test, as far as the class's images go.

    A split holding 2 or more images gives one away first; failing that, a split of lower
    priority gives its only image (so a 1-image class always trains). The image moved is
    the donor's one whose hash lies nearest the empty split's range (ties: path)."""
    for rank, target in enumerate(SPLITS):
        if target not in wanted or members[target]:
            continue
        donors = ([name for name in SPLITS if name != target and len(members[name]) >= 2]
                  or [name for name in SPLITS[rank + 1:] if members[name]])
        if not donors:
            continue
        low, high = ranges[target]
        donor = members[donors[0]]
        item = min(donor, key=lambda it: (max(low - it[0], it[0] - high, 0.0), it[1]))
        donor.remove(item)
        members[target].append(item)


def _empty_split_warnings(dataset, result, wanted, pool_sizes):
    """One warning per (class, split) that ended up with no image."""
    expected = [name for name in SPLITS if name in wanted or name in dataset.split_folders]
    counts = {name: [0] * len(dataset.classes) for name in SPLITS}
    for name in SPLITS:
        for index in result.indices(name):
            counts[name][dataset.records[index][1]] += 1
    warnings = []
    for label, class_name in enumerate(dataset.classes):
        source = f"train/{class_name}/ has" if dataset.layout == "splits" else "it has"
        for name in expected:
            if counts[name][label]:
                continue
            if name in dataset.split_folders:
                why = f"{name}/{class_name}/ is missing or has no images"
            else:
                why = (f"{source} {pool_sizes[label]} usable image(s); one in each of "
                       f"{', '.join(wanted)} needs at least {len(wanted)}")
            warnings.append(f"class {class_name!r} has no {name} images: {why}")
    return warnings
