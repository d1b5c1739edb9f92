"""Drop-ins for torch's optimizers that step each parameter group with ONE Numba kernel call
over flat buffers: ``SGD`` (optim/sgd.py), ``Adam`` and ``AdamW`` (optim/adam.py); what they
share, ``FlatGroup`` and the rest, is in optim/flat.py.

``FASTAI_ADAMW`` are fastai's Adam settings (decoupled weight decay 1e-2, betas (0.9, 0.99),
eps 1e-5): the Learner's default optimizer uses them.
"""

from __future__ import annotations

from fastcore_cv.optim.adam import FASTAI_ADAMW, Adam, AdamW
from fastcore_cv.optim.flat import FlatGroup
from fastcore_cv.optim.sgd import SGD

__all__ = ["FASTAI_ADAMW", "SGD", "Adam", "AdamW", "FlatGroup"]
