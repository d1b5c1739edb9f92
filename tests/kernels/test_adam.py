"""adam_update vs torch's fused Adam (bit for bit) and a float64 NumPy reference (eps-derived
bounds): every option, segments with their own step counts, aliasing, threads, errors."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcore_cv
from fastcore_cv.kernels.adam import adam_update
from fastcore_cv.kernels.flat import FlatBuffer
from fastcore_cv.kernels.sgd import CHUNK, PARALLEL_MIN

DTYPES = [np.float32, np.float64]
# torch's fused CPU Adam rounds each operation as the kernel does (FMA where it uses one) in
# its vector loop, so results are bit-identical there: on every option after 100 steps, in
# float32 and float64. Its scalar tail (the last n mod 16 elements) rounds its own way, so
# the exact comparisons use sizes that are multiples of 16. Without AVX2/AVX-512 torch's
# kernels round differently: allow a few roundings per step, amplified over the steps.
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
    """Every combination of the options torch's Adam has (betas below and above 0.5: the
    two branches of torch's lerp)."""
    for beta1, wd, decoupled, amsgrad, maximize in itertools.product(
        (0.9, 0.3), (0.0, 1e-2), (False, True), (False, True), (False, True)
    ):
        if wd == 0 and decoupled:
            continue  # the same step as wd == 0 without it
        yield dict(
            beta1=beta1,
            weight_decay=wd,
            decoupled_weight_decay=decoupled,
            amsgrad=amsgrad,
            maximize=maximize,
        )


def torch_adam(params, hyper, **kwargs):
    return torch.optim.Adam(
        params,
        lr=hyper["lr"],
        betas=(hyper["beta1"], hyper["beta2"]),
        eps=hyper["eps"],
        weight_decay=hyper["weight_decay"],
        amsgrad=hyper["amsgrad"],
        maximize=hyper["maximize"],
        decoupled_weight_decay=hyper["decoupled_weight_decay"],
        **kwargs,
    )


def buffers(shape, dtype, amsgrad):
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    return m, v, (np.zeros(shape, dtype) if amsgrad else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hyper", list(options()), ids=lambda h: "-".join(map(str, h.values())))
def test_100_steps_match_torch_fused_adam_bit_for_bit(hyper, dtype):
    hyper = dict(hyper, lr=1e-2, beta2=0.99, eps=1e-5)
    shape = (16, 37)  # 592 elements: a multiple of 16, torch's vector loop throughout
    rng = np.random.default_rng(0)
    p = rng.standard_normal(shape).astype(dtype)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    opt = torch_adam([tp], hyper, fused=True)
    m, v, vmax = buffers(shape, dtype, hyper["amsgrad"])
    for step in range(1, 101):
        g = rng.standard_normal(shape).astype(dtype)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        adam_update(p, g, m, v, vmax, **hyper, step=step)
    state = opt.state[tp]
    assert_same(p, tp)
    assert_same(m, state["exp_avg"])
    assert_same(v, state["exp_avg_sq"])
    if hyper["amsgrad"]:
        assert_same(vmax, state["max_exp_avg_sq"])


def reference_step(p, g, m, v, vmax, hyper, step):
    """The module docstring's formula in float64, with the hyper-parameters as given."""
    p, g, m, v = (np.asarray(x, np.float64) for x in (p, g, m, v))
    lr, b1, b2, eps, wd = (hyper[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay"))
    g = -g if hyper["maximize"] else g
    if hyper["decoupled_weight_decay"]:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if hyper["amsgrad"]:
        vmax = np.maximum(np.asarray(vmax, np.float64), v)
        v_used = vmax
    else:
        v_used = v
    denom = np.sqrt(v_used) / np.sqrt(1 - b2**step) + eps
    return p - lr / (1 - b1**step) * m / denom, m, v, vmax, denom


def step_tolerance(p, g, m, v, vmax, hyper, step, denom):
    """exp_avg and exp_avg_sq: at most ~4 roundings each, of quantities no larger than the
    formula gives on |p|, |g|, |m|, v: 8 eps times those magnitudes. params: the update
    s * m / denom carries m's error, half of v's (sqrt), the rounded scalars s and
    sqrt(1 - beta2**t) and its own ~5 roundings: 16 eps times |p| + s * |m| / denom in
    magnitudes (denom >= eps_adam > 0, the exact one). Plus the error the denominator
    carries: exp_avg_sq's error ``dv`` moves sqrt(v) by at most min(dv / (2 sqrt(v)),
    sqrt(dv)), which matters where g + weight_decay * p cancels (v tiny, denom ~ eps_adam);
    the computed denominator stays >= eps_adam (sqrt >= 0), which bounds the division."""
    eps, tiny = np.finfo(p.dtype).eps, np.finfo(p.dtype).tiny
    lr, b1, b2, wd = (hyper[k] for k in ("lr", "beta1", "beta2", "weight_decay"))
    p, g, m, v = (np.abs(np.asarray(x, np.float64)) for x in (p, g, m, v))
    size_g = g + (0 if hyper["decoupled_weight_decay"] else wd * p)
    size_m = b1 * m + (1 - b1) * size_g
    size_v = b2 * v + (1 - b2) * size_g * size_g
    s = lr / (1 - b1**step)
    size_p = p + s * size_m / denom
    dv = 8 * eps * size_v
    root_v = (denom - hyper["eps"]) * np.sqrt(1 - b2**step)  # the exact sqrt(v) used
    d_root = np.minimum(dv / (2 * np.maximum(root_v, tiny)), np.sqrt(dv))
    d_denom = d_root / np.sqrt(1 - b2**step) + 4 * eps * denom
    low = np.maximum(denom - d_denom, hyper["eps"] * (1 - 4 * eps))
    from_denom = s * size_m * d_denom / (denom * low)
    return 16 * eps * size_p + from_denom + tiny, 8 * eps * size_m + tiny, 8 * eps * size_v + tiny


@settings(max_examples=80, deadline=None)
@given(
    n=st.sampled_from([1, 7, 16, 100, CHUNK + 5, PARALLEL_MIN + 100]),
    dtype=st.sampled_from(DTYPES),
    hyper=st.sampled_from(list(options())),
    lr=st.floats(1e-5, 1.0),
    beta2=st.floats(0.0, 0.9999),
    eps=st.floats(1e-8, 1e-3),
    step=st.integers(1, 10_000),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_one_step_matches_a_float64_reference(
    n, dtype, hyper, lr, beta2, eps, step, scale, seed, data
):
    """Random state (m of either sign, v >= 0, vmax >= 0), random hyper-parameters and step
    count; grads anywhere in a buffer that also holds params and exp_avg_sq (equal to one,
    partly over both or apart): the step is that of the grads' values before the call."""
    hyper = dict(hyper, lr=lr, beta2=beta2, eps=eps)
    rng = np.random.default_rng(seed)
    buf = (scale * rng.standard_normal(3 * n)).astype(dtype)
    params, v = buf[:n], buf[2 * n :]
    v[:] = np.abs(v) * scale  # second moments: ~ g^2
    offset = data.draw(st.one_of(st.sampled_from([0, n // 2, n, 2 * n]), st.integers(0, 2 * n)))
    grads = buf[offset : offset + n]
    m = (scale * rng.standard_normal(n)).astype(dtype)
    vmax = (v + np.abs(scale * rng.standard_normal(n)).astype(dtype) * scale).astype(dtype)
    vmax = vmax if hyper["amsgrad"] else None
    p0, g0, m0, v0 = params.copy(), grads.copy(), m.copy(), v.copy()
    vmax0 = None if vmax is None else vmax.copy()

    adam_update(params, grads, m, v, vmax, **hyper, step=step)

    want_p, want_m, want_v, want_vmax, denom = reference_step(p0, g0, m0, v0, vmax0, hyper, step)
    tol_p, tol_m, tol_v = step_tolerance(p0, g0, m0, v0, vmax0, hyper, step, denom)
    assert np.all(np.abs(params - want_p) <= tol_p), np.max(np.abs(params - want_p) / tol_p)
    assert np.all(np.abs(m - want_m) <= tol_m)
    assert np.all(np.abs(v - want_v) <= tol_v)
    if vmax is not None:
        assert np.all(np.abs(vmax - want_vmax) <= tol_v)  # max() adds no rounding
    # the same step on separate copies: bit for bit the same result
    p1, m1, v1 = p0.copy(), m0.copy(), v0.copy()
    vmax1 = None if vmax0 is None else vmax0.copy()
    adam_update(p1, g0, m1, v1, vmax1, **hyper, step=step)
    np.testing.assert_array_equal(params, p1)
    np.testing.assert_array_equal(m, m1)
    np.testing.assert_array_equal(v, v1)


# Parameters of a flat model, all multiples of 16 elements (torch's vector loop, see EXACT),
# one of them long enough for the parallel path and chunk boundaries, and an empty one.
SHAPES = [(16, 4), (0,), (CHUNK + 16,), (32,), (PARALLEL_MIN,), (2, 8)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hyper",
    [
        dict(weight_decay=1e-2, decoupled_weight_decay=True, amsgrad=False, maximize=False),
        dict(weight_decay=1e-2, decoupled_weight_decay=False, amsgrad=True, maximize=True),
    ],
    ids=["adamw", "adam-l2-amsgrad-maximize"],
)
def test_segments_with_their_own_step_counts_match_torch(hyper, dtype, threads):
    """torch skips parameters whose grad is None, so their step counts fall behind;
    ``active`` and a step count per segment reproduce that in one call over flat buffers."""
    threads(2)
    hyper = dict(hyper, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-5)
    rng = np.random.default_rng(1)
    params = FlatBuffer(SHAPES, dtype)
    params.data[:] = rng.standard_normal(params.size)
    grads, m, v, vmax = params.like(), params.like(), params.like(), params.like()
    tparams = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in params]
    opt = torch_adam(tparams, hyper, fused=True)
    steps = np.zeros(len(SHAPES), np.int64)
    for step in range(12):
        active = rng.random(len(SHAPES)) < 0.6
        active[0] = step % 3 != 0
        grads.data[:] = np.nan  # inactive segments' grads must not be read
        for i, (g, tp) in enumerate(zip(grads, tparams, strict=True)):
            if active[i]:
                g[...] = rng.standard_normal(g.shape)
                tp.grad = torch.from_numpy(g.copy())
            else:
                tp.grad = None
        opt.step()
        steps[active] += 1
        adam_update(
            params.data, grads.data, m.data, v.data, vmax.data if hyper["amsgrad"] else None,
            **hyper, step=steps, segments=params.offsets, active=active,
        )  # fmt: skip
        for i, (x, tp) in enumerate(zip(params, tparams, strict=True)):
            assert_same(x, tp)
            if steps[i]:
                assert_same(m[i], opt.state[tp]["exp_avg"])
                assert_same(v[i], opt.state[tp]["exp_avg_sq"])


@pytest.fixture
def threads():
    """Let a test change the thread count; restore it afterwards."""
    before = fastcore_cv.get_num_threads()
    yield fastcore_cv.set_num_threads
    fastcore_cv.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_result_on_one_and_two_threads(dtype, threads):
    rng = np.random.default_rng(2)
    n = 3 * PARALLEL_MIN + 5
    p0, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    results = []
    for count in (1, 2):
        threads(count)
        p, m, v, vmax = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)
        for step in range(1, 4):
            adam_update(p, g, m, v, vmax, lr=1e-2, amsgrad=True, weight_decay=1e-2, step=step)
        results.append((p, m, v, vmax))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_and_inf_in_grads_propagate_like_torch():
    p = np.ones(16, np.float32)
    g = np.zeros(16, np.float32)
    g[:3] = [np.nan, np.inf, -np.inf]
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tp.grad = torch.from_numpy(g.copy())
    torch.optim.Adam([tp], lr=0.1, amsgrad=True, fused=True).step()
    m, v, vmax = np.zeros(16, np.float32), np.zeros(16, np.float32), np.zeros(16, np.float32)
    adam_update(p, g, m, v, vmax, lr=0.1, amsgrad=True)
    np.testing.assert_array_equal(p, tp.detach().numpy())  # nan == nan in this assert
    assert np.isnan(p[:3]).all() and np.isnan(vmax[0]) and np.isinf(vmax[1:3]).all()


def test_inactive_segments_and_empty_arrays_are_left_alone():
    p = np.arange(6, dtype=np.float64)
    m, v = np.zeros(6), np.zeros(6)
    adam_update(
        p, np.ones(6), m, v, lr=1.0, segments=np.array([0, 2, 6]), active=np.array([False, True])
    )
    np.testing.assert_array_equal(p[:2], [0, 1])
    np.testing.assert_allclose(p[2:], np.arange(2, 6) - 1.0, rtol=1e-7)  # step 1: lr * sign(g)
    assert not m[:2].any() and not v[:2].any()
    empty = np.zeros(0, np.float32)
    adam_update(empty, empty.copy(), empty.copy(), empty.copy(), lr=0.1)


F32 = np.ones(4, np.float32)


def call(params=None, grads=None, m=None, v=None, vmax=None, **kw):
    kw.setdefault("lr", 0.1)
    params = F32.copy() if params is None else params
    grads = F32.copy() if grads is None else grads
    m = F32.copy() if m is None else m
    v = F32.copy() if v is None else v
    adam_update(params, grads, m, v, vmax, **kw)


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
        (dict(m=np.ones(3, np.float32)), ValueError, "exp_avg: expected shape"),
        (dict(m=np.ones(4)), TypeError, "exp_avg: expected dtype"),
        (dict(v=np.ones(8, np.float32)[::2]), ValueError, "exp_avg_sq: must be C-contiguous"),
        (dict(v=read_only(F32)), ValueError, "exp_avg_sq: array is read-only"),
        (dict(amsgrad=True), ValueError, "max_exp_avg_sq: required when amsgrad=True"),
        (dict(vmax=F32.copy()), ValueError, "max_exp_avg_sq: only used with amsgrad=True"),
        (dict(vmax=np.ones(4), amsgrad=True), TypeError, "max_exp_avg_sq: expected dtype"),
        (dict(lr=-0.1), ValueError, "lr: must be >= 0"),
        (dict(lr=float("nan")), ValueError, "lr: expected a finite"),
        (dict(beta1=1.0), ValueError, "beta1: must be < 1"),
        (dict(beta2=-0.1), ValueError, "beta2: must be >= 0"),
        (dict(beta2="0.9"), TypeError, "beta2: expected a number"),
        (dict(eps=-1e-8), ValueError, "eps: must be >= 0"),
        (dict(weight_decay=-1e-4), ValueError, "weight_decay: must be >= 0"),
        (dict(amsgrad=1), TypeError, "amsgrad: expected a bool, got int"),
        (dict(maximize=None), TypeError, "maximize: expected a bool"),
        (dict(decoupled_weight_decay="yes"), TypeError, "decoupled_weight_decay: expected"),
        (dict(step=0), ValueError, "step: must be >= 1"),
        (dict(step=1.5), TypeError, "step: expected an int step count"),
        (dict(step=True), TypeError, "step: expected an int step count"),
        (dict(active=np.ones(1, bool)), ValueError, "active: only meaningful with segments"),
        (dict(segments=np.array([0, 5])), ValueError, "segments: must start at 0 and end at 4"),
        (
            dict(segments=np.array([0, 2, 4]), step=np.array([1, 2, 3])),
            ValueError,
            "step: axis 0 has length 3",
        ),
        (
            dict(segments=np.array([0, 2, 4]), step=np.array([1, 0])),
            ValueError,
            r"step\[1\]: must be >= 1",
        ),
        (
            dict(
                segments=np.array([0, 2, 4]), step=np.array([-1, 1]), active=np.array([0, 1], bool)
            ),
            ValueError,
            r"step\[0\]: must be >= 0",
        ),
        (
            dict(segments=np.array([0, 2, 4]), active=np.ones(2, np.int8)),
            TypeError,
            "active: expected dtype bool",
        ),
    ],
)
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        call(**kwargs)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ("params", "exp_avg", "exp_avg: shares memory with params"),
        ("params", "exp_avg_sq", "exp_avg_sq: shares memory with params"),
        ("exp_avg", "exp_avg_sq", "exp_avg_sq: shares memory with exp_avg"),
        ("exp_avg_sq", "max_exp_avg_sq", "max_exp_avg_sq: shares memory with exp_avg_sq"),
    ],
)
def test_written_arrays_sharing_memory_are_refused(first, second, message):
    """Two outputs in one buffer (equal or partly overlapping) have no right answer."""
    names = ["params", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    arrays = {n: np.zeros(8, np.float32) for n in names}
    shared = np.zeros(12, np.float32)
    arrays[first], arrays[second] = shared[:8], shared[4:]
    with pytest.raises(ValueError, match=message):
        adam_update(
            arrays["params"], np.ones(8, np.float32), arrays["exp_avg"], arrays["exp_avg_sq"],
            arrays["max_exp_avg_sq"], lr=0.1, amsgrad=True,
        )  # fmt: skip
