"""Build, bound maintenance and threshold queries of the active-neuron tree.

The tree partitions the neurons (rows of W) kd-style: a node's neurons are
split across the coordinate with the largest spread, at the middle of that
spread, but with at least a quarter of them on each side. Midpoint cuts keep
the sparse outer cells small in space: active neurons lie in the tails of
<w, x>, and there balanced (median) cells are long and prune badly
(bench/active_index.py, 2**20 Gaussian neurons at dim 8: 22% of them
evaluated with median cuts and leaves of 32, 17.5% with these cuts and
leaves of 64). The quarter keeps the depth below 2.5 log2(n). Every node
is a contiguous range of the tree-ordered copy of W and carries two bounds,
in float64: a ball (centre c, radius R) and a bounding box [lo, hi], so for
a query x and any neuron w of the node

    <w, x>  <=  min(<c, x> + R ||x||,  sum_j max(lo_j x_j, hi_j x_j))
    <w, x>  >=  max(<c, x> - R ||x||,  sum_j min(lo_j x_j, hi_j x_j)).

The box is the tighter bound for the elongated cells of a kd split; the
ball can be tighter for round ones and costs less to loosen.

Exactness rule. A neuron is reported iff its computed value
``fl(<w, x>) - b`` (inner product accumulated in the working dtype) is > 0,
exactly the test the brute path applies. The ball bounds only decide which
values get computed, and they are widened by ``slack``, a bound on every
rounding error involved (the working-dtype inner product, the float64
bound, the radius), so a node is skipped only if no computed value inside
can exceed b. A node whose lower bound certainly exceeds b is "reported
whole": `count` adds its size without evaluating anything; `query` still
computes each value (the output needs them) and keeps the > 0 test.

Layout. Neurons are stored in tree order, packed in blocks of 16
(`pack_lanes`): a block holds each coordinate of its 16 neurons
contiguously, so evaluating a block for one query is `dim` 16-wide
multiply-adds and one compare into a bit mask (AVX-512 intrinsics when
compiled for it, loops the compiler vectorises otherwise). A block then
costs about as much as one node's bound test, which is why leaves are
larger than in a scalar kd tree.

Queries. Threads take batches of up to BATCH queries and walk the tree
depth-first once per batch, carrying at each node the list of queries
still alive there: every node's bounds and every leaf's neurons are read
once per batch and used for all its queries while in cache, instead of
once per query (a per-query walk was bound by memory latency). The list
holds the queries' coordinates and norms row by row, so a node is tested
against eight queries per vector operation and the survivors are packed
into the child's list with compress instructions (`_query_kernels.pxd`);
no branch depends on a bound or on a neuron being active. Near the leaves
the inner nodes' bounds prune little (at dim 8, 2**20 Gaussian neurons and
leaves of 128, a query visits about as many nodes as there are leaves), so
for float32 a node of at most `flat_size` neurons hands its list to its
leaves directly: each leaf is tested against it with float32 rows of its
box and ball (`float32_bounds`), 16 queries per vector operation, which
costs a fraction of a float64 node test. Each query
appends its active neurons (original index, value) to a staging buffer of
its own, in tree order; once all counts are known the CSR arrays are
allocated (from the output pool, `_output_pool.pyx`), and each query's
entries are radix-sorted by column in cache and streamed into them; the
staging buffers are kept between calls when the caller passes a
`StagingWorkspace`.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, fabs, sqrt
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import numpy as np

from .._openmp cimport omp_get_thread_num
from .._csr_output import entry_arrays, row_pointers
from .._staging cimport Staging, reserve
from .._stream cimport stream_fence
from .._workspace cimport StagingWorkspace
from ._query_kernels cimport (leaf_count, leaf_emit, leaf_test_f32, node_test, unpack_entries_f32,
                              unpack_entries_f64)

cdef enum:
    # A tree whose every split leaves at least a quarter on each side is
    # less than log(n) / log(4/3) deep: under this for n < 2**50 neurons,
    # which bounds the traversal stack.
    MAX_DEPTH = 120
    # Columns of the per-thread statistics.
    STAT_EVALUATED = 0
    STAT_VISITED = 1
    STAT_PRUNED = 2
    STAT_WHOLE = 3
    # Per-thread statistics rows are padded to a cache line (no false sharing).
    N_STATS = 4
    STATS_STRIDE = 8
    # Columns of the node table.
    NODE_START = 0
    NODE_END = 1
    NODE_RIGHT = 2
    N_NODE_FIELDS = 3
    RADIX_BITS = 11
    RADIX_SIZE = 2048
    # Column keys have at most 31 bits.
    MAX_RADIX_PASSES = 3
    # Neurons per packed block: a block stores coordinate a of its LANES
    # neurons contiguously, so one block's inner products are LANES-wide
    # vector multiply-adds (one AVX-512 register of float32).
    LANES = 16
    # Most queries walked through the tree together (see _query_batch).
    BATCH = 256


# The block width, for callers allocating the packed layout.
NEURONS_PER_BLOCK = LANES

cdef struct Frame:
    # A node to visit and the list of queries alive there: `length`
    # queries, coordinates at lists[values:] (rows `stride` apart), ids at
    # list_ids[ids:].
    int64_t node
    int64_t values
    int64_t ids
    int64_t length
    int64_t stride


# ---------------------------------------------------------------- build

cdef void _select(int64_t* order, const floating* W, int64_t dim, int64_t axis,
                  int64_t lo, int64_t hi, int64_t k) noexcept nogil:
    """Reorder order[lo:hi] so that order[k] holds the neuron of rank k - lo
    along `axis`, smaller ones before it and larger ones after (Hoare
    partition: equal keys, e.g. duplicate neurons, stay O(n log n))."""
    cdef int64_t i, j, swap
    cdef floating pivot
    hi -= 1
    while lo < hi:
        pivot = W[order[(lo + hi) // 2] * dim + axis]
        i = lo
        j = hi
        while i <= j:
            while W[order[i] * dim + axis] < pivot:
                i += 1
            while W[order[j] * dim + axis] > pivot:
                j -= 1
            if i <= j:
                swap = order[i]
                order[i] = order[j]
                order[j] = swap
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


cdef int64_t _widest_axis(const int64_t* order, const floating* W, int64_t dim,
                          int64_t start, int64_t end, double* middle) noexcept nogil:
    """The coordinate of largest spread over order[start:end], and the
    middle of that spread in `middle`."""
    cdef int64_t a, p, best = 0
    cdef floating lo, hi, v
    cdef double spread, best_spread = -1.0
    for a in range(dim):
        lo = W[order[start] * dim + a]
        hi = lo
        for p in range(start + 1, end):
            v = W[order[p] * dim + a]
            if v < lo:
                lo = v
            elif v > hi:
                hi = v
        spread = <double> hi - <double> lo
        if spread > best_spread:
            best_spread = spread
            best = a
            middle[0] = 0.5 * (<double> lo + <double> hi)
    return best


cdef int64_t _midpoint_rank(const int64_t* order, const floating* W, int64_t dim,
                            int64_t axis, double middle, int64_t lo, int64_t hi) noexcept nogil:
    """Where to split order[lo:hi] along `axis`: after the neurons below
    `middle`, moved to keep at least a quarter (and one neuron) per side."""
    cdef int64_t p, below = 0
    cdef int64_t quarter = max((hi - lo) // 4, 1)
    for p in range(lo, hi):
        if W[order[p] * dim + axis] < middle:
            below += 1
    return lo + min(max(below, quarter), hi - lo - quarter)


def build_tree(const floating[:, ::1] W, int64_t leaf_size):
    """Partition the rows of `W` into a tree, nodes numbered in pre-order
    (a node's left child is the next node), so a depth-first query walks
    the node arrays mostly forwards.

    Returns ``(order, nodes, parent)``: `order` lists the neurons in tree
    order; ``nodes[k] = (start, end, right)``: node k covers tree positions
    ``start:end`` and, unless a leaf (right == -1), has children k + 1 and
    `right`; `parent` is -1 for the root, node 0.
    """
    cdef int64_t n = W.shape[0]
    cdef int64_t dim = W.shape[1]
    # Leaves hold at least a quarter of leaf_size + 1 neurons (and one).
    cdef int64_t smallest_leaf = max((leaf_size + 1) // 4, 1)
    cdef int64_t max_nodes = 2 * max(1, min(n, (n + smallest_leaf - 1) // smallest_leaf)) - 1
    cdef double middle = 0.0
    order_arr = np.arange(n, dtype=np.int64)
    nodes_arr = np.full((max_nodes, N_NODE_FIELDS), -1, dtype=np.int64)
    parent_arr = np.full(max_nodes, -1, dtype=np.int64)
    cdef int64_t[::1] order = order_arr
    cdef int64_t[:, ::1] nodes = nodes_arr
    cdef int64_t[::1] parent = parent_arr
    # Pending nodes: (start, end, parent, is a right child).
    cdef int64_t pending[MAX_DEPTH + 2][4]
    cdef int64_t top = 1, n_nodes = 0, node, lo, hi, mid, axis
    cdef const floating* Wp = &W[0, 0]
    pending[0][0] = 0
    pending[0][1] = n
    pending[0][2] = -1
    pending[0][3] = 0
    with nogil:
        while top > 0:
            top -= 1
            lo = pending[top][0]
            hi = pending[top][1]
            node = n_nodes
            n_nodes += 1
            nodes[node, NODE_START] = lo
            nodes[node, NODE_END] = hi
            parent[node] = pending[top][2]
            if pending[top][3]:
                nodes[pending[top][2], NODE_RIGHT] = node
            if hi - lo <= leaf_size:
                continue
            axis = _widest_axis(&order[0], Wp, dim, lo, hi, &middle)
            mid = _midpoint_rank(&order[0], Wp, dim, axis, middle, lo, hi)
            _select(&order[0], Wp, dim, axis, lo, hi, mid)
            # Right pushed first so that the left child is numbered next.
            pending[top][0] = mid
            pending[top][1] = hi
            pending[top][2] = node
            pending[top][3] = 1
            pending[top + 1][0] = lo
            pending[top + 1][1] = mid
            pending[top + 1][2] = node
            pending[top + 1][3] = 0
            top += 2
    return order_arr, nodes_arr[:n_nodes].copy(), parent_arr[:n_nodes].copy()


cdef inline floating _coord(const floating* blocks, int64_t dim, int64_t p,
                            int64_t a) noexcept nogil:
    """Coordinate a of the neuron at tree position p (see `pack_lanes`)."""
    return blocks[(p // LANES) * dim * LANES + a * LANES + p % LANES]


cdef double _distance(const floating* blocks, int64_t dim, int64_t p,
                      const double* c) noexcept nogil:
    cdef double total = 0.0, diff
    cdef int64_t a
    for a in range(dim):
        diff = <double> _coord(blocks, dim, p, a) - c[a]
        total += diff * diff
    return sqrt(total)


def pack_lanes(const floating[:, ::1] W, const int64_t[::1] order,
               floating[:, :, ::1] blocks, int n_threads):
    """Write the neurons ``W[order]`` (tree order) into `blocks`, of shape
    ``(ceil(n / LANES), dim, LANES)``: block k holds coordinate a of the
    neurons at tree positions ``k * LANES + j`` at ``[k, a, j]``; padding
    lanes past n are left as they are (zero when `blocks` was zeroed)."""
    cdef int64_t n = order.shape[0]
    cdef int64_t dim = W.shape[1]
    cdef int64_t k, j, a, p
    with nogil:
        for k in prange(blocks.shape[0], num_threads=n_threads, schedule="static"):
            for j in range(min(LANES, n - k * LANES)):
                p = order[k * LANES + j]
                for a in range(dim):
                    blocks[k, a, j] = W[p, a]


def set_rows(floating[:, :, ::1] blocks, const int64_t[::1] positions,
             const floating[:, ::1] rows):
    """Write ``rows[i]`` as the neuron at tree position ``positions[i]``."""
    cdef int64_t i, a
    for i in range(positions.shape[0]):
        for a in range(blocks.shape[1]):
            blocks[positions[i] // LANES, a, positions[i] % LANES] = rows[i, a]


cdef inline double _norm_of_extremes(const double* lo, const double* hi,
                                     int64_t dim) noexcept nogil:
    """Largest norm of a point of the box [lo, hi]."""
    cdef double total = 0.0, m
    cdef int64_t a
    for a in range(dim):
        m = max(-lo[a], hi[a])
        total += m * m
    return sqrt(total)


cdef inline void _fill_norms(double* row, int64_t dim) noexcept nogil:
    """The |centre| and norm-bound entries of a bounds row from its centre
    and box."""
    cdef double total = 0.0
    cdef int64_t a
    for a in range(dim):
        total += row[a] * row[a]
    row[3 * dim + 1] = sqrt(total)
    row[3 * dim + 2] = _norm_of_extremes(&row[dim], &row[2 * dim], dim)


cdef inline double _reach(const double* row, const double* child, int64_t dim,
                          double radius_factor) noexcept nogil:
    """How far from the centre of `row` a neuron of the node `child` can lie:
    |c - c_child| (rounded upwards by `radius_factor`) + R_child."""
    cdef double total = 0.0, diff
    cdef int64_t a
    for a in range(dim):
        diff = row[a] - child[a]
        total += diff * diff
    return sqrt(total) * radius_factor + child[3 * dim]


cdef void _fill_bounds(const floating* B, int64_t dim, int64_t start, int64_t end,
                       double* row, double radius_factor) noexcept nogil:
    """Bounds row ``(centre, lo, hi, radius, |centre|, norm bound)`` of the
    neurons at tree positions [start, end), accumulated in locals and
    written once (rows of neighbouring nodes share cache lines across
    threads). Each of a block's 16 lanes keeps its own sum, extremes and
    distance, so the loops over lanes vectorise; the lanes are combined at
    the end."""
    cdef int64_t a, k, j, j0, j1
    cdef int64_t first = start // LANES, last = (end - 1) // LANES
    cdef double total[LANES]
    cdef double lo[LANES]
    cdef double hi[LANES]
    cdef double dist[LANES]
    cdef double far[LANES]
    cdef const floating* x
    cdef double v, diff, centre
    for a in range(dim):
        for j in range(LANES):
            total[j] = 0.0
            lo[j] = INFINITY
            hi[j] = -INFINITY
        for k in range(first, last + 1):
            x = B + k * dim * LANES + a * LANES
            j0 = start - k * LANES if k == first else 0
            j1 = end - k * LANES if k == last else LANES
            for j in range(j0, j1):
                v = x[j]
                total[j] += v
                lo[j] = v if v < lo[j] else lo[j]
                hi[j] = v if v > hi[j] else hi[j]
        for j in range(1, LANES):
            total[0] += total[j]
            lo[0] = min(lo[0], lo[j])
            hi[0] = max(hi[0], hi[j])
        row[a] = total[0] / (end - start)
        row[dim + a] = lo[0]
        row[2 * dim + a] = hi[0]
    for j in range(LANES):
        far[j] = 0.0
    for k in range(first, last + 1):
        j0 = start - k * LANES if k == first else 0
        j1 = end - k * LANES if k == last else LANES
        for j in range(LANES):
            dist[j] = 0.0
        for a in range(dim):
            x = B + k * dim * LANES + a * LANES
            centre = row[a]
            for j in range(j0, j1):
                diff = <double> x[j] - centre
                dist[j] += diff * diff
        for j in range(j0, j1):
            far[j] = dist[j] if dist[j] > far[j] else far[j]
    for j in range(1, LANES):
        far[0] = max(far[0], far[j])
    row[3 * dim] = sqrt(far[0]) * radius_factor
    _fill_norms(row, dim)


def node_bounds(const floating[:, :, ::1] blocks, const int64_t[:, ::1] nodes,
                double radius_factor, int n_threads):
    """Bounds of every node over the tree-ordered neurons packed in `blocks`
    (`pack_lanes`), as float64 rows ``(centre, lo, hi, radius, |centre|,
    norm bound)`` (``3 dim + 3`` values). The centre is the mean; radii are
    multiplied by `radius_factor` (>= 1) so that their own rounding errs
    upwards; the norm bound is the largest norm of a point of the box."""
    cdef int64_t n_nodes = nodes.shape[0]
    cdef int64_t dim = blocks.shape[1]
    bounds_arr = np.zeros((n_nodes, 3 * dim + 3), dtype=np.float64)
    cdef double[:, ::1] bounds = bounds_arr
    cdef const floating* B = &blocks[0, 0, 0]
    cdef int64_t k
    with nogil:
        for k in prange(n_nodes, num_threads=n_threads, schedule="dynamic", chunksize=16):
            _fill_bounds(B, dim, nodes[k, NODE_START], nodes[k, NODE_END], &bounds[k, 0],
                         radius_factor)
    return bounds_arr


def refit_bounds(const floating[:, :, ::1] blocks, const int64_t[:, ::1] nodes,
                 double[:, ::1] bounds, double radius_factor, int n_threads):
    """Recompute every node's bounds for the current neurons, bottom-up in
    O(n dim): leaves from their neurons (as `node_bounds`), an inner node
    from its two children (box: their union; centre: the size-weighted mean
    of theirs; radius: the larger of |c - c_child| + R_child, which holds
    every neuron of the child). For updates that move most neurons, where
    growing bounds neuron by neuron would walk every root path."""
    cdef int64_t n_nodes = nodes.shape[0]
    cdef int64_t dim = blocks.shape[1]
    cdef const floating* B = &blocks[0, 0, 0]
    cdef int64_t k, a, left, right
    cdef double w_left, w_right
    with nogil:
        for k in prange(n_nodes, num_threads=n_threads, schedule="dynamic", chunksize=16):
            if nodes[k, NODE_RIGHT] < 0:
                _fill_bounds(B, dim, nodes[k, NODE_START], nodes[k, NODE_END], &bounds[k, 0],
                             radius_factor)
        # Children are numbered after their parent (pre-order).
        for k in range(n_nodes - 1, -1, -1):
            right = nodes[k, NODE_RIGHT]
            if right >= 0:
                left = k + 1
                w_left = <double> (nodes[left, NODE_END] - nodes[left, NODE_START])
                w_right = <double> (nodes[right, NODE_END] - nodes[right, NODE_START])
                for a in range(dim):
                    bounds[k, a] = ((w_left * bounds[left, a] + w_right * bounds[right, a])
                                    / (w_left + w_right))
                    bounds[k, dim + a] = min(bounds[left, dim + a], bounds[right, dim + a])
                    bounds[k, 2 * dim + a] = max(bounds[left, 2 * dim + a],
                                                 bounds[right, 2 * dim + a])
                bounds[k, 3 * dim] = max(
                    _reach(&bounds[k, 0], &bounds[left, 0], dim, radius_factor),
                    _reach(&bounds[k, 0], &bounds[right, 0], dim, radius_factor))
                _fill_norms(&bounds[k, 0], dim)


def grow_bounds(const floating[:, :, ::1] blocks, const int64_t[::1] positions,
                const int64_t[::1] leaf_of, const int64_t[::1] parent,
                double[:, ::1] bounds, double radius_factor):
    """After the neurons at tree `positions` changed, grow the ball and the
    box of every node containing one so that they hold the new neuron again.
    Bounds never shrink: they stay valid for all neurons without knowing the
    old ones (the lazy bound)."""
    cdef int64_t dim = blocks.shape[1]
    cdef const floating* B = &blocks[0, 0, 0]
    cdef int64_t i, a, node, p
    cdef double d, v
    cdef bint grown
    with nogil:
        for i in range(positions.shape[0]):
            p = positions[i]
            node = leaf_of[p]
            while node >= 0:
                d = _distance(B, dim, p, &bounds[node, 0]) * radius_factor
                if d > bounds[node, 3 * dim]:
                    bounds[node, 3 * dim] = d
                grown = False
                for a in range(dim):
                    v = _coord(B, dim, p, a)
                    if v < bounds[node, dim + a]:
                        bounds[node, dim + a] = v
                        grown = True
                    if v > bounds[node, 2 * dim + a]:
                        bounds[node, 2 * dim + a] = v
                        grown = True
                if grown:
                    bounds[node, 3 * dim + 2] = _norm_of_extremes(
                        &bounds[node, dim], &bounds[node, 2 * dim], dim)
                node = parent[node]


# ---------------------------------------------------------------- query

cdef int _scan(
    const floating* blocks, int64_t dim, int64_t p0, int64_t p1, const floating* X,
    const int32_t* queries, int64_t n_queries, floating b, const int32_t* ids,
    Staging* staging, int64_t* counts, bint count_only, int32_t** cols, floating** vals,
) noexcept nogil:
    """Evaluate tree positions [p0, p1) for the listed queries (rows of X);
    add the number of active ones to counts[q], and unless count_only
    append them (original index, value) to staging[q], whose size counts[q]
    is. `cols` and `vals` have room for a pointer per query of the batch.
    Returns 0, or -1 when out of memory."""
    cdef Staging* s
    cdef int64_t i, q
    cdef int64_t first_block = p0 // LANES
    cdef int64_t end_block = (p1 + LANES - 1) // LANES
    # Lanes inside [p0, p1) of the first and last blocks.
    cdef unsigned first = 0xFFFFu & (0xFFFFu << (p0 - first_block * LANES))
    cdef unsigned last = 0xFFFFu >> (LANES - min(p1 - (end_block - 1) * LANES, LANES))
    cdef const floating* w = blocks + first_block * dim * LANES
    if count_only:
        leaf_count(w, dim, end_block - first_block, first, last, X, queries, n_queries, b,
                   counts)
        return 0
    for i in range(n_queries):
        q = queries[i]
        s = staging + q
        s.size = counts[q]
        # A block's output is written 16 entries wide.
        if reserve(s, p1 - p0 + LANES, sizeof(floating), False) < 0:
            return -1
        cols[q] = s.cols
        vals[q] = <floating*> s.vals
    leaf_emit(w, dim, end_block - first_block, first, last, X, queries, n_queries, b,
              ids + first_block * LANES, counts, cols, vals)
    return 0


cdef inline int64_t _round_up8(int64_t n) noexcept nogil:
    return (n + 7) & ~(<int64_t> 7)


cdef int64_t _flat_list(const double* xs, int64_t stride, const int32_t* list_ids,
                        int64_t n, int64_t dim, float* out) noexcept nogil:
    """Copy a list of queries (see `_query_batch`) into the float32 layout of
    `leaf_test_f32`: rows of coordinates, their magnitudes, the norms
    rounded upwards, then the ids; rows padded with zeros to a multiple of
    16. Returns the row stride."""
    cdef int64_t n_flat = (n + 15) & ~(<int64_t> 15)
    cdef int64_t a, q
    cdef double v
    cdef int32_t* ids_out = <int32_t*> (out + (2 * dim + 1) * n_flat)
    for a in range(dim):
        for q in range(n_flat):
            v = xs[a * stride + q] if q < n else 0.0
            out[a * n_flat + q] = <float> v
            out[(dim + a) * n_flat + q] = <float> (v if v >= 0.0 else -v)
    for q in range(n_flat):
        # Nearest float32 of the norm, widened past any rounding down.
        out[2 * dim * n_flat + q] = <float> (xs[dim * stride + q] * (1.0 + 1e-6)) if q < n else 0.0
        ids_out[q] = list_ids[q] if q < n else 0
    return n_flat


cdef int _query_batch(
    const floating* X, int64_t n_queries, int64_t dim, floating b,
    const double* x_norms, double slack_factor, double abs_slack,
    const floating* blocks, const int32_t* ids, const int64_t* nodes,
    const double* bounds, int64_t n_nodes, const float* table, float b_test,
    int64_t flat_size, Staging* staging, int64_t* counts, bint count_only,
    double* lists, int32_t* list_ids, Frame* frames, float* flat_lists, int32_t* scan,
    int32_t** cols, floating** vals, int64_t* stats,
) noexcept nogil:
    """Depth-first walk of the tree for a batch of queries at once (rows of
    X): each node is tested against the queries still alive at its parent,
    and evaluated for those that need it while its neurons sit in cache,
    so a node's data is read once per batch, not once per query. Active
    neurons of query q are counted in counts[q] (which starts at 0) and,
    unless count_only, appended to staging[q] in tree order.

    The queries alive at a node are kept as a list stored by coordinate
    (see `node_test`), in float64: `lists` has room for MAX_DEPTH + 2
    lists of (dim + 1) * round_up8(n_queries) values, `list_ids` for as
    many lists of ids, `frames` for 2 * MAX_DEPTH + 4 frames, `scan` for
    2 * round_up8(n_queries) + 16 ids, `cols` and `vals` for n_queries
    pointers. A node of at most `flat_size` neurons (0 for none; float32
    only) tests the queries descending from it against each of its leaves
    in turn (`leaf_test_f32` on the rows of `table`, threshold `b_test`),
    from a float32 copy of the list in `flat_lists` ((2 dim + 2) *
    (round_up8(n_queries) + 16) values). Returns 0, or -1 when out of
    memory."""
    cdef int64_t top, node, i, q, a, size, stride, child_stride, child_values, child_ids
    cdef int64_t leaf, n_flat
    cdef const int64_t* leaf_info
    cdef Py_ssize_t n_scan, n_whole, n_children
    cdef int64_t evaluated = 0, visited = 0, pruned = 0, whole = 0
    cdef int64_t bound_stride = 3 * dim + 3
    cdef int64_t root_stride = _round_up8(n_queries)
    cdef const int64_t* info
    cdef int32_t* whole_ids = scan + root_stride + 8
    cdef Frame frame
    for a in range(dim):
        for q in range(root_stride):
            lists[a * root_stride + q] = X[q * dim + a] if q < n_queries else 0.0
    for q in range(root_stride):
        lists[dim * root_stride + q] = x_norms[q] if q < n_queries else 0.0
        list_ids[q] = <int32_t> q
    frames[0].node = 0
    frames[0].values = 0
    frames[0].ids = 0
    frames[0].length = n_queries
    frames[0].stride = root_stride
    top = 1
    while top > 0:
        top -= 1
        frame = frames[top]
        node = frame.node
        stride = frame.stride
        # Lists above this node's are those of finished subtrees.
        child_stride = _round_up8(frame.length)
        child_values = frame.values + (dim + 1) * stride
        child_ids = frame.ids + stride
        info = nodes + node * N_NODE_FIELDS
        size = info[NODE_END] - info[NODE_START]
        visited += frame.length
        pruned += node_test(
            bounds + node * bound_stride, dim, <double> b, slack_factor, abs_slack,
            info[NODE_RIGHT] < 0, lists + frame.values, stride, list_ids + frame.ids,
            frame.length, lists + child_values, child_stride, list_ids + child_ids,
            scan, whole_ids, &n_scan, &n_whole, &n_children)
        whole += n_whole
        if n_whole > 0:
            if count_only:
                for i in range(n_whole):
                    counts[whole_ids[i]] += size
            else:
                # Reported whole, but the output needs every value.
                for i in range(n_whole):
                    scan[n_scan + i] = whole_ids[i]
                n_scan += n_whole
        evaluated += n_scan * size
        if n_scan > 0 and _scan(blocks, dim, info[NODE_START], info[NODE_END], X, scan, n_scan,
                                b, ids, staging, counts, count_only, cols, vals) < 0:
            return -1
        if n_children > 0 and size <= flat_size:
            n_flat = _flat_list(lists + child_values, child_stride, list_ids + child_ids,
                                n_children, dim, flat_lists)
            # The subtree's nodes follow it (pre-order) up to its end.
            leaf = node + 1
            while leaf < n_nodes and nodes[leaf * N_NODE_FIELDS + NODE_START] < info[NODE_END]:
                leaf_info = nodes + leaf * N_NODE_FIELDS
                if leaf_info[NODE_RIGHT] < 0:
                    visited += n_children
                    n_scan = leaf_test_f32(
                        table + leaf * (3 * dim + 2), dim, b_test, flat_lists, n_flat,
                        n_children, <int32_t*> (flat_lists + (2 * dim + 1) * n_flat), scan)
                    pruned += n_children - n_scan
                    evaluated += n_scan * (leaf_info[NODE_END] - leaf_info[NODE_START])
                    if n_scan > 0 and _scan(
                            blocks, dim, leaf_info[NODE_START], leaf_info[NODE_END], X, scan,
                            n_scan, b, ids, staging, counts, count_only, cols, vals) < 0:
                        return -1
                leaf += 1
        elif n_children > 0:
            # Both children start from the same list; the left one is
            # walked first.
            frames[top].node = info[NODE_RIGHT]
            frames[top + 1].node = node + 1
            for i in range(top, top + 2):
                frames[i].values = child_values
                frames[i].ids = child_ids
                frames[i].length = n_children
                frames[i].stride = child_stride
            top += 2
    stats[STAT_EVALUATED] += evaluated
    stats[STAT_VISITED] += visited
    stats[STAT_PRUNED] += pruned
    stats[STAT_WHOLE] += whole
    return 0


cdef union FloatBits:
    float value
    uint32_t bits


cdef inline float _float32_above(double value) noexcept nogil:
    """A float32 no smaller than `value` >= 0: the nearest one, or when that
    is smaller, one at least an ulp above it (nearest * (1 + 2**-23) is, for
    a normal nearest; the smallest normal float32 covers zero and
    subnormals, whose arithmetic would take microcode assists).
    Arithmetic rather than nextafterf, a libm call per value: with it,
    `float32_bounds` took 2.1 ms for 16383 nodes at dim 8."""
    cdef float nearest = <float> value
    cdef float widened = nearest * <float> (1.0 + 2.0 ** -23) + <float> (2.0 ** -126)
    return widened if nearest < value else nearest


def float32_bounds(const double[:, ::1] bounds, double slack_factor):
    """The nodes' bounds for `leaf_test_f32`: float32 rows (box centre m,
    box half-widths h, ball centre c, ball radius R, slack scale s), each
    widened so that it holds the node's neurons in exact arithmetic, and s
    covering the float32 rounding of the test as well as of the evaluation
    (`slack_factor`)."""
    cdef int64_t n_nodes = bounds.shape[0]
    cdef int64_t dim = (bounds.shape[1] - 3) // 3
    table_arr = np.empty((n_nodes, 3 * dim + 2), dtype=np.float32)
    cdef float[:, ::1] table = table_arr
    cdef int64_t k, a
    cdef double mid, shift, radius, norm_bound
    cdef float centre
    with nogil:
        for k in range(n_nodes):
            shift = 0.0
            for a in range(dim):
                # What rounding the centres to float32 moves them by widens
                # the shapes.
                mid = (bounds[k, dim + a] + bounds[k, 2 * dim + a]) / 2
                centre = <float> mid
                table[k, a] = centre
                table[k, dim + a] = _float32_above(
                    (bounds[k, 2 * dim + a] - bounds[k, dim + a]) / 2 + fabs(mid - centre))
                centre = <float> bounds[k, a]
                table[k, 2 * dim + a] = centre
                shift += (bounds[k, a] - centre) * (bounds[k, a] - centre)
            radius = bounds[k, 3 * dim] + sqrt(shift) * (1 + 1e-12)
            norm_bound = max(bounds[k, 3 * dim + 1] + radius, bounds[k, 3 * dim + 2])
            table[k, 3 * dim] = _float32_above(radius)
            # 2 dim + 3 float32 operations add up to the bound, each off by at
            # most half an ulp of a partial sum no larger than norm_bound |x|.
            table[k, 3 * dim + 1] = _float32_above(
                (slack_factor + (2 * dim + 8) * 2.0 ** -23) * norm_bound * (1 + 1e-6))
    return table_arr


cdef inline uint32_t _payload(const floating* vals, int64_t i) noexcept nogil:
    """What travels with a column key through the sort: a float32 value's
    bits, or a float64 value's position."""
    cdef FloatBits u
    if floating is float:
        u.value = vals[i]
        return u.bits
    else:
        return <uint32_t> i


cdef int _sort_into(const int32_t* cols, const floating* vals, int64_t count,
                    uint64_t** scratch, int64_t* scratch_size, int64_t key_bits,
                    int64_t* histogram, int32_t* out_cols, floating* out_vals) noexcept nogil:
    """Write the `count` (column, value) entries sorted by column into
    `out_cols`, `out_vals`: LSD radix sort in as few passes as digits of at
    most RADIX_BITS bits cover `key_bits` (`histogram` holds
    MAX_RADIX_PASSES * RADIX_SIZE counts). Each entry travels as one 64-bit
    word, column above `_payload`, so a pass scatters one store per entry
    into half as many places as separate column and value arrays would.
    The passes ping-pong between the two halves of the thread's `scratch`
    (grown as needed, reused for every query, so in cache), and the result
    is written out sequentially, by streaming stores where it can
    (`unpack_entries_f32`): scattering into the input (written long before,
    so out of cache) or into the output (memory not yet touched) was slower
    (bench/active_index.py). Returns 0, or -1 when out of memory."""
    cdef int64_t n_passes = (key_bits + RADIX_BITS - 1) // RADIX_BITS
    cdef int64_t digit_bits = (key_bits + n_passes - 1) // n_passes
    cdef int64_t n_digits = <int64_t> 1 << digit_bits
    cdef int64_t shift, i, total, c, pass_
    cdef int64_t* offsets
    cdef uint64_t* src
    cdef uint64_t* dst
    cdef uint64_t* swap
    cdef uint64_t entry
    cdef int32_t key
    cdef void* grown
    if count <= 32:
        # Insertion sort: cheaper than a radix pass for a few entries.
        for i in range(count):
            key = cols[i]
            c = i - 1
            while c >= 0 and out_cols[c] > key:
                out_cols[c + 1] = out_cols[c]
                out_vals[c + 1] = out_vals[c]
                c -= 1
            out_cols[c + 1] = key
            out_vals[c + 1] = vals[i]
        return 0
    if scratch_size[0] < count:
        grown = realloc(scratch[0], 2 * count * sizeof(uint64_t))
        if grown == NULL:
            return -1
        scratch[0] = <uint64_t*> grown
        scratch_size[0] = count
    src = scratch[0]
    dst = src + count
    # Every pass's digit counts in one read of the keys, then turned into
    # starting offsets.
    for i in range(n_passes * n_digits):
        histogram[i] = 0
    if n_passes == 2:
        # The common case (up to 2**22 neurons), without the loop over
        # passes, which made counting cost as much as a scatter pass.
        for i in range(count):
            key = cols[i]
            histogram[key & (n_digits - 1)] += 1
            histogram[n_digits + ((key >> digit_bits) & (n_digits - 1))] += 1
    else:
        for i in range(count):
            key = cols[i]
            for pass_ in range(n_passes):
                histogram[pass_ * n_digits + ((key >> (pass_ * digit_bits)) & (n_digits - 1))] += 1
    for pass_ in range(n_passes):
        total = 0
        for i in range(pass_ * n_digits, (pass_ + 1) * n_digits):
            c = histogram[i]
            histogram[i] = total
            total += c
    # The first pass packs the entries as it reads them.
    for i in range(count):
        key = cols[i]
        c = histogram[key & (n_digits - 1)]
        histogram[key & (n_digits - 1)] = c + 1
        src[c] = (<uint64_t> key << 32) | _payload(vals, i)
    for pass_ in range(1, n_passes):
        shift = 32 + pass_ * digit_bits
        offsets = histogram + pass_ * n_digits
        for i in range(count):
            entry = src[i]
            c = offsets[(entry >> shift) & (n_digits - 1)]
            offsets[(entry >> shift) & (n_digits - 1)] = c + 1
            dst[c] = entry
        swap = src
        src = dst
        dst = swap
    if floating is float:
        unpack_entries_f32(src, count, out_cols, out_vals)
    else:
        unpack_entries_f64(src, count, vals, out_cols, out_vals)
    return 0


def tree_query(
    const floating[:, ::1] X,
    double threshold,
    double slack_factor,
    double abs_slack,
    const floating[:, :, ::1] blocks,
    const int32_t[::1] ids,
    const int64_t[:, ::1] nodes,
    const double[:, ::1] bounds,
    table,
    int64_t flat_size,
    bint count_only,
    int n_threads,
    StagingWorkspace workspace=None,
    bint sort_indices=True,
):
    """Active neurons ``fl(<w_r, x_i>) - b > 0`` of every query row of `X`,
    b being `threshold` in the working dtype. `ids` holds the original index
    of the neuron at each tree position, padded to whole blocks. The output
    is staged in `workspace`, or, when None, in buffers freed on return.

    Queries are walked through the tree in batches of at most BATCH (one
    batch per thread at a time). Returns ``(counts, stats)`` if
    `count_only`, else ``(data, indices, indptr, stats)`` of the CSR result
    with columns in the original neuron order, each row's sorted unless
    `sort_indices` is False (then in tree order, as staged). `stats` sums, over
    queries, the neurons evaluated and the nodes visited, pruned and
    reported whole. For float32, `table` is ``float32_bounds(bounds,
    slack_factor)`` and nodes of at most `flat_size` neurons test their
    leaves flat (see `_query_batch`); for float64 both are ignored.
    """
    cdef floating b = <floating> threshold
    cdef int64_t n_queries = X.shape[0]
    cdef int64_t dim = X.shape[1]
    cdef int64_t n = ids.shape[0]
    cdef int64_t key_bits = 1
    while (<int64_t> 1 << key_bits) < n:
        key_bits += 1
    dtype = np.asarray(blocks).dtype
    X64 = np.asarray(X, dtype=np.float64)
    cdef double[::1] x_norms = np.sqrt(np.einsum("ij,ij->i", X64, X64))
    counts_arr = np.zeros(n_queries, dtype=np.int64)
    stats_arr = np.zeros((n_threads, STATS_STRIDE), dtype=np.int64)
    cdef int64_t[::1] counts = counts_arr
    cdef int64_t[:, ::1] stats = stats_arr
    cdef int64_t batch = max(1, min(BATCH, (n_queries + n_threads - 1) // n_threads))
    cdef int64_t n_batches = (n_queries + batch - 1) // batch
    cdef int64_t list_room = _round_up8(batch)
    cdef int64_t n_nodes = nodes.shape[0]
    # One staging buffer per query; a workspace of this call only frees
    # them on return.
    if workspace is None:
        workspace = StagingWorkspace(sizeof(floating), False)
    workspace.check(sizeof(floating), False, "ActiveNeuronIndex")
    cdef Staging* staging = workspace.slots(max(n_queries, 1))
    cdef int failed = 0
    cdef int tid
    cdef int64_t c, q0, nq, i
    cdef int64_t* histogram
    cdef uint64_t* scratch
    cdef int64_t scratch_size
    cdef double* lists
    cdef int32_t* list_ids
    cdef int32_t* scan
    cdef int32_t** cols
    cdef floating** vals
    cdef Frame* frames
    cdef floating[::1] data_out
    cdef int32_t[::1] indices_out
    # Below b by more than underflow can move the evaluation (abs_slack) and
    # the flat test's float32 sum (at most the smallest normal per operation,
    # even with denormals flushed): the roundings `float32_bounds` does not
    # scale with |x|.
    cdef float b_test = np.nextafter(
        np.float32(<double> b - abs_slack - (4 * dim + 16) * 2.0 ** -126), np.float32(-np.inf))
    cdef const float* table_p = NULL
    cdef const float[:, ::1] table_view
    if floating is float and flat_size > 0:
        table_view = table
        table_p = &table_view[0, 0]
    else:
        flat_size = 0
    cdef float* flat_lists
    cdef int64_t[::1] indptr
    if n_queries > 0:
        with nogil, parallel(num_threads=n_threads):
            tid = omp_get_thread_num()
            lists = <double*> malloc(
                (MAX_DEPTH + 2) * (dim + 1) * list_room * sizeof(double))
            list_ids = <int32_t*> malloc((MAX_DEPTH + 2) * list_room * sizeof(int32_t))
            scan = <int32_t*> malloc((2 * list_room + 16) * sizeof(int32_t))
            frames = <Frame*> malloc((2 * MAX_DEPTH + 4) * sizeof(Frame))
            flat_lists = <float*> malloc((2 * dim + 2) * (list_room + 16) * sizeof(float))
            cols = <int32_t**> malloc(batch * sizeof(int32_t*))
            vals = <floating**> malloc(batch * sizeof(floating*))
            for c in prange(n_batches, schedule="dynamic"):
                if (lists == NULL or list_ids == NULL or scan == NULL or frames == NULL
                        or flat_lists == NULL or cols == NULL or vals == NULL):
                    failed += 1
                    continue
                q0 = c * batch
                nq = min(batch, n_queries - q0)
                if _query_batch(
                        &X[q0, 0], nq, dim, b, &x_norms[q0], slack_factor, abs_slack,
                        &blocks[0, 0, 0], &ids[0], &nodes[0, 0], &bounds[0, 0], n_nodes,
                        table_p, b_test, flat_size, staging + q0, &counts[q0], count_only,
                        lists, list_ids, frames, flat_lists, scan, cols, vals,
                        &stats[tid, 0]) < 0:
                    failed += 1
            free(lists)
            free(list_ids)
            free(scan)
            free(frames)
            free(flat_lists)
            free(cols)
            free(vals)
    if failed:
        raise MemoryError("ActiveNeuronIndex: out of memory staging the output")
    stats_total = stats_arr[:, :N_STATS].sum(axis=0)
    if count_only:
        return counts_arr, stats_total

    indptr_arr = row_pointers(counts_arr, "ActiveNeuronIndex.query",
                              "query X in row batches")
    total = int(indptr_arr[n_queries])
    indptr = indptr_arr
    data_arr, indices_arr = entry_arrays(total, dtype)
    data_out = data_arr
    indices_out = indices_arr
    if total > 0:
        with nogil, parallel(num_threads=n_threads):
            histogram = (<int64_t*> malloc(MAX_RADIX_PASSES * RADIX_SIZE * sizeof(int64_t))
                         if sort_indices else NULL)
            scratch = NULL
            scratch_size = 0
            for i in prange(n_queries, schedule="dynamic"):
                if counts[i] == 0:
                    continue
                if not sort_indices:
                    memcpy(&indices_out[indptr[i]], staging[i].cols, counts[i] * sizeof(int32_t))
                    memcpy(&data_out[indptr[i]], staging[i].vals, counts[i] * sizeof(floating))
                    continue
                if histogram == NULL:
                    failed += 1
                    continue
                if _sort_into(staging[i].cols, <floating*> staging[i].vals, counts[i],
                              &scratch, &scratch_size, key_bits, histogram,
                              &indices_out[indptr[i]], &data_out[indptr[i]]) < 0:
                    failed += 1
            stream_fence()
            free(histogram)
            free(scratch)
    if failed:
        raise MemoryError("ActiveNeuronIndex: out of memory sorting the output")
    return (data_arr, indices_arr,
            indptr_arr.astype(np.int32), stats_total)
