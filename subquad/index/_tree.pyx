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

Queries run in parallel over queries. Each thread appends its query's
active neurons (original index, value) to a per-thread staging buffer, in
tree order, and radix-sorts them by column; a second parallel pass copies
the staged rows into CSR.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

import numpy as np

from .._openmp cimport omp_get_thread_num
from .._csr_output import row_pointers
from .._staging cimport Staging, release, reserve

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


cdef double _distance(const floating* w, const double* c, int64_t dim) noexcept nogil:
    cdef double total = 0.0, diff
    cdef int64_t a
    for a in range(dim):
        diff = <double> w[a] - c[a]
        total += diff * diff
    return sqrt(total)


cdef inline double _norm_of_extremes(const double* lo, const double* hi,
                                     int64_t dim) noexcept nogil:
    """Largest norm of a point of the box [lo, hi]."""
    cdef double total = 0.0, m
    cdef int64_t a
    for a in range(dim):
        m = max(-lo[a], hi[a])
        total += m * m
    return sqrt(total)


def node_bounds(const floating[:, ::1] W_tree, const int64_t[:, ::1] nodes,
                double radius_factor, int n_threads):
    """Bounds of every node over the tree-ordered rows `W_tree`, as float64
    rows ``(centre, lo, hi, radius, |centre|, norm bound)`` (``3 dim + 3``
    values). The centre is the mean; radii are multiplied by
    `radius_factor` (>= 1) so that their own rounding errs upwards; the norm
    bound is the largest norm of a point of the box."""
    cdef int64_t n_nodes = nodes.shape[0]
    cdef int64_t dim = W_tree.shape[1]
    bounds_arr = np.zeros((n_nodes, 3 * dim + 3), dtype=np.float64)
    cdef double[:, ::1] bounds = bounds_arr
    cdef int64_t k, p, a
    cdef double r, d, v
    with nogil:
        for k in prange(n_nodes, num_threads=n_threads, schedule="dynamic"):
            for a in range(dim):
                bounds[k, dim + a] = W_tree[nodes[k, NODE_START], a]
                bounds[k, 2 * dim + a] = W_tree[nodes[k, NODE_START], a]
            for p in range(nodes[k, NODE_START], nodes[k, NODE_END]):
                for a in range(dim):
                    v = W_tree[p, a]
                    bounds[k, a] += v
                    if v < bounds[k, dim + a]:
                        bounds[k, dim + a] = v
                    if v > bounds[k, 2 * dim + a]:
                        bounds[k, 2 * dim + a] = v
            r = 0.0
            for a in range(dim):
                bounds[k, a] /= nodes[k, NODE_END] - nodes[k, NODE_START]
                r += bounds[k, a] * bounds[k, a]
            bounds[k, 3 * dim + 1] = sqrt(r)
            r = 0.0
            for p in range(nodes[k, NODE_START], nodes[k, NODE_END]):
                d = _distance(&W_tree[p, 0], &bounds[k, 0], dim)
                if d > r:
                    r = d
            bounds[k, 3 * dim] = r * radius_factor
            bounds[k, 3 * dim + 2] = _norm_of_extremes(
                &bounds[k, dim], &bounds[k, 2 * dim], dim)
    return bounds_arr


def grow_bounds(const floating[:, ::1] W_tree, const int64_t[::1] positions,
                const int64_t[::1] leaf_of, const int64_t[::1] parent,
                double[:, ::1] bounds, double radius_factor):
    """After the rows at tree `positions` changed, grow the ball and the box
    of every node containing one so that they hold the new row again.
    Bounds never shrink: they stay valid for all rows without knowing the
    old ones (the lazy bound)."""
    cdef int64_t dim = W_tree.shape[1]
    cdef int64_t i, a, node
    cdef double d, v
    cdef bint grown
    with nogil:
        for i in range(positions.shape[0]):
            node = leaf_of[positions[i]]
            while node >= 0:
                d = _distance(&W_tree[positions[i], 0], &bounds[node, 0], dim) * radius_factor
                if d > bounds[node, 3 * dim]:
                    bounds[node, 3 * dim] = d
                grown = False
                for a in range(dim):
                    v = W_tree[positions[i], a]
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

cdef inline floating _dot(const floating* w, const floating* x, int64_t dim) noexcept nogil:
    cdef floating total = 0
    cdef int64_t a
    for a in range(dim):
        total = total + w[a] * x[a]
    return total


cdef int64_t _scan(
    const floating* W_tree, int64_t dim, int64_t p0, int64_t p1,
    const floating* x, floating b, const int64_t* order, Staging* s, bint count_only,
) noexcept nogil:
    """Evaluate tree positions [p0, p1); append the active ones (original
    index, value) to `s` unless count_only. Returns how many are active, or
    -1 when out of memory."""
    cdef int64_t p, k, n_active = 0
    cdef floating v
    cdef floating* out
    if not count_only:
        if reserve(s, p1 - p0, sizeof(floating), False) < 0:
            return -1
    out = <floating*> s.vals
    k = s.size
    for p in range(p0, p1):
        v = _dot(W_tree + p * dim, x, dim) - b
        if v > 0:
            n_active += 1
            if not count_only:
                s.cols[k] = <int32_t> order[p]
                out[k] = v
                k += 1
    s.size = k
    return n_active


cdef int64_t _query_one(
    const floating* x, int64_t dim, floating b, double slack_factor, double abs_slack,
    const floating* W_tree, const int64_t* order, const int64_t* nodes,
    const double* bounds, Staging* s, bint count_only, int64_t* stats,
) noexcept nogil:
    """Number of active neurons for query x, appended to `s` (in tree order)
    unless count_only; -1 when out of memory."""
    cdef int64_t stack[MAX_DEPTH + 2]
    cdef int64_t top = 0, node, a, found, n_active = 0
    cdef int64_t evaluated = 0, visited = 0, pruned = 0, whole = 0
    cdef double x_norm = 0.0, cx, spread, slack, lo_x, hi_x
    cdef double box_upper, box_lower, upper, lower
    cdef double b_d = <double> b
    cdef const double* bound
    cdef const int64_t* info
    for a in range(dim):
        x_norm += (<double> x[a]) * x[a]
    x_norm = sqrt(x_norm)
    stack[0] = 0
    top = 1
    while top > 0:
        top -= 1
        node = stack[top]
        visited += 1
        bound = bounds + node * (3 * dim + 3)
        info = nodes + node * N_NODE_FIELDS
        cx = 0.0
        box_upper = 0.0
        box_lower = 0.0
        for a in range(dim):
            cx += bound[a] * x[a]
            lo_x = bound[dim + a] * x[a]
            hi_x = bound[2 * dim + a] * x[a]
            if lo_x < hi_x:
                box_upper += hi_x
                box_lower += lo_x
            else:
                box_upper += lo_x
                box_lower += hi_x
        spread = bound[3 * dim] * x_norm
        upper = min(cx + spread, box_upper)
        lower = max(cx - spread, box_lower)
        # Bound on all rounding: in fl(<w, x>) for any w of the node (whose
        # norm is at most |c| + R and at most the box's norm bound), in the
        # ball and box bounds (each summing terms no larger than these norms
        # times |x|), and in the radius.
        slack = (slack_factor * max(bound[3 * dim + 1] + bound[3 * dim], bound[3 * dim + 2])
                 * x_norm + abs_slack)
        if upper + slack <= b_d:
            pruned += 1
            continue
        if lower - slack > b_d:
            whole += 1
            if count_only:
                n_active += info[NODE_END] - info[NODE_START]
                continue
        elif info[NODE_RIGHT] >= 0:
            stack[top] = info[NODE_RIGHT]
            stack[top + 1] = node + 1
            top += 2
            continue
        evaluated += info[NODE_END] - info[NODE_START]
        found = _scan(W_tree, dim, info[NODE_START], info[NODE_END], x, b, order, s,
                      count_only)
        if found < 0:
            return -1
        n_active += found
    stats[STAT_EVALUATED] += evaluated
    stats[STAT_VISITED] += visited
    stats[STAT_PRUNED] += pruned
    stats[STAT_WHOLE] += whole
    return n_active


cdef int _sort_by_column(int32_t* cols, floating* vals, int64_t count, Staging* tmp,
                         int64_t key_bits, int64_t* histogram) noexcept nogil:
    """Sort `count` (column, value) entries by column: LSD radix sort
    in passes of RADIX_BITS bits through `tmp` (a few linear passes over a
    buffer that stays in cache, where scattering values into an array over
    all neurons would miss the cache on every entry)."""
    cdef int64_t shift, i, digit, total, c
    cdef int32_t* src_cols
    cdef int32_t* dst_cols
    cdef floating* src_vals
    cdef floating* dst_vals
    cdef int32_t* swap_cols
    cdef floating* swap_vals
    cdef int32_t key
    cdef floating val
    if count <= 1:
        return 0
    if count <= 32:
        # Insertion sort: cheaper than a radix pass for a few entries.
        src_cols = cols
        src_vals = vals
        for i in range(1, count):
            key = src_cols[i]
            val = src_vals[i]
            c = i - 1
            while c >= 0 and src_cols[c] > key:
                src_cols[c + 1] = src_cols[c]
                src_vals[c + 1] = src_vals[c]
                c -= 1
            src_cols[c + 1] = key
            src_vals[c + 1] = val
        return 0
    tmp.size = 0
    if reserve(tmp, count, sizeof(floating), False) < 0:
        return -1
    src_cols = cols
    src_vals = vals
    dst_cols = tmp.cols
    dst_vals = <floating*> tmp.vals
    shift = 0
    while shift < key_bits:
        for i in range(RADIX_SIZE):
            histogram[i] = 0
        for i in range(count):
            histogram[(src_cols[i] >> shift) & (RADIX_SIZE - 1)] += 1
        total = 0
        for i in range(RADIX_SIZE):
            c = histogram[i]
            histogram[i] = total
            total += c
        for i in range(count):
            digit = (src_cols[i] >> shift) & (RADIX_SIZE - 1)
            dst_cols[histogram[digit]] = src_cols[i]
            dst_vals[histogram[digit]] = src_vals[i]
            histogram[digit] += 1
        swap_cols = src_cols
        src_cols = dst_cols
        dst_cols = swap_cols
        swap_vals = src_vals
        src_vals = dst_vals
        dst_vals = swap_vals
        shift += RADIX_BITS
    if src_cols != cols:
        memcpy(cols, src_cols, count * sizeof(int32_t))
        memcpy(vals, src_vals, count * sizeof(floating))
    return 0


def tree_query(
    const floating[:, ::1] X,
    double threshold,
    double slack_factor,
    double abs_slack,
    const floating[:, ::1] W_tree,
    const int64_t[::1] order,
    const int64_t[:, ::1] nodes,
    const double[:, ::1] bounds,
    bint count_only,
    int n_threads,
):
    """Active neurons ``fl(<w_r, x_i>) - b > 0`` of every query row of `X`,
    b being `threshold` in the working dtype.

    Returns ``(counts, stats)`` if `count_only`, else
    ``(data, indices, indptr, stats)`` of the CSR result with columns in the
    original neuron order, sorted. `stats` sums, over queries, the neurons
    evaluated and the nodes visited, pruned and reported whole.
    """
    cdef floating b = <floating> threshold
    cdef int64_t n_queries = X.shape[0]
    cdef int64_t dim = X.shape[1]
    cdef int64_t n = W_tree.shape[0]
    cdef int64_t key_bits = 1
    while (<int64_t> 1 << key_bits) < n:
        key_bits += 1
    dtype = np.asarray(W_tree).dtype
    counts_arr = np.zeros(n_queries, dtype=np.int64)
    stats_arr = np.zeros((n_threads, STATS_STRIDE), dtype=np.int64)
    cdef int64_t[::1] counts = counts_arr
    cdef int64_t[:, ::1] stats = stats_arr
    cdef int64_t[::1] query_thread = np.zeros(n_queries, dtype=np.int64)
    cdef int64_t[::1] query_start = np.zeros(n_queries, dtype=np.int64)
    # Per thread: the staging buffer, then a radix-sort scratch buffer.
    cdef Staging* staging = <Staging*> calloc(2 * n_threads, sizeof(Staging))
    if staging == NULL:
        raise MemoryError("ActiveNeuronIndex: could not allocate staging buffers")
    cdef int failed = 0
    cdef int tid
    cdef int64_t i, found
    cdef int64_t* histogram
    cdef Staging* s
    cdef floating[::1] data_out
    cdef int32_t[::1] indices_out
    cdef int64_t[::1] indptr
    try:
        if n_queries > 0:
            with nogil, parallel(num_threads=n_threads):
                tid = omp_get_thread_num()
                histogram = <int64_t*> malloc(RADIX_SIZE * sizeof(int64_t))
                for i in prange(n_queries, schedule="dynamic"):
                    if histogram == NULL:
                        failed += 1
                        continue
                    s = staging + 2 * tid
                    query_thread[i] = tid
                    query_start[i] = s.size
                    found = _query_one(
                        &X[i, 0], dim, b, slack_factor, abs_slack, &W_tree[0, 0],
                        &order[0], &nodes[0, 0], &bounds[0, 0], s, count_only,
                        &stats[tid, 0])
                    if found < 0:
                        failed += 1
                        continue
                    counts[i] = found
                    if not count_only and _sort_by_column(
                            s.cols + query_start[i], (<floating*> s.vals) + query_start[i],
                            found, s + 1, key_bits, histogram) < 0:
                        failed += 1
                free(histogram)
        if failed:
            raise MemoryError("ActiveNeuronIndex: out of memory staging the output")
        stats_total = stats_arr[:, :N_STATS].sum(axis=0)
        if count_only:
            return counts_arr, stats_total

        indptr_arr = row_pointers(counts_arr, "ActiveNeuronIndex.query",
                                  "query X in row batches")
        total = int(indptr_arr[n_queries])
        indptr = indptr_arr
        data_out = np.empty(total, dtype=dtype)
        indices_out = np.empty(total, dtype=np.int32)
        if total > 0:
            with nogil:
                for i in prange(n_queries, num_threads=n_threads, schedule="static"):
                    if counts[i] == 0:
                        continue
                    s = staging + 2 * query_thread[i]
                    memcpy(&indices_out[indptr[i]], s.cols + query_start[i],
                           counts[i] * sizeof(int32_t))
                    memcpy(&data_out[indptr[i]], (<floating*> s.vals) + query_start[i],
                           counts[i] * sizeof(floating))
        return (np.asarray(data_out), np.asarray(indices_out),
                indptr_arr.astype(np.int32), stats_total)
    finally:
        release(staging, 2 * n_threads)
