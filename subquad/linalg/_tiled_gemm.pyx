"""``C = alpha * A[:, index] @ B[index, :] + beta * C`` tile by tile.

Tiles of C are independent, so they are computed in parallel. Each tile
packs its columns of ``B[index, :]`` once, and its rows of ``A[:, index]``
one row block at a time, into per-thread buffers laid out for the
micro-kernel (`_microkernel.pxd`); the gathered operands are never
materialised whole.

With a short shared dimension (k = 51 for the 10% index of
bench/sparse_engine.py) the product is bound by writing C, not by flops.
A single-threaded BLAS call per tile ran at about half of sgemm's peak:
with beta = 0 OpenBLAS zeroes C in one pass, then reads and writes it again
in short k loops. Here each MR x NR block of C is computed in registers
over the whole shared dimension and written once. With beta = 0 it is
written with streaming stores, which neither fetch C's lines first nor
evict the packed panels; C is never read, so NaN in it do not propagate.
The column strips of the micro-kernel are shifted to start on 64-byte
boundaries of C's rows (when its row stride is a multiple of 64 bytes),
so that the stores fill whole lines; other blocks (C's edges, beta != 0,
other strides) go through a small buffer.

A row block of packed A small enough for L1 is reused by every column
strip of the tile, and each strip of packed B by every row of the block,
so the micro-kernel's operands come from L1 while C streams out.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from .._stream cimport store_block, stream_fence
from ._microkernel cimport MR, NR_D, NR_F, micro_block

cdef int64_t LINE = 64  # bytes; alignment of packed B panels and of blocks
cdef int64_t L1_PANEL = 16384  # bytes of packed A per row block: half of a 32 KiB L1


cdef inline void* aligned(void* p) noexcept nogil:
    return <void*> ((<uintptr_t> p + LINE - 1) & ~<uintptr_t> (LINE - 1))


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
    """Kernel of `subquad.linalg.blocked_gemm`; arguments validated by it.

    Tiles are `tile_m` rows by `tile_n` columns rounded up to whole
    micro-kernel strips.
    """
    cdef int64_t m = C.shape[0], n = C.shape[1]
    # As in BLAS, alpha = 0 reads neither A nor B: their NaN do not propagate.
    cdef int64_t k = index.shape[0] if alpha != 0 else 0
    cdef int64_t nr = NR_F if floating is float else NR_D
    cdef int64_t itemsize = sizeof(floating)
    cdef int64_t sub_m = MR * max(1, L1_PANEL // (MR * max(k, 1) * itemsize))
    cdef int64_t shift = 0, strips, tile_strips, tiles_m, tiles_n
    cdef int64_t tile, r0, tm, q0, q1, q, c, j0, j1, b, rb, sm, rows, i, j, p, s, strips_m
    cdef uintptr_t address
    cdef void* A_raw
    cdef void* B_raw
    cdef void* out_raw
    cdef floating* A_pack
    cdef floating* B_pack
    cdef floating* out
    cdef floating* dst
    cdef const floating* row
    cdef bint streamable = beta == 0 and (n * itemsize) % LINE == 0
    cdef int failed = 0
    if m == 0 or n == 0:
        return
    # Micro-kernel strip q covers columns [q * nr - shift, (q + 1) * nr - shift)
    # of C; shifted, all strips but the first start on a line of every row.
    address = <uintptr_t> &C[0, 0]
    if (n * itemsize) % LINE == 0 and address % itemsize == 0:
        shift = (nr - <int64_t> ((LINE - address % LINE) % LINE) // itemsize % nr) % nr
    strips = (n + shift + nr - 1) // nr
    tile_strips = max(1, (tile_n + nr - 1) // nr)
    tiles_m = (m + tile_m - 1) // tile_m
    tiles_n = (strips + tile_strips - 1) // tile_strips
    with nogil, parallel(num_threads=n_threads):
        A_raw = malloc((sub_m * k + 1) * itemsize)
        B_raw = malloc((tile_strips * nr * k + 1) * itemsize + LINE)
        out_raw = malloc(MR * nr * itemsize + LINE)
        A_pack = <floating*> A_raw
        B_pack = <floating*> aligned(B_raw)
        out = <floating*> aligned(out_raw)
        for tile in prange(tiles_m * tiles_n, schedule="dynamic"):
            if A_raw == NULL or B_raw == NULL or out_raw == NULL:
                failed += 1
                continue
            r0 = (tile // tiles_n) * tile_m
            tm = min(tile_m, m - r0)
            q0 = (tile % tiles_n) * tile_strips
            q1 = min(strips, q0 + tile_strips)
            for p in range(k):
                row = &B[index[p], 0]
                for q in range(q0, q1):
                    b = ((q - q0) * k + p) * nr
                    c = q * nr - shift
                    if c >= 0 and c + nr <= n:
                        memcpy(&B_pack[b], &row[c], nr * itemsize)
                    else:
                        for j in range(nr):
                            B_pack[b + j] = row[c + j] if 0 <= c + j < n else 0
            for rb in range((tm + sub_m - 1) // sub_m):
                sm = min(sub_m, tm - rb * sub_m)
                strips_m = (sm + MR - 1) // MR
                for s in range(strips_m):
                    rows = min(MR, sm - s * MR)
                    for i in range(MR):
                        if i < rows:
                            row = &A[r0 + rb * sub_m + s * MR + i, 0]
                            for p in range(k):
                                A_pack[(s * k + p) * MR + i] = row[index[p]]
                        else:
                            for p in range(k):
                                A_pack[(s * k + p) * MR + i] = 0
                for q in range(q0, q1):
                    c = q * nr - shift
                    j0, j1 = max(0, -c), min(nr, n - c)
                    for s in range(strips_m):
                        rows = min(MR, sm - s * MR)
                        dst = &C[r0 + rb * sub_m + s * MR, c + j0]
                        if (streamable and rows == MR and j1 - j0 == nr
                                and <uintptr_t> dst % LINE == 0):
                            micro_block(k, &A_pack[s * MR * k], &B_pack[(q - q0) * nr * k],
                                        <floating> alpha, out, dst, n)
                        else:
                            micro_block(k, &A_pack[s * MR * k], &B_pack[(q - q0) * nr * k],
                                        <floating> alpha, out, NULL, 0)
                            store_block(rows, j1 - j0, out + j0, nr, dst, n, <floating> beta)
            stream_fence()
        free(A_raw)
        free(B_raw)
        free(out_raw)
    if failed:
        raise MemoryError("blocked_gemm: could not allocate packing buffers")
