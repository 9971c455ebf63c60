# Per-thread, growable buffers of output entries, filled inside a parallel
# region and copied into CSR arrays afterwards (the fused threshold product
# and the active-neuron tree both emit their output this way).
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, realloc


cdef struct Staging:
    int32_t* rows  # NULL for owners that stage one output row at a time
    int32_t* cols
    void* vals
    int64_t size
    int64_t capacity


cdef inline int reserve(Staging* s, int64_t extra, size_t itemsize,
                        bint with_rows) noexcept nogil:
    """Room for `extra` more entries (and their rows if `with_rows`): 0 on
    success, -1 when out of memory."""
    cdef int64_t needed = s.size + extra
    cdef int64_t capacity = 2 * s.capacity
    cdef void* p
    if needed <= s.capacity:
        return 0
    if capacity < needed:
        capacity = needed
    if with_rows:
        p = realloc(s.rows, capacity * sizeof(int32_t))
        if p == NULL:
            return -1
        s.rows = <int32_t*> p
    p = realloc(s.cols, capacity * sizeof(int32_t))
    if p == NULL:
        return -1
    s.cols = <int32_t*> p
    p = realloc(s.vals, capacity * itemsize)
    if p == NULL:
        return -1
    s.vals = p
    s.capacity = capacity
    return 0


cdef inline void release(Staging* staging, int64_t count) noexcept nogil:
    """Free the buffers of `count` stagings and the array holding them."""
    cdef int64_t t
    for t in range(count):
        free(staging[t].rows)
        free(staging[t].cols)
        free(staging[t].vals)
    free(staging)
