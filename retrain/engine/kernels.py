"""Pure numpy kernels: forward/backward pairs for convolution, depthwise convolution and
pooling, TF 'same' padding arithmetic, and the inference kernels that
the inference plan binds to its preallocated arrays (the *_call functions). No classes, no
state.

Layouts are Keras's: images NHWC, conv kernels HWIO (kh, kw, in, out), depthwise kernels
(kh, kw, in, multiplier). `pads` is ((top, bottom), (left, right)). Every kernel keeps the
dtype it is given: float32 in use, float64 in the gradient checks.
"""
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import as_strided

NO_PADS = ((0, 0), (0, 0))


# -- padding arithmetic --------------------------------------------------------------------
def same_padding(size, kernel, stride, dilation=1):
    """TF 'same' padding of one axis as (before, after).

    The output has ceil(size / stride) cells and the total padding makes the last window
    fit. TF puts the odd extra cell at the END (bottom/right): a 2x2 'same' conv pads (0, 1).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def window_pads(spatial, window, strides, dilation, padding):
    """((top, bottom), (left, right)) for a window op over `spatial` = (H, W)."""
    if padding == "valid":
        return NO_PADS
    return tuple(same_padding(n, k, s, d) for n, k, s, d in zip(spatial, window, strides, dilation))


def output_length(size, window, stride, dilation, padding):
    """Output cells along one axis: 'same' gives ceil(size / stride), 'valid' floors.
    None (an unknown size) stays None."""
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return (size - (window - 1) * dilation - 1) // stride + 1


def pad2d_forward(x, pads, value=0.0):
    """Pad H and W of an NHWC array with `value` (a new array; `x` itself when pads are 0)."""
    if pads == NO_PADS:
        return x
    (top, bottom), (left, right) = pads
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), value, x.dtype)
    out[:, top:top + h, left:left + w] = x
    return out


def pad2d_backward(dy, pads):
    """Gradient of pad2d_forward: the interior of `dy`, as a new contiguous array."""
    (top, bottom), (left, right) = pads
    return np.ascontiguousarray(dy[:, top:dy.shape[1] - bottom, left:dy.shape[2] - right])


def _padded_shape(shape, pads):
    (top, bottom), (left, right) = pads
    return (shape[0], shape[1] + top + bottom, shape[2] + left + right) + tuple(shape[3:])


# -- window views ---------------------------------------------------------------------------
def _out_hw(padded_shape, window, strides, dilation):
    return tuple((n - (k - 1) * d - 1) // s + 1
                 for n, k, s, d in zip(padded_shape[1:3], window, strides, dilation))


def _windows(xp, window, strides, dilation, out_hw):
    """A read-only view (N, Ho, Wo, kh, kw, C) of every window of the padded input; no copy.
    The (kh, kw, C) order matches a HWIO kernel reshaped to (kh*kw*C, F)."""
    sn, sh, sw, sc = xp.strides
    shape = (xp.shape[0], out_hw[0], out_hw[1], window[0], window[1], xp.shape[3])
    steps = (sn, sh * strides[0], sw * strides[1], sh * dilation[0], sw * dilation[1], sc)
    return as_strided(xp, shape, steps, writeable=False)


def _tap(xp, i, j, strides, dilation, out_hw):
    """The cells that window tap (i, j) reads, for every output position: an (N, Ho, Wo, C)
    view of `xp` (writable when `xp` is, so backward can `+=` into it)."""
    top, left = i * dilation[0], j * dilation[1]
    return xp[:, top:top + strides[0] * (out_hw[0] - 1) + 1:strides[0],
              left:left + strides[1] * (out_hw[1] - 1) + 1:strides[1]]


def _taps(window):
    return [(i, j) for i in range(window[0]) for j in range(window[1])]


# -- convolution ----------------------------------------------------------------------------
def conv2d_forward(x, kernel, strides=(1, 1), dilation=(1, 1), pads=NO_PADS):
    """y[n,i,j,f] = sum_{a,b,c} xp[n, i*sh + a*dh, j*sw + b*dw, c] * kernel[a,b,c,f].

    x (N, H, W, C), kernel (kh, kw, C, F) -> (N, Ho, Wo, F). One matmul: a 1x1 kernel over
    the (N*H*W, C) pixels, otherwise over im2col rows of length kh*kw*C.
    """
    kh, kw, c, f = kernel.shape
    n = x.shape[0]
    if (kh, kw) == (1, 1) and pads == NO_PADS:
        xs = x[:, ::strides[0], ::strides[1]]
        return (xs.reshape(-1, c) @ kernel.reshape(c, f)).reshape(xs.shape[:3] + (f,))
    xp = pad2d_forward(x, pads)
    out_hw = _out_hw(xp.shape, (kh, kw), strides, dilation)
    cols = _windows(xp, (kh, kw), strides, dilation, out_hw).reshape(-1, kh * kw * c)
    return (cols @ kernel.reshape(-1, f)).reshape(n, out_hw[0], out_hw[1], f)


def conv2d_backward(dy, x, kernel, strides=(1, 1), dilation=(1, 1), pads=NO_PADS,
                    kernel_grad=True):
    """Gradients of conv2d_forward for dy (N, Ho, Wo, F): (dx, dkernel); dkernel is None
    unless `kernel_grad` (a frozen layer skips that matmul)."""
    kh, kw, c, f = kernel.shape
    n, ho, wo, _ = dy.shape
    dy2 = dy.reshape(-1, f)
    if (kh, kw) == (1, 1) and pads == NO_PADS:
        xs = x[:, ::strides[0], ::strides[1]]
        dkernel = (xs.reshape(-1, c).T @ dy2).reshape(kernel.shape) if kernel_grad else None
        dx = np.zeros(x.shape, np.result_type(dy, kernel))
        dx[:, ::strides[0], ::strides[1]] = (dy2 @ kernel.reshape(c, f).T).reshape(n, ho, wo, c)
        return dx, dkernel
    xp = pad2d_forward(x, pads)
    dkernel = None
    if kernel_grad:
        cols = _windows(xp, (kh, kw), strides, dilation, (ho, wo)).reshape(-1, kh * kw * c)
        dkernel = (cols.T @ dy2).reshape(kernel.shape)
    dcols = (dy2 @ kernel.reshape(-1, f).T).reshape(n, ho, wo, kh, kw, c)
    dxp = np.zeros(xp.shape, np.result_type(dy, kernel))
    for i, j in _taps((kh, kw)):     # col2im: scatter-add each tap back where it was read
        _tap(dxp, i, j, strides, dilation, (ho, wo))[...] += dcols[:, :, :, i, j]
    return pad2d_backward(dxp, pads), dkernel


def _repeat_channels(x, multiplier):
    """x with channel c repeated `multiplier` times, so channel c*M + m of a depthwise output
    reads channel c*M + m of this array and every depthwise product is plain 4-D."""
    return x if multiplier == 1 else np.repeat(x, multiplier, axis=-1)


def depthwise_conv2d_forward(x, kernel, strides=(1, 1), dilation=(1, 1), pads=NO_PADS):
    """y[n,i,j,c*M+m] = sum_{a,b} xp[n, i*sh + a*dh, j*sw + b*dw, c] * kernel[a,b,c,m].

    x (N, H, W, C), kernel (kh, kw, C, M) -> (N, Ho, Wo, C*M): output channel c*M + m, so
    the M outputs of one input channel are adjacent.
    """
    kh, kw, c, m = kernel.shape
    xp = pad2d_forward(x, pads)
    out_hw = _out_hw(xp.shape, (kh, kw), strides, dilation)
    y = np.empty((x.shape[0],) + out_hw + (c * m,), np.result_type(x, kernel))
    tiled = depthwise_tiled_kernel(kernel, out_hw[1]) if strides[1] == 1 and m == 1 else None
    depthwise_call(xp, kernel, strides, dilation, y, tiled)()
    return y


def depthwise_conv2d_backward(dy, x, kernel, strides=(1, 1), dilation=(1, 1), pads=NO_PADS,
                              kernel_grad=True):
    """Gradients of depthwise_conv2d_forward: (dx, dkernel or None)."""
    kh, kw, c, m = kernel.shape
    out_hw = dy.shape[1:3]
    xp = pad2d_forward(_repeat_channels(x, m), pads)
    flat = kernel.reshape(kh, kw, c * m)
    dxp = np.zeros(xp.shape, np.result_type(dy, kernel))
    dkernel = np.zeros(flat.shape, np.result_type(dy, x)) if kernel_grad else None
    for i, j in _taps((kh, kw)):
        _tap(dxp, i, j, strides, dilation, out_hw)[...] += dy * flat[i, j]
        if kernel_grad:
            dkernel[i, j] = np.einsum("nhwc,nhwc->c", _tap(xp, i, j, strides, dilation, out_hw), dy)
    dx = pad2d_backward(dxp, pads)
    if m > 1:                        # the M copies of channel c each collected a share
        dx = dx.reshape(dx.shape[:3] + (c, m)).sum(axis=-1)
    return dx, None if dkernel is None else dkernel.reshape(kernel.shape)


# -- pooling --------------------------------------------------------------------------------
def max_pool2d_forward(x, pool, strides, pads=NO_PADS):
    """Max over each window. 'same' borders are padded with -inf, so padding never wins."""
    xp = pad2d_forward(x, pads, value=-np.inf)
    out_hw = _out_hw(xp.shape, pool, strides, (1, 1))
    y = _tap(xp, 0, 0, strides, (1, 1), out_hw).copy()
    for i, j in _taps(pool)[1:]:
        np.maximum(y, _tap(xp, i, j, strides, (1, 1), out_hw), out=y)
    return y


def max_pool2d_backward(dy, x, pool, strides, pads=NO_PADS):
    """Each window's gradient goes to ONE cell, its first maximum in row-major order (as TF
    does; ties are common after a ReLU, where whole windows are 0)."""
    xp = pad2d_forward(x, pads, value=-np.inf)
    out_hw = dy.shape[1:3]
    best = _tap(xp, 0, 0, strides, (1, 1), out_hw).copy()
    winner = np.zeros(best.shape, np.intp)
    for k, (i, j) in enumerate(_taps(pool)[1:], start=1):
        tap = _tap(xp, i, j, strides, (1, 1), out_hw)
        better = tap > best              # strict: an equal later cell does not take over
        np.copyto(best, tap, where=better)
        np.copyto(winner, k, where=better)
    dxp = np.zeros(xp.shape, dy.dtype)
    for k, (i, j) in enumerate(_taps(pool)):
        _tap(dxp, i, j, strides, (1, 1), out_hw)[...] += np.where(winner == k, dy, 0)
    return pad2d_backward(dxp, pads)


def _window_counts(spatial, pool, strides, pads, dtype):
    """How many real (unpadded) cells each output window covers: (1, Ho, Wo, 1)."""
    ones = pad2d_forward(np.ones((1,) + tuple(spatial) + (1,), dtype), pads)
    out_hw = _out_hw(ones.shape, pool, strides, (1, 1))
    return sum(_tap(ones, i, j, strides, (1, 1), out_hw) for i, j in _taps(pool))


def avg_pool2d_forward(x, pool, strides, pads=NO_PADS):
    """Mean over each window. With 'same' padding TF divides by the number of REAL cells in
    the window, not by pool_h*pool_w."""
    xp = pad2d_forward(x, pads)
    out_hw = _out_hw(xp.shape, pool, strides, (1, 1))
    total = _tap(xp, 0, 0, strides, (1, 1), out_hw).copy()
    for i, j in _taps(pool)[1:]:
        total += _tap(xp, i, j, strides, (1, 1), out_hw)
    return total / _window_counts(x.shape[1:3], pool, strides, pads, x.dtype)


def avg_pool2d_backward(dy, x, pool, strides, pads=NO_PADS):
    """Gradient of avg_pool2d_forward: each cell gets dy / count from every window it is in."""
    share = dy / _window_counts(x.shape[1:3], pool, strides, pads, dy.dtype)
    dxp = np.zeros(_padded_shape(x.shape, pads), dy.dtype)
    for i, j in _taps(pool):
        _tap(dxp, i, j, strides, (1, 1), dy.shape[1:3])[...] += share
    return pad2d_backward(dxp, pads)


# -- inference: kernels bound once to their arrays ------------------------------------------
# A plan runs the same operations on the same preallocated arrays for every image, so these
# return a function of no arguments with every view and check made once (numpy's per-call
# overhead, ~5-15 us for as_strided or np.clip, adds up over 70 steps an image). `out` may
# have any strides (the interior of a zero-padded buffer) and may be a band of rows.
def sequence(calls):
    """One function calling each of `calls` in order."""
    def run():
        for call in calls:
            call()
    return run


def _merges(a):
    """Whether the W and C axes of an (N, H, W, C) array are contiguous, so that a reshape to
    (N, H, W*C) is a view."""
    return a.strides[2] == a.shape[3] * a.strides[3]


def _assign(activation, src, out):
    out[...] = activation(src)


def epilogue_call(z, out, scale=None, bias=None, clip=None, activation=None, residual=None):
    """out = activation(clip(z * scale + bias)) + residual, each stage skipped when None.

    `clip` is (low, high), high possibly None: ReLU / ReLU6 in one pass. `scale` and `bias`
    hold one value per channel or, for an (N, H, W, C) out, a row's worth (W*C values): then
    each pass runs along whole rows instead of W short runs of C (numpy's per-run overhead
    dominates at small C). The first stage reads `z`, every later one works in place in
    `out`, so a contiguous `z` can feed a strided `out` (a padded interior) in one pass.
    """
    vector = bias if bias is not None else scale
    if vector is not None and out.ndim == 4 and vector.size != out.shape[3]:
        arrays = [z, out] + ([] if residual is None else [residual])
        if activation is None and all(_merges(a) for a in arrays):
            z, out, *rest = (a.reshape(a.shape[:2] + (-1,)) for a in arrays)
            residual = rest[0] if rest else None
        else:
            scale, bias = (None if v is None else v.reshape(out.shape[2:]) for v in (scale, bias))
    calls, src = [], z
    for ufunc, operand in ((np.multiply, scale), (np.add, bias)):
        if operand is not None:
            calls.append(partial(ufunc, src, operand, out=out))
            src = out
    if clip is not None:
        calls.append(partial(np.maximum, src, clip[0], out=out) if clip[1] is None
                     else partial(np.clip, src, clip[0], clip[1], out=out))
        src = out
    if activation is not None:
        calls.append(partial(_assign, activation, src, out))
        src = out
    if residual is not None:
        calls.append(partial(np.add, src, residual, out=out))
        src = out
    if src is not out:
        calls.append(partial(np.copyto, out, src))
    return sequence(calls)


def matmul_call(x, kernel, out, scratch=None, **stages):
    """out = epilogue(x @ kernel, **stages) over the last axis: a 1x1 convolution or a Dense
    layer. x (..., C), kernel (C, F), out (..., F). The matmul writes `out` directly when it
    is contiguous, else `scratch` (contiguous, out's shape), which the epilogue's first pass
    moves into `out`."""
    target = out if out.flags.c_contiguous else scratch
    rows = target.reshape(-1, kernel.shape[1])
    if x.flags.c_contiguous:
        matmul = partial(np.matmul, x.reshape(-1, x.shape[-1]), kernel, out=rows)
    else:
        def matmul():
            np.matmul(np.ascontiguousarray(x).reshape(-1, x.shape[-1]), kernel, out=rows)
    return sequence([matmul, epilogue_call(target, out, **stages)])


def conv2d_call(xp, kernel, strides, dilation, out, cols, scratch=None, **stages):
    """A convolution of the already padded xp (N, Hp, Wp, C) into out (N, Ho, Wo, F): the
    windows copied into `cols` (contiguous, (N, Ho, Wo, kh*kw*C)), then matmul_call."""
    kh, kw, c, f = kernel.shape
    windows = _windows(xp, (kh, kw), strides, dilation, out.shape[1:3])
    return sequence([partial(np.copyto, cols.reshape(windows.shape), windows),
                      matmul_call(cols, kernel.reshape(-1, f), out, scratch, **stages)])


def depthwise_tiled_kernel(kernel, width):
    """A (kh, kw, C, 1) depthwise kernel repeated along a row of `width` pixels:
    (kh, kw, width*C). With it a tap of a stride-1 row is one long contiguous multiply-add
    instead of `width` short ones of C values (numpy's loop overhead dominates small C)."""
    kh, kw, c, _ = kernel.shape
    return np.ascontiguousarray(np.broadcast_to(kernel.reshape(kh, kw, 1, c), (kh, kw, width, c))
                                ).reshape(kh, kw, width * c)


def depthwise_call(xp, kernel, strides, dilation, out, tiled=None, **stages):
    """Depthwise convolution of the already padded xp into out (N, Ho, Wo, C*M), then
    epilogue(out, out, **stages).

    One einsum sums all taps in a single pass (out += window * kernel, no temporaries). With
    `tiled` (depthwise_tiled_kernel for Wo; for stride 1 along W and M = 1; used only when
    the W and C axes of xp and out are contiguous) it runs over whole (Wo*C)-long rows.
    """
    kh, kw, c, m = kernel.shape
    n, ho, wo = out.shape[:3]
    if tiled is not None and xp.strides[2] == c * xp.strides[3] and _merges(out):
        sn, sh, sw, sc = xp.strides
        rows = as_strided(xp, (n, ho, kh, kw, wo * c),
                          (sn, sh * strides[0], sh * dilation[0], sw * dilation[1], sc),
                          writeable=False)
        einsum = partial(np.einsum, "nhijx,ijx->nhx", rows, tiled,
                         out=out.reshape(n, ho, wo * c))
    elif m == 1:        # the 3-index form: an inner loop over C, not over M = 1
        einsum = partial(np.einsum, "nhwijc,ijc->nhwc",
                         _windows(xp, (kh, kw), strides, dilation, (ho, wo)), kernel[..., 0],
                         out=out)
    else:
        einsum = partial(np.einsum, "nhwijc,ijcm->nhwcm",
                         _windows(xp, (kh, kw), strides, dilation, (ho, wo)), kernel,
                         out=out.reshape(n, ho, wo, c, m))
    return sequence([einsum, epilogue_call(out, out, **stages)])
