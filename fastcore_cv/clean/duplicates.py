"""Exact and near duplicates, within and across classes.

Exact: the same bytes (sha256). Near: perceptual hashes (imagehash's 64-bit pHash and dHash of
the grey image) both within NEAR_BITS bits. Measured (bench/RESULTS.md, "Cleaning: scoring
time and planted-error recall"): on the texture crops (real photos) copies resized by 0.5-2x
and re-saved as JPEG at quality 50-90 differ by at most 4 bits (404 copies), distinct crops,
even overlapping ones, by at least 12 (126,756 pairs); 6 sits between with room on both
sides. On the 32 px digits (8x8 scans enlarged) a 64-bit hash cannot separate two writers'
look-alike digits from copies: 166 of 1.6 M distinct pairs fall within 6 bits and shrunken
copies reach 12, so there near duplicates are suggestions to look at (a label issue outranks
them, pipeline.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NEAR_BITS = 6
_BLOCK = 256  # rows of the pairwise distance matrix computed at a time


def perceptual_hashes(paths: list[Path]) -> np.ndarray:
    """(N, 128) bool: pHash bits then dHash bits of each (decodable) image."""
    import imagehash
    from PIL import Image

    rows = []
    for p in paths:
        with Image.open(p) as im:
            grey = im.convert("L")
        rows.append(
            np.concatenate([imagehash.phash(grey).hash.ravel(), imagehash.dhash(grey).hash.ravel()])
        )
    return np.array(rows, bool).reshape(len(paths), 128)


def near_pairs(bits: np.ndarray, max_bits: int = NEAR_BITS) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose pHash and dHash both differ in at most ``max_bits`` bits."""
    packed = np.packbits(bits.reshape(len(bits), 2, 64), axis=2)  # (N, 2, 8) bytes
    pop = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    pairs = []
    for start in range(0, len(bits), _BLOCK):
        block = packed[start : start + _BLOCK]
        dist = pop[block[:, None] ^ packed[None]].sum(-1).max(-1)  # (block, N): worse hash
        i, j = np.nonzero(dist <= max_bits)
        i = i + start
        keep = i < j
        pairs += list(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    return pairs


def duplicate_of(
    paths: list[str], digests: list[str], bits: np.ndarray | None, decodable: list[bool]
) -> dict[int, tuple[int, str]]:
    """index -> (index of the file it duplicates, "exact"|"near"): in each group of copies
    (connected by equal sha256 or near hashes) the first path in sorted order is the one kept,
    every other member points at it."""
    parent = list(range(len(paths)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb), key=lambda r: paths[r])
            parent[hi] = lo

    first: dict[str, int] = {}
    for i, d in enumerate(digests):
        if d in first:
            union(first[d], i)
        else:
            first[d] = i
    if bits is not None:
        index = [i for i, ok in enumerate(decodable) if ok]
        for a, b in near_pairs(bits):
            union(index[a], index[b])
    out = {}
    for i in range(len(paths)):
        root = find(i)
        if root != i:
            same = digests[root] == digests[i]
            out[i] = (root, "exact" if same else "near")
    return out
