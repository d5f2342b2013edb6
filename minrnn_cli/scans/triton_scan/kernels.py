"""Triton kernels: the linear recurrence h_t = a_t h_{t-1} + b_t, forward and backward, plain or fused.

One program owns one batch row and a block of BLOCK_D channels and walks time in chunks of CHUNK_T steps:
it loads a [BLOCK_D, CHUNK_T] tile of every input at once (so a whole chunk of loads is in flight, not one
step's), scans the chunk with `tl.associative_scan` along time, stores it, and carries the last state into
the next chunk. Every input is read once and h written once; accumulation is in ACC (float32, or float64
for float64 inputs) whatever the storage dtype.

CELL selects what the inputs x, y, w are (all (B, T, D) with one set of strides):
    PLAIN    x = a, y = b
    MINGRU   x = gate logit k, y = candidate pre-activation:  z = sigmoid(k), a = 1 - z, b = z * cand(y)
    MINLSTM  x = forget logit, w = input logit, y = candidate:
             NORMALIZE: z = i / (f + i) = sigmoid(logsigmoid(w) - logsigmoid(x)), a = 1 - z, b = z * cand(y)
             otherwise: a = sigmoid(x), z = sigmoid(w), b = z * cand(y)
where cand(y) = g(y) (x + 0.5 for x >= 0, sigmoid(x) below) when LOG_SPACE, else y. The backward kernel
recomputes these activations from the pre-activations instead of storing them.

Backward, walking time in reverse (row 0 of a tile is the chunk's last step):
    G_t = dL/dh_t + a_{t+1} G_{t+1},  dL/db_t = G_t,  dL/da_t = G_t h_{t-1},  dL/dh0 = a_0 G_0.
"""

import triton
import triton.language as tl

PLAIN, MINGRU, MINLSTM = 0, 1, 2  # the CELL codes the host passes
# the same inside kernels, which may read only constexpr globals
_PLAIN, _MINLSTM = tl.constexpr(PLAIN), tl.constexpr(MINLSTM)


@triton.jit
def _combine(a_first, b_first, a_second, b_second):
    """Compose two steps of h -> a h + b, `first` applied first."""
    return a_first * a_second, a_second * b_first + b_second


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _log_sigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _gate_logit(x, w, CELL: tl.constexpr):
    """The logit s of the input gate z = sigmoid(s) for the cells where a = 1 - z."""
    return _log_sigmoid(w) - _log_sigmoid(x) if CELL == _MINLSTM else x


@triton.jit
def _gates(x, w, CELL: tl.constexpr, NORMALIZE: tl.constexpr):
    """(a, z): the decay and the input gate from the gate pre-activations (not used for PLAIN)."""
    if CELL == _MINLSTM and not NORMALIZE:
        a = _sigmoid(x)
        z = _sigmoid(w)
    else:
        s = _gate_logit(x, w, CELL)
        a = _sigmoid(-s)
        z = _sigmoid(s)
    return a, z


@triton.jit
def _candidate(y, LOG_SPACE: tl.constexpr):
    """(cand(y), cand'(y))."""
    if LOG_SPACE:
        sig = _sigmoid(y)
        value = tl.where(y >= 0, y + 0.5, sig)
        slope = tl.where(y >= 0, 1.0, sig * (1.0 - sig))
    else:
        value = y
        slope = tl.full(y.shape, 1.0, y.dtype)
    return value, slope


@triton.jit
def _decay(x, w, CELL: tl.constexpr, NORMALIZE: tl.constexpr):
    if CELL == _PLAIN:
        a = x
    else:
        a, _ = _gates(x, w, CELL, NORMALIZE)
    return a


@triton.jit
def _coefficients(x, y, w, CELL: tl.constexpr, LOG_SPACE: tl.constexpr, NORMALIZE: tl.constexpr):
    """(a, b) of the recurrence at one tile of steps."""
    if CELL == _PLAIN:
        a = x
        b = y
    else:
        a, z = _gates(x, w, CELL, NORMALIZE)
        candidate, _ = _candidate(y, LOG_SPACE)
        b = z * candidate
    return a, b


@triton.jit
def _load(ptr, offsets, mask, ACC: tl.constexpr):
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(ACC)


@triton.jit
def _row(batch, channels, stride_b, stride_d):
    """Offsets of (batch, channels) in a tensor with those strides: step 0 of a sequence, or a state."""
    return batch * stride_b + channels * stride_d


@triton.jit
def _prologue(
    h0_ptr, n_blocks_d, D, s_in_b, s_in_d, s_h0_b, s_h0_d, s_h_b, s_h_d,
    HAS_H0: tl.constexpr, ACC: tl.constexpr, CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Where both kernels start: this program's batch row (int64), its BLOCK_D channels and which of them
    lie inside D, the CHUNK_T step indices of a tile, the offsets of step 0 in the inputs and in h, and h0
    at these channels (zeros without one)."""
    pid = tl.program_id(0)
    batch = (pid // n_blocks_d).to(tl.int64)
    channels = (pid % n_blocks_d) * BLOCK_D + tl.arange(0, BLOCK_D)
    channel_ok = channels < D
    in_row = _row(batch, channels, s_in_b, s_in_d)
    h_row = _row(batch, channels, s_h_b, s_h_d)
    if HAS_H0:
        h0 = _load(h0_ptr, _row(batch, channels, s_h0_b, s_h0_d), channel_ok, ACC)
    else:
        h0 = tl.zeros([BLOCK_D], dtype=ACC)
    return batch, channels, channel_ok, tl.arange(0, CHUNK_T), in_row, h_row, h0


@triton.jit
def _pick_last_step(tile, steps, CHUNK_T: tl.constexpr):
    """Column CHUNK_T - 1 of a [BLOCK_D, CHUNK_T] tile as a [BLOCK_D] vector."""
    return tl.sum(tl.where(steps[None, :] == CHUNK_T - 1, tile, 0.0), axis=1)


@triton.jit
def scan_forward_kernel(
    x_ptr, y_ptr, w_ptr, h0_ptr, h_ptr,
    T, D, n_blocks_d,
    s_in_b, s_in_t, s_in_d, s_h0_b, s_h0_d, s_h_b, s_h_t, s_h_d,
    CELL: tl.constexpr, LOG_SPACE: tl.constexpr, NORMALIZE: tl.constexpr, HAS_H0: tl.constexpr,
    ACC: tl.constexpr, CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    _batch, _channels, channel_ok, steps, in_row, h_row, carry = _prologue(
        h0_ptr, n_blocks_d, D, s_in_b, s_in_d, s_h0_b, s_h0_d, s_h_b, s_h_d, HAS_H0, ACC, CHUNK_T, BLOCK_D
    )
    for start in range(0, T, CHUNK_T):
        t = (start + steps).to(tl.int64)
        mask = channel_ok[:, None] & (t < T)[None, :]
        offsets = in_row[:, None] + t[None, :] * s_in_t
        x = _load(x_ptr, offsets, mask, ACC)
        y = _load(y_ptr, offsets, mask, ACC)
        w = _load(w_ptr, offsets, mask, ACC) if CELL == _MINLSTM else x
        a, b = _coefficients(x, y, w, CELL, LOG_SPACE, NORMALIZE)
        b = tl.where(steps[None, :] == 0, b + a * carry[:, None], b)
        _, h = tl.associative_scan((a, b), axis=1, combine_fn=_combine)
        tl.store(h_ptr + h_row[:, None] + t[None, :] * s_h_t, h.to(h_ptr.dtype.element_ty), mask=mask)
        carry = _pick_last_step(h, steps, CHUNK_T)


@triton.jit
def scan_backward_kernel(
    x_ptr, y_ptr, w_ptr, h0_ptr, h_ptr, grad_h_ptr, grad_x_ptr, grad_y_ptr, grad_w_ptr, grad_h0_ptr,
    T, D, n_blocks_d,
    s_in_b, s_in_t, s_in_d, s_h0_b, s_h0_d, s_h_b, s_h_t, s_h_d, s_gh_b, s_gh_t, s_gh_d,
    s_out_b, s_out_t, s_out_d,
    CELL: tl.constexpr, LOG_SPACE: tl.constexpr, NORMALIZE: tl.constexpr, HAS_H0: tl.constexpr,
    ACC: tl.constexpr, CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch, channels, channel_ok, steps, in_row, h_row, h0 = _prologue(
        h0_ptr, n_blocks_d, D, s_in_b, s_in_d, s_h0_b, s_h0_d, s_h_b, s_h_d, HAS_H0, ACC, CHUNK_T, BLOCK_D
    )
    gh_row = _row(batch, channels, s_gh_b, s_gh_d)
    out_row = _row(batch, channels, s_out_b, s_out_d)
    carry = tl.zeros([BLOCK_D], dtype=ACC)  # G at the step after the chunk
    n_chunks = tl.cdiv(T, CHUNK_T)
    for chunk in range(n_chunks):
        t = ((n_chunks - 1 - chunk) * CHUNK_T + CHUNK_T - 1 - steps).to(tl.int64)  # reversed time
        mask = channel_ok[:, None] & (t < T)[None, :]
        next_mask = channel_ok[:, None] & (t + 1 < T)[None, :]
        prev_mask = mask & (t >= 1)[None, :]
        offsets = in_row[:, None] + t[None, :] * s_in_t
        x_next = _load(x_ptr, offsets + s_in_t, next_mask, ACC)
        w_next = _load(w_ptr, offsets + s_in_t, next_mask, ACC) if CELL == _MINLSTM else x_next
        a_next = tl.where(next_mask, _decay(x_next, w_next, CELL, NORMALIZE), 0.0)
        g = _load(grad_h_ptr, gh_row[:, None] + t[None, :] * s_gh_t, mask, ACC)
        g = tl.where(steps[None, :] == 0, g + a_next * carry[:, None], g)
        _, g = tl.associative_scan((a_next, g), axis=1, combine_fn=_combine)
        carry = _pick_last_step(g, steps, CHUNK_T)

        h_prev = _load(h_ptr, h_row[:, None] + (t[None, :] - 1) * s_h_t, prev_mask, ACC)
        h_prev = tl.where((t == 0)[None, :], h0[:, None], h_prev)
        x = _load(x_ptr, offsets, mask, ACC)
        out = out_row[:, None] + t[None, :] * s_out_t
        if CELL == _PLAIN:
            grad_x = g * h_prev
            grad_y = g
        else:
            y = _load(y_ptr, offsets, mask, ACC)
            w = _load(w_ptr, offsets, mask, ACC) if CELL == _MINLSTM else x
            a, z = _gates(x, w, CELL, NORMALIZE)
            candidate, slope = _candidate(y, LOG_SPACE)
            grad_y = g * z * slope
            if CELL == _MINLSTM and not NORMALIZE:
                grad_x = g * h_prev * a * (1.0 - a)
                grad_w = g * candidate * z * (1.0 - z)
            else:
                grad_logit = g * z * a * (candidate - h_prev)
                if CELL == _MINLSTM:
                    grad_x = -grad_logit * _sigmoid(-x)
                    grad_w = grad_logit * _sigmoid(-w)
                else:
                    grad_x = grad_logit
            if CELL == _MINLSTM:
                tl.store(grad_w_ptr + out, grad_w.to(grad_w_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_x_ptr + out, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_y_ptr + out, grad_y.to(grad_y_ptr.dtype.element_ty), mask=mask)

    first = in_row  # step 0
    x0 = _load(x_ptr, first, channel_ok, ACC)
    w0 = _load(w_ptr, first, channel_ok, ACC) if CELL == _MINLSTM else x0
    grad_h0 = _decay(x0, w0, CELL, NORMALIZE) * carry
    tl.store(grad_h0_ptr + batch * D + channels, grad_h0.to(grad_h0_ptr.dtype.element_ty), mask=channel_ok)
