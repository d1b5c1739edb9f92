"""A small fastai-style trainer for any torch model: Learner, one-cycle, lr_find, diagnose.

learn = Learner(model, DataLoaders.from_tensors(x, y, xv, yv), metrics=[error_rate])
lr = learn.lr_find().suggestion
learn.fit_one_cycle(3, lr)
for finding in learn.diagnose():
    print(finding)
"""

import torch  # noqa: F401  (loaded first so the thread policy below reaches it)

from fastcore_cv.learner.callbacks import (
    Callback,
    EarlyStopping,
    NonFiniteLossError,
    ProgressCallback,
    SaveBest,
    TerminateOnNaN,
    atomic_save,
)
from fastcore_cv.learner.compare import BackendComparison, BackendRun, compare_backends
from fastcore_cv.learner.core import Learner, default_opt
from fastcore_cv.learner.data import DataLoaders, TensorLoader
from fastcore_cv.learner.diagnose import Finding, diagnose
from fastcore_cv.learner.fine_tune import BodyHeadLearner
from fastcore_cv.learner.lr_finder import (
    LRFinderResult,
    median_of_sweeps,
    minimum_div10,
    slope_end,
    steepest,
    sustained_slope,
    valley,
)
from fastcore_cv.learner.metrics import accuracy, confusion_matrix, error_rate, precision_recall
from fastcore_cv.learner.recorder import EpochRow, History, Recorder
from fastcore_cv.learner.schedule import one_cycle
from fastcore_cv.learner.seed import set_seed
from fastcore_cv.threads import sync_torch

sync_torch()  # one thread count for torch, Numba and BLAS (fastcore_cv.threads)

__all__ = [
    "BackendComparison",
    "BodyHeadLearner",
    "BackendRun",
    "compare_backends",
    "Callback",
    "DataLoaders",
    "EarlyStopping",
    "EpochRow",
    "Finding",
    "History",
    "LRFinderResult",
    "Learner",
    "NonFiniteLossError",
    "ProgressCallback",
    "Recorder",
    "SaveBest",
    "TensorLoader",
    "TerminateOnNaN",
    "accuracy",
    "atomic_save",
    "confusion_matrix",
    "default_opt",
    "diagnose",
    "error_rate",
    "median_of_sweeps",
    "minimum_div10",
    "one_cycle",
    "precision_recall",
    "set_seed",
    "steepest",
    "slope_end",
    "sustained_slope",
    "valley",
]
