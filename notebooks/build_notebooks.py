"""Write the lesson's notebooks from the cells below, without outputs (``make notebooks``-style:
edit here, run ``python notebooks/build_notebooks.py``; tests/test_notebooks.py checks the
committed .ipynb files equal what this writes, and executes them).

Every cell that shows a number asserts it, so a notebook that prints a wrong number fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# Each cell's source is kept as written:
# fmt: off
MATHS = [
    ("md", """# Lesson 2, the maths: tensors, products, argmax and SGD

Every number below is computed here, on real data, and checked in the cell that shows it
(`assert`): the kernels of `fastcore_cv.kernels` (Numba), NumPy and torch must agree.
Run it top to bottom (`Run > Run All Cells`); it takes about a minute on 2 cores."""),
    ("code", """# fastcore_cv first, deliberately: its thread policy must run before numpy
# loads (README, "Threads"), so it stays above the sorted imports.
import fastcore_cv  # noqa: I001

import numpy as np
import torch

from fastcore_cv import kernels
from fastcore_cv import lesson_pictures as lp
from fastcore_cv.tour import median_seconds

fastcore_cv.set_num_threads(2)"""),
    ("md", """## Tensors and rank

> A tensor is an array of a regular shape; its **rank** is how many axes it has.

A photo is rank 3 (height x width x colour channels); a mini-batch of photos is rank 4."""),
    ("code", """import skimage.data  # a real photo that ships inside scikit-image (offline)

photo = skimage.data.chelsea()
print("photo:", photo.dtype, photo.shape, "rank", photo.ndim)
assert photo.ndim == 3 and photo.shape[2] == 3
lp.tensor_ranks(photo)"""),
    ("code", """from fastcore_cv.vision import ImageDataLoaders, write_digits_folder

# The embedded digits, written as a folder of PNGs (one folder per class), in this folder.
digits = write_digits_folder("digits")
dls = ImageDataLoaders.from_folder(digits, seed=42, size=32, bs=16, augment=False, flip=False)
xb, yb = next(iter(dls.valid))
print("one image:", tuple(xb[0].shape), "rank", xb[0].ndim, "(channels, height, width)")
print("a batch:  ", tuple(xb.shape), "rank", xb.ndim, "| labels:", tuple(yb.shape), "rank", yb.ndim)
assert xb.shape == (16, 3, 32, 32) and yb.shape == (16,)"""),
    ("md", """## The dot product

"Summing up a bunch of things multiplied together": `x . y = sum_i x_i * y_i`."""),
    ("code", """rng = np.random.default_rng(0)
x, y = rng.standard_normal((2, 100_000)).astype(np.float32)

by_hand = 0.0
for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
    by_hand += xi * yi
reference = float(np.dot(x.astype(np.float64), y.astype(np.float64)))
tx, ty = torch.from_numpy(x), torch.from_numpy(y)
answers = {
    "by hand": by_hand,
    "kernels.dot": float(kernels.dot(x, y)),
    "np.dot": float(np.dot(x, y)),
    "torch.dot": float(torch.dot(tx, ty)),
}
scale = float(np.abs(x).dot(np.abs(y)))  # float32 round-off grows with this sum
for name, value in answers.items():
    print(f"{name:12} {value: .6f}")
    assert abs(value - reference) <= 1e-5 * scale, name

times = {
    "kernels.dot": median_seconds(lambda: kernels.dot(x, y), 20),
    "np.dot": median_seconds(lambda: np.dot(x, y), 20),
}
print({k: f"{v * 1e6:.0f} us" for k, v in times.items()})
assert all(t > 0 for t in times.values())"""),
    ("md", """## The matrix product

Each cell of `C = A B` is one dot product: row `i` of `A` times column `j` of `B`
(the pictures of matrixmultiplication.xyz). The same numbers, from `kernels.matmul`:"""),
    ("code", """A = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
B = np.array([[7, 8], [9, 10], [11, 12]], np.float32)

by_hand = np.zeros((2, 2), np.float32)
for i in range(2):
    for j in range(2):
        by_hand[i, j] = sum(A[i, t] * B[t, j] for t in range(3))
print(by_hand)
assert np.array_equal(by_hand, kernels.matmul(A, B))
assert np.array_equal(kernels.matmul(A, B), A @ B)
assert np.array_equal(A @ B, (torch.from_numpy(A) @ torch.from_numpy(B)).numpy())
lp.matrix_product_figure(A, B)"""),
    ("code", """a, b = rng.standard_normal((2, 256, 256)).astype(np.float32)
ref = a.astype(np.float64) @ b.astype(np.float64)
tol = 1e-5 * np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)  # round-off bound
for name, got in (
    ("kernels.matmul", kernels.matmul(a, b)),
    ("numpy", a @ b),
    ("torch", (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()),
):
    err = np.abs(got - ref)
    print(f"{name:15} max error {err.max():.1e}")
    assert np.all(err <= tol), name
ta, tb = torch.from_numpy(a), torch.from_numpy(b)
times = {
    "kernels.matmul": median_seconds(lambda: kernels.matmul(a, b), 10),
    "numpy": median_seconds(lambda: a @ b, 10),
    "torch": median_seconds(lambda: ta @ tb, 10),
}
print({k: f"{v * 1e3:.2f} ms" for k, v in times.items()})"""),
    ("md", """## argmax: the predicted class

A classifier turns scores into a probability matrix (one row per image, one column per
class); the prediction is the column with the highest probability, `argmax`."""),
    ("code", """scores = rng.standard_normal((8, 10)).astype(np.float32) * 3
probs = kernels.softmax(scores)
assert np.allclose(probs.sum(axis=1), 1, atol=1e-6)
predicted = kernels.argmax(probs)
print(np.round(probs[:3], 2))
print("predicted classes:", predicted)
assert np.array_equal(predicted, np.argmax(probs, axis=1))
assert np.array_equal(predicted, torch.argmax(torch.from_numpy(probs), dim=1).numpy())
assert np.array_equal(predicted, np.argmax(scores, axis=1))  # softmax keeps the order"""),
    ("md", """## y = a1 x1 + a2, fitted by mini-batch SGD

With `x2 = 1` the line is a matrix product, `y_hat = X a` with `X = [x1, 1]`. SGD starts
from a wrong line and, one mini-batch at a time, steps the weights down the gradient of the
mean squared error: `a -= lr * 2/n X^T (X a - y)` (the kernels: `matmul`, `sgd_update`)."""),
    ("code", """x, y = lp.line_data()
fit = lp.sgd_line_fit(x, y, lr=0.1, epochs=10, bs=10)
best = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
print(f"SGD found      y = {fit.weights[-1][0]:.3f} x1 + {fit.weights[-1][1]:.3f}")
print(f"least squares  y = {best[0]:.3f} x1 + {best[1]:.3f}   (the data: y = 3 x1 + 2 + noise)")
assert np.allclose(fit.weights[-1], best, atol=0.05)
assert fit.losses[-1] < fit.losses[0] / 20
lp.sgd_animation(fit, frames=20)  # shows itself as an animation (HTML + JS, no ffmpeg)"""),
    ("md", """## Epochs and mini-batches

An **epoch** is one pass over all the data; a **mini-batch** is the slice one weight
update sees. 100 points in mini-batches of 10: 10 updates per epoch. Full-batch gradient
descent (one batch of 100) makes one update per epoch, so after the same 10 epochs it is
far behind."""),
    ("code", """epochs = 10
for bs in (10, 100):
    run = lp.sgd_line_fit(x, y, lr=0.1, epochs=epochs, bs=bs)
    updates = len(run.weights) - 1
    print(
        f"bs={bs:3}: {updates // epochs:2} mini-batches per epoch, {updates:3} updates, "
        f"loss {run.losses[-1]:.3f}"
    )
    assert updates == epochs * -(-len(y) // bs)
    if bs == 10:
        mini = run.losses[-1]
assert mini < run.losses[-1] / 2"""),
    ("md", """## Regularisation: train well on the data seen AND on the data not seen yet

An MLP on 300 real handwritten digits (8 x 8 pixels) memorises them: its training loss
falls far below the validation loss. Weight decay (pulling weights towards zero) and
augmentation (each digit also shifted by one pixel, up, down, left, right) narrow that gap.
The gap here is the validation loss minus the loss on the (un-augmented) training images,
both measured in eval mode after training; every run makes the same number of updates.
Too much regularisation underfits: watch the validation loss too."""),
    ("code", """from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from fastcore_cv.learner import DataLoaders, Learner, error_rate, set_seed

d = load_digits()
images, labels = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
order = np.random.default_rng(42).permutation(len(labels))
train, valid = order[:300], order[1000:]


def shifted(imgs, ys):
    moves = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))
    return np.concatenate([np.roll(imgs, m, axis=(1, 2)) for m in moves]), np.tile(ys, len(moves))


def gap(weight_decay, augment):
    xt, yt = shifted(images[train], labels[train]) if augment else (images[train], labels[train])
    set_seed(0)
    xv = images[valid].reshape(len(valid), -1)
    dls = DataLoaders.from_tensors(
        xt.reshape(len(xt), -1), yt, xv, labels[valid], bs=32, shuffle=True, seed=0
    )
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

    def opt(params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    learn = Learner(model, dls, opt_func=opt, metrics=[error_rate], seed=0, progress="silent")
    learn.fit_one_cycle(3 if augment else 15, 0.1)
    learn.model.eval()
    with torch.no_grad():
        logits = learn.model(torch.from_numpy(images[train].reshape(len(train), -1)))
        train_loss = float(F.cross_entropy(logits, torch.from_numpy(labels[train])))
    valid_loss = learn.validate()["valid_loss"]
    return train_loss, valid_loss


rows = {
    name: gap(wd, aug)
    for name, wd, aug in (
        ("nothing", 0.0, False),
        ("weight decay 0.03", 0.03, False),
        ("augmentation", 0.0, True),
    )
}
print(f"{'regularisation':18} {'train':>7} {'valid':>7} {'gap':>7}")
for name, (t, v) in rows.items():
    print(f"{name:18} {t:7.3f} {v:7.3f} {v - t:7.3f}")
gaps = {name: v - t for name, (t, v) in rows.items()}
assert gaps["weight decay 0.03"] < gaps["nothing"] and gaps["augmentation"] < gaps["nothing"]"""),
    ("md", """## Unbalanced classes: oversampling

"Just make a few copies of the unbalanced class." A folder with 100 photos of `0`, 100 of
`1` and only 10 of `2`; with `oversample=True` each epoch draws images with replacement,
weighted by 1 / (their class's count), so every class is seen about equally often."""),
    ("code", """import shutil
from collections import Counter
from pathlib import Path

unbalanced = Path("unbalanced")
for digit, n in (("0", 100), ("1", 100), ("2", 10)):
    (unbalanced / digit).mkdir(parents=True, exist_ok=True)
    for f in sorted((digits / digit).glob("*.png"))[:n]:
        shutil.copy(f, unbalanced / digit / f.name)


def seen_in_one_epoch(oversample):
    dls = ImageDataLoaders.from_folder(
        unbalanced,
        valid_pct=0.0,
        seed=0,
        size=16,
        bs=10,
        augment=False,
        flip=False,
        oversample=oversample,
    )
    counts = Counter()
    for _, yb in dls.train:  # one real epoch: the photos are decoded and batched
        counts.update(dls.classes[i] for i in yb.tolist())
    return dict(sorted(counts.items()))


before, after = seen_in_one_epoch(False), seen_in_one_epoch(True)
print("images per class seen in one epoch, as is:      ", before)
print("images per class seen in one epoch, oversampled:", after)
assert before == {"0": 100, "1": 100, "2": 10}
assert sum(after.values()) == 210 and min(after.values()) >= 45  # about 70 each"""),
]

PRODUCTION = [
    ("md", """# Lesson 2: from a folder of photos to production

The lesson's whole path on the embedded data (scikit-learn's handwritten digits written as
a folder of photos): verify the images, a seeded split, the learning-rate finder,
`fine_tune`, what the model gets wrong, the diagnosis, export to one ONNX file, int8
quantization, and one photo classified on the CPU without torch. Small settings (five
unfrozen epochs): about two minutes on 2 cores. Every file is written into this folder."""),
    ("code", """# fastcore_cv first, deliberately: its thread policy must run before numpy
# loads (README, "Threads"); imported for that side effect only.
import fastcore_cv  # noqa: F401, I001
from pathlib import Path

from fastcore_cv.vision import ImageDataLoaders, verify_images, write_digits_folder
from fastcore_cv.vision.recipes import DIGITS_RECIPE

root = write_digits_folder("digits")  # digits/<class>/<n>.png
bad = verify_images(root)
print(
    f"{sum(1 for _ in root.rglob('*.png'))} photos in {len(list(root.iterdir()))} class folders; "
    f"{len(bad)} bad"
)
assert bad == []"""),
    ("md", """A **random seed** whenever the data is split at random: the same seed, the same
validation set, so two runs can be compared."""),
    ("code", """dls = ImageDataLoaders.from_folder(root, seed=42, **DIGITS_RECIPE["data"])
print(dls)
assert len(dls.train_ds) + len(dls.valid_ds) == 1797
assert dls.classes == [str(i) for i in range(10)]"""),
    ("md", """## The learning rate

"The strongest downward slope that's sticking around for a while": the body is frozen, its
features are computed once, and five seeded sweeps of the head give the median suggestion.
The result draws itself (loss against learning rate, the suggestion marked)."""),
    ("code", """from fastcore_cv.vision.transfer import vision_learner

learn = vision_learner(dls, seed=42)
head_lr = learn.suggest_lr()
print(f"head learning rate: {head_lr:.3g}")
assert 1e-4 < head_lr < 10
learn.lr_find_results[0]"""),
    ("md", """## fine_tune

The head first, on the cached features (100 steps), then the whole model for `EPOCHS`
epochs: a one-cycle schedule with discriminative learning rates, the body's BASE_LR spread
from the first body group (smallest) to the head. The head alone leaves a quarter of the
photos wrong (ImageNet's features are far from 32-pixel digits): the body must move. Five
unfrozen epochs (under half a minute on a quiet 2-core machine) reach a few percent error
(measured: 2 epochs 8.9%, 3 epochs 4.2%, 5 epochs 1.4-2.8%); the recipe's 8
(`DIGITS_RECIPE`, what `make demo` runs) reach about 1%: set
`EPOCHS = DIGITS_RECIPE["fine_tune"]["epochs"]` for the real thing.
The recorder draws the training and validation losses."""),
    ("code", """EPOCHS = 5
learn.fine_tune(EPOCHS, head_lr=head_lr)
head = learn.frozen_history.epochs[-1].metrics["error_rate"]
metrics = learn.validate()
print(f"the head alone, on cached features: error rate {head:.2%}")
print(
    f"after {EPOCHS} unfrozen epochs: error rate {metrics['error_rate']:.2%} "
    f"on {len(dls.valid_ds)} validation photos"
)
assert head < 0.5  # the pretrained features already separate the digits, roughly
assert metrics["error_rate"] < 0.05  # seeds 42/1/2: 2.8/1.4/1.4% (10/5/5 of 359)
assert metrics["error_rate"] < head  # unfreezing helped
assert abs(metrics["error_rate"] - learn.recorder.history.epochs[-1].metrics["error_rate"]) < 1e-6
learn.recorder"""),
    ("md", """## What the model gets wrong

The confusion matrix, the photos with the highest loss, and the per-class report; computed
once over the validation set."""),
    ("code", """from fastcore_cv.vision.interpret import ClassificationInterpretation

interp = ClassificationInterpretation.from_learner(learn)
cm = interp.confusion_matrix()
assert cm.sum() == len(dls.valid_ds)
assert abs((1 - cm.trace() / cm.sum()) - metrics["error_rate"]) < 1e-6  # the same predictions
interp"""),
    ("md", """## What the training curves say

Too high a learning rate, too low, too few epochs, too many: `diagnose()` reads the losses
and says which, in the lesson's words (an empty answer: nothing to report)."""),
    ("code", """findings = learn.diagnose()
print([f.code for f in findings])
assert isinstance(findings, list) and all(f.message for f in findings)
findings"""),
    ("md", """## Cleaning the data

"Use the model to find the data that needs cleaning." Save the trained model, then score
every photo of the folder with it: its body computes each photo's features once, and a head
trained on the other folds (out of fold: it never saw that photo's label) gives the
probability of the photo's own label; `score` is 1 minus that. cleanlab flags likely label
errors, perceptual hashes flag duplicates. The suspects come most suspect first."""),
    ("code", """from fastcore_cv.clean.session import CleanSession
from fastcore_cv.cli.clean import COLUMNS  # the fields `fastcore-cv clean --report` shows
from fastcore_cv.export.checkpoint import save_checkpoint

checkpoint = save_checkpoint(learn, "model.pt", arch="efficientnet_lite0")
session = CleanSession(root, checkpoint, seed=42, threads=2)  # cached in digits/.fastcore-cv/
summary = session.summary()
suspects = [i for i in session.items() if i["issue"]]
print(
    f"{summary['files']} photos scored ({summary['features']}, {summary['folds']} folds) "
    f"in {sum(session.meta['seconds'].values()):.0f} s; flagged: {summary['issues']}"
)
print(
    f"{'#':>2}  {'path':12} {'label':>5} {'predicted':>9} {'probability':>11} {'score':>6}  issue"
)
for n, s in enumerate(suspects[:10], 1):
    print(
        f"{n:2}  {s['path']:12} {s['label']:>5} {s['predicted']:>9} {s['probability']:11.3f} "
        f"{s['score']:6.3f}  {s['issue']}"
    )
assert summary["files"] == 1797 and summary["honest"] and suspects
assert all(set(COLUMNS) <= set(s) and s["issue"] in ("label", "duplicate") for s in suspects)
scores = [s["score"] for s in suspects]
assert scores == sorted(scores, reverse=True)  # most suspect first
assert all(0 <= x <= 1 for x in scores)"""),
    ("md", """The cleaning page (each suspect with its photo; keep, delete or relabel it,
then apply: files are moved, never deleted, with an undo) runs from a terminal:"""),
    ("code", """command = f"fastcore-cv clean {root} --model {checkpoint}  # then open its page"
# (the same table without a page: add --report)
print(command)"""),
    ("md", """## Production: one ONNX file, int8, and a photo through the torch-free Predictor

Use a CPU, not a GPU: inference is one photo at a time. The exported file carries the
class names and the preprocessing; int8 quantization makes it smaller and faster."""),
    ("code", """from fastcore_cv.export.quantization import quantize

exported = learn.export_onnx("model.onnx")
print(exported)
quantized = quantize("model.onnx", "model.int8.onnx", calibration=dls, valid=dls)
print(quantized)
# The exported file is the same model: its accuracy is the learner's (to one photo).
assert abs((1 - quantized.fp32_accuracy) - metrics["error_rate"]) <= 1 / len(dls.valid_ds)
assert quantized.agreement > 0.5  # int8 gives fp32's answer on most photos"""),
    ("code", """from fastcore_cv.export.predictor import Predictor

predictor = Predictor("model.int8.onnx", threads=1)
photo = Path(dls.valid_ds.items[0])
truth = dls.valid_ds.classes[int(dls.valid_ds.labels[0])]
prediction = predictor.predict(photo, top_k=3)
print(f"{photo}: true class {truth}")
assert prediction.label == dls.classes[int(prediction.probabilities.argmax())]
assert abs(prediction.probabilities.sum() - 1) < 1e-4
prediction"""),
    ("md", """## Serving it

The web app (an upload page and a JSON API) runs from a terminal, not from here:"""),
    ("code", """command = "fastcore-cv serve model.int8.onnx --port 8000   # then open http://127.0.0.1:8000"
print(command)"""),
]
# fmt: on


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(cells):
        make = new_markdown_cell if kind == "md" else new_code_cell
        nb.cells.append(make(source, id=f"cell-{i:02d}"))
    return nb


NOTEBOOKS = {"lesson2_maths.ipynb": MATHS, "lesson2_production.ipynb": PRODUCTION}


def render(name: str) -> str:
    """The text of notebook ``name`` as committed."""
    return nbformat.writes(notebook(NOTEBOOKS[name])) + "\n"


def main() -> None:
    for name in NOTEBOOKS:
        (HERE / name).write_text(render(name))
        print(f"wrote {HERE / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
