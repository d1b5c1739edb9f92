"""Vision: from a folder of photos to batches, a pretrained model, fine_tune and interpretation.

Names are imported on first use, so ``fastcore_cv.vision.preprocess`` (the torch-free
transform the Predictor needs) never pulls in torch through this package. The function
``preprocess`` is imported from that module: ``from fastcore_cv.vision.preprocess import
preprocess`` (here the name ``preprocess`` is the module).
"""

from __future__ import annotations

from fastcore_cv._lazy import lazy_exports

_NAMES = {
    "ImageDataLoaders": "data",
    "split_items": "data",
    "ImageDataset": "loader",
    "ImageLoader": "loader",
    "PreprocessConfig": "preprocess",
    "ImageError": "decode",
    "preprocess_batch": "preprocess",
    "load_image": "decode",
    "IMAGENET_MEAN": "preprocess",
    "IMAGENET_STD": "preprocess",
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
    "VisionLearner": "transfer",
    "efficientnet_lite0": "models",
    "simple_cnn": "models",
    "BodyHead": "models",
    "ClassificationInterpretation": "interpret",
}
__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
