"""Export: a trained model -> one ONNX file (fp32 or int8) -> the torch-free ``Predictor``.

Names are imported on first use, so ``from fastcore_cv.export import Predictor`` does not
import torch (only ``to_onnx``/``export_learner``/``save_checkpoint`` need it).
"""

from __future__ import annotations

from fastcore_cv._lazy import lazy_exports

_NAMES = {
    "to_onnx": "onnx_export",
    "export_learner": "onnx_export",
    "ExportReport": "onnx_export",
    "quantize": "quantization",
    "QuantizeReport": "quantization",
    "Predictor": "predictor",
    "Prediction": "predictor",
    "FolderSummary": "predictor",
    "ModelFileError": "errors",
    "ExportError": "errors",
    "ModelInfo": "metadata",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "Checkpoint": "checkpoint",
}
__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
