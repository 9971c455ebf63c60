"""In-place ``W += alpha * U @ V`` for a sparse (CSR) U, writing only the
entries in the product's pattern. Each thread owns whole rows of W, so no
two threads ever write the same element."""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t

from ._vector cimport axpy_noalias


cdef extern from *:
    """
    #define subquad_prefetch_l2(p) __builtin_prefetch((p), 0, 2)
    """
    void subquad_prefetch_l2(const void* p) noexcept nogil


cdef struct WriteCursor:
    # Walks the writes of one row of W in the order the update makes them:
    # U's row entries p (up to p_end), each selecting a V row whose entries
    # q (up to q_end) give the columns written.
    const char* row
    int64_t p
    int64_t p_end
    int64_t q
    int64_t q_end


cdef inline WriteCursor _row_writes(const void* row, int64_t p, int64_t p_end) noexcept nogil:
    cdef WriteCursor cursor
    cursor.row = <const char*> row
    cursor.p = p
    cursor.p_end = p_end
    cursor.q = 0
    cursor.q_end = 0
    return cursor


cdef inline bint _prefetch_next(WriteCursor* cursor, size_t itemsize, const int32_t* U_indices,
                                const int32_t* V_indices, const int64_t* V_indptr) noexcept nogil:
    """Request the cursor's next write into L2; False once all are."""
    while cursor.q == cursor.q_end:
        if cursor.p == cursor.p_end:
            return False
        cursor.q = V_indptr[U_indices[cursor.p]]
        cursor.q_end = V_indptr[U_indices[cursor.p] + 1]
        cursor.p += 1
    subquad_prefetch_l2(cursor.row + V_indices[cursor.q] * itemsize)
    cursor.q += 1
    return True


def sparse_sparse_update(
    floating[:, ::1] W,
    double alpha,
    const floating[::1] U_data, const int32_t[::1] U_indices, const int64_t[::1] U_indptr,
    const floating[::1] V_data, const int32_t[::1] V_indices, const int64_t[::1] V_indptr,
    int n_threads,
):
    """W[i, V_t pattern] += alpha * U[i, t] * V[t, pattern] for CSR U and V.

    The writes within a row are scattered, so each would wait for memory.
    Every write therefore requests one of the next row's into L2: the next
    row's lines are all in flight a row ahead, spread out at the pace of the
    writes. Requested in a burst at the start of a row, they all queue at
    once for the core's few outstanding-miss slots, and the update was
    slower (an A/B of the two ways)."""
    cdef int64_t i, p, q, t
    cdef int64_t n_rows = W.shape[0]
    cdef floating a
    cdef floating* w
    cdef WriteCursor next_row
    if W.shape[1] == 0 or U_indices.shape[0] == 0 or V_indices.shape[0] == 0:
        return  # nothing to write
    with nogil:
        for i in prange(n_rows, schedule="dynamic", chunksize=16, num_threads=n_threads):
            w = &W[i, 0]
            # The last row has no next one: an empty cursor.
            next_row = _row_writes(&W[min(i + 1, n_rows - 1), 0], U_indptr[min(i + 1, n_rows)],
                                   U_indptr[min(i + 2, n_rows)])
            for p in range(U_indptr[i], U_indptr[i + 1]):
                t = U_indices[p]
                a = <floating> alpha * U_data[p]
                for q in range(V_indptr[t], V_indptr[t + 1]):
                    w[V_indices[q]] += a * V_data[q]
                    _prefetch_next(&next_row, sizeof(floating), &U_indices[0], &V_indices[0],
                                   &V_indptr[0])
            while _prefetch_next(&next_row, sizeof(floating), &U_indices[0], &V_indices[0],
                                 &V_indptr[0]):
                pass


def sparse_dense_update(
    floating[:, ::1] W,
    double alpha,
    const floating[::1] U_data, const int32_t[::1] U_indices, const int64_t[::1] U_indptr,
    const floating[:, ::1] V,
    int n_threads,
):
    """W[i, :] += alpha * U[i, t] * V[t, :] for CSR U and dense V."""
    cdef int64_t i, p
    cdef int64_t m_out = W.shape[1]
    if m_out == 0:
        return
    with nogil:
        for i in prange(W.shape[0], schedule="dynamic", chunksize=16,
                        num_threads=n_threads):
            for p in range(U_indptr[i], U_indptr[i + 1]):
                axpy_noalias(m_out, <floating> alpha * U_data[p],
                             &V[U_indices[p], 0], &W[i, 0])

