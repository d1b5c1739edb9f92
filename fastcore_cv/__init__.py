"""fastcore-cv: from a folder of photos to a fast CPU image classifier, teaching the maths."""

# The thread policy (fastcore_cv.threads) must run before numpy or Numba load: it sets
# OpenBLAS's spin timeout, which OpenBLAS reads only when it loads.
from fastcore_cv.threads import get_num_threads, set_num_threads

__version__ = "0.1.0"
__all__ = ["__version__", "get_num_threads", "set_num_threads"]

get_num_threads()  # apply the default policy now
