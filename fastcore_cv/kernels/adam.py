"""One Adam / AdamW step in place, with torch.optim.Adam's semantics, for a whole model in one call.

Per element (g = gradient, p = parameter, m = exp_avg, v = exp_avg_sq, t = the parameter's
step count after this step), as torch's ``_single_tensor_adam``, in the arrays' dtype:

    g = -g if maximize else g
    p = p * (1 - lr * weight_decay)               (decoupled: AdamW)
    g = g + weight_decay * p                      (else, L2: Adam; only if weight_decay != 0)
    m = lerp(m, g, 1 - beta1)                     (= beta1 * m + (1 - beta1) * g)
    v = beta2 * v + (1 - beta2) * g * g
    vmax = max(vmax, v); v' = vmax if amsgrad else v
    p = p - (lr / (1 - beta1**t)) * m / (sqrt(v') / sqrt(1 - beta2**t) + eps)

Like ``sgd.sgd_update``, a flat buffer of many parameters is stepped in one call:
``segments`` gives each parameter's range, ``step`` its own t (torch keeps one per
parameter) and ``active`` whether it has a gradient this step. Reads p, g, m, v and writes
p, m, v: 28 bytes per float32 element (36 with amsgrad), so the loop is memory-bound.

Each operation is rounded as torch's fused CPU Adam rounds it (FMA where it uses one; the
scalars rounded to the dtype as it rounds them): on AVX2/AVX-512 the results were
bit-identical to ``torch.optim.Adam(fused=True)`` after 100 steps on every option, in
float32 and float64, except a tensor's last n mod 16 elements, which torch's scalar tail
rounds its own way. torch's default (for-loop) path differs by ~1 ulp a step: its sqrt is
not correctly rounded (~1 ulp off on 15% of float32 entries; NumPy's and this one's are).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from fastcore_cv.kernels import _checks
from fastcore_cv.kernels._jit import kernel
from fastcore_cv.kernels.sgd import CHUNK, PARALLEL_MIN, _fma
from fastcore_cv.threads import get_num_threads

# How weight decay enters (one mode per call).
_NO_WD, _L2, _DECOUPLED = 0, 1, 2


@kernel
def _update(p, g, m, v, vmax, scalars, mode, w1_small, neg_step, bc2):
    """The step on one contiguous run of one segment, each operation rounded as torch's CPU
    kernels round it (FMA where they use one). The branches are loop-invariant."""
    sign, wd, decay, w1, omw1, beta2, omb2, eps = scalars
    amsgrad = vmax.shape[0] != 0
    for i in range(p.shape[0]):
        gi = g[i] * sign  # sign is +-1: exact, as torch's -grad
        pi = p[i]
        if mode == _DECOUPLED:
            pi = pi * decay  # param.mul_(1 - lr * weight_decay)
        elif mode == _L2:
            gi = _fma(pi, wd, gi)  # grad.add(param, alpha=weight_decay)
        mi = m[i]
        # exp_avg.lerp_(grad, w1): torch's lerp is self + w * (end - self) for |w| < 0.5,
        # else end - (end - self) * (1 - w) (exact at both ends).
        diff = gi - mi
        mi = _fma(w1, diff, mi) if w1_small else _fma(-diff, omw1, gi)
        m[i] = mi
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        vi = _fma(omb2 * gi, gi, v[i] * beta2)
        v[i] = vi
        if amsgrad:
            old = vmax[i]
            if vi > old or vi != vi:  # torch.maximum: NaN wins
                old = vi
            vmax[i] = old
            vi = old
        denom = np.sqrt(vi) / bc2 + eps  # (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
        p[i] = pi + neg_step * mi / denom  # param.addcdiv_(exp_avg, denom, value=-step_size)


@kernel
def _chunk(lo, hi, p, g, m, v, vmax, segments, active, neg_steps, bc2s, scalars, mode, small):
    """Update elements [lo, hi), walking the segments that overlap them."""
    s = np.searchsorted(segments, lo, side="right") - 1  # segments[s] <= lo < segments[s+1]
    pos = lo
    amsgrad = vmax.shape[0] != 0
    while pos < hi:
        end = min(segments[s + 1], hi)
        if end > pos and active[s]:
            # Views indexed from 0: a loop over p[pos + i] keeps wraparound checks, no SIMD.
            vm = vmax[pos:end] if amsgrad else vmax
            _update(
                p[pos:end], g[pos:end], m[pos:end], v[pos:end], vm, scalars, mode, small,
                neg_steps[s], bc2s[s],
            )  # fmt: skip
        pos = end
        s += 1


# Two functions, not one compiled twice: Numba's cache key ignores parallel=True (sgd.py).
@kernel(parallel=True)
def _steps_parallel(p, g, m, v, vmax, segments, active, neg_steps, bc2s, scalars, mode, small):
    n = p.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        _chunk(lo, hi, p, g, m, v, vmax, segments, active, neg_steps, bc2s, scalars, mode, small)


@kernel
def _steps_serial(p, g, m, v, vmax, segments, active, neg_steps, bc2s, scalars, mode, small):
    n = p.shape[0]
    _chunk(0, n, p, g, m, v, vmax, segments, active, neg_steps, bc2s, scalars, mode, small)


def adam_update(
    params: np.ndarray,
    grads: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None = None,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    maximize: bool = False,
    step: int | np.ndarray = 1,
    segments: np.ndarray | None = None,
    active: np.ndarray | None = None,
) -> None:
    """Apply one torch.optim.Adam step (AdamW with ``decoupled_weight_decay=True``) in place.

    ``params``, ``grads``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``, required
    with ``amsgrad``): same shape (any rank) and dtype (float32 or float64). All but
    ``grads`` are written in place, so they must be C-contiguous, writable and not overlap
    one another (ValueError); ``grads`` may overlap them (it is then copied first). The
    moment buffers start as zeros, as torch's state does.

    ``step`` is the step count t >= 1 after this step (the bias corrections' exponent).
    Without ``segments`` the arrays are one parameter and ``step`` an int. With ``segments``
    (int offsets 0 = o_0 <= ... <= o_k = params.size over the flattened arrays) they hold k
    parameters; ``step`` is then an int or k ints, ``active`` k bools (False: no gradient
    this step, the parameter and its state are left untouched; default: all active).
    """
    lr = _checks.check_number(lr, "lr", low=0.0)
    beta1 = _check_beta(beta1, "beta1")
    beta2 = _check_beta(beta2, "beta2")
    eps = _checks.check_number(eps, "eps", low=0.0)
    weight_decay = _checks.check_number(weight_decay, "weight_decay", low=0.0)
    decoupled = _checks.check_bool(decoupled_weight_decay, "decoupled_weight_decay")
    amsgrad = _checks.check_bool(amsgrad, "amsgrad")
    maximize = _checks.check_bool(maximize, "maximize")

    params = _in_place(params, "params", None)
    grads = _checks.check_float_array(grads, "grads", ndim=params.ndim, allow_empty=True)
    grads = grads.reshape(grads.shape if params.ndim else ())  # ascontiguousarray makes 0-d 1-d
    _checks.check_same_dtype(params=params, grads=grads)
    for axis, (got, want) in enumerate(zip(grads.shape, params.shape, strict=True)):
        _checks.check_dim("grads", axis, got, want, "same shape as params")
    m = _in_place(exp_avg, "exp_avg", params)
    v = _in_place(exp_avg_sq, "exp_avg_sq", params)
    written = [("params", params), ("exp_avg", m), ("exp_avg_sq", v)]
    if amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError("max_exp_avg_sq: required when amsgrad=True")
        written.append(("max_exp_avg_sq", _in_place(max_exp_avg_sq, "max_exp_avg_sq", params)))
    elif max_exp_avg_sq is not None:
        raise ValueError("max_exp_avg_sq: only used with amsgrad=True")
    for i, (name, x) in enumerate(written[1:], start=1):
        _checks.check_no_overlap(name, x, **dict(written[:i]))
    if _checks.overlaps(grads, *(x for _, x in written)):
        # Elements are read and written in one pass (in parallel chunks): grads overlapping
        # what is written would be read after their update. Copy them first.
        grads = grads.copy()

    n = params.size
    if segments is None:
        if active is not None:
            raise ValueError("active: only meaningful with segments")
        offsets = np.array((0, n), dtype=np.int64)
        on = _ONE_TRUE
        steps = _check_step(step, "step")
    else:
        offsets = _checks.check_offsets(segments, "segments", n)
        k = offsets.shape[0] - 1
        on = _checks.check_bool_vector(True if active is None else active, "active", k)
        steps = _check_steps(step, on)
    if n == 0:
        return

    # The bias corrections in double, exactly as torch computes them in Python (libm's pow,
    # not NumPy's), then rounded to the arrays' dtype as torch's kernels round them: once
    # when every segment has the same count (the usual case), else per segment. (An
    # inactive segment's count may still be 0: it is not stepped, its scalars are unused.)
    t = params.dtype.type
    k = on.shape[0]
    if isinstance(steps, int):
        neg_steps = np.full(k, -(lr / (1 - beta1**steps)), dtype=t)
        bc2s = np.full(k, (1 - beta2**steps) ** 0.5, dtype=t)
    else:
        neg_steps = np.array([-(lr / (1 - beta1**s)) if s else 0.0 for s in steps], dtype=t)
        bc2s = np.array([(1 - beta2**s) ** 0.5 if s else 1.0 for s in steps], dtype=t)
    w1 = 1 - beta1
    decay = 1 - lr * weight_decay
    # (1 - weight in lerp is computed in the dtype, the others in double as torch does)
    scalars = (t(-1 if maximize else 1), t(weight_decay), t(decay), t(w1), t(1) - t(w1))
    scalars += (t(beta2), t(1 - beta2), t(eps))
    mode = _NO_WD if weight_decay == 0 else _DECOUPLED if decoupled else _L2
    vmax = written[3][1].reshape(-1) if amsgrad else np.empty(0, dtype=params.dtype)
    kernel_args = (
        params.reshape(-1),  # views: the written arrays are C-contiguous
        grads.reshape(-1),
        m.reshape(-1),
        v.reshape(-1),
        vmax,
        offsets,
        on,
        neg_steps,
        bc2s,
        scalars,
        mode,
        abs(w1) < 0.5,
    )
    # The policy's thread count: numba.get_num_threads() costs 0.75 us per call.
    if n < PARALLEL_MIN or get_num_threads() == 1:
        _steps_serial(*kernel_args)
    else:
        _steps_parallel(*kernel_args)


_ONE_TRUE = np.ones(1, dtype=np.bool_)


def _check_beta(beta: object, name: str) -> float:
    beta = _checks.check_number(beta, name, low=0.0)
    if beta >= 1.0:
        raise ValueError(f"{name}: must be < 1, got {beta}")
    return beta


def _check_step(step: object, name: str, low: int = 1) -> int:
    """A step count t >= 1 (an int, or a float holding one, as torch's step tensors do)."""
    if isinstance(step, (float, np.floating)) and math.isfinite(step) and step == int(step):
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"{name}: expected an int step count, got {type(step).__name__}")
    if step < low:
        raise ValueError(f"{name}: must be >= {low} (the count after this step), got {step}")
    return int(step)


def _check_steps(step: object, active: np.ndarray) -> int | list[int]:
    """One step count per segment: an int for all, or k of them (>= 1 where active, an
    array of ints or of integral floats as torch's step tensors hold). Returns the int
    when all active counts are equal (checked in NumPy: a loop took 10 us for 10)."""
    if not isinstance(step, np.ndarray):
        return _check_step(step, "step")
    if step.ndim != 1:
        raise ValueError(f"step: expected a rank-1 array, got rank {step.ndim}")
    _checks.check_dim("step", 0, step.shape[0], active.shape[0], "one step count per segment")
    if step.dtype.kind not in "iuf":
        raise TypeError(f"step: expected int step counts, got dtype {step.dtype}")
    first, last = step.min(), step.max()
    if first == last and first >= 1 and first == int(first):  # the usual case, in 2 us
        return int(first)
    low = active.astype(np.int64)  # 1 where active, 0 elsewhere
    bad = ~((step >= low) & (step == np.floor(step)))  # NaN fails both
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _check_step(step[i].item(), f"step[{i}]", low=int(low[i]))  # raises, naming it
        raise TypeError(f"step[{i}]: expected an int step count, got {step[i]}")
    on = step[active]
    if on.shape[0] and on.min() == on.max():
        return int(on[0])
    return [int(s) for s in step.tolist()]


def _in_place(x: object, name: str, like: np.ndarray | None) -> np.ndarray:
    """An array the step writes into: float, C-contiguous, writable (and shaped like ``like``)."""
    if like is None:
        _checks.check_float_array(x, name, ndim=range(33), allow_empty=True)
        like = x  # type: ignore[assignment]
    return _checks.check_out(x, name, like.shape, like.dtype)
