"""fastcore_cv.optim.SGD against torch.optim.SGD: same trajectories, state_dict, schedulers."""

import gc
import itertools

import pytest
import torch

from fastcore_cv.flat_grad import flat_grad_view
from fastcore_cv.optim import SGD

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: see tests/conftest.py


OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product(
        (0.0, 0.9), (0.0, 0.5), (0.0, 1e-2), (False, True), (False, True)
    )
    if not (n and (m == 0 or d != 0))
]


def twin_models(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    return a.to(dtype), b.to(dtype)


def assert_same_parameters(ours_model, ref_model, tol=1e-5):
    """Every parameter of the two models equal within ``tol`` (float32: a few ulps)."""
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


def train(model, opt, steps, dtype, seed=1, skip_first_layer_at=()):
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(8, 5, generator=gen, dtype=dtype)
        y = torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        if step in skip_first_layer_at:  # first layer gets no gradient this step
            h = torch.relu(model[0](x)).detach()
            loss = torch.nn.functional.cross_entropy(model[2](h), y)
        else:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_100_steps_match_torch_sgd(options, dtype):
    ours_model, ref_model = twin_models(dtype)
    ours = SGD(ours_model.parameters(), lr=0.05, **options)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.05, foreach=False, **options)
    train(ours_model, ours, 100, dtype)
    train(ref_model, ref, 100, dtype)
    # Same operations in the same order: float32 within a few ulps after 100 steps.
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


def test_parameters_without_gradient_are_skipped_like_torch():
    ours_model, ref_model = twin_models()
    opts = dict(lr=0.1, momentum=0.9, weight_decay=1e-2)
    ours = SGD(ours_model.parameters(), **opts)
    ref = torch.optim.SGD(ref_model.parameters(), foreach=False, **opts)
    skip = {0, 1, 5, 6, 7}  # also the very first steps: buffers start late for layer 0
    train(ours_model, ours, 20, torch.float32, skip_first_layer_at=skip)
    train(ref_model, ref, 20, torch.float32, skip_first_layer_at=skip)
    assert_same_parameters(ours_model, ref_model)


def test_param_groups_with_their_own_hyperparameters():
    ours_model, ref_model = twin_models()

    def groups(m):
        return [
            {"params": m[0].parameters(), "lr": 0.01, "momentum": 0.5},
            {"params": m[2].parameters(), "weight_decay": 1e-3, "nesterov": True},
        ]

    ours = SGD(groups(ours_model), lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(groups(ref_model), lr=0.1, momentum=0.9, foreach=False)
    train(ours_model, ours, 30, torch.float32)
    train(ref_model, ref, 30, torch.float32)
    assert_same_parameters(ours_model, ref_model)


def test_state_dict_round_trips_with_torch_in_both_directions():
    ours_model, ref_model = twin_models()
    ours = SGD(ours_model.parameters(), lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    train(ours_model, ours, 5, torch.float32)
    train(ref_model, ref, 5, torch.float32)
    saved = ours.state_dict()
    assert saved["param_groups"][0].keys() == ref.state_dict()["param_groups"][0].keys()
    for k, v in saved["state"].items():
        torch.testing.assert_close(
            v["momentum_buffer"], ref.state_dict()["state"][k]["momentum_buffer"]
        )
    # torch's state loads into ours (momentum buffers adopted into the flat buffer) and on.
    fresh = SGD(ours_model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(ref.state_dict())
    train(ours_model, fresh, 5, torch.float32, seed=7)
    train(ref_model, ref, 5, torch.float32, seed=7)
    assert_same_parameters(ours_model, ref_model)


def test_works_with_torch_lr_schedulers():
    ours_model, ref_model = twin_models()
    ours = SGD(ours_model.parameters(), lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    s1 = torch.optim.lr_scheduler.OneCycleLR(ours, max_lr=0.5, total_steps=10)
    s2 = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.5, total_steps=10)
    for _ in range(10):
        train(ours_model, ours, 1, torch.float32)
        train(ref_model, ref, 1, torch.float32)
        s1.step()
        s2.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"])
    assert_same_parameters(ours_model, ref_model)


def test_one_flat_buffer_per_group_backs_every_parameter_and_gradient():
    model, _ = twin_models()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, 2, torch.float32)
    flat = opt._flat[0]
    start, end = flat.data.data_ptr(), flat.data.data_ptr() + flat.data.numel() * 4
    for p in model.parameters():
        assert start <= p.data_ptr() < end
        assert (
            flat.grad.data_ptr() <= p.grad.data_ptr() < flat.grad.data_ptr() + flat.grad.numel() * 4
        )


def test_groups_the_kernels_cannot_take_use_torchs_algorithm():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    q = torch.nn.Parameter(p.detach().clone())
    ours, ref = SGD([p], lr=0.1, momentum=0.9), torch.optim.SGD([q], lr=0.1, momentum=0.9)
    for _ in range(3):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
        ours.step()
        ref.step()
    torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate"),
        (dict(lr=0.1, momentum=-0.5), "Invalid momentum"),
        (dict(lr=0.1, nesterov=True), "Nesterov momentum requires"),
    ],
)
def test_bad_hyperparameters_raise_like_torch(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGD([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_zero_grad_follows_torch_semantics():
    model, _ = twin_models()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, 2, torch.float32)
    grads = [p.grad for p in model.parameters()]
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert all(float(g.abs().sum()) == 0 for g in grads)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_step_hooks_and_profiler_label_like_torch():
    model, _ = twin_models()
    opt = SGD(model.parameters(), lr=0.1)
    events = []
    opt.register_step_pre_hook(lambda o, args, kwargs: events.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: events.append("post"))
    train(model, opt, 2, torch.float32)
    assert events == ["pre", "post", "pre", "post"]
    with torch.profiler.profile() as prof:
        train(model, opt, 1, torch.float32)
    assert any(e.name == "Optimizer.step#SGD.step" for e in prof.events())


def test_flat_grad_view_only_for_a_live_group_and_a_missing_gradient():
    model, _ = twin_models()
    p = next(model.parameters())
    assert flat_grad_view(p) is None  # no optimizer has taken it yet
    opt = SGD(model.parameters(), lr=0.1)
    train(model, opt, 1, torch.float32)
    assert flat_grad_view(p) is None  # p.grad is set
    opt.zero_grad()
    view, array = flat_grad_view(p)
    assert view.shape == p.shape and view.data_ptr() == opt._flat[0].grad_ptrs[0]
    assert array.shape == tuple(p.shape)
    del opt, view, array
    gc.collect()
    assert flat_grad_view(p) is None  # the group is gone with its optimizer
