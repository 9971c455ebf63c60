# Vector kernels of the tree query (see _tree.pyx): a leaf's packed blocks
# of 16 neurons against a list of queries, and one node's bounds against a
# list of queries. They are written so that no branch depends on the data:
# at ~1% active neurons, whether a block holds an active lane or a node
# prunes a query is close to a coin toss, and mispredicted branches cost
# more than the arithmetic (bench/active_index.py, dim 8).
from libc.stdint cimport int32_t, int64_t, uint64_t

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
        case 1: KERNEL(1, __VA_ARGS__); break;                                      \\
        case 2: KERNEL(2, __VA_ARGS__); break;                                      \\
        case 3: KERNEL(3, __VA_ARGS__); break;                                      \\
        case 4: KERNEL(4, __VA_ARGS__); break;                                      \\
        case 5: KERNEL(5, __VA_ARGS__); break;                                      \\
        case 6: KERNEL(6, __VA_ARGS__); break;                                      \\
        case 7: KERNEL(7, __VA_ARGS__); break;                                      \\
        case 8: KERNEL(8, __VA_ARGS__); break;                                      \\
        default: KERNEL(dim, __VA_ARGS__);                                          \\
        }

    /* ---- portable kernels: one block of 16 neurons (coordinate a of
       lane j at w[16 a + j]) against one query x, values <w_j, x> - b in
       the working dtype with two accumulators (even and odd coordinates),
       the same order of operations as the AVX-512 leaf kernels below.
       Among the lanes in `in_range`, `count` returns the number of active
       ones (value > 0); `emit` packs their ids and values to the front of
       cols and vals, writing 16 entries whatever the count, and returns
       the count. */
    #ifndef SUBQUAD_INDEX_AVX512
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

    /* ---- one leaf (n_blocks consecutive blocks) against the listed
       queries `scan` (rows of X, dim apart); lanes of the first block are
       masked by `first`, of the last by `last` (both apply to a single
       block). Blocks are taken one at a time and every query is evaluated
       against it: the loop over queries is long and its iterations are
       independent, so they overlap in the pipeline, where a loop over a
       leaf's few blocks per query ended in a mispredicted exit and a
       latency-bound chain of multiply-adds (perf, bench/active_index.py
       dim 8). `count` adds each query's active lanes to counts[q]; `emit`
       also writes their ids and values at cols[q] + counts[q] and
       vals[q] + counts[q], block after block (room for the count + 16
       needed: the portable kernels write 16 entries per block). With
       AVX-512, dim <= 8 keeps the block's coordinates in registers for all
       queries (dim is a constant there, SUBQUAD_BY_DIM), and the output is
       written as a register compress and a masked store of the leading
       lanes, which writes the active lanes only. A compress store straight
       to memory is microcoded on AMD Zen 4: a C loop of the pair took 44 ns
       there against 3 ns for this form, and the d = 8 query ran 4.6x
       slower; on Intel the two forms were within 3%. Full 64-byte stores of
       the compressed vector were slower on Intel (an A/B on
       bench/active_index.py's d = 8 data): each wrote one or two lines into
       one of the batch's ~256 output tails, more lines than L1 holds. */
    #define SUBQUAD_LEAF_MASK(k, n, first, last) \\
        (((k) == 0 ? (first) : 0xFFFFu) & ((k) == (n) - 1 ? (last) : 0xFFFFu))
    #ifdef SUBQUAD_INDEX_AVX512
    SUBQUAD_ALWAYS_INLINE void subquad_leaf_dim_f32(
            Py_ssize_t dim, int emit, const float* w, Py_ssize_t n_blocks, unsigned first,
            unsigned last, const float* X, const int32_t* scan, Py_ssize_t n_scan, float b,
            const int32_t* ids, int64_t* counts, int32_t* const* cols, float* const* vals) {
        const __m512 vb = _mm512_set1_ps(b);
        Py_ssize_t a, k, i;
        for (k = 0; k < n_blocks; k++) {
            const float* wk = w + k * dim * 16;
            const __mmask16 in_range = (__mmask16) SUBQUAD_LEAF_MASK(k, n_blocks, first, last);
            const __m512i id = emit ? _mm512_loadu_si512(ids + 16 * k) : _mm512_setzero_si512();
            __m512 held[8];
            for (a = 0; a < dim && a < 8; a++) held[a] = _mm512_loadu_ps(wk + 16 * a);
            #define SUBQUAD_W(a) (dim <= 8 ? held[a] : _mm512_loadu_ps(wk + 16 * (a)))
            for (i = 0; i < n_scan; i++) {
                const Py_ssize_t q = scan[i];
                const float* x = X + q * dim;
                __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
                for (a = 0; a + 1 < dim; a += 2) {
                    acc0 = _mm512_fmadd_ps(SUBQUAD_W(a), _mm512_set1_ps(x[a]), acc0);
                    acc1 = _mm512_fmadd_ps(SUBQUAD_W(a + 1), _mm512_set1_ps(x[a + 1]), acc1);
                }
                if (a < dim) acc0 = _mm512_fmadd_ps(SUBQUAD_W(a), _mm512_set1_ps(x[a]), acc0);
                const __m512 v = _mm512_sub_ps(_mm512_add_ps(acc0, acc1), vb);
                const __mmask16 m = _mm512_mask_cmp_ps_mask(in_range, v, _mm512_setzero_ps(), _CMP_GT_OQ);
                const int64_t c = counts[q];
                const int n_active = _mm_popcnt_u32(m);
                if (emit) {
                    const __mmask16 leading = (__mmask16) ((1u << n_active) - 1);
                    _mm512_mask_storeu_ps(vals[q] + c, leading, _mm512_maskz_compress_ps(m, v));
                    _mm512_mask_storeu_epi32(cols[q] + c, leading, _mm512_maskz_compress_epi32(m, id));
                }
                counts[q] = c + n_active;
            }
            #undef SUBQUAD_W
        }
    }
    SUBQUAD_ALWAYS_INLINE void subquad_leaf_dim_f64(
            Py_ssize_t dim, int emit, const double* w, Py_ssize_t n_blocks, unsigned first,
            unsigned last, const double* X, const int32_t* scan, Py_ssize_t n_scan, double b,
            const int32_t* ids, int64_t* counts, int32_t* const* cols, double* const* vals) {
        const __m512d vb = _mm512_set1_pd(b);
        Py_ssize_t a, k, i;
        for (k = 0; k < n_blocks; k++) {
            const double* wk = w + k * dim * 16;
            const unsigned in_range = SUBQUAD_LEAF_MASK(k, n_blocks, first, last);
            const __m512i id = emit ? _mm512_loadu_si512(ids + 16 * k) : _mm512_setzero_si512();
            __m512d held_lo[8], held_hi[8];
            for (a = 0; a < dim && a < 8; a++) {
                held_lo[a] = _mm512_loadu_pd(wk + 16 * a);
                held_hi[a] = _mm512_loadu_pd(wk + 16 * a + 8);
            }
            #define SUBQUAD_W_LO(a) (dim <= 8 ? held_lo[a] : _mm512_loadu_pd(wk + 16 * (a)))
            #define SUBQUAD_W_HI(a) (dim <= 8 ? held_hi[a] : _mm512_loadu_pd(wk + 16 * (a) + 8))
            for (i = 0; i < n_scan; i++) {
                const Py_ssize_t q = scan[i];
                const double* x = X + q * dim;
                __m512d lo0 = _mm512_setzero_pd(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
                for (a = 0; a + 1 < dim; a += 2) {
                    const __m512d x0 = _mm512_set1_pd(x[a]), x1 = _mm512_set1_pd(x[a + 1]);
                    lo0 = _mm512_fmadd_pd(SUBQUAD_W_LO(a), x0, lo0);
                    hi0 = _mm512_fmadd_pd(SUBQUAD_W_HI(a), x0, hi0);
                    lo1 = _mm512_fmadd_pd(SUBQUAD_W_LO(a + 1), x1, lo1);
                    hi1 = _mm512_fmadd_pd(SUBQUAD_W_HI(a + 1), x1, hi1);
                }
                if (a < dim) {
                    const __m512d x0 = _mm512_set1_pd(x[a]);
                    lo0 = _mm512_fmadd_pd(SUBQUAD_W_LO(a), x0, lo0);
                    hi0 = _mm512_fmadd_pd(SUBQUAD_W_HI(a), x0, hi0);
                }
                const __m512d lo = _mm512_sub_pd(_mm512_add_pd(lo0, lo1), vb);
                const __m512d hi = _mm512_sub_pd(_mm512_add_pd(hi0, hi1), vb);
                const __mmask8 m_lo = _mm512_mask_cmp_pd_mask((__mmask8) in_range, lo, _mm512_setzero_pd(), _CMP_GT_OQ);
                const __mmask8 m_hi = _mm512_mask_cmp_pd_mask((__mmask8) (in_range >> 8), hi, _mm512_setzero_pd(), _CMP_GT_OQ);
                const int n_lo = _mm_popcnt_u32(m_lo), n_hi = _mm_popcnt_u32(m_hi);
                const int64_t c = counts[q];
                if (emit) {
                    _mm512_mask_storeu_pd(vals[q] + c, (__mmask8) ((1u << n_lo) - 1),
                                          _mm512_maskz_compress_pd(m_lo, lo));
                    _mm512_mask_storeu_pd(vals[q] + c + n_lo, (__mmask8) ((1u << n_hi) - 1),
                                          _mm512_maskz_compress_pd(m_hi, hi));
                    _mm512_mask_storeu_epi32(
                        cols[q] + c, (__mmask16) ((1u << (n_lo + n_hi)) - 1),
                        _mm512_maskz_compress_epi32((__mmask16) (m_lo | ((unsigned) m_hi << 8)), id));
                }
                counts[q] = c + n_lo + n_hi;
            }
            #undef SUBQUAD_W_LO
            #undef SUBQUAD_W_HI
        }
    }
    #else
    #define SUBQUAD_LEAF_KERNEL(SUFFIX, T)                                             \\
    SUBQUAD_ALWAYS_INLINE void subquad_leaf_dim_##SUFFIX(                              \\
            Py_ssize_t dim, int emit, const T* w, Py_ssize_t n_blocks, unsigned first,  \\
            unsigned last, const T* X, const int32_t* scan, Py_ssize_t n_scan, T b,     \\
            const int32_t* ids, int64_t* counts, int32_t* const* cols, T* const* vals) { \\
        Py_ssize_t k, i, q;                                                        \\
        for (k = 0; k < n_blocks; k++) {                                           \\
            const T* wk = w + k * dim * 16;                                        \\
            unsigned in_range = SUBQUAD_LEAF_MASK(k, n_blocks, first, last);       \\
            for (i = 0; i < n_scan; i++) {                                         \\
                q = scan[i];                                                       \\
                if (emit)                                                          \\
                    counts[q] += subquad_block_emit_##SUFFIX(dim, wk, X + q * dim, b,  \\
                        in_range, ids + 16 * k, cols[q] + counts[q], vals[q] + counts[q]); \\
                else                                                               \\
                    counts[q] += subquad_block_count_##SUFFIX(dim, wk, X + q * dim, b, \\
                                                              in_range);             \\
            }                                                                      \\
        }                                                                          \\
    }
    SUBQUAD_LEAF_KERNEL(f32, float)
    SUBQUAD_LEAF_KERNEL(f64, double)
    #endif
    #define SUBQUAD_LEAF_KERNELS(SUFFIX, T)                                            \\
    static inline void subquad_leaf_count_##SUFFIX(                                    \\
            const T* w, Py_ssize_t dim, Py_ssize_t n_blocks, unsigned first, unsigned last, \\
            const T* X, const int32_t* scan, Py_ssize_t n_scan, T b, int64_t* counts) { \\
        SUBQUAD_BY_DIM(subquad_leaf_dim_##SUFFIX, dim, 0, w, n_blocks, first, last, X, \\
                       scan, n_scan, b, NULL, counts, NULL, NULL)                    \\
    }                                                                              \\
    static inline void subquad_leaf_emit_##SUFFIX(                                     \\
            const T* w, Py_ssize_t dim, Py_ssize_t n_blocks, unsigned first, unsigned last, \\
            const T* X, const int32_t* scan, Py_ssize_t n_scan, T b, const int32_t* ids, \\
            int64_t* counts, int32_t* const* cols, T* const* vals) {                   \\
        SUBQUAD_BY_DIM(subquad_leaf_dim_##SUFFIX, dim, 1, w, n_blocks, first, last, X, \\
                       scan, n_scan, b, ids, counts, cols, vals)                     \\
    }
    SUBQUAD_LEAF_KERNELS(f32, float)
    SUBQUAD_LEAF_KERNELS(f64, double)

    /* ---- sorted entries written out as columns and values. An entry is
       column << 32 | payload: the float32 value's bits, or for float64 the
       position of its value in `staged`. The output is written once and
       not read again here: with AVX-512 and the two arrays lined up (the
       output pool's start on a cache line), whole cache lines go out by
       streaming stores, without being read first (bench/active_index.py
       --dims 4 8: the dim-4 tree query took 0.037 s against 0.044 s with
       plain stores). */
    #ifdef SUBQUAD_INDEX_AVX512
    #define SUBQUAD_HIGH_HALVES _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, \
                                                 15, 13, 11, 9, 7, 5, 3, 1)
    #define SUBQUAD_LOW_HALVES _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,  \
                                                14, 12, 10, 8, 6, 4, 2, 0)
    #endif
    static inline void subquad_unpack_entries_f32(const uint64_t* src, int64_t count,
                                                  int32_t* cols, float* vals) {
        int64_t i = 0;
        uint32_t* bits = (uint32_t*) vals;
    #ifdef SUBQUAD_INDEX_AVX512
        if ((((uintptr_t) cols ^ (uintptr_t) vals) & 63) == 0) {
            for (; i < count && ((uintptr_t) (cols + i) & 63); i++) {
                cols[i] = (int32_t) (src[i] >> 32);
                bits[i] = (uint32_t) src[i];
            }
            for (; i + 16 <= count; i += 16) {
                const __m512i a = _mm512_loadu_si512(src + i), b = _mm512_loadu_si512(src + i + 8);
                _mm512_stream_si512((__m512i*) (cols + i),
                                    _mm512_permutex2var_epi32(a, SUBQUAD_HIGH_HALVES, b));
                _mm512_stream_si512((__m512i*) (bits + i),
                                    _mm512_permutex2var_epi32(a, SUBQUAD_LOW_HALVES, b));
            }
        }
    #endif
        for (; i < count; i++) {
            cols[i] = (int32_t) (src[i] >> 32);
            bits[i] = (uint32_t) src[i];
        }
    }
    static inline void subquad_unpack_entries_f64(const uint64_t* src, int64_t count,
                                                  const double* staged, int32_t* cols,
                                                  double* vals) {
        int64_t i = 0;
    #ifdef SUBQUAD_INDEX_AVX512
        /* 16 columns fill a line, their values two. */
        if ((((uintptr_t) cols * 2 ^ (uintptr_t) vals) & 63) == 0) {
            for (; i < count && ((uintptr_t) (cols + i) & 63); i++) {
                cols[i] = (int32_t) (src[i] >> 32);
                vals[i] = staged[(uint32_t) src[i]];
            }
            for (; i + 16 <= count; i += 16) {
                const __m512i a = _mm512_loadu_si512(src + i), b = _mm512_loadu_si512(src + i + 8);
                const __m512i at = _mm512_permutex2var_epi32(a, SUBQUAD_LOW_HALVES, b);
                _mm512_stream_si512((__m512i*) (cols + i),
                                    _mm512_permutex2var_epi32(a, SUBQUAD_HIGH_HALVES, b));
                _mm512_stream_pd(vals + i, _mm512_i32gather_pd(
                    _mm512_castsi512_si256(at), staged, 8));
                _mm512_stream_pd(vals + i + 8, _mm512_i32gather_pd(
                    _mm512_extracti64x4_epi64(at, 1), staged, 8));
            }
        }
    #endif
        for (; i < count; i++) {
            cols[i] = (int32_t) (src[i] >> 32);
            vals[i] = staged[(uint32_t) src[i]];
        }
    }

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
    /* ---- every leaf's float32 upper bound against a list of queries
       stored by coordinate in float32: rows 0..dim-1 the coordinates x_a,
       rows dim..2 dim-1 their magnitudes |x_a|, row 2 dim the norms
       (rounded upwards), `stride` apart. The leaf's row holds the box as
       centre and half-widths (m, h), the ball's centre c and radius R, and
       a slack scale s, so that for every neuron w of the leaf

           fl(<w, x>) - b <= min(<m, x> + <h, |x|>, <c, x> + R |x|) + s |x| - b

       holds with the rounding of this float32 sum included (see
       `float32_bounds` in _tree.pyx). Ids of the queries whose bound exceeds b_test go to
       scan_ids (written up to 16 past their count); returns their count. */
    SUBQUAD_ALWAYS_INLINE Py_ssize_t subquad_leaf_test_dim(
            Py_ssize_t dim, const float* row, float b_test, const float* xs,
            Py_ssize_t stride, Py_ssize_t n, const int32_t* ids, int32_t* scan_ids) {
        const float* m = row;
        const float* h = row + dim;
        const float* c = row + 2 * dim;
        Py_ssize_t ks = 0, i, a;
    #ifdef SUBQUAD_INDEX_AVX512
        const __m512 vr = _mm512_set1_ps(row[3 * dim]), vs = _mm512_set1_ps(row[3 * dim + 1]);
        const __m512 vb = _mm512_set1_ps(b_test);
        for (i = 0; i < n; i += 16) {
            const __mmask16 valid = n - i >= 16 ? (__mmask16) 0xFFFF
                                                : (__mmask16) ((1u << (n - i)) - 1);
            __m512 box0 = _mm512_setzero_ps(), box1 = box0, ball = box0;
            for (a = 0; a < dim; a++) {
                const __m512 xa = _mm512_loadu_ps(xs + a * stride + i);
                box0 = _mm512_fmadd_ps(_mm512_set1_ps(m[a]), xa, box0);
                box1 = _mm512_fmadd_ps(_mm512_set1_ps(h[a]),
                                       _mm512_loadu_ps(xs + (dim + a) * stride + i), box1);
                ball = _mm512_fmadd_ps(_mm512_set1_ps(c[a]), xa, ball);
            }
            const __m512 norm = _mm512_loadu_ps(xs + 2 * dim * stride + i);
            ball = _mm512_fmadd_ps(vr, norm, ball);
            const __m512 upper = _mm512_fmadd_ps(vs, norm,
                                                 _mm512_min_ps(_mm512_add_ps(box0, box1), ball));
            const __mmask16 alive = _mm512_mask_cmp_ps_mask(valid, upper, vb, _CMP_GT_OQ);
            _mm512_storeu_si512(scan_ids + ks, _mm512_maskz_compress_epi32(
                alive, _mm512_loadu_si512(ids + i)));
            ks += _mm_popcnt_u32(alive);
        }
    #else
        for (i = 0; i < n; i++) {
            float box0 = 0.0f, box1 = 0.0f, ball = 0.0f;
            for (a = 0; a < dim; a++) {
                box0 += m[a] * xs[a * stride + i];
                box1 += h[a] * xs[(dim + a) * stride + i];
                ball += c[a] * xs[a * stride + i];
            }
            const float norm = xs[2 * dim * stride + i];
            const float box = box0 + box1;
            ball += row[3 * dim] * norm;
            const float upper = (box < ball ? box : ball) + row[3 * dim + 1] * norm;
            scan_ids[ks] = ids[i];
            ks += upper > b_test;
        }
    #endif
        return ks;
    }
    #define SUBQUAD_LEAF_TEST(dim, ...) ks = subquad_leaf_test_dim(dim, __VA_ARGS__)
    static inline Py_ssize_t subquad_leaf_test_f32(
            const float* row, Py_ssize_t dim, float b_test, const float* xs, Py_ssize_t stride,
            Py_ssize_t n, const int32_t* ids, int32_t* scan_ids) {
        Py_ssize_t ks = 0;
        SUBQUAD_BY_DIM(SUBQUAD_LEAF_TEST, dim, row, b_test, xs, stride, n, ids, scan_ids)
        return ks;
    }
    """
    void leaf_count_f32 "subquad_leaf_count_f32"(
        const float* w, Py_ssize_t dim, Py_ssize_t n_blocks, unsigned first, unsigned last,
        const float* X, const int32_t* scan, Py_ssize_t n_scan, float b,
        int64_t* counts) noexcept nogil
    void leaf_count_f64 "subquad_leaf_count_f64"(
        const double* w, Py_ssize_t dim, Py_ssize_t n_blocks, unsigned first, unsigned last,
        const double* X, const int32_t* scan, Py_ssize_t n_scan, double b,
        int64_t* counts) noexcept nogil
    void leaf_emit_f32 "subquad_leaf_emit_f32"(
        const float* w, Py_ssize_t dim, Py_ssize_t n_blocks, unsigned first, unsigned last,
        const float* X, const int32_t* scan, Py_ssize_t n_scan, float b, const int32_t* ids,
        int64_t* counts, int32_t** cols, float** vals) noexcept nogil
    void leaf_emit_f64 "subquad_leaf_emit_f64"(
        const double* w, Py_ssize_t dim, Py_ssize_t n_blocks, unsigned first, unsigned last,
        const double* X, const int32_t* scan, Py_ssize_t n_scan, double b, const int32_t* ids,
        int64_t* counts, int32_t** cols, double** vals) noexcept nogil
    void unpack_entries_f32 "subquad_unpack_entries_f32"(
        const uint64_t* src, int64_t count, int32_t* cols, float* vals) noexcept nogil
    void unpack_entries_f64 "subquad_unpack_entries_f64"(
        const uint64_t* src, int64_t count, const double* staged, int32_t* cols,
        double* vals) noexcept nogil
    Py_ssize_t leaf_test_f32 "subquad_leaf_test_f32"(
        const float* row, Py_ssize_t dim, float b_test, const float* xs, Py_ssize_t stride,
        Py_ssize_t n, const int32_t* ids, int32_t* scan_ids) noexcept nogil
    Py_ssize_t node_test "subquad_node_test"(
        const double* bound, Py_ssize_t dim, double b, double slack_factor, double abs_slack,
        int leaf, const double* xs, Py_ssize_t stride, const int32_t* ids, Py_ssize_t n,
        double* child_xs, Py_ssize_t child_stride, int32_t* child_ids, int32_t* scan_ids,
        int32_t* whole_ids, Py_ssize_t* n_scan, Py_ssize_t* n_whole,
        Py_ssize_t* n_child) noexcept nogil


from cython cimport floating


cdef inline void leaf_count(const floating* w, Py_ssize_t dim, Py_ssize_t n_blocks,
                            unsigned first, unsigned last, const floating* X,
                            const int32_t* scan, Py_ssize_t n_scan, floating b,
                            int64_t* counts) noexcept nogil:
    """Add to counts[q] the active lanes (<w_j, x_q> - b > 0) of `n_blocks`
    consecutive packed blocks, for the queries q listed in `scan` (rows of
    X); the first block's lanes are masked by `first`, the last one's by
    `last`."""
    if floating is float:
        leaf_count_f32(w, dim, n_blocks, first, last, X, scan, n_scan, b, counts)
    else:
        leaf_count_f64(w, dim, n_blocks, first, last, X, scan, n_scan, b, counts)


cdef inline void leaf_emit(const floating* w, Py_ssize_t dim, Py_ssize_t n_blocks,
                           unsigned first, unsigned last, const floating* X,
                           const int32_t* scan, Py_ssize_t n_scan, floating b,
                           const int32_t* ids, int64_t* counts, int32_t** cols,
                           floating** vals) noexcept nogil:
    """As `leaf_count`, also writing each active lane's id and value
    <w_j, x_q> - b at cols[q] + counts[q], vals[q] + counts[q] (room for the
    count + 16 needed), block after block."""
    if floating is float:
        leaf_emit_f32(w, dim, n_blocks, first, last, X, scan, n_scan, b, ids, counts, cols, vals)
    else:
        leaf_emit_f64(w, dim, n_blocks, first, last, X, scan, n_scan, b, ids, counts, cols, vals)
