"""ActiveNeuronIndex against a NumPy brute force, both directions.

Integer-valued data make every inner product exact in float32 and float64,
so there the reported set and values must equal the reference exactly,
ties at the threshold included. Float data are compared within a rounding
tolerance around the threshold.
"""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import rtol_for
from hypothesis import given, settings
from hypothesis import strategies as st

from subquad import ActiveNeuronIndex
from subquad.index import _active_neuron_index
from subquad.index._tree import (NEURONS_PER_BLOCK, build_tree, float32_bounds, node_bounds,
                                 pack_lanes, refit_bounds)

DTYPES = [np.float32, np.float64]
ALGORITHMS = ["tree", "brute", "auto"]
SETTINGS = settings(max_examples=40, deadline=None)


def packed(W_tree):
    """`W_tree` (tree order) in the tree's 16-lane block layout."""
    blocks = np.zeros((-(-len(W_tree) // NEURONS_PER_BLOCK), W_tree.shape[1], NEURONS_PER_BLOCK),
                      dtype=W_tree.dtype)
    pack_lanes(np.ascontiguousarray(W_tree), np.arange(len(W_tree)), blocks, 2)
    return blocks


def reference(W, X, threshold):
    """Values <w_r, x_i> - b in float64 (exact for small integers)."""
    X = np.atleast_2d(X)
    return X.astype(np.float64) @ W.astype(np.float64).T - threshold


def assert_exact(A, W, X, threshold):
    values = reference(W, X, threshold)
    assert sp.isspmatrix_csr(A)
    assert A.shape == values.shape
    assert A.dtype == W.dtype
    assert A.has_sorted_indices
    assert np.all(A.data > 0)
    np.testing.assert_array_equal(A.toarray(), np.where(values > 0, values, 0))


def in_column_order(A):
    """`A` with each row's columns sorted, after checking that no row
    holds a column twice (`toarray` would sum the two)."""
    S = A.sorted_indices()
    assert S.has_canonical_format, "a row holds a column twice"
    return S


def assert_matches(A, W, X, threshold, dtype):
    """Every reported neuron active and every active one reported, up to
    rounding of values within `tol` of the threshold; values close."""
    X = np.atleast_2d(X)
    values = reference(W, X, threshold)
    tol = 8 * rtol_for(dtype) * (np.abs(X).astype(np.float64) @ np.abs(W).T.astype(np.float64))
    tol += 1e-30
    assert A.shape == values.shape and A.has_sorted_indices and A.dtype == dtype
    dense = A.toarray()
    reported = dense > 0
    assert np.all(values[reported] > -tol[reported]), "reported a neuron that is not active"
    assert np.all(values[~reported] <= tol[~reported]), "missed an active neuron"
    np.testing.assert_allclose(dense[reported], values[reported], rtol=rtol_for(dtype),
                               atol=float(tol.max()))


small_ints = st.integers(-3, 3)


@st.composite
def integer_problems(draw, max_neurons=60, max_dim=5, max_queries=6):
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(1, max_neurons))
    dim = draw(st.integers(1, max_dim))
    n_queries = draw(st.integers(0, max_queries))
    W = np.array(draw(st.lists(small_ints, min_size=n * dim, max_size=n * dim)),
                 dtype=dtype).reshape(n, dim)
    X = np.array(draw(st.lists(small_ints, min_size=n_queries * dim,
                               max_size=n_queries * dim)), dtype=dtype).reshape(n_queries, dim)
    # Halves and integers: ties at the threshold are frequent.
    threshold = draw(st.integers(-12, 12)) / 2
    return W, X, threshold


@SETTINGS
@given(problem=integer_problems(), algorithm=st.sampled_from(ALGORITHMS),
       leaf_size=st.integers(1, 8), sort_indices=st.booleans())
def test_query_exact_on_integer_data(problem, algorithm, leaf_size, sort_indices):
    W, X, threshold = problem
    index = ActiveNeuronIndex(W, algorithm=algorithm, leaf_size=leaf_size)
    A = index.query(X, threshold, sort_indices=sort_indices)
    assert_exact(A if sort_indices else in_column_order(A), W, X, threshold)
    np.testing.assert_array_equal(index.count(X, threshold), np.diff(A.indptr))


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), algorithm=st.sampled_from(["tree", "brute"]),
       n=st.integers(1, 300), dim=st.integers(1, 8), n_queries=st.integers(1, 5))
def test_query_matches_numpy_on_float_data(data, dtype, algorithm, n, dim, n_queries):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    offset = data.draw(st.sampled_from([0.0, 3.0, 100.0]))
    W = (rng.standard_normal((n, dim)) + offset).astype(dtype)
    X = rng.standard_normal((n_queries, dim)).astype(dtype)
    threshold = float(data.draw(st.floats(-3, 3)) * (1 + offset))
    index = ActiveNeuronIndex(W, algorithm=algorithm, leaf_size=data.draw(st.integers(1, 16)))
    assert_matches(index.query(X, threshold), W, X, threshold, dtype)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), dim=st.integers(1, 6))
def test_pruning_never_changes_the_computed_set_near_ties(data, dtype, dim):
    """A tree of single-neuron leaves (tight bounds, heavy pruning) and a
    tree that is one leaf compute each value with the same code, so if the
    widened bounds are conservative they report identical sets and values,
    even with thresholds placed on (rounded) values of the neurons."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    offset = data.draw(st.sampled_from([0.0, 1.0, 1e3]))
    W = (offset + rng.standard_normal((400, dim)) * data.draw(st.sampled_from([1e-3, 1.0])))
    # Tiny scales put the values among float32's subnormals.
    scale = data.draw(st.sampled_from([1.0, 1e-22]))
    W = (W * scale).astype(dtype)
    X = (rng.standard_normal((8, dim)) * scale).astype(dtype)
    values = (X @ W.T).ravel()
    # On a value, or one ulp to either side of it.
    threshold = dtype(values[data.draw(st.integers(0, values.size - 1))])
    step = data.draw(st.sampled_from([None, -np.inf, np.inf]))
    threshold = float(threshold if step is None else np.nextafter(threshold, dtype(step)))
    one_leaf = ActiveNeuronIndex(W, algorithm="tree", leaf_size=len(W)).query(X, threshold)
    deep = ActiveNeuronIndex(W, algorithm="tree", leaf_size=1)
    # The walk all the way down, and flat leaf tests below nodes of 64 and
    # of all the neurons.
    for flat_leaves in (0, 64, len(W)):
        deep.FLAT_LEAVES = flat_leaves
        A = deep.query(X, threshold)
        np.testing.assert_array_equal(A.indptr, one_leaf.indptr)
        np.testing.assert_array_equal(A.indices, one_leaf.indices)
        np.testing.assert_array_equal(A.data, one_leaf.data)
    if scale == 1.0:
        assert_matches(one_leaf, W, X, threshold, dtype)


@SETTINGS
@given(problem=integer_problems(max_neurons=80, max_queries=4), data=st.data())
def test_long_update_sequences_stay_exact(problem, data):
    W, X, threshold = problem
    W = W.copy()
    if X.shape[0] == 0:
        X = np.ones((1, W.shape[1]), dtype=W.dtype)
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=data.draw(st.integers(1, 6)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    for _ in range(data.draw(st.integers(1, 30))):
        k = int(rng.integers(1, W.shape[0] + 1))
        indices = rng.choice(W.shape[0], size=k, replace=False)
        # Mostly small moves, sometimes far ones that force a rebuild.
        scale = 1 if rng.random() < 0.8 else 6
        rows = rng.integers(-3 * scale, 3 * scale + 1, (k, W.shape[1])).astype(W.dtype)
        index.update(indices, rows)
        W[indices] = rows
        assert_exact(index.query(X, threshold), W, X, threshold)
    np.testing.assert_array_equal(index.W_, W)


def test_far_moves_trigger_rebuilds_and_rebuild_is_forced():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((2000, 3))
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=8)
    assert index.n_rebuilds_ == 0 and index.radius_growth_ == 1.0
    # Small moves: bounds grow a little, no rebuild.
    index.update(np.arange(10), W[:10] + 1e-3)
    assert index.n_rebuilds_ == 0 and 1.0 <= index.radius_growth_ < index.REBUILD_RADIUS_GROWTH
    # Scattering many neurons far away degrades every bound.
    moved = rng.choice(2000, 500, replace=False)
    W[moved] = 10 * rng.standard_normal((500, 3))
    W[:10] += 1e-3
    index.update(moved, W[moved])
    assert index.n_rebuilds_ == 1 and index.radius_growth_ == 1.0
    index.rebuild()
    assert index.n_rebuilds_ == 2
    X = rng.standard_normal((20, 3))
    assert_matches(index.query(X, 1.5), W, X, 1.5, np.float64)


def test_update_accepts_a_single_row_and_a_mask():
    W = np.arange(12, dtype=np.float64).reshape(6, 2)
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=1)
    index.update([-1], np.array([100.0, 0.0]))
    mask = np.zeros(6, bool)
    mask[[0, 2]] = True
    index.update(mask, [[5.0, 5.0], [-1.0, -1.0]])
    W[-1] = [100, 0]
    W[[0, 2]] = [[5, 5], [-1, -1]]
    X = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert_exact(index.query(X, 4.0), W, X, 4.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_cases(algorithm, dtype):
    # Single neuron, dim 1, negative thresholds.
    index = ActiveNeuronIndex(np.array([[2.0]], dtype=dtype), algorithm=algorithm)
    assert_exact(index.query([[1.0], [-1.0], [0.0]], -1.0),
                 np.array([[2.0]], dtype=dtype), np.array([[1.0], [-1.0], [0.0]]), -1.0)
    # A 1-D X is one query; ties at b are inactive.
    W = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 1]], dtype=dtype)
    index = ActiveNeuronIndex(W, algorithm=algorithm, leaf_size=2)
    A = index.query(np.array([1.0, 1.0]), 1.0)
    assert A.shape == (1, 5)
    assert A.indices.tolist() == [2, 4] and A.data.tolist() == [1.0, 1.0]
    # Zero query: every inner product is 0, active iff b < 0.
    assert index.query(np.zeros(2), 0.0).nnz == 0
    np.testing.assert_array_equal(index.query(np.zeros(2), -0.5).toarray(), [[0.5] * 5])
    # Empty query sets.
    empty = index.query(np.empty((0, 2)), 0.0)
    assert empty.shape == (0, 5) and empty.nnz == 0 and sp.isspmatrix_csr(empty)
    assert index.count(np.empty((0, 2)), 0.0).shape == (0,)
    assert index.last_query_stats_["n_queries"] == 0


def test_all_duplicate_neurons_and_zero_rows():
    W = np.vstack([np.tile([1.0, 2.0], (50, 1)), np.zeros((50, 2))])
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=3)
    X = np.array([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    for b in (-1.0, 0.0, 3.0, 2.5):
        assert_exact(index.query(X, b), W, X, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["tree", "brute"])
def test_results_do_not_depend_on_threads(dtype, algorithm):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((20000, 3)).astype(dtype)
    X = rng.standard_normal((97, 3)).astype(dtype)
    one, two = (ActiveNeuronIndex(W, algorithm=algorithm, n_threads=t).query(X, 1.5)
                for t in (1, 2))
    np.testing.assert_array_equal(one.indptr, two.indptr)
    np.testing.assert_array_equal(one.indices, two.indices)
    np.testing.assert_allclose(one.data, two.data, rtol=rtol_for(dtype))
    assert_matches(two, W, X, 1.5, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dim", [1, 3, 8, 9, 20])
def test_batched_walk_over_packed_blocks(dtype, n_threads, dim):
    """More queries than one batch per thread, neuron counts and leaves that
    are not multiples of the 16-neuron blocks (partial blocks at both ends
    of a leaf and a padded last block), leaves of one block up to all of
    them, dims whose blocks are held in registers (<= 8) and not, thresholds
    of both signs (padding lanes of a negative threshold would be > 0),
    integer data so the result is exact; query agrees with count and with
    the brute path."""
    rng = np.random.default_rng(dim)
    W = rng.integers(-4, 5, size=(16 * 37 + 5, dim)).astype(dtype)
    X = rng.integers(-3, 4, size=(600, dim)).astype(dtype)
    for leaf_size in (5, 16, 23, 300, len(W)):
        index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=leaf_size, n_threads=n_threads)
        for b in (-2.0, 0.0, 1.5, 6.0):
            A = index.query(X, b)
            assert_exact(A, W, X, b)
            np.testing.assert_array_equal(index.count(X, b), np.diff(A.indptr))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_large_outputs_from_whole_nodes_and_many_leaves(dtype, n_threads):
    """Queries with thousands of active neurons each, from nodes reported
    whole (the root, with every neuron active, which the query still
    evaluates) and from many leaves, next to queries with no output: the
    result is exact and complete."""
    rng = np.random.default_rng(3)
    W = rng.integers(-4, 5, size=(3 * 4096 + 21, 2)).astype(dtype)
    X = np.vstack([rng.integers(-3, 4, size=(40, 2)), np.zeros((3, 2))]).astype(dtype)
    for leaf_size in (16, 5000):
        index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=leaf_size, n_threads=n_threads)
        for b in (-100.0, -1.0, 2.0):
            A = index.query(X, b)
            assert_exact(A, W, X, b)
        assert np.diff(index.query(X, -100.0).indptr).tolist() == [len(W)] * len(X)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, n_active", [
    (100003, 20),           # insertion sort
    (100003, 5000),         # radix sort, two passes
    ((1 << 22) + 3, 5000),  # keys of 23 bits: radix sort, three passes
])
def test_every_sort_of_a_query_row(dtype, n, n_active):
    """Each way the tree sorts a query's entries by column (chosen by their
    number and the key width) gives the columns in order with their exact
    values, whatever order the tree found them in."""
    W = np.zeros((n, 1), dtype=dtype)
    rng = np.random.default_rng(7)
    active = np.sort(rng.choice(n, size=n_active, replace=False))
    W[active, 0] = rng.integers(1, 4, size=active.size)
    X = np.array([[1.0], [2.0]], dtype=dtype)
    A = ActiveNeuronIndex(W, algorithm="tree", leaf_size=1024).query(X, 0.5)
    for row, scale in enumerate((1.0, 2.0)):
        np.testing.assert_array_equal(A.indices[A.indptr[row]:A.indptr[row + 1]], active)
        np.testing.assert_array_equal(A.data[A.indptr[row]:A.indptr[row + 1]],
                                      scale * W[active, 0] - 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_unsorted_query_holds_the_sorted_entries_in_tree_order(dtype, n_threads):
    """``sort_indices=False`` gives each row the sorted query's entries
    (exact values, none twice) in the order of the tree's positions, the
    order its walk finds them in, which for Gaussian neurons is not the
    column order; brute output comes sorted either way."""
    rng = np.random.default_rng(11)
    W = rng.integers(-4, 5, size=(5000, 3)).astype(dtype)
    X = np.vstack([rng.integers(-3, 4, size=(300, 3)), np.zeros((2, 3))]).astype(dtype)
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=40, n_threads=n_threads)
    position = np.empty(len(W), dtype=np.int64)
    position[index._tree["ids"][:len(W)]] = np.arange(len(W))
    for b in (-100.0, 0.0, 4.0, 50.0):
        A = index.query(X, b, sort_indices=False)
        assert_exact(in_column_order(A), W, X, b)
        for row in range(A.shape[0]):
            found = A.indices[A.indptr[row]:A.indptr[row + 1]]
            assert np.all(np.diff(position[found]) > 0)
    assert not index.query(X, 0.0, sort_indices=False).has_sorted_indices
    brute = ActiveNeuronIndex(W, algorithm="brute", n_threads=n_threads)
    assert_exact(brute.query(X, 0.0, sort_indices=False), W, X, 0.0)
    auto = ActiveNeuronIndex(W, algorithm="auto", n_threads=n_threads)
    for queries in (X, X[:3]):  # the sample is part of X, then all of it
        assert_exact(in_column_order(auto.query(queries, 0.0, sort_indices=False)), W,
                     queries, 0.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sort_indices_must_be_a_bool(algorithm):
    index = ActiveNeuronIndex(GOOD_W, algorithm=algorithm)
    for expected in (TypeError, ValueError):  # both, as the estimators' flags
        with pytest.raises(expected, match="sort_indices"):
            index.query(np.ones((1, 2)), 0.0, sort_indices="no")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tree_prunes_in_low_dimension_and_reports_stats(dtype):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((50000, 2)).astype(dtype)
    X = rng.standard_normal((40, 2)).astype(dtype)
    index = ActiveNeuronIndex(W, algorithm="tree", n_threads=2)
    A = index.query(X, 2.0)
    assert_matches(A, W, X, 2.0, dtype)
    stats = index.last_query_stats_
    assert stats["algorithm"] == "tree" and stats["n_queries"] == 40
    assert 0 < stats["evaluated_fraction"] < 0.2
    assert stats["nodes_pruned"] > 0 and stats["nodes_visited"] > stats["nodes_pruned"]
    # count never evaluates the nodes it reports whole.
    np.testing.assert_array_equal(index.count(X, -1.0), np.diff(index.query(X, -1.0).indptr))
    assert index.last_query_stats_["nodes_reported_whole"] > 0


def test_auto_chooses_by_measured_pruning(monkeypatch):
    """The cost model alone (no timing band): clear tree wins and losses."""
    monkeypatch.setattr(_active_neuron_index, "_AUTO_TIMED_BAND", 1.0)
    rng = np.random.default_rng(3)
    high = ActiveNeuronIndex(rng.standard_normal((5000, 40)))
    assert high.algorithm_ == "brute" and "dim 40" in high.algorithm_reason_
    assert high.n_nodes_ == 0
    low = ActiveNeuronIndex(rng.standard_normal((100000, 2)).astype(np.float32))
    X = rng.standard_normal((256, 2)).astype(np.float32)
    A = low.query(X, 2.5)
    assert low.algorithm_ == "tree" and "measured" in low.algorithm_reason_
    assert "timed" not in low.algorithm_reason_
    assert_matches(A, low.W_, X, 2.5, np.float32)
    # A threshold below every value makes every neuron active: the model
    # predicts brute (the tree stages and sorts each active neuron, brute
    # writes it in order).
    low.query(X, -100.0)
    assert low.algorithm_ == "brute"


def test_auto_prices_the_query_as_asked(monkeypatch):
    """An unsorted query is priced without the sort, a count without any
    output: with output made costly only when sorted, the same data and
    threshold choose brute sorted and the tree unsorted, and all answers
    are exact."""
    monkeypatch.setattr(_active_neuron_index, "_AUTO_TIMED_BAND", 1.0)
    monkeypatch.setattr(_active_neuron_index, "_TREE_NS_PER_ACTIVE", 1e6)
    monkeypatch.setattr(_active_neuron_index, "_TREE_NS_PER_ACTIVE_UNSORTED", 0.0)
    rng = np.random.default_rng(3)
    index = ActiveNeuronIndex(rng.standard_normal((100000, 2)).astype(np.float32))
    X = rng.standard_normal((256, 2)).astype(np.float32)
    A = index.query(X, 2.5)
    assert index.algorithm_ == "brute" and "unsorted" not in index.algorithm_reason_
    assert_matches(A, index.W_, X, 2.5, np.float32)
    A = index.query(X, 2.5, sort_indices=False)
    assert index.algorithm_ == "tree" and "the tree (unsorted)" in index.algorithm_reason_
    A.sort_indices()
    assert_matches(A, index.W_, X, 2.5, np.float32)
    # count writes no output: the tree is priced on its walk alone, so it
    # wins even when every output costs it dearly.
    monkeypatch.setattr(_active_neuron_index, "_TREE_NS_PER_ACTIVE_UNSORTED", 1e6)
    assert_matches(index.query(X, 2.5, sort_indices=False), index.W_, X, 2.5, np.float32)
    assert index.algorithm_ == "brute"
    counts = index.count(X, 2.5)
    assert index.algorithm_ == "tree" and "the tree's count" in index.algorithm_reason_
    np.testing.assert_array_equal(counts, np.diff(A.indptr))
    # Three queries are all sampled: the sample's counts are the answer.
    np.testing.assert_array_equal(index.count(X[:3], 2.5), np.diff(A.indptr)[:3])
    assert index.algorithm_ == "tree"


class _Clock:
    """perf_counter stand-in returning preset readings."""

    def __init__(self, readings):
        self.readings = iter(readings)

    def perf_counter(self):
        return next(self.readings)


@pytest.mark.parametrize("tree_seconds, brute_seconds, expected",
                         [(1.0, 2.0, "tree"), (2.0, 1.0, "brute")])
def test_auto_times_both_when_the_model_is_unsure(monkeypatch, tree_seconds, brute_seconds,
                                                  expected):
    """Within the band where the cost model's error could decide, brute also
    runs on the sample and the faster measured time chooses, whatever the
    model predicted; the result is exact either way."""
    monkeypatch.setattr(_active_neuron_index, "_AUTO_TIMED_BAND", 1e9)
    monkeypatch.setattr(_active_neuron_index, "time", _Clock(
        [0.0, tree_seconds, 10.0, 10.0 + brute_seconds]))
    rng = np.random.default_rng(3)
    index = ActiveNeuronIndex(rng.standard_normal((100000, 2)).astype(np.float32))
    X = rng.standard_normal((256, 2)).astype(np.float32)
    A = index.query(X, 2.5)
    assert index.algorithm_ == expected and "both were timed" in index.algorithm_reason_
    assert_matches(A, index.W_, X, 2.5, np.float32)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tree_kernels_against_numpy(dtype, n_threads):
    rng = np.random.default_rng(4)
    W = np.vstack([rng.standard_normal((300, 3)), np.zeros((20, 3)),
                   np.tile([[1.0, -1.0, 0.5]], (30, 1))]).astype(dtype)
    order, nodes, parent = build_tree(W, 7)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(W)))
    start, end, right = nodes.T
    assert start[0] == 0 and end[0] == len(W) and parent[0] == -1
    for k in np.flatnonzero(right >= 0):
        assert (start[k + 1], end[k + 1]) == (start[k], start[right[k]])
        assert end[right[k]] == end[k] and parent[k + 1] == parent[right[k]] == k
    assert np.all(end[right < 0] - start[right < 0] <= 7)
    W_tree = W[order]
    bounds = node_bounds(packed(W_tree), nodes, 1.0, n_threads)
    for k in range(len(nodes)):
        rows = W_tree[start[k]:end[k]].astype(np.float64)
        np.testing.assert_allclose(bounds[k, :3], rows.mean(axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(bounds[k, 3:6], rows.min(axis=0))
        np.testing.assert_array_equal(bounds[k, 6:9], rows.max(axis=0))
        np.testing.assert_allclose(
            bounds[k, 9], np.linalg.norm(rows - bounds[k, :3], axis=1).max(), rtol=1e-12)


@pytest.mark.parametrize("dim", [1, 3, 8, 11])
def test_float32_bounds_hold_their_nodes_exactly(dim):
    """The float32 rows of the flat leaf test against NumPy in float64:
    every neuron of a node lies in the widened box |w - m| <= h and ball
    |w - c| <= R (checked with the float32 values made exact in float64),
    and the slack scale is at least the evaluation's."""
    rng = np.random.default_rng(dim)
    W = (rng.standard_normal((3000, dim)) * rng.choice([1e-3, 1.0, 1e3], (3000, 1)) + 7.0)
    W = W.astype(np.float32)
    order, nodes, _ = build_tree(W, 9)
    blocks = packed(W[order])
    bounds = node_bounds(blocks, nodes, 1.0 + 1e-12, 1)
    table = float32_bounds(bounds, 1e-6)
    assert table.dtype == np.float32 and table.shape == (len(nodes), 3 * dim + 2)
    m, h, c = (table[:, i * dim:(i + 1) * dim].astype(np.float64) for i in range(3))
    radius, scale = table[:, 3 * dim].astype(np.float64), table[:, 3 * dim + 1]
    W_tree = W[order].astype(np.float64)
    for k, (start, end, _) in enumerate(nodes):
        rows = W_tree[start:end]
        assert np.all(np.abs(rows - m[k]) <= h[k])
        assert np.all(np.linalg.norm(rows - c[k], axis=1) <= radius[k])
        assert scale[k] >= 1e-6 * np.linalg.norm(rows, axis=1).max()


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dim", [2, 8])
def test_flat_leaf_tests_give_the_walk_s_results(dim, n_threads):
    """float32 queries through the walk alone and with subtrees of 1, 8 and
    all leaves tested flat: the same counts, sorted and unsorted entries."""
    rng = np.random.default_rng(dim)
    W = rng.standard_normal((20000, dim)).astype(np.float32)
    X = rng.standard_normal((300, dim)).astype(np.float32)
    threshold = float(np.quantile(X[:20] @ W.T, 0.98))
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=32, n_threads=n_threads)
    results = []
    for flat_leaves in (0, 1, 8, len(W)):
        index.FLAT_LEAVES = flat_leaves
        results.append((index.count(X, threshold), index.query(X, threshold),
                        index.query(X, threshold, sort_indices=False)))
    counts, A, unsorted = results[0]
    assert_matches(A, W, X, threshold, np.float32)
    for other_counts, other, other_unsorted in results[1:]:
        np.testing.assert_array_equal(other_counts, counts)
        np.testing.assert_array_equal(other.indptr, A.indptr)
        np.testing.assert_array_equal(other.indices, A.indices)
        np.testing.assert_array_equal(other.data, A.data)
        other_unsorted.sort_indices()
        np.testing.assert_array_equal(other_unsorted.indices, A.indices)
        np.testing.assert_array_equal(other_unsorted.data, A.data)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bottom_up_refit_bounds_every_neuron(dtype, n_threads):
    """refit_bounds against node_bounds: the same boxes and centres (up to
    rounding), and balls that still hold every neuron of their node."""
    rng = np.random.default_rng(6)
    W = rng.standard_normal((500, 3)).astype(dtype)
    order, nodes, _ = build_tree(W, 9)
    moved = packed((W + rng.standard_normal(W.shape).astype(dtype))[order])
    exact = node_bounds(moved, nodes, 1.0, n_threads)
    refit = np.full_like(exact, np.nan)
    refit_bounds(moved, nodes, refit, 1.0, n_threads)
    np.testing.assert_array_equal(refit[:, 3:9], exact[:, 3:9])
    np.testing.assert_allclose(refit[:, :3], exact[:, :3], rtol=1e-12, atol=1e-12)
    assert np.all(refit[:, 9] >= exact[:, 9] * (1 - 1e-12))
    np.testing.assert_allclose(refit[:, 10], np.linalg.norm(refit[:, :3], axis=1))
    np.testing.assert_array_equal(refit[:, 11], exact[:, 11])


@pytest.mark.parametrize("dtype", DTYPES)
def test_updating_every_neuron_refits_and_stays_exact(dtype):
    rng = np.random.default_rng(8)
    W = rng.integers(-50, 51, size=(3000, 2)).astype(dtype)
    X = rng.integers(-3, 4, size=(50, 2)).astype(dtype)
    index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=16)
    for step in range(6):
        if step % 2:
            W = W + rng.integers(-1, 2, size=W.shape).astype(dtype)
            index.update(None, W)
        else:
            # A large subset also takes the bottom-up refit.
            part = rng.choice(len(W), size=len(W) // 2, replace=False)
            W[part] += rng.integers(-1, 2, size=(part.size, 2)).astype(dtype)
            index.update(part, W[part])
        for b in (-10.0, 40.0, 150.0):
            assert_exact(index.query(X, b), W, X, b)
    # Small moves: the refit bounds were queried, not a rebuilt tree.
    assert index.n_rebuilds_ == 0 and 1.0 < index.radius_growth_ < 1.5
    with pytest.raises(ValueError, match=r"rows must have shape \(3000, 2\)"):
        index.update(None, W[:10])
    # Far moves grow the leaves' radii and trigger a rebuild.
    index.update(None, W * np.array([4, 0.25], dtype=dtype))
    assert index.n_rebuilds_ == 1 and index.radius_growth_ == 1.0
    W = W * np.array([4, 0.25], dtype=dtype)
    assert_exact(index.query(X, 40.0), W, X, 40.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pickle_round_trip(algorithm):
    rng = np.random.default_rng(5)
    W = rng.standard_normal((6000, 3)).astype(np.float32)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    index = ActiveNeuronIndex(W, algorithm=algorithm)
    index.update([0, 1], np.ones((2, 3)))
    clone = pickle.loads(pickle.dumps(index))
    A, B = index.query(X, 1.0), clone.query(X, 1.0)
    W_moved = W.copy()
    W_moved[[0, 1]] = 1
    assert_matches(B, W_moved, X, 1.0, np.float32)
    # 'auto' decides each call, near its crossover by timing both, so the
    # two may pick different algorithms (summing in different orders).
    if index.algorithm_ == clone.algorithm_:
        np.testing.assert_array_equal(A.indices, B.indices)
        np.testing.assert_array_equal(A.data, B.data)
    clone.update([2], np.zeros(3))
    W[[0, 1]] = 1
    W[2] = 0
    assert_matches(clone.query(X, 1.0), W, X, 1.0, np.float32)
    assert clone.dtype_ == np.float32 and clone.algorithm == algorithm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["tree", "brute"])
def test_kept_workspace_gives_the_results_of_fresh_buffers(dtype, algorithm):
    # Calls of growing, shrinking and growing size and output reuse the
    # buffers of earlier ones; integer data make both runs exact.
    rng = np.random.default_rng(6)
    W = rng.integers(-4, 5, size=(5000, 3)).astype(dtype)
    kept = ActiveNeuronIndex(W, algorithm=algorithm)
    fresh = ActiveNeuronIndex(W, algorithm=algorithm, keep_workspace=False)
    for n_queries, threshold in [(40, 6.0), (3, 2.0), (70, 10.0), (1, -3.0), (0, 1.0), (55, 0.0)]:
        X = rng.integers(-3, 4, size=(n_queries, 3)).astype(dtype)
        A = kept.query(X, threshold)
        assert_exact(A, W, X, threshold)
        B = fresh.query(X, threshold)
        np.testing.assert_array_equal(A.indptr, B.indptr)
        np.testing.assert_array_equal(A.indices, B.indices)
        np.testing.assert_array_equal(A.data, B.data)
    assert kept.workspace_nbytes_ > 0 and fresh.workspace_nbytes_ == 0
    assert kept.release_workspace() is kept and kept.workspace_nbytes_ == 0
    X = rng.integers(-3, 4, size=(9, 3)).astype(dtype)
    assert_exact(kept.query(X, 4.0), W, X, 4.0)


def test_kept_workspace_is_not_pickled_and_concurrent_queries_stay_exact():
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(7)
    W = rng.integers(-4, 5, size=(8000, 2)).astype(np.float32)
    index = ActiveNeuronIndex(W, algorithm="tree")
    batches = [rng.integers(-3, 4, size=(30 + i, 2)).astype(np.float32) for i in range(16)]
    index.query(batches[0], 3.0)
    clone = pickle.loads(pickle.dumps(index))
    assert clone.workspace_nbytes_ == 0
    # Calls overlapping another one's use of the workspace stage on their own.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda X: index.query(X, 3.0), batches))
    for X, A in zip(batches, results):
        assert_exact(A, W, X, 3.0)
    assert_exact(clone.query(batches[1], 3.0), W, batches[1], 3.0)


@pytest.mark.parametrize("itemsize, with_rows", [(8, True), (4, False)])
def test_threshold_csr_rejects_a_workspace_for_other_entries(itemsize, with_rows):
    # Buffers sized for other entries would be overrun.
    from subquad._workspace import StagingWorkspace
    from subquad.linalg.threshold import threshold_csr
    with pytest.raises(ValueError, match="threshold_matmul: workspace stages"):
        threshold_csr(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32),
                      np.zeros(4, np.float32), workspace=StagingWorkspace(itemsize, with_rows))


@pytest.mark.parametrize("itemsize, with_rows", [(8, False), (4, True)])
def test_tree_query_rejects_a_workspace_for_other_entries(itemsize, with_rows):
    from subquad._workspace import StagingWorkspace
    index = ActiveNeuronIndex(np.ones((5000, 2), np.float32), algorithm="tree")
    index._workspaces["tree"] = StagingWorkspace(itemsize, with_rows)
    with pytest.raises(ValueError, match="ActiveNeuronIndex: workspace stages"):
        index.query(np.ones((2, 2), np.float32), 0.5)


GOOD_W = np.ones((4, 2))


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(W=np.array([[1.0, np.nan]])), ValueError, "W"),
    (dict(W=np.array([[1.0, np.inf]])), ValueError, "W"),
    (dict(W=np.ones((2, 2, 2))), ValueError, "W"),
    (dict(W=np.ones(3)), ValueError, "W"),
    (dict(W=np.empty((0, 2))), ValueError, "W"),
    (dict(W=[["a", "b"]]), TypeError, "W"),
    (dict(W=GOOD_W, algorithm="kd"), ValueError, "algorithm"),
    (dict(W=GOOD_W, leaf_size=0), ValueError, "leaf_size"),
    (dict(W=GOOD_W, leaf_size=2.5), ValueError, "leaf_size"),
    (dict(W=GOOD_W, n_threads=0), ValueError, "n_threads"),
    (dict(W=GOOD_W, keep_workspace="yes"), TypeError, "keep_workspace"),
])
def test_constructor_errors_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        ActiveNeuronIndex(**kwargs)


@pytest.mark.parametrize("algorithm", ["tree", "brute"])
@pytest.mark.parametrize("X, threshold, error, name", [
    (np.ones((2, 3)), 0.0, ValueError, "X"),
    (np.ones(3), 0.0, ValueError, "X"),
    (np.ones((2, 2, 2)), 0.0, ValueError, "X"),
    (np.array([[np.nan, 1.0]]), 0.0, ValueError, "X"),
    (np.array([[np.inf, 1.0]]), 0.0, ValueError, "X"),
    ([["a", "b"]], 0.0, TypeError, "X"),
    (sp.csr_matrix(np.ones((1, 2))), 0.0, TypeError, "X"),
    (np.ones((1, 2)), np.nan, ValueError, "threshold"),
    (np.ones((1, 2)), np.inf, ValueError, "threshold"),
    (np.ones((1, 2)), "1", TypeError, "threshold"),
    (np.ones((1, 2)), np.ones(2), TypeError, "threshold"),
])
def test_query_errors_name_the_argument(algorithm, X, threshold, error, name):
    index = ActiveNeuronIndex(GOOD_W, algorithm=algorithm)
    with pytest.raises(error, match=name):
        index.query(X, threshold)
    with pytest.raises(error, match=name):
        index.count(X, threshold)


@pytest.mark.parametrize("algorithm", ["tree", "brute"])
def test_threshold_beyond_the_working_dtype_is_rejected_without_overflow(algorithm):
    index = ActiveNeuronIndex(GOOD_W.astype(np.float32), algorithm=algorithm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for threshold in (1e300, -1e39):
            with pytest.raises(ValueError, match=r"threshold must be finite in float32.*got"):
                index.query(np.ones((1, 2)), threshold)
        # The largest float32 itself is a valid threshold: nothing is active.
        assert index.count(np.ones((1, 2)), float(np.finfo(np.float32).max))[0] == 0


@pytest.mark.parametrize("indices, rows, error, name", [
    ([4], np.ones((1, 2)), ValueError, "indices"),
    ([0, 0], np.ones((2, 2)), ValueError, "indices"),
    ([[0]], np.ones((1, 2)), TypeError, "indices"),
    ([0.5], np.ones((1, 2)), TypeError, "indices"),
    ([0, 1], np.ones((1, 2)), ValueError, "rows"),
    ([0], np.ones((1, 3)), ValueError, "rows"),
    ([0], np.array([[np.nan, 0.0]]), ValueError, "rows"),
    ([0], [["a", "b"]], TypeError, "rows"),
])
def test_update_errors_name_the_argument(indices, rows, error, name):
    index = ActiveNeuronIndex(GOOD_W, algorithm="tree")
    with pytest.raises(error, match=name):
        index.update(indices, rows)
    np.testing.assert_array_equal(index.W_, GOOD_W)


# ---------------------------------------------------------------- estimators

def _low_dimensional_data(n, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim))
    y = (np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] > 0).astype(int)
    return X, y


@pytest.mark.parametrize("dtype", DTYPES)
def test_classifier_predictions_with_index_equal_brute(dtype):
    from subquad import SparseMLPClassifier

    X, y = _low_dimensional_data(600)
    clf = SparseMLPClassifier(hidden_layer_sizes=(3000, 64), max_iter=3, random_state=0,
                              dtype=dtype, first_layer_index=False)
    with pytest.warns(Warning):
        clf.fit(X, y)
    brute_proba, brute_classes = clf.predict_proba(X), clf.predict(X)
    clf.set_params(first_layer_index=True)
    np.testing.assert_allclose(clf.predict_proba(X), brute_proba, rtol=rtol_for(dtype),
                               atol=10 * rtol_for(dtype))
    np.testing.assert_array_equal(clf.predict(X), brute_classes)
    index = clf._network._index
    # Index coordinates: the features, the sphere lift's one, the bias.
    assert index.algorithm_ == "tree" and index.n_neurons_ == 3000 and index.dim_ == 6
    # The cached index is reused while the weights stand still, keeps no
    # query buffers after a prediction, and is dropped from pickles.
    clf.predict(X[:10])
    assert clf._network._index is index and index.workspace_nbytes_ == 0
    assert not hasattr(pickle.loads(pickle.dumps(clf))._network, "_index")


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_with_the_index_equals_brute_training(dtype):
    """Steps whose first layer comes from the index train the same model as
    brute steps, up to rounding (the two sum inner products differently)."""
    from subquad import SparseMLPRegressor

    X, _ = _low_dimensional_data(800, dim=3, seed=2)
    y = np.sin(X[:, 0]) + X[:, 1]
    fits = []
    for mode in (False, True):
        reg = SparseMLPRegressor(hidden_layer_sizes=(2000,), max_iter=2, batch_size=100,
                                 random_state=0, dtype=dtype, first_layer_index=mode)
        with pytest.warns(Warning):
            fits.append(reg.fit(X, y))
    brute, indexed = fits
    assert getattr(brute._network, "_index", None) is None
    index = indexed._network._index
    assert index.algorithm_ == "tree" and index.last_query_stats_["algorithm"] == "tree"
    # The steps' query buffers are not kept by the fitted model.
    assert index.workspace_nbytes_ == 0
    tol = 1e-3 if dtype == np.float32 else 1e-8
    for a, b in zip(brute.coefs_, indexed.coefs_):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(brute.predict(X), indexed.predict(X), rtol=tol, atol=tol)


def test_auto_index_for_predictions_only_at_higher_input_dimension():
    from subquad import SparseMLPRegressor

    X, _ = _low_dimensional_data(2100, dim=5, seed=3)  # network input 6
    y = np.sin(X[:, 0]) + X[:, 1]
    reg = SparseMLPRegressor(hidden_layer_sizes=(1 << 15,), max_iter=1, random_state=0,
                             batch_size=1024)
    with pytest.warns(Warning):
        reg.fit(X, y)
    assert getattr(reg._network, "_index", None) is None  # training: brute
    with_index = reg.predict(X)
    assert reg._network._index is not None
    reg.set_params(first_layer_index=False)
    np.testing.assert_allclose(with_index, reg.predict(X), rtol=1e-4, atol=1e-4)


def test_regressor_index_is_kept_current_and_auto_rules():
    from subquad import SparseMLPRegressor

    X, _ = _low_dimensional_data(2100, dim=3, seed=1)
    y = np.sin(X[:, 0]) + X[:, 1]
    reg = SparseMLPRegressor(hidden_layer_sizes=(1 << 15,), max_iter=1, random_state=0,
                             batch_size=1024, first_layer_index=False)
    with pytest.warns(Warning):
        reg.fit(X, y)
    assert getattr(reg._network, "_index", None) is None
    brute = reg.predict(X)
    reg.set_params(first_layer_index="auto")
    reg.predict(X[:100])  # too few rows to pay for a build
    assert getattr(reg._network, "_index", None) is None
    with_index = reg.predict(X)  # 2100 rows, width 2**15, dim 3: the index
    index = reg._network._index
    assert index is not None and index.algorithm_ in ("tree", "brute")
    np.testing.assert_allclose(with_index, brute, rtol=1e-4, atol=1e-4)
    # Training steps use the index and keep it current (refit, not a new one).
    reg.partial_fit(X, y)
    after = reg.predict(X)  # brings the index up to the last step's weights
    assert reg._network._index is index
    np.testing.assert_array_equal(index.W_, reg._network._first_layer_neurons())
    reg.set_params(first_layer_index=False)
    np.testing.assert_allclose(after, reg.predict(X), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="first_layer_index"):
        SparseMLPRegressor(first_layer_index="yes").fit(X, y)
