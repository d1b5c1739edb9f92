"""Fixtures shared by every test folder."""

import os
from pathlib import Path

import pytest

import fastcore_cv


@pytest.fixture
def one_thread():
    """Run a test on one thread (Numba, torch, BLAS), restoring the policy afterwards.

    Small models gain nothing from a second thread, and on a shared 2-core box two torch
    threads made a 10-32-3 MLP step take 30-70 ms instead of 0.5 ms (OpenMP threads waiting
    for a core that another process holds). Folders of small-model tests use it.
    """
    before = fastcore_cv.get_num_threads()
    fastcore_cv.set_num_threads(1)
    yield
    fastcore_cv.set_num_threads(before)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def browser():
    """A real headless browser: Debian's chromium driven by Playwright (never a browser that
    Playwright downloads). Skipped only on a developer machine without chromium; under CI
    (.ci/run installs it) a missing chromium fails the test."""
    if not os.environ.get("CI") and not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium); runs under CI=true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
