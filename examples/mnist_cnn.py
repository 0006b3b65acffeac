"""The course notes' MNIST CNN: two Conv2D + MaxPooling2D stages, Dropout, Dense(1000) and a
softmax, with Keras's layer names, so that `summary()` prints the table Keras prints for
the same model (tests/fixtures/course/mnist_cnn_summary_keras3.txt, made by Keras 3.15).

Then it trains on Fashion-MNIST (examples/fashion_mnist.py: Debian's package if installed,
else the shipped sample) and evaluates. --short trains one epoch on at most 1,000 images.

    .venv/bin/python examples/mnist_cnn.py [--short]
"""
import argparse

import retrain
from fashion_mnist import load_data


def build_model():
    return retrain.Sequential([
        retrain.Input((28, 28, 1)),
        retrain.Conv2D(32, 5, padding="same", activation="relu"),
        retrain.MaxPooling2D(2),
        retrain.Conv2D(64, 2, padding="same", activation="relu"),
        retrain.MaxPooling2D(2),
        retrain.Dropout(0.25),
        retrain.Flatten(),
        retrain.Dense(1000, activation="relu"),
        retrain.Dropout(0.5),
        retrain.Dense(10, activation="softmax"),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a quick run, as the tests do")
    args = parser.parse_args(argv)

    retrain.set_random_seed(0)
    model = build_model()
    model.summary()

    (x_train, y_train), (x_test, y_test), where = load_data()
    print(f"data: {where}")
    if args.short:
        x_train, y_train = x_train[:1000], y_train[:1000]
    x_train, x_test = x_train[..., None] / 255.0, x_test[..., None] / 255.0
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=1 if args.short else 3, batch_size=64,
              validation_split=0.1)
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {test_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
