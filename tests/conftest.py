"""Fixtures shared by every test folder."""

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
