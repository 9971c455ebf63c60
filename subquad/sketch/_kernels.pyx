"""Compiled kernels behind ``subquad.sketch``.

Two primitives cover every sketch in the package:

* ``sparse_embed_*``: ``out[i] = Σ_j x̃_ij · (Σ_t val[j,t] e_{idx[j,t]})``, i.e. a
  sparse sketch matrix given column by column (CountSketch, OSNAP, or several
  independent ones side by side as the leaves of a tensor sketch tree).
* ``srht_gather_*``: ``out[i,k] (=|*=) scale · (H D x̃_i)[sample[k]]`` with an
  unnormalised fast Walsh–Hadamard transform ``H``. One call is an SRHT; one
  call per factor, the first assigning and the others multiplying, is a
  TensorSRHT.

Here ``x̃_i = [row_scale[i] · x_i, bias]``: the scale carries ``sqrt(gamma)``
or ``1/‖x_i‖`` and the bias the ``sqrt(coef0)`` coordinate of a polynomial
kernel, so callers never copy or augment ``X``. ``bias == 0`` means the extra
coordinate is absent; tables then need only ``n_features`` rows.

Dense matrices may be row-strided views (a block of columns of a wider
array, as the tree sketches use) as long as each row is contiguous.

Every kernel is parallel over rows, so its result does not depend on the
thread count at all (each row is computed by one thread in a fixed order).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset

ctypedef fused index_t:
    int
    long long


cdef inline void _check_rows(const floating[:, :] A, str name) except *:
    if A.shape[1] > 1 and A.strides[1] != sizeof(floating):
        raise ValueError(f"{name} must have contiguous rows")


cdef void _fwht(floating* a, Py_ssize_t n) noexcept nogil:
    """In-place unnormalised Walsh–Hadamard transform of a power-of-two array."""
    cdef Py_ssize_t h = 1, i, j
    cdef floating u, v
    while h < n:
        i = 0
        while i < n:
            for j in range(i, i + h):
                u = a[j]
                v = a[j + h]
                a[j] = u + v
                a[j + h] = u - v
            i += 2 * h
        h *= 2


def fwht(floating[:, ::1] A, int n_threads):
    """Unnormalised Walsh–Hadamard transform of each row of `A`, in place."""
    cdef Py_ssize_t n = A.shape[0], D = A.shape[1], i
    if D & (D - 1):
        raise ValueError(f"row length must be a power of two, got {D}")
    with nogil:
        for i in prange(n, num_threads=n_threads, schedule="static"):
            _fwht(&A[i, 0], D)


def sparse_embed_dense(const floating[:, :] X, const floating[::1] row_scale,
                       floating bias, const int[:, ::1] idx_t,
                       const floating[:, ::1] val_t, floating[:, :] out,
                       Py_ssize_t row_tile, Py_ssize_t feature_tile, int n_threads):
    """Dense rows, with the tables transposed (``idx_t[t, j] = idx[j, t]``).

    Loop order: tiles of `row_tile` rows and `feature_tile` features, then
    one table column ``t`` at a time. A stacked sketch (the ``q`` leaves of
    a tree) then scatters into one leaf's part of the output at a time,
    which stays in L1, and each slice of the tables is read once per row
    tile instead of once per row; row by row, the tables (``q`` times the
    size of a row) would dominate memory traffic.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], nnz = idx_t.shape[0]
    cdef Py_ssize_t width = out.shape[1], n_tiles, tile, i, i0, i1, j, j0, j1, t
    cdef floating s
    cdef const floating* x
    cdef const int* ix
    cdef const floating* vx
    cdef floating* o
    _check_rows(X, "X")
    _check_rows(out, "out")
    if row_tile < 1 or feature_tile < 1:
        raise ValueError("tile sizes must be positive")
    n_tiles = (n + row_tile - 1) // row_tile
    with nogil:
        for tile in prange(n_tiles, num_threads=n_threads, schedule="static"):
            i0 = tile * row_tile
            i1 = min(n, i0 + row_tile)
            for i in range(i0, i1):
                memset(&out[i, 0], 0, width * sizeof(floating))
            j0 = 0
            while j0 < d:
                j1 = min(d, j0 + feature_tile)
                for t in range(nnz):
                    ix = &idx_t[t, 0]
                    vx = &val_t[t, 0]
                    for i in range(i0, i1):
                        x = &X[i, 0]
                        o = &out[i, 0]
                        s = row_scale[i]
                        for j in range(j0, j1):
                            o[ix[j]] += vx[j] * (x[j] * s)
                j0 = j1
            if bias != 0:
                for i in range(i0, i1):
                    o = &out[i, 0]
                    for t in range(nnz):
                        o[idx_t[t, d]] += val_t[t, d] * bias


def sparse_embed_csr(const floating[::1] data, const index_t[::1] indices,
                     const index_t[::1] indptr, Py_ssize_t d,
                     const floating[::1] row_scale, floating bias,
                     const int[:, ::1] idx, const floating[:, ::1] val,
                     floating[:, :] out, int n_threads):
    cdef Py_ssize_t n = indptr.shape[0] - 1, nnz = idx.shape[1]
    cdef Py_ssize_t width = out.shape[1], i, p, j, t
    cdef floating xj, s
    cdef floating* o
    _check_rows(out, "out")
    with nogil:
        for i in prange(n, num_threads=n_threads, schedule="static"):
            o = &out[i, 0]
            memset(o, 0, width * sizeof(floating))
            s = row_scale[i]
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                xj = data[p] * s
                for t in range(nnz):
                    o[idx[j, t]] += val[j, t] * xj
            if bias != 0:
                for t in range(nnz):
                    o[idx[d, t]] += val[d, t] * bias


cdef inline void _emit(const floating* buf, const int[::1] sample, floating scale,
                       floating* o, bint multiply) noexcept nogil:
    cdef Py_ssize_t k
    if multiply:
        for k in range(sample.shape[0]):
            o[k] *= scale * buf[sample[k]]
    else:
        for k in range(sample.shape[0]):
            o[k] = scale * buf[sample[k]]


def srht_gather_dense(const floating[:, :] X, const floating[::1] row_scale,
                      floating bias, const floating[::1] signs,
                      const int[::1] sample, floating scale,
                      floating[:, :] out, bint multiply, int n_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], D = signs.shape[0]
    cdef Py_ssize_t i, j, start
    cdef floating s
    cdef const floating* x
    cdef floating* buf = NULL
    _check_rows(X, "X")
    _check_rows(out, "out")
    with nogil, parallel(num_threads=n_threads):
        buf = <floating*> malloc(D * sizeof(floating))
        for i in prange(n, schedule="static"):
            s = row_scale[i]
            x = &X[i, 0]
            for j in range(d):
                buf[j] = x[j] * s * signs[j]
            start = d
            if bias != 0:
                buf[d] = bias * signs[d]
                start = d + 1
            if D > start:
                memset(&buf[start], 0, (D - start) * sizeof(floating))
            _fwht(buf, D)
            _emit(buf, sample, scale, &out[i, 0], multiply)
        free(buf)


def srht_gather_csr(const floating[::1] data, const index_t[::1] indices,
                    const index_t[::1] indptr, Py_ssize_t d,
                    const floating[::1] row_scale, floating bias,
                    const floating[::1] signs, const int[::1] sample,
                    floating scale, floating[:, :] out, bint multiply,
                    int n_threads):
    cdef Py_ssize_t n = indptr.shape[0] - 1, D = signs.shape[0], i, p, j
    cdef floating s
    cdef floating* buf = NULL
    _check_rows(out, "out")
    with nogil, parallel(num_threads=n_threads):
        buf = <floating*> malloc(D * sizeof(floating))
        for i in prange(n, schedule="static"):
            memset(buf, 0, D * sizeof(floating))
            s = row_scale[i]
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                # += so that duplicate column entries sum, as scipy does.
                buf[j] += data[p] * s * signs[j]
            if bias != 0:
                buf[d] = bias * signs[d]
            _fwht(buf, D)
            _emit(buf, sample, scale, &out[i, 0], multiply)
        free(buf)
