"""Parallel GEMM over a subset of the shared dimension."""

import numpy as np

from .._cython_blas import gemm
from .._threads import blas_threads_limited, effective_n_threads
from ._tiled_gemm import tiled_gemm
from ._validation import check_float_matrix, check_index, check_scalar

_MAX_TILE = 1024
_MIN_TILE = 64


def _tiles(m, n, n_threads):
    """Large tiles keep each BLAS call efficient; at least two per thread
    keep the threads balanced."""
    tile_m, tile_n = max(1, min(m, _MAX_TILE)), max(1, min(n, _MAX_TILE))
    while -(-m // tile_m) * -(-n // tile_n) < 2 * n_threads and max(tile_m, tile_n) > _MIN_TILE:
        if tile_m >= tile_n:
            tile_m = -(-tile_m // 2)
        else:
            tile_n = -(-tile_n // 2)
    return tile_m, tile_n


def blocked_gemm(A, B, C=None, *, alpha=1.0, beta=0.0, index=None, n_threads=None):
    """``C = alpha * A[:, index] @ B[index, :] + beta * C``, tiles in parallel.

    With `index`, the output is cut into tiles computed in parallel, each
    packing only its part of ``A[:, index]`` and ``B[index, :]`` (the
    gathered operands are never formed whole) and handing it to a
    single-threaded BLAS call. Without `index` there is nothing to pack and
    the product is one BLAS call on `n_threads` BLAS threads.

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
        if m and n:
            with blas_threads_limited(threads):
                gemm(False, False, alpha, A, B, beta, C)
        return C
    positions = check_index(index, A.shape[1])
    tile_m, tile_n = _tiles(m, n, threads)
    with blas_threads_limited(1):
        tiled_gemm(A, B, C, alpha, beta, positions, threads, tile_m, tile_n)
    return C
