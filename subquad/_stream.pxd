# Writing finished blocks of an output matrix to memory once. A block
# written with plain stores costs a read of every destination cache line
# (read-for-ownership) before the write; non-temporal stores skip that read
# and do not evict the working set, so an output bound by memory traffic is
# written for the price of one pass.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__AVX512F__)
    #include <immintrin.h>
    #define SUBQUAD_STREAM_BYTES 64
    #define SUBQUAD_STREAM_F(p, s) _mm512_stream_ps((p), _mm512_loadu_ps(s))
    #define SUBQUAD_STREAM_D(p, s) _mm512_stream_pd((p), _mm512_loadu_pd(s))
    #elif defined(__AVX__)
    #include <immintrin.h>
    #define SUBQUAD_STREAM_BYTES 32
    #define SUBQUAD_STREAM_F(p, s) _mm256_stream_ps((p), _mm256_loadu_ps(s))
    #define SUBQUAD_STREAM_D(p, s) _mm256_stream_pd((p), _mm256_loadu_pd(s))
    #elif defined(__SSE2__)
    #include <emmintrin.h>
    #define SUBQUAD_STREAM_BYTES 16
    #define SUBQUAD_STREAM_F(p, s) _mm_stream_ps((p), _mm_loadu_ps(s))
    #define SUBQUAD_STREAM_D(p, s) _mm_stream_pd((p), _mm_loadu_pd(s))
    #endif

    /* Streaming stores need aligned destinations: the unaligned head and
       tail of each row (and all of a row not aligned to its element size)
       get plain stores. */
    #ifdef SUBQUAD_STREAM_BYTES
    #define SUBQUAD_STREAM_ROWS(T, STREAM)                                        \\
        const long w = SUBQUAD_STREAM_BYTES / (long) sizeof(T);                  \\
        for (long r = 0; r < m; ++r) {                                           \\
            const T *restrict s = src + r * lds;                                 \\
            T *restrict d = dst + r * ldd;                                       \\
            long i = 0;                                                          \\
            for (; i < n && ((uintptr_t) (d + i)) % SUBQUAD_STREAM_BYTES; ++i)   \\
                d[i] = s[i];                                                     \\
            for (; i + w <= n; i += w) STREAM(d + i, s + i);                     \\
            for (; i < n; ++i) d[i] = s[i];                                      \\
        }
    static inline void subquad_stream_fence(void) { _mm_sfence(); }
    #else
    #define SUBQUAD_STREAM_ROWS(T, STREAM)                                        \\
        for (long r = 0; r < m; ++r)                                             \\
            memcpy(dst + r * ldd, src + r * lds, n * sizeof(T));
    static inline void subquad_stream_fence(void) {}
    #endif

    #define SUBQUAD_STORE_BLOCK(T, STREAM)                                        \\
        if (beta == 0) {                                                         \\
            SUBQUAD_STREAM_ROWS(T, STREAM)                                       \\
            return;                                                              \\
        }                                                                        \\
        for (long r = 0; r < m; ++r) {                                           \\
            const T *restrict s = src + r * lds;                                 \\
            T *restrict d = dst + r * ldd;                                       \\
            for (long i = 0; i < n; ++i) d[i] = s[i] + beta * d[i];              \\
        }

    static inline void subquad_store_block_f(long m, long n, const float *restrict src,
                                             long lds, float *restrict dst, long ldd,
                                             float beta) {
        SUBQUAD_STORE_BLOCK(float, SUBQUAD_STREAM_F)
    }
    static inline void subquad_store_block_d(long m, long n, const double *restrict src,
                                             long lds, double *restrict dst, long ldd,
                                             double beta) {
        SUBQUAD_STORE_BLOCK(double, SUBQUAD_STREAM_D)
    }
    """
    void subquad_store_block_f(long m, long n, const float* src, long lds,
                               float* dst, long ldd, float beta) noexcept nogil
    void subquad_store_block_d(long m, long n, const double* src, long lds,
                               double* dst, long ldd, double beta) noexcept nogil
    void stream_fence "subquad_stream_fence"() noexcept nogil


from cython cimport floating


cdef inline void store_block(long m, long n, const floating* src, long lds,
                             floating* dst, long ldd, floating beta) noexcept nogil:
    """dst[:m, :n] = src[:m, :n] + beta * dst[:m, :n] for non-overlapping
    row-major blocks (row strides `lds`, `ldd`). When beta is 0, dst is not
    read and is written with streaming stores where the CPU has them; call
    `stream_fence` before other threads read it."""
    if floating is float:
        subquad_store_block_f(m, n, src, lds, dst, ldd, beta)
    else:
        subquad_store_block_d(m, n, src, lds, dst, ldd, beta)
