"""The fast kernels against slow, obvious loop oracles (float64), plus TF 'same' arithmetic,
batch-norm folding, and the pure activation functions' erf and dtypes."""
import math

import numpy as np
import pytest

from retrain.engine import activations, kernels

RNG = np.random.default_rng(7)


def _pad(x, pads, value=0.0):
    (t, b), (l, r) = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _out(n, k, s, d):
    return (n - (k - 1) * d - 1) // s + 1


def conv2d_oracle(x, kernel, strides, dilation, pads):
    """Every output cell as an explicit sum over its window."""
    xp = _pad(x, pads)
    kh, kw, c, f = kernel.shape
    ho = _out(xp.shape[1], kh, strides[0], dilation[0])
    wo = _out(xp.shape[2], kw, strides[1], dilation[1])
    y = np.zeros((x.shape[0], ho, wo, f))
    for n, i, j in np.ndindex(y.shape[:3]):
        for a in range(kh):
            for b in range(kw):
                pixel = xp[n, i * strides[0] + a * dilation[0], j * strides[1] + b * dilation[1]]
                y[n, i, j] += pixel @ kernel[a, b]
    return y


def conv2d_backward_oracle(dy, x, kernel, strides, dilation, pads):
    """Scatter each output's gradient back over its window, one cell at a time."""
    xp = _pad(x, pads)
    dxp, dk = np.zeros_like(xp), np.zeros_like(kernel)
    kh, kw = kernel.shape[:2]
    for n, i, j in np.ndindex(dy.shape[:3]):
        for a in range(kh):
            for b in range(kw):
                r, c = i * strides[0] + a * dilation[0], j * strides[1] + b * dilation[1]
                dxp[n, r, c] += kernel[a, b] @ dy[n, i, j]
                dk[a, b] += np.outer(xp[n, r, c], dy[n, i, j])
    (t, bo), (l, ri) = pads
    return dxp[:, t:xp.shape[1] - bo, l:xp.shape[2] - ri], dk


def depthwise_oracle(x, kernel, strides, dilation, pads):
    kh, kw, c, m = kernel.shape
    y = np.zeros(conv2d_oracle(x[..., :1], kernel[:, :, :1, :1], strides, dilation, pads).shape[:3]
                 + (c * m,))
    for ch in range(c):
        for mult in range(m):
            single = conv2d_oracle(x[..., ch:ch + 1], kernel[:, :, ch:ch + 1, mult:mult + 1],
                                   strides, dilation, pads)
            y[..., ch * m + mult] = single[..., 0]
    return y


def pool_oracle(x, pool, strides, pads, reduce):
    """reduce(window of real cells) for each output; padding cells are simply not there."""
    (t, _), (l, _) = pads
    h, w = x.shape[1:3]
    ho = _out(h + sum(pads[0]), pool[0], strides[0], 1)
    wo = _out(w + sum(pads[1]), pool[1], strides[1], 1)
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * strides[0] - t, j * strides[1] - l
            window = x[:, max(r0, 0):r0 + pool[0], max(c0, 0):c0 + pool[1]]
            y[:, i, j] = reduce(window.reshape(x.shape[0], -1, x.shape[3]), axis=1)
    return y


CONV_CASES = [  # (H, W, kh, kw, strides, dilation, padding)
    (8, 8, 3, 3, (2, 2), (1, 1), "same"),
    (7, 7, 3, 3, (2, 2), (1, 1), "same"),
    (7, 7, 4, 4, (2, 2), (1, 1), "same"),
    (7, 7, 2, 2, (1, 1), (1, 1), "same"),
    (7, 10, 3, 4, (2, 3), (1, 1), "same"),
    (8, 8, 3, 3, (2, 2), (1, 1), "valid"),
    (9, 9, 3, 3, (1, 1), (2, 2), "same"),
    (9, 9, 3, 3, (1, 1), (2, 2), "valid"),
    (9, 8, 3, 2, (2, 1), (2, 3), "same"),
    (6, 6, 1, 1, (1, 1), (1, 1), "valid"),
    (7, 7, 1, 1, (2, 2), (1, 1), "same"),
]


def _pads(case):
    h, w, kh, kw, strides, dilation, padding = case
    return kernels.window_pads((h, w), (kh, kw), strides, dilation, padding)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_loop_oracle(case):
    h, w, kh, kw, strides, dilation, _ = case
    x, kernel = RNG.normal(size=(2, h, w, 3)), RNG.normal(size=(kh, kw, 3, 4))
    pads = _pads(case)
    y = kernels.conv2d_forward(x, kernel, strides, dilation, pads)
    np.testing.assert_allclose(y, conv2d_oracle(x, kernel, strides, dilation, pads), atol=1e-12)
    dy = RNG.normal(size=y.shape)
    dx, dk = kernels.conv2d_backward(dy, x, kernel, strides, dilation, pads)
    want_dx, want_dk = conv2d_backward_oracle(dy, x, kernel, strides, dilation, pads)
    np.testing.assert_allclose(dx, want_dx, atol=1e-12)
    np.testing.assert_allclose(dk, want_dk, atol=1e-12)
    dx_only, no_dk = kernels.conv2d_backward(dy, x, kernel, strides, dilation, pads,
                                             kernel_grad=False)
    assert no_dk is None
    np.testing.assert_array_equal(dx_only, dx)


@pytest.mark.parametrize("case", CONV_CASES[:9], ids=str)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_matches_loop_oracle(case, multiplier):
    h, w, kh, kw, strides, dilation, _ = case
    x, kernel = RNG.normal(size=(2, h, w, 3)), RNG.normal(size=(kh, kw, 3, multiplier))
    pads = _pads(case)
    y = kernels.depthwise_conv2d_forward(x, kernel, strides, dilation, pads)
    np.testing.assert_allclose(y, depthwise_oracle(x, kernel, strides, dilation, pads), atol=1e-12)
    # backward: a depthwise conv is a dense conv whose kernel is zero off the channel diagonal
    dense = np.zeros((kh, kw, 3, 3 * multiplier))
    for c in range(3):
        dense[:, :, c, c * multiplier:(c + 1) * multiplier] = kernel[:, :, c, :]
    dy = RNG.normal(size=y.shape)
    dx, dk = kernels.depthwise_conv2d_backward(dy, x, kernel, strides, dilation, pads)
    want_dx, want_dense = conv2d_backward_oracle(dy, x, dense, strides, dilation, pads)
    want_dk = np.stack([want_dense[:, :, c, c * multiplier:(c + 1) * multiplier]
                        for c in range(3)], axis=2)
    np.testing.assert_allclose(dx, want_dx, atol=1e-12)
    np.testing.assert_allclose(dk, want_dk, atol=1e-12)


POOL_CASES = [  # (H, W, pool, strides, padding)
    (7, 7, (2, 2), (2, 2), "same"),
    (8, 8, (3, 3), (2, 2), "same"),
    (7, 7, (3, 3), (2, 2), "same"),
    (5, 5, (2, 2), (1, 1), "same"),
    (7, 7, (2, 2), (2, 2), "valid"),
    (7, 9, (3, 2), (1, 3), "same"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pooling_matches_loop_oracle(case):
    h, w, pool, strides, padding = case
    x = RNG.normal(size=(2, h, w, 3)) - 1.5     # all-negative windows expose zero padding
    pads = kernels.window_pads((h, w), pool, strides, (1, 1), padding)
    np.testing.assert_allclose(kernels.max_pool2d_forward(x, pool, strides, pads),
                               pool_oracle(x, pool, strides, pads, np.max), atol=1e-12)
    np.testing.assert_allclose(kernels.avg_pool2d_forward(x, pool, strides, pads),
                               pool_oracle(x, pool, strides, pads, np.mean), atol=1e-12)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_backward_matches_loop_oracle(case):
    h, w, pool, strides, padding = case
    x = np.round(RNG.normal(size=(1, h, w, 2)))        # many ties: small integers
    pads = kernels.window_pads((h, w), pool, strides, (1, 1), padding)
    y = kernels.max_pool2d_forward(x, pool, strides, pads)
    dy = RNG.normal(size=y.shape)
    want_max, want_avg = np.zeros_like(x), np.zeros_like(x)
    (t, _), (l, _) = pads
    for n, i, j, c in np.ndindex(dy.shape):
        cells = [(i * strides[0] - t + a, j * strides[1] - l + b)
                 for a in range(pool[0]) for b in range(pool[1])]
        cells = [(r, q) for r, q in cells if 0 <= r < h and 0 <= q < w]
        first = max(cells, key=lambda rq: (x[n, rq[0], rq[1], c], -cells.index(rq)))
        want_max[n, first[0], first[1], c] += dy[n, i, j, c]
        for r, q in cells:
            want_avg[n, r, q, c] += dy[n, i, j, c] / len(cells)
    np.testing.assert_allclose(kernels.max_pool2d_backward(dy, x, pool, strides, pads), want_max,
                               atol=1e-12)
    np.testing.assert_allclose(kernels.avg_pool2d_backward(dy, x, pool, strides, pads), want_avg,
                               atol=1e-12)


def test_max_pool_backward_routes_ties_to_the_first_cell():
    x = np.zeros((1, 2, 2, 1))
    dx = kernels.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, (2, 2), (2, 2))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("size, kernel, stride, dilation, want", [
    (8, 3, 2, 1, (0, 1)), (7, 3, 2, 1, (1, 1)), (7, 4, 2, 1, (1, 2)), (7, 2, 1, 1, (0, 1)),
    (10, 4, 3, 1, (1, 2)), (9, 3, 1, 2, (2, 2)), (28, 2, 1, 1, (0, 1)), (8, 1, 2, 1, (0, 0)),
    (3, 5, 1, 1, (2, 2)), (2, 3, 4, 1, (0, 1)),
])
def test_same_padding_puts_the_extra_cell_at_the_end(size, kernel, stride, dilation, want):
    assert kernels.same_padding(size, kernel, stride, dilation) == want
    assert kernels.output_length(size, kernel, stride, dilation, "same") == -(-size // stride)


def test_output_length_valid_floors_and_keeps_unknown():
    assert kernels.output_length(8, 3, 2, 1, "valid") == 3
    assert kernels.output_length(9, 3, 2, 1, "valid") == 4
    assert kernels.output_length(9, 3, 1, 2, "valid") == 5
    assert kernels.output_length(None, 3, 2, 1, "same") is None


def test_pad2d_round_trip():
    x = RNG.normal(size=(2, 3, 4, 2))
    pads = ((1, 2), (3, 0))
    xp = kernels.pad2d_forward(x, pads, value=-5.0)
    assert xp.shape == (2, 6, 7, 2)
    assert np.all(xp[:, 0] == -5.0) and np.all(xp[:, :, :3] == -5.0)
    np.testing.assert_array_equal(kernels.pad2d_backward(xp, pads), x)


@pytest.mark.parametrize("fn", [kernels.conv2d_forward, kernels.depthwise_conv2d_forward])
def test_kernels_keep_float32(fn):
    x = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    kernel = RNG.normal(size=(3, 3, 2, 2)).astype(np.float32)
    pads = kernels.window_pads((5, 5), (3, 3), (1, 1), (1, 1), "same")
    assert fn(x, kernel, pads=pads).dtype == np.float32
    assert kernels.max_pool2d_forward(x, (2, 2), (2, 2)).dtype == np.float32
    assert kernels.avg_pool2d_forward(x, (3, 3), (2, 2), pads).dtype == np.float32


def test_erf_matches_math_erf_to_float64_precision():
    x = np.linspace(-7, 7, 20001)
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(activations.erf(x), want, rtol=0, atol=5e-15)   # both branches
    assert activations.erf(np.float32([0.5])).dtype == np.float32


@pytest.mark.parametrize("name", activations.NAMES)
def test_activations_keep_float32(name):
    x = np.linspace(-5, 5, 12, dtype=np.float32).reshape(2, 6)
    fn = activations.get(name)
    y = fn.forward(x)
    assert y.dtype == np.float32
    assert fn.backward(np.ones_like(y), x, y).dtype == np.float32


def test_unknown_activation_is_refused_clearly():
    with pytest.raises(ValueError, match=r"Received: activation='relu7'.*Use one of"):
        activations.get("relu7")
