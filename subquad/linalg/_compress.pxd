# The positive entries of a row ``z + shift``, with their columns, appended
# to a staging buffer.
#
# NaN entries pass too (the test is "not <= 0"), as np.maximum(z + shift, 0)
# keeps them: W is not checked for non-finite values (that would read all
# of it, as much as the product does), so a NaN must show in the output
# rather than vanish.
#
# No data-dependent branch per entry: between a few and half of the entries
# pass, where a branch mispredicts so often that it cost more than the
# product itself (threshold_matmul at m = 1024 with a third of the outputs
# active spent most of its time here).
from cython cimport floating
from libc.stdint cimport int32_t, int64_t

cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__AVX512F__) && defined(__AVX512VL__)
    #include <immintrin.h>
    /* 16 (8) entries per step. A full step stores whole vectors at the
       write position (lanes past the passing ones are overwritten by the
       next step), which stays within the n slots the caller reserved; the
       tail stores only its passing lanes, with a masked store of the
       compressed vector (see the leaf kernels of index/_query_kernels.pxd
       for why not a compress store to memory). */
    static inline long subquad_compress_positive_f32(
            long n, const float *restrict z, const float *restrict shift, int32_t first_col,
            int32_t *restrict cols, float *restrict vals) {
        const __m512i step = _mm512_set1_epi32(16);
        __m512i col = _mm512_add_epi32(_mm512_set1_epi32(first_col),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        long c = 0, k = 0;
        for (; c + 16 <= n; c += 16) {
            __m512 v = _mm512_add_ps(_mm512_loadu_ps(z + c), _mm512_loadu_ps(shift + c));
            __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ);
            _mm512_storeu_ps(vals + k, _mm512_maskz_compress_ps(m, v));
            _mm512_storeu_si512(cols + k, _mm512_maskz_compress_epi32(m, col));
            k += _mm_popcnt_u32(m);
            col = _mm512_add_epi32(col, step);
        }
        if (c < n) {
            __mmask16 in_range = (__mmask16) ((1u << (n - c)) - 1);
            __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(in_range, z + c),
                                     _mm512_maskz_loadu_ps(in_range, shift + c));
            __mmask16 m = _mm512_mask_cmp_ps_mask(in_range, v, _mm512_setzero_ps(), _CMP_NLE_UQ);
            const int n_pass = _mm_popcnt_u32(m);
            const __mmask16 leading = (__mmask16) ((1u << n_pass) - 1);
            _mm512_mask_storeu_ps(vals + k, leading, _mm512_maskz_compress_ps(m, v));
            _mm512_mask_storeu_epi32(cols + k, leading, _mm512_maskz_compress_epi32(m, col));
            k += n_pass;
        }
        return k;
    }
    static inline long subquad_compress_positive_f64(
            long n, const double *restrict z, const double *restrict shift, int32_t first_col,
            int32_t *restrict cols, double *restrict vals) {
        const __m256i step = _mm256_set1_epi32(8);
        __m256i col = _mm256_add_epi32(_mm256_set1_epi32(first_col),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        long c = 0, k = 0;
        for (; c + 8 <= n; c += 8) {
            __m512d v = _mm512_add_pd(_mm512_loadu_pd(z + c), _mm512_loadu_pd(shift + c));
            __mmask8 m = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_NLE_UQ);
            _mm512_storeu_pd(vals + k, _mm512_maskz_compress_pd(m, v));
            _mm256_storeu_si256((__m256i*) (cols + k), _mm256_maskz_compress_epi32(m, col));
            k += _mm_popcnt_u32(m);
            col = _mm256_add_epi32(col, step);
        }
        if (c < n) {
            __mmask8 in_range = (__mmask8) ((1u << (n - c)) - 1);
            __m512d v = _mm512_add_pd(_mm512_maskz_loadu_pd(in_range, z + c),
                                      _mm512_maskz_loadu_pd(in_range, shift + c));
            __mmask8 m = _mm512_mask_cmp_pd_mask(in_range, v, _mm512_setzero_pd(), _CMP_NLE_UQ);
            const int n_pass = _mm_popcnt_u32(m);
            const __mmask8 leading = (__mmask8) ((1u << n_pass) - 1);
            _mm512_mask_storeu_pd(vals + k, leading, _mm512_maskz_compress_pd(m, v));
            _mm256_mask_storeu_epi32(cols + k, leading, _mm256_maskz_compress_epi32(m, col));
            k += n_pass;
        }
        return k;
    }
    #else
    /* Every entry is written and the write position advances by the test's
       outcome; it never passes the entry being read, so the writes stay
       within the n slots the caller reserved. */
    #define SUBQUAD_COMPRESS_POSITIVE(SUFFIX, T)                                          \\
    static inline long subquad_compress_positive_##SUFFIX(                                \\
            long n, const T *restrict z, const T *restrict shift, int32_t first_col,      \\
            int32_t *restrict cols, T *restrict vals) {                                   \\
        long k = 0;                                                                       \\
        for (long c = 0; c < n; ++c) {                                                    \\
            T v = z[c] + shift[c];                                                        \\
            vals[k] = v;                                                                  \\
            cols[k] = first_col + (int32_t) c;                                            \\
            k += !(v <= 0);                                                               \\
        }                                                                                 \\
        return k;                                                                         \\
    }
    SUBQUAD_COMPRESS_POSITIVE(f32, float)
    SUBQUAD_COMPRESS_POSITIVE(f64, double)
    #endif
    """
    long subquad_compress_positive_f32(long n, const float* z, const float* shift,
                                       int32_t first_col, int32_t* cols,
                                       float* vals) noexcept nogil
    long subquad_compress_positive_f64(long n, const double* z, const double* shift,
                                       int32_t first_col, int32_t* cols,
                                       double* vals) noexcept nogil


cdef inline int64_t compress_positive(
    int64_t n, const floating* z, const floating* shift, int32_t first_col,
    int32_t* cols, floating* vals,
) noexcept nogil:
    """Append the entries of ``z[:n] + shift[:n]`` that are > 0 to `vals`
    and their columns ``first_col + c`` to `cols`; return their number.
    `cols` and `vals` need room for `n` entries."""
    if floating is float:
        return subquad_compress_positive_f32(n, z, shift, first_col, cols, vals)
    else:
        return subquad_compress_positive_f64(n, z, shift, first_col, cols, vals)
