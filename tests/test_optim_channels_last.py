"""The flat-buffer optimizers (fastcore_cv.optim) on channels_last models: each parameter's
view into the flat buffer keeps its memory format (optim/flat.py FlatGroup._view), so a
channels_last conv weight stays channels_last through the steps, and the steps equal torch's.

Tolerances: both models compute the same gradients (the same ops on the same layouts); the
steps differ only by the optimizers' rounding (tests/test_optim.py: a few float32 ulps per
step for SGD; tests/test_optim_adam.py: ~1 ulp per step for Adam against torch's for-loop
path), so after STEPS steps each tensor is compared to STEPS x 8 ulps of its largest entry.
A layout bug (a channels_last slice read as contiguous) moves entries by O(1) of the update.
"""

import copy
import itertools

import pytest
import torch

from fastcore_cv.optim import SGD, Adam, AdamW

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: see tests/conftest.py

EPS = float(torch.finfo(torch.float32).eps)
STEPS = 10
RTOL = STEPS * 8 * EPS

SGD_OPTIONS = [
    dict(momentum=m, weight_decay=wd, nesterov=n)
    for m, wd, n in itertools.product((0.0, 0.9), (0.0, 1e-2), (False, True))
    if not (n and m == 0)
]


def conv_net(seed: int = 0) -> torch.nn.Module:
    """Two 3x3 convs (their weights' channels_last layout differs from the contiguous one:
    in > 1 channel, k > 1), a 1x1 conv (both layouts coincide) and a linear head."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 4, 1),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 3),
    )


def batches(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(4, 3, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
        yield x, torch.randint(0, 3, (4,), generator=gen)


def step(model, opt, x, y, set_to_none: bool = True) -> None:
    opt.zero_grad(set_to_none=set_to_none)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def conv_weights(model) -> list[torch.Tensor]:
    return [m.weight for m in model if isinstance(m, torch.nn.Conv2d)]


def assert_channels_last(model, opt) -> None:
    """Every conv weight, its gradient and its state tensors are channels_last; the 3x3 ones
    are not contiguous (the layout really is NHWC), and all live in the flat buffers."""
    flat = opt._flat[0]
    lo, hi = flat.data.data_ptr(), flat.data.data_ptr() + 4 * flat.data.numel()
    for w in conv_weights(model):
        assert w.is_contiguous(memory_format=torch.channels_last)
        if w.shape[-1] > 1:
            assert not w.is_contiguous()
        assert lo <= w.data_ptr() < hi  # a view into the flat buffer, not a copy
        assert w.grad.stride() == w.stride()
        for value in opt.state[w].values():
            if value.ndim == 4:
                assert value.stride() == w.stride()


def assert_close(ours, ref, rtol=RTOL) -> None:
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        scale = float(q.detach().abs().max())
        torch.testing.assert_close(p, q, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("set_to_none", [True, False], ids=["grad=None", "grad=0"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_sgd_keeps_channels_last_and_steps_as_torch(options, set_to_none):
    ours_model = conv_net().to(memory_format=torch.channels_last)
    ref_model = copy.deepcopy(ours_model)
    ours = SGD(ours_model.parameters(), lr=0.05, **options)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.05, foreach=False, **options)
    for _, (x, y) in zip(range(STEPS), batches(), strict=False):
        step(ours_model, ours, x, y, set_to_none)
        step(ref_model, ref, x, y, set_to_none)
        assert_channels_last(ours_model, ours)
    assert_close(ours_model, ref_model)


@pytest.mark.parametrize("cls, torch_cls", [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)])
def test_adam_keeps_channels_last_and_steps_as_torch(cls, torch_cls):
    ours_model = conv_net().to(memory_format=torch.channels_last)
    ref_model = copy.deepcopy(ours_model)
    ours = cls(ours_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-5)
    ref = torch_cls(ref_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-5)
    for _, (x, y) in zip(range(STEPS), batches(), strict=False):
        step(ours_model, ours, x, y)
        step(ref_model, ref, x, y)
        assert_channels_last(ours_model, ours)
    assert_close(ours_model, ref_model)


@pytest.mark.parametrize("cls, torch_cls", [(SGD, torch.optim.SGD), (AdamW, torch.optim.AdamW)])
def test_layout_switches_between_steps_keep_the_trajectory(cls, torch_cls):
    """What vision.models.channels_last does around each fit: the model switches layout
    (``model.to(memory_format=...)`` replaces every ``p.data``) between steps of the same
    optimizer. The flat views follow the new layout with momentum and moments permuted
    along, so the trajectory is torch's, and the weights end in the layout asked for."""
    ours_model, ref_model = conv_net(), conv_net()
    kwargs = {"momentum": 0.9} if cls is SGD else {}
    ours = cls(ours_model.parameters(), lr=1e-2, **kwargs)
    ref = torch_cls(ref_model.parameters(), lr=1e-2, **kwargs)
    data = batches()
    layouts = [torch.contiguous_format, torch.channels_last, torch.contiguous_format]
    for fmt in [*layouts, torch.channels_last]:
        for model in (ours_model, ref_model):
            model.to(memory_format=fmt)
        for _ in range(3):
            x, y = next(data)
            step(ours_model, ours, x, y)
            step(ref_model, ref, x, y)
            for w in conv_weights(ours_model):
                assert w.is_contiguous(memory_format=fmt)
        if fmt == torch.channels_last:
            assert_channels_last(ours_model, ours)
    assert_close(ours_model, ref_model)
    # the state tensors are still the flat ones, and the state_dict loads into torch's
    flat = ours._flat[0]
    key = "momentum_buffer" if cls is SGD else "exp_avg"
    for i, p in enumerate(flat.params):
        assert ours.state[p][key] is flat.views[key][i]
    ref.load_state_dict(ours.state_dict())
