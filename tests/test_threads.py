import os
import subprocess
import sys

import numpy as np
import pytest

from subquad import effective_n_threads
from subquad._openmp import openmp_enabled
from subquad._threads import available_cpus, blas_info, blas_threads_limited

requires_openmp = pytest.mark.skipif(not openmp_enabled(), reason="serial build")


@requires_openmp
def test_positive_count_is_taken_as_is():
    assert effective_n_threads(1) == 1
    assert effective_n_threads(3) == 3
    assert effective_n_threads(np.int64(2)) == 2


@requires_openmp
def test_minus_one_means_all_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert effective_n_threads(-1) == available_cpus()


@requires_openmp
def test_none_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert effective_n_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1,2")  # nested levels: first one counts
    assert effective_n_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert effective_n_threads(None) == min(available_cpus(), effective_n_threads(-1))
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= effective_n_threads(None) <= available_cpus()


@requires_openmp
def test_none_in_a_fresh_process_with_omp_num_threads():
    # The OpenMP runtime reads OMP_NUM_THREADS once, at start-up.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", "import subquad; print(subquad.effective_n_threads())"],
        env=env, capture_output=True, text=True, check=True, cwd=os.path.expanduser("~"),
    ).stdout
    assert out.strip() == "1"


@pytest.mark.parametrize("bad", [0, -2, -100])
def test_bad_values_raise_value_error(bad):
    with pytest.raises(ValueError, match="n_threads must be None, -1 or a positive integer"):
        effective_n_threads(bad)


@pytest.mark.parametrize("bad", [1.0, "2", True, [2]])
def test_bad_types_raise_type_error(bad):
    with pytest.raises(TypeError, match="n_threads"):
        effective_n_threads(bad)


def test_blas_threads_limited_restores_setting():
    before = [info["num_threads"] for info in blas_info()]
    assert before, "threadpoolctl found no BLAS"
    with blas_threads_limited(1):
        assert all(info["num_threads"] == 1 for info in blas_info())
    assert [info["num_threads"] for info in blas_info()] == before
