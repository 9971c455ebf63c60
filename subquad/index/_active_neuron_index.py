"""`ActiveNeuronIndex`: which neurons fire for an input, exactly and fast."""

import numbers
import threading
import time

import numpy as np
import scipy.sparse as sp

from .._threads import effective_n_threads
from .._workspace import StagingWorkspace
from ..linalg._validation import (_is_numeric, check_bool, check_float_matrix, check_index,
                                  check_scalar)
from ..linalg.threshold import threshold_csr
from ._tree import (NEURONS_PER_BLOCK, build_tree, float32_bounds, grow_bounds, node_bounds,
                    pack_lanes, refit_bounds, set_rows, tree_query)

ALGORITHMS = ("auto", "tree", "brute")

# 'auto' never builds a tree above this dimension: in high dimension the
# cells of a kd partition barely shrink with depth (concentration of
# measure), so no exact tree beats a scan (measured: the tree evaluates
# ~80% of 2**20 neurons at dim 16 for 1% active).
_AUTO_MAX_DIM = 16
# Nor for so few neurons that a brute scan is a handful of microseconds.
_AUTO_MIN_NEURONS = 4096
# 'auto' measures the tree's pruning on 1 query in _AUTO_SAMPLE_EVERY,
# between _AUTO_MIN_SAMPLE and _AUTO_SAMPLE of them: enough to average over
# query norms, few enough that measuring a losing tree stays cheap.
_AUTO_SAMPLE = 16
_AUTO_MIN_SAMPLE = 4
_AUTO_SAMPLE_EVERY = 64

# Cost model of 'auto', in nanoseconds per query on one core: a non-negative
# least-squares fit (relative errors) over dims 2-16, leaves of 64 and 128
# and ~1%, ~3% and ~50% active, 2**19 neurons, on the 2-core reference
# machine (bench/active_index_cost_model.py, run single-threaded, refitted
# in session 29 on that machine's current host, an AMD Zen 4; its
# predictions fell within 0.75-1.18x of the sorted tree's measurements,
# 0.73-1.33x of the unsorted tree's and 0.84-1.10x of brute's, but for the
# first configuration timed, dim 2 with leaves of 64, at 0.36-0.39x: 46 us
# where leaves of 128 took 20 us; single timings on this machine swing
# that much). Brute: every neuron goes through a blocked GEMM and the
# threshold scan; each active one is staged and scattered into CSR. Tree:
# testing a node's bounds against a query (8 queries per vector operation;
# a leaf tested in float32 counts as a node), evaluating a neuron of a
# scanned leaf (16 per vector operation), and staging an active neuron and
# either radix-sorting it by column or copying it out as found
# (``sort_indices=False``).
_BRUTE_NS_PER_NEURON = 0.32
_BRUTE_NS_PER_MULTIPLY_ADD = 0.0196
_BRUTE_NS_PER_ACTIVE = 2.6
_TREE_NS_PER_NODE = 2.9
_TREE_NS_PER_EVALUATION = 0.0
_TREE_NS_PER_MULTIPLY_ADD = 0.056
_TREE_NS_PER_ACTIVE = 5.4
_TREE_NS_PER_ACTIVE_UNSORTED = 2.2
# The fit on this host found no extra cost for a sort scratch spilling out
# of L2 (the Xeon host before it: 3.4 ns per spilled neuron).
_TREE_NS_PER_SPILLED = 0.0
# Active neurons of one query whose sort scratch (two 8-byte words each)
# fits in half of the Xeon hosts' 2 MiB L2; beyond, each costs
# _TREE_NS_PER_SPILLED more.
SORT_IN_CACHE = 65536
# The tree must be predicted this much cheaper to be chosen: its cost varies
# more between queries than the brute scan's.
_AUTO_MARGIN = 1.2
# When the model's two predictions are within this factor of each other,
# its error (mostly within 1.3x, at worst ~1.9x either way, and fitted on
# one thread) could decide: brute is then also run on the sample and the
# faster measured one chosen. That costs a brute scan of the sample (1 in
# 64 of the call's queries, at least 4).
_AUTO_TIMED_BAND = 2.0


class ActiveNeuronIndex:
    """Exact threshold (half-space reporting) queries over a set of neurons.

    For a query x and threshold b, reports every neuron w_r (a row of `W`)
    with ``<w_r, x> > b`` together with the value ``<w_r, x> - b``: a
    maximum-inner-product *reporting* query, the step of a shifted-ReLU
    layer that decides which neurons fire. Two algorithms answer it:

    * ``'brute'``: the fused blocked GEMM + threshold engine of
      `subquad.linalg.threshold_matmul`, writing CSR directly.
    * ``'tree'``: a kd-style partition of the neurons (midpoint cuts, at
      least a quarter per side) whose nodes carry a ball (centre c, radius
      R) and a bounding box [lo, hi]; the upper bound of ``<w, x>`` over a
      node is the smaller of ``<c, x> + R ||x||`` and
      ``sum_j max(lo_j x_j, hi_j x_j)`` (the lower bound likewise). A node
      is pruned when its upper bound is <= b, reported whole when its lower
      bound is > b, and scanned otherwise. Below nodes of at most
      ``FLAT_LEAVES`` (64) leaves, a float32 index tests the queries alive
      there against each leaf in turn (box and ball in float32, 16 queries
      per vector operation) instead of walking the inner nodes, whose bounds
      prune little at that depth. It wins in low dimension (input layers of
      low-dimensional data with very many neurons).

    Both are exact: a neuron is reported iff its computed value
    ``fl(<w_r, x>) - b`` is strictly positive (a value exactly at b is
    inactive), and the tree's bounds are widened by a bound on every rounding
    error, so it never skips a neuron that the same computation would report.
    The two algorithms accumulate inner products in different orders, so a
    value within rounding of b may be reported by one and not the other;
    with exactly representable data (e.g. small integers) they agree exactly.

    Parameters
    ----------
    W : array-like of shape (n_neurons, dim)
        One neuron per row, finite. float32 stays float32; other real dtypes
        become float64. The index keeps its own copy.
    algorithm : {'auto', 'tree', 'brute'}, default='auto'
        ``'auto'`` builds no tree when ``dim > 16`` or there are fewer than
        4096 neurons (brute then always wins); otherwise each `query` /
        `count` call runs the tree on 4 to 16 of its queries (1 in 64),
        measures how many inner products it evaluates and how many nodes it
        visits, and picks the tree if a cost model predicts it at least
        1.2x cheaper than brute. The tree is priced for what the call
        returns: sorted or unsorted output, or for `count` the walk alone
        (brute builds its output either way). When the model's
        predictions are within 2x of each other, brute is run on the same
        queries too and the faster of the two measured times decides.
    leaf_size : int, default=128
        Most neurons in a leaf of the tree. Smaller leaves evaluate fewer
        neurons but test more node bounds; a leaf is evaluated 16 neurons
        per vector operation, so on 2**19 Gaussian neurons 128 was faster
        than 64 at dims 2 to 16 (bench/active_index_cost_model.py).
    n_threads : int, default=None
        None: all CPUs allowed by OMP_NUM_THREADS / affinity; -1: all CPUs;
        k > 0: k threads. Results do not depend on it.
    keep_workspace : bool, default=True
        Keep the buffers a query stages its output in from one call to the
        next, until `release_workspace` or the index is freed: about the
        largest output seen (8 bytes per entry in float32, 12 in float64;
        brute's also hold a row number). Freed after every call, that memory
        goes back to the system and the next call faults it in again page
        by page (bench/active_index.py times the tree both ways). Calls
        made at the same time from several Python threads stage in buffers
        of their own.

    Attributes
    ----------
    W_ : ndarray of shape (n_neurons, dim)
        The current neurons, in the original order. Read-only: change
        neurons with `update`, which keeps the tree's bounds valid.
    n_neurons_ : int
    dim_ : int
    dtype_ : numpy.dtype
    algorithm_ : str
        ``'tree'`` or ``'brute'``: the algorithm of the last query (before any
        query, what `algorithm` resolves to at construction).
    algorithm_reason_ : str
        Why ``'auto'`` chose `algorithm_` (predicted costs and the measured
        pruning), or that the algorithm was requested.
    n_rebuilds_ : int
        Times the tree was rebuilt after construction (by `update` or
        `rebuild`).
    workspace_nbytes_ : int
        Bytes of staging memory kept (see `keep_workspace`).
    last_query_stats_ : dict or None
        Of the last `query`/`count`: ``algorithm``, ``n_queries``,
        ``evaluated_fraction`` (inner products computed / (n_queries x
        n_neurons)), ``nodes_visited``, ``nodes_pruned``,
        ``nodes_reported_whole`` (summed over queries; zero for brute; a
        leaf tested flat counts as a node visited).

    Notes
    -----
    *Updates.* `update` writes new rows and grows the ball and box of every
    node containing a changed neuron just enough to hold its new position;
    bounds never shrink (they are loosened lazily), so pruning degrades as
    neurons drift. An update of more than 1/``REFIT_FRACTION`` (1/8) of the
    neurons (``indices=None``: all of them, as after a training step)
    instead recomputes every bound bottom-up, in time linear in the number
    of neurons; the partition itself stays. When the summed leaf radius
    exceeds ``REBUILD_RADIUS_GROWTH`` (1.5) times its value at the last
    build, the tree is rebuilt from the current rows, and `n_rebuilds_`
    counts it. `rebuild` forces a rebuild.

    *Threads.* Tree queries run in parallel over batches of queries (up to
    256 per batch, at least one batch per thread), each batch walking the
    tree once; every query stages its own output, sorted by column into the
    CSR arrays at the end (copied as found with ``sort_indices=False``).
    The staging buffers are kept for the next call (`keep_workspace`); a
    call made while another one of this index is running stages in fresh
    ones.

    Examples
    --------
    >>> import numpy as np
    >>> from subquad import ActiveNeuronIndex
    >>> W = np.random.default_rng(0).standard_normal((10000, 4))
    >>> index = ActiveNeuronIndex(W, algorithm="tree")
    >>> X = np.random.default_rng(1).standard_normal((3, 4))
    >>> A = index.query(X, threshold=2.0)
    >>> np.allclose(A.toarray(), np.maximum(X @ W.T - 2.0, 0))
    True
    >>> index.count(X, 2.0).tolist() == np.diff(A.indptr).tolist()
    True
    """

    REBUILD_RADIUS_GROWTH = 1.5
    REFIT_FRACTION = 8
    # Subtrees of at most this many leaves are tested leaf by leaf (float32
    # only): at dim 8 the tree query took 0.069 s with 64 against 0.079 s
    # walking every node, and 16 to 64 did no harm at dims 2 and 4 (ad hoc,
    # bench/HISTORY.md).
    FLAT_LEAVES = 64

    def __init__(self, W, algorithm="auto", leaf_size=128, n_threads=None, keep_workspace=True):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if (isinstance(leaf_size, bool) or not isinstance(leaf_size, numbers.Integral)
                or leaf_size < 1):
            raise ValueError(f"leaf_size must be an integer >= 1, got {leaf_size!r}")
        effective_n_threads(n_threads)
        check_bool(keep_workspace, "keep_workspace")
        W = check_float_matrix(W, "W")
        if W.shape[0] < 1 or W.shape[1] < 1:
            raise ValueError(f"W must have shape (n_neurons, dim) with n_neurons >= 1 and "
                             f"dim >= 1, got shape {W.shape}")
        if W.shape[0] > np.iinfo(np.int32).max:
            raise ValueError(f"W may hold at most {np.iinfo(np.int32).max} neurons, "
                             f"got {W.shape[0]}")
        if not np.all(np.isfinite(W)):
            raise ValueError("W contains NaN or infinity")
        self.algorithm = algorithm
        self.leaf_size = int(leaf_size)
        self.n_threads = n_threads
        self.keep_workspace = bool(keep_workspace)
        self.W_ = np.array(W, order="C", copy=True)
        self.n_neurons_, self.dim_ = W.shape
        self.dtype_ = W.dtype
        self.n_rebuilds_ = 0
        self.last_query_stats_ = None
        eps = float(np.finfo(self.dtype_).eps)
        # Relative bound on the rounding of a working-dtype inner product of
        # length dim, of the float64 node bound and of the radii, with a
        # factor 2 to spare; the absolute part covers underflow.
        self._slack_factor = 2.0 * (2 * self.dim_ + 8) * eps + 1e-12
        self._abs_slack = 2.0 * (self.dim_ + 2) * float(np.finfo(self.dtype_).tiny)
        self._neg_shift = None
        self._tree = None
        self._workspaces = self._empty_workspaces()
        self._workspace_lock = threading.Lock()
        if algorithm == "brute":
            self._set_choice("brute", "requested")
        elif algorithm == "tree":
            self._build()
            self._set_choice("tree", "requested")
        elif self.dim_ > _AUTO_MAX_DIM:
            self._set_choice("brute", f"dim {self.dim_} > {_AUTO_MAX_DIM}: no exact tree "
                             f"beats a scan in high dimension")
        elif self.n_neurons_ < _AUTO_MIN_NEURONS:
            self._set_choice("brute", f"{self.n_neurons_} < {_AUTO_MIN_NEURONS} neurons: "
                             f"a scan is already cheap")
        else:
            self._build()
            self._set_choice("tree", "provisional: pruning is measured on each query")

    def _empty_workspaces(self):
        # One per algorithm: the tree stages per query, brute per thread
        # with a row number per entry.
        return {"tree": StagingWorkspace(self.dtype_.itemsize, False),
                "brute": StagingWorkspace(self.dtype_.itemsize, True)}

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_workspaces"], state["_workspace_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._workspaces = self._empty_workspaces()
        self._workspace_lock = threading.Lock()

    @property
    def workspace_nbytes_(self):
        """Bytes of staging memory kept between queries."""
        return sum(workspace.nbytes for workspace in self._workspaces.values())

    def release_workspace(self):
        """Free the staging memory kept between queries (`keep_workspace`).

        Returns
        -------
        self
        """
        with self._workspace_lock:
            self._workspaces = self._empty_workspaces()
        return self

    def _staged(self, algorithm, run):
        """``run(workspace)``: with the kept workspace of `algorithm`, or
        None (buffers freed on return) when none is kept or another call is
        using it."""
        if not self.keep_workspace or not self._workspace_lock.acquire(blocking=False):
            return run(None)
        try:
            return run(self._workspaces[algorithm])
        finally:
            self._workspace_lock.release()

    def _set_choice(self, algorithm, reason):
        self.algorithm_ = algorithm
        self.algorithm_reason_ = reason

    # ------------------------------------------------------------ tree state

    def _build(self):
        order, nodes, parent = build_tree(self.W_, self.leaf_size)
        blocks = np.zeros((-(-self.n_neurons_ // NEURONS_PER_BLOCK), self.dim_,
                           NEURONS_PER_BLOCK), dtype=self.dtype_)
        pack_lanes(self.W_, order, blocks, self._packing_threads())
        # Radii rounded upwards, far beyond float64 rounding.
        radius_factor = 1.0 + 1e-12
        bounds = node_bounds(blocks, nodes, radius_factor, self._threads(len(nodes)))
        start, end, right = nodes.T
        # Pre-order numbering lists the leaves left to right: they tile
        # [0, n_neurons) in order.
        leaves = np.flatnonzero(right < 0)
        leaf_of = np.repeat(leaves, end[leaves] - start[leaves])
        position = np.empty(self.n_neurons_, dtype=np.int64)
        position[order] = np.arange(self.n_neurons_)
        # What a query reports for each tree position (a block's ids are
        # read 16 at a time).
        ids = np.zeros(blocks.shape[0] * NEURONS_PER_BLOCK, dtype=np.int32)
        ids[:self.n_neurons_] = order
        self._tree = dict(
            order=order, ids=ids, position=position, blocks=blocks, nodes=nodes, parent=parent,
            leaf_of=leaf_of, leaves=leaves, bounds=bounds, radius_factor=radius_factor,
            built_radius=float(bounds[leaves, 3 * self.dim_].sum()))

    @property
    def n_nodes_(self):
        """Nodes of the tree (0 when no tree is kept)."""
        return 0 if self._tree is None else len(self._tree["nodes"])

    @property
    def radius_growth_(self):
        """Summed leaf radius over its value at the last build (1 right after
        a build; the rebuild policy compares it with
        ``REBUILD_RADIUS_GROWTH``). Leaves, because their radii are exact
        after a build and after a bottom-up refit alike."""
        if self._tree is None:
            return 1.0
        built = self._tree["built_radius"]
        total = float(self._tree["bounds"][self._tree["leaves"], 3 * self.dim_].sum())
        if built == 0.0:
            return 1.0 if total == 0.0 else np.inf
        return total / built

    def rebuild(self):
        """Rebuild the tree from the current neurons (a no-op for brute).

        Returns
        -------
        self
        """
        if self._tree is not None:
            self._build()
            self.n_rebuilds_ += 1
        return self

    def update(self, indices, rows):
        """Replace neurons: ``W[indices] = rows``.

        Parameters
        ----------
        indices : array-like of int of shape (k,), boolean mask of shape (n_neurons,), or None
            Distinct neuron positions (negative ones count from the end);
            None replaces every neuron (a training step moves them all).
        rows : array-like of shape (k, dim)
            New neurons, finite; a 1-D array of length dim when k == 1.

        Returns
        -------
        self

        Notes
        -----
        Bounds are grown lazily to hold the new rows, or recomputed
        bottom-up when more than 1/``REFIT_FRACTION`` of the neurons move;
        past ``REBUILD_RADIUS_GROWTH`` growth of the summed leaf radius the
        tree is rebuilt (see the class Notes).
        """
        if indices is None:
            indices = slice(None)
            k = self.n_neurons_
        else:
            indices = check_index(indices, self.n_neurons_, "indices")
            if np.unique(indices).size != indices.size:
                raise ValueError("indices must not repeat a neuron")
            k = indices.size
        rows = np.asarray(rows)
        if rows.dtype == object or not (_is_numeric(rows.dtype) or rows.dtype == np.bool_):
            raise TypeError(f"rows must hold real numbers, got dtype {rows.dtype}")
        if rows.ndim == 1 and k == 1:
            rows = rows[None, :]
        if rows.shape != (k, self.dim_):
            raise ValueError(f"rows must have shape ({k}, {self.dim_}) to match "
                             f"indices and W, got shape {rows.shape}")
        rows = np.ascontiguousarray(rows, dtype=self.dtype_)
        if not np.all(np.isfinite(rows)):
            raise ValueError("rows contains NaN or infinity")
        self.W_[indices] = rows
        if self._tree is None or k == 0:
            return self
        tree = self._tree
        tree["bounds32"] = None
        if k * self.REFIT_FRACTION > self.n_neurons_:
            threads = self._packing_threads()
            pack_lanes(self.W_, tree["order"], tree["blocks"], threads)
            refit_bounds(tree["blocks"], tree["nodes"], tree["bounds"], tree["radius_factor"],
                         threads)
        else:
            positions = tree["position"][indices]
            set_rows(tree["blocks"], positions, rows)
            grow_bounds(tree["blocks"], positions, tree["leaf_of"], tree["parent"],
                        tree["bounds"], tree["radius_factor"])
        if self.radius_growth_ > self.REBUILD_RADIUS_GROWTH:
            self.rebuild()
        return self

    # --------------------------------------------------------------- queries

    def _threads(self, n_items):
        return max(1, min(effective_n_threads(self.n_threads), n_items))

    def _packing_threads(self):
        # Packing and refitting are a few nanoseconds per neuron: a thread
        # per 4096 neurons at most.
        return self._threads(self.n_neurons_ // 4096 + 1)

    def _check_query(self, X, threshold):
        if sp.issparse(X):
            raise TypeError(f"X must be a dense array, got a sparse {type(X).__name__}")
        X = np.asarray(X)
        if X.dtype == object or not (_is_numeric(X.dtype) or X.dtype == np.bool_):
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.dim_:
            raise ValueError(f"X must have shape (n_queries, {self.dim_}) or ({self.dim_},) "
                             f"to match W, got shape {np.shape(X)}")
        X = np.ascontiguousarray(X, dtype=self.dtype_)
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinity")
        if isinstance(threshold, np.ndarray) and threshold.ndim == 0:
            threshold = threshold[()]
        if not isinstance(threshold, numbers.Real):
            raise TypeError(f"threshold must be a real scalar (one threshold for all "
                            f"queries), got {type(threshold).__name__}")
        threshold = check_scalar(threshold, "threshold")
        largest = float(np.finfo(self.dtype_).max)
        if abs(threshold) > largest:
            raise ValueError(f"threshold must be finite in {self.dtype_} (|threshold| <= "
                             f"{largest:.6g}), got {threshold!r}")
        # The comparison happens in the working dtype, as in the brute path.
        return X, float(self.dtype_.type(threshold))

    def _run_tree(self, X, threshold, count_only, sort_indices=True):
        tree = self._tree
        if self.dtype_ == np.float32 and tree.get("bounds32") is None:
            tree["bounds32"] = float32_bounds(tree["bounds"], self._slack_factor)
        args = (X, threshold, self._slack_factor, self._abs_slack, tree["blocks"], tree["ids"],
                tree["nodes"], tree["bounds"], tree.get("bounds32"),
                self.FLAT_LEAVES * self.leaf_size, count_only, self._threads(X.shape[0]))
        if count_only:
            return tree_query(*args)  # stages nothing
        return self._staged("tree", lambda workspace: tree_query(*args, workspace, sort_indices))

    def _brute_shift(self, threshold):
        if self._neg_shift is None or self._neg_shift[0] != -threshold:
            self._neg_shift = np.full(self.n_neurons_, -threshold, dtype=self.dtype_)
        return self._neg_shift

    def _run_brute(self, X, threshold):
        # W_.T is F-ordered: the engine reads W_ in place.
        shift = self._brute_shift(threshold)
        return self._staged("brute", lambda workspace: threshold_csr(
            X, self.W_.T, shift, n_threads=self.n_threads, workspace=workspace))

    def _choose(self, X, threshold, output):
        """'tree' or 'brute' for this call, and the tree's result on the
        measured sample when that sample is all of X (else None). `output`
        is what the call returns, and what the tree is timed and priced on:
        'sorted' or 'unsorted' CSR, or 'count' (the walk alone; brute
        builds its CSR output either way)."""
        if self.algorithm != "auto" or self._tree is None:
            return self.algorithm_, None
        n_sample = min(X.shape[0], _AUTO_SAMPLE,
                       max(_AUTO_MIN_SAMPLE, X.shape[0] // _AUTO_SAMPLE_EVERY))
        sample = np.ascontiguousarray(X[:: max(1, X.shape[0] // n_sample)][:n_sample])
        count_only = output == "count"
        start = time.perf_counter()
        result = self._run_tree(sample, threshold, count_only, output == "sorted")
        tree_seconds = time.perf_counter() - start
        stats = result[-1]
        n_sample = sample.shape[0]
        evaluated = stats[0] / n_sample
        visited = stats[1] / n_sample
        active = (result[0].sum() if count_only else result[2][-1]) / n_sample
        n, d = self.n_neurons_, self.dim_
        if output == "sorted":
            output_ns = (active * _TREE_NS_PER_ACTIVE
                         + max(0.0, active - SORT_IN_CACHE) * _TREE_NS_PER_SPILLED)
        elif output == "unsorted":
            output_ns = active * _TREE_NS_PER_ACTIVE_UNSORTED
        else:
            output_ns = 0.0
        tree_ns = (visited * _TREE_NS_PER_NODE
                   + evaluated * (_TREE_NS_PER_EVALUATION + d * _TREE_NS_PER_MULTIPLY_ADD)
                   + output_ns)
        brute_ns = (n * (_BRUTE_NS_PER_NEURON + d * _BRUTE_NS_PER_MULTIPLY_ADD)
                    + active * _BRUTE_NS_PER_ACTIVE)
        tree_name = {"sorted": "the tree", "unsorted": "the tree (unsorted)",
                     "count": "the tree's count"}[output]
        reason = (f"measured on {n_sample} queries: the tree evaluates "
                  f"{evaluated / n:.2%} of the neurons and visits {visited:.0f} nodes per "
                  f"query ({active:.0f} active); predicted {tree_ns / 1e3:.1f} us per query "
                  f"for {tree_name} vs {brute_ns / 1e3:.1f} us for brute")
        if 1 / _AUTO_TIMED_BAND < brute_ns / tree_ns < _AUTO_TIMED_BAND:
            self._brute_shift(threshold)
            start = time.perf_counter()
            self._run_brute(sample, threshold)
            brute_seconds = time.perf_counter() - start
            choice = "tree" if tree_seconds < brute_seconds else "brute"
            reason += (f"; within {_AUTO_TIMED_BAND}x, so both were timed: "
                       f"{tree_seconds / n_sample * 1e6:.1f} us per query for {tree_name} vs "
                       f"{brute_seconds / n_sample * 1e6:.1f} us for brute")
        else:
            choice = "tree" if _AUTO_MARGIN * tree_ns < brute_ns else "brute"
        self._set_choice(choice, reason)
        whole = sample.shape[0] == X.shape[0] and choice == "tree"
        return choice, (result if whole else None)

    def _record(self, algorithm, n_queries, stats):
        total = n_queries * self.n_neurons_
        if stats is None:
            stats = np.array([total, 0, 0, 0])
        self.last_query_stats_ = {
            "algorithm": algorithm,
            "n_queries": n_queries,
            "evaluated_fraction": float(stats[0]) / total if total else 0.0,
            "nodes_visited": int(stats[1]),
            "nodes_pruned": int(stats[2]),
            "nodes_reported_whole": int(stats[3]),
        }

    def query(self, X, threshold, sort_indices=True):
        """Active neurons of each query and their values.

        Parameters
        ----------
        X : array-like of shape (n_queries, dim) or (dim,)
            Queries, finite; a 1-D array is one query (a 1-row result).
            Converted to the dtype of the index.
        threshold : float
            The threshold b, one scalar for all queries; compared in the
            index's dtype. Negative values are allowed.
        sort_indices : bool, default=True
            Whether each row's column indices come sorted. With False, the
            tree leaves them in the order it finds them (tree order) and
            skips sorting each query's output, about half of a tree
            query's time at dim 4 and a sixth to a fifth at dim 8 (the
            ``tree`` and ``unsorted`` columns of bench/active_index.py):
            for consumers that take a row's columns in any order, such as
            a product with the result or the next layer of a network
            (scipy.sparse handles either; see ``A.has_sorted_indices``).
            Brute output comes sorted either way. 'auto' prices and times
            the tree's query as asked, sorted or not.

        Returns
        -------
        A : scipy.sparse.csr_matrix of shape (n_queries, n_neurons)
            ``A[i, r] = <w_r, x_i> - b`` for exactly the pairs where it is
            > 0; column indices sorted in each row unless `sort_indices` is
            False; dtype of the index.
        """
        X, threshold = self._check_query(X, threshold)
        check_bool(sort_indices, "sort_indices")
        if X.shape[0] == 0:
            self._record(self.algorithm_, 0, None)
            return sp.csr_matrix((0, self.n_neurons_), dtype=self.dtype_)
        algorithm, result = self._choose(X, threshold, "sorted" if sort_indices else "unsorted")
        if algorithm == "brute":
            A = self._run_brute(X, threshold)
            self._record("brute", X.shape[0], None)
            return A
        if result is None:
            result = self._run_tree(X, threshold, False, sort_indices)
        data, indices, indptr, stats = result
        self._record("tree", X.shape[0], stats)
        return sp.csr_matrix((data, indices, indptr), shape=(X.shape[0], self.n_neurons_))

    def count(self, X, threshold):
        """Number of active neurons of each query (``query(X, b).getnnz(axis=1)``
        without building the output).

        Parameters
        ----------
        X : array-like of shape (n_queries, dim) or (dim,)
        threshold : float

        Returns
        -------
        counts : ndarray of int64 of shape (n_queries,)
        """
        X, threshold = self._check_query(X, threshold)
        if X.shape[0] == 0:
            self._record(self.algorithm_, 0, None)
            return np.zeros(0, dtype=np.int64)
        algorithm, result = self._choose(X, threshold, "count")
        if algorithm == "brute":
            counts = np.diff(self._run_brute(X, threshold).indptr).astype(np.int64)
            self._record("brute", X.shape[0], None)
            return counts
        counts, stats = result if result is not None else self._run_tree(X, threshold, True)
        self._record("tree", X.shape[0], stats)
        return counts

    def __repr__(self):
        return (f"ActiveNeuronIndex(n_neurons={self.n_neurons_}, dim={self.dim_}, "
                f"dtype={self.dtype_}, algorithm={self.algorithm!r}, "
                f"algorithm_={self.algorithm_!r})")
