"""Partial fine-tuning (issue 16): ``fine_tune`` with the unfrozen stage on the whole model
against ``freeze_to(n)`` (body[:n] frozen, its eval-mode activations cached once, body[n:] +
head trained on them; vision/partial.py), on the digits folder at the demo's size and on the
textures folder at 224 px. Same seeds, same epochs, same plan (head LR from the seeded
lr_find sweeps, 100 head steps, base LR); only the second stage differs.

Columns: the activation cache's build time and size (train + valid), the second stage's
training time (the recorder's epoch times: steps + validation + the eval-mode train loss),
the whole ``fine_tune`` (plan + run_plan, including the head stage's feature cache and LR
sweeps) and the final validation error. EfficientNet-Lite0's body is 19 modules: the stem,
16 MBConv blocks, the 1x1 conv to 1280, the pool; n=4 freezes the stem and the first three
blocks (everything at 112 and 56 px at a 224 px input), n=9 the first parameter group
(stem + 8 blocks, down to 14 px).

Usage: python bench/partial_finetune.py [--quick] [--threads N]
(writes the "Partial fine-tuning (freeze_to)" section of RESULTS.md; ~3-4 min on a quiet
2-core machine; ``--quick``: 1 epoch, textures at 64 px, one n, prints only; ``--threads``:
torch threads, default 2; 1 on a loaded machine, where 2 threads wait for each other)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import fastcore_cv
from fastcore_cv.vision.datasets import write_digits_folder, write_texture_folder
from fastcore_cv.vision.recipes import DIGITS_RECIPE, Recipe
from fastcore_cv.vision.transfer import recipe_learner

SECTION = "Partial fine-tuning (freeze_to)"
SPLITS = (None, 4, 9)  # None: the whole model trains in the second stage
DIGITS_EPOCHS = 4  # DIGITS_RECIPE trains 8; 4 keeps the run short, the same for every variant
TEXTURE_EPOCHS = 3  # Recipe's default


def run(folder: Path, recipe: Recipe) -> dict[str, float]:
    """One fine_tune as ``recipe`` says: its figures."""
    t0 = time.perf_counter()
    learn = recipe_learner(folder, recipe, progress="silent")
    plan = learn.plan_fine_tune(**recipe.fine_tune_kwargs())
    learn.run_plan(plan)
    total = time.perf_counter() - t0
    stage = sum(e.time for e in learn.recorder.history.epochs)
    cache = learn.partial.cache if learn.partial is not None else None
    err = learn.validate()["error_rate"]
    return {
        "cache_s": cache.seconds if cache else float("nan"),
        "cache_mib": cache.nbytes / 2**20 if cache else float("nan"),
        "stage_s": stage,
        "total_s": total,
        "error": 100 * float(err),
    }


def main(quick: bool, threads: int = 2) -> str:
    fastcore_cv.set_num_threads(threads)
    splits = (None, 9) if quick else SPLITS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        digits = write_digits_folder(Path(tmp) / "digits", size=DIGITS_RECIPE["data"]["size"])
        textures = write_texture_folder(Path(tmp) / "textures")  # 96 px crops, 108 + 108
        digits_epochs, texture_epochs = (1, 1) if quick else (DIGITS_EPOCHS, TEXTURE_EPOCHS)
        size = 64 if quick else 224
        cases = [
            ("digits", digits, Recipe(**DIGITS_RECIPE["data"], epochs=digits_epochs)),
            ("textures", textures, Recipe(size=size, bs=32, augment=False, epochs=texture_epochs)),
        ]
        for name, folder, base in cases:
            for n in splits:
                recipe = Recipe(**{**base.as_dict(), "freeze_to": n})
                got = run(folder, recipe)
                rows.append((name, recipe, n, got))
                print(name, n, got, flush=True)
    lines = [
        "| data | size | bs | epochs | second stage | cache build s | cache MiB | "
        "second stage s | vs whole | fine_tune total s | vs whole | valid error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    whole = {}
    for name, recipe, n, got in rows:
        if n is None:
            whole[name] = got
        ref = whole[name]
        variant = "whole model" if n is None else f"freeze_to({n})"
        cache = "-" if n is None else f"{got['cache_s']:.1f}"
        mib = "-" if n is None else f"{got['cache_mib']:.1f}"
        lines.append(
            f"| {name} | {recipe.size} | {recipe.bs} | {recipe.epochs} | {variant} | {cache} | "
            f"{mib} | {got['stage_s']:.1f} | {ref['stage_s'] / got['stage_s']:.2f}x | "
            f"{got['total_s']:.1f} | {ref['total_s'] / got['total_s']:.2f}x | "
            f"{got['error']:.1f}% |"
        )
    lines += [
        "",
        "Same seed (42: split, head init, shuffles), same plan rule and epochs in every row; "
        f"augmentation off (the cache holds one view of each image). {threads} thread(s). The "
        "cache build is inside the second stage's setup, not its epoch times; 'fine_tune total' "
        "includes it. Digits: 1,797 images, 359 in validation (one image = 0.28%); textures: "
        "108 + 108 crops (one image = 0.93%). Measured on a shared machine with other jobs "
        "running: ratios within one run, absolute times noisy (load average at the end: "
        f"{os.getloadavg()[0]:.1f}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    args = sys.argv[1:]
    quick = "--quick" in args
    threads = int(args[args.index("--threads") + 1]) if "--threads" in args else 2
    body = main(quick, threads)
    print(body)
    if not quick:  # a smoke run does not replace the recorded figures
        extra = f" --threads {threads}" if threads != 2 else ""
        replace_section(SECTION, body, f"python bench/partial_finetune.py{extra}")
