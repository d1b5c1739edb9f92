"""Saving a matplotlib figure as PNG without pyplot: the one helper every plot here uses."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save via the Agg canvas (no pyplot, no display, no global backend switch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path
