"""The export package's exceptions (torch-free: the Predictor raises them too)."""

from __future__ import annotations


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, not ONNX, not ours, or the wrong shape."""


class ExportError(RuntimeError):
    """Export failed or the exported file disagrees with the torch model (nothing written)."""
