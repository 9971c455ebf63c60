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


cdef extern from *:
    """
    /* Walsh-Hadamard butterflies written in C so that the four quarter
       pointers can be declared restrict and each run of h pairs vectorises. */
    #define SUBQUAD_FWHT(NAME, T)                                              \
    static void NAME(T *a, long n) {                                           \
        long h = 1;                                                            \
        if (n >= 8) {                                                          \
            /* The first three levels, one 8-point block at a time. */         \
            for (long i = 0; i < n; i += 8) {                                  \
                T *x = a + i;                                                  \
                T b0 = x[0] + x[1], b1 = x[0] - x[1], b2 = x[2] + x[3];        \
                T b3 = x[2] - x[3], b4 = x[4] + x[5], b5 = x[4] - x[5];        \
                T b6 = x[6] + x[7], b7 = x[6] - x[7];                          \
                T c0 = b0 + b2, c2 = b0 - b2, c1 = b1 + b3, c3 = b1 - b3;      \
                T c4 = b4 + b6, c6 = b4 - b6, c5 = b5 + b7, c7 = b5 - b7;      \
                x[0] = c0 + c4; x[4] = c0 - c4; x[1] = c1 + c5;                \
                x[5] = c1 - c5; x[2] = c2 + c6; x[6] = c2 - c6;                \
                x[3] = c3 + c7; x[7] = c3 - c7;                                \
            }                                                                  \
            h = 8;                                                             \
        }                                                                      \
        /* Two levels per pass over the array (radix 4). */                    \
        for (; 4 * h <= n; h *= 4) {                                           \
            for (long i = 0; i < n; i += 4 * h) {                              \
                T *restrict p0 = a + i, *restrict p1 = a + i + h;              \
                T *restrict p2 = a + i + 2 * h, *restrict p3 = a + i + 3 * h;  \
                for (long j = 0; j < h; ++j) {                                 \
                    T y0 = p0[j] + p1[j], y1 = p0[j] - p1[j];                  \
                    T y2 = p2[j] + p3[j], y3 = p2[j] - p3[j];                  \
                    p0[j] = y0 + y2; p2[j] = y0 - y2;                          \
                    p1[j] = y1 + y3; p3[j] = y1 - y3;                          \
                }                                                              \
            }                                                                  \
        }                                                                      \
        for (; h < n; h *= 2) {                                                \
            for (long i = 0; i < n; i += 2 * h) {                              \
                T *restrict p0 = a + i, *restrict p1 = a + i + h;              \
                for (long j = 0; j < h; ++j) {                                 \
                    T u = p0[j], v = p1[j];                                    \
                    p0[j] = u + v; p1[j] = u - v;                              \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }
    SUBQUAD_FWHT(subquad_fwht_f, float)
    SUBQUAD_FWHT(subquad_fwht_d, double)
    """
    void subquad_fwht_f(float* a, long n) noexcept nogil
    void subquad_fwht_d(double* a, long n) noexcept nogil


cdef inline void _fwht(floating* a, Py_ssize_t n) noexcept nogil:
    """In-place unnormalised Walsh–Hadamard transform of a power-of-two array."""
    if floating is float:
        subquad_fwht_f(a, n)
    else:
        subquad_fwht_d(a, n)


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


cdef Py_ssize_t _hashed_row(const floating* data, const long long* indices,
                            long long start, long long stop, Py_ssize_t d,
                            floating s, floating bias, const int* h, Py_ssize_t h_stride,
                            const floating* v, int* bucket, floating* weight) noexcept nogil:
    """The nonzeros of ``x̃`` as (bucket, signed value) pairs of one CountSketch."""
    cdef Py_ssize_t k = 0
    cdef long long p, j
    for p in range(start, stop):
        if data[p] != 0:
            j = indices[p]
            bucket[k] = h[j * h_stride]
            weight[k] = v[j * h_stride] * (data[p] * s)
            k += 1
    if bias != 0:
        bucket[k] = h[d * h_stride]
        weight[k] = v[d * h_stride] * bias
        k += 1
    return k


def tensor_sketch_direct(
    const floating[::1] a_data, const long long[::1] a_indices,
    const long long[::1] a_indptr, Py_ssize_t d_a,
    const floating[::1] b_data, const long long[::1] b_indices,
    const long long[::1] b_indptr, Py_ssize_t d_b,
    const floating[::1] row_scale, floating bias,
    const int[::1] h_a, const floating[::1] v_a,
    const int[:, ::1] h_b, const floating[:, ::1] v_b,
    floating[:, :] out, int n_threads,
):
    """TensorSketch of ``ã_i ⊗ b̃_i ⊗ ... ⊗ b̃_i`` (``1 + h_b.shape[1]``
    factors) by circular convolution in the bucket domain instead of FFTs.

    The CountSketch of the first two factors is convolved pair by pair of
    nonzeros (``nnz(a) · nnz(b)`` products, exact), each further factor by
    one shifted axpy per nonzero (``s · nnz(b)``). For rows with few
    nonzeros this is far cheaper than ``q + 1`` FFTs of length ``s``. The
    tables hold bucket (``h``) and sign (``v``) per input coordinate, row
    ``d`` for the bias coordinate.
    """
    cdef Py_ssize_t n = a_indptr.shape[0] - 1, s = out.shape[1]
    cdef Py_ssize_t n_rest = h_b.shape[1], i, k, na, nb, x, y, t, u
    cdef floating w, sc
    cdef floating* buffers
    cdef floating* acc
    cdef floating* tmp
    cdef floating* swap
    cdef int* bucket
    cdef floating* weight
    cdef int failed = 0
    # Empty CSR arrays have no element 0 to point at.
    cdef const floating* ad = &a_data[0] if a_data.shape[0] else NULL
    cdef const long long* ai = &a_indices[0] if a_indices.shape[0] else NULL
    cdef const floating* bd = &b_data[0] if b_data.shape[0] else NULL
    cdef const long long* bi = &b_indices[0] if b_indices.shape[0] else NULL
    _check_rows(out, "out")
    if n == 0 or s == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        buffers = <floating*> malloc(2 * s * sizeof(floating))
        bucket = <int*> malloc((d_a + d_b + 2) * sizeof(int))
        weight = <floating*> malloc((d_a + d_b + 2) * sizeof(floating))
        for i in prange(n, schedule="dynamic", chunksize=16):
            if buffers == NULL or bucket == NULL or weight == NULL:
                failed += 1
                continue
            acc = buffers
            tmp = buffers + s
            sc = row_scale[i]
            memset(acc, 0, s * sizeof(floating))
            na = _hashed_row(ad, ai, a_indptr[i], a_indptr[i + 1], d_a, sc, bias,
                             &h_a[0], 1, &v_a[0], bucket, weight)
            nb = _hashed_row(bd, bi, b_indptr[i], b_indptr[i + 1], d_b, sc, bias,
                             &h_b[0, 0], n_rest, &v_b[0, 0], bucket + na, weight + na)
            for x in range(na):
                for y in range(na, na + nb):
                    t = bucket[x] + bucket[y]
                    if t >= s:
                        t = t - s
                    acc[t] += weight[x] * weight[y]
            for k in range(1, n_rest):
                nb = _hashed_row(bd, bi, b_indptr[i], b_indptr[i + 1], d_b, sc, bias,
                                 &h_b[0, k], n_rest, &v_b[0, k], bucket, weight)
                memset(tmp, 0, s * sizeof(floating))
                for y in range(nb):
                    # tmp[(t + shift) mod s] += w * acc[t], as two contiguous runs.
                    u = bucket[y]
                    w = weight[y]
                    for t in range(s - u):
                        tmp[t + u] += w * acc[t]
                    for t in range(s - u, s):
                        tmp[t + u - s] += w * acc[t]
                swap = acc
                acc = tmp
                tmp = swap
            for t in range(s):
                out[i, t] = acc[t]
        free(buffers)
        free(bucket)
        free(weight)
    if failed:
        raise MemoryError("tensor_sketch_direct: could not allocate per-thread buffers")
