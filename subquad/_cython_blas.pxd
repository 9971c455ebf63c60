# Row-major (C-contiguous) BLAS wrappers over scipy.linalg.cython_blas.
#
# Leading dimensions are row strides in elements. Callable without the GIL
# from inside prange; they never allocate.
from cython cimport floating

cpdef enum BLAS_Trans:
    NoTrans = 110  # ord('n')
    Trans = 116    # ord('t')

cdef floating _dot(int n, const floating* x, int incx,
                   const floating* y, int incy) noexcept nogil

cdef void _axpy(int n, floating alpha, const floating* x, int incx,
                floating* y, int incy) noexcept nogil

cdef floating _nrm2(int n, const floating* x, int incx) noexcept nogil

cdef void _scal(int n, floating alpha, floating* x, int incx) noexcept nogil

cdef void _gemv(BLAS_Trans ta, int m, int n, floating alpha,
                const floating* A, int lda, const floating* x, int incx,
                floating beta, floating* y, int incy) noexcept nogil

cdef void _gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
                floating alpha, const floating* A, int lda,
                const floating* B, int ldb,
                floating beta, floating* C, int ldc) noexcept nogil
