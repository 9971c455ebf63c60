# Vector kernels of the tree query (see _tree.pyx): packed blocks of 16
# neurons (one block, or a span of consecutive blocks) against one query,
# and one node's bounds against a list of queries. They are written so
# that no branch depends on the data: at ~1% active neurons, whether a
# block holds an active lane or a node prunes a query is close to a coin
# toss, and mispredicted branches cost more than the arithmetic
# (bench/active_index.py, dim 8).
from libc.stdint cimport int32_t

cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__AVX512F__) && defined(__AVX512VL__)
    #include <immintrin.h>
    #define SUBQUAD_INDEX_AVX512 1
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define SUBQUAD_ALWAYS_INLINE static inline __attribute__((always_inline))
    #else
    #define SUBQUAD_ALWAYS_INLINE static inline
    #endif
    /* Calls KERNEL with dim as a constant for the low dimensions the tree
       is for, so that the loop over coordinates is unrolled. */
    #define SUBQUAD_BY_DIM(KERNEL, dim, ...)                                          \\
        switch (dim) {                                                              \\
        case 1: return KERNEL(1, __VA_ARGS__);                                      \\
        case 2: return KERNEL(2, __VA_ARGS__);                                      \\
        case 3: return KERNEL(3, __VA_ARGS__);                                      \\
        case 4: return KERNEL(4, __VA_ARGS__);                                      \\
        case 5: return KERNEL(5, __VA_ARGS__);                                      \\
        case 6: return KERNEL(6, __VA_ARGS__);                                      \\
        case 7: return KERNEL(7, __VA_ARGS__);                                      \\
        case 8: return KERNEL(8, __VA_ARGS__);                                      \\
        default: return KERNEL(dim, __VA_ARGS__);                                   \\
        }

    /* ---- one block of 16 neurons (coordinate a of lane j at w[16 a + j])
       against one query x: values <w_j, x> - b, in the working dtype, with
       two accumulators to halve the chain of dependent multiply-adds.
       Among the lanes in `in_range`, `count` returns the number of active
       ones (value > 0); `emit` packs their ids and values to the front of
       cols and vals, writing 16 entries whatever the count, and returns
       the count. */
    #ifdef SUBQUAD_INDEX_AVX512
    SUBQUAD_ALWAYS_INLINE __m512 subquad_block_f32(Py_ssize_t dim, const float* w,
                                                   const float* x, float b) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        Py_ssize_t a = 0;
        for (; a + 1 < dim; a += 2) {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * a), _mm512_set1_ps(x[a]), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * a + 16), _mm512_set1_ps(x[a + 1]), acc1);
        }
        if (a < dim)
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * a), _mm512_set1_ps(x[a]), acc0);
        return _mm512_sub_ps(_mm512_add_ps(acc0, acc1), _mm512_set1_ps(b));
    }
    /* Lanes 0-7 in lo, 8-15 in hi. */
    SUBQUAD_ALWAYS_INLINE void subquad_block_f64(Py_ssize_t dim, const double* w,
                                                 const double* x, double b,
                                                 __m512d* lo, __m512d* hi) {
        __m512d lo0 = _mm512_setzero_pd(), hi0 = _mm512_setzero_pd();
        __m512d lo1 = _mm512_setzero_pd(), hi1 = _mm512_setzero_pd();
        Py_ssize_t a = 0;
        for (; a + 1 < dim; a += 2) {
            __m512d x0 = _mm512_set1_pd(x[a]), x1 = _mm512_set1_pd(x[a + 1]);
            lo0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a), x0, lo0);
            hi0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 8), x0, hi0);
            lo1 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 16), x1, lo1);
            hi1 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 24), x1, hi1);
        }
        if (a < dim) {
            __m512d x0 = _mm512_set1_pd(x[a]);
            lo0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a), x0, lo0);
            hi0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + 16 * a + 8), x0, hi0);
        }
        *lo = _mm512_sub_pd(_mm512_add_pd(lo0, lo1), _mm512_set1_pd(b));
        *hi = _mm512_sub_pd(_mm512_add_pd(hi0, hi1), _mm512_set1_pd(b));
    }
    SUBQUAD_ALWAYS_INLINE int subquad_block_count_f32(Py_ssize_t dim, const float* w,
                                                      const float* x, float b, unsigned in_range) {
        return _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(
            (__mmask16) in_range, subquad_block_f32(dim, w, x, b), _mm512_setzero_ps(), _CMP_GT_OQ));
    }
    SUBQUAD_ALWAYS_INLINE int subquad_block_count_f64(Py_ssize_t dim, const double* w,
                                                      const double* x, double b, unsigned in_range) {
        __m512d lo, hi;
        subquad_block_f64(dim, w, x, b, &lo, &hi);
        return _mm_popcnt_u32(_mm512_mask_cmp_pd_mask((__mmask8) in_range, lo, _mm512_setzero_pd(), _CMP_GT_OQ))
             + _mm_popcnt_u32(_mm512_mask_cmp_pd_mask((__mmask8) (in_range >> 8), hi, _mm512_setzero_pd(), _CMP_GT_OQ));
    }
    SUBQUAD_ALWAYS_INLINE int subquad_block_emit_f32(Py_ssize_t dim, const float* w,
                                                     const float* x, float b, unsigned in_range,
                                                     const int32_t* ids, int32_t* cols, float* vals) {
        __m512 v = subquad_block_f32(dim, w, x, b);
        __mmask16 m = _mm512_mask_cmp_ps_mask((__mmask16) in_range, v, _mm512_setzero_ps(), _CMP_GT_OQ);
        _mm512_storeu_ps(vals, _mm512_maskz_compress_ps(m, v));
        _mm512_storeu_si512(cols, _mm512_maskz_compress_epi32(m, _mm512_loadu_si512(ids)));
        return _mm_popcnt_u32(m);
    }
    SUBQUAD_ALWAYS_INLINE int subquad_block_emit_f64(Py_ssize_t dim, const double* w,
                                                     const double* x, double b, unsigned in_range,
                                                     const int32_t* ids, int32_t* cols, double* vals) {
        __m512d lo, hi;
        subquad_block_f64(dim, w, x, b, &lo, &hi);
        __mmask8 m_lo = _mm512_mask_cmp_pd_mask((__mmask8) in_range, lo, _mm512_setzero_pd(), _CMP_GT_OQ);
        __mmask8 m_hi = _mm512_mask_cmp_pd_mask((__mmask8) (in_range >> 8), hi, _mm512_setzero_pd(), _CMP_GT_OQ);
        int n_lo = _mm_popcnt_u32(m_lo);
        _mm512_storeu_pd(vals, _mm512_maskz_compress_pd(m_lo, lo));
        _mm512_storeu_pd(vals + n_lo, _mm512_maskz_compress_pd(m_hi, hi));
        _mm512_storeu_si512(cols, _mm512_maskz_compress_epi32(
            (__mmask16) (m_lo | ((unsigned) m_hi << 8)), _mm512_loadu_si512(ids)));
        return n_lo + _mm_popcnt_u32(m_hi);
    }
    #else
    /* Loops over the 16 lanes, which compilers vectorise for their target;
       emitting writes every lane and advances by the test's outcome. */
    #define SUBQUAD_BLOCK_KERNELS(SUFFIX, T)                                           \\
    SUBQUAD_ALWAYS_INLINE void subquad_block_##SUFFIX(Py_ssize_t dim, const T* w,      \\
                                                      const T* x, T b, T* values) {    \\
        T odd[16];                                                                 \\
        int j;                                                                     \\
        Py_ssize_t a = 0;                                                          \\
        for (j = 0; j < 16; j++) values[j] = odd[j] = 0;                           \\
        for (; a + 1 < dim; a += 2)                                                \\
            for (j = 0; j < 16; j++) {                                             \\
                values[j] += w[16 * a + j] * x[a];                                 \\
                odd[j] += w[16 * a + 16 + j] * x[a + 1];                           \\
            }                                                                      \\
        if (a < dim)                                                               \\
            for (j = 0; j < 16; j++) values[j] += w[16 * a + j] * x[a];            \\
        for (j = 0; j < 16; j++) values[j] = (values[j] + odd[j]) - b;             \\
    }                                                                              \\
    SUBQUAD_ALWAYS_INLINE int subquad_block_count_##SUFFIX(Py_ssize_t dim, const T* w, \\
                                                           const T* x, T b,          \\
                                                           unsigned in_range) {      \\
        T values[16];                                                              \\
        int j, count = 0;                                                          \\
        subquad_block_##SUFFIX(dim, w, x, b, values);                              \\
        for (j = 0; j < 16; j++) count += ((in_range >> j) & 1u) && values[j] > 0; \\
        return count;                                                              \\
    }                                                                              \\
    SUBQUAD_ALWAYS_INLINE int subquad_block_emit_##SUFFIX(Py_ssize_t dim, const T* w,  \\
                                                          const T* x, T b,           \\
                                                          unsigned in_range,         \\
                                                          const int32_t* ids,        \\
                                                          int32_t* cols, T* vals) {  \\
        T values[16];                                                              \\
        int j, k = 0;                                                              \\
        subquad_block_##SUFFIX(dim, w, x, b, values);                              \\
        for (j = 0; j < 16; j++) {                                                 \\
            cols[k] = ids[j];                                                      \\
            vals[k] = values[j];                                                   \\
            k += ((in_range >> j) & 1u) && values[j] > 0;                          \\
        }                                                                          \\
        return k;                                                                  \\
    }
    SUBQUAD_BLOCK_KERNELS(f32, float)
    SUBQUAD_BLOCK_KERNELS(f64, double)
    #endif

    /* ---- a span of n_blocks consecutive blocks against one query; lanes
       of the first block are masked by `first`, of the last by `last` (both
       apply to a single block); `emit` writes the active lanes block after
       block (room for their count + 16 needed). For dim <= 8 the kernel is
       instantiated with dim a constant and x copied to a local array no
       store can alias, so the coordinates' broadcasts stay in registers
       for the whole span. */
    #define SUBQUAD_SPAN_MASK(k, n, first, last) \\
        (((k) == 0 ? (first) : 0xFFFFu) & ((k) == (n) - 1 ? (last) : 0xFFFFu))
    #define SUBQUAD_SPAN_KERNELS(SUFFIX, T)                                            \\
    SUBQUAD_ALWAYS_INLINE Py_ssize_t subquad_span_dim_##SUFFIX(                        \\
            Py_ssize_t dim, int emit, const T* w, Py_ssize_t n_blocks, const T* x,     \\
            T b, unsigned first, unsigned last, const int32_t* ids, int32_t* cols,     \\
            T* vals) {                                                                 \\
        T local[8];                                                                \\
        const T* xs = x;                                                           \\
        Py_ssize_t a, k, count = 0;                                                \\
        if (dim <= 8) {                                                            \\
            for (a = 0; a < dim; a++) local[a] = x[a];                             \\
            xs = local;                                                            \\
        }                                                                          \\
        for (k = 0; k < n_blocks; k++) {                                           \\
            unsigned in_range = SUBQUAD_SPAN_MASK(k, n_blocks, first, last);       \\
            if (emit)                                                              \\
                count += subquad_block_emit_##SUFFIX(dim, w + k * dim * 16, xs, b,   \\
                    in_range, ids + 16 * k, cols + count, vals + count);             \\
            else                                                                   \\
                count += subquad_block_count_##SUFFIX(dim, w + k * dim * 16, xs, b,  \\
                                                      in_range);                     \\
        }                                                                          \\
        return count;                                                              \\
    }                                                                              \\
    static inline Py_ssize_t subquad_span_count_##SUFFIX(                              \\
            const T* w, Py_ssize_t dim, Py_ssize_t n_blocks, const T* x, T b,          \\
            unsigned first, unsigned last) {                                           \\
        SUBQUAD_BY_DIM(subquad_span_dim_##SUFFIX, dim, 0, w, n_blocks, x, b, first, last, \\
                       NULL, NULL, NULL)                                             \\
    }                                                                              \\
    static inline Py_ssize_t subquad_span_emit_##SUFFIX(                               \\
            const T* w, Py_ssize_t dim, Py_ssize_t n_blocks, const T* x, T b,          \\
            unsigned first, unsigned last, const int32_t* ids, int32_t* cols, T* vals) { \\
        SUBQUAD_BY_DIM(subquad_span_dim_##SUFFIX, dim, 1, w, n_blocks, x, b, first, last, \\
                       ids, cols, vals)                                              \\
    }
    SUBQUAD_SPAN_KERNELS(f32, float)
    SUBQUAD_SPAN_KERNELS(f64, double)

    /* ---- one node against a list of queries, stored by coordinate: row a
       (a < dim) holds coordinate a of every query, in float64, row dim
       their norms, `stride` apart; `ids` names them. Bounds row of the
       node: centre c, box lo, box hi (each dim long), radius R, |c|, and
       a bound on the box's norm. For each query the upper and lower
       bounds of <w, x> over the node are

           min(<c, x> + R |x|, sum_a max(lo_a x_a, hi_a x_a)),
           max(<c, x> - R |x|, sum_a min(lo_a x_a, hi_a x_a)),

       widened by slack_factor * (norm bound) * |x| + abs_slack. A query is
       pruned if its upper bound is <= b, reported whole if its lower bound
       is > b; else it is scanned at a leaf and descends at an inner node.
       Ids to scan go to scan_ids, those reported whole to whole_ids, and
       those descending, with their coordinates and norm, to the child
       list (stride child_stride >= n rounded up to 8). The counts are
       returned through n_scan, n_whole, n_child; the return value is the
       number pruned. Outputs may be written up to 8 entries past their
       count. */
    static inline Py_ssize_t subquad_node_test(
            const double* bound, Py_ssize_t dim, double b, double slack_factor,
            double abs_slack, int leaf, const double* xs, Py_ssize_t stride,
            const int32_t* ids, Py_ssize_t n, double* child_xs, Py_ssize_t child_stride,
            int32_t* child_ids, int32_t* scan_ids, int32_t* whole_ids,
            Py_ssize_t* n_scan, Py_ssize_t* n_whole, Py_ssize_t* n_child) {
        const double* c = bound;
        const double* lo = bound + dim;
        const double* hi = bound + 2 * dim;
        const double radius = bound[3 * dim];
        const double norm_bound = bound[3 * dim + 1] + radius > bound[3 * dim + 2]
                                  ? bound[3 * dim + 1] + radius : bound[3 * dim + 2];
        const double slack_scale = slack_factor * norm_bound;
        Py_ssize_t pruned = 0, ks = 0, kw = 0, kc = 0, i, a;
    #ifdef SUBQUAD_INDEX_AVX512
        /* Eight queries per register. */
        const __m512d vb = _mm512_set1_pd(b), vr = _mm512_set1_pd(radius);
        const __m512d vscale = _mm512_set1_pd(slack_scale), vabs = _mm512_set1_pd(abs_slack);
        for (i = 0; i < n; i += 8) {
            __mmask8 valid = n - i >= 8 ? (__mmask8) 0xFF : (__mmask8) ((1u << (n - i)) - 1);
            __m512d cx = _mm512_setzero_pd(), up = cx, low = cx;
            for (a = 0; a < dim; a++) {
                __m512d xa = _mm512_loadu_pd(xs + a * stride + i);
                __m512d l = _mm512_mul_pd(_mm512_set1_pd(lo[a]), xa);
                __m512d h = _mm512_mul_pd(_mm512_set1_pd(hi[a]), xa);
                cx = _mm512_fmadd_pd(_mm512_set1_pd(c[a]), xa, cx);
                up = _mm512_add_pd(up, _mm512_max_pd(l, h));
                low = _mm512_add_pd(low, _mm512_min_pd(l, h));
            }
            __m512d norm = _mm512_loadu_pd(xs + dim * stride + i);
            __m512d spread = _mm512_mul_pd(vr, norm);
            __m512d slack = _mm512_fmadd_pd(vscale, norm, vabs);
            __m512d upper = _mm512_add_pd(_mm512_min_pd(_mm512_add_pd(cx, spread), up), slack);
            __m512d lower = _mm512_sub_pd(_mm512_max_pd(_mm512_sub_pd(cx, spread), low), slack);
            __mmask8 prune = _mm512_mask_cmp_pd_mask(valid, upper, vb, _CMP_LE_OQ);
            __mmask8 alive = valid & (__mmask8) ~prune;
            __mmask8 whole = _mm512_mask_cmp_pd_mask(alive, lower, vb, _CMP_GT_OQ);
            __mmask8 rest = alive & (__mmask8) ~whole;
            __mmask8 scan = leaf ? rest : 0, descend = leaf ? 0 : rest;
            __m256i id = _mm256_loadu_si256((const __m256i*) (ids + i));
            _mm256_storeu_si256((__m256i*) (scan_ids + ks), _mm256_maskz_compress_epi32(scan, id));
            _mm256_storeu_si256((__m256i*) (whole_ids + kw), _mm256_maskz_compress_epi32(whole, id));
            if (descend) {
                for (a = 0; a <= dim; a++)
                    _mm512_storeu_pd(child_xs + a * child_stride + kc, _mm512_maskz_compress_pd(
                        descend, _mm512_loadu_pd(xs + a * stride + i)));
                _mm256_storeu_si256((__m256i*) (child_ids + kc), _mm256_maskz_compress_epi32(descend, id));
            }
            pruned += _mm_popcnt_u32(prune);
            ks += _mm_popcnt_u32(scan);
            kw += _mm_popcnt_u32(whole);
            kc += _mm_popcnt_u32(descend);
        }
    #else
        for (i = 0; i < n; i++) {
            double cx = 0.0, up = 0.0, low = 0.0, l, h;
            for (a = 0; a < dim; a++) {
                const double xa = xs[a * stride + i];
                l = lo[a] * xa;
                h = hi[a] * xa;
                cx += c[a] * xa;
                up += l > h ? l : h;
                low += l < h ? l : h;
            }
            const double norm = xs[dim * stride + i];
            const double slack = slack_scale * norm + abs_slack;
            const double ball_up = cx + radius * norm, ball_low = cx - radius * norm;
            const double upper = (ball_up < up ? ball_up : up) + slack;
            const double lower = (ball_low > low ? ball_low : low) - slack;
            if (upper <= b) {
                pruned++;
            } else if (lower > b) {
                whole_ids[kw++] = ids[i];
            } else if (leaf) {
                scan_ids[ks++] = ids[i];
            } else {
                for (a = 0; a <= dim; a++) child_xs[a * child_stride + kc] = xs[a * stride + i];
                child_ids[kc++] = ids[i];
            }
        }
    #endif
        *n_scan = ks;
        *n_whole = kw;
        *n_child = kc;
        return pruned;
    }
    """
    Py_ssize_t span_count_f32 "subquad_span_count_f32"(
        const float* w, Py_ssize_t dim, Py_ssize_t n_blocks, const float* x, float b,
        unsigned first, unsigned last) noexcept nogil
    Py_ssize_t span_count_f64 "subquad_span_count_f64"(
        const double* w, Py_ssize_t dim, Py_ssize_t n_blocks, const double* x, double b,
        unsigned first, unsigned last) noexcept nogil
    Py_ssize_t span_emit_f32 "subquad_span_emit_f32"(
        const float* w, Py_ssize_t dim, Py_ssize_t n_blocks, const float* x, float b,
        unsigned first, unsigned last, const int32_t* ids, int32_t* cols,
        float* vals) noexcept nogil
    Py_ssize_t span_emit_f64 "subquad_span_emit_f64"(
        const double* w, Py_ssize_t dim, Py_ssize_t n_blocks, const double* x, double b,
        unsigned first, unsigned last, const int32_t* ids, int32_t* cols,
        double* vals) noexcept nogil
    Py_ssize_t node_test "subquad_node_test"(
        const double* bound, Py_ssize_t dim, double b, double slack_factor, double abs_slack,
        int leaf, const double* xs, Py_ssize_t stride, const int32_t* ids, Py_ssize_t n,
        double* child_xs, Py_ssize_t child_stride, int32_t* child_ids, int32_t* scan_ids,
        int32_t* whole_ids, Py_ssize_t* n_scan, Py_ssize_t* n_whole,
        Py_ssize_t* n_child) noexcept nogil


from cython cimport floating


cdef inline Py_ssize_t span_count(const floating* w, Py_ssize_t dim, Py_ssize_t n_blocks,
                                  const floating* x, floating b, unsigned first,
                                  unsigned last) noexcept nogil:
    """Active lanes (<w_j, x> - b > 0) of `n_blocks` consecutive packed
    blocks, the first one's lanes masked by `first`, the last one's by
    `last`."""
    if floating is float:
        return span_count_f32(w, dim, n_blocks, x, b, first, last)
    else:
        return span_count_f64(w, dim, n_blocks, x, b, first, last)


cdef inline Py_ssize_t span_emit(const floating* w, Py_ssize_t dim, Py_ssize_t n_blocks,
                                 const floating* x, floating b, unsigned first, unsigned last,
                                 const int32_t* ids, int32_t* cols, floating* vals) noexcept nogil:
    """Write the active lanes' ids and values <w_j, x> - b, block after
    block, to `cols` and `vals` (room for their count + 16 needed) and
    return their count."""
    if floating is float:
        return span_emit_f32(w, dim, n_blocks, x, b, first, last, ids, cols, vals)
    else:
        return span_emit_f64(w, dim, n_blocks, x, b, first, last, ids, cols, vals)
