# OpenMP entry points that also exist in a serial build, so kernels can call
# them unconditionally.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SUBQUAD_OPENMP_ENABLED 1
    #else
    #define SUBQUAD_OPENMP_ENABLED 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    static inline int omp_get_num_threads(void) { return 1; }
    #endif
    """
    bint SUBQUAD_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
