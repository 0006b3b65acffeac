"""The learning test: the classic seed MNIST CNN trains from scratch on 1,000 Fashion-MNIST
images (100 per class) and must reach 70% validation accuracy."""
from pathlib import Path

import numpy as np
from PIL import Image

from seed_models import seed_cnn
from retrain.engine import Adam, set_random_seed

DATA = Path(__file__).parents[2] / "data" / "fashion-mnist-sample"
EPOCHS = 6   # about 3 s each on 2 idle cores


def _load_images():
    """(images (N, 28, 28, 1) scaled to [0, 1], labels = index of the sorted class folder)."""
    classes = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((DATA / name).glob("*.png")):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("L"), np.float32) / 255.0)
            labels.append(label)
    return np.stack(images)[..., None], np.array(labels), classes


def test_seed_cnn_learns_fashion_mnist_sample():
    images, labels, classes = _load_images()
    assert images.shape == (1000, 28, 28, 1) and len(classes) == 10
    assert np.bincount(labels).tolist() == [100] * 10
    # validation_split takes the last 20%, so shuffle first (the folders are sorted by class).
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    set_random_seed(0)
    model = seed_cnn()
    model.compile(Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(images, labels, epochs=EPOCHS, batch_size=32, validation_split=0.2,
                        seed=0, verbose=0).history
    losses = history["loss"]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert max(history["val_accuracy"]) >= 0.70, history["val_accuracy"]

