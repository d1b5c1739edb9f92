"""Cleaning a folder of photos (the lesson's cleaner, beyond fastai): score every file out of
fold, flag label errors, duplicates and undecodable files, record the user's decisions in a
journal and apply them by moving files (never deleting), with an exact undo.

Data flow: inventory (files, labels, fingerprints) -> features (the model's body, once per
file) -> score (out-of-fold probabilities, cleanlab) + duplicates (perceptual hashes) ->
journal (decisions, moves) -> apply (moves, cleaned.csv, undo) -> session (one folder's
state) -> page + app (the web page and its JSON API). The ``clean`` extra supplies cleanlab
and imagehash; ``require_extra`` says how to install them.
"""

from __future__ import annotations

import importlib

EXTRA_HINT = "pip install 'fastcore-cv[clean]'"
STATE_DIR = ".fastcore-cv"  # inside FOLDER; a dot-folder, so loaders never see it as a class


def require_extra() -> None:
    """Raise RuntimeError with the install line when cleanlab or imagehash is missing."""
    missing = []
    for name in ("cleanlab", "imagehash"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RuntimeError(f"cleaning needs {' and '.join(missing)}: {EXTRA_HINT}")
