# Register-blocked micro-kernel of the tiled GEMM: one MR x NR block of
# alpha * a @ b from panels packed k-major (a: MR values per k, b: NR values
# per k, both zero-padded to the full block). OpenBLAS reaches only about
# half of its sgemm peak at a shared dimension of ~50 (it zeroes C in a
# separate pass when beta is 0, and reloads its C blocks for every short
# k loop); a kernel that keeps the whole block in registers over the whole
# shared dimension writes each output once.
cdef extern from *:
    """
    #if defined(__AVX512F__) && defined(__FMA__)
    #include <immintrin.h>
    #define SUBQUAD_VECTOR_KERNEL 1
    #define SUBQUAD_MR 12
    #define SUBQUAD_NR_F 32
    #define SUBQUAD_NR_D 16
    #define SUBQUAD_VF __m512
    #define SUBQUAD_VD __m512d
    #define SUBQUAD_OPS_F _mm512_setzero_ps, _mm512_load_ps, _mm512_set1_ps, \\
                          _mm512_fmadd_ps, _mm512_mul_ps, _mm512_store_ps, _mm512_stream_ps
    #define SUBQUAD_OPS_D _mm512_setzero_pd, _mm512_load_pd, _mm512_set1_pd, \\
                          _mm512_fmadd_pd, _mm512_mul_pd, _mm512_store_pd, _mm512_stream_pd
    #elif defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    #define SUBQUAD_VECTOR_KERNEL 1
    #define SUBQUAD_MR 6
    #define SUBQUAD_NR_F 16
    #define SUBQUAD_NR_D 8
    #define SUBQUAD_VF __m256
    #define SUBQUAD_VD __m256d
    #define SUBQUAD_OPS_F _mm256_setzero_ps, _mm256_load_ps, _mm256_set1_ps, \\
                          _mm256_fmadd_ps, _mm256_mul_ps, _mm256_store_ps, _mm256_stream_ps
    #define SUBQUAD_OPS_D _mm256_setzero_pd, _mm256_load_pd, _mm256_set1_pd, \\
                          _mm256_fmadd_pd, _mm256_mul_pd, _mm256_store_pd, _mm256_stream_pd
    #else
    /* No vector kernel: tiled_gemm hands its tiles to BLAS instead, which
       picks its kernel for the CPU at run time (a plain C kernel in a
       SUBQUAD_PORTABLE=1 build measured 4.5x slower than NumPy), so the
       functions below are empty and never called. */
    #define SUBQUAD_VECTOR_KERNEL 0
    #define SUBQUAD_MR 1
    #define SUBQUAD_NR_F 1
    #define SUBQUAD_NR_D 1
    #define SUBQUAD_KERNEL_F
    #define SUBQUAD_KERNEL_D
    #endif

    #if SUBQUAD_VECTOR_KERNEL
    /* Unrolled over the rows, so that the accumulators are registers: as
       arrays GCC zeroed them in memory and copied them in and out. */
    #define SUBQUAD_UNROLL _Pragma("GCC unroll 16")
    /* Two vectors per row: 2 * MR accumulators, two B vectors and one
       broadcast fill the register file (32 zmm, 16 ymm). */
    #define SUBQUAD_BLOCK(T, V, NR, ZERO, LOAD, SET1, FMA, MUL, STORE, STREAM)    \\
        const long half = NR / 2;                                                \\
        V c0[SUBQUAD_MR], c1[SUBQUAD_MR];                                        \\
        SUBQUAD_UNROLL                                                           \\
        for (int i = 0; i < SUBQUAD_MR; ++i) c0[i] = c1[i] = ZERO();             \\
        for (long p = 0; p < k; ++p, a += SUBQUAD_MR, b += NR) {                 \\
            V b0 = LOAD(b), b1 = LOAD(b + half);                                 \\
            SUBQUAD_UNROLL                                                       \\
            for (int i = 0; i < SUBQUAD_MR; ++i) {                               \\
                V ai = SET1(a[i]);                                               \\
                c0[i] = FMA(ai, b0, c0[i]);                                      \\
                c1[i] = FMA(ai, b1, c1[i]);                                      \\
            }                                                                    \\
        }                                                                        \\
        V scale = SET1(alpha);                                                   \\
        if (dst != NULL) {                                                       \\
            SUBQUAD_UNROLL                                                       \\
            for (int i = 0; i < SUBQUAD_MR; ++i) {                               \\
                STREAM(dst + i * ldd, MUL(scale, c0[i]));                        \\
                STREAM(dst + i * ldd + half, MUL(scale, c1[i]));                 \\
            }                                                                    \\
        } else {                                                                 \\
            SUBQUAD_UNROLL                                                       \\
            for (int i = 0; i < SUBQUAD_MR; ++i) {                               \\
                STORE(out + i * NR, MUL(scale, c0[i]));                          \\
                STORE(out + i * NR + half, MUL(scale, c1[i]));                   \\
            }                                                                    \\
        }
    #define SUBQUAD_EXPAND(args) SUBQUAD_BLOCK args
    #define SUBQUAD_KERNEL_F SUBQUAD_EXPAND((float, SUBQUAD_VF, SUBQUAD_NR_F, SUBQUAD_OPS_F))
    #define SUBQUAD_KERNEL_D SUBQUAD_EXPAND((double, SUBQUAD_VD, SUBQUAD_NR_D, SUBQUAD_OPS_D))
    #endif

    static inline void subquad_block_f(long k, const float *restrict a,
                                       const float *restrict b, float alpha,
                                       float *restrict out, float *restrict dst, long ldd) {
        SUBQUAD_KERNEL_F
    }
    static inline void subquad_block_d(long k, const double *restrict a,
                                       const double *restrict b, double alpha,
                                       double *restrict out, double *restrict dst,
                                       long ldd) {
        SUBQUAD_KERNEL_D
    }
    """
    enum:
        VECTOR_KERNEL "SUBQUAD_VECTOR_KERNEL"
        MR "SUBQUAD_MR"
        NR_F "SUBQUAD_NR_F"
        NR_D "SUBQUAD_NR_D"
    void subquad_block_f(long k, const float* a, const float* b, float alpha,
                         float* out, float* dst, long ldd) noexcept nogil
    void subquad_block_d(long k, const double* a, const double* b, double alpha,
                         double* out, double* dst, long ldd) noexcept nogil


from cython cimport floating


cdef inline void micro_block(long k, const floating* a, const floating* b, floating alpha,
                             floating* out, floating* dst, long ldd) noexcept nogil:
    """alpha * a.T @ b for panels a (k x MR) and b (k x NR, 64-byte aligned)
    packed k-major: into out[:MR, :NR] (row-major, 64-byte aligned) when
    `dst` is NULL, else straight to the MR x NR block at `dst` (row stride
    `ldd`, rows 64-byte aligned) with streaming stores, to be fenced by the
    caller."""
    if floating is float:
        subquad_block_f(k, a, b, alpha, out, dst, ldd)
    else:
        subquad_block_d(k, a, b, alpha, out, dst, ldd)
