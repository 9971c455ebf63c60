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

Builds without a vector micro-kernel (no AVX2 or AVX-512 at compile time,
e.g. SUBQUAD_PORTABLE=1, or not x86) pack each tile for one
single-threaded BLAS call instead, as BLAS chooses its kernel for the CPU
at run time; the caller holds BLAS to one thread.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from .._cython_blas cimport NoTrans, _gemm
from .._stream cimport store_block, stream_fence
from ._microkernel cimport MR, NR_D, NR_F, VECTOR_KERNEL, micro_block

cdef enum:
    # Compile-time constants: as module variables, every `% LINE` of a
    # block's address was a 64-bit division.
    LINE = 64  # bytes; alignment of packed B panels and of blocks
    L1_PANEL = 16384  # bytes of packed A per row block: half of a 32 KiB L1


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

    Tiles are `tile_m` rows by `tile_n` columns (rounded up to whole
    micro-kernel strips).
    """
    cdef int failed
    if C.shape[0] == 0 or C.shape[1] == 0:
        return
    if alpha == 0:
        # As the BLAS reference has it, A and B are not read: NaN in them do
        # not propagate (OpenBLAS propagates them on some paths).
        index = index[:0]
    with nogil:
        if VECTOR_KERNEL:
            failed = _micro_tiles(A, B, C, alpha, beta, index, n_threads, tile_m, tile_n)
        else:
            failed = _blas_tiles(A, B, C, alpha, beta, index, n_threads, tile_m, tile_n)
    if failed:
        raise MemoryError("blocked_gemm: could not allocate packing buffers")


cdef int _micro_tiles(
    const floating[:, ::1] A,
    const floating[:, ::1] B,
    floating[:, ::1] C,
    double alpha,
    double beta,
    const int64_t[::1] index,
    int n_threads,
    int64_t tile_m,
    int64_t tile_n,
) noexcept nogil:
    """The tiles by the micro-kernel; nonzero if a thread could not allocate
    its buffers."""
    cdef int64_t m = C.shape[0], n = C.shape[1]
    cdef int64_t k = index.shape[0]
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
    # Micro-kernel strip q covers columns [q * nr - shift, (q + 1) * nr - shift)
    # of C; shifted, all strips but the first start on a line of every row.
    address = <uintptr_t> &C[0, 0]
    if (n * itemsize) % LINE == 0 and address % itemsize == 0:
        shift = (nr - <int64_t> ((LINE - address % LINE) % LINE) // itemsize % nr) % nr
    strips = (n + shift + nr - 1) // nr
    tile_strips = max(1, (tile_n + nr - 1) // nr)
    tiles_m = (m + tile_m - 1) // tile_m
    tiles_n = (strips + tile_strips - 1) // tile_strips
    with parallel(num_threads=n_threads):
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
    return failed


cdef int _blas_tiles(
    const floating[:, ::1] A,
    const floating[:, ::1] B,
    floating[:, ::1] C,
    double alpha,
    double beta,
    const int64_t[::1] index,
    int n_threads,
    int64_t tile_m,
    int64_t tile_n,
) noexcept nogil:
    """The tiles by one BLAS call each; nonzero if a thread could not
    allocate its buffers."""
    cdef int64_t m = C.shape[0], n = C.shape[1]
    cdef int64_t k = index.shape[0]
    cdef int64_t tiles_m = (m + tile_m - 1) // tile_m
    cdef int64_t tiles_n = (n + tile_n - 1) // tile_n
    cdef int64_t tile, r0, c0, tm, tn, i, p
    cdef floating* A_pack
    cdef floating* B_pack
    cdef int failed = 0
    with parallel(num_threads=n_threads):
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
    return failed
