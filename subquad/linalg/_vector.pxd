# Inner loops written in C so the compiler may assume the arrays do not
# overlap (Cython cannot spell `restrict`) and vectorise without run-time
# alias checks.
from cython cimport floating

cdef extern from *:
    """
    static inline void subquad_axpy_f(long n, float a, const float *restrict x,
                                      float *restrict y) {
        for (long i = 0; i < n; ++i) y[i] += a * x[i];
    }
    static inline void subquad_axpy_d(long n, double a, const double *restrict x,
                                      double *restrict y) {
        for (long i = 0; i < n; ++i) y[i] += a * x[i];
    }
    """
    void subquad_axpy_f(long n, float a, const float* x, float* y) noexcept nogil
    void subquad_axpy_d(long n, double a, const double* x, double* y) noexcept nogil


cdef inline void axpy_noalias(long n, floating a, const floating* x,
                              floating* y) noexcept nogil:
    """y[:n] += a * x[:n] for non-overlapping x and y."""
    if floating is float:
        subquad_axpy_f(n, a, x, y)
    else:
        subquad_axpy_d(n, a, x, y)
