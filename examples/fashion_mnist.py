"""Fashion-MNIST for the course examples, from real data only.

The full dataset (60,000 training and 10,000 test images) comes from Debian's
`dataset-fashion-mnist` package when it is installed (`apt-get install dataset-fashion-mnist`,
or FASHION_MNIST_DIR naming a folder holding its idx files). Without it, the shipped
sample data/fashion-mnist-sample (1,000 test-split images, 100 per class) serves: the first
80 images of each class train (shuffled once, with a fixed seed), the other 20 test.
data/make_fashion_mnist_sample.py reads the idx files; this module reuses its reader and
its checksums.
"""
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data"))
from make_fashion_mnist_sample import (CLASSES, DEFAULT_SOURCE, check_sha256,  # noqa: E402
                                       find_source, read_idx)

SAMPLE = ROOT / "data" / "fashion-mnist-sample"


def load_data():
    """((x_train, y_train), (x_test, y_test), where): uint8 images (N, 28, 28), integer
    labels, and a line saying which data it is."""
    source = Path(os.environ.get("FASHION_MNIST_DIR", DEFAULT_SOURCE))
    if (source / "train-images-idx3-ubyte.gz").is_file() or \
            (source / "train-images-idx3-ubyte").is_file():
        return _from_idx(source) + (f"Fashion-MNIST from {source}",)
    return _from_sample() + (f"the shipped sample {SAMPLE.relative_to(ROOT)} (install "
                             "dataset-fashion-mnist for all 70,000 images)",)


def _from_idx(source):
    def read(name, magic):
        path = find_source(source, name)
        check_sha256(path, name)
        return read_idx(path, magic)
    return ((read("train-images-idx3-ubyte.gz", 0x803), read("train-labels-idx1-ubyte.gz", 0x801)),
            (read("t10k-images-idx3-ubyte.gz", 0x803), read("t10k-labels-idx1-ubyte.gz", 0x801)))


def _from_sample():
    train, test = ([], []), ([], [])
    for label, name in enumerate(CLASSES):
        for i, path in enumerate(sorted((SAMPLE / name).glob("*.png"))):
            images, labels = train if i < 80 else test
            images.append(np.asarray(Image.open(path)))
            labels.append(label)
    # The files come class by class; Keras's validation_split takes the last 10% as given,
    # so shuffle once (with a fixed seed), as the real training set already is.
    order = np.random.default_rng(0).permutation(len(train[1]))
    return ((np.stack(train[0])[order], np.array(train[1])[order]),
            (np.stack(test[0]), np.array(test[1])))
