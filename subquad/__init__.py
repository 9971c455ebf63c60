"""subquad: wide sparse ReLU networks in subquadratic time, and tensor sketches.

See ``subquad.show_config()`` for how this installation was built.
"""

try:
    from . import _cython_blas, _openmp  # noqa: F401  (fail early if not built)
except ImportError as error:  # pragma: no cover - exercised only when unbuilt
    from ._build_check import raise_build_error

    raise_build_error(error)

from . import index, kernel_approximation, kernels, linalg, neural_network, sketch
from ._config import show_config
from ._output_pool import get_output_pool_limit, output_pool_stats, set_output_pool_limit
from ._threads import effective_n_threads
from .index import ActiveNeuronIndex
from .neural_network import SparseMLPClassifier, SparseMLPRegressor

__version__ = "0.1.0.dev0"

__all__ = [
    "ActiveNeuronIndex",
    "SparseMLPClassifier",
    "SparseMLPRegressor",
    "effective_n_threads",
    "get_output_pool_limit",
    "index",
    "kernel_approximation",
    "kernels",
    "linalg",
    "neural_network",
    "output_pool_stats",
    "set_output_pool_limit",
    "sketch",
    "show_config",
    "__version__",
]
