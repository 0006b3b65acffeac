"""Tolerances for two float32 computations of the same math, derived rather than tuned.

Two paths that compute one function in float32 (a model's layer-by-layer forward against
its inference plan, which folds BatchNorm into the kernels and splits the work differently)
add the same terms in different orders. OpenBLAS picks its matmul kernel, and with it the
order of the sums, by CPU: Haswell's kernels and Sapphire Rapids' or Zen's disagree in the
last bits. A tolerance fitted to the differences seen on one machine fails on the next one
(1.1e-5 against atol 1e-5 on an Intel Xeon with the native kernels).

So the tolerance is the classical bound for a float32 sum of n terms (Higham, "Accuracy and
Stability of Numerical Algorithms", 2nd ed., section 3.1): |fl(sum) - sum| <= gamma_n *
sum|terms|, gamma_n = n*u / (1 - n*u), u = 2**-24. n is the longest reduction in the model
(the input length of its widest dot product) and the scale is the largest magnitude
compared. A real fault (a wrong cut point, a dropped layer, a transposed kernel) moves
outputs by a fraction of that scale, orders of magnitude above the bound.
"""
import numpy as np

UNIT_ROUNDOFF = 2.0 ** -24      # float32: half the spacing of floats in [1, 2)


def gamma(n):
    """Higham's gamma_n: the relative error bound of a float32 sum of n terms."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def longest_reduction(model):
    """The most terms any single output of any layer sums: kh*kw*cin for a convolution's
    kernel, kh*kw for a depthwise one, the input width for a dense kernel."""
    lengths = [1]
    for layer in model.layers:
        for weight in layer.weights:
            shape = weight.value.shape
            if weight.name.endswith("depthwise_kernel"):
                lengths.append(int(np.prod(shape[:-2])))
            elif weight.name.endswith("kernel"):
                lengths.append(int(np.prod(shape[:-1])))
    return max(lengths)


def float32_paths_atol(model, desired):
    """The absolute tolerance for comparing two float32 computation paths of `model` whose
    outputs are `desired`: gamma of its longest reduction times the largest |output|."""
    return gamma(longest_reduction(model)) * float(np.max(np.abs(desired)))
