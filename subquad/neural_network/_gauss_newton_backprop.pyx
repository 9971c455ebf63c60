"""Kernels of the Gauss–Newton step: back-propagation of per-output vectors
through the active units, and Gram matrices of sparse rows.

Both walk a CSR matrix together with its transpose (CSC) so that each
thread owns what it writes and reads one contiguous row of W (or one column
of the pattern) for all the samples that use it.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t


def backprop_active_blocks(
    const floating[:, ::1] W,
    double scale,
    const int64_t[::1] inner_col_ptr,
    const int32_t[::1] inner_col_sample,
    const int64_t[::1] inner_col_position,
    const int32_t[::1] outer_indices,
    const int64_t[::1] outer_indptr,
    const double[:, ::1] upper,
    double[:, ::1] out,
    int n_threads,
):
    """``out[p, k] = scale * Σ_q W[a, outer[q]] * upper[q, k]`` for every
    entry p = (i, a) of the inner pattern, over the entries q of row i of the
    outer pattern.

    The inner pattern comes as CSC (for each input unit a: the samples that
    activate it and the CSR positions of those entries), so row a of W is
    read once for all its samples: only the k_in x k_out block of W between
    two active sets is touched (n·k²·C work instead of n·m²). Units are
    processed in parallel; each entry of `out` is written by one thread.
    """
    cdef Py_ssize_t m_in = inner_col_ptr.shape[0] - 1
    cdef Py_ssize_t n_outputs = upper.shape[1]
    cdef Py_ssize_t a, e, p, q, k
    cdef int32_t i
    cdef double w
    for a in prange(m_in, nogil=True, schedule="dynamic", chunksize=16,
                    num_threads=n_threads):
        for e in range(inner_col_ptr[a], inner_col_ptr[a + 1]):
            i = inner_col_sample[e]
            p = inner_col_position[e]
            for k in range(n_outputs):
                out[p, k] = 0
            for q in range(outer_indptr[i], outer_indptr[i + 1]):
                w = scale * W[a, outer_indices[q]]
                for k in range(n_outputs):
                    out[p, k] += w * upper[q, k]


def sparse_row_gram(
    const double[::1] data,
    const int32_t[::1] indices,
    const int64_t[::1] indptr,
    const double[::1] col_data,
    const int32_t[::1] col_rows,
    const int64_t[::1] col_ptr,
    double[:, ::1] out,
    int n_threads,
):
    """``out = A Aᵀ`` (dense) for A given as CSR and as CSC.

    Row i of the result accumulates ``A[i, a] * A[j, a]`` over the columns a
    of row i and the rows j of column a: Σ_a nnz(column a)² work, and each
    thread owns the rows of `out` it writes.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t i, p, e, j
    cdef int32_t a
    cdef double value
    for i in prange(n_rows, nogil=True, schedule="dynamic", chunksize=8,
                    num_threads=n_threads):
        for j in range(n_rows):
            out[i, j] = 0
        for p in range(indptr[i], indptr[i + 1]):
            a = indices[p]
            value = data[p]
            for e in range(col_ptr[a], col_ptr[a + 1]):
                out[i, col_rows[e]] += value * col_data[e]
