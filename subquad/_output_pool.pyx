"""Recycled memory for large output arrays.

A query of the active-neuron index returns CSR arrays of tens of MB, and a
training loop asks for new ones every step while dropping the last ones.
Memory that large comes fresh from the kernel: glibc maps chunks above
32 MB on their own and unmaps them when freed, so every call faults its
output in again and the kernel zeroes every page first. A library may not
change malloc's settings for the whole process, so the kernels take their
large outputs from this pool instead: an array handed out keeps a lease on
its block, and when the last view of it dies the block comes back here,
already faulted in, for the next output of about its size.
(bench/active_index.py --dims 4 8: the dim-4 tree query took 0.048 s
before the pool and 0.044 s with it; 0.037 s with its sorted output also
streamed into the recycled memory, against 0.047 s with
--no-output-pool.)

The pool holds at most `get_output_pool_limit()` bytes of blocks nobody
uses (least recently returned blocks are freed first); set it to 0 to free
them all and stop recycling. All of its state changes with the GIL held.
"""
import numpy as np

from cpython.buffer cimport PyBuffer_FillInfo

# Outputs below this size come from np.empty: glibc recycles them itself.
cdef Py_ssize_t MIN_POOLED_BYTES = 4 << 20
# Blocks are allocated an eighth larger than asked for, so that the next
# call's output, a little larger or smaller (the number of active neurons
# varies), fits the same block.
cdef Py_ssize_t HEADROOM_DIVISOR = 8
# Pooled arrays start on a cache line, so that the column and value arrays
# of an output line up (streaming stores need aligned destinations).
cdef Py_ssize_t ALIGNMENT = 64

cdef Py_ssize_t _limit = 256 << 20
cdef Py_ssize_t _held_bytes = 0
# Blocks (1-D uint8 arrays) nobody uses, least recently returned first.
cdef list _held = []
cdef Py_ssize_t _reused = 0
cdef Py_ssize_t _allocated = 0


cdef class _Lease:
    """Exposes a pooled block as a writable buffer and returns it to the
    pool when no array uses it any more."""
    cdef object block
    cdef unsigned char* data
    cdef Py_ssize_t nbytes

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, self.data, self.nbytes, 0, flags)

    def __dealloc__(self):
        if self.block is not None:
            _give_back(self.block)


cdef _give_back(object block):
    global _held_bytes
    if _held is None:  # interpreter shutdown
        return
    _held.append(block)
    _held_bytes += block.nbytes
    _trim()


cdef _trim():
    global _held_bytes
    while _held_bytes > _limit and _held:
        _held_bytes -= _held.pop(0).nbytes


cdef object _take(Py_ssize_t nbytes):
    """The smallest held block of at least `nbytes` (and not wasting more
    than half of it), removed from the pool, or a new one."""
    global _held_bytes, _reused, _allocated
    cdef Py_ssize_t i, best = -1, size, best_size = 0
    for i in range(len(_held)):
        size = _held[i].nbytes
        if nbytes <= size <= 2 * nbytes and (best < 0 or size < best_size):
            best = i
            best_size = size
    if best >= 0:
        _held_bytes -= best_size
        _reused += 1
        return _held.pop(best)
    _allocated += 1
    return np.empty(nbytes + nbytes // HEADROOM_DIVISOR, dtype=np.uint8)


def empty(Py_ssize_t n, dtype):
    """An uninitialised 1-D array of `n` items of `dtype`, from the pool when
    it is large: the memory goes back to the pool when the array and all its
    views are gone."""
    dtype = np.dtype(dtype)
    cdef Py_ssize_t nbytes = n * dtype.itemsize
    if nbytes < MIN_POOLED_BYTES or _limit == 0:
        return np.empty(n, dtype=dtype)
    block = _take(nbytes + ALIGNMENT)
    cdef unsigned char[::1] block_bytes = block
    cdef _Lease lease = _Lease()
    lease.block = block
    lease.data = &block_bytes[0] + (-<size_t> &block_bytes[0]) % ALIGNMENT
    lease.nbytes = nbytes
    return np.frombuffer(lease, dtype=dtype, count=n)


def set_output_pool_limit(max_bytes):
    """Set how many bytes of returned output memory subquad keeps for reuse.

    Large outputs (the CSR arrays of `ActiveNeuronIndex.query` and of
    `subquad.linalg.threshold_matmul`, 4 MiB and more) are taken from a
    pool: when every array and view of one is gone, its memory stays in
    the process, already mapped, for the next output of about its size,
    instead of being given back to the system and faulted in and zeroed
    again by the next call.

    Parameters
    ----------
    max_bytes : int
        Most bytes held by the pool; the least recently returned blocks
        beyond it are freed at once. 0 frees every held block and stops
        the recycling. Default at import: 256 MiB.

    Returns
    -------
    previous : int
        The limit before this call.
    """
    global _limit
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    previous = _limit
    _limit = int(max_bytes)
    _trim()
    return previous


def get_output_pool_limit():
    """The pool's limit in bytes (see `set_output_pool_limit`)."""
    return _limit


def output_pool_stats():
    """What the output pool holds and has done since import.

    Returns
    -------
    stats : dict
        ``held_bytes`` and ``held_blocks``: memory waiting for reuse;
        ``reused``: outputs that took a held block; ``allocated``: pooled
        outputs that needed a new one; ``limit``: see
        `set_output_pool_limit`.
    """
    return {"held_bytes": _held_bytes, "held_blocks": len(_held), "reused": _reused,
            "allocated": _allocated, "limit": _limit}
