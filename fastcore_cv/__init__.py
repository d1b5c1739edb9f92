"""fastcore-cv: from a folder of photos to a fast CPU image classifier, teaching the maths."""

import os as _os
import sys as _sys

# Thread policy, part 1 (part 2 is fastcore_cv.threads). After a threaded OpenBLAS call its
# idle threads spin for a while and starve Numba's OpenMP threads, and the reverse: on 2
# shared cores a 14 us kernel took 3.8 ms (bench/RESULTS.md, "thread policy"). OpenBLAS reads
# its spin timeout only when it loads, so it is set here, before numpy. A user's own setting wins.
_BLAS_TIMEOUT_APPLIES = "numpy" not in _sys.modules or "OPENBLAS_THREAD_TIMEOUT" in _os.environ
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if "FASTCORE_CV_CACHE_DIR" in _os.environ:
    _os.environ.setdefault("NUMBA_CACHE_DIR", _os.environ["FASTCORE_CV_CACHE_DIR"])

from fastcore_cv.threads import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"
__all__ = ["__version__", "get_num_threads", "set_num_threads"]

get_num_threads()  # apply the default policy now
