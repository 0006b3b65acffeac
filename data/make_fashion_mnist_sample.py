"""Write the shipped sample dataset: the first 100 images of each class of the
Fashion-MNIST *test* split, as data/fashion-mnist-sample/<class>/<index>.png.

The source is the Debian package `dataset-fashion-mnist` (original Zalando idx
files). Get it without root:

    cd /tmp && apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb /tmp/fmnist
    python data/make_fashion_mnist_sample.py --source /tmp/fmnist/usr/share/datasets/fashion-mnist

The source files are checked against pinned SHA-256 sums, images are taken in
test-set order, and PNGs are written with fixed settings, so a rerun reproduces
the same bytes. `<index>` is the zero-based position in the test set (t10k).
"""
import argparse
import gzip
import hashlib
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Label index -> folder name (the official names, folder-safe).
CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot"]

# SHA-256 of the gzipped files in dataset-fashion-mnist 0.0~git20200523.55506a9-1
# (identical to the files in github.com/zalandoresearch/fashion-mnist data/fashion).
SOURCE_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path(__file__).resolve().parent / "fashion-mnist-sample"


def read_idx(path, expected_magic):
    """Parse one idx file (gzipped or raw) into a uint8 array of its declared shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic, = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise ValueError(f"{path}: idx magic is {magic:#010x}, expected {expected_magic:#010x}")
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: holds {data.size} bytes of data, header says shape {shape}")
    return data.reshape(shape)


def find_source(folder, name):
    """The gzipped file, or its uncompressed twin if the package ships that instead."""
    for candidate in (folder / name, folder / name[:-3]):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found in {folder}; see this script's docstring to fetch it")


def check_sha256(path, name):
    if path.name != name:
        return  # an uncompressed copy: the idx magic and sizes are still checked
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256[name]:
        raise ValueError(f"{path}: sha256 {digest} differs from the pinned {SOURCE_SHA256[name]}")


def select(labels, per_class):
    """Test-set indices of the first `per_class` images of each label, in order."""
    chosen = {}
    for label in range(len(CLASSES)):
        indices = np.flatnonzero(labels == label)[:per_class]
        if len(indices) < per_class:
            raise ValueError(f"class {CLASSES[label]} has only {len(indices)} test images")
        chosen[label] = indices
    return chosen


def write_sample(source, out, per_class):
    paths = {}
    for name in SOURCE_SHA256:
        paths[name] = find_source(source, name)
        check_sha256(paths[name], name)
    images = read_idx(paths["t10k-images-idx3-ubyte.gz"], 0x00000803)
    labels = read_idx(paths["t10k-labels-idx1-ubyte.gz"], 0x00000801)
    chosen = select(labels, per_class)
    # Build beside the target, then swap, so an interrupted run leaves the old sample intact.
    staging = out.with_name(f".{out.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)   # mkdir, not mkdtemp: the umask's permissions, not 0700
    try:
        for label, indices in chosen.items():
            folder = staging / CLASSES[label]
            folder.mkdir()
            for index in indices:
                # A 2-D uint8 array becomes an 8-bit grey ("L") PNG.
                Image.fromarray(images[index]).save(folder / f"{index:04d}.png", compress_level=9)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return sum(len(v) for v in chosen.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder with t10k-*-idx*-ubyte(.gz) (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args(argv)
    count = write_sample(args.source, args.out, args.per_class)
    print(f"wrote {count} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
