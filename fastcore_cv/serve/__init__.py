"""Serve an exported model over HTTP: ``create_app(model_path)`` (ASGI) and ``run(...)``."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fastcore_cv.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'fastcore_cv.serve' has no attribute {name!r}")
