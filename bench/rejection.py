"""Rejection and calibration, measured: a texture classifier shown photos it was never meant for.

EfficientNet-Lite0 (ImageNet weights, frozen) with a new linear head trained on cached
features of scikit-image's brick/grass/gravel crops (vision/datasets.py), at two crop sizes
(48 px: no validation error; 24 px: a few), exported with ``learn.export_onnx`` and calibrated
on one half of the validation crops (temperature and the threshold for 99% accuracy on
accepted, export/calibration.py). Then, with the torch-free Predictor: the other half (in
distribution: coverage, accuracy on accepted, ECE before and after temperature scaling) and
out-of-distribution images (crops of scikit-image photos, its LFW faces, scikit-learn's
digits): the share answered "not sure". Offline, ~2-3 minutes on 2 busy cores.

Usage: python bench/rejection.py [--no-write]   (writes "Rejection and calibration" to
bench/RESULTS.md through bench/report.py replace_section)
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

import fastcore_cv
from fastcore_cv.export import Predictor
from fastcore_cv.export import calibration as cal
from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_texture_folder
from fastcore_cv.vision.transfer import vision_learner

sys.path.insert(0, str(Path(__file__).parent))
from report import replace_section  # noqa: E402

TITLE = "Rejection and calibration"
COMMAND = "python bench/rejection.py"
# Two tasks at 64 px: 48 px crops (as easy as the lesson's textures: no validation error) and
# 24 px crops (harder: a few errors, so the temperature has something to fit). (crop, crops
# across each 512 px photo at STRIDE 40.)
SIZE, STRIDE = 64, 40
CROPS = ((48, 12), (24, 13))
HEAD_EPOCHS, HEAD_LR = 4, 1e-2
# The photos scikit-image ships inside its wheel (others need a download: never here).
PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page",
          "horse", "hubble_deep_field", "immunohistochemistry", "text", "clock", "retina",
          "logo", "colorwheel", "cell", "shepp_logan_phantom"]  # fmt: skip


def photo_crops(per_photo: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Random square crops (50-100% of the short side) of scikit-image's photos, as RGB."""
    rng, out = np.random.default_rng(seed), []
    for name in PHOTOS:
        p = getattr(data, name)()
        p = np.stack([p] * 3, -1) if p.ndim == 2 else p[..., :3]
        if p.dtype != np.uint8:
            p = (255 * (p.astype(np.float64) / max(1, p.max()))).astype(np.uint8)
        for _ in range(per_photo):
            s = int(min(p.shape[:2]) * rng.uniform(0.5, 1.0))
            t, left = rng.integers(0, p.shape[0] - s + 1), rng.integers(0, p.shape[1] - s + 1)
            out.append(np.ascontiguousarray(p[t : t + s, left : left + s]))
    return out


def faces(n: int = 100) -> list[np.ndarray]:
    """scikit-image's LFW subset (25x25 grey faces), the first ``n``, as 8-bit RGB."""
    grey = (255 * data.lfw_subset()[:n]).astype(np.uint8)
    return [np.stack([g] * 3, -1) for g in grey]


def digits(n: int = 100) -> list[np.ndarray]:
    """scikit-learn's 8x8 digits, the first ``n``, upscaled to 64 px RGB."""
    from sklearn.datasets import load_digits

    out = []
    for d in load_digits().images[:n]:
        img = Image.fromarray(np.rint(d * 255 / 16).astype(np.uint8)).resize((64, 64))
        out.append(np.asarray(img.convert("RGB")))
    return out


def measure(root: Path, crop: int, cols: int, ood: dict[str, list[np.ndarray]]) -> dict:
    start = time.perf_counter()
    folder = write_texture_folder(root / f"textures{crop}", size=crop, stride=STRIDE)

    def _column(path: Path) -> int:
        return int(path.stem) % cols

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normalisation statistics note: ImageNet's are used
        dls = ImageDataLoaders.from_folder(folder, size=SIZE, bs=32, augment=False)
        learn = vision_learner(dls, progress="silent")
    learn.fit_one_cycle(HEAD_EPOCHS, HEAD_LR)
    valid = list(zip(dls.valid_ds.items, dls.valid_ds.labels, strict=True))
    # Left columns calibrate (left edge <= 200 + 48 px), right columns test (>= 280): no
    # pixel is in both.
    calib = [(p, dls.classes[int(y)]) for p, y in valid if _column(p) <= 5]
    test = [(p, int(y)) for p, y in valid if _column(p) >= 7]
    path = root / f"textures{crop}.onnx"
    report = learn.export_onnx(path, valid=calib)
    predictor = Predictor(path)
    x = [p for p, _ in test]
    y = np.array([t for _, t in test])
    raw = np.concatenate([predictor.raw_outputs(np.stack([_pre(predictor, i) for i in x[k:k + 32]]))
                          for k in range(0, len(x), 32)])  # fmt: skip
    before = cal.probabilities(raw, predictor.info.output)
    after = cal.probabilities(raw, predictor.info.output, predictor.temperature)
    accepted = after.max(1) >= predictor.threshold
    right = after.argmax(1) == y
    rejected = {k: float(np.mean([not predictor.predict(i).accepted for i in v]))
                for k, v in ood.items()}  # fmt: skip
    counts = {k: len(v) for k, v in ood.items()}
    every = sum(rejected[k] * counts[k] for k in ood) / sum(counts.values())
    return {
        "crop": crop,
        "calibration": report.calibration,
        "train_images": len(dls.train_ds),
        "test_images": len(y),
        "coverage": float(accepted.mean()),
        "accuracy_accepted": float(right[accepted].mean()) if accepted.any() else float("nan"),
        "accuracy": float(right.mean()),
        "ece_before": cal.ece(before, y),
        "ece_after": cal.ece(after, y),
        "rejected": rejected,
        "ood_counts": counts,
        "rejected_all": every,
        "seconds": time.perf_counter() - start,
    }


def _pre(predictor: Predictor, image) -> np.ndarray:
    from fastcore_cv.vision.preprocessing import preprocess

    return preprocess(image, predictor.config)


def table(r: dict) -> str:
    c = r["calibration"]
    lines = [
        f"**{r['crop']} px crops** ({r['train_images']} training images; run "
        f"{r['seconds']:.0f} s). Calibrated at export on {c['valid_images']} validation crops "
        f"(left half of the validation photos): {cal.describe(c)}.",
        "",
        "| set | images | answered 'not sure' | accepted | accuracy on accepted | accuracy "
        "| ECE before T | ECE after T |",
        "|---|---|---|---|---|---|---|---|",
        f"| textures, held out (right half) | {r['test_images']} | {1 - r['coverage']:.1%} | "
        f"{r['coverage']:.1%} | {r['accuracy_accepted']:.1%} | {r['accuracy']:.1%} | "
        f"{r['ece_before']:.3f} | {r['ece_after']:.3f} |",
    ]
    for name, share in r["rejected"].items():
        lines.append(f"| OOD: {name} | {r['ood_counts'][name]} | {share:.1%} | "
                     f"{1 - share:.1%} | - | - | - | - |")  # fmt: skip
    lines += [
        f"| OOD: all | {sum(r['ood_counts'].values())} | {r['rejected_all']:.1%} | "
        f"{1 - r['rejected_all']:.1%} | - | - | - | - |",
    ]
    return "\n".join(lines)


INTRO = (
    f"EfficientNet-Lite0 at {SIZE} px (ImageNet weights, frozen) + a linear head ({HEAD_EPOCHS} "
    f"one-cycle epochs at {HEAD_LR:g} on cached features) on scikit-image's brick/grass/gravel "
    "crops; exported with `learn.export_onnx(path, valid=...)` (temperature + the threshold "
    "for 99% accuracy on accepted validation images), then the torch-free Predictor on held-out "
    "crops and on out-of-distribution images. ECE: 15 equal-width confidence bins. Images "
    "accepted out of distribution are wrong by definition."
)


def main(argv: list[str]) -> int:
    fastcore_cv.set_num_threads(1)
    ood = {"photo crops": photo_crops(), "LFW faces": faces(), "digits": digits()}
    with tempfile.TemporaryDirectory(prefix="fastcore_cv_rejection_") as tmp:
        results = [measure(Path(tmp), crop, cols, ood) for crop, cols in CROPS]
    text = "\n\n".join([INTRO, *map(table, results)])
    print(text)
    if "--no-write" not in argv:
        replace_section(TITLE, text, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
