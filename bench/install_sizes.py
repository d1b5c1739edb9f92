"""Install sizes: the inference-only base install vs the one with the [train] extra.

Each goes into a fresh venv (``python -m venv``; ``pip install <a copy of the package>`` or
``pip install '<copy>[train]'``, non-editable, from this machine's configured indexes), and
the figure is ``du`` of its site-packages, with the largest packages named.

Usage: python bench/install_sizes.py   (writes the "Install sizes" section of RESULTS.md;
pip copies torch's ~750 MB for the second venv: a few minutes)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = 8


def folder_bytes(path: Path) -> int:
    """Bytes on disk under ``path`` (du -sb: what the install costs)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def install(venv: Path, spec: str) -> Path:
    """A fresh venv at ``venv`` with ``spec`` installed; returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec], check=True)
    return next((venv / "lib").glob("python3*/site-packages"))


def largest(site: Path) -> list[tuple[str, int]]:
    """The biggest top-level entries of ``site`` (packages, their .libs), largest first."""
    sizes = [(p.name, folder_bytes(p)) for p in site.iterdir() if not p.name.endswith("-info")]
    return sorted(sizes, key=lambda t: -t[1])[:TOP]


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "fastcore_cv", src / "fastcore_cv",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        rows = ["| install | site-packages | largest packages |", "|---|---|---|"]
        for label, spec in (("`pip install fastcore-cv` (inference only)", str(src)),
                            ("`pip install 'fastcore-cv[train]'`", f"{src}[train]")):  # fmt: skip
            site = install(Path(tmp) / f"venv{len(rows)}", spec)
            top = ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in largest(site))
            rows.append(f"| {label} | {folder_bytes(site) / 1e6:.0f} MB | {top} |")
    return (
        "Fresh venv per row, non-editable install from this machine's indexes; `du -sb` of "
        "site-packages (pip and setuptools included in both).\n\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    body = run()
    print(body)
    replace_section("Install sizes", body, "python bench/install_sizes.py")
