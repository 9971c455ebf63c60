# Flushing denormal numbers to zero for the duration of a kernel, per thread.
# Arithmetic on denormals (|x| < 1.2e-38 in float32) is microcoded and about
# a hundred times slower on x86; Adam's second moment decays into that range
# where gradients are small, and a step over such weights was measured 7x
# slower (bench/mlp_scaling.py's network at width 16384, data-scaled
# initialisation). Like the usual ML frameworks on CPU, kernels that update
# optimizer state treat those values as zero.
cdef extern from *:
    """
    #if defined(__x86_64__) || defined(_M_X64) || defined(__SSE__)
    #include <xmmintrin.h>
    static inline unsigned long long subquad_flush_denormals(void) {
        unsigned int saved = _mm_getcsr();
        _mm_setcsr(saved | 0x8040u);  /* flush-to-zero | denormals-are-zero */
        return saved;
    }
    static inline void subquad_restore_denormals(unsigned long long saved) {
        _mm_setcsr((unsigned int) saved);
    }
    #elif defined(__aarch64__)
    static inline unsigned long long subquad_flush_denormals(void) {
        unsigned long long saved;
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
        __asm__ __volatile__("msr fpcr, %0" : : "r"(saved | (1ull << 24)));  /* FZ */
        return saved;
    }
    static inline void subquad_restore_denormals(unsigned long long saved) {
        __asm__ __volatile__("msr fpcr, %0" : : "r"(saved));
    }
    #else
    static inline unsigned long long subquad_flush_denormals(void) { return 0; }
    static inline void subquad_restore_denormals(unsigned long long saved) { (void) saved; }
    #endif
    """
    unsigned long long flush_denormals "subquad_flush_denormals"() noexcept nogil
    void restore_denormals "subquad_restore_denormals"(unsigned long long saved) noexcept nogil
