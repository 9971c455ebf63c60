"""Tiled product ``H @ W (+ P @ V)`` for dense or CSR ``H``, either thresholded
straight into CSR or written densely, without an (n, m_out) scratch buffer.

Work is cut into items = (block of rows of H) x (group of column tiles of W).
An item computes each tile ``Z = H[block] @ W[:, tile]`` in a per-thread
buffer that stays in L2:

* dense H: one BLAS call per tile (BLAS held to one thread by the caller);
* CSR H: the block is first transposed (per W row: which samples use it,
  with what value), so each needed row segment of W is read once per tile
  and scattered into every sample that uses it. W is streamed once per
  block, which is what bounds this product: it is memory-bound.

The optional low-rank correction ``P[block] @ V[:, tile]`` is one more small
GEMM per tile. Thresholded entries ``Z + shift > 0`` are appended to the
thread's staging buffer; a second parallel pass scatters them into the CSR
arrays. Tiles are visited left to right, so each row comes out sorted.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memset

import numpy as np

from .._cython_blas cimport NoTrans, Trans, _gemm
from .._openmp cimport omp_get_thread_num
from .._csr_output import entry_arrays, row_pointers
from .._staging cimport Staging, reserve
from .._workspace cimport StagingWorkspace
from ._compress cimport compress_positive
from ._scatter cimport scatter_row


cdef enum:
    # Sorting the distinct W rows a block uses costs qsort several compare
    # calls per row; reading them off the counts, one test per row of W.
    # The scan is chosen while W has at most this many rows per row used.
    SCAN_PER_DISTINCT_ROW = 32


cdef int _compare_int32(const void* a, const void* b) noexcept nogil:
    cdef int32_t x = (<const int32_t*> a)[0]
    cdef int32_t y = (<const int32_t*> b)[0]
    return (x > y) - (x < y)


cdef void _transpose_block(
    const floating* data, const int32_t* indices, const int64_t* indptr,
    int64_t r0, int64_t r1, int64_t m_in, int64_t* cursor,
    int32_t* w_rows, int64_t* w_rows_ptr, int64_t* n_w_rows,
    int32_t* sample, floating* value,
) noexcept nogil:
    """CSR rows [r0, r1) -> for each distinct column j (a row of W, sorted),
    the (sample - r0, value) pairs that use it. Output starts at indptr[r0];
    `cursor` is a zeroed per-thread array of length m_in, left zeroed."""
    cdef int64_t base = indptr[r0]
    cdef int64_t p, q, pos, count
    cdef int64_t n_distinct = 0
    cdef int32_t j
    cdef int64_t r
    for p in range(base, indptr[r1]):
        j = indices[p]
        if cursor[j] == 0:
            w_rows[base + n_distinct] = j
            n_distinct += 1
        cursor[j] += 1
    # Ascending W rows: the scatter then walks W front to back. Unless the
    # rows used are a small share of W's, reading them off the counts in
    # order is cheaper than sorting them.
    if m_in <= SCAN_PER_DISTINCT_ROW * n_distinct:
        q = base
        for j in range(m_in):
            if cursor[j] != 0:
                w_rows[q] = j
                q += 1
    else:
        qsort(w_rows + base, n_distinct, sizeof(int32_t), _compare_int32)
    pos = base
    for q in range(n_distinct):
        j = w_rows[base + q]
        w_rows_ptr[q] = pos
        count = cursor[j]
        cursor[j] = pos
        pos += count
    w_rows_ptr[n_distinct] = pos
    for r in range(r0, r1):
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            sample[cursor[j]] = <int32_t> (r - r0)
            value[cursor[j]] = data[p]
            cursor[j] += 1
    for q in range(n_distinct):
        cursor[w_rows[base + q]] = 0
    n_w_rows[0] = n_distinct


cdef void _sparse_tile(
    const floating* W, int64_t ldw, int64_t c0, int64_t tw,
    const int32_t* w_rows, const int64_t* w_rows_ptr, int64_t n_w_rows,
    const int32_t* sample, const floating* value,
    floating* Z, int64_t ldz, int64_t nr,
) noexcept nogil:
    cdef int64_t i, q, p
    cdef const floating* w
    cdef const floating* w_next
    for i in range(nr):
        memset(Z + i * ldz, 0, tw * sizeof(floating))
    for q in range(n_w_rows):
        w = W + w_rows[q] * ldw + c0
        w_next = W + w_rows[q + 1] * ldw + c0 if q + 1 < n_w_rows else w
        p = w_rows_ptr[q]
        scatter_row(tw, w, w_next, w_rows_ptr[q + 1] - p, sample + p, value + p, Z, ldz)


cdef int _emit(
    Staging* s, const floating* Z, int64_t ldz, int64_t nr, int64_t tw, int64_t c0,
    const floating* shift, int64_t* counts, int64_t n_groups,
) noexcept nogil:
    """Append entries of Z + shift that are > 0; count them per row."""
    cdef int64_t i, e, k, n_pass
    if reserve(s, nr * tw, sizeof(floating), True) < 0:
        return -1
    k = s.size
    for i in range(nr):
        n_pass = compress_positive(tw, Z + i * ldz, shift + c0, <int32_t> c0,
                                   s.cols + k, <floating*> s.vals + k)
        for e in range(k, k + n_pass):
            s.rows[e] = <int32_t> i
        k += n_pass
        counts[i * n_groups] += n_pass
    s.size = k
    return 0


def tile_product(
    bint sparse,
    const floating[:, ::1] H,
    const floating[::1] H_data,
    const int32_t[::1] H_indices,
    const int64_t[::1] H_indptr,
    int64_t n_rows,
    int64_t m_in,
    const floating[:, ::1] W,
    bint trans_w,
    const floating[:, ::1] P,
    const floating[:, ::1] V,
    const floating[::1] shift,
    floating[:, ::1] out,
    bint to_csr,
    int n_threads,
    int64_t row_block,
    int64_t col_tile,
    StagingWorkspace workspace=None,
):
    """Engine behind ``threshold_matmul`` and the sparse-dense product.

    Computes ``Z = H @ op(W) + P @ V`` (op(W) = W.T if `trans_w`; `H` dense,
    or CSR given by `H_data`, `H_indices`, `H_indptr` when `sparse`; `P`
    has zero columns when there is no correction). With `to_csr`, returns
    ``(data, indices, indptr)`` of ``max(Z + shift, 0)`` keeping entries > 0;
    otherwise writes ``Z`` into `out` and returns None. The CSR output is
    staged in `workspace`, or, when None, in buffers freed on return. All
    arrays are validated by the caller.
    """
    cdef int64_t m_out = W.shape[0] if trans_w else W.shape[1]
    cdef int64_t ldw = W.shape[1]
    cdef int64_t rank = P.shape[1]
    cdef int64_t nnz = H_indptr[n_rows] if sparse else 0
    cdef int64_t n_blocks = (n_rows + row_block - 1) // row_block
    cdef int64_t n_tiles = (m_out + col_tile - 1) // col_tile
    cdef int64_t n_groups, tiles_per_group, n_items
    if n_rows == 0 or m_out == 0:
        n_groups = 1
    else:
        # Enough items to balance the threads, few enough that a block's
        # transpose and per-row counts stay small.
        n_groups = min(n_tiles, max(1, (4 * n_threads + n_blocks - 1) // n_blocks))
    tiles_per_group = max(1, (n_tiles + n_groups - 1) // n_groups)
    n_groups = max(1, (n_tiles + tiles_per_group - 1) // tiles_per_group)
    n_items = n_blocks * n_groups

    # NumPy arrays are made here and kept as such: turning a typed
    # memoryview back into an array (np.asarray, NumPy calls on it) parses
    # its buffer format each time, which cost more than the whole product
    # on a small batch.
    dtype = np.float32 if floating is float else np.float64
    cdef int64_t[:, ::1] counts = np.zeros((n_rows, n_groups), dtype=np.int64)
    cdef int64_t[::1] item_thread = np.zeros(n_items, dtype=np.int64)
    cdef int64_t[::1] item_start = np.zeros(n_items, dtype=np.int64)
    cdef int64_t[::1] item_size = np.zeros(n_items, dtype=np.int64)

    # Transposed blocks of a CSR H; each block's part starts at indptr[r0].
    cdef int32_t[::1] w_rows = np.empty(nnz + 1, dtype=np.int32)
    cdef int64_t[::1] w_rows_ptr = np.empty(nnz + n_blocks + 1, dtype=np.int64)
    cdef int64_t[::1] n_w_rows = np.zeros(n_blocks + 1, dtype=np.int64)
    cdef int32_t[::1] sample = np.empty(nnz + 1, dtype=np.int32)
    cdef floating[::1] value = np.empty(nnz + 1, dtype=dtype)

    # A workspace of this call only frees its buffers on return.
    if workspace is None:
        workspace = StagingWorkspace(sizeof(floating), True)
    workspace.check(sizeof(floating), True, "threshold_matmul")
    cdef Staging* staging = workspace.slots(n_threads)

    cdef const floating* Wp = &W[0, 0] if W.shape[0] > 0 and W.shape[1] > 0 else NULL
    cdef const floating* Hp = &H[0, 0] if H.shape[0] > 0 and H.shape[1] > 0 else NULL
    cdef const floating* Pp = &P[0, 0] if P.shape[0] > 0 and P.shape[1] > 0 else NULL
    cdef const floating* Vp = &V[0, 0] if V.shape[0] > 0 and V.shape[1] > 0 else NULL
    cdef const floating* shiftp = &shift[0] if shift.shape[0] > 0 else NULL
    cdef floating* outp = &out[0, 0] if out.shape[0] > 0 and out.shape[1] > 0 else NULL
    cdef const floating* dp = &H_data[0] if H_data.shape[0] > 0 else NULL
    cdef const int32_t* ip = &H_indices[0] if H_indices.shape[0] > 0 else NULL
    cdef const int64_t* pp = &H_indptr[0]
    cdef int64_t* countsp = &counts[0, 0] if n_rows > 0 else NULL

    cdef int failed = 0
    cdef int tid
    cdef int64_t b, item, g, t, r0, nr, c0, tw, t_end, i, e, pos
    cdef int64_t* cursor
    cdef floating* Z
    cdef floating* Zp
    cdef int64_t ldz
    cdef Staging* s
    cdef floating* svals
    cdef floating[::1] data_out
    cdef int32_t[::1] indices_out
    cdef int64_t[::1] row_totals
    cdef int64_t[::1] row_start
    cdef int64_t[:, ::1] offsets

    if sparse and nnz > 0:
        with nogil, parallel(num_threads=n_threads):
            cursor = <int64_t*> calloc(m_in + 1, sizeof(int64_t))
            for b in prange(n_blocks, schedule="dynamic"):
                if cursor == NULL:
                    failed += 1
                    continue
                _transpose_block(
                    dp, ip, pp, b * row_block, min(n_rows, (b + 1) * row_block), m_in,
                    cursor, &w_rows[0], &w_rows_ptr[pp[b * row_block] + b],
                    &n_w_rows[b], &sample[0], &value[0])
            free(cursor)
        if failed:
            raise MemoryError("threshold_matmul: out of memory transposing H")

    with nogil, parallel(num_threads=n_threads):
        tid = omp_get_thread_num()
        Z = <floating*> malloc(row_block * col_tile * sizeof(floating)) if to_csr else NULL
        for item in prange(n_items, schedule="dynamic"):
            if to_csr and Z == NULL:
                failed += 1
                continue
            b = item // n_groups
            g = item % n_groups
            r0 = b * row_block
            nr = min(row_block, n_rows - r0)
            s = staging + tid
            item_thread[item] = tid
            item_start[item] = s.size
            t_end = min(n_tiles, (g + 1) * tiles_per_group)
            for t in range(g * tiles_per_group, t_end):
                c0 = t * col_tile
                tw = min(col_tile, m_out - c0)
                if to_csr:
                    Zp = Z
                    ldz = tw
                else:
                    Zp = outp + r0 * m_out + c0
                    ldz = m_out
                if sparse:
                    _sparse_tile(
                        Wp, ldw, c0, tw, &w_rows[0] + pp[r0],
                        &w_rows_ptr[pp[r0] + b], n_w_rows[b],
                        &sample[0], &value[0], Zp, ldz, nr)
                elif trans_w:
                    _gemm(NoTrans, Trans, <int> nr, <int> tw, <int> m_in, 1.0,
                          Hp + r0 * m_in, <int> m_in, Wp + c0 * ldw, <int> ldw,
                          0.0, Zp, <int> ldz)
                else:
                    _gemm(NoTrans, NoTrans, <int> nr, <int> tw, <int> m_in, 1.0,
                          Hp + r0 * m_in, <int> m_in, Wp + c0, <int> ldw,
                          0.0, Zp, <int> ldz)
                if rank > 0:
                    _gemm(NoTrans, NoTrans, <int> nr, <int> tw, <int> rank, 1.0,
                          Pp + r0 * rank, <int> rank, Vp + c0, <int> m_out,
                          1.0, Zp, <int> ldz)
                if to_csr and _emit(s, Zp, ldz, nr, tw, c0, shiftp,
                                    countsp + r0 * n_groups + g, n_groups) < 0:
                    failed += 1
                    break
            item_size[item] = s.size - item_start[item]
        free(Z)
    if failed:
        raise MemoryError("threshold_matmul: out of memory staging the output")
    if not to_csr:
        return None

    totals_arr = np.empty(n_rows, dtype=np.int64)
    row_totals = totals_arr
    for i in range(n_rows):
        row_totals[i] = 0
        for g in range(n_groups):
            row_totals[i] += counts[i, g]
    indptr = row_pointers(totals_arr, "threshold_matmul", "pass H in row batches")
    row_start = indptr
    # Where item (b, g) writes row r: after row r's entries of groups < g.
    offsets = np.empty((n_rows, n_groups), dtype=np.int64)
    for i in range(n_rows):
        pos = row_start[i]
        for g in range(n_groups):
            offsets[i, g] = pos
            pos += counts[i, g]
    data_arr, indices_arr = entry_arrays(row_start[n_rows], dtype)
    data_out = data_arr
    indices_out = indices_arr

    with nogil, parallel(num_threads=n_threads):
        cursor = <int64_t*> malloc((row_block + 1) * sizeof(int64_t))
        for item in prange(n_items, schedule="dynamic"):
            if cursor == NULL:
                failed += 1
                continue
            b = item // n_groups
            g = item % n_groups
            r0 = b * row_block
            nr = min(row_block, n_rows - r0)
            for i in range(nr):
                cursor[i] = offsets[r0 + i, g]
            s = staging + item_thread[item]
            svals = <floating*> s.vals
            for e in range(item_start[item], item_start[item] + item_size[item]):
                pos = cursor[s.rows[e]]
                indices_out[pos] = s.cols[e]
                data_out[pos] = svals[e]
                cursor[s.rows[e]] = pos + 1
        free(cursor)
    if failed:
        raise MemoryError("threshold_matmul: out of memory assembling the output")
    return data_arr, indices_arr, indptr.astype(np.int32)
