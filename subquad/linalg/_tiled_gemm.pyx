"""``C = alpha * A[:, index] @ B[index, :] + beta * C`` tile by tile.

Tiles of C are independent, so they are computed in parallel, each by one
single-threaded BLAS call (the caller holds BLAS to one thread). Each tile
first packs its rows of ``A[:, index]`` and columns of ``B[index, :]`` into
per-thread contiguous buffers; the gathered operands are never
materialised whole.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from .._cython_blas cimport NoTrans, _gemm


def tiled_gemm(
    const floating[:, ::1] A,
    const floating[:, ::1] B,
    floating[:, ::1] C,
    double alpha,
    double beta,
    const int64_t[::1] index,
    int n_threads,
    int64_t tile_m,
    int64_t tile_n,
):
    """Kernel of `subquad.linalg.blocked_gemm`; arguments validated by it."""
    cdef int64_t m = C.shape[0], n = C.shape[1]
    cdef int64_t k = index.shape[0]
    cdef int64_t tiles_m = (m + tile_m - 1) // tile_m
    cdef int64_t tiles_n = (n + tile_n - 1) // tile_n
    cdef int64_t tile, r0, c0, tm, tn, i, p
    cdef floating* A_pack
    cdef floating* B_pack
    cdef int failed = 0
    if m == 0 or n == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        A_pack = <floating*> malloc((tile_m * k + 1) * sizeof(floating))
        B_pack = <floating*> malloc((k * tile_n + 1) * sizeof(floating))
        for tile in prange(tiles_m * tiles_n, schedule="dynamic"):
            r0 = (tile // tiles_n) * tile_m
            c0 = (tile % tiles_n) * tile_n
            tm = min(tile_m, m - r0)
            tn = min(tile_n, n - c0)
            if A_pack == NULL or B_pack == NULL:
                failed += 1
                continue
            for i in range(tm):
                for p in range(k):
                    A_pack[i * k + p] = A[r0 + i, index[p]]
            for p in range(k):
                for i in range(tn):
                    B_pack[p * tn + i] = B[index[p], c0 + i]
            _gemm(NoTrans, NoTrans, <int> tm, <int> tn, <int> k, <floating> alpha,
                  A_pack, <int> k, B_pack, <int> tn, <floating> beta, &C[r0, c0], <int> n)
        free(A_pack)
        free(B_pack)
    if failed:
        raise MemoryError("blocked_gemm: could not allocate packing buffers")
