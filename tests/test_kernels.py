"""Exact kernels against closed forms, Monte Carlo and their series."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import comb
from sklearn.metrics.pairwise import polynomial_kernel as sk_polynomial_kernel

from subquad.kernels import (arccos_kernel, arccos_taylor_coefficients, ntk_kernel,
                             ntk_taylor_coefficients, polynomial_kernel)


@pytest.fixture
def XY():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 5)), rng.standard_normal((4, 5))


def angles(X, Y):
    nx, ny = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
    return np.arccos(np.clip(X @ Y.T / np.outer(nx, ny), -1, 1)), np.outer(nx, ny)


def test_polynomial_kernel_matches_sklearn(XY):
    X, Y = XY
    np.testing.assert_allclose(polynomial_kernel(X, Y, degree=3, gamma=0.5, coef0=2.0),
                               sk_polynomial_kernel(X, Y, degree=3, gamma=0.5, coef0=2.0))


def test_arccos_closed_forms(XY):
    X, Y = XY
    theta, norms = angles(X, Y)
    np.testing.assert_allclose(arccos_kernel(X, Y, order=0), 1 - theta / np.pi)
    expected = norms * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / np.pi
    np.testing.assert_allclose(arccos_kernel(X, Y, order=1), expected)


def test_arccos_are_wide_layer_kernels(XY):
    # k_n(x, y) = 2 E[σ_n(w·x) σ_n(w·y)] for w ~ N(0, I), σ_0 = step, σ_1 = ReLU.
    X, Y = XY
    W = np.random.default_rng(1).standard_normal((5, 400_000))
    A, B = X @ W, Y @ W
    step = 2 * (A > 0).astype(float) @ (B > 0).T / W.shape[1]
    relu = 2 * np.maximum(A, 0) @ np.maximum(B, 0).T / W.shape[1]
    np.testing.assert_allclose(arccos_kernel(X, Y, order=0), step, atol=5e-3)
    np.testing.assert_allclose(arccos_kernel(X, Y, order=1), relu, atol=0.03)


def test_ntk_closed_forms(XY):
    X, Y = XY
    theta, norms = angles(X, Y)
    t = np.cos(theta)
    k0 = 1 - theta / np.pi
    k1 = (np.sin(theta) + (np.pi - theta) * t) / np.pi
    np.testing.assert_allclose(ntk_kernel(X, Y, n_layers=0), X @ Y.T)
    np.testing.assert_allclose(ntk_kernel(X, Y, n_layers=1), norms * (t * k0 + k1))
    theta2 = np.arccos(np.clip(k1, -1, 1))
    theta_2 = (t * k0 + k1) * (1 - theta2 / np.pi) + (
        np.sin(theta2) + (np.pi - theta2) * k1) / np.pi
    np.testing.assert_allclose(ntk_kernel(X, Y, n_layers=2), norms * theta_2)
    np.testing.assert_allclose(np.diag(ntk_kernel(X, n_layers=3)),
                               4 * np.linalg.norm(X, axis=1) ** 2)


def test_arccos_series_matches_design_formula():
    j = np.arange(21)  # 2j+1 covers the odd degrees up to 41
    a = comb(2 * j, j) / 4.0 ** j
    c0 = arccos_taylor_coefficients(0, 41)
    expected0 = np.zeros(42)
    expected0[0] = 0.5
    expected0[2 * j + 1] = a / (np.pi * (2 * j + 1))
    np.testing.assert_allclose(c0, expected0, atol=1e-15)
    c1 = arccos_taylor_coefficients(1, 41)
    expected1 = np.zeros(42)
    expected1[0], expected1[1] = 1 / np.pi, 0.5
    j, a = j[:-1], a[:-1]  # 2j+2 covers the even degrees up to 40
    expected1[2 * j + 2] = a / (np.pi * (2 * j + 1) * (2 * j + 2))
    np.testing.assert_allclose(c1, expected1, atol=1e-15)


@pytest.mark.parametrize("n_layers", [0, 1, 2, 4])
def test_ntk_series_sums_to_kernel(n_layers):
    c = ntk_taylor_coefficients(n_layers, 400)
    assert np.all(c >= -1e-14)
    t = np.linspace(-0.9, 0.9, 19)
    X = np.stack([np.ones_like(t), np.zeros_like(t)], axis=1)
    Y = np.stack([t, np.sqrt(1 - t * t)], axis=1)
    exact = np.diag(ntk_kernel(X, Y, n_layers=n_layers))
    np.testing.assert_allclose(np.polynomial.polynomial.polyval(t, c), exact, atol=1e-12)
    # Coefficients sum to L + 1 with a tail ~ j^{-1/2} beyond the truncation.
    assert n_layers + 1 - 0.2 < c.sum() <= n_layers + 1 + 1e-12


def test_ntk_coefficients_decay_like_three_halves():
    # With one layer, Θ(t) = t κ0(t) + κ1(t) has only even terms beyond t.
    c = ntk_taylor_coefficients(1, 800)
    even = np.arange(400, 801, 2)
    assert np.all(c[3::2] == 0)
    scaled = c[even] * even ** 1.5
    assert scaled.max() / scaled.min() < 1.1


def test_series_of_arccos_sums_to_kernel():
    t = np.linspace(-0.95, 0.95, 11)
    X = np.stack([np.ones_like(t), np.zeros_like(t)], axis=1)
    Y = np.stack([t, np.sqrt(1 - t * t)], axis=1)
    for order in (0, 1):
        c = arccos_taylor_coefficients(order, 2000)
        np.testing.assert_allclose(np.polynomial.polynomial.polyval(t, c),
                                   np.diag(arccos_kernel(X, Y, order=order)), atol=2e-3)


def test_sparse_float32_and_zero_rows(XY):
    X, _ = XY
    X = X.copy()
    X[2] = 0
    for kernel in (lambda A: arccos_kernel(A, order=0), lambda A: arccos_kernel(A, order=1),
                   lambda A: ntk_kernel(A, n_layers=2)):
        dense = kernel(X)
        np.testing.assert_allclose(kernel(sp.csr_matrix(X)), dense)
        assert kernel(X.astype(np.float32)).dtype == np.float32
        assert kernel(sp.csr_matrix(X, dtype=np.float32)).dtype == np.float32
        assert np.all(np.isfinite(dense))
    assert np.allclose(arccos_kernel(X, order=0)[2], 0.5)
    assert np.allclose(ntk_kernel(X)[2], 0)


def test_bad_arguments(XY):
    X, Y = XY
    with pytest.raises(ValueError, match="order"):
        arccos_kernel(X, order=2)
    with pytest.raises(ValueError, match="n_layers"):
        ntk_kernel(X, n_layers=-1)
    with pytest.raises(TypeError, match="max_degree"):
        ntk_taylor_coefficients(1, 2.5)
    with pytest.raises(ValueError, match="Incompatible dimension"):
        arccos_kernel(X, Y[:, :3])
