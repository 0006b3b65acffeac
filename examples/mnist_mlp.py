"""The course notes' first network: an MLP on (Fashion-)MNIST, compiled, fitted with a
validation split, evaluated, saved and loaded back.

Flatten, Dense(128, relu), Dropout(0.2), Dense(10, softmax); Adam and the sparse
categorical crossentropy. It trains on real data: Fashion-MNIST from Debian's
dataset-fashion-mnist when installed, else the shipped 1,000-image sample
(examples/fashion_mnist.py). --short trains on at most 2,000 images (the test suite's run).

    .venv/bin/python examples/mnist_mlp.py [--short] [--out runs/mnist_mlp.h5]
"""
import argparse
from pathlib import Path

import numpy as np

import retrain
from fashion_mnist import load_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a quick run, as the tests do")
    parser.add_argument("--out", default="runs/mnist_mlp.h5", help="where the model is saved")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test), where = load_data()
    print(f"data: {where}")
    if args.short:
        x_train, y_train = x_train[:2000], y_train[:2000]
    x_train, x_test = x_train / 255.0, x_test / 255.0

    retrain.set_random_seed(0)
    model = retrain.Sequential([
        retrain.Input((28, 28)),
        retrain.Flatten(),
        retrain.Dense(128, activation="relu"),
        retrain.Dropout(0.2),
        retrain.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    history = model.fit(x_train, y_train, epochs=5, batch_size=32,
                        validation_split=0.1, shuffle=True)
    print(f"val accuracy {history.history['val_accuracy'][-1]:.4f}")
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {test_accuracy:.4f}")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    reloaded = retrain.load_model(args.out)
    same = np.array_equal(reloaded.predict(x_test), model.predict(x_test))
    print(f"saved to {args.out}; the reloaded model predicts the same: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
