"""Row-major BLAS wrappers against NumPy's own BLAS call, same shapes."""

import numpy as np
import pytest

from subquad import _cython_blas as blas
from subquad._threads import effective_n_threads

SHAPES = [(512, 512, 512), (2048, 2048, 256), (128, 4096, 4096)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("impl", ["subquad", "numpy"])
def test_gemm(record, impl, m, n, k, dtype):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    C = np.empty((m, n), dtype)
    bench = record(f"gemm {m}x{n}x{k} {np.dtype(dtype).name}", dtype=dtype,
                   n_threads=effective_n_threads(), m=m, n=n, k=k, impl=impl)
    if impl == "subquad":
        bench(blas.gemm, False, False, 1.0, A, B, 0.0, C)
    else:
        bench(np.matmul, A, B, out=C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("impl", ["subquad", "numpy"])
def test_gemv(record, impl, dtype):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, 4096)).astype(dtype)
    x = rng.standard_normal(4096).astype(dtype)
    y = np.empty(4096, dtype)
    bench = record(f"gemv 4096x4096 {np.dtype(dtype).name}", dtype=dtype,
                   n_threads=effective_n_threads(), m=4096, n=4096, impl=impl)
    if impl == "subquad":
        bench(blas.gemv, False, 1.0, A, x, 0.0, y)
    else:
        bench(np.matmul, A, x, out=y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("impl", ["subquad", "numpy"])
def test_dot(record, impl, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1 << 20).astype(dtype)
    y = rng.standard_normal(1 << 20).astype(dtype)
    bench = record(f"dot 2^20 {np.dtype(dtype).name}", dtype=dtype,
                   n_threads=effective_n_threads(), n=1 << 20, impl=impl)
    bench(blas.dot if impl == "subquad" else np.dot, x, y)
