"""Sketch kernels and transformers vs scikit-learn, same shapes:
`pytest bench/bench_sketch.py`."""

import numpy as np
import pytest
from sklearn.kernel_approximation import PolynomialCountSketch

from subquad._threads import effective_n_threads
from subquad.kernel_approximation import NTKSketch, PolynomialSketch
from subquad.sketch import SRHT, CountSketch, TensorSRHT


@pytest.fixture(scope="module")
def X():
    X = np.random.default_rng(0).standard_normal((2000, 4096))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", [CountSketch, SRHT, TensorSRHT])
def test_base_sketch(record, X, cls, dtype):
    Xd = X.astype(dtype)
    sketch = cls(4096, 1024, random_state=0)
    bench = record(f"{cls.__name__} 2000x4096 -> 1024", dtype=dtype,
                   n_threads=effective_n_threads(), n=2000, d=4096, s=1024)
    bench(sketch.transform, Xd)


@pytest.mark.parametrize("degree", [2, 4])
@pytest.mark.parametrize("impl", ["sklearn", "auto", "tree", "shared_leaf"])
def test_polynomial(record, X, impl, degree):
    if impl == "sklearn":
        est = PolynomialCountSketch(degree=degree, gamma=1.0, n_components=1024,
                                    random_state=0)
    else:
        est = PolynomialSketch(degree=degree, n_components=1024, method=impl,
                               random_state=0)
    est.fit(X)
    bench = record(f"polynomial degree {degree}, 2000x4096 -> 1024", dtype=X.dtype,
                   n_threads=effective_n_threads(), n=2000, d=4096, s=1024, impl=impl)
    bench(est.transform, X)


@pytest.mark.parametrize("degree_sampling", [True, False])
def test_ntk(record, X, degree_sampling):
    est = NTKSketch(n_components=1024, degree_sampling=degree_sampling, random_state=0)
    est.fit(X[:500])
    bench = record("NTK sketch 500x4096 -> 1024", dtype=X.dtype,
                   n_threads=effective_n_threads(), n=500, d=4096, s=1024,
                   degree_sampling=degree_sampling)
    bench(est.transform, X[:500])
