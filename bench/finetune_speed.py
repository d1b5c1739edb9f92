"""Fine-tuning speed of EfficientNet-Lite0 (issue 16): train img/s of the whole-model stage
at 224 px and at the demo's size, on 1 and 2 threads, for three variants: "contiguous" (the
issue's starting point: torch's in-place ReLU6 and F.pad, NCHW), "channels_last" (the same
ops in NHWC) and "channels_last+ops" (NHWC with vision/models.py's one-pass ReLU6 and the
pad backward that returns a view: what the project runs). Also the fraction of the fp32 peak
reached, the per-op profile of each variant, the body's eval forward (the feature cache),
and ``fine_tune`` end to end on the textures folder at 224 px (contiguous vs the project's).

Method (a shared, noisy machine): variants are interleaved within one run (A/B/A/B rounds
of a few steps after one warm-up step each) and the median step is kept. A step is the
Learner's (``learner.step.train_step``: forward, loss, backward, torch SGD momentum 0.9) on
one real batch of the textures photos, BatchNorm in train mode; decoding is not timed.
FLOPs per image are counted from the model by ``torch.utils.flop_counter.FlopCounterMode``
on a forward, x3 for forward + backward (``flops_per_image``; convolutions and matmuls only:
BatchNorm, ReLU6 and the SGD update are memory-bound work it does not count). The "% of
peak" column uses the larger of the nominal fp32 peak (the CPU's clock from /proc/cpuinfo x
32 FLOP/cycle per core) and the best of a few 2048^3 float32 ``torch.mm`` measured in the
same run (an Intel core with two 512-bit FMA pipes measured ~2.5x the nominal figure).

Usage: python bench/finetune_speed.py [--quick]
(writes the "Fine-tuning speed at 224 px" section of RESULTS.md; ~3-4 min on a quiet 2-core
machine; ``--quick``: fewer steps, no 1-thread run at 224 px, prints only: a smoke check)
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

import fastcore_cv
from fastcore_cv.learner.step import train_step
from fastcore_cv.vision import ImageDataLoaders, models
from fastcore_cv.vision.datasets import write_texture_folder
from fastcore_cv.vision.features import fold_batchnorm
from fastcore_cv.vision.models import BodyHead, channels_last, efficientnet_lite0, make_head
from fastcore_cv.vision.recipes import DIGITS_RECIPE

SECTION = "Fine-tuning speed at 224 px"
DEMO_SIZE, DEMO_BS = DIGITS_RECIPE["data"]["size"], DIGITS_RECIPE["data"]["bs"]
BS_224 = 32  # the batch size
VARIANTS = ("contiguous", "channels_last", "channels_last+ops")
BEST = VARIANTS[-1]
FOLDED = "channels_last+folded BN"


class TorchPadConv(models.SameConv2d):
    """SameConv2d as before the pad backward (vision/models.py ``_Pad``): F.pad, torch's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if sh == sw == 1 and kh % 2 == kw % 2 == 1:
            return F.conv2d(x, self.weight, None, 1, (kh // 2, kw // 2), 1, self.groups)
        ph, pw = models.same_pad(x.shape[-2], kh, sh), models.same_pad(x.shape[-1], kw, sw)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def torch_ops(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (in place) with torch's nn.ReLU6(inplace=True) and F.pad: the issue's path."""
    for m in model.modules():
        if isinstance(m, models.ReLU6):
            m.__class__ = torch.nn.ReLU6
        elif isinstance(m, models.SameConv2d):
            m.__class__ = TorchPadConv
    return model


def variant_model(variant: str) -> BodyHead:
    model = new_model()
    return model if variant == BEST else torch_ops(model)


TOP_OPS = 8


def layout(model: torch.nn.Module, variant: str) -> contextlib.AbstractContextManager:
    if variant.startswith("channels_last"):
        return channels_last(model)
    return contextlib.nullcontext()


def new_model(classes: int = 3) -> BodyHead:
    """The fine-tuned model as ``vision_learner`` builds it: the Lite0 body, a linear head."""
    torch.manual_seed(0)
    body = efficientnet_lite0(pretrained=True, num_classes=classes).body
    return BodyHead(body, make_head(1280, classes, "linear"), 1280)


def nominal_gflops(threads: int) -> float:
    """fp32 peak from /proc/cpuinfo: threads x clock x 32 FLOP/cycle (two 256-bit FMA pipes,
    AVX2/FMA or Zen 4's double-pumped AVX-512), the ceiling OpenBLAS sgemm reaches here
    (/work/shared/notes/kernel-performance.md: 150-195 GFLOP/s on 2 cores at 2.6 GHz)."""
    text = Path("/proc/cpuinfo").read_text()
    mhz = float(text.split("cpu MHz", 1)[1].split(":", 1)[1].split()[0])
    return threads * mhz * 1e6 * 32 / 1e9


def peak_gflops(threads: int, n: int = 2048, reps: int = 3) -> float:
    fastcore_cv.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flops_per_image(size: int) -> float:
    """Forward + backward FLOPs of one image: 3x the forward counted by FlopCounterMode
    (each conv/matmul's backward is a grad-input and a grad-weight product of the forward's
    cost; an upper bound, the stem's grad-input is not computed). The backward is not
    counted directly: torch 2.13's counter ignores ``groups`` in convolution_backward and
    counts the 16 depthwise convs as full ones (31.4 GFLOP instead of ~1.5 at 224 px)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, x = new_model(), torch.randn(2, 3, size, size)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(x)
    return 3 * counter.get_total_flops() / 2


def batch(folder: Path, size: int, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    dls = ImageDataLoaders.from_folder(folder, size=size, bs=bs, augment=False, seed=0)
    x, y = next(iter(dls.train))
    return x, y


def step_times(size: int, bs: int, threads: int, folder: Path, rounds: int, steps: int):
    """{variant: [seconds per step]}: one warm-up step each, then A/B rounds of ``steps``."""
    fastcore_cv.set_num_threads(threads)
    x, y = batch(folder, size, bs)
    loss = torch.nn.CrossEntropyLoss()
    setups = {}
    for v in VARIANTS:
        model = variant_model(v)
        setups[v] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def run(v: str, n: int, keep: bool) -> None:
        model, opt = setups[v]
        with layout(model, v):
            for _ in range(n):
                t = _timed(lambda: train_step(model, opt, loss, x, y, "bench"))
                if keep:
                    times[v].append(t)

    for v in VARIANTS:
        run(v, 1, keep=False)
    for _ in range(rounds):
        for v in VARIANTS:
            run(v, steps, keep=True)
    return times


def profile_ops(size: int, bs: int, folder: Path, threads: int) -> dict[str, list[str]]:
    """Top ops by self CPU time of one profiled step per variant (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile

    fastcore_cv.set_num_threads(threads)
    x, y = batch(folder, size, bs)
    loss, out = torch.nn.CrossEntropyLoss(), {}
    for v in VARIANTS:
        model = variant_model(v)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        with layout(model, v):
            train_step(model, opt, loss, x, y, "bench")
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train_step(model, opt, loss, x, y, "bench")
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
        out[v] = [
            f"{e.key} {e.self_cpu_time_total / 1e3:.0f} ms "
            f"({100 * e.self_cpu_time_total / total:.0f}%)"
            for e in events[:TOP_OPS]
        ]
    return out


def eval_forward(size: int, bs: int, folder: Path, rounds: int) -> dict[str, float]:
    """img/s of the body in eval mode under no_grad (what the feature cache runs); the
    third variant also folds BatchNorm into the convs (vision/features.py fold_batchnorm)."""
    x, _ = batch(folder, size, bs)
    body = new_model().body.eval()
    # eval runs torch's ops in every variant (vision/models.py)
    names = (*VARIANTS[:2], FOLDED)
    times: dict[str, list[float]] = {v: [] for v in names}
    with torch.no_grad():
        for r in range(rounds + 1):
            for v in names:
                with layout(body, v):
                    run = fold_batchnorm(body) if v == FOLDED else body
                    t = _timed(lambda run=run: run(x))
                if r:  # round 0 warms up
                    times[v].append(t)
    return {v: bs / statistics.median(t) for v, t in times.items()}


def fine_tune_end_to_end(
    folder: Path, epochs: int, rounds: int
) -> dict[str, tuple[float, float, float]]:
    """{variant: (feature cache s, total s, valid error)}, medians over ``rounds``
    interleaved runs of vision_learner + fine_tune at 224 px, after one untimed run of each
    variant (Numba's compile, oneDNN's primitives and the allocator's first pages would
    otherwise land on whichever variant runs first). The cache is built first to time it;
    fine_tune then reuses it."""
    from fastcore_cv.vision.transfer import vision_learner

    def run(v: str) -> tuple[float, float, float]:
        dls = ImageDataLoaders.from_folder(folder, size=224, bs=BS_224, augment=False, seed=0)
        t = time.perf_counter()
        learn = vision_learner(dls, "efficientnet_lite0", seed=0, progress="silent")
        learn.channels_last = learn.fold_bn = v != "contiguous"
        if v != BEST:
            torch_ops(learn.model)
        features = learn.features().seconds
        learn.fine_tune(epochs)
        err = learn.validate()["error_rate"]
        return features, time.perf_counter() - t, float(err)

    variants = (VARIANTS[0], BEST)
    for v in variants:
        run(v)
    runs = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            runs[v].append(run(v))
            print("fine_tune", v, runs[v][-1], flush=True)
    return {v: tuple(statistics.median(c) for c in zip(*rs, strict=True)) for v, rs in runs.items()}


def main(quick: bool) -> str:
    threads_224 = (2,) if quick else (2, 1)
    rounds, steps = (1, 1) if quick else (2, 2)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_texture_folder(Path(tmp) / "textures")  # 96 px crops, 108 + 108
        measured = {t: peak_gflops(t) for t in (1, 2)}
        nominal = {t: nominal_gflops(t) for t in (1, 2)}
        # The ceiling is the larger: cores with two 512-bit FMA pipes run sgemm above 32/cycle.
        peaks = {t: max(nominal[t], measured[t]) for t in (1, 2)}
        print("peak GFLOP/s, measured:", measured, "nominal:", nominal, flush=True)
        flops = {s: flops_per_image(s) for s in (224, DEMO_SIZE)}
        print("GFLOP per image (fwd+bwd):", {s: f / 1e9 for s, f in flops.items()}, flush=True)
        head = "| size | bs | threads | variant | s/step (median) | img/s | vs contiguous | "
        head += "% of fp32 peak |"
        lines += [head, "|---|---|---|---|---|---|---|---|"]
        runs = [(224, BS_224, t) for t in threads_224] + [(DEMO_SIZE, DEMO_BS, t) for t in (2, 1)]
        for size, bs, threads in runs:
            times = step_times(size, bs, threads, folder, rounds, steps if size == 224 else 3)
            base = statistics.median(times["contiguous"])
            for v in VARIANTS:
                med = statistics.median(times[v])
                ips = bs / med
                pct = 100 * flops[size] * ips / (peaks[threads] * 1e9)
                row = f"| {size} | {bs} | {threads} | {v} | {med:.3g} | {ips:.1f} | "
                lines.append(row + f"{base / med:.2f}x | {pct:.1f}% |")
                print(lines[-1], flush=True)
        fastcore_cv.set_num_threads(2)
        fwd = eval_forward(224, BS_224, folder, rounds=2 if quick else 3)
        print("eval forward img/s:", fwd, flush=True)
        prof = profile_ops(224, BS_224, folder, threads=2)
        e2e = fine_tune_end_to_end(folder, epochs=1, rounds=1 if quick else 3)
        print("fine_tune:", e2e, flush=True)
    load = os.getloadavg()[1]
    lines += [
        "",
        "Variants: contiguous = the issue's starting point (NCHW, torch's in-place ReLU6 "
        "and F.pad); channels_last = the same ops in NHWC; channels_last+ops = NHWC with "
        "vision/models.py's one-pass in-place ReLU6 and the pad backward returning a view "
        "(the project's path; same numbers: tests/vision/test_channels_last.py). Load average "
        f"(5 min) at the end of the run: {load:.1f} on 2 cores: compare rows within a run.",
        "",
        f"fp32 peak: the larger of the nominal one (cpuinfo clock x 32 FLOP/cycle per core: "
        f"{nominal[1]:.0f} GFLOP/s on 1 thread, {nominal[2]:.0f} on 2) and a 2048^3 torch.mm "
        f"measured in this run ({measured[1]:.0f} and {measured[2]:.0f}). "
        "FLOPs per image, forward + backward (3x the forward counted by "
        f"FlopCounterMode, convs + matmuls): {flops[224] / 1e9:.2f} GFLOP at 224 px, "
        f"{flops[DEMO_SIZE] / 1e9:.3f} at {DEMO_SIZE} px.",
        "",
        "Body eval forward (no_grad, the feature cache's work), 224 px, bs 32, 2 threads: "
        + ", ".join(f"{v} {ips:.1f} img/s" for v, ips in fwd.items())
        + f" ({fwd['channels_last'] / fwd['contiguous']:.2f}x; folded BN "
        f"{fwd[FOLDED] / fwd['contiguous']:.2f}x).",
        "",
        "`fine_tune(1)` end to end on the textures folder at 224 px (vision_learner, lr_find "
        "sweeps and 100 head steps on cached features, 1 unfrozen epoch of 108 images), 2 threads, "
        "median of interleaved runs after one warm-up run of each. contiguous = the path "
        "before issue 16 (NCHW, torch's ReLU6 and F.pad, BatchNorm unfolded); "
        f"{BEST} = the project's (also BatchNorm folded in the no-grad passes: feature "
        "cache, validation; VisionLearner.fold_bn):",
        "",
        "| variant | feature cache s | total s | valid error |",
        "|---|---|---|---|",
    ]
    lines += [f"| {v} | {f:.1f} | {s:.1f} | {100 * e:.1f}% |" for v, (f, s, e) in e2e.items()]
    ratio = e2e["contiguous"][1] / e2e[BEST][1]
    lines += ["", f"End to end: {ratio:.2f}x.", ""]
    for v, ops in prof.items():
        lines += [f"Top ops by self CPU time, one step, 224 px, bs 32, 2 threads, {v}:", ""]
        lines += [f"{i + 1}. {op}" for i, op in enumerate(ops)] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    quick = "--quick" in sys.argv[1:]
    body = main(quick)
    print(body)
    if not quick:  # a smoke run does not replace the recorded figures
        replace_section(SECTION, body, "python bench/finetune_speed.py")
