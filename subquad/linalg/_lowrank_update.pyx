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


cdef inline void _prefetch_row_updates(
    const floating* w, int64_t i,
    const int32_t* U_indices, const int64_t* U_indptr,
    const int32_t* V_indices, const int64_t* V_indptr,
) noexcept nogil:
    """Request into L2 every entry of row `w` (row i of W) that row i's
    update writes. The writes within a row are scattered, so requested one
    by one as they are made each waits for memory; requested a row ahead
    into L2 they are all in flight at once, without holding the few L1
    line-fill buffers the writes themselves need."""
    cdef int64_t p, q
    for p in range(U_indptr[i], U_indptr[i + 1]):
        for q in range(V_indptr[U_indices[p]], V_indptr[U_indices[p] + 1]):
            subquad_prefetch_l2(w + V_indices[q])


def sparse_sparse_update(
    floating[:, ::1] W,
    double alpha,
    const floating[::1] U_data, const int32_t[::1] U_indices, const int64_t[::1] U_indptr,
    const floating[::1] V_data, const int32_t[::1] V_indices, const int64_t[::1] V_indptr,
    int n_threads,
):
    """W[i, V_t pattern] += alpha * U[i, t] * V[t, pattern] for CSR U and V."""
    cdef int64_t i, p, q, t
    cdef floating a
    cdef floating* w
    if W.shape[1] == 0 or U_indices.shape[0] == 0 or V_indices.shape[0] == 0:
        return  # nothing to write
    with nogil:
        for i in prange(W.shape[0], schedule="dynamic", chunksize=16,
                        num_threads=n_threads):
            w = &W[i, 0]
            if i + 1 < W.shape[0]:
                _prefetch_row_updates(&W[i + 1, 0], i + 1, &U_indices[0], &U_indptr[0],
                                      &V_indices[0], &V_indptr[0])
            for p in range(U_indptr[i], U_indptr[i + 1]):
                t = U_indices[p]
                a = <floating> alpha * U_data[p]
                for q in range(V_indptr[t], V_indptr[t + 1]):
                    w[V_indices[q]] += a * V_data[q]


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

