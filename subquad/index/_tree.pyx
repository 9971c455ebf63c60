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
once per query (a per-query walk was bound by memory latency). Each query
appends its active neurons (original index, value) to a staging buffer of
its own, in tree order; once all counts are known the CSR arrays are
allocated, and each query's entries are radix-sorted by column in cache and
copied into them.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt
from libc.stdint cimport int32_t, int64_t
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
    # A node to visit and its list of alive queries: alive[start:start+length].
    int64_t node
    int64_t start
    int64_t length


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
    threads)."""
    cdef int64_t a, p
    cdef double total, lo, hi, v, r, d, diff
    for a in range(dim):
        total = 0.0
        lo = _coord(B, dim, start, a)
        hi = lo
        for p in range(start, end):
            v = _coord(B, dim, p, a)
            total += v
            lo = min(lo, v)
            hi = max(hi, v)
        row[a] = total / (end - start)
        row[dim + a] = lo
        row[2 * dim + a] = hi
    r = 0.0
    for p in range(start, end):
        d = 0.0
        for a in range(dim):
            diff = <double> _coord(B, dim, p, a) - row[a]
            d += diff * diff
        r = max(r, d)
    row[3 * dim] = sqrt(r) * radius_factor
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

cdef extern from *:
    """
    /* Inner products of one packed block (16 neurons) with x, minus b,
       stored to `values`; returns the bit mask of the lanes > 0. Two
       accumulators halve the chain of dependent multiply-adds. With
       AVX-512 a block of float32 is one register; elsewhere the same
       arithmetic is written as loops over the 16 lanes, which compilers
       vectorise for their target. */
    #if defined(__AVX512F__)
    #include <immintrin.h>
    static inline unsigned subquad_block_mask_f32(const float* w, Py_ssize_t dim,
                                                  const float* x, float b, float* values) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        Py_ssize_t a = 0;
        for (; a + 1 < dim; a += 2) {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * a), _mm512_set1_ps(x[a]), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * a + 16), _mm512_set1_ps(x[a + 1]), acc1);
        }
        if (a < dim)
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * a), _mm512_set1_ps(x[a]), acc0);
        acc0 = _mm512_sub_ps(_mm512_add_ps(acc0, acc1), _mm512_set1_ps(b));
        _mm512_storeu_ps(values, acc0);
        return _mm512_cmp_ps_mask(acc0, _mm512_setzero_ps(), _CMP_GT_OQ);
    }
    static inline unsigned subquad_block_mask_f64(const double* w, Py_ssize_t dim,
                                                  const double* x, double b, double* values) {
        __m512d lo0 = _mm512_setzero_pd(), hi0 = _mm512_setzero_pd();
        __m512d lo1 = _mm512_setzero_pd(), hi1 = _mm512_setzero_pd();
        Py_ssize_t a = 0;
        for (; a + 1 < dim; a += 2) {
            __m512d x0 = _mm512_set1_pd(x[a]), x1 = _mm512_set1_pd(x[a + 1]);
            lo0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a), x0, lo0);
            hi0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 8), x0, hi0);
            lo1 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 16), x1, lo1);
            hi1 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 24), x1, hi1);
        }
        if (a < dim) {
            __m512d x0 = _mm512_set1_pd(x[a]);
            lo0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a), x0, lo0);
            hi0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 8), x0, hi0);
        }
        lo0 = _mm512_sub_pd(_mm512_add_pd(lo0, lo1), _mm512_set1_pd(b));
        hi0 = _mm512_sub_pd(_mm512_add_pd(hi0, hi1), _mm512_set1_pd(b));
        _mm512_storeu_pd(values, lo0);
        _mm512_storeu_pd(values + 8, hi0);
        return (unsigned) _mm512_cmp_pd_mask(lo0, _mm512_setzero_pd(), _CMP_GT_OQ)
               | ((unsigned) _mm512_cmp_pd_mask(hi0, _mm512_setzero_pd(), _CMP_GT_OQ) << 8);
    }
    #else
    #define SUBQUAD_BLOCK_MASK(NAME, T)                                          \
    static inline unsigned NAME(const T* w, Py_ssize_t dim, const T* x, T b, T* values) { \
        T odd[16];                                                               \
        unsigned mask = 0;                                                       \
        int j;                                                                   \
        Py_ssize_t a = 0;                                                        \
        for (j = 0; j < 16; j++) values[j] = odd[j] = 0;                         \
        for (; a + 1 < dim; a += 2)                                              \
            for (j = 0; j < 16; j++) {                                           \
                values[j] += w[16 * a + j] * x[a];                               \
                odd[j] += w[16 * a + 16 + j] * x[a + 1];                         \
            }                                                                    \
        if (a < dim)                                                             \
            for (j = 0; j < 16; j++) values[j] += w[16 * a + j] * x[a];          \
        for (j = 0; j < 16; j++) {                                               \
            values[j] = (values[j] + odd[j]) - b;                                \
            mask |= (unsigned) (values[j] > 0) << j;                             \
        }                                                                        \
        return mask;                                                             \
    }
    SUBQUAD_BLOCK_MASK(subquad_block_mask_f32, float)
    SUBQUAD_BLOCK_MASK(subquad_block_mask_f64, double)
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define subquad_popcount(m) __builtin_popcount(m)
    #define subquad_lowest_bit(m) __builtin_ctz(m)
    #else
    static inline int subquad_popcount(unsigned m) { int c = 0; for (; m; m &= m - 1) c++; return c; }
    static inline int subquad_lowest_bit(unsigned m) { int j = 0; while (!(m & 1u)) { m >>= 1; j++; } return j; }
    #endif
    """
    unsigned block_mask_f32 "subquad_block_mask_f32"(
        const float* w, Py_ssize_t dim, const float* x, float b, float* values) noexcept nogil
    unsigned block_mask_f64 "subquad_block_mask_f64"(
        const double* w, Py_ssize_t dim, const double* x, double b, double* values) noexcept nogil
    int popcount "subquad_popcount"(unsigned mask) noexcept nogil
    int lowest_bit "subquad_lowest_bit"(unsigned mask) noexcept nogil


cdef extern from *:
    """
    /* Upper and lower bounds of <w, x> over a node (bounds row: centre,
       lo, hi, each of length dim), for x in float64 split as
       x = x_pos + x_neg (x_pos >= 0 >= x_neg, one of them 0 in each
       coordinate, so the sum is exact): the ball's <c, x>, and the box's
       sum_a max(lo_a x_a, hi_a x_a) = <hi, x_pos> + <lo, x_neg> and
       sum_a min(lo_a x_a, hi_a x_a) = <lo, x_pos> + <hi, x_neg>, exactly
       and with no branch on the signs (which mispredicts). */
    static inline void subquad_node_sums(const double* bound, Py_ssize_t dim,
                                         const double* x_pos, const double* x_neg,
                                         double* cx, double* box_upper, double* box_lower) {
        const double* lo = bound + dim;
        const double* hi = bound + 2 * dim;
        double c_sum = 0.0, up = 0.0, low = 0.0;
    #if defined(__AVX512F__)
        /* Eight coordinates per register and one reduction per sum at the
           end: the scalar loop's sums are chains of dependent adds. */
        __m512d c_acc = _mm512_setzero_pd(), up_acc = c_acc, low_acc = c_acc;
        for (Py_ssize_t a = 0; a < dim; a += 8) {
            __mmask8 m = dim - a >= 8 ? (__mmask8) 0xFF : (__mmask8) ((1u << (dim - a)) - 1);
            __m512d p = _mm512_maskz_loadu_pd(m, x_pos + a);
            __m512d n = _mm512_maskz_loadu_pd(m, x_neg + a);
            __m512d l = _mm512_maskz_loadu_pd(m, lo + a);
            __m512d h = _mm512_maskz_loadu_pd(m, hi + a);
            c_acc = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(m, bound + a),
                                    _mm512_add_pd(p, n), c_acc);
            up_acc = _mm512_fmadd_pd(l, n, _mm512_fmadd_pd(h, p, up_acc));
            low_acc = _mm512_fmadd_pd(h, n, _mm512_fmadd_pd(l, p, low_acc));
        }
        *cx = _mm512_reduce_add_pd(c_acc);
        *box_upper = _mm512_reduce_add_pd(up_acc);
        *box_lower = _mm512_reduce_add_pd(low_acc);
        return;
    #endif
        for (Py_ssize_t a = 0; a < dim; a++) {
            c_sum += bound[a] * (x_pos[a] + x_neg[a]);
            up += hi[a] * x_pos[a] + lo[a] * x_neg[a];
            low += lo[a] * x_pos[a] + hi[a] * x_neg[a];
        }
        *cx = c_sum;
        *box_upper = up;
        *box_lower = low;
    }
    """
    void node_sums "subquad_node_sums"(
        const double* bound, Py_ssize_t dim, const double* x_pos, const double* x_neg,
        double* cx, double* box_upper, double* box_lower) noexcept nogil


cdef inline unsigned _block_mask(const floating* w, int64_t dim, const floating* x, floating b,
                                 floating* values) noexcept nogil:
    if floating is float:
        return block_mask_f32(w, dim, x, b, values)
    else:
        return block_mask_f64(w, dim, x, b, values)


cdef int _scan(
    const floating* blocks, int64_t dim, int64_t p0, int64_t p1, const floating* X,
    const int32_t* queries, int64_t n_queries, floating b, const int64_t* order,
    Staging* staging, int64_t* counts, bint count_only,
) noexcept nogil:
    """Evaluate tree positions [p0, p1) for the listed queries (rows of X),
    a packed block at a time; count the active ones in counts[q] and, unless
    count_only, append them (original index, value) to staging[q]. Returns
    0, or -1 when out of memory.

    Blocks are the outer loop: a block stays in L1 while every query is
    evaluated against it."""
    cdef floating values[LANES]
    cdef floating* out
    cdef Staging* s
    cdef int64_t block, base, i, q, j, k
    cdef unsigned mask, in_range
    cdef const floating* w
    if not count_only:
        for i in range(n_queries):
            if reserve(staging + queries[i], p1 - p0, sizeof(floating), False) < 0:
                return -1
    for block in range(p0 // LANES, (p1 + LANES - 1) // LANES):
        base = block * LANES
        # Lanes of this block inside [p0, p1).
        in_range = (0xFFFFu >> (LANES - min(p1 - base, LANES))) & (0xFFFFu << max(p0 - base, 0))
        w = blocks + block * dim * LANES
        for i in range(n_queries):
            q = queries[i]
            mask = _block_mask(w, dim, X + q * dim, b, values) & in_range
            if mask == 0:
                continue
            counts[q] += popcount(mask)
            if count_only:
                continue
            s = staging + q
            out = <floating*> s.vals
            k = s.size
            while mask:
                j = lowest_bit(mask)
                mask &= mask - 1
                s.cols[k] = <int32_t> order[base + j]
                out[k] = values[j]
                k += 1
            s.size = k
    return 0


cdef int _query_batch(
    const floating* X, const double* X_pos, const double* X_neg,
    int64_t n_queries, int64_t dim, floating b,
    const double* x_norms, double slack_factor, double abs_slack,
    const floating* blocks, const int64_t* order, const int64_t* nodes,
    const double* bounds, Staging* staging, int64_t* counts, bint count_only,
    int32_t* alive, Frame* frames, int32_t* scan, int64_t* stats,
) noexcept nogil:
    """Depth-first walk of the tree for a batch of queries at once (rows of
    X; the node bounds take them in float64, split by sign into X_pos and
    X_neg): each node is tested against the queries still alive at its parent,
    and evaluated for those that need it while its neurons sit in cache,
    so a node's data is read once per batch, not once per query. Active
    neurons of query q are appended to staging[q] (tree order) and counted
    in counts[q]. `alive` holds up to (MAX_DEPTH + 2) * n_queries query
    ids, `frames` 2 * MAX_DEPTH + 4 frames, `scan` n_queries ids.
    Returns 0, or -1 when out of memory."""
    cdef int64_t top, node, i, q, size, n_children, n_scan, free_start
    cdef int64_t evaluated = 0, visited = 0, pruned = 0, whole = 0
    cdef int64_t stride = 3 * dim + 3
    cdef double cx, spread, slack
    cdef double box_upper, box_lower, upper, lower
    cdef double b_d = <double> b
    cdef const double* bound
    cdef const int64_t* info
    cdef Frame frame
    for q in range(n_queries):
        alive[q] = <int32_t> q
    frames[0].node = 0
    frames[0].start = 0
    frames[0].length = n_queries
    top = 1
    while top > 0:
        top -= 1
        frame = frames[top]
        node = frame.node
        # Lists above this node's are those of finished subtrees.
        free_start = frame.start + frame.length
        bound = bounds + node * stride
        info = nodes + node * N_NODE_FIELDS
        size = info[NODE_END] - info[NODE_START]
        visited += frame.length
        n_children = 0
        n_scan = 0
        for i in range(frame.start, frame.start + frame.length):
            q = alive[i]
            node_sums(bound, dim, X_pos + q * dim, X_neg + q * dim, &cx, &box_upper,
                      &box_lower)
            spread = bound[3 * dim] * x_norms[q]
            upper = min(cx + spread, box_upper)
            lower = max(cx - spread, box_lower)
            # Bound on all rounding: in fl(<w, x>) for any w of the node
            # (whose norm is at most |c| + R and at most the box's norm
            # bound), in the ball and box bounds (each summing terms no
            # larger than these norms times |x|), and in the radius.
            slack = (slack_factor * max(bound[3 * dim + 1] + bound[3 * dim],
                                        bound[3 * dim + 2]) * x_norms[q] + abs_slack)
            if upper + slack <= b_d:
                pruned += 1
            elif lower - slack > b_d:
                whole += 1
                if count_only:
                    counts[q] += size
                else:
                    scan[n_scan] = <int32_t> q
                    n_scan += 1
            elif info[NODE_RIGHT] < 0:
                scan[n_scan] = <int32_t> q
                n_scan += 1
            else:
                alive[free_start + n_children] = <int32_t> q
                n_children += 1
        if n_children > 0:
            # Both children start from the same list; the left one is
            # walked first.
            frames[top].node = info[NODE_RIGHT]
            frames[top].start = free_start
            frames[top].length = n_children
            frames[top + 1].node = node + 1
            frames[top + 1].start = free_start
            frames[top + 1].length = n_children
            top += 2
        evaluated += n_scan * size
        if n_scan > 0 and _scan(blocks, dim, info[NODE_START], info[NODE_END], X, scan, n_scan,
                                b, order, staging, counts, count_only) < 0:
            return -1
    stats[STAT_EVALUATED] += evaluated
    stats[STAT_VISITED] += visited
    stats[STAT_PRUNED] += pruned
    stats[STAT_WHOLE] += whole
    return 0


cdef int _sort_into(int32_t* cols, floating* vals, int64_t count, Staging* tmp,
                    int64_t key_bits, int64_t* histogram, int32_t* out_cols,
                    floating* out_vals) noexcept nogil:
    """Write the `count` (column, value) entries sorted by column into
    `out_cols`, `out_vals`: LSD radix sort in as few passes as digits of at
    most RADIX_BITS bits cover `key_bits` (`histogram` holds
    MAX_RADIX_PASSES * RADIX_SIZE counts), ping-ponging between the input
    and `tmp`, which stay in cache, then copied out sequentially: scattering
    into the output, memory not yet touched, was slower, and scattering
    values into an array over all neurons would miss the cache on every
    entry. The input is used as scratch."""
    cdef int64_t n_passes = (key_bits + RADIX_BITS - 1) // RADIX_BITS
    cdef int64_t digit_bits = (key_bits + n_passes - 1) // n_passes
    cdef int64_t n_digits = <int64_t> 1 << digit_bits
    cdef int64_t shift, i, digit, total, c, pass_
    cdef int64_t* offsets
    cdef int32_t* src_cols = cols
    cdef floating* src_vals = vals
    cdef int32_t* dst_cols
    cdef floating* dst_vals
    cdef int32_t key
    cdef floating val
    if count <= 32:
        # Insertion sort: cheaper than a radix pass for a few entries.
        for i in range(count):
            key = cols[i]
            val = vals[i]
            c = i - 1
            while c >= 0 and out_cols[c] > key:
                out_cols[c + 1] = out_cols[c]
                out_vals[c + 1] = out_vals[c]
                c -= 1
            out_cols[c + 1] = key
            out_vals[c + 1] = val
        return 0
    tmp.size = 0
    if reserve(tmp, count, sizeof(floating), False) < 0:
        return -1
    # Every pass's digit counts in one read of the keys, then turned into
    # starting offsets.
    for i in range(n_passes * n_digits):
        histogram[i] = 0
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
    for pass_ in range(n_passes):
        shift = pass_ * digit_bits
        if src_cols == tmp.cols:
            dst_cols = cols
            dst_vals = vals
        else:
            dst_cols = tmp.cols
            dst_vals = <floating*> tmp.vals
        offsets = histogram + pass_ * n_digits
        for i in range(count):
            digit = (src_cols[i] >> shift) & (n_digits - 1)
            dst_cols[offsets[digit]] = src_cols[i]
            dst_vals[offsets[digit]] = src_vals[i]
            offsets[digit] += 1
        src_cols = dst_cols
        src_vals = dst_vals
    memcpy(out_cols, src_cols, count * sizeof(int32_t))
    memcpy(out_vals, src_vals, count * sizeof(floating))
    return 0


def tree_query(
    const floating[:, ::1] X,
    double threshold,
    double slack_factor,
    double abs_slack,
    const floating[:, :, ::1] blocks,
    const int64_t[::1] order,
    const int64_t[:, ::1] nodes,
    const double[:, ::1] bounds,
    bint count_only,
    int n_threads,
):
    """Active neurons ``fl(<w_r, x_i>) - b > 0`` of every query row of `X`,
    b being `threshold` in the working dtype.

    Queries are walked through the tree in batches of at most BATCH (one
    batch per thread at a time). Returns ``(counts, stats)`` if
    `count_only`, else ``(data, indices, indptr, stats)`` of the CSR result
    with columns in the original neuron order, sorted. `stats` sums, over
    queries, the neurons evaluated and the nodes visited, pruned and
    reported whole.
    """
    cdef floating b = <floating> threshold
    cdef int64_t n_queries = X.shape[0]
    cdef int64_t dim = X.shape[1]
    cdef int64_t n = order.shape[0]
    cdef int64_t key_bits = 1
    while (<int64_t> 1 << key_bits) < n:
        key_bits += 1
    dtype = np.asarray(blocks).dtype
    X64 = np.asarray(X, dtype=np.float64)
    cdef const double[:, ::1] X_pos = np.maximum(X64, 0.0)
    cdef const double[:, ::1] X_neg = np.minimum(X64, 0.0)
    cdef double[::1] x_norms = np.sqrt(np.einsum("ij,ij->i", X64, X64))
    counts_arr = np.zeros(n_queries, dtype=np.int64)
    stats_arr = np.zeros((n_threads, STATS_STRIDE), dtype=np.int64)
    cdef int64_t[::1] counts = counts_arr
    cdef int64_t[:, ::1] stats = stats_arr
    cdef int64_t batch = max(1, min(BATCH, (n_queries + n_threads - 1) // n_threads))
    cdef int64_t n_batches = (n_queries + batch - 1) // batch
    # One staging buffer per query, then one radix-sort scratch per thread.
    cdef Staging* staging = <Staging*> calloc(n_queries + n_threads, sizeof(Staging))
    if staging == NULL:
        raise MemoryError("ActiveNeuronIndex: could not allocate staging buffers")
    cdef int failed = 0
    cdef int tid
    cdef int64_t c, q0, nq, i
    cdef int64_t* histogram
    cdef int32_t* alive
    cdef int32_t* scan
    cdef Frame* frames
    cdef floating[::1] data_out
    cdef int32_t[::1] indices_out
    cdef int64_t[::1] indptr
    try:
        if n_queries > 0:
            with nogil, parallel(num_threads=n_threads):
                tid = omp_get_thread_num()
                alive = <int32_t*> malloc((MAX_DEPTH + 2) * batch * sizeof(int32_t))
                scan = <int32_t*> malloc(batch * sizeof(int32_t))
                frames = <Frame*> malloc((2 * MAX_DEPTH + 4) * sizeof(Frame))
                for c in prange(n_batches, schedule="dynamic"):
                    if alive == NULL or scan == NULL or frames == NULL:
                        failed += 1
                        continue
                    q0 = c * batch
                    nq = min(batch, n_queries - q0)
                    if _query_batch(
                            &X[q0, 0], &X_pos[q0, 0], &X_neg[q0, 0], nq, dim, b,
                            &x_norms[q0], slack_factor, abs_slack,
                            &blocks[0, 0, 0], &order[0], &nodes[0, 0], &bounds[0, 0],
                            staging + q0, &counts[q0], count_only, alive, frames, scan,
                            &stats[tid, 0]) < 0:
                        failed += 1
                free(alive)
                free(scan)
                free(frames)
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
            with nogil, parallel(num_threads=n_threads):
                tid = omp_get_thread_num()
                histogram = <int64_t*> malloc(MAX_RADIX_PASSES * RADIX_SIZE * sizeof(int64_t))
                for i in prange(n_queries, schedule="dynamic"):
                    if histogram == NULL:
                        failed += 1
                        continue
                    if counts[i] == 0:
                        continue
                    if _sort_into(staging[i].cols, <floating*> staging[i].vals, counts[i],
                                  staging + n_queries + tid, key_bits, histogram,
                                  &indices_out[indptr[i]], &data_out[indptr[i]]) < 0:
                        failed += 1
                free(histogram)
        if failed:
            raise MemoryError("ActiveNeuronIndex: out of memory sorting the output")
        return (np.asarray(data_out), np.asarray(indices_out),
                indptr_arr.astype(np.int32), stats_total)
    finally:
        release(staging, n_queries + n_threads)
