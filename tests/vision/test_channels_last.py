"""channels_last training of the whole model: the VisionLearner trains EfficientNet-Lite0 in
torch.channels_last (vision.models.channels_last), with the numbers of the contiguous path
to float32 rounding, the model contiguous again afterwards, and the same ONNX export.

Tolerances (float32 eps = 1.19e-7):
- Forward (losses of the first step, BatchNorm running statistics after it, logits): only the
  summation order of the convolutions and BatchNorm reductions differs. Rounding errors of a
  length-K sum grow like sqrt(K) eps (random-walk estimate), and add up over the depth D of
  the network: rtol = D sqrt(K) eps with D = 52 conv/BN layers, K = 8192 (the largest
  reduction: BatchNorm over 8 x 32 x 32 stem outputs at 64 px) ~ 5.6e-4. Measured: <= 2.4e-4.
- Gradients are NOT continuous in the inputs: ReLU6 passes the gradient on 0 < x < 6 only,
  so an activation within rounding of 0 or 6 gets the full gradient in one layout and none
  in the other (the contiguous path does the same against float64). Measured at 64 px, 8
  random images: one flipped element out of 40,960 in the last layer moved every upstream
  gradient by 1% (8e4 eps); and after 2+ steps BatchNorm over 8 images amplifies such
  differences (2-6% median). So one SGD step is compared: each parameter tensor's update
  must agree to UPDATE_RTOL = 5% of its largest element (measured <= 0.6%), and all updates
  together to 1% in norm (measured 0.06%). Tensors whose update is below 1e-3 of the
  largest one are left out: their gradient is zero up to rounding (a BatchNorm bias before
  a 1x1 conv and another BatchNorm). A layout bug (NHWC data read as NCHW) changes the
  updates by O(100%).
"""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import pytest
import torch

from fastcore_cv.learner import Callback
from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_texture_folder
from fastcore_cv.vision.models import channels_last, efficientnet_lite0
from fastcore_cv.vision.transfer import vision_learner

pytest.importorskip("skimage")
pytestmark = pytest.mark.usefixtures("one_thread")

EPS = float(torch.finfo(torch.float32).eps)
FORWARD_RTOL = 52 * math.sqrt(8 * 32 * 32) * EPS  # D sqrt(K) eps, see the module docstring
UPDATE_RTOL = 0.05  # ReLU6 kink flips, see the module docstring
SIZE = 64
LR = 0.01


@pytest.fixture(scope="module")
def texture_dls(tmp_path_factory):
    """Real photos (scikit-image's brick/grass/gravel), 10 crops per class per split."""
    root = write_texture_folder(tmp_path_factory.mktemp("cl_textures"), size=96, stride=96)
    return ImageDataLoaders.from_folder(root, size=SIZE, bs=8, augment=False, seed=0)


class LayoutSeen(Callback):
    """Records, at every training batch, whether the stem's conv weight is channels_last."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def after_batch(self, learn) -> None:
        w = learn.model.body[0].conv.weight
        self.seen.append(w.is_contiguous(memory_format=torch.channels_last))


class OneStep(Callback):
    """Stops the fit after its first training step (the loss is kept)."""

    order = 10

    def after_batch(self, learn) -> None:
        self.loss = learn.last_loss
        learn.stop_training = True


def train_whole_model(dls, use_channels_last: bool):
    """One SGD step of the unfrozen EfficientNet-Lite0 (seeded: same init, same dropout)."""
    seen, step = LayoutSeen(), OneStep()
    learn = vision_learner(dls, "efficientnet_lite0", seed=0, progress="silent", cbs=[seen, step])
    learn.channels_last = use_channels_last
    learn.unfreeze()
    start = copy.deepcopy(learn.model.state_dict())
    learn.dls.train.epoch = 0  # the same batches in both runs
    learn.fit(1, LR)
    return learn, start, step.loss, seen.seen


@pytest.fixture(scope="module")
def both_runs(texture_dls):
    """The contiguous run and the channels_last run of the same seeded training."""
    return {cl: train_whole_model(texture_dls, cl) for cl in (False, True)}


def test_trains_in_channels_last_then_back_to_contiguous(both_runs):
    plain, cl = both_runs[False], both_runs[True]
    assert cl[3] and all(cl[3]), "the model was not channels_last during the fit"
    assert plain[3] and not any(plain[3])
    for p in cl[0].model.parameters():  # outside the fit: contiguous again
        assert p.is_contiguous()


def test_first_loss_and_batchnorm_statistics_match(both_runs):
    (a, _, la, _), (b, _, lb, _) = both_runs[False], both_runs[True]
    assert math.isfinite(la) and la == pytest.approx(lb, rel=FORWARD_RTOL)
    # The running statistics moved once from the same start: forward only, every layer.
    sa, sb = a.model.state_dict(), b.model.state_dict()
    names = [n for n in sa if n.endswith(("running_mean", "running_var"))]
    assert len(names) == 2 * 49
    for n in names:
        tol = FORWARD_RTOL * float(sa[n].abs().max())
        assert float((sa[n] - sb[n]).abs().max()) <= tol, n


def test_parameter_updates_match(both_runs):
    (a, start, _, _), (b, start_b, _, _) = both_runs[False], both_runs[True]
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    updates = {}
    for name in pa:
        assert torch.equal(start[name], start_b[name])  # the same seeded start
        updates[name] = (pa[name].detach() - start[name], pb[name].detach() - start[name])
    largest = max(float(da.abs().max()) for da, _ in updates.values())
    checked = 0
    for name, (da, db) in updates.items():
        size = float(da.abs().max())
        if size < 1e-3 * largest:
            continue
        tol = UPDATE_RTOL * size + 8 * EPS * float(start[name].abs().max())
        assert float((da - db).abs().max()) <= tol, name
        checked += 1
    assert checked > 100  # the body's weights moved: the whole model was trained
    diff = math.sqrt(sum(float(((da - db) ** 2).sum()) for da, db in updates.values()))
    norm = math.sqrt(sum(float((da**2).sum()) for da, _ in updates.values()))
    assert diff <= 0.01 * norm


def test_logits_after_training_match(both_runs, texture_dls):
    """Eval-mode logits of the two trained models on the validation photos agree as their
    updates do; the same model run channels_last in eval agrees to forward rounding."""
    (a, *_), (b, *_) = both_runs[False], both_runs[True]
    x, _ = next(iter(texture_dls.valid))
    a.model.eval(), b.model.eval()
    with torch.no_grad():
        ya, yb = a.model(x), b.model(x)
        with channels_last(b.model):  # and the same model run channels_last in eval
            yc = b.model(x)
    scale = float(ya.abs().max())
    assert float((ya - yb).abs().max()) <= UPDATE_RTOL * scale
    assert float((yb - yc).abs().max()) <= FORWARD_RTOL * scale
    assert torch.equal(ya.argmax(1), yb.argmax(1))


def test_channels_last_block_keeps_parameters_and_restores_on_error():
    model = efficientnet_lite0(pretrained=False, num_classes=3)
    params = list(model.parameters())
    with pytest.raises(RuntimeError, match="boom"), channels_last(model):
        assert model.body[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
        with channels_last(model):  # nested: a no-op, the outer block restores
            pass
        assert model.body[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
        raise RuntimeError("boom")
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.is_contiguous() for p in model.parameters())
    assert not model._forward_pre_hooks  # the input hook is gone


@pytest.mark.slow
def test_onnx_export_of_channels_last_model_unchanged(both_runs, texture_dls, tmp_path):
    """Both trained models export with an NCHW input and give the same probabilities in
    onnxruntime on the validation photos, as torch does."""
    ort = pytest.importorskip("onnxruntime")
    from fastcore_cv.export import to_onnx
    from fastcore_cv.vision.preprocessing import preprocess

    photos = list(texture_dls.valid_ds.items[:6])
    config = texture_dls.preprocess_config
    x = np.stack([preprocess(p, config) for p in photos])
    outs = {}
    for cl in (False, True):
        model = both_runs[cl][0].model
        path = tmp_path / f"model_{int(cl)}.onnx"
        to_onnx(model, path, classes=texture_dls.classes, preprocess_config=config,
                verify_images=photos)  # fmt: skip
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        assert inp.shape[1:] == [3, SIZE, SIZE]  # NCHW, whatever the training layout
        outs[cl] = sess.run(None, {inp.name: x})[0]
    np.testing.assert_allclose(outs[True], outs[False], atol=UPDATE_RTOL)
    assert (outs[True].argmax(1) == outs[False].argmax(1)).all()


def test_unfrozen_lr_find_runs_channels_last_and_restores_weights(texture_dls):
    """lr_find on the whole model runs channels_last and puts every weight back exactly."""
    learn = vision_learner(texture_dls, "simple_cnn", pretrained=False, seed=0, progress="silent")
    learn.unfreeze()
    before = copy.deepcopy(learn.model.state_dict())
    conv = learn.model.body[0]
    seen = []
    hook = conv.register_forward_pre_hook(
        lambda m, args: seen.append(
            m.weight.is_contiguous(memory_format=torch.channels_last)
            and args[0].is_contiguous(memory_format=torch.channels_last)
        )
    )
    learn.lr_find(num_it=5, seed=0)
    hook.remove()
    assert seen and all(seen)
    after = learn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.is_contiguous() for p in learn.model.parameters())


def _torch_ops_twin(model):
    """A copy of ``model`` whose ReLU6 and SAME padding are torch's own ops (nn.ReLU6 in
    place, F.pad), as vision/models.py ran them before its hand-written backwards."""
    from torch import nn
    from torch.nn import functional as F

    from fastcore_cv.vision import models

    class TorchPadConv(models.SameConv2d):
        def forward(self, x):
            (kh, kw), (sh, sw) = self.kernel_size, self.stride
            ph, pw = models.same_pad(x.shape[-2], kh, sh), models.same_pad(x.shape[-1], kw, sw)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)

    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, models.ReLU6):
            m.__class__ = nn.ReLU6
        elif isinstance(m, models.SameConv2d):
            m.__class__ = TorchPadConv
    return twin


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("size", [64, 45])  # 45: odd sizes, other pads at every stride 2
def test_relu6_and_pad_backwards_match_torchs_ops(layout, size):
    """The training forward and every gradient of EfficientNet-Lite0 with the hand-written
    ReLU6/pad backwards equal those of torch's ops: the same kernels on the same values
    (measured bit-identical), so 4 eps of each tensor's scale is all that is allowed."""
    torch.manual_seed(0)
    ours = efficientnet_lite0(pretrained=False, num_classes=5, drop_path=0.0)
    ref = _torch_ops_twin(ours)
    x = torch.randn(4, 3, size, size) * 2  # a spread that reaches both ReLU6 kinks
    results = []
    for model in (ours, ref):
        model.train()
        torch.manual_seed(1)  # the same dropout mask
        with channels_last(model) if layout == "channels_last" else contextlib.nullcontext():
            out = model(x)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((out.detach(), grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert len(grads_a) == len(grads_b) > 100
    for a, b in [(out_a, out_b), *zip(grads_a, grads_b, strict=True)]:
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=0, atol=4 * EPS * scale)
    # the fast ops really ran in training, and eval (export) keeps torch's
    act = ours.body[1].depthwise.act
    assert type(act(torch.ones(1, requires_grad=True) * 1).grad_fn).__name__.startswith(
        "_ReLU6InplaceBackward"
    )
    ours.eval()
    assert type(act(torch.ones(1, requires_grad=True) * 1).grad_fn).__name__ == (
        "HardtanhBackward0"
    )


def test_relu6_saturates_and_passes_gradient_where_torchs_does():
    """At the kinks: x = 0 and x = 6 get no gradient, NaN stays NaN, as nn.ReLU6."""
    from fastcore_cv.vision.models import ReLU6

    values = torch.tensor([-1.0, 0.0, 1e-7, 3.0, 6.0 - 4e-7, 6.0, 7.0, float("nan")])
    outs, grads = [], []
    for act in (ReLU6().train(), torch.nn.ReLU6(inplace=True)):
        x = values.clone().requires_grad_(True)
        y = act(x * 1)
        y.sum().backward()
        outs.append(y.detach()), grads.append(x.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0, equal_nan=True)
