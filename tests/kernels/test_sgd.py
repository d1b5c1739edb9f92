"""sgd_update vs torch.optim.SGD (single-tensor path): all options, segments, errors; FlatBuffer."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcore_cv
from fastcore_cv.kernels.flat import FlatBuffer
from fastcore_cv.kernels.sgd import CHUNK, PARALLEL_MIN, sgd_update

DTYPES = [np.float32, np.float64]

# Tolerance: torch computes add(x, y, alpha) as fma(y, alpha, x) on CPUs with FMA
# (AVX2/AVX-512) and so do we, so results are bit-identical: after 100 steps on every option
# the max abs difference was 0.0 in float32 and float64. Elsewhere (no FMA in torch's
# kernels) allow a few float32 roundings per step, amplified ~10x by momentum 0.9.
EXACT = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
RTOL = {np.float32: 0.0, np.float64: 0.0} if EXACT else {np.float32: 1e-4, np.float64: 1e-12}


def assert_same(ours: np.ndarray, theirs: torch.Tensor) -> None:
    theirs = theirs.detach().numpy()
    rtol = RTOL[ours.dtype.type]
    if rtol == 0.0:
        np.testing.assert_array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol)


def options():
    """Every combination torch accepts: nesterov needs momentum and zero dampening."""
    for mu, damp, wd, nesterov, maximize in itertools.product(
        (0.0, 0.9), (0.0, 0.5), (0.0, 1e-2), (False, True), (False, True)
    ):
        if nesterov and (mu == 0 or damp != 0):
            continue
        yield dict(
            momentum=mu, dampening=damp, weight_decay=wd, nesterov=nesterov, maximize=maximize
        )


def run_against_torch(shape, dtype, hyper, steps, seed):
    rng = np.random.default_rng(seed)
    p = np.asarray(rng.standard_normal(shape), dtype)  # an array even for shape ()
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    opt = torch.optim.SGD([tp], **hyper, foreach=False)
    buf = np.full(shape, np.nan, dtype)  # garbage: the first step must not read it
    for step in range(steps):
        g = np.asarray(rng.standard_normal(shape), dtype)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        sgd_update(p, g, buf if hyper["momentum"] else None, **hyper, first_step=step == 0)
    assert_same(p, tp)
    if hyper["momentum"]:
        assert_same(buf, opt.state[tp]["momentum_buffer"])


@pytest.fixture
def threads():
    """Let a test change the thread count; restore it afterwards."""
    before = fastcore_cv.get_num_threads()
    yield fastcore_cv.set_num_threads
    fastcore_cv.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hyper", list(options()), ids=lambda h: "-".join(f"{v}" for v in h.values())
)
def test_100_steps_match_torch_on_every_option(hyper, dtype):
    run_against_torch((17, 59), dtype, dict(lr=0.1, **hyper), steps=100, seed=0)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(), (1,), (2,), (13,), (31, 7), (3, 5, 7), (CHUNK + 5,)]),
    dtype=st.sampled_from(DTYPES),
    lr=st.floats(0.0, 1.0),
    momentum=st.sampled_from([0.0, 0.5, 0.99]),
    dampening=st.floats(0.0, 1.0),
    weight_decay=st.floats(0.0, 0.1),
    maximize=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_hyperparameters_match_torch(
    shape, dtype, lr, momentum, dampening, weight_decay, maximize, seed
):
    hyper = dict(
        lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, maximize=maximize
    )
    run_against_torch(shape, dtype, hyper, steps=4, seed=seed)


# Parameter shapes of a flat model: a scalar, an empty one, odd sizes, and one long enough to
# cross chunk boundaries and take the parallel path (the total exceeds PARALLEL_MIN).
SHAPES = [(3, 4), (), (0,), (CHUNK + 7,), (5,), (PARALLEL_MIN,), (1, 1, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hyper",
    [
        dict(momentum=0.9, weight_decay=1e-2),
        dict(momentum=0.9, nesterov=True, maximize=True),
        dict(momentum=0.5, dampening=0.3, weight_decay=1e-3),
        dict(momentum=0.0, weight_decay=1e-2),
    ],
    ids=["momentum-wd", "nesterov-maximize", "dampening", "plain"],
)
def test_segments_with_missing_grads_match_torch(hyper, dtype):
    """torch skips parameters whose grad is None and starts a buffer on a parameter's first
    step with a grad; active/first_step reproduce that in one call over flat buffers."""
    rng = np.random.default_rng(1)
    params = FlatBuffer(SHAPES, dtype)
    params.data[:] = rng.standard_normal(params.size)
    grads, momentum = params.like(), params.like()
    momentum.data[:] = np.nan  # never read before a segment's first step
    tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in params]
    opt = torch.optim.SGD(tparams, lr=0.05, **hyper, foreach=False)
    seen = np.zeros(len(SHAPES), dtype=bool)
    for step in range(12):
        active = rng.random(len(SHAPES)) < 0.6
        active[1] = step % 3 != 0  # the scalar skips every third step
        grads.data[:] = np.nan  # inactive segments' grads must not be read
        for i, (g, tp) in enumerate(zip(grads, tparams, strict=True)):
            if active[i]:
                g[...] = rng.standard_normal(g.shape)
                tp.grad = torch.from_numpy(g.copy())
            else:
                tp.grad = None
        opt.step()
        sgd_update(
            params.data,
            grads.data,
            momentum.data,
            lr=0.05,
            **hyper,
            segments=params.offsets,
            active=active,
            first_step=active & ~seen,
        )
        seen |= active
        for i, (v, tp) in enumerate(zip(params, tparams, strict=True)):
            assert_same(v, tp)
            if hyper["momentum"] and seen[i]:
                assert_same(momentum[i], opt.state[tp]["momentum_buffer"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_result_on_one_and_two_threads(dtype, threads):
    rng = np.random.default_rng(2)
    n = 3 * PARALLEL_MIN + 5
    p0, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    results = []
    for count in (1, 2):
        threads(count)
        p, b = p0.copy(), np.zeros(n, dtype)
        for step in range(3):
            sgd_update(p, g, b, lr=0.1, momentum=0.9, weight_decay=1e-3, first_step=step == 0)
        results.append((p, b))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_strided_grads_are_copied_not_misread():
    rng = np.random.default_rng(3)
    p1 = rng.standard_normal((6, 5)).astype(np.float32)
    p2 = p1.copy()
    wide = rng.standard_normal((6, 10)).astype(np.float32)
    sgd_update(p1, wide[:, ::2], lr=0.1, weight_decay=1e-2)
    sgd_update(p2, np.ascontiguousarray(wide[:, ::2]), lr=0.1, weight_decay=1e-2)
    np.testing.assert_array_equal(p1, p2)


def test_inactive_segments_and_empty_params_are_left_alone():
    p = np.arange(6, dtype=np.float64)
    sgd_update(
        p,
        np.ones(6),
        np.zeros(6),
        lr=1.0,
        momentum=0.9,
        segments=np.array([0, 2, 6]),
        active=np.array([False, True]),
    )
    np.testing.assert_array_equal(p, [0, 1, 1, 2, 3, 4])
    empty = np.zeros(0, np.float32)
    sgd_update(empty, empty.copy(), np.zeros(0, np.float32), lr=0.1, momentum=0.9)


def test_nan_in_grads_propagates_like_torch():
    p = np.ones(4, np.float32)
    g = np.array([np.nan, 1, np.inf, 0], np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tp.grad = torch.from_numpy(g.copy())
    torch.optim.SGD([tp], lr=0.1, momentum=0.9, foreach=False).step()
    sgd_update(p, g, np.empty(4, np.float32), lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(p, tp.detach().numpy())  # nan == nan in this assert


F32 = np.ones(4, np.float32)


def call(params=None, grads=None, buf=None, **kw):
    kw.setdefault("lr", 0.1)
    kw.setdefault("momentum", 0.9)
    params = F32.copy() if params is None else params
    grads = F32.copy() if grads is None else grads
    buf = F32.copy() if buf is None and kw["momentum"] else buf
    sgd_update(params, grads, buf, **kw)


def read_only(x):
    x = x.copy()
    x.flags.writeable = False
    return x


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(params=[1.0, 2.0]), TypeError, "params: expected a numpy.ndarray"),
        (dict(params=np.ones(4, np.int32)), TypeError, "params: expected dtype"),
        (dict(params=np.ones(8, np.float32)[::2]), ValueError, "params: must be C-contiguous"),
        (dict(params=read_only(F32)), ValueError, "params: array is read-only"),
        (dict(grads=np.ones(5, np.float32)), ValueError, "grads: axis 0"),
        (dict(grads=np.ones((4, 1), np.float32)), ValueError, "grads: expected a rank-1"),
        (dict(grads=np.ones(4)), TypeError, "params=float32, grads=float64"),
        (dict(grads="g"), TypeError, "grads: expected a numpy.ndarray"),
        (dict(buf=np.ones(3, np.float32)), ValueError, "momentum_buffer: expected shape"),
        (dict(buf=np.ones(4)), TypeError, "momentum_buffer: expected dtype"),
        (dict(buf=np.ones(8, np.float32)[::2]), ValueError, "momentum_buffer: must be C-contig"),
        (dict(buf=read_only(F32)), ValueError, "momentum_buffer: array is read-only"),
        (dict(lr=-0.1), ValueError, "lr: must be >= 0"),
        (dict(lr=float("nan")), ValueError, "lr: expected a finite"),
        (dict(lr="0.1"), TypeError, "lr: expected a number"),
        (dict(momentum=-0.5), ValueError, "momentum: must be >= 0"),
        (dict(weight_decay=-1e-4), ValueError, "weight_decay: must be >= 0"),
        (dict(dampening=None), TypeError, "dampening: expected a number"),
        (dict(nesterov=True, momentum=0.0), ValueError, "nesterov: Nesterov momentum requires"),
        (dict(nesterov=True, dampening=0.1), ValueError, "nesterov: Nesterov momentum requires"),
        (dict(nesterov="yes"), TypeError, "nesterov: expected a bool, got str"),
        (dict(nesterov=1), TypeError, "nesterov: expected a bool, got int"),
        (dict(maximize=None), TypeError, "maximize: expected a bool, got NoneType"),
        (dict(maximize=1.0), TypeError, "maximize: expected a bool, got float"),
        (dict(first_step="yes"), TypeError, "first_step: expected a bool, got str"),
        (dict(first_step=0), TypeError, "first_step: expected a bool, got int"),
        (dict(active=np.ones(1, bool)), ValueError, "active: only meaningful with segments"),
        (dict(segments=[0, 4]), TypeError, "segments: expected a numpy.ndarray"),
        (dict(segments=np.array([0.0, 4.0])), TypeError, "segments: expected integer"),
        (dict(segments=np.array([[0, 4]])), ValueError, "segments: expected a rank-1"),
        (dict(segments=np.array([4])), ValueError, "segments: expected a rank-1"),
        (dict(segments=np.array([1, 4])), ValueError, "segments: must start at 0 and end at 4"),
        (dict(segments=np.array([0, 5])), ValueError, "segments: must start at 0 and end at 4"),
        (dict(segments=np.array([0, 3, 2, 4])), ValueError, "segments: offsets must be non-dec"),
        (
            dict(segments=np.array([0, 2, 4]), first_step=np.ones(3, bool)),
            ValueError,
            "first_step: axis 0 has length 3",
        ),
        (
            dict(segments=np.array([0, 2, 4]), active=np.ones(2, np.int8)),
            TypeError,
            "active: expected dtype bool",
        ),
        (
            dict(segments=np.array([0, 2, 4]), active=[True, False]),
            TypeError,
            "active: expected a bool or numpy.ndarray",
        ),
    ],
)
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        call(**kwargs)


def test_momentum_needs_a_separate_buffer():
    with pytest.raises(ValueError, match="momentum_buffer: required when momentum > 0"):
        sgd_update(F32.copy(), F32.copy(), None, lr=0.1, momentum=0.9)
    p = F32.copy()
    with pytest.raises(ValueError, match="momentum_buffer: shares memory with params"):
        sgd_update(p, F32.copy(), p, lr=0.1, momentum=0.9)


def test_momentum_buffer_partly_overlapping_params_is_refused():
    buf = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="momentum_buffer: shares memory with params"):
        sgd_update(buf[:8], np.ones(8, np.float32), buf[4:], lr=0.1, momentum=0.9)


def reference_step(p, g, b, hyper, first_step):
    """One step of the module docstring's formula in float64: (params, momentum buffer)."""
    lr, mu, damp, wd = (hyper[k] for k in ("lr", "momentum", "dampening", "weight_decay"))
    p, g, b = (np.asarray(v, np.float64) for v in (p, g, b))
    d = -g if hyper["maximize"] else g
    d = d + wd * p
    if mu:
        b = d if first_step else mu * b + (1 - damp) * d
        d = d + mu * b if hyper["nesterov"] else b
    return p - lr * d, b


def step_tolerance(p, g, b, hyper, first_step):
    """At most ~6 roundings per element, each of a value no larger than the same formula
    gives on |p|, |g|, |b|: 8 eps times those magnitudes (params, momentum buffer)."""
    eps, mu = np.finfo(p.dtype).eps, hyper["momentum"]
    p, g, b = (np.abs(v.astype(np.float64)) for v in (p, g, b))
    d = g + hyper["weight_decay"] * p
    size_b = d if first_step or not mu else mu * b + abs(1 - hyper["dampening"]) * d
    step = (d + mu * size_b if hyper["nesterov"] else size_b) if mu else d
    return 8 * eps * (p + hyper["lr"] * step), 8 * eps * size_b


@settings(max_examples=60, deadline=None)
@given(
    n=st.sampled_from([1, 7, 100, CHUNK + 5, PARALLEL_MIN + 100]),
    dtype=st.sampled_from(DTYPES),
    hyper=st.sampled_from(list(options())),
    first_step=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_grads_overlapping_params_or_buffer_are_read_before_the_update(
    n, dtype, hyper, first_step, seed, data
):
    """params = buf[:n], momentum = buf[2n:], grads = buf[o:o + n] anywhere in between: equal
    to params (o = 0) or the buffer (o = 2n), or partly over one or both. The step is that of
    the grads' values before the call (it was off by ~1e-2 when read after their update)."""
    hyper = dict(hyper, lr=0.1)
    rng = np.random.default_rng(seed)
    buf = rng.standard_normal(3 * n).astype(dtype)
    offset = data.draw(st.one_of(st.sampled_from([0, n // 2, n, 2 * n]), st.integers(0, 2 * n)))
    params, momentum, grads = buf[:n], buf[2 * n :], buf[offset : offset + n]
    p0, g0, b0 = params.copy(), grads.copy(), momentum.copy()
    buffer = momentum if hyper["momentum"] else None
    sgd_update(params, grads, buffer, **hyper, first_step=first_step)

    want_p, want_b = reference_step(p0, g0, b0, hyper, first_step)
    tol_p, tol_b = step_tolerance(p0, g0, b0, hyper, first_step)
    assert np.all(np.abs(params - want_p) <= tol_p)
    # the same step on separate copies: bit for bit the same result
    p1, b1 = p0.copy(), b0.copy()
    sgd_update(p1, g0, b1 if hyper["momentum"] else None, **hyper, first_step=first_step)
    np.testing.assert_array_equal(params, p1)
    if hyper["momentum"]:
        assert np.all(np.abs(momentum - want_b) <= tol_b)
        np.testing.assert_array_equal(momentum, b1)


def test_flat_buffer_layout_and_views():
    fb = FlatBuffer([(2, 3), (4,), (), (0, 5)], np.float64)
    np.testing.assert_array_equal(fb.offsets, [0, 6, 10, 11, 11])
    assert fb.size == 11 and len(fb) == 4 and fb.dtype == np.float64
    assert [v.shape for v in fb] == [(2, 3), (4,), (), (0, 5)]
    fb[0][1, 2] = 7.0
    fb[2][...] = 3.0
    assert fb.data[5] == 7.0 and fb.data[10] == 3.0  # views write through to data
    assert all(v.flags.c_contiguous and v.flags.writeable for v in fb)
    other = fb.like()
    assert other.shapes == fb.shapes and not np.shares_memory(other.data, fb.data)
    assert not other.data.any()


def test_flat_buffer_from_arrays_copies_values():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]
    fb = FlatBuffer.from_arrays(arrays)
    assert fb.dtype == np.float32
    np.testing.assert_array_equal(fb.data, [0, 1, 2, 3, 4, 5, 1, 1])
    arrays[1][0] = 5.0
    assert fb[1][0] == 1.0


@pytest.mark.parametrize(
    ("shapes", "dtype", "error", "match"),
    [
        ([(2, -1)], np.float32, ValueError, r"shapes\[0\]: negative"),
        ([(2,), "3"], np.float32, TypeError, r"shapes\[1\]: expected a tuple of ints"),
        ([(2.0,)], np.float32, TypeError, r"shapes\[0\]: expected a tuple of ints"),
        ([(2,)], np.int32, ValueError, "dtype: expected one of"),
    ],
)
def test_flat_buffer_bad_inputs(shapes, dtype, error, match):
    with pytest.raises(error, match=match):
        FlatBuffer(shapes, dtype)
