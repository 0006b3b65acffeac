"""Models shared by the engine tests."""
from retrain.engine import (Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D, Sequential,
                            clear_session)


def seed_cnn():
    """The classic MNIST CNN of tests/fixtures/keras/seed_cnn (Keras's auto names)."""
    clear_session()
    return Sequential([
        Input((28, 28, 1)),
        Conv2D(32, 5, padding="same", activation="relu"),
        MaxPooling2D(2),
        Conv2D(64, 2, padding="same", activation="relu"),
        MaxPooling2D(2),
        Dropout(0.25),
        Flatten(),
        Dense(1000, activation="relu"),
        Dropout(0.5),
        Dense(10, activation="softmax"),
    ])
