"""Staging buffers that outlive a call.

A kernel that stages its output (`_staging.pxd`) and frees the buffers on
return gives their memory back to the system, and the next call faults it
in again page by page. A caller making many calls (an index queried every
training step) can hand the kernel a `StagingWorkspace` instead: the
buffers keep their room from one call to the next.
"""
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport realloc
from libc.string cimport memset

from ._staging cimport Staging, release


cdef class StagingWorkspace:
    """Staging buffers for values of `itemsize` bytes, and a row number per
    entry if `with_rows` (see `Staging`), kept between calls. Not
    thread-safe: one call at a time may use it."""

    def __cinit__(self, size_t itemsize, bint with_rows):
        self.staging = NULL
        self.n_slots = 0
        self.itemsize = itemsize
        self.with_rows = with_rows

    def check(self, size_t itemsize, bint with_rows, str caller):
        """Raise ValueError unless this workspace stages entries of this
        kind: buffers sized for another kind would be overrun."""
        if itemsize != self.itemsize or with_rows != self.with_rows:
            raise ValueError(
                f"{caller}: workspace stages {self.itemsize}-byte values "
                f"{'with' if self.with_rows else 'without'} row numbers, the call "
                f"{itemsize}-byte ones {'with' if with_rows else 'without'}")

    def __dealloc__(self):
        release(self.staging, self.n_slots)

    cdef Staging* slots(self, int64_t n) except NULL:
        """At least `n` (>= 1) staging buffers, all empty, with the room of
        earlier calls."""
        cdef Staging* grown
        cdef int64_t i
        if n > self.n_slots:
            grown = <Staging*> realloc(self.staging, n * sizeof(Staging))
            if grown == NULL:
                raise MemoryError("could not allocate staging buffers")
            memset(grown + self.n_slots, 0, (n - self.n_slots) * sizeof(Staging))
            self.staging = grown
            self.n_slots = n
        for i in range(self.n_slots):
            self.staging[i].size = 0
        return self.staging

    @property
    def nbytes(self):
        """Bytes of staging memory held."""
        cdef int64_t i, total = self.n_slots * sizeof(Staging)
        for i in range(self.n_slots):
            total += self.staging[i].capacity * (sizeof(int32_t) + self.itemsize)
            if self.with_rows:
                total += self.staging[i].capacity * sizeof(int32_t)
        return int(total)
