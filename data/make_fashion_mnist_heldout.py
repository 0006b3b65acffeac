"""Write the held-out replica that README's fine-tuning table was measured on: 80 training
and 10 validation images a class from the Fashion-MNIST *training* split (a seeded random
choice), and 100 test images a class from its *test* split, the first of each class at index
2000 or later (beyond the shipped sample, which ends at 1092), as
OUT/{train,val,test}/<class>/<index>.png, a layout `retrain fit` takes as the split.

The same source and checks as make_fashion_mnist_sample.py (whose docstring says how to get
the Debian package without root):

    python data/make_fashion_mnist_heldout.py OUT [--seed 0] [--source DIR]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fashion_mnist_sample import (CLASSES, DEFAULT_SOURCE, check_sha256,  # noqa: E402
                                       find_source, read_idx)


def load(source, split):
    arrays = []
    for kind, magic in (("images-idx3", 0x00000803), ("labels-idx1", 0x00000801)):
        name = f"{split}-{kind}-ubyte.gz"
        path = find_source(source, name)
        check_sha256(path, name)
        arrays.append(read_idx(path, magic))
    return arrays


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = p.parse_args(argv)
    train_x, train_y = load(args.source, "train")
    test_x, test_y = load(args.source, "t10k")
    rng = np.random.default_rng(args.seed)
    for label, name in enumerate(CLASSES):
        chosen = rng.permutation(np.flatnonzero(train_y == label))[:90]
        test = [i for i in np.flatnonzero(test_y == label) if i >= 2000][:100]
        for part, images, indices in (("train", train_x, chosen[:80]),
                                      ("val", train_x, chosen[80:]), ("test", test_x, test)):
            folder = args.out / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png", optimize=False)
    print(f"wrote {args.out}: 800 train, 100 val, 1000 test images")


if __name__ == "__main__":
    main()
