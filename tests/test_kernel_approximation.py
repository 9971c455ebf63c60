"""The kernel-approximation transformers: sklearn conventions and statistics."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from subquad.kernel_approximation import ArcCosineSketch, NTKSketch, PolynomialSketch
from subquad.kernels import arccos_kernel, ntk_kernel, polynomial_kernel

METHODS = ["tensorsketch", "tensor_srht", "tree", "shared_leaf"]


@parametrize_with_checks([
    PolynomialSketch(n_components=16, random_state=0),
    PolynomialSketch(degree=5, coef0=1.0, n_components=16, method="shared_leaf",
                     random_state=0),
    ArcCosineSketch(order=1, n_components=16, max_degree=6, random_state=0),
    NTKSketch(n_components=16, max_degree=6, random_state=0),
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def unit_rows(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def truncated_kernel(est, X):
    """The kernel the features estimate without bias: the fitted truncated
    series in the cosine, times the norms."""
    norms = np.linalg.norm(X, axis=1)
    t = np.clip(X @ X.T / np.outer(norms, norms), -1, 1)
    series = np.polynomial.polynomial.polyval(t, est.coefficients_)
    return series * np.outer(norms, norms) ** est._norm_power


def mean_and_sem(make, X, n_seeds):
    values = []
    for seed in range(n_seeds):
        F = make(seed).fit_transform(X)
        values.append(F @ F.T)
    values = np.array(values)
    return values.mean(axis=0), values.std(axis=0) / np.sqrt(n_seeds)


@pytest.mark.parametrize("method", ["tensorsketch", "tensor_srht", "tree"])
def test_polynomial_features_are_unbiased(method):
    X = unit_rows(3, 6)
    K = polynomial_kernel(X, degree=3, gamma=0.7, coef0=0.5)
    mean, sem = mean_and_sem(lambda s: PolynomialSketch(
        degree=3, gamma=0.7, coef0=0.5, n_components=8, method=method, random_state=s),
        X, 500)
    assert np.all(np.abs(mean - K) <= 4.5 * sem), (mean - K) / sem


def test_shared_leaf_bias_is_small_against_its_error():
    # 64 features > 4 * n_components, so the shared sketch T is really used.
    X = unit_rows(3, 64)
    K = polynomial_kernel(X, degree=4)
    mean, sem = mean_and_sem(lambda s: PolynomialSketch(
        degree=4, n_components=8, method="shared_leaf", random_state=s), X, 400)
    spread = sem * np.sqrt(400)  # error of a single draw
    assert np.all(np.abs(mean - K) <= 0.25 * spread + 4.5 * sem)
    # T restores the norm: the diagonal of a single draw is close to 1.
    assert np.allclose(np.diag(K), 1)


@pytest.mark.parametrize("make", [
    lambda s: ArcCosineSketch(order=0, n_components=12, max_degree=7, random_state=s),
    lambda s: ArcCosineSketch(order=1, n_components=12, max_degree=7, random_state=s),
    lambda s: NTKSketch(n_layers=2, n_components=12, max_degree=7, random_state=s),
    lambda s: NTKSketch(n_layers=1, n_components=12, max_degree=5, degree_sampling=False,
                        random_state=s),
], ids=["arccos0", "arccos1", "ntk2", "ntk1-every-degree"])
def test_dot_product_features_are_unbiased(make):
    X = unit_rows(3, 5) * np.array([[1.0], [2.0], [0.5]])
    mean, sem = mean_and_sem(make, X, 500)
    K = truncated_kernel(make(0).fit(X), X)
    assert np.all(np.abs(mean - K) <= 4.5 * sem + 1e-12), (mean - K) / sem


def test_truncation_is_exact_on_the_diagonal_and_close_elsewhere():
    X = unit_rows(30, 8) * 3.0
    for est, exact in [(ArcCosineSketch(order=0, max_degree=9), arccos_kernel(X, order=0)),
                       (ArcCosineSketch(order=1, max_degree=9), arccos_kernel(X, order=1)),
                       (NTKSketch(n_layers=2, max_degree=9), ntk_kernel(X, n_layers=2))]:
        truncated = truncated_kernel(est.fit(X), X)
        # arccos is ill-conditioned at t = 1: the exact kernel itself is off by ~1e-8.
        np.testing.assert_allclose(np.diag(truncated), np.diag(exact), rtol=1e-7)
        assert np.abs(truncated - exact).max() < 0.05 * np.abs(exact).max()
        assert np.all(est.coefficients_ >= 0)


def relative_error(est, X, K, n_seeds=3):
    errors = []
    for seed in range(n_seeds):
        F = est.set_params(random_state=seed).fit_transform(X)
        errors.append(np.linalg.norm(F @ F.T - K) / np.linalg.norm(K))
    return np.mean(errors)


@pytest.mark.parametrize("est,kernel", [
    (PolynomialSketch(degree=3, coef0=1.0), lambda X: polynomial_kernel(X, degree=3,
                                                                        coef0=1.0)),
    (PolynomialSketch(degree=6, method="tree"), lambda X: polynomial_kernel(X, degree=6)),
    (ArcCosineSketch(order=0, max_degree=8), lambda X: arccos_kernel(X, order=0)),
    (NTKSketch(n_layers=1, max_degree=8), lambda X: ntk_kernel(X, n_layers=1)),
], ids=["poly-auto", "poly-tree", "arccos0", "ntk"])
def test_error_shrinks_with_n_components(est, kernel):
    X = unit_rows(60, 20)
    X[:30] = X[30:] + 0.3 * unit_rows(30, 20, seed=1)  # correlated pairs
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    K = kernel(X)
    small = relative_error(est.set_params(n_components=32), X, K)
    large = relative_error(est.set_params(n_components=2048), X, K)
    assert large < small / 3, (small, large)


@pytest.mark.parametrize("est", [PolynomialSketch(degree=3, coef0=1.0, method=m)
                                 for m in METHODS]
                         + [ArcCosineSketch(order=1), NTKSketch()], ids=lambda e: str(e))
def test_dtype_sparse_threads_determinism(est):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 40))
    X[rng.random(X.shape) < 0.5] = 0
    est.set_params(n_components=64, random_state=0, n_threads=1).fit(X)
    ref = est.transform(X)
    np.testing.assert_array_equal(est.transform(X), ref)  # deterministic
    np.testing.assert_allclose(est.transform(sp.csr_matrix(X)), ref, rtol=1e-10,
                               atol=1e-12)
    f32 = est.transform(X.astype(np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max())
    est.set_params(n_threads=2)
    np.testing.assert_allclose(est.transform(X), ref, rtol=1e-12, atol=1e-12)


def test_pipeline_fits_a_polynomial_target():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    y = (X[:, 0] * X[:, 1] + 0.5 * X[:, 2] ** 2)
    model = make_pipeline(PolynomialSketch(degree=2, coef0=1.0, n_components=512,
                                           random_state=0), Ridge(alpha=1e-3))
    assert model.fit(X[:300], y[:300]).score(X[300:], y[300:]) > 0.9


def test_degree_sampling_spreads_features_by_coefficient():
    est = NTKSketch(n_components=4001, max_degree=8, random_state=0).fit(np.ones((1, 3)))
    counts = est.degree_counts_[1:]
    expected = 4000 * est.coefficients_[1:] / est.coefficients_[1:].sum()
    assert counts.sum() == 4000
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected) + 1)


def test_bad_parameters():
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="method must be one of"):
        PolynomialSketch(method="fft").fit(X)
    with pytest.raises(ValueError, match="degree"):
        PolynomialSketch(degree=0).fit(X)
    with pytest.raises(ValueError, match="coef0"):
        PolynomialSketch(coef0=-1.0).fit(X)
    with pytest.raises(TypeError, match="n_components"):
        PolynomialSketch(n_components=2.5).fit(X)
    with pytest.raises(ValueError, match="order"):
        ArcCosineSketch(order=2).fit(X)
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        NTKSketch(n_components=0).fit(X)
    with pytest.raises(ValueError, match="n_components must be at least"):
        NTKSketch(n_components=4, max_degree=10, degree_sampling=False).fit(X)
    with pytest.raises(ValueError, match="n_threads"):
        NTKSketch(n_threads=0).fit(X)
    with pytest.raises(TypeError, match="degree_sampling must be a bool"):
        NTKSketch(degree_sampling="yes").fit(X)
    with pytest.raises(ValueError, match="4 features"):
        PolynomialSketch().fit(X).transform(np.ones((2, 5)))
