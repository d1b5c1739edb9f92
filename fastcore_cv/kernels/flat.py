"""FlatBuffer: many arrays (a model's parameters) living in one contiguous 1-D buffer.

A model keeps its parameters, gradients and momentum in three FlatBuffers of one layout, so
``sgd_update(params.data, grads.data, momentum.data, segments=params.offsets, ...)`` steps
the whole model in one call, while layers read and write their own reshaped views.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from fastcore_cv.kernels import _checks


class FlatBuffer:
    """One zero-filled contiguous 1-D ``data`` array and a C-contiguous view per shape.

    ``offsets`` (int64, length k+1) are where each array starts in ``data``: array i is
    ``data[offsets[i]:offsets[i+1]].reshape(shapes[i])``, the ``segments`` of sgd_update.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], dtype: np.dtype | type = np.float32):
        dtype = np.dtype(dtype)
        _checks.check_choice(dtype, "dtype", _checks.FLOAT_DTYPES)
        self.shapes: tuple[tuple[int, ...], ...] = tuple(
            _check_shape(s, i) for i, s in enumerate(shapes)
        )
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.data = np.zeros(int(self.offsets[-1]), dtype=dtype)
        self.views: tuple[np.ndarray, ...] = tuple(
            self.data[lo:hi].reshape(shape)
            for lo, hi, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes, strict=True)
        )

    @classmethod
    def from_arrays(
        cls, arrays: Sequence[np.ndarray], dtype: np.dtype | type | None = None
    ) -> FlatBuffer:
        """A FlatBuffer holding copies of ``arrays`` (dtype: theirs if one float dtype)."""
        arrays = [np.asarray(a) for a in arrays]
        if dtype is None:
            dtype = np.result_type(*arrays) if arrays else np.float32
        buf = cls([a.shape for a in arrays], dtype)
        for view, a in zip(buf.views, arrays, strict=True):
            view[...] = a
        return buf

    def like(self) -> FlatBuffer:
        """A new zero-filled FlatBuffer with the same shapes and dtype (for grads, momentum)."""
        return FlatBuffer(self.shapes, self.data.dtype)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        """Total number of elements."""
        return self.data.shape[0]

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.views[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.views)

    def __repr__(self) -> str:
        return f"FlatBuffer({len(self)} arrays, {self.size} x {self.dtype})"


def _check_shape(shape: object, i: int) -> tuple[int, ...]:
    name = f"shapes[{i}]"
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{name}: expected a tuple of ints, got {type(shape).__name__}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{name}: expected a tuple of ints, got {shape!r}")
        if d < 0:
            raise ValueError(f"{name}: negative dimension in {tuple(shape)}")
    return tuple(int(d) for d in shape)
