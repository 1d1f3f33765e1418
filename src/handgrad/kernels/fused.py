"""Linear -> ReLU and Conv2d -> ReLU -> MaxPool2d, each as one op (``functional/fused.py`` is
their definition).

Linear -> ReLU: run one by one, the two layers pass over the product three times after BLAS wrote
it (the broadcast bias add, the ReLU into a second array; backward the ReLU mask into a third, then
the bias gradient's sum). Fused, one loop adds the bias and applies the ReLU in place on BLAS's
output; backward one loop writes dL/dz and sums dL/dbias. The product is taken transposed,
y.T = weight @ x.T, which OpenBLAS runs faster here than x @ weight.T (one thread, batch 64: 285
instead of 350 us for 784 -> 250, and 83 instead of 110 us for 250 -> 250, where x.T is the previous
op's C-ordered y.T); so y is handed on as a transposed (F-ordered) view, and backward works on
dL/dz transposed too:

    forward   y.T = max(0, weight @ x.T + bias)
    backward  dL/dz.T = dL/dy.T where y > 0 (else 0); dL/dbias = its rows summed;
              grad_weight = dL/dz.T @ x, grad_input = (weight.T @ dL/dz.T).T (BLAS)

Conv2d -> ReLU -> MaxPool2d: run one by one, the three layers pass over the convolution's full
output six times (bias and layout change, ReLU, pool scan; pool scatter, ReLU mask, layout change
back). Fused, the pool scans the convolution's output where it was computed, adding the bias and
applying the ReLU to each window's maximum only (relu(max z) = max relu(z), and the first maximum
of z is the first of relu(z) wherever the ReLU lets a gradient through); backward writes dL/dz once:

    forward   z = conv2d(x) (no bias yet), y = max(0, max over each window of z + bias),
              argmax = the position of that maximum in z's plane
    backward  dL/dz[argmax] = dL/dy where y > 0 (else 0); dL/dbias = the sum of those

Two ways to the convolution, by input channels:
- many: im2col and products in BLAS, in blocks of a few samples, each block on one thread from its
  unfold to its pool: z = W @ cols_block laid out (O, samples*Ho*Wo), scanned in place; backward
  writes the block's dL/dz in the same layout, takes its share of grad_weight = G @ cols_block.T and
  grad_cols = W.T @ G, and folds grad_cols into its samples. A block's columns stay in its core's
  L2, and the products run inside the kernel's threads (Numba's np.dot: SciPy's BLAS, one thread
  each, see ``handgrad._threads.in_thread_blas``), so no thread waits for another between the
  unfold, the product and the pool. LeNet-5's conv2 at batch 64: forward 0.90 -> 0.58 ms, backward
  1.18 -> 0.84 ms against one whole-batch unfold, product (on BLAS's threads) and pool.
- one (a network's first layer), stride 1: a direct convolution of a zero-padded copy of each
  sample, computed on the padded width so that each tap is one contiguous multiply-add over the
  plane (no cols, which would be kH*kW times the input, and no skinny product); backward builds
  dL/dz per plane and takes grad_weight[o, c, i, j] as one dot product per tap.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _threads
from ..functional import fused as _reference
from ..functional.conv import ALL, conv_output_size
from . import COMPILED_DTYPES
from . import conv as _conv
from .products import product_pair, rows_product

__all__ = [
    "conv2d_relu_max_pool2d_backward",
    "conv2d_relu_max_pool2d_forward",
    "linear_relu_backward",
    "linear_relu_forward",
]


@njit(cache=True)
def _bias_relu_t(zt, bias):
    """zt[j, n] = max(0, zt[j, n] + bias[j]) in place, on z transposed (one row per output feature;
    bias None: no bias). NaN stays NaN, as np.maximum."""
    for j in range(zt.shape[0]):
        for n in range(np.uintp(zt.shape[1])):
            v = zt[j, n] if bias is None else zt[j, n] + bias[j]
            zt[j, n] = 0 if v <= 0 else v


@njit(cache=True, fastmath={"reassoc"})
def _relu_grad_t(grad_output_t, yt, gt, grad_bias, zero):
    """gt[j, n] = dL/dy[n, j] where y[n, j] > 0, else 0 (NaN > 0 is false), all transposed as the
    forward kept y; grad_bias[j] = the sum of gt's row j (grad_bias None: not wanted), reassociated
    (summed in any order) so that it vectorises with the select. ``zero``: 0 in the gradient's dtype
    (a literal 0 would make the select float64 and stop the vectorising)."""
    for j in range(gt.shape[0]):
        total = zero
        for n in range(np.uintp(gt.shape[1])):
            v = grad_output_t[j, n] if yt[j, n] > zero else zero
            gt[j, n] = v
            total += v
        if grad_bias is not None:
            grad_bias[j] = total


@njit(parallel=True, cache=True)
def _rows_bias_relu(rows, weight, bias, out, chunks):
    """out = max(0, rows @ weight.T + bias), in ``chunks`` blocks of rows, each on one thread: its
    product (BLAS, on this thread, straight into out: a fresh block would be fresh pages to fault
    in) and then its bias and ReLU in place while the block is in cache."""
    n = rows.shape[0]
    for t in prange(chunks):
        r0, r1 = t * n // chunks, (t + 1) * n // chunks
        np.dot(rows[r0:r1], weight.T, out[r0:r1])
        for r in range(r0, r1):
            for j in range(np.uintp(out.shape[1])):
                v = out[r, j] if bias is None else out[r, j] + bias[j]
                out[r, j] = 0 if v <= 0 else v


def linear_relu_forward(x, weight, bias, keep_cache=True):
    """The same y as ``functional.fused.linear_relu_forward``: y.T = weight @ x.T in BLAS (the
    faster layout, see above), then the bias and the ReLU in one pass over it. Shapes: x
    (*, in_features) -> y (*, out_features), for two axes a transposed (F-ordered) view.

    Inference (``keep_cache=False``) on C-ordered rows, at least 64 per thread: one block of rows
    per thread instead, product and ReLU together (an MLP's batch of 1000: 6-9% faster per layer than
    one product on BLAS's threads, then one pass), y C-ordered."""
    if x.dtype not in COMPILED_DTYPES or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        return _reference.linear_relu_forward(x, weight, bias, keep_cache)
    rows = x.reshape(-1, x.shape[-1])
    threads = _threads.numba_threads()
    if not keep_cache and threads > 1 and rows.shape[0] >= 64 * threads and rows.flags.c_contiguous:
        out = np.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype)
        _rows_bias_relu(rows, np.ascontiguousarray(weight), bias, out, threads)
        return out.reshape(x.shape[:-1] + weight.shape[:1]), None
    yt = rows_product(weight, rows.T)
    _bias_relu_t(yt, bias)
    # backward needs x (grad_weight), weight (grad_input) and y (where the ReLU let the gradient through)
    cache = (rows, weight, bias is not None, yt, x.shape)
    return yt.T.reshape(x.shape[:-1] + weight.shape[:1]), cache if keep_cache else None


def linear_relu_backward(grad_output, cache, needs_input_grad=ALL):
    """The same gradients as ``functional.fused.linear_relu_backward``: dL/dz and dL/dbias in one
    pass, then grad_weight = dL/dz.T @ x and grad_input = dL/dz @ weight, the latter transposed as
    the forward's output (F-ordered)."""
    if len(cache) == 2:  # the reference's cache: its forward ran (a dtype the kernels do not take)
        return _reference.linear_relu_backward(grad_output, cache, needs_input_grad)
    rows, weight, has_bias, yt, x_shape = cache
    # dL/dy transposed: a view when dL/dy comes F-ordered (from this op's grad_input), else a copy
    grad_t = np.ascontiguousarray(np.asarray(grad_output, dtype=yt.dtype).reshape(-1, yt.shape[0]).T)
    gt = np.empty_like(yt)
    grad_bias = np.empty(yt.shape[0], dtype=yt.dtype) if has_bias and needs_input_grad[2] else None
    _relu_grad_t(grad_t, yt, gt, grad_bias, yt.dtype.type(0))
    grad_weight, grad_input_t = product_pair(
        gt if needs_input_grad[1] else None, rows, weight.T if needs_input_grad[0] else None, gt
    )
    grad_input = None if grad_input_t is None else grad_input_t.T.reshape(x_shape)
    return grad_input, grad_weight, grad_bias


#: At most this many input channels (and stride 1), the convolution runs direct: no cols, no BLAS.
#: Measured on LeNet-5 and tiny-cnn at batch 64: direct is faster for their one-channel first layers,
#: im2col and BLAS from six channels on.
DIRECT_MAX_CHANNELS = 1


@njit(inline="always")
def _later_wins(u, v):
    """Does v, later in a pool window's row-major order than u, replace u as the window's maximum?
    When greater, or NaN (as PyTorch's max pool: the first maximum wins, and the last NaN)."""
    return (v > u) | (v != v)


@njit(inline="always")
def _window_2x2(z, k, across, stride, add):
    """(max, its offset from k) of the 2x2 window z[k], z[k + across], z[k + stride],
    z[k + stride + across] (+ add), scanned in that order (``_later_wins``) with selects, no
    branch: LLVM vectorises it over a row of windows."""
    m, where = z[k] + add, np.uintp(0)
    v = z[k + across] + add
    m, where = (v, across) if _later_wins(m, v) else (m, where)
    v = z[k + stride] + add
    m, where = (v, stride) if _later_wins(m, v) else (m, where)
    v = z[k + stride + across] + add
    m, where = (v, stride + across) if _later_wins(m, v) else (m, where)
    return m, where


@njit(inline="always")
def _pool_plane(z, start, stride, odd, add, ho, wo, pool, out, argmax, target, hp, wp, keep):
    """out[target + a*wp + b] = max(0, max over the window (a, b) of z[start + r*stride + q] + add):
    the ReLU of the pool of the biased convolution; argmax = r*stride + q of the first maximum, or
    of the last NaN (as PyTorch's max pool: NaN wins, and ReLU keeps it). ``pool``: the window
    (kh, kw, sh, sw, ph, pw). The common 2x2 pool of stride 2 is spelled out (``_window_2x2``).

    ``odd`` > 0 (that pool only): z's columns come split in two phases, the even ones from
    ``start`` and the odd ones ``odd`` further, each row of a phase ``stride`` long: a window's four
    pixels then sit at the same place b of four contiguous rows, and argmax is that place in the
    phases. The pool then loads whole vectors: the first layers of LeNet-5 and tiny-cnn run forward
    1.2x and 1.4x faster than on interleaved columns."""
    kh, kw, sh, sw, ph, pw = pool
    zero = out.dtype.type(0)  # in z's dtype: a literal 0 would make the select float64
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        for a in range(hp):
            top = np.uintp(2 * a * stride)
            row = target + np.uintp(a * wp)
            if odd == 0:
                for b in range(np.uintp(wp)):  # a constant step and neighbour: the loads vectorise
                    m, where = _window_2x2(z, start + top + 2 * b, np.uintp(1), stride, add)
                    out[row + b] = zero if m <= zero else m
                    if keep:
                        argmax[row + b] = top + 2 * b + where
            else:
                for b in range(np.uintp(wp)):
                    m, where = _window_2x2(z, start + top + b, np.uintp(odd), stride, add)
                    out[row + b] = zero if m <= zero else m
                    if keep:
                        argmax[row + b] = top + b + where
        return
    for a in range(hp):
        r0 = sh * a - ph
        for b in range(wp):
            q0 = sw * b - pw
            m, where = -np.inf, max(0, r0) * stride + max(0, q0)  # PyTorch's start: the first pixel inside
            for r in range(max(0, r0), min(ho, r0 + kh)):  # padding never wins: only the pixels inside
                line = np.uintp(r * stride)
                for q in range(np.uintp(max(0, q0)), np.uintp(min(wo, q0 + kw))):
                    v = z[start + line + q] + add
                    if v > m or np.isnan(v):
                        m, where = v, line + q
            k = target + np.uintp(a * wp + b)
            out[k] = 0 if m <= 0 else m
            if keep:
                argmax[k] = where


@njit(inline="always")
def _unpool_plane(y, grad_output, argmax, source, hp, wp, g, target, size):
    """g[target + argmax] += dL/dy for the windows with y > 0 (the ReLU passes no gradient
    elsewhere; NaN > 0 is false), the ``size`` entries from ``target`` zeroed first."""
    for k in range(np.uintp(size)):
        g[target + k] = 0
    for k in range(source, source + np.uintp(hp * wp)):
        if y[k] > 0:
            g[target + argmax[k]] += grad_output[k]


#: Samples per block of the columns path: their columns, (C*kH*kW, block*Ho*Wo), about this many
#: bytes, so that a block's unfold, product and pool run in its thread's L2. Measured on LeNet-5's
#: conv2 at batch 64 (2 threads): forward 0.31 ms with 2-4 samples per block (96-240 KB), 0.53-0.59
#: with 8-32, 0.54-0.67 as one unfold, one product on BLAS's threads and one pool.
COLUMNS_BLOCK_BYTES = 1 << 18


def columns_block(k, plane, itemsize):
    """Samples per block of columns k rows high (``COLUMNS_BLOCK_BYTES``)."""
    return max(1, COLUMNS_BLOCK_BYTES // (k * plane * itemsize))


@njit(inline="always")
def _block_span(t, block, n):
    """Samples [s0, s1) of block t."""
    s0 = t * block
    return s0, min(n, s0 + block)


@njit(parallel=True, cache=True)
def _columns_forward(x, matrix, bias, conv, ho, wo, pool, block, cols, out, argmax, keep):
    """Per block of ``block`` samples, on one thread: unfold the block's columns into its part of
    cols, z = W @ cols_block (BLAS, on this thread), then out[n, o] = relu(max pool(z[o, n's
    columns] + bias[o])) with each window's argmax. cols (flat): block after block, each
    (C*kH*kW, width) for its width = samples * Ho*Wo, kept for backward when ``keep``."""
    n, c, h, w = x.shape
    o_count, k = matrix.shape
    kh, kw, sh, sw, ph, pw = conv
    plane, hp, wp = ho * wo, out.shape[2], out.shape[3]
    xf, of, af = x.reshape(-1), out.reshape(-1), argmax.reshape(-1)
    for t in prange((n + block - 1) // block):
        s0, s1 = _block_span(t, block, n)
        width = (s1 - s0) * plane
        cb = cols[k * s0 * plane : k * s1 * plane] if keep else np.empty(k * width, x.dtype)
        for s in range(s0, s1):
            _conv.unfold_sample(xf, s, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo, cb, width, (s - s0) * plane)
        z = np.dot(matrix, cb.reshape((k, width))).reshape(-1)
        for s in range(s0, s1):
            for o in range(o_count):
                start, target = np.uintp(o * width + (s - s0) * plane), np.uintp((s * o_count + o) * hp * wp)
                _pool_plane(z, start, np.uintp(wo), 0, bias[o], ho, wo, pool, of, af, target, hp, wp, keep)


@njit(parallel=True, cache=True)
def _columns_backward(y, grad_output, argmax, matrix, cols, conv, ho, wo, block, grad_weights, grad_biases, grad_input):
    """Per block of samples, on one thread: G = dL/dz of its columns through the pool and the ReLU,
    (O, width); its share of grad_weight, G @ cols_block.T, into grad_weights[t] and of grad_bias
    into grad_biases[t] (summed over the blocks in order afterwards, so any thread count gives the
    same sums); and, for a grad_input of N samples, col2im(W.T @ G) into its samples."""
    n, o_count, hp, wp = y.shape
    k = matrix.shape[1]
    kh, kw, sh, sw, ph, pw = conv
    c, h, w = grad_input.shape[1:]
    plane = ho * wo
    yf, gof, af, gif = y.reshape(-1), grad_output.reshape(-1), argmax.reshape(-1), grad_input.reshape(-1)
    for t in prange((n + block - 1) // block):
        s0, s1 = _block_span(t, block, n)
        width = (s1 - s0) * plane
        g = np.empty(o_count * width, y.dtype)
        for o in range(o_count):
            total = 0.0
            for s in range(s0, s1):
                source = np.uintp((s * o_count + o) * hp * wp)
                _unpool_plane(yf, gof, af, source, hp, wp, g, np.uintp(o * width + (s - s0) * plane), plane)
                for q in range(source, source + np.uintp(hp * wp)):
                    if yf[q] > 0:
                        total += gof[q]
            grad_biases[t, o] = total
        g2 = g.reshape((o_count, width))
        cb = cols[k * s0 * plane : k * s1 * plane].reshape((k, width))
        grad_weights[t] = np.dot(g2, cb.T)
        if grad_input.shape[0] == n:
            grad_cols = np.dot(matrix.T, g2).reshape(-1)
            for s in range(s0, s1):
                _conv.fold_sample(grad_cols, s, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo, gif, width, (s - s0) * plane)


@njit(cache=True)
def _tap_offsets(c, kh, kw, hpad, wh, phases):
    """offsets[p, (c*kH + i)*kW + j]: where tap (c, i, j) starts reading for the output columns
    q = P*b + p of phase p, in a zero-padded sample (P, C, Hp, Wh) whose columns are split into
    P phases (padded column q' at phase q' % P, place q' // P): input column P*b + p + j lies at
    phase (p + j) % P, place b + (p + j) // P. The taps in the order of weight[o].reshape(-1)."""
    offsets = np.empty((phases, c * kh * kw), dtype=np.uintp)
    for p in range(phases):
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    phase, place = (p + j) % phases, (p + j) // phases
                    offsets[p, (ci * kh + i) * kw + j] = ((phase * c + ci) * hpad + i) * wh + place
    return offsets


@njit(inline="always")
def _phase_span(ho, wo, wh, phases, p):
    """How far phase p's plane is computed: up to its last output column of the last row (the
    places past it would read past the sample)."""
    return np.uintp((ho - 1) * wh + (wo - p + phases - 1) // phases)


@njit(inline="always")
def _pad_sample(x, s, padded, ph, pw):
    """padded[s, (q + pW) % P, c, r + pH, (q + pW) // P] = x[s, c, r, q], zero elsewhere: sample s
    zero-padded, its columns split into P = padded.shape[1] phases."""
    phases, w = padded.shape[1], x.shape[3]
    padded[s] = 0
    for p in range(phases):  # phase by phase: no division per pixel
        first = (pw - p + phases - 1) // phases  # the first place whose column P*place + p - pW is in x
        for ci in range(x.shape[1]):
            for r in range(x.shape[2]):
                for place in range(first, (w + pw - p + phases - 1) // phases):
                    padded[s, p, ci, r + ph, place] = x[s, ci, r, phases * place + p - pw]


@njit(inline="always")
def _convolve_plane(xf, base, offsets, taps, z, span):
    """z[m] = sum_t taps[t] * xf[base + offsets[t] + m] for m < span: one output channel of the
    direct convolution, on the padded width. Eight taps per pass over the plane, so that each z[m]
    is loaded and stored once per eight multiply-adds rather than once per tap (the plane stays in
    L1, where those stores were the limit: 1.8x faster on LeNet-5's first layer); the taps left
    over, one pass each."""
    for m in range(span):
        z[m] = 0
    t = 0
    while t + 8 <= len(taps):
        a0, a1, a2, a3 = base + offsets[t], base + offsets[t + 1], base + offsets[t + 2], base + offsets[t + 3]
        a4, a5, a6, a7 = base + offsets[t + 4], base + offsets[t + 5], base + offsets[t + 6], base + offsets[t + 7]
        w0, w1, w2, w3, w4, w5, w6, w7 = taps[t : t + 8]
        for m in range(span):
            z[m] += (
                w0 * xf[a0 + m]
                + w1 * xf[a1 + m]
                + w2 * xf[a2 + m]
                + w3 * xf[a3 + m]
                + w4 * xf[a4 + m]
                + w5 * xf[a5 + m]
                + w6 * xf[a6 + m]
                + w7 * xf[a7 + m]
            )
        t += 8
    for left in range(t, len(taps)):
        a, tap = base + offsets[left], taps[left]
        for m in range(span):
            z[m] += tap * xf[a + m]


@njit(parallel=True, cache=True, fastmath={"contract"})
def _direct(x, weight, bias, ho, wo, kh_pool, kw_pool, sh_pool, sw_pool, ph_pool, pw_pool, padded, out, argmax, keep):
    """z[n, o, r, q] = sum_{c,i,j} weight[o, c, i, j] * x_padded[n, c, r + i, q + j] (stride 1),
    computed per phase of output columns (q = P*b + p, ``_tap_offsets``) on the phase's padded width
    Wh: each tap is then one contiguous multiply-add over the whole plane, which LLVM vectorises
    (the places past the last output column are never read), eight taps at a time
    (``_convolve_plane``; each multiply-add fused, contracted). Then pooled as ``_pool_columns``,
    argmax a place in z's phases. x_padded (P, C, Hp, Wh) per sample is kept in ``padded`` for
    backward. Parallel over samples."""
    n, c, h, w = x.shape
    o_count, _, kh, kw = weight.shape
    _, phases, _, hpad, wh = padded.shape
    ph, pw = (hpad - h) // 2, (wo + kw - 1 - w) // 2
    hp, wp = out.shape[2:]
    plane = ho * wh
    xf, of, af = padded.reshape(-1), out.reshape(-1), argmax.reshape(-1)
    taps, offsets = weight.reshape(o_count, -1), _tap_offsets(c, kh, kw, hpad, wh, phases)
    pool = (kh_pool, kw_pool, sh_pool, sw_pool, ph_pool, pw_pool)
    odd = plane if phases == 2 else 0  # two phases only for the 2x2 pool of stride 2
    for s in prange(n):
        _pad_sample(x, s, padded, ph, pw)
        zf = np.empty(phases * plane, dtype=out.dtype)
        base = np.uintp(s * phases * c * hpad * wh)
        for o in range(o_count):
            for p in range(phases):
                span = _phase_span(ho, wo, wh, phases, p)
                _convolve_plane(xf, base, offsets[p], taps[o], zf[p * plane :], span)
            target = np.uintp((s * o_count + o) * hp * wp)
            _pool_plane(zf, np.uintp(0), np.uintp(wh), odd, bias[o], ho, wo, pool, of, af, target, hp, wp, keep)


@njit(inline="always")
def _correlate_plane(g, xf, base, offsets, span, totals, zero):
    """totals[t] += sum_m g[m] * xf[base + offsets[t] + m] for m < span: the weight gradient's dot
    products of one output channel's dL/dz with every tap's shifted input. Four taps per pass over
    the plane, so that each g[m] loaded feeds four multiply-adds; each dot summed in x's dtype
    (``zero``), in vector lanes, then added to the float64 totals."""
    t = 0
    while t + 4 <= len(offsets):
        a0, a1, a2, a3 = base + offsets[t], base + offsets[t + 1], base + offsets[t + 2], base + offsets[t + 3]
        d0 = d1 = d2 = d3 = zero
        for m in range(span):
            v = g[m]
            d0 += v * xf[a0 + m]
            d1 += v * xf[a1 + m]
            d2 += v * xf[a2 + m]
            d3 += v * xf[a3 + m]
        totals[t] += d0
        totals[t + 1] += d1
        totals[t + 2] += d2
        totals[t + 3] += d3
        t += 4
    for left in range(t, len(offsets)):
        a, dot = base + offsets[left], zero
        for m in range(span):
            dot += g[m] * xf[a + m]
        totals[left] += dot


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _direct_weight_grad(padded, y, grad_output, argmax, ho, wo, grad_weight, grad_bias, zero):
    """grad_weight[o, c, i, j] = sum_n sum_{r,q} G[n, o, r, q] * x_padded[n, c, r + i, q + j] with
    G = dL/dz (through the pool and the ReLU) in the forward's phases, each tap one vectorised dot
    product over each phase's plane (``_correlate_plane``; reassociated: summed in any order);
    grad_bias[o] = sum of G. Parallel over channels."""
    n, phases, c, hpad, wh = padded.shape
    o_count, _, kh, kw = grad_weight.shape
    hp, wp = y.shape[2:]
    plane = ho * wh
    xf, yf, gof, af = padded.reshape(-1), y.reshape(-1), grad_output.reshape(-1), argmax.reshape(-1)
    offsets, gw = _tap_offsets(c, kh, kw, hpad, wh, phases), grad_weight.reshape(o_count, -1)
    for o in prange(o_count):
        g = np.empty(phases * plane, dtype=padded.dtype)
        totals = np.zeros(offsets.shape[1])  # float64 totals over the samples
        total = 0.0
        for s in range(n):
            source = np.uintp((s * o_count + o) * hp * wp)
            _unpool_plane(yf, gof, af, source, hp, wp, g, np.uintp(0), phases * plane)
            for k in range(source, source + np.uintp(hp * wp)):
                if yf[k] > 0:
                    total += gof[k]
            base = np.uintp(s * phases * c * hpad * wh)
            for p in range(phases):
                span = _phase_span(ho, wo, wh, phases, p)
                _correlate_plane(g[p * plane :], xf, base, offsets[p], span, totals, zero)
        for t in range(offsets.shape[1]):
            gw[o, t] = totals[t]
        grad_bias[o] = total


@njit(parallel=True, cache=True)
def _direct_input_grad(weight, y, grad_output, argmax, ho, wo, grad_padded):
    """grad_x_padded[n, c, r + i, q + j] += weight[o, c, i, j] * G[n, o, r, q] (zeroed first; the
    caller crops the padding and joins the phases), G = dL/dz in the forward's phases, each tap one
    multiply-add over each phase's plane. Parallel over samples."""
    n, phases, c, hpad, wh = grad_padded.shape
    o_count, _, kh, kw = weight.shape
    hp, wp = y.shape[2:]
    plane = ho * wh
    yf, gof, af, xf = y.reshape(-1), grad_output.reshape(-1), argmax.reshape(-1), grad_padded.reshape(-1)
    taps, offsets = weight.reshape(o_count, -1), _tap_offsets(c, kh, kw, hpad, wh, phases)
    for s in prange(n):
        grad_padded[s] = 0
        g = np.empty(phases * plane, dtype=grad_padded.dtype)
        base = np.uintp(s * phases * c * hpad * wh)
        for o in range(o_count):
            _unpool_plane(yf, gof, af, np.uintp((s * o_count + o) * hp * wp), hp, wp, g, np.uintp(0), phases * plane)
            for p in range(phases):
                span, first = _phase_span(ho, wo, wh, phases, p), np.uintp(p * plane)
                for t in range(offsets.shape[1]):
                    start, tap = base + offsets[p, t], taps[o, t]
                    for m in range(span):
                        xf[start + m] += tap * g[first + m]


def _pooled_shape(n, o, ho, wo, pool_kernel, pool_stride, pool_padding):
    return (
        n,
        o,
        conv_output_size(ho, pool_kernel[0], pool_stride[0], pool_padding[0]),
        conv_output_size(wo, pool_kernel[1], pool_stride[1], pool_padding[1]),
    )


def conv2d_relu_max_pool2d_forward(
    x, weight, bias, stride, padding, pool_kernel, pool_stride, pool_padding, keep_cache=True
):
    """The same y as ``functional.fused.conv2d_relu_max_pool2d_forward``: one pass from the
    convolution to the pooled output (direct for few input channels, else im2col and BLAS)."""
    n, c = x.shape[:2]
    o = weight.shape[0]
    kh, kw, sh, sw, ph, pw, ho, wo = _conv._sizes(x.shape, weight.shape, stride, padding)
    pool = (*pool_kernel, *pool_stride, *pool_padding)
    dtype = np.result_type(x, weight)
    x = np.ascontiguousarray(x, dtype=dtype)
    w = np.ascontiguousarray(weight, dtype=dtype)
    b = np.zeros(o, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    out = np.empty(_pooled_shape(n, o, ho, wo, pool_kernel, pool_stride, pool_padding), dtype=dtype)
    argmax = np.empty(out.shape if keep_cache else (1, 1, 1, 1), dtype=np.int32)
    if c <= DIRECT_MAX_CHANNELS and (sh, sw) == (1, 1):
        phases = 2 if pool == (2, 2, 2, 2, 0, 0) else 1  # even and odd columns apart, for that pool only
        wpad = x.shape[3] + 2 * pw
        padded = np.empty((n, phases, c, x.shape[2] + 2 * ph, -(-wpad // phases)), dtype=dtype)
        _direct(x, w, b, ho, wo, *pool, padded, out, argmax, keep_cache)
        # backward needs x (its padded copy: read without bounds checks), y and where each maximum was
        cache = ("direct", padded, w, bias is not None, x.shape, (ho, wo), out, argmax)
        return out, cache if keep_cache else None
    matrix = w.reshape(o, -1)
    conv = (kh, kw, sh, sw, ph, pw)
    block = columns_block(matrix.shape[1], ho * wo, x.itemsize)
    cols = np.empty(matrix.shape[1] * n * ho * wo if keep_cache else 0, dtype=dtype)  # kept for backward
    _columns_forward(x, matrix, b, conv, ho, wo, pool, block, cols, out, argmax, keep_cache)
    if not keep_cache:
        return out, None
    # backward needs cols and weight for the products, y and where each maximum was
    return out, ("columns", (cols, conv, block), w, bias is not None, x.shape, (ho, wo), out, argmax)


def conv2d_relu_max_pool2d_backward(grad_output, cache, needs_input_grad=ALL):
    """The same gradients as ``functional.fused.conv2d_relu_max_pool2d_backward``."""
    kind, saved, weight, has_bias, x_shape, (ho, wo), out, argmax = cache
    o = weight.shape[0]
    dtype = out.dtype
    grad_output = np.ascontiguousarray(grad_output, dtype=dtype)
    grad_bias = np.empty(o, dtype=dtype)
    grad_input = grad_weight = None
    if kind == "direct":
        padded = saved
        grad_weight = np.empty(weight.shape, dtype=dtype)
        _direct_weight_grad(padded, out, grad_output, argmax, ho, wo, grad_weight, grad_bias, dtype.type(0))
        if needs_input_grad[0]:
            grad_padded = np.empty(padded.shape, dtype=dtype)
            _direct_input_grad(weight, out, grad_output, argmax, ho, wo, grad_padded)
            n, phases, c, hpad, wh = padded.shape
            joined = np.moveaxis(grad_padded, 1, -1).reshape(n, c, hpad, wh * phases)  # column P*place + phase
            ph, pw = (hpad - x_shape[2]) // 2, (wo + weight.shape[3] - 1 - x_shape[3]) // 2
            grad_input = np.ascontiguousarray(joined[:, :, ph : ph + x_shape[2], pw : pw + x_shape[3]])
    else:
        cols, conv, block = saved
        n = x_shape[0]
        blocks = (n + block - 1) // block
        grad_weights = np.empty((blocks, o, weight[0].size), dtype=dtype)
        grad_biases = np.empty((blocks, o))  # float64, as each block sums its share
        grad_input = np.empty(x_shape if needs_input_grad[0] else (0, *x_shape[1:]), dtype=dtype)
        matrix = weight.reshape(o, -1)
        _columns_backward(
            out, grad_output, argmax, matrix, cols, conv, ho, wo, block, grad_weights, grad_biases, grad_input
        )
        grad_weight = grad_weights.sum(axis=0).reshape(weight.shape)
        grad_bias = grad_biases.sum(axis=0).astype(dtype)
        grad_input = grad_input if needs_input_grad[0] else None
    return (
        grad_input,
        grad_weight if needs_input_grad[1] else None,
        grad_bias if has_bias and needs_input_grad[2] else None,
    )
