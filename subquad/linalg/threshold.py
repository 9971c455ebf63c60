"""Fused thresholded product ``max(H @ W + bias - threshold, 0)`` into CSR,
and the sparse-times-dense product, on the tiled engine."""

from contextlib import nullcontext

import numpy as np
import scipy.sparse as sp

from .._cpu_caches import l2_cache_bytes
from .._threads import blas_threads_limited, threads_for_work
from ._tile_product import tile_product
from ._validation import check_float_matrix, check_operand, check_vector

# A tile of Z (row_block x col_tile) stays in L2 next to the stream of W
# passing through it: 512 KiB, half of a 1 MiB L2. There a tile filling all
# of L2 took 1.00-1.18x as long at m >= 8192 and was no faster below
# (bench/threshold_tiles.py). Dense H takes this size (one BLAS call per
# tile); CSR H takes it between the two switches below.
_TILE_BYTES = 512 * 1024
_MAX_ROW_BLOCK = 256
# With CSR input each W row segment is added into the Z row of every sample
# of the block that uses it. When few samples share a W row, streaming W
# dominates and longer row segments stream it faster: below
# _FEW_USES_PER_W_ROW the tile takes half of L2 when that is more, on
# more than one thread. On a 2 MiB L2, 1 MiB took 0.84-0.93x the time of
# 512 KiB at 2.6 samples per row and m = 4096, and 0.95-1.02x at 8192 and
# 16384, in two runs of bench/threshold_tiles.py (2 threads); at 4.5 to 9
# samples per row the sizes traded places from case to case. One thread
# keeps 512 KiB: in ad hoc runs at 4096 it was 1.03-1.26x faster there,
# and in a run of `OMP_NUM_THREADS=1 python bench/threshold_tiles.py` the
# two traded places (1 MiB took 0.88-1.07x the time of 512 KiB at 2.6
# samples per row, m = 2048 to 16384), so nothing argues for the larger.
_FEW_USES_PER_W_ROW = 4
_TILE_BYTES_FEW_USES = max(_TILE_BYTES, l2_cache_bytes() // 2)
# When many samples share a W row, the read-modify-write of Z outweighs
# streaming W, and a smaller tile is faster: 256 KiB took 0.75-0.93x the
# time of 512 KiB at 26 samples per row and m >= 2048 on a 1 MiB L2, and
# 0.63-0.77x on a 2 MiB one: the size does not grow with L2 (with 256 rows
# per block, the 26 row segments of Z that a W row updates then take
# 26 KiB, within L1). At 9 or fewer its runs disagree case by case, so the
# switch is set above 9.
_MANY_USES_PER_W_ROW = 16
_TILE_BYTES_MANY_USES = 256 * 1024


# Narrower tiles are used only to give every thread work: below this, W's
# row segments are too short to stream well.
_MIN_TILE_ROW_BYTES = 1024


def _uses_per_w_row(H):
    """For CSR `H`, how many samples of a full row block use a row of W on
    average; None for dense `H`, whose tiles go to BLAS."""
    n_rows, m_in = H.shape
    if not sp.issparse(H):
        return None
    if n_rows * m_in == 0:
        return 0.0
    return H.nnz * min(n_rows, _MAX_ROW_BLOCK) / (n_rows * m_in)


def _tile_bytes(uses_per_w_row, n_threads):
    """Bytes of a Z tile; `uses_per_w_row` is None for dense H."""
    if uses_per_w_row is None:
        return _TILE_BYTES
    if uses_per_w_row >= _MANY_USES_PER_W_ROW:
        return _TILE_BYTES_MANY_USES
    if uses_per_w_row < _FEW_USES_PER_W_ROW and n_threads > 1:
        return _TILE_BYTES_FEW_USES
    return _TILE_BYTES


def _tiling(n_rows, m_out, itemsize, n_threads, uses_per_w_row=None):
    """Rows and columns of a Z tile, halving the columns (not below
    `_MIN_TILE_ROW_BYTES` of a row) while there are fewer tiles than
    threads: a layer of 1024 units is one 2048-wide tile otherwise, all of
    it on one thread. (Two narrower tiles per thread were slower than one
    wide one at m = 4096.) `uses_per_w_row`: see `_uses_per_w_row`."""
    row_block = max(1, min(n_rows, _MAX_ROW_BLOCK))
    tile_bytes = _tile_bytes(uses_per_w_row, n_threads)
    col_tile = tile_bytes // (itemsize * row_block)
    col_tile = int(min(4096, max(64, col_tile - col_tile % 16)))
    n_blocks = -(-n_rows // row_block)
    narrowest = max(16, _MIN_TILE_ROW_BYTES // itemsize)
    while (n_threads > 1 and col_tile // 2 >= narrowest
           and n_blocks * -(-m_out // col_tile) < n_threads):
        col_tile = col_tile // 2 - col_tile // 2 % 16
    return row_block, col_tile


def _run(H, W, shift, P, V, out, to_csr, n_threads, workspace=None):
    """Call the engine with W as C-contiguous (m_in, m_out) or, for an
    F-ordered W, its C-contiguous transpose; the CSR output is staged in
    `workspace` (a `StagingWorkspace`) when given."""
    if sp.issparse(H):
        # The scatter reads contiguous row segments of W.
        W = np.ascontiguousarray(W)
    trans_w = not W.flags.c_contiguous
    W_c = W.T if trans_w else W
    dtype = W.dtype
    n_rows, m_in = H.shape
    empty = np.empty((0, 0), dtype=dtype)
    if sp.issparse(H):
        dense, data = empty, np.ascontiguousarray(H.data)
        indices = np.ascontiguousarray(H.indices, dtype=np.int32)
        indptr = np.ascontiguousarray(H.indptr, dtype=np.int64)
    else:
        dense = H
        data, indices = np.empty(0, dtype), np.empty(0, np.int32)
        indptr = np.zeros(n_rows + 1, np.int64)
    if P is None:
        P, V = np.empty((n_rows, 0), dtype), np.empty((0, W.shape[1]), dtype)
    inner = (H.nnz if sp.issparse(H) else n_rows * m_in) + n_rows * (P.shape[1] + 1)
    threads = threads_for_work(n_threads, inner * W.shape[1])
    row_block, col_tile = _tiling(n_rows, W.shape[1], dtype.itemsize, threads,
                                  _uses_per_w_row(H))
    # threadpoolctl's cap costs tens of microseconds per call: only when the
    # engine calls it (a dense H or a low-rank correction).
    calls_blas = not sp.issparse(H) or P.shape[1] > 0
    with blas_threads_limited(1) if calls_blas else nullcontext():
        return tile_product(
            sp.issparse(H), dense, data, indices, indptr, n_rows, m_in,
            W_c, trans_w, P, V, shift, out, to_csr, threads, row_block, col_tile, workspace)


def threshold_csr(H, W, shift, P=None, V=None, n_threads=None, workspace=None):
    """``max(H @ W + P @ V + shift, 0)`` as CSR, for validated operands,
    staged in `workspace` when given (see `_run`)."""
    data, indices, indptr = _run(H, W, shift, P, V, np.empty((0, 0), W.dtype), True, n_threads,
                                 workspace)
    return sp.csr_matrix((data, indices, indptr), shape=(H.shape[0], W.shape[1]))


def product_dense(H, W, P=None, V=None, n_threads=None):
    """Dense ``H @ W + P @ V`` for validated operands."""
    out = np.empty((H.shape[0], W.shape[1]), dtype=W.dtype)
    if sp.issparse(H):
        _run(H, W, np.empty(0, W.dtype), P, V, out, False, n_threads)
        return out
    np.matmul(H, W, out=out)
    if P is not None:
        out += P @ V
    return out


def threshold_matmul(H, W, threshold, bias=None, n_threads=None):
    """Thresholded product ``max(H @ W + bias - threshold, 0)`` as CSR.

    Only strictly positive entries are stored: a pre-activation exactly at
    the threshold is inactive. `H`, `threshold` and `bias` must be finite;
    `W` is not checked (that would read all of it, as much as the product
    does), and a NaN pre-activation it causes is stored as NaN, as
    ``np.maximum`` would keep it. The product is computed tile by tile and the
    threshold applied in the same pass, so no dense (n, m_out) array is ever
    allocated; with CSR `H` each needed row of `W` is read once per tile.

    Parameters
    ----------
    H : ndarray or sparse matrix of shape (n, m_in)
        Activations. Dense input is used as C-ordered; sparse input as CSR.
        Converted to the dtype of `W`.
    W : ndarray of shape (m_in, m_out)
        Weights, float32 or float64 (other real dtypes become float64).
        C- or F-ordered arrays are used without a copy.
    threshold : float or ndarray of shape (m_out,)
        Threshold b subtracted from every pre-activation (per column if an
        array).
    bias : None or ndarray of shape (m_out,)
        Bias added to every row before thresholding.
    n_threads : int, default=None
        None: all CPUs allowed by OMP_NUM_THREADS / affinity; -1: all CPUs;
        k > 0: k threads.

    Returns
    -------
    A : scipy.sparse.csr_matrix of shape (n, m_out), dtype of `W`
        Column indices sorted within each row; int32 indices.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from subquad.linalg import threshold_matmul
    >>> H = sp.random(4, 64, density=0.1, format="csr", random_state=0)
    >>> W = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    >>> A = threshold_matmul(H, W, threshold=0.5)
    >>> np.allclose(A.toarray(), np.maximum(H @ W - 0.5, 0), atol=1e-5)
    True
    """
    W = check_float_matrix(W, "W", allow_f_contiguous=True)
    m_in, m_out = W.shape
    H = check_operand(H, "H", W.dtype, m_in)
    shift = -check_vector(threshold, "threshold", m_out, W.dtype)
    if bias is not None:
        shift += check_vector(bias, "bias", m_out, W.dtype)
    return threshold_csr(H, W, shift, n_threads=n_threads)


def sparse_matmul(H, W, n_threads=None):
    """Dense ``H @ W`` for CSR `H`, on the same tiled engine as
    `threshold_matmul` (each needed row of `W` read once per tile).

    Parameters
    ----------
    H : sparse matrix or ndarray of shape (n, m_in)
        Dense input is multiplied with BLAS.
    W : ndarray of shape (m_in, m_out)
        Float32 or float64 (other real dtypes become float64).
    n_threads : int, default=None
        None: all CPUs allowed by OMP_NUM_THREADS / affinity; -1: all CPUs;
        k > 0: k threads.

    Returns
    -------
    ndarray of shape (n, m_out), dtype of `W`
    """
    W = check_float_matrix(W, "W", allow_f_contiguous=True)
    H = check_operand(H, "H", W.dtype, W.shape[0])
    return product_dense(H, W, n_threads=n_threads)
