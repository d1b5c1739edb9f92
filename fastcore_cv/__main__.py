"""``python -m fastcore_cv``: the same as the ``fastcore-cv`` command."""

import sys

from fastcore_cv.cli import main

sys.exit(main())
