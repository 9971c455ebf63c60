import itertools

import numpy as np
import pytest
from conftest import rtol_for

from subquad import _cython_blas as blas

SHAPES = [(1, 1, 1), (7, 5, 3), (33, 17, 65), (0, 4, 3), (4, 0, 3), (4, 3, 0), (0, 0, 0)]


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_gemm_matches_numpy(dtype, m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(0)
    A = _random(rng, (k, m) if trans_a else (m, k), dtype)
    B = _random(rng, (n, k) if trans_b else (k, n), dtype)
    C = _random(rng, (m, n), dtype)
    alpha, beta = 1.5, -0.5
    expected = alpha * (A.T if trans_a else A).astype(np.float64) @ (
        B.T if trans_b else B
    ).astype(np.float64) + beta * C.astype(np.float64)
    blas.gemm(trans_a, trans_b, alpha, A, B, beta, C)
    assert C.dtype == dtype
    np.testing.assert_allclose(C, expected, rtol=rtol_for(dtype), atol=rtol_for(dtype))


def test_gemm_beta_zero_ignores_nan_in_output(dtype):
    rng = np.random.default_rng(1)
    A, B = _random(rng, (4, 3), dtype), _random(rng, (3, 5), dtype)
    C = np.full((4, 5), np.nan, dtype=dtype)
    blas.gemm(False, False, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, A @ B, rtol=rtol_for(dtype))


def test_gemm_rejects_mismatched_shapes(dtype):
    A = np.ones((3, 4), dtype)
    with pytest.raises(ValueError, match="op\\(A\\) has shape"):
        blas.gemm(False, False, 1.0, A, np.ones((5, 2), dtype), 0.0, np.ones((3, 2), dtype))
    with pytest.raises(ValueError, match="C must be"):
        blas.gemm(False, False, 1.0, A, np.ones((4, 2), dtype), 0.0, np.ones((2, 3), dtype))


def test_gemm_rejects_mixed_dtypes_and_strided_arrays():
    A = np.ones((3, 4), np.float32)
    with pytest.raises((TypeError, ValueError)):
        blas.gemm(False, False, 1.0, A, np.ones((4, 2)), 0.0, np.ones((3, 2), np.float32))
    with pytest.raises((TypeError, ValueError)):
        blas.gemm(False, False, 1.0, A[:, ::2], np.ones((2, 2), np.float32), 0.0,
                  np.ones((3, 2), np.float32))


@pytest.mark.parametrize("m,n", [(1, 1), (9, 4), (4, 9), (0, 3), (3, 0), (0, 0)])
@pytest.mark.parametrize("trans", [False, True])
def test_gemv_matches_numpy(dtype, m, n, trans):
    rng = np.random.default_rng(2)
    A = _random(rng, (m, n), dtype)
    x = _random(rng, m if trans else n, dtype)
    y = _random(rng, n if trans else m, dtype)
    expected = 2.0 * (A.T if trans else A).astype(np.float64) @ x + 0.25 * y.astype(np.float64)
    blas.gemv(trans, 2.0, A, x, 0.25, y)
    np.testing.assert_allclose(y, expected, rtol=rtol_for(dtype), atol=rtol_for(dtype))


def test_gemv_rejects_wrong_lengths(dtype):
    with pytest.raises(ValueError, match="op\\(A\\) has shape"):
        blas.gemv(False, 1.0, np.ones((3, 4), dtype), np.ones(3, dtype), 0.0, np.ones(3, dtype))


@pytest.mark.parametrize("n", [0, 1, 17, 1000])
def test_level1_match_numpy(dtype, n):
    rng = np.random.default_rng(3)
    x, y = _random(rng, n, dtype), _random(rng, n, dtype)
    tol = rtol_for(dtype)
    np.testing.assert_allclose(blas.dot(x, y), np.dot(x.astype(float), y), rtol=tol, atol=tol)
    np.testing.assert_allclose(blas.nrm2(x), np.linalg.norm(x.astype(float)), rtol=tol)
    expected = y.astype(float) - 0.5 * x
    blas.axpy(-0.5, x, y)
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)
    expected = 3.0 * x.astype(float)
    blas.scal(3.0, x)
    np.testing.assert_allclose(x, expected, rtol=tol, atol=tol)


def test_level1_rejects_mismatched_lengths(dtype):
    with pytest.raises(ValueError, match="same length"):
        blas.dot(np.ones(3, dtype), np.ones(4, dtype))
    with pytest.raises(ValueError, match="same length"):
        blas.axpy(1.0, np.ones(3, dtype), np.ones(4, dtype))
