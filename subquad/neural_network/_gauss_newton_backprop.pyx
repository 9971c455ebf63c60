"""Back-propagation of per-output vectors through the active units, for the
Gauss–Newton Jacobian.

For sample i, the vectors ``v_{i,k,l}`` (k = 1..C) live on the active units
of layer l; ``v_{i,k,l-1}[a] = s * Σ_b W[a, b] v_{i,k,l}[b]`` is needed only
on the active units a of layer l-1, so only the k_in x k_out block of W
between the two active sets is read (n·k²·C work instead of n·m²).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t


def backprop_active_blocks(
    const floating[:, ::1] W,
    double scale,
    const int32_t[::1] inner_indices,
    const int64_t[::1] inner_indptr,
    const int32_t[::1] outer_indices,
    const int64_t[::1] outer_indptr,
    const double[:, ::1] upper,
    double[:, ::1] out,
    int n_threads,
):
    """``out[p, k] = scale * Σ_q W[inner[p], outer[q]] * upper[q, k]`` over
    the entries p (inner) and q (outer) of the same sample (row).

    `upper` has one row per stored entry of the outer pattern and one column
    per output; `out` likewise for the inner pattern. Samples are processed
    in parallel; each writes only its own rows of `out`.
    """
    cdef Py_ssize_t n_samples = inner_indptr.shape[0] - 1
    cdef Py_ssize_t n_outputs = upper.shape[1]
    cdef Py_ssize_t i, p, q, k
    cdef int32_t a
    cdef double w
    for i in prange(n_samples, nogil=True, schedule="dynamic", num_threads=n_threads):
        for p in range(inner_indptr[i], inner_indptr[i + 1]):
            a = inner_indices[p]
            for k in range(n_outputs):
                out[p, k] = 0
            for q in range(outer_indptr[i], outer_indptr[i + 1]):
                w = scale * W[a, outer_indices[q]]
                for k in range(n_outputs):
                    out[p, k] += w * upper[q, k]
