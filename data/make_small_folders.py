"""Write the 50-a-class folders docs/recipes.md measures `fit --search` on, each with the
held-out test images of its data set, as OUT/{train,test}/<class>/<file>.png:

    python data/make_small_folders.py digits DIGITS OUT [--seed S]
    python data/make_small_folders.py fashion REPLICA OUT [--seed S] [--source DIR]

DIGITS is make_digits_70_30.py's output and REPLICA make_fashion_mnist_heldout.py's; their
test/ folders are copied. Seed 0: the first 50 training images a class by file name (for
Fashion-MNIST, of the replica's 80). Other seeds draw other images: for digits 50 a class
at random from the 70/30 training split (random.Random(seed).sample over the sorted file
names), for Fashion-MNIST 50 a class at random (numpy default_rng(seed)) from its training
split's images 10,000 and up, read from the Debian package's files (--source, as in
make_fashion_mnist_sample.py)."""
import argparse
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fashion_mnist_sample import CLASSES, DEFAULT_SOURCE, find_source, read_idx  # noqa: E402

PER_CLASS = 50


def from_folders(train, out, seed):
    rng = random.Random(seed)
    for folder in sorted(p for p in train.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        chosen = files[:PER_CLASS] if seed == 0 else rng.sample(files, PER_CLASS)
        (out / "train" / folder.name).mkdir(parents=True, exist_ok=True)
        for path in chosen:
            shutil.copy(path, out / "train" / folder.name / path.name)


def from_fashion_source(source, out, seed):
    images = read_idx(find_source(source, "train-images-idx3-ubyte.gz"), 0x00000803)
    labels = read_idx(find_source(source, "train-labels-idx1-ubyte.gz"), 0x00000801)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        pool = np.flatnonzero(labels[10000:] == label) + 10000
        (out / "train" / name).mkdir(parents=True, exist_ok=True)
        for index in rng.choice(pool, PER_CLASS, replace=False):
            Image.fromarray(images[index]).save(out / "train" / name / f"{index}.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("digits", "fashion"))
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = p.parse_args(argv)
    if args.kind == "fashion" and args.seed:
        from_fashion_source(args.source, args.out, args.seed)
    else:
        from_folders(args.data / "train", args.out, args.seed)
    shutil.copytree(args.data / "test", args.out / "test")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
