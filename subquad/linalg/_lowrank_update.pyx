"""In-place ``W += alpha * U @ V`` for a sparse (CSR) U, writing only the
entries in the product's pattern. Each thread owns whole rows of W, so no
two threads ever write the same element."""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t

from ._vector cimport axpy_noalias


cdef extern from *:
    """
    #define subquad_prefetch_write(p) __builtin_prefetch((p), 1, 3)
    """
    void subquad_prefetch_write(const void* p) noexcept nogil

cdef enum:
    # The writes within a row are random: request them this many ahead.
    PREFETCH_DISTANCE = 16


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
    with nogil:
        for i in prange(W.shape[0], schedule="dynamic", chunksize=16,
                        num_threads=n_threads):
            w = &W[i, 0] if W.shape[1] > 0 else NULL
            for p in range(U_indptr[i], U_indptr[i + 1]):
                t = U_indices[p]
                a = <floating> alpha * U_data[p]
                for q in range(V_indptr[t], V_indptr[t + 1]):
                    if q + PREFETCH_DISTANCE < V_indptr[t + 1]:
                        subquad_prefetch_write(w + V_indices[q + PREFETCH_DISTANCE])
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

