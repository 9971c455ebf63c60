"""In-place ``W += alpha * U @ V`` for a sparse (CSR) U, writing only the
entries in the product's pattern. Each thread owns whole rows of W, so no
two threads ever write the same element."""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free

from ._vector cimport axpy_noalias


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


cdef extern from *:
    """
    static inline int subquad_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    """
    int subquad_ctz64(uint64_t x) noexcept nogil


def sparse_sparse_update_sorted(
    floating[:, ::1] W,
    double alpha,
    const floating[::1] U_data, const int32_t[::1] U_indices, const int64_t[::1] U_indptr,
    const floating[::1] V_data, const int32_t[::1] V_indices, const int64_t[::1] V_indptr,
    int n_threads,
):
    """As sparse_sparse_update, but each row's update is summed in a
    per-thread scratch row and applied in ascending column order."""
    cdef int64_t m_out = W.shape[1]
    cdef int64_t n_words = (m_out + 63) // 64
    cdef int64_t i, p, q, t, word, c
    cdef uint64_t bits
    cdef floating a
    cdef floating* acc
    cdef uint64_t* mask
    cdef floating* w
    cdef int failed = 0
    if m_out == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        acc = <floating*> calloc(m_out, sizeof(floating))
        mask = <uint64_t*> calloc(n_words, sizeof(uint64_t))
        for i in prange(W.shape[0], schedule="dynamic", chunksize=16):
            if acc == NULL or mask == NULL:
                failed += 1
                continue
            if U_indptr[i] == U_indptr[i + 1]:
                continue
            for p in range(U_indptr[i], U_indptr[i + 1]):
                t = U_indices[p]
                a = <floating> alpha * U_data[p]
                for q in range(V_indptr[t], V_indptr[t + 1]):
                    c = V_indices[q]
                    acc[c] = acc[c] + a * V_data[q]
                    mask[c >> 6] = mask[c >> 6] | ((<uint64_t> 1) << (c & 63))
            w = &W[i, 0]
            for word in range(n_words):
                bits = mask[word]
                while bits:
                    c = word * 64 + subquad_ctz64(bits)
                    w[c] = w[c] + acc[c]
                    acc[c] = 0
                    bits = bits & (bits - 1)
                mask[word] = 0
        free(acc)
        free(mask)
    if failed:
        raise MemoryError("lowrank_update_: could not allocate per-thread scratch rows")
