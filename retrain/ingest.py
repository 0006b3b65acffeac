"""Walk a DATA folder into labelled records: which files are images of which class.

Two layouts are understood:

    DATA/<class>/**/<image>                 one folder per class; split.py makes the splits
    DATA/train/<class>/**/<image>           explicit splits: train/ plus test/ and/or val/;
    DATA/test/<class>/**/<image>            a missing val/ or test/ is carved from train/
    DATA/val/<class>/**/<image>

`ingest` only lists candidate files (image extensions); it reads no pixels, so it is fast
on any dataset. `validate` decodes every candidate and moves the bad ones to `skipped`
with a reason; `exclude` does the same for failures found elsewhere (feature extraction).
"""
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, ImageError
from .files import relative_posix
from .images import decode_image, is_image_file

__all__ = ["Dataset", "SPLIT_FOLDERS", "exclude", "ingest", "validate"]

SPLIT_FOLDERS = ("train", "val", "test")
# Folders no one means as a class: zip tools' resource forks.
_IGNORED_FOLDERS = frozenset({"__MACOSX"})


@dataclass
class Dataset:
    """What `ingest` found under `root`.

    records: (relative path with '/' separators, label index into `classes`), sorted by path.
    skipped: (relative path, reason) for candidate files that cannot be used.
    layout: "classes" (DATA/<class>/) or "splits" (DATA/train/<class>/ ...).
    split_folders: the split folders present, in train, val, test order; () for "classes".
    """
    root: Path
    classes: list
    records: list
    skipped: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    layout: str = "classes"
    split_folders: tuple = ()

    def path(self, index):
        """Absolute path of record `index`."""
        return self.root / self.records[index][0]

    def folder_of(self, index):
        """The split folder ('train', 'val', 'test') record `index` lies in; None for "classes"."""
        return self.records[index][0].split("/", 1)[0] if self.layout == "splits" else None


def ingest(data_dir, min_classes=2):
    """List the candidate images under `data_dir` with their labels. Reads no pixels.

    Classes are the sorted names of the class folders; images are found recursively inside
    each; hidden files and folders are ignored, as are files without an image extension
    (README.txt, Thumbs.db). Symlinks are followed, each real folder at most once, so a
    link loop cannot recurse forever. A class folder with no images is left out with a
    warning.

    Raises:
        DataError: `data_dir` is not a folder, or fewer than `min_classes` classes have
            images (2 to train; scoring a model on some of its classes needs only 1).
    """
    root = Path(data_dir)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DataError(f"the data folder {root} {what}",
                        hint="pass a folder holding one sub-folder of images per class")
    top = _subfolders(root)
    present = tuple(name for name in SPLIT_FOLDERS if name in top)
    if "train" in present and len(present) > 1:
        layout, split_folders = "splits", present
        class_parents = [root / name for name in present]
    else:
        layout, split_folders = "classes", ()
        class_parents = [root]
    class_folders = [(parent, name) for parent in class_parents for name in _subfolders(parent)]
    owners = {os.path.realpath(parent / name): name for parent, name in class_folders}
    found, skipped, warnings = {}, [], []        # found: file identity -> [(relative, class)]
    for parent, class_name in class_folders:
        _check_class_name(parent / class_name, class_name)
        seen = {os.path.realpath(root), os.path.realpath(parent)}
        _walk(root, parent / class_name, _Walk(class_name, owners, seen, found, skipped,
                                               warnings))
    files_by_class = {name: [] for _, name in class_folders}
    _one_use_per_file(found, files_by_class, skipped)
    if layout == "splits":
        extra = sorted(set(top) - set(present))
        if extra:
            warnings.append(f"ignored the folders {extra} in {root}: with train/ present, "
                            f"classes are read from inside {', '.join(present)}")
    loose = [entry.name for entry in os.scandir(root)
             if entry.is_file() and is_image_file(entry.name) and not _hidden(entry.name)]
    if loose:
        warnings.append(f"ignored {len(loose)} image file(s) directly in {root} "
                        f"(e.g. {sorted(loose)[0]!r}): images must sit in a class folder")
    return _assemble(root, files_by_class, skipped, warnings, layout, split_folders,
                     min_classes)


def validate(dataset, workers=2, progress=None, min_classes=2):
    """Decode every record; return a Dataset without the ones that fail, listed in skipped.

    Args:
        workers: decoding threads (Pillow releases the GIL while decoding).
        progress: optional callable(done, total), called after each file.
    """
    def check(index):
        try:
            decode_image(dataset.path(index))
        except ImageError as exc:
            return dataset.records[index][0], str(exc)
        return None

    failures = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, failure in enumerate(pool.map(check, range(len(dataset.records))), 1):
            if failure:
                failures[failure[0]] = failure[1]
            if progress:
                progress(done, len(dataset.records))
    return exclude(dataset, failures, min_classes)


def exclude(dataset, reasons, min_classes=2):
    """A Dataset without the records whose relative paths are keys of `reasons`.

    They are appended to `skipped` with their reason. Classes left with no images are
    dropped (labels renumbered) with a warning.

    Raises:
        DataError: fewer than `min_classes` classes still have images.
    """
    files_by_class = {name: [] for name in dataset.classes}
    removed = []
    for relative, label in dataset.records:
        if relative in reasons:
            removed.append((relative, reasons[relative]))
        else:
            files_by_class[dataset.classes[label]].append(relative)
    skipped = list(dataset.skipped) + removed
    return _assemble(dataset.root, files_by_class, skipped, list(dataset.warnings),
                     dataset.layout, dataset.split_folders, min_classes)


def _assemble(root, files_by_class, skipped, warnings, layout, split_folders, min_classes):
    empty = sorted(name for name, files in files_by_class.items() if not files)
    for name in empty:
        warnings.append(f"class {name!r} has no usable images and is left out")
    classes = sorted(name for name, files in files_by_class.items() if files)
    if len(classes) < min_classes:
        found = f"{len(classes)} class with images ({classes[0]!r})" if classes else \
            "no class folder with images"
        needed = "at least 2 classes are needed" if min_classes > 1 else "a class is needed"
        if skipped:       # image files were there: say that they failed, not that none was
            relative, reason = skipped[0]
            raise DataError(f"found {found} in {root}: {len(skipped)} image file(s) in its "
                            f"class folders could not be used (e.g. {relative}: {reason}); "
                            f"{needed}",
                            hint="check that the files are images Pillow can read (a copy "
                                 "or a download may have damaged them)")
        raise DataError(f"found {found} in {root}; {needed}",
                        hint="put each class's images in its own sub-folder, "
                             "e.g. DATA/cats/*.jpg and DATA/dogs/*.jpg")
    records = sorted((relative, label) for label, name in enumerate(classes)
                     for relative in files_by_class[name])
    return Dataset(root=root, classes=classes, records=records, skipped=skipped,
                   warnings=warnings, layout=layout, split_folders=split_folders)


@dataclass
class _Walk:
    """What a walk of one class folder needs: its class, the class folders (real path ->
    class), the real folders it has read, and where it puts what it finds."""
    class_name: str
    owners: dict
    seen: set
    found: dict
    skipped: list
    warnings: list


def _walk(root, folder, walk):
    """Collect candidate images under `folder` (each real folder once; a loop of one link
    is skipped with its reason), iteratively: a tree 1,100 folders deep is no recursion."""
    stack = [Path(folder)]
    while stack:
        folder = stack.pop()
        if not _enter(root, folder, walk):
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            walk.skipped.append((relative_posix(folder, root),
                                 f"cannot list the folder: {exc.strerror}"))
            continue
        subfolders = []
        for entry in entries:
            if _hidden(entry.name):
                continue
            relative = relative_posix(entry.path, root)
            try:
                if entry.is_dir():
                    subfolders.append(Path(entry.path))
                elif is_image_file(entry.name):
                    _add_file(entry, relative, walk)
            except OSError as exc:        # a link to itself: ELOOP
                if is_image_file(entry.name) or exc.errno != errno.ELOOP:
                    walk.skipped.append((relative, f"cannot read it: {exc.strerror}"))
        stack.extend(reversed(subfolders))


def _enter(root, folder, walk):
    """Whether to read `folder`: not one read already, not another class's folder."""
    real = os.path.realpath(folder)
    owner = next((walk.owners[p] for p in [real, *map(str, Path(real).parents)]
                  if p in walk.owners), walk.class_name)
    if owner != walk.class_name:
        walk.warnings.append(f"did not follow {relative_posix(folder, root)}: it leads to the "
                             f"class folder {owner!r}, whose images are not {walk.class_name!r}")
        return False
    if real in walk.seen:
        walk.warnings.append(f"did not follow {relative_posix(folder, root)} again: it leads "
                             "back to a folder already read (a symlink loop or a duplicate link)")
        return False
    walk.seen.add(real)
    return True


def _add_file(entry, relative, walk):
    if not _utf8(relative):
        walk.skipped.append((relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                             "the file name is not valid UTF-8; rename the file"))
    elif entry.is_file():
        status = entry.stat()
        walk.found.setdefault((status.st_dev, status.st_ino), []).append(
            (relative, walk.class_name))
    else:
        walk.skipped.append((relative, "broken symbolic link or not a regular file"))


def _one_use_per_file(found, files_by_class, skipped):
    """A file reached by several paths (links) is one file: used once, by its first path;
    where the paths are in different classes its label is unknown, and none is used."""
    for paths in found.values():
        paths.sort()
        (first, label), rest = paths[0], paths[1:]
        classes = sorted({name for _, name in paths})
        if len(classes) > 1:
            skipped += [(relative, f"the same file is in the classes {classes} (links); "
                                   "its label is ambiguous") for relative, _ in paths]
            continue
        files_by_class[label].append(first)
        skipped += [(relative, f"the same file as {first} (a link); used once")
                    for relative, _ in rest]


def _check_class_name(folder, name):
    """A class name is a line of labels.txt and a label in every output: no line breaks or
    other control characters, and valid UTF-8."""
    bad = [c for c in name if ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c in "\u2028\u2029"]
    if bad or not _utf8(name):
        what = "control characters (a line break?)" if bad else "bytes that are not UTF-8"
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise DataError(f"The class folder name {shown!r} holds {what}: {folder.parent}.",
                        hint="Rename the folder; a class name becomes one line of "
                             "labels.txt.")


def _subfolders(folder):
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_dir() and not _hidden(entry.name))


def _hidden(name):
    return name.startswith(".") or name in _IGNORED_FOLDERS


def _utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
