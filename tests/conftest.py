import sys
from pathlib import Path

import numpy as np
import pytest

# The tests exercise the installed, compiled package. `python -m pytest` puts
# the checkout first on sys.path, where `subquad/` holds no compiled modules
# (unless built in place), so drop it.
_ROOT = Path(__file__).resolve().parents[1]
if not any((_ROOT / "subquad").glob("_openmp*.so")):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

SOURCE_DIR = _ROOT / "subquad"


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def rtol_for(dtype):
    """Tolerance for comparing a float kernel against a float64 reference."""
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-10
