"""The lesson's notebooks run top to bottom in a real Jupyter kernel (nbclient + ipykernel from
this venv), in a temporary folder, under CI=true; their cells assert the numbers they show.
Also: the committed notebooks carry no outputs and equal what notebooks/build_notebooks.py
writes, and the progress display draws a notebook bar inside a real kernel."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["lesson2_maths.ipynb", "lesson2_production.ipynb"]
CELL_TIMEOUT = 600  # seconds per cell (the production notebook's fine_tune on a busy box)
KERNEL = "fastcore-cv-test"


def kernel_manager(folder: Path) -> KernelManager:
    """A kernel of THIS interpreter (sys.executable: the venv's ipykernel), from a kernelspec
    written into ``folder``: no user-level kernel install needed or used."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "fastcore-cv (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` with ``cwd`` as the kernel's working folder; a failing cell
    raises CellExecutionError with its traceback."""
    km = kernel_manager(cwd / ".kernel")
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def mime_types(nb: nbformat.NotebookNode) -> list[str]:
    return [m for o in outputs(nb) for m in o.get("data", {})]


def load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOKS / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    """The kernel inherits this: CI (quiet progress lines), no debugger frozen-modules noise,
    matplotlib's config in the temporary folder."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / ".matplotlib"))
    return tmp_path


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_have_no_outputs_and_match_their_generator(name):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert path.read_text() == load_builder().render(name), (
        f"{name} differs from notebooks/build_notebooks.py: run python notebooks/build_notebooks.py"
    )


@pytest.mark.slow  # a real kernel, a minute or two each
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_in_a_temporary_folder(name, kernel_env):
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    nb = execute(nbformat.read(NOTEBOOKS / name, as_version=4), kernel_env)
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert errors == []
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before  # nothing written beside it
    assert (kernel_env / "digits").is_dir()  # the notebook's files went to its folder
    shown = mime_types(nb)
    if name == "lesson2_maths.ipynb":
        assert shown.count("image/png") >= 2  # tensor ranks, the matrix product
        animation = [
            o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})
        ]
        assert any("data:image/png;base64," in h and "<script" in h for h in animation)
    else:
        assert shown.count("image/png") >= 2  # lr_find, the recorder's losses
        html = " ".join(
            o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})
        )
        assert "confusion matrix" in html and "fastcore-cv-prediction" in html
        assert (kernel_env / "model.int8.onnx").is_file()
        assert (kernel_env / "digits" / ".fastcore-cv" / "scores.json").is_file()  # cleaned
        printed = "".join(o.get("text", "") for o in outputs(nb) if o.output_type == "stream")
        assert "fastcore-cv clean digits --model model.pt" in printed


@pytest.mark.slow
def test_a_cell_that_shows_a_wrong_number_fails_the_notebook(kernel_env):
    nb = new_notebook(
        cells=[
            new_code_cell(
                "import numpy as np\nfrom fastcore_cv import kernels\n"
                "a = np.eye(2, dtype=np.float32)\n"
                "assert np.allclose(kernels.matmul(a, a), 2 * a)  # wrong on purpose"
            )
        ]
    )
    with pytest.raises(CellExecutionError, match="AssertionError"):
        execute(nb, kernel_env)


@pytest.mark.slow
def test_progress_in_a_real_kernel_html_bar_widget_bar_then_plain_lines_under_ci(kernel_env):
    loop = "with Progress(5, {desc!r}) as bar:\n    for _ in range(5):\n        bar.update()"
    nb = new_notebook(
        cells=[
            new_code_cell(
                "import os, sys\nos.environ.pop('CI', None)\n"
                "sys.modules['ipywidgets'] = None  # as if ipywidgets were not installed\n"
                "from fastcore_cv.progress import Progress, in_notebook\nassert in_notebook()\n"
                + loop.format(desc="html bar")
            ),
            new_code_cell(
                "del sys.modules['ipywidgets']; sys.modules.pop('tqdm.notebook', None)\n"
                + loop.format(desc="widget bar")
            ),
            new_code_cell("os.environ['CI'] = 'true'\n" + loop.format(desc="under ci")),
        ]
    )
    execute(nb, kernel_env)
    html_bar, widget_bar, plain = (c.outputs for c in nb.cells)
    html = [o["data"]["text/html"] for o in html_bar if "text/html" in o.get("data", {})]
    assert html and "<progress" in html[-1] and "html bar" in html[-1] and "5/5" in html[-1]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in widget_bar)
    assert not any(o.output_type == "stream" for o in html_bar + widget_bar)  # no text bars
    lines = "".join(o.get("text", "") for o in plain if o.output_type == "stream")
    assert "under ci: 5/5 it" in lines and "\r" not in lines
