"""pytest-benchmark harness: `pytest bench/` (never part of the test run).

Every benchmark records its shapes, dtype, thread count and BLAS vendor in
``extra_info`` so saved runs (``--benchmark-autosave``) can be compared.
"""

import numpy as np
import pytest

from subquad._config import config_info


@pytest.fixture(scope="session")
def machine_info():
    info = config_info()
    return {
        "blas": ", ".join(f"{b['vendor']} {b['version']}" for b in info["blas"]),
        "openmp": info["openmp"],
        "cpus": info["cpus"],
    }


@pytest.fixture
def record(benchmark, machine_info):
    """Label a benchmark: ``record(group, dtype=..., n_threads=..., **shapes)``."""

    def _record(group, *, dtype, n_threads, **shapes):
        benchmark.group = group
        benchmark.extra_info.update(machine_info)
        benchmark.extra_info.update(shapes)
        benchmark.extra_info["dtype"] = np.dtype(dtype).name
        benchmark.extra_info["n_threads"] = n_threads
        return benchmark

    return _record
