"""fastcore_cv.optim.Adam/AdamW against torch's: trajectories over 100 steps, state_dict both
ways, param groups, parameters without gradients, torch's fallback, the backend mapping."""

import copy
import functools
import itertools

import pytest
import torch

from fastcore_cv.backend import kernel_opt_func
from fastcore_cv.optim import FASTAI_ADAMW, SGD, Adam, AdamW

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: see tests/conftest.py

PAIRS = [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)]
OPTIONS = [
    dict(weight_decay=wd, amsgrad=a, maximize=m)
    for wd, a, m in itertools.product((0.0, 1e-2), (False, True), (False, True))
]
# torch's fused CPU Adam rounds as the kernel does except in a tensor's last n mod 16
# elements (tests/kernels/test_adam.py): on AVX2/AVX-512, models whose tensors are multiples
# of 16 elements match it bit for bit.
EXACT = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def twin_models(sizes=(5, 7, 3), dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(dtype)
    return model, copy.deepcopy(model)


def train(model, opt, steps, seed=1, skip_first_layer_at=()):
    """``steps`` steps on seeded random batches; at ``skip_first_layer_at`` the first layer
    gets no gradient (its parameters' step counts fall behind, as in torch)."""
    gen = torch.Generator().manual_seed(seed)
    first, dtype = model[0], model[0].weight.dtype
    for step in range(steps):
        x = torch.randn(8, first.in_features, generator=gen, dtype=dtype)
        y = torch.randint(0, model[-1].out_features, (8,), generator=gen)
        opt.zero_grad()
        if step in skip_first_layer_at:
            h = torch.relu(first(x)).detach()
            out = model[1:](h)
        else:
            out = model(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        opt.step()


def assert_close_params(ours, ref, rtol):
    """Each parameter within ``rtol`` of torch's, relative to that tensor's largest entry
    (entries near 0 carry the absolute error of their tensor's scale)."""
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        scale = float(q.detach().abs().max())
        torch.testing.assert_close(p, q, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("pair", PAIRS, ids=["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_100_steps_match_torchs_default_adam(pair, options, dtype):
    """The issue's target, 1e-6 relative after 100 steps, against torch's default (for-loop)
    path. Its sqrt is not correctly rounded (~1 ulp on 15% of entries, the kernel's is), so
    the two differ by ~1 float32 ulp per step; measured after 100 steps: 1-3e-7 of each
    tensor's scale, the same as torch's fused Adam vs its for-loop Adam."""
    ours_cls, torch_cls = pair
    ours_model, ref_model = twin_models(dtype=dtype)
    ours = ours_cls(ours_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-5, **options)
    ref = torch_cls(ref_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-5, **options)
    train(ours_model, ours, 100)
    train(ref_model, ref, 100)
    assert_close_params(ours_model, ref_model, 1e-6 if dtype == torch.float32 else 1e-13)


@pytest.mark.skipif(not EXACT, reason="bit-identity holds where torch's kernels use FMA")
@pytest.mark.parametrize("pair", PAIRS, ids=["Adam", "AdamW"])
def test_same_as_torch_fused_bit_for_bit_with_missing_gradients(pair):
    """Tensors of 16k elements (16x32 weights, 32/16 biases): the kernel and torch's fused
    Adam agree exactly over 40 steps, also when the first layer skips steps (its step count
    and bias corrections then differ from the second layer's)."""
    ours_cls, torch_cls = pair
    ours_model, ref_model = twin_models((16, 32, 16))
    opts = dict(lr=1e-2, weight_decay=1e-2, amsgrad=True)
    ours = ours_cls(ours_model.parameters(), **opts)
    ref = torch_cls(ref_model.parameters(), fused=True, **opts)
    skip = {0, 1, 5, 6, 7, 30}
    train(ours_model, ours, 40, skip_first_layer_at=skip)
    train(ref_model, ref, 40, skip_first_layer_at=skip)
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert torch.equal(ours.state[p][key], ref.state[q][key]), key
    assert float(ours.state[ours_model[0].weight]["step"]) == 40 - len(skip)


def test_param_groups_with_their_own_lrs_and_betas():
    ours_model, ref_model = twin_models()

    def groups(m):
        return [
            {"params": m[0].parameters(), "lr": 1e-3, "betas": (0.8, 0.9)},
            {"params": m[2].parameters(), "weight_decay": 1e-1, "amsgrad": True},
        ]

    ours = AdamW(groups(ours_model), lr=3e-2)
    ref = torch.optim.AdamW(groups(ref_model), lr=3e-2)
    train(ours_model, ours, 30)
    train(ref_model, ref, 30)
    assert_close_params(ours_model, ref_model, 1e-6)
    assert len(ours._flat) == 2  # one flat buffer (one kernel call) per group


def test_state_dict_round_trips_with_torch_in_both_directions():
    ours_model, ref_model = twin_models()
    opts = dict(lr=1e-2, weight_decay=1e-2)
    ours, ref = (
        AdamW(ours_model.parameters(), **opts),
        torch.optim.AdamW(ref_model.parameters(), **opts),
    )
    train(ours_model, ours, 5)
    train(ref_model, ref, 5)
    saved, theirs = ours.state_dict(), ref.state_dict()
    assert saved["param_groups"] == theirs["param_groups"]
    for k, state in saved["state"].items():
        assert state.keys() == theirs["state"][k].keys()
        for key, value in state.items():
            torch.testing.assert_close(value, theirs["state"][k][key], rtol=1e-6, atol=1e-9)
    # ours -> torch: torch's AdamW carries on from our state (a copy: load_state_dict keeps
    # the tensors it is given, and ours would keep writing into them) ...
    ref_model.load_state_dict(ours_model.state_dict())
    ref = torch.optim.AdamW(ref_model.parameters(), **opts)
    ref.load_state_dict(copy.deepcopy(saved))
    # ... and torch -> ours: a fresh AdamW adopts torch's state into its flat buffers.
    fresh = AdamW(ours_model.parameters(), **opts)
    fresh.load_state_dict(copy.deepcopy(saved))
    train(ours_model, fresh, 5, seed=7)
    train(ref_model, ref, 5, seed=7)
    assert_close_params(ours_model, ref_model, 1e-6)
    assert float(fresh.state[next(ours_model.parameters())]["step"]) == 10


def test_one_flat_buffer_backs_parameters_and_state():
    model, _ = twin_models()
    opt = Adam(model.parameters(), lr=1e-2, amsgrad=True)
    train(model, opt, 2)
    flat = opt._flat[0]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        buf = flat.buffers[key]
        lo, hi = buf.data_ptr(), buf.data_ptr() + buf.numel() * 4
        assert all(lo <= opt.state[p][key].data_ptr() < hi for p in model.parameters())
    steps = flat.scalar_tensors["step"]
    assert steps.tolist() == [2.0] * 4 and steps.dtype == torch.float32


def test_groups_the_kernel_cannot_take_use_torchs_algorithm():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    q = torch.nn.Parameter(p.detach().clone())
    ours, ref = AdamW([p], lr=0.1), torch.optim.AdamW([q], lr=0.1)
    for _ in range(3):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
        ours.step()
        ref.step()
    torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not ours._flat


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate"),
        (dict(betas=(1.0, 0.99)), "Invalid beta parameter at index 0"),
        (dict(eps=-1.0), "Invalid epsilon value"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value"),
    ],
)
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_bad_hyperparameters_raise_like_torch(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_works_with_torch_lr_schedulers_and_changing_betas():
    """What fit_one_cycle does each batch: set lr and beta1 in the groups."""
    ours_model, ref_model = twin_models()
    ours = AdamW(ours_model.parameters(), lr=1e-2, **FASTAI_ADAMW)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, **FASTAI_ADAMW)
    schedulers = [
        torch.optim.lr_scheduler.OneCycleLR(o, max_lr=5e-2, total_steps=10) for o in (ours, ref)
    ]
    for _ in range(10):
        train(ours_model, ours, 1)
        train(ref_model, ref, 1)
        for s in schedulers:
            s.step()
    assert ours.param_groups[0]["betas"] == ref.param_groups[0]["betas"] != (0.9, 0.99)
    assert_close_params(ours_model, ref_model, 1e-6)


def test_kernel_opt_func_maps_torchs_optimizers_onto_the_kernel_ones():
    params = [torch.nn.Parameter(torch.ones(3))]
    assert kernel_opt_func(torch.optim.Adam) is Adam
    assert kernel_opt_func(torch.optim.AdamW) is AdamW
    assert kernel_opt_func(torch.optim.SGD) is SGD
    partial = kernel_opt_func(functools.partial(torch.optim.Adam, betas=(0.5, 0.9)))
    assert isinstance(partial(params, lr=0.1), Adam)
    default = kernel_opt_func(None)(params, lr=0.1)
    assert type(default) is AdamW
    group = default.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == (
        FASTAI_ADAMW["betas"], FASTAI_ADAMW["eps"], FASTAI_ADAMW["weight_decay"],
    )  # fmt: skip
    other = torch.optim.RMSprop
    assert kernel_opt_func(other) is other
