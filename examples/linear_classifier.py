"""The course notes' end-to-end example: a linear classifier written with GradientTape.

Two Gaussian blobs of 1,000 points each, W and b as Variables, a matmul forward, the mean
squared error, and a training step that takes tape.gradient(loss, [W, b]) and updates the
variables: 40 steps at learning rate 0.1. The same program as the notes' TensorFlow one,
with `retrain` where they wrote `tf`.

    .venv/bin/python examples/linear_classifier.py
"""
import numpy as np

import retrain

rng = np.random.default_rng(0)
num_samples_per_class = 1000
negative_samples = rng.multivariate_normal(mean=[0, 3], cov=[[1, 0.5], [0.5, 1]],
                                           size=num_samples_per_class)
positive_samples = rng.multivariate_normal(mean=[3, 0], cov=[[1, 0.5], [0.5, 1]],
                                           size=num_samples_per_class)
inputs = np.vstack((negative_samples, positive_samples)).astype(np.float32)
targets = np.vstack((np.zeros((num_samples_per_class, 1), dtype="float32"),
                     np.ones((num_samples_per_class, 1), dtype="float32")))

input_dim, output_dim = 2, 1
W = retrain.Variable(initial_value=rng.uniform(size=(input_dim, output_dim)))
b = retrain.Variable(initial_value=np.zeros(shape=(output_dim,)))


def model(inputs):
    return retrain.ops.matmul(inputs, W) + b


def square_loss(targets, predictions):
    per_sample_losses = retrain.ops.square(targets - predictions)
    return retrain.ops.reduce_mean(per_sample_losses)


learning_rate = 0.1


def training_step(inputs, targets):
    with retrain.GradientTape() as tape:
        predictions = model(inputs)
        loss = square_loss(targets, predictions)
    grad_loss_wrt_W, grad_loss_wrt_b = tape.gradient(loss, [W, b])
    W.assign_sub(grad_loss_wrt_W * learning_rate)
    b.assign_sub(grad_loss_wrt_b * learning_rate)
    return loss


for step in range(40):
    loss = training_step(inputs, targets)
    print(f"Loss at step {step}: {loss:.4f}")

predictions = model(inputs)
accuracy = np.mean((predictions.numpy()[:, 0] > 0.5) == (targets[:, 0] == 1))
print(f"accuracy {accuracy:.4f}")
