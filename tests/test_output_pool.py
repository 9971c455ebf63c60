"""The pool that recycles the memory of large output arrays."""

import gc
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

import subquad
from subquad import ActiveNeuronIndex, _output_pool
from subquad.linalg import threshold_matmul

MIB = 1 << 20


@pytest.fixture(autouse=True)
def empty_pool():
    """Each test starts from an empty pool with the default limit, and
    leaves the limit as it found it."""
    limit = subquad.set_output_pool_limit(0)
    subquad.set_output_pool_limit(limit)
    yield
    subquad.set_output_pool_limit(0)
    subquad.set_output_pool_limit(limit)


def address(a):
    return a.__array_interface__["data"][0]


def held():
    return subquad.output_pool_stats()["held_blocks"]


def test_small_outputs_are_plain_arrays():
    a = _output_pool.empty(1000, np.float32)
    assert a.flags.owndata and a.shape == (1000,) and a.dtype == np.float32
    del a
    assert held() == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_block_returns_when_the_last_view_dies_and_is_reused(dtype):
    n = 8 * MIB // np.dtype(dtype).itemsize
    a = _output_pool.empty(n, dtype)
    assert a.shape == (n,) and a.dtype == dtype and a.flags.writeable
    a[:] = 7
    start = address(a)
    view = a[100:200]
    del a
    gc.collect()
    assert held() == 0
    np.testing.assert_array_equal(view, 7)
    del view
    assert held() == 1
    stats = subquad.output_pool_stats()
    b = _output_pool.empty(n - 1000, dtype)
    assert address(b) == start
    assert subquad.output_pool_stats()["reused"] == stats["reused"] + 1 and held() == 0


def test_best_fit_and_no_block_twice_the_request():
    small, large = _output_pool.empty(5 * MIB, np.uint8), _output_pool.empty(20 * MIB, np.uint8)
    at_small, at_large = address(small), address(large)
    del small, large
    assert held() == 2
    a = _output_pool.empty(5 * MIB, np.uint8)
    assert address(a) == at_small
    # The 20 MiB block is more than twice 6 MiB: a new block, the large one kept.
    b = _output_pool.empty(6 * MIB, np.uint8)
    assert address(b) != at_large and held() == 1
    c = _output_pool.empty(12 * MIB, np.uint8)
    assert address(c) == at_large and held() == 0
    assert not np.shares_memory(a, b) and not np.shares_memory(b, c)


def test_limit_frees_the_least_recently_returned_blocks():
    subquad.set_output_pool_limit(12 * MIB)
    first, second, third = (_output_pool.empty(5 * MIB, np.uint8) for _ in range(3))
    kept = {address(second), address(third)}
    del first, second, third
    stats = subquad.output_pool_stats()
    assert stats["held_blocks"] == 2 and stats["held_bytes"] <= 12 * MIB
    again = [_output_pool.empty(5 * MIB, np.uint8) for _ in range(2)]
    assert {address(a) for a in again} == kept
    del again
    assert subquad.set_output_pool_limit(0) == 12 * MIB
    assert subquad.output_pool_stats()["held_bytes"] == 0
    # Limit 0: plain arrays, nothing held.
    a = _output_pool.empty(8 * MIB, np.uint8)
    assert a.flags.owndata
    del a
    assert held() == 0 and subquad.get_output_pool_limit() == 0


@pytest.mark.parametrize("limit, error, match", [
    (-1, ValueError, "max_bytes must be >= 0"),
    (1.5, TypeError, "max_bytes must be an int"),
    (True, TypeError, "max_bytes must be an int"),
    ("256", TypeError, "max_bytes must be an int"),
])
def test_bad_limit_is_rejected(limit, error, match):
    with pytest.raises(error, match=match):
        subquad.set_output_pool_limit(limit)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_index_outputs_from_reused_blocks_stay_exact_and_independent(dtype, n_threads):
    """Queries large enough to be pooled, with results dropped and kept:
    every result stays what it was while alive, however later ones reuse
    memory."""
    rng = np.random.default_rng(0)
    W = rng.integers(-4, 5, size=(1 << 15, 2)).astype(dtype)
    X = rng.integers(-3, 4, size=(64, 2)).astype(dtype)
    index = ActiveNeuronIndex(W, algorithm="tree", n_threads=n_threads)
    values = X.astype(np.float64) @ W.T.astype(np.float64)
    expected = {b: np.where(values - b > 0, values - b, 0) for b in (-50.0, -2.0, 1.0)}
    kept = []
    for repeat in range(3):
        for b in expected:
            A = index.query(X, b)
            assert A.data.nbytes >= 4 * MIB or b == 1.0
            np.testing.assert_array_equal(A.toarray(), expected[b])
            if repeat == 1:
                kept.append((b, A, A.copy()))
            del A
    assert subquad.output_pool_stats()["reused"] > 0
    for b, A, copy in kept:
        assert (A != copy).nnz == 0
        np.testing.assert_array_equal(A.toarray(), expected[b])
    for (_, A, _), (_, B, _) in zip(kept, kept[1:]):
        assert not np.shares_memory(A.data, B.data)
        assert not np.shares_memory(A.indices, B.indices)
    restored = pickle.loads(pickle.dumps(kept[0][1]))
    assert (restored != kept[0][2]).nnz == 0


def test_threshold_matmul_output_from_reused_blocks():
    rng = np.random.default_rng(1)
    H = sp.random(512, 64, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    W = rng.standard_normal((64, 8192)).astype(np.float32)
    dense = H.toarray() @ W
    start = subquad.output_pool_stats()
    for threshold in (-100.0, -50.0, -100.0):
        A = threshold_matmul(H, W, threshold)
        assert A.data.nbytes >= 4 * MIB
        np.testing.assert_allclose(A.toarray(), np.maximum(dense - threshold, 0), rtol=1e-5,
                                   atol=1e-3)
        del A
    stats = subquad.output_pool_stats()
    assert stats["reused"] >= start["reused"] + 2


def test_concurrent_queries_dropping_results():
    rng = np.random.default_rng(2)
    W = rng.integers(-4, 5, size=(1 << 14, 2)).astype(np.float64)
    index = ActiveNeuronIndex(W, algorithm="tree")
    batches = [rng.integers(-3, 4, size=(48 + i, 2)).astype(np.float64) for i in range(24)]

    def check(X):
        values = X @ W.T + 40.0
        for _ in range(3):
            A = index.query(X, -40.0)
            assert A.data.nbytes >= 4 * MIB
            if not np.array_equal(A.toarray(), np.where(values > 0, values, 0)):
                return False
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, batches))
