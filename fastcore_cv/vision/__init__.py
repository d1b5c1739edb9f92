"""Vision: from a folder of photos to batches, a pretrained model, fine_tune and interpretation.

Names are imported on first use, so ``fastcore_cv.vision.preprocessing`` (the torch-free
transform the Predictor needs) never pulls in torch through this package, and
``fastcore_cv.vision.preprocess`` is that module's function.
"""

from __future__ import annotations

from fastcore_cv._lazy import lazy_exports

_NAMES = {
    "ImageDataLoaders": "data",
    "split_items": "data",
    "ImageDataset": "loader",
    "ImageLoader": "loader",
    "PreprocessConfig": "preprocessing",
    "ImageError": "decode",
    "preprocess": "preprocessing",
    "preprocess_batch": "preprocessing",
    "load_image": "decode",
    "MAX_PIXELS": "decode",
    "IMAGENET_MEAN": "preprocessing",
    "IMAGENET_STD": "preprocessing",
    "TrainTransform": "augment",
    "get_image_files": "files",
    "IMAGE_EXTENSIONS": "files",
    "verify_images": "verify",
    "BadImage": "verify",
    "BadImageWarning": "verify",
    "download_images": "download",
    "DownloadReport": "download",
    "write_digits_folder": "datasets",
    "write_texture_folder": "datasets",
    "vision_learner": "transfer",
    "VisionLearner": "transfer_learner",
    "efficientnet_lite0": "models",
    "simple_cnn": "models",
    "BodyHead": "models",
    "ClassificationInterpretation": "interpret",
}
__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
