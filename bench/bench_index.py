"""pytest-benchmark cases for ActiveNeuronIndex (`pytest bench/bench_index.py`).

`bench/active_index.py` prints the same comparisons as ratios in one run.
"""

import numpy as np
import pytest

from subquad import ActiveNeuronIndex, effective_n_threads

N_NEURONS = 1 << 18
N_QUERIES = 256


@pytest.fixture(scope="module", params=[4, 8, 32], ids=lambda d: f"dim{d}")
def problem(request):
    dim = request.param
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N_NEURONS, dim)).astype(np.float32)
    X = rng.standard_normal((N_QUERIES, dim)).astype(np.float32)
    threshold = float(np.quantile(X[:32] @ W[:65536].T, 0.99))
    return dim, W, X, threshold


@pytest.mark.parametrize("impl", ["tree", "tree-unsorted", "brute", "auto", "numpy"])
def test_query(record, problem, impl):
    dim, W, X, threshold = problem
    bench = record(f"active index query dim={dim}", dtype=np.float32,
                   n_threads=effective_n_threads(), n_neurons=N_NEURONS, n_queries=N_QUERIES,
                   dim=dim, impl=impl)
    if impl == "numpy":
        def numpy_query():
            Z = X @ W.T
            rows, cols = np.nonzero(Z > threshold)
            return rows, cols, Z[rows, cols] - threshold
        bench(numpy_query)
    elif impl == "tree-unsorted":
        index = ActiveNeuronIndex(W, algorithm="tree")
        bench(index.query, X, threshold, sort_indices=False)
    else:
        index = ActiveNeuronIndex(W, algorithm=impl)
        bench(index.query, X, threshold)


@pytest.mark.parametrize("dim", [4, 8])
def test_build(record, dim):
    W = np.random.default_rng(0).standard_normal((N_NEURONS, dim)).astype(np.float32)
    bench = record(f"active index build dim={dim}", dtype=np.float32,
                   n_threads=effective_n_threads(), n_neurons=N_NEURONS, dim=dim)
    bench(ActiveNeuronIndex, W, algorithm="tree")


@pytest.mark.parametrize("n_threads", [1, 2])
def test_tree_threads(record, n_threads):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N_NEURONS, 4)).astype(np.float32)
    X = rng.standard_normal((N_QUERIES, 4)).astype(np.float32)
    index = ActiveNeuronIndex(W, algorithm="tree", n_threads=n_threads)
    bench = record("active index tree threads", dtype=np.float32, n_threads=n_threads,
                   n_neurons=N_NEURONS, n_queries=N_QUERIES, dim=4)
    bench(index.query, X, 4.5)
