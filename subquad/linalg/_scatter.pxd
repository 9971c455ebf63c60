# Scatter of one row segment of W into every row of Z that uses it,
# Z[sample[p]] += value[p] * w. An axpy per (row, sample) pair reloads w for
# each sample and leaves the next segment's memory latency exposed; here
# each 256-byte chunk of w is loaded once into registers and applied to all
# samples, while the same chunk of the next segment is prefetched
# (bench/sparse_engine.py: the product streams W, so keeping loads of W in
# flight is what sets its speed). The prefetch goes to L2, not L1: one into
# L1 holds a line-fill buffer of the core for the whole memory latency, and
# the loads of Z's rows from L2, the bulk of the loop's traffic, queue for
# those few buffers.
from libc.stdint cimport int32_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__GNUC__) || defined(__clang__)
    #define SUBQUAD_PREFETCH(p) __builtin_prefetch((p), 0, 2)
    typedef float subquad_chunk_f __attribute__((vector_size(64)));
    typedef double subquad_chunk_d __attribute__((vector_size(64)));
    #define SUBQUAD_SCATTER_ROW(T, V)                                                \\
        const long lanes = 64 / (long) sizeof(T);                                   \\
        long i = 0;                                                                 \\
        for (; i + 4 * lanes <= n; i += 4 * lanes) {                                \\
            V w0, w1, w2, w3;                                                       \\
            memcpy(&w0, w + i, 64); memcpy(&w1, w + i + lanes, 64);                 \\
            memcpy(&w2, w + i + 2 * lanes, 64); memcpy(&w3, w + i + 3 * lanes, 64); \\
            for (long k = 0; k < 4; ++k) SUBQUAD_PREFETCH(w_next + i + k * lanes);  \\
            for (long p = 0; p < n_samples; ++p) {                                  \\
                T *z = Z + sample[p] * ldz + i;                                     \\
                const T a = value[p];                                               \\
                V z0, z1, z2, z3;                                                   \\
                memcpy(&z0, z, 64); memcpy(&z1, z + lanes, 64);                     \\
                memcpy(&z2, z + 2 * lanes, 64); memcpy(&z3, z + 3 * lanes, 64);     \\
                z0 += a * w0; z1 += a * w1; z2 += a * w2; z3 += a * w3;             \\
                memcpy(z, &z0, 64); memcpy(z + lanes, &z1, 64);                     \\
                memcpy(z + 2 * lanes, &z2, 64); memcpy(z + 3 * lanes, &z3, 64);     \\
            }                                                                       \\
        }                                                                           \\
        for (long p = 0; p < n_samples; ++p) {                                      \\
            T *z = Z + sample[p] * ldz;                                             \\
            const T a = value[p];                                                   \\
            for (long j = i; j < n; ++j) z[j] += a * w[j];                          \\
        }
    #else
    #define SUBQUAD_SCATTER_ROW(T, V)                                                \\
        for (long p = 0; p < n_samples; ++p) {                                      \\
            T *z = Z + sample[p] * ldz;                                             \\
            const T a = value[p];                                                   \\
            for (long j = 0; j < n; ++j) z[j] += a * w[j];                          \\
        }
    #endif
    static inline void subquad_scatter_row_f(
            long n, const float *restrict w, const float *restrict w_next,
            long n_samples, const int32_t *restrict sample,
            const float *restrict value, float *restrict Z, long ldz) {
        SUBQUAD_SCATTER_ROW(float, subquad_chunk_f)
    }
    static inline void subquad_scatter_row_d(
            long n, const double *restrict w, const double *restrict w_next,
            long n_samples, const int32_t *restrict sample,
            const double *restrict value, double *restrict Z, long ldz) {
        SUBQUAD_SCATTER_ROW(double, subquad_chunk_d)
    }
    """
    void subquad_scatter_row_f(long n, const float* w, const float* w_next,
                               long n_samples, const int32_t* sample,
                               const float* value, float* Z, long ldz) noexcept nogil
    void subquad_scatter_row_d(long n, const double* w, const double* w_next,
                               long n_samples, const int32_t* sample,
                               const double* value, double* Z, long ldz) noexcept nogil


from cython cimport floating


cdef inline void scatter_row(long n, const floating* w, const floating* w_next,
                             long n_samples, const int32_t* sample,
                             const floating* value, floating* Z, long ldz) noexcept nogil:
    """Z[sample[p], :n] += value[p] * w[:n] for p < n_samples, in order
    (a sample may repeat; Z must not overlap w); `w_next`, the segment used
    next (or `w` itself), is prefetched."""
    if floating is float:
        subquad_scatter_row_f(n, w, w_next, n_samples, sample, value, Z, ldz)
    else:
        subquad_scatter_row_d(n, w, w_next, n_samples, sample, value, Z, ldz)
