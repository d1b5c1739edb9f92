"""The Learner: a model, its data, a loss and an optimizer, and the loop that trains them.

A step is forward -> loss -> backward -> optimizer step (``step.train_step``); an epoch is
those steps then a validation pass (``_one_epoch``). Everything swappable is injected:
``opt_func`` builds the optimizer (a torch class or the kernel-backed one), the layers are
the model's business, and ``splitter`` groups parameters for discriminative learning rates.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcore_cv.backend import check_backend, kernel_loss, kernel_opt_func, to_kernels
from fastcore_cv.checks import check_int
from fastcore_cv.learner import lr_finder
from fastcore_cv.learner.callbacks import Callback, ProgressCallback, TerminateOnNaN
from fastcore_cv.learner.data import TensorLoader, as_dataloaders, check_batch, num_batches
from fastcore_cv.learner.diagnose import Finding, diagnose
from fastcore_cv.learner.metrics import metric_name
from fastcore_cv.learner.recorder import EpochRow, Recorder
from fastcore_cv.learner.schedule import group_lrs, one_cycle
from fastcore_cv.learner.seed import set_seed
from fastcore_cv.learner.step import collect, describe, train_step

Hypers = Callable[[int], tuple[np.ndarray, float | None]]


def default_opt(params: Any, lr: float) -> torch.optim.Optimizer:
    """torch's AdamW with fastai's settings (``optim.FASTAI_ADAMW``: weight decay 1e-2,
    decoupled; betas (0.9, 0.99); eps 1e-5), as fastai trains; fit_one_cycle drives beta1.
    On the digits MLP a bare fit_one_cycle(3) reached 17-23% error where SGD (momentum 0.9)
    stayed at 79-86% (tests/learner/test_default_opt.py)."""
    from fastcore_cv.optim import FASTAI_ADAMW  # here: this edit stays inside default_opt

    return torch.optim.AdamW(params, lr=lr, **FASTAI_ADAMW)


class Learner:
    """Train ``model`` on ``dls`` (``.train``/``.valid`` iterables of (x, y), or a pair).

    loss_func defaults to cross-entropy; opt_func(params, lr) builds the optimizer (default
    AdamW, fastai's settings; a torch optimizer class works too). ``seed`` calls ``set_seed`` now,
    so shuffling and dropout repeat (seed before building the model for equal weights too).
    TerminateOnNaN and a ProgressCallback(progress) are added unless ``cbs`` has its own.
    ``backend='numba'`` swaps the model's Linear layers, a CrossEntropyLoss and torch's
    SGD/Adam/AdamW for their kernel-backed twins (fastcore_cv.backend); 'torch' leaves
    everything as given.
    """

    def __init__(
        self,
        model: nn.Module,
        dls: Any,
        loss_func: Callable[[Any, Any], torch.Tensor] | None = None,
        opt_func: Callable[..., torch.optim.Optimizer] | None = None,
        metrics: Sequence[Callable] = (),
        cbs: Sequence[Callback] = (),
        seed: int | None = None,
        splitter: Callable[[nn.Module], list[list[nn.Parameter]]] | None = None,
        progress: str = "auto",
        backend: str = "torch",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        for name, f in (("loss_func", loss_func), ("opt_func", opt_func), ("splitter", splitter)):
            if f is not None and not callable(f):
                raise TypeError(f"{name}: expected a callable, got {type(f).__name__}")
        self.backend = check_backend(backend)
        self.model, self.dls = model, as_dataloaders(dls)
        self.loss_func = loss_func if loss_func is not None else nn.CrossEntropyLoss()
        self.opt_func = opt_func if opt_func is not None else default_opt
        if backend == "numba":  # the same model on the kernels: layers, loss and optimizer
            to_kernels(self.model)
            self.loss_func = kernel_loss(self.loss_func)
            self.opt_func = kernel_opt_func(opt_func)
        self.splitter, self.seed = splitter, seed
        self.metrics = list(metrics)
        names = [metric_name(m) for m in self.metrics]
        if any(not callable(m) for m in self.metrics) or len(set(names)) != len(names):
            raise ValueError(f"metrics: expected callables with distinct names, got {names}")
        if seed is not None:
            set_seed(seed)
        self.recorder = Recorder()
        self.opt: torch.optim.Optimizer | None = None
        self.cbs: list[Callback] = []
        for cb in [*cbs, TerminateOnNaN(), ProgressCallback(progress)]:
            if not any(type(c) is type(cb) for c in self.cbs):
                self.add_cb(cb)
        self.epoch = self.batch_idx = 0
        self.n_batches: int | None = None
        self.last_loss, self.stop_training = math.nan, False

    # -- callbacks -----------------------------------------------------------------------
    def add_cb(self, cb: Callback) -> Learner:
        if not isinstance(cb, Callback):
            raise TypeError(f"cbs: expected Callback instances, got {type(cb).__name__}")
        self.cbs = sorted([*self.cbs, cb], key=lambda c: c.order)
        return self

    def remove_cb(self, cb: Callback | type) -> Learner:
        self.cbs = [
            c for c in self.cbs if c is not cb and not (isinstance(cb, type) and isinstance(c, cb))
        ]
        return self

    def _call(self, event: str) -> None:
        for cb in self.cbs:
            getattr(cb, event)(self)

    @property
    def metric_names(self) -> list[str]:
        return [metric_name(m) for m in self.metrics]

    # -- optimizer -----------------------------------------------------------------------
    def create_opt(self, lr: float = 1e-3) -> torch.optim.Optimizer:
        """Build the optimizer over the splitter's parameter groups (one group by default)."""
        groups = self.splitter(self.model) if self.splitter else [list(self.model.parameters())]
        if not any(p.requires_grad for g in groups for p in g):
            raise ValueError(
                "model: has no trainable parameters (none at all, or all frozen with "
                "requires_grad=False); there is nothing for the optimizer to update"
            )
        params = groups[0] if len(groups) == 1 else [{"params": g} for g in groups]
        self.opt = self.opt_func(params, lr=lr)
        return self.opt

    @property
    def n_groups(self) -> int:
        """Parameter groups of the optimizer (1 before it exists): one LR each."""
        return len(self.opt.param_groups) if self.opt is not None else 1

    def set_hypers(self, lrs: np.ndarray, mom: float | None) -> None:
        """Set per-group LR; map momentum to SGD ``momentum`` or Adam's ``beta1``, as fastai."""
        for g, lr in zip(self.opt.param_groups, lrs, strict=True):
            g["lr"] = float(lr)
            if mom is None:
                continue
            if "momentum" in g:
                g["momentum"] = float(mom)
            elif "betas" in g:
                g["betas"] = (float(mom), g["betas"][1])

    def _hypers_now(self) -> tuple[float, float | None]:
        g = self.opt.param_groups[-1]
        mom = g["momentum"] if "momentum" in g else g["betas"][0] if "betas" in g else None
        return float(g["lr"]), mom

    def one_batch(self, x: Any, y: Any, where: str = "a batch", first: bool = False) -> float:
        """One training step on (x, y) at the current hyper-parameters; returns the loss.

        ``where`` names the batch in errors; ``first``: no update has happened yet (a NaN
        loss then blames the model or loss, not the LR). See ``step.train_step``.
        """
        return train_step(self.model, self.opt, self.loss_func, x, y, where, first)

    # -- the loop ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check there is training data and build the optimizer if there is none yet."""
        if _len_or_none(self.dls.train) == 0:
            raise ValueError("dls.train: the training data has no batches (empty dataset?)")
        if self.opt is None:
            self.create_opt()

    def fit(self, epochs: int, lr: float | Sequence[float] | slice = 1e-3) -> Recorder:
        """Train ``epochs`` epochs at a constant LR (momentum left as the optimizer has it)."""
        self.prepare()
        lrs = group_lrs(lr, self.n_groups)
        return self._fit(epochs, lambda it: (lrs, None))

    def fit_one_cycle(
        self,
        epochs: int,
        lr_max: float | Sequence[float] | slice = 1e-3,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95),
    ) -> Recorder:
        """Train with fastai's one-cycle policy: per-batch cosine schedules of LR and momentum."""
        self.prepare()
        check_int(epochs, "epochs")
        n_iter = epochs * num_batches(self.dls.train, "dls.train")
        lrs, ms = one_cycle(
            max(n_iter, 1), group_lrs(lr_max, self.n_groups), div, div_final, pct_start, moms
        )

        def hypers(it: int) -> tuple[np.ndarray, float | None]:
            i = min(it, len(lrs) - 1)  # a loader that grew mid-fit keeps the final values
            return lrs[i], None if ms is None else float(ms[i])

        return self._fit(epochs, hypers)

    def _fit(self, epochs: int, hypers: Hypers) -> Recorder:
        check_int(epochs, "epochs")
        self.n_batches = _len_or_none(self.dls.train)
        self.recorder.begin_fit(self.metric_names)
        self.stop_training, it = False, 0
        self.epoch = 0
        self._call("before_fit")
        try:
            for self.epoch in range(epochs):
                it = self._one_epoch(hypers, it)
                if self.stop_training:
                    break
        except BaseException:
            for cb in self.cbs:  # still close progress bars / restore best weights
                with contextlib.suppress(Exception):
                    cb.after_fit(self)
            raise
        self._call("after_fit")
        return self.recorder

    def _one_epoch(self, hypers: Hypers, it: int) -> int:
        self._call("before_epoch")
        start, total, count = time.perf_counter(), 0.0, 0
        for i, batch in enumerate(self.dls.train):
            self.batch_idx = i
            where = f"batch {i} of the training data in epoch {self.epoch}"
            x, y = check_batch(batch, where)
            self.set_hypers(*hypers(it))
            t0 = time.perf_counter()
            self.last_loss = self.one_batch(x, y, where, first=it == 0)
            self.recorder.log_batch(self.last_loss, *self._hypers_now(), time.perf_counter() - t0)
            n = x.shape[0] if isinstance(x, torch.Tensor) else len(x)
            total, count, it = total + self.last_loss * n, count + n, it + 1
            self._call("after_batch")
            if self.stop_training:
                break
        if count == 0:
            raise ValueError(
                f"dls.train: yielded no batches in epoch {self.epoch} (empty dataset?)"
            )
        train_eval, train_eval_s = None, 0.0
        if self.recorder.history.diverged:
            valid_loss, metrics = math.nan, {m: math.nan for m in self.metric_names}
        else:
            valid_loss, metrics = self._run_valid()
            t0 = time.perf_counter()
            train_eval = self._run_train_eval()
            train_eval_s = time.perf_counter() - t0 if train_eval is not None else 0.0
        row = EpochRow(
            self.epoch, total / count, valid_loss, metrics, time.perf_counter() - start, it,
            train_eval, train_eval_s,
        )  # fmt: skip
        self.recorder.log_epoch(row)
        self._call("after_epoch")
        return it

    # -- evaluation ----------------------------------------------------------------------
    # The eval-mode training loss: measured like valid_loss (eval mode, end-of-epoch
    # weights) on a fixed seeded sample of the training set, so diagnose() compares like
    # with like (the running mean ``train_loss`` is taken in train mode, dropout on, while
    # the weights change). Up to 256 items, at most a quarter of the training set (at least
    # 32): a forward pass costs about a third of a training step, so the sample stays under
    # ~10% of an epoch (all 108 texture images at 96 px cost 19% of an unfrozen epoch); 0
    # turns it off. Its cost is recorded (``EpochRow.train_eval_time``) and measured in
    # bench/lr_suggestion.py.
    train_eval_items: int = 256
    train_eval_seed: int = 0

    @staticmethod
    def train_sample_size(n: int, items: int) -> int:
        """How many of ``n`` training items the sample takes (see ``train_eval_items``)."""
        return min(items, n, max(32, n // 4))

    def train_sample(self, items: int, seed: int) -> Any:
        """Batches of ``items`` training items drawn with ``seed``, with no augmentation, or
        None when the training loader cannot give such a sample (then no eval-mode training
        loss is recorded). A ``TensorLoader`` samples its tensors; any other loader may offer
        ``eval_sample(items, seed)``; subclasses may override this (``VisionLearner``)."""
        loader = self.dls.train
        if callable(getattr(loader, "eval_sample", None)):
            return loader.eval_sample(items, seed)
        if not isinstance(loader, TensorLoader) or len(loader.x) == 0:
            return None
        n = len(loader.x)
        size = self.train_sample_size(n, items)
        idx = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        idx = torch.from_numpy(idx)
        return TensorLoader(loader.x[idx], loader.y[idx], bs=max(loader.bs, 64))

    def eval_model(self) -> nn.Module:
        """The module the no-grad passes (validation, get_preds) run: the model itself."""
        return self.model

    def _run_train_eval(self) -> float | None:
        """The eval-mode loss on ``train_sample`` (drawn once per training loader)."""
        if not self.train_eval_items:
            return None
        cached = getattr(self, "_train_eval_cache", None)
        if cached is None or cached[0] is not self.dls.train:
            sample = self.train_sample(self.train_eval_items, self.train_eval_seed)
            self._train_eval_cache = cached = (self.dls.train, sample)
        if cached[1] is None:
            return None
        _, _, total, count = collect(
            self.eval_model(), self.loss_func, cached[1], "training sample"
        )
        return total / count if count else None

    def _run_valid(self) -> tuple[float | None, dict[str, float]]:
        if self.dls.valid is None:
            return None, {}
        preds, targs, total, count = collect(
            self.eval_model(), self.loss_func, self.dls.valid, "validation"
        )
        if count == 0:
            return None, {}
        metrics = {}
        for m, name in zip(self.metrics, self.metric_names, strict=True):
            try:
                metrics[name] = float(m(preds, targs))
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                raise ValueError(
                    f"metrics: {name} failed on the validation outputs ({describe(preds)}, "
                    f"targets {describe(targs)}): {type(e).__name__}: {e}"
                ) from e
        return total / count, metrics

    def validate(self) -> dict[str, float | None]:
        """Validation loss and metrics of the current model: {'valid_loss': ..., metric: ...}."""
        valid_loss, metrics = self._run_valid()
        return {"valid_loss": valid_loss, **metrics}

    def get_preds(
        self, ds: str = "valid", act: Callable | str | None = "auto"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) over a set; ``act='auto'``: softmax for a cross-entropy loss."""
        loader = {"valid": self.dls.valid, "train": self.dls.train}.get(ds, "bad")
        if isinstance(loader, str):
            raise ValueError(f"ds: expected 'valid' or 'train', got {ds!r}")
        if loader is None:
            raise ValueError(f"ds: this Learner has no {ds} data")
        preds, targs, _, count = collect(
            self.eval_model(), self.loss_func, loader, "validation" if ds == "valid" else "training"
        )
        if count == 0:
            raise ValueError(f"ds: the {ds} data has no batches")
        if act == "auto":
            act = getattr(self.loss_func, "activation", None)
            if act is None and "CrossEntropy" in type(self.loss_func).__name__:
                act = functools.partial(torch.softmax, dim=-1)
        return (act(preds) if act else preds), targs

    # -- finding a learning rate and reading a run ---------------------------------------
    def lr_find(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        seed: int | None = None,
        stop_div: bool = True,
        suggest_funcs: Sequence[lr_finder.SuggestFunc] = (),
    ) -> lr_finder.LRFinderResult:
        """Sweep the LR exponentially, one batch each, on the real model; then restore everything.

        Model weights and buffers, optimizer state and hyper-parameters, train/eval mode and the
        global random generators are all put back exactly, so ``lr_find(); fit()`` trains like
        ``fit()``. With ``seed`` the sweep itself is reproducible. ``suggest_funcs``: functions
        ``f(lrs, losses)`` whose LRs ``result.suggestions`` gives by name (default: the three of
        ``lr_finder``); ``result.suggestion`` is always the lesson's rule.
        """
        return lr_finder.lr_find(self, start_lr, end_lr, num_it, seed, stop_div, suggest_funcs)

    def diagnose(self) -> list[Finding]:
        """Read the last fit's history and explain, in the lesson's words, what went wrong."""
        return diagnose(self.recorder.history)

    # -- taking it to production ------------------------------------------------------
    def export_onnx(self, path: Any, **kwargs: Any) -> Any:
        """Write the model as ONE .onnx file for the torch-free ``Predictor`` and check it.

        Class names and preprocessing come from the learner's ImageDataLoaders; a Learner
        built on tensors must pass ``classes=`` and ``preprocess_config=``. Other keywords
        go to ``fastcore_cv.export.to_onnx``. Returns its ExportReport.
        """
        from fastcore_cv.export.onnx_export import export_learner, to_onnx

        if "classes" in kwargs or "preprocess_config" in kwargs:
            return to_onnx(self.model, path, **kwargs)
        return export_learner(self, path, **kwargs)


def _len_or_none(loader: Any) -> int | None:
    """len(loader), or None for loaders that cannot tell (generators, iterable datasets)."""
    try:
        return len(loader)
    except TypeError:
        return None
