"""Parallel GEMM over a subset of the shared dimension."""

import numpy as np

from .._cython_blas import gemm
from .._threads import blas_threads_limited, effective_n_threads
from ._tiled_gemm import tiled_gemm
from ._validation import check_float_matrix, check_index, check_scalar

_MAX_TILE_M = 1024
_B_PANEL = 2**19  # bytes of packed B per tile: room to spare in a 1-2 MiB L2
_LINE = 64  # bytes of a cache line


def _tiles(m, n, k, itemsize, n_threads):
    """Tiles of C: as wide as a packed B panel of about `_B_PANEL` bytes
    allows (it is reused by every row of the tile, and wide tiles write
    long runs of C's rows), then split until each thread has two, for
    balance. Widths are whole cache lines."""
    line = _LINE // itemsize
    panels = -(-n * max(k, 1) * itemsize // _B_PANEL)
    tile_n = -(-n // panels // line) * line
    tile_m = max(1, min(m, _MAX_TILE_M))
    while -(-m // tile_m) * -(-n // tile_n) < 2 * n_threads:
        if tile_m > 1 and (tile_m >= tile_n or tile_n <= line):
            tile_m = -(-tile_m // 2)
        elif tile_n > line:
            tile_n = -(-tile_n // 2 // line) * line
        else:
            break
    return tile_m, tile_n


def blocked_gemm(A, B, C=None, *, alpha=1.0, beta=0.0, index=None, n_threads=None):
    """``C = alpha * A[:, index] @ B[index, :] + beta * C``, tiles in parallel.

    With `index`, the output is cut into tiles computed in parallel, each
    packing only its part of ``A[:, index]`` and ``B[index, :]`` (the
    gathered operands are never formed whole) for a register-blocked
    micro-kernel that writes each block of C once, with streaming stores
    when `beta` is 0 (builds without AVX2 or AVX-512 hand each tile to a
    single-threaded BLAS call instead). Without `index` there is nothing to
    pack and the product is one BLAS call on `n_threads` BLAS threads.

    Parameters
    ----------
    A : ndarray of shape (m, k)
        Float32 or float64; sets the dtype of the product.
    B : ndarray of shape (k, n)
    C : ndarray of shape (m, n), optional
        Updated in place when given: a writeable C-contiguous array of the
        dtype of `A`. Allocated when None (then `beta` must be 0).
    alpha, beta : float
    index : array of int or bool of shape (k,), optional
        Positions along the shared dimension to use (all when None).
    n_threads : int, default=None
        None: all CPUs allowed by OMP_NUM_THREADS / affinity; -1: all CPUs;
        k > 0: k threads.

    Returns
    -------
    C : ndarray of shape (m, n)
    """
    A = check_float_matrix(A, "A")
    B = check_float_matrix(B, "B", dtype=A.dtype)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"A has shape {A.shape} and B {B.shape}: A's columns must equal B's rows")
    alpha = check_scalar(alpha, "alpha")
    beta = check_scalar(beta, "beta")
    m, n = A.shape[0], B.shape[1]
    if C is None:
        if beta != 0:
            raise ValueError("beta must be 0 when C is not given")
        C = np.empty((m, n), dtype=A.dtype)
    elif not (isinstance(C, np.ndarray) and C.dtype == A.dtype and C.shape == (m, n)
              and C.flags.c_contiguous and C.flags.writeable):
        raise ValueError(
            f"C must be a writeable C-contiguous {A.dtype} array of shape ({m}, {n}) to be "
            f"updated in place, got {type(C).__name__} "
            f"{getattr(C, 'dtype', '')} {getattr(C, 'shape', '')}")
    threads = effective_n_threads(n_threads)
    if index is None:
        # Nothing to pack: one BLAS call on all threads beat tiles handed to
        # single-threaded BLAS calls on the 2-core reference machine
        # (bench/sparse_engine.py: 1.26x numpy's time tiled, ~1.0x so).
        # A plain product is NumPy's own matmul, what `A @ B` runs; SciPy's
        # BLAS, needed for alpha and beta, can be another OpenBLAS build.
        if m and n:
            with blas_threads_limited(threads):
                if alpha == 1 and beta == 0:
                    np.matmul(A, B, out=C)
                else:
                    gemm(False, False, alpha, A, B, beta, C)
        return C
    positions = check_index(index, A.shape[1])
    tile_m, tile_n = _tiles(m, n, len(positions), A.dtype.itemsize, threads)
    # Builds without a vector micro-kernel call BLAS per tile.
    with blas_threads_limited(1):
        tiled_gemm(A, B, C, alpha, beta, positions, threads, tile_m, tile_n)
    return C
