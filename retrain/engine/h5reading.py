"""Reading an HDF5 file that nobody vouches for: what is stored inside it, never more.

An HDF5 dataset may keep its bytes in another file (external storage, virtual datasets,
external links: /etc/passwd becomes a bias vector, a FIFO hangs the reader), and it may
declare far more data than it stores (a 1 GB dataset that was never written reads as
zeros). So before anything is read, `check_file` refuses foreign storage and datasets
whose declared size exceeds their stored bytes; `dataset` follows hard links only; and
`read_array` compares shape and dtype with what the caller expects before it allocates.
"""
import h5py
import numpy as np

from .errors import ModelFileError

__all__ = ["check_file", "member", "dataset", "read_array", "MAX_COMPRESSION"]

# A compressed dataset may declare at most this many bytes per stored byte (plus 1 MiB, for
# small zero-filled biases). Real weights barely compress (about 1.1x); a bomb does 1000x.
MAX_COMPRESSION = 50
_SLACK = 1 << 20
_HINT = "retrain reads only the data stored inside a model file; re-save it with Keras."


def check_file(f, path):
    """Check every dataset of the open file `f`; return the number of values they store
    (an upper bound for the weights any model config in it may ask for)."""
    values = []

    def visit(name, obj):  # visititems follows hard links only, each object once
        if isinstance(obj, h5py.Dataset):
            values.append(_check_dataset(obj, path))
    f.visititems(visit)
    return sum(values)


def _check_dataset(ds, path):
    where = f"{path}: dataset {ds.name!r}"
    plist = ds.id.get_create_plist()
    if plist.get_external_count():
        raise ModelFileError(f"{where} keeps its data in an external file, outside the model "
                             "file.", hint=_HINT)
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise ModelFileError(f"{where} is a virtual dataset: its data lives in other files.",
                             hint=_HINT)
    if ds.dtype.kind not in "fiu":
        raise ModelFileError(f"{where} has dtype {ds.dtype}; weights are numbers.",
                             hint="The file is damaged or is not a model file.")
    if ds.shape is None:
        return 0
    declared, stored = ds.size * ds.dtype.itemsize, ds.id.get_storage_size()
    limit = declared if not plist.get_nfilters() else (declared - _SLACK) / MAX_COMPRESSION
    if stored < limit:
        raise ModelFileError(f"{where} declares shape {ds.shape} ({declared:,} bytes) but the "
                             f"file has only {stored:,} bytes stored for it.",
                             hint="The file is truncated, damaged or crafted; copy it again.")
    return ds.size


def member(group, name, path):
    """`group[name]` reached through hard links only: a soft link can loop or dangle and an
    external link opens another file, so both are refused. `name` may hold '/' parts."""
    for part in name.split("/"):
        link = group.get(part, getlink=True)
        if link is None:
            raise ModelFileError(f"{path}: {group.name!r} has no member {part!r}; the file is "
                                 "damaged.")
        if not isinstance(link, h5py.HardLink):
            kind = type(link).__name__
            raise ModelFileError(f"{path}: {group.name}/{part} is a link ({kind}); retrain "
                                 "follows no links inside a model file.", hint=_HINT)
        group = group[part]
    return group


def dataset(group, name, path):
    found = member(group, name, path)
    if not isinstance(found, h5py.Dataset):
        raise ModelFileError(f"{path}: {found.name!r} is a group where a weight array belongs.")
    return found


def read_array(ds, path):
    """The dataset's values as float32 (call it once the shape is known to fit); refuses
    values that are not finite, which would poison every prediction."""
    value = np.asarray(ds, dtype=np.float32)
    if not np.isfinite(value).all():
        raise ModelFileError(f"{path}: dataset {ds.name!r} holds values that are not finite "
                             "(NaN or infinity).", hint="The model diverged or the file is "
                                                       "damaged; train or download it again.")
    return value
