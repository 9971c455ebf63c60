"""Row-major BLAS level 1-3 for float and double, callable without the GIL.

BLAS is column-major: a row-major matrix is its column-major transpose, so
``C = op(A) op(B)`` is computed as ``Cᵀ = op(B)ᵀ op(A)ᵀ`` with the operands
swapped. The ``def`` functions at the bottom expose the kernels to Python for
testing and benchmarking.
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sdot, ddot, saxpy, daxpy, snrm2, dnrm2
from scipy.linalg.cython_blas cimport sscal, dscal, sgemv, dgemv, sgemm, dgemm


cdef floating _dot(int n, const floating* x, int incx,
                   const floating* y, int incy) noexcept nogil:
    if floating is float:
        return sdot(&n, <float*> x, &incx, <float*> y, &incy)
    else:
        return ddot(&n, <double*> x, &incx, <double*> y, &incy)


cdef void _axpy(int n, floating alpha, const floating* x, int incx,
                floating* y, int incy) noexcept nogil:
    if floating is float:
        saxpy(&n, &alpha, <float*> x, &incx, y, &incy)
    else:
        daxpy(&n, &alpha, <double*> x, &incx, y, &incy)


cdef floating _nrm2(int n, const floating* x, int incx) noexcept nogil:
    if floating is float:
        return snrm2(&n, <float*> x, &incx)
    else:
        return dnrm2(&n, <double*> x, &incx)


cdef void _scal(int n, floating alpha, floating* x, int incx) noexcept nogil:
    if floating is float:
        sscal(&n, &alpha, x, &incx)
    else:
        dscal(&n, &alpha, x, &incx)


cdef void _gemv(BLAS_Trans ta, int m, int n, floating alpha,
                const floating* A, int lda, const floating* x, int incx,
                floating beta, floating* y, int incy) noexcept nogil:
    # Row-major A (m x n) is column-major Aᵀ (n x m): flip the transpose flag.
    cdef char trans = b't' if ta == NoTrans else b'n'
    cdef int inner = n if ta == NoTrans else m
    cdef int outer = m if ta == NoTrans else n
    cdef int i
    if inner == 0:
        # BLAS returns early on an empty dimension without applying beta.
        for i in range(outer):
            y[i * incy] = 0 if beta == 0 else beta * y[i * incy]
        return
    if lda < 1:
        lda = 1
    if floating is float:
        sgemv(&trans, &n, &m, &alpha, <float*> A, &lda, <float*> x, &incx,
              &beta, y, &incy)
    else:
        dgemv(&trans, &n, &m, &alpha, <double*> A, &lda, <double*> x, &incx,
              &beta, y, &incy)


cdef void _gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
                floating alpha, const floating* A, int lda,
                const floating* B, int ldb,
                floating beta, floating* C, int ldc) noexcept nogil:
    cdef char transa = ta
    cdef char transb = tb
    # BLAS rejects leading dimensions below 1 even when a dimension is empty.
    if lda < 1:
        lda = 1
    if ldb < 1:
        ldb = 1
    if ldc < 1:
        ldc = 1
    if floating is float:
        sgemm(&transb, &transa, &n, &m, &k, &alpha, <float*> B, &ldb,
              <float*> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&transb, &transa, &n, &m, &k, &alpha, <double*> B, &ldb,
              <double*> A, &lda, &beta, C, &ldc)


# Python-level entry points (tests, benchmarks). Shapes are checked here so
# that a mismatch is a ValueError, never an out-of-bounds BLAS call.

cdef inline const floating* _cptr2(const floating[:, ::1] a) noexcept:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline const floating* _cptr1(const floating[::1] a) noexcept:
    return &a[0] if a.shape[0] > 0 else NULL


def dot(const floating[::1] x, const floating[::1] y):
    """Return ``x @ y`` for 1-D contiguous vectors of one dtype."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    return _dot(<int> x.shape[0], _cptr1(x), 1, _cptr1(y), 1)


def axpy(double alpha, const floating[::1] x, floating[::1] y):
    """In place ``y += alpha * x``."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    _axpy(<int> x.shape[0], <floating> alpha, _cptr1(x), 1, <floating*> _cptr1(y), 1)


def nrm2(const floating[::1] x):
    """Return the Euclidean norm of ``x``."""
    return _nrm2(<int> x.shape[0], _cptr1(x), 1)


def scal(double alpha, floating[::1] x):
    """In place ``x *= alpha``."""
    _scal(<int> x.shape[0], <floating> alpha, <floating*> _cptr1(x), 1)


def gemv(bint trans, double alpha, const floating[:, ::1] A,
         const floating[::1] x, double beta, floating[::1] y):
    """In place ``y = alpha * op(A) @ x + beta * y``, op(A) = A.T if `trans`."""
    cdef int rows = A.shape[0], cols = A.shape[1]
    cdef int n_in = rows if trans else cols
    cdef int n_out = cols if trans else rows
    if x.shape[0] != n_in or y.shape[0] != n_out:
        raise ValueError(
            f"op(A) has shape ({n_out}, {n_in}); got x of length {x.shape[0]} "
            f"and y of length {y.shape[0]}")
    _gemv(Trans if trans else NoTrans, rows, cols, <floating> alpha, _cptr2(A), cols,
          _cptr1(x), 1, <floating> beta, <floating*> _cptr1(y), 1)


def gemm(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] A,
         const floating[:, ::1] B, double beta, floating[:, ::1] C):
    """In place ``C = alpha * op(A) @ op(B) + beta * C`` for C-contiguous arrays."""
    cdef int m = A.shape[1] if trans_a else A.shape[0]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int kb = B.shape[1] if trans_b else B.shape[0]
    cdef int n = B.shape[0] if trans_b else B.shape[1]
    if k != kb or C.shape[0] != m or C.shape[1] != n:
        raise ValueError(
            f"op(A) has shape ({m}, {k}), op(B) ({kb}, {n}); C must be "
            f"({m}, {n}), got ({C.shape[0]}, {C.shape[1]})")
    _gemm(Trans if trans_a else NoTrans, Trans if trans_b else NoTrans,
          m, n, k, <floating> alpha, _cptr2(A), <int> A.shape[1], _cptr2(B), <int> B.shape[1],
          <floating> beta, <floating*> _cptr2(C), <int> C.shape[1])
