"""Sketches against explicit NumPy matrices, and their statistics."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.linalg import hadamard

from conftest import rtol_for
from subquad.sketch import OSNAP, SRHT, CountSketch, TensorSketch, TensorSRHT
from subquad.sketch import _kernels, _sketches


def sparse_matrix(table, n_components, n_features):
    """The sketch matrix a SparseTable describes, built entry by entry."""
    S = np.zeros((n_components, n_features))
    for j in range(n_features):
        for idx, val in zip(table.indices[j], table.values(np.float64)[j]):
            S[idx, j] += val
    return S


def srht_matrix(factor, n_features):
    """Rows ``sample`` of ``H D`` restricted to the first n_features columns."""
    D = len(factor.signs)
    return (hadamard(D) * factor.signs)[factor.sample][:, :n_features]


def data(rng, n, d, dtype, sparse=False):
    X = rng.standard_normal((n, d)).astype(dtype)
    if sparse:
        X[rng.random((n, d)) < 0.6] = 0
        return sp.csr_matrix(X)
    return X


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("cls,kw", [(CountSketch, {}), (OSNAP, {"density": 3})])
def test_sparse_sketches_match_explicit_matrix(cls, kw, sparse, dtype):
    rng = np.random.default_rng(0)
    X = data(rng, 7, 50, dtype, sparse)
    sketch = cls(50, 12, random_state=1, **kw)
    S = sparse_matrix(sketch._table, 12, 50)
    got = sketch.transform(X)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, np.asarray(X @ S.T), rtol=rtol_for(dtype), atol=1e-5)


def test_osnap_columns_have_density_entries_in_distinct_rows():
    sketch = OSNAP(200, 30, random_state=0, density=4)
    S = sparse_matrix(sketch._table, 30, 200)
    assert np.all((S != 0).sum(axis=0) == 4)
    np.testing.assert_allclose(np.abs(S[S != 0]), 0.5)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_srht_matches_explicit_matrix(sparse, dtype):
    rng = np.random.default_rng(0)
    X = data(rng, 6, 37, dtype, sparse)
    sketch = SRHT(37, 20, random_state=3)
    M = srht_matrix(sketch._factor, 37) / np.sqrt(20)
    assert len(set(sketch._factor.sample)) == 20  # sampled without replacement
    np.testing.assert_allclose(sketch.transform(X), np.asarray(X @ M.T),
                               rtol=rtol_for(dtype), atol=1e-4)


# Sizes that end the transform on each of its passes: the 8-point blocks,
# radix-4 pairs of levels and a last radix-2 level.
@pytest.mark.parametrize("size", [1, 2, 4, 8, 16, 32, 64, 128, 2048])
def test_fwht_matches_hadamard_matrix(size, dtype):
    A = np.random.default_rng(0).standard_normal((5, size)).astype(dtype)
    expected = A.astype(np.float64) @ hadamard(size).T
    _kernels.fwht(A, 2)
    np.testing.assert_allclose(A, expected, rtol=rtol_for(dtype), atol=1e-3)


def kron_rows(X, Y):
    return np.stack([np.kron(x, y) for x, y in zip(X, Y)])


@pytest.fixture(params=["fft", "direct"])
def tensor_sketch_path(request, monkeypatch):
    """Force TensorSketch through its FFT or its bucket-domain path."""
    monkeypatch.setattr(_sketches, "FFT_COST_PER_POINT", 0.0 if request.param == "fft" else 1e12)
    return request.param


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_tensor_sketch_pair_equals_countsketch_of_kronecker(sparse, dtype, tensor_sketch_path):
    rng = np.random.default_rng(1)
    X, Y = data(rng, 5, 6, dtype, sparse), data(rng, 5, 4, dtype)
    s = 16
    sketch = TensorSketch((6, 4), s, random_state=0)
    # TensorSketch of x ⊗ y is the CountSketch of the Kronecker product with
    # hash h1(i) + h2(j) mod s and sign σ1(i) σ2(j) (Pham and Pagh).
    (h1, s1), (h2, s2) = [(t.indices[:, 0], t.values(np.float64)[:, 0])
                          for t in sketch._tables]
    S = np.zeros((s, 24))
    for i in range(6):
        for j in range(4):
            S[(h1[i] + h2[j]) % s, i * 4 + j] += s1[i] * s2[j]
    Xd = X.toarray() if sparse else X
    np.testing.assert_allclose(sketch.transform_pair(X, Y), kron_rows(Xd, Y) @ S.T,
                               rtol=10 * rtol_for(dtype), atol=1e-4)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_tensor_srht_pair_equals_sampled_hadamard_of_kronecker(sparse, dtype):
    rng = np.random.default_rng(2)
    X, Y = data(rng, 5, 6, dtype, sparse), data(rng, 5, 3, dtype)
    sketch = TensorSRHT((6, 3), 10, random_state=0)
    f1, f2 = sketch._factors
    full = np.kron(hadamard(8) * f1.signs, hadamard(4) * f2.signs)
    # Columns of the padded Kronecker product that belong to real coordinates.
    keep = [i * 4 + j for i in range(6) for j in range(3)]
    M = full[f1.sample * 4 + f2.sample][:, keep] / np.sqrt(10)
    Xd = X.toarray() if sparse else X
    np.testing.assert_allclose(sketch.transform_pair(X, Y), kron_rows(Xd, Y) @ M.T,
                               rtol=10 * rtol_for(dtype), atol=1e-4)


@pytest.mark.parametrize("cls", [TensorSketch, TensorSRHT])
def test_transform_is_pair_of_row_with_itself(cls):
    X = np.random.default_rng(0).standard_normal((4, 9))
    sketch = cls(9, 32, random_state=0)
    np.testing.assert_allclose(sketch.transform(X), sketch.transform_pair(X, X))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("degree", [2, 3, 4])
def test_tensor_sketch_direct_path_equals_fft_path(degree, sparse, n_threads, dtype,
                                                   monkeypatch):
    # Rows with a few nonzeros (and one empty row) plus a bias coordinate,
    # as PolynomialSketch passes for coef0 > 0; enough rows for two threads.
    rng = np.random.default_rng(3)
    X = data(rng, 4000, 12, dtype, sparse=True).toarray()
    X[7] = 0
    X = sp.csr_matrix(X) if sparse else X
    assert _sketches.threads_for(2, 4000, _sketches._direct_cost(X, X, degree, 256, 1)) == 2
    sketch = TensorSketch(13, 256, random_state=0, degree=degree, n_threads=n_threads)
    scale = rng.random(4000).astype(dtype) + 0.5
    results = {}
    for path, cost in [("fft", 0.0), ("direct", 1e12)]:
        monkeypatch.setattr(_sketches, "FFT_COST_PER_POINT", cost)
        results[path] = sketch._transform_factors([X] * degree, scale, 0.75, n_threads)
    assert results["direct"].dtype == dtype
    np.testing.assert_allclose(results["direct"], results["fft"], rtol=10 * rtol_for(dtype),
                               atol=1e-4 if dtype == np.float32 else 1e-12)


def test_tensor_sketch_picks_direct_path_for_few_nonzeros():
    sparse_rows = sp.random(10, 1000, density=0.01, format="csr")
    assert (_sketches._direct_cost(sparse_rows, sparse_rows.copy(), 2, 1024, 0.0)
            < _sketches._fft_cost(2, 1024))
    dense = np.ones((10, 4096))
    assert _sketches._direct_cost(dense, dense, 2, 1024, 0.0) >= _sketches._fft_cost(2, 1024)


def sketches(d, m, seed):
    return {
        "countsketch": CountSketch(d, m, random_state=seed),
        "osnap": OSNAP(d, m, random_state=seed, density=2),
        "srht": SRHT(d, m, random_state=seed),
        "tensorsketch": TensorSketch(d, m, random_state=seed),
        "tensor_srht": TensorSRHT(d, m, random_state=seed),
        "tensorsketch3": TensorSketch(d, m, random_state=seed, degree=3),
        "tensor_srht3": TensorSRHT(d, m, random_state=seed, degree=3),
    }


def exact(name, G):
    return G ** {"tensorsketch": 2, "tensor_srht": 2, "tensorsketch3": 3,
                 "tensor_srht3": 3}.get(name, 1)


def test_inner_products_are_unbiased():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 10))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    G = X @ X.T
    estimates = {}
    for seed in range(600):
        for name, sketch in sketches(10, 4, seed).items():
            F = sketch.transform(X)
            estimates.setdefault(name, []).append(F @ F.T)
    for name, values in estimates.items():
        values = np.array(values)
        mean, sem = values.mean(axis=0), values.std(axis=0) / np.sqrt(len(values))
        # 4.5 standard errors: about 1e-5 false alarms per entry.
        assert np.all(np.abs(mean - exact(name, G)) <= 4.5 * sem + 1e-12), name


def test_error_shrinks_with_n_components():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 300))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    G = X @ X.T

    def error(name, m):
        errs = []
        for seed in range(3):
            F = sketches(300, m, seed)[name].transform(X)
            K = exact(name, G)
            errs.append(np.linalg.norm(F @ F.T - K) / np.linalg.norm(K))
        return np.mean(errs)

    for name in sketches(300, 8, 0):
        small, large = error(name, 32), error(name, 2048)
        # Error ~ 1/sqrt(m): 8x expected, ask for 3x.
        assert large < small / 3, (name, small, large)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_one_and_two_threads_agree(sparse):
    rng = np.random.default_rng(0)
    # Large enough that the kernels do use two threads (see threads_for).
    X = data(rng, 3000, 300, np.float64, sparse)
    for name, one in sketches(300, 64, 0).items():
        two = sketches(300, 64, 0)[name]
        one.n_threads, two.n_threads = 1, 2
        np.testing.assert_allclose(one.transform(X), two.transform(X), rtol=1e-12,
                                   atol=1e-12, err_msg=name)


def test_large_inputs_are_chunked_consistently():
    # More rows than one chunk of TensorSketch's buffers.
    X = np.random.default_rng(0).standard_normal((700, 5)).astype(np.float32)
    sketch = TensorSketch(5, 4096, random_state=0, degree=2)
    full = sketch.transform(X)
    np.testing.assert_allclose(full[650:], sketch.transform(X[650:]), rtol=1e-5)


def test_bad_arguments():
    sketch = CountSketch(5, 8, random_state=0)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 5\)"):
        sketch.transform(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2D"):
        sketch.transform(np.ones(5))
    with pytest.raises(TypeError, match="X must be"):
        sketch.transform("abc")
    with pytest.raises(ValueError, match="NaN"):
        sketch.transform(np.full((2, 5), np.nan))
    with pytest.raises(ValueError, match="n_components"):
        CountSketch(5, 0)
    with pytest.raises(TypeError, match="n_features"):
        SRHT(5.0, 3)
    with pytest.raises(ValueError, match="density"):
        OSNAP(5, 3, density=4)
    with pytest.raises(ValueError, match="n_threads"):
        SRHT(5, 3, n_threads=0)
    pair = TensorSRHT((3, 4), 8, random_state=0)
    with pytest.raises(ValueError, match=r"Y must have shape \(n_samples, 4\)"):
        pair.transform_pair(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="same number of rows"):
        pair.transform_pair(np.ones((2, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="equal factor dimensions"):
        pair.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match="degree=2"):
        TensorSketch(3, 8, degree=3).transform_pair(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="tuple of degree=2"):
        TensorSketch((3, 4, 5), 8)


def test_pair_dtype_promotion():
    X = np.ones((2, 3), np.float32)
    sketch = TensorSketch(3, 8, random_state=0)
    assert sketch.transform_pair(X, X).dtype == np.float32
    assert sketch.transform_pair(X, X.astype(np.float64)).dtype == np.float64
