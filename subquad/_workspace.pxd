from libc.stdint cimport int64_t

from ._staging cimport Staging


cdef class StagingWorkspace:
    cdef Staging* staging
    cdef int64_t n_slots
    cdef readonly size_t itemsize
    cdef readonly bint with_rows
    cdef Staging* slots(self, int64_t n) except NULL
