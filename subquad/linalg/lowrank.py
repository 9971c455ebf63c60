"""Low-rank corrections to a weight matrix: applied in place, or kept
factored and merged lazily."""

import numbers

import numpy as np
import scipy.sparse as sp

from .._threads import effective_n_threads
from ._lowrank_update import sparse_dense_update, sparse_sparse_update
from ._validation import check_float_matrix, check_operand, check_scalar, check_vector
from .threshold import product_dense, threshold_csr
from .tiled_gemm import blocked_gemm


def _check_inplace_target(W, name="W"):
    if not (isinstance(W, np.ndarray) and W.ndim == 2 and W.dtype in (np.float32, np.float64)
            and W.flags.c_contiguous and W.flags.writeable):
        raise TypeError(
            f"{name} must be a writeable C-contiguous 2-D float32 or float64 ndarray to be "
            f"updated in place, got {type(W).__name__} {getattr(W, 'dtype', '')} "
            f"{getattr(W, 'shape', '')}")
    return W


def _check_factor(F, name, shape, dtype):
    """Dense or CSR factor of the given shape (None = any size), finite."""
    if sp.issparse(F):
        F = sp.csr_matrix(F, dtype=dtype)
        values = F.data
    else:
        F = check_float_matrix(F, name, dtype=dtype)
        values = F
    for axis, expected in enumerate(shape):
        if expected is not None and F.shape[axis] != expected:
            raise ValueError(
                f"{name} must have shape ({', '.join('r' if s is None else str(s) for s in shape)}), "
                f"got {F.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinity")
    return F


def _csr_arrays(F):
    return (np.ascontiguousarray(F.data), np.ascontiguousarray(F.indices, dtype=np.int32),
            np.ascontiguousarray(F.indptr, dtype=np.int64))


def _apply(W, U, V, alpha, n_threads):
    if not sp.issparse(U) and not sp.issparse(V):
        blocked_gemm(U, V, C=W, alpha=alpha, beta=1.0, n_threads=n_threads)
        return
    threads = effective_n_threads(n_threads)
    if not sp.issparse(U):
        U = sp.csr_matrix(U)
    if sp.issparse(V):
        sparse_sparse_update(W, alpha, *_csr_arrays(U), *_csr_arrays(V), threads)
    else:
        sparse_dense_update(W, alpha, *_csr_arrays(U), V, threads)


def lowrank_update_(W, U, V, alpha=1.0, n_threads=None):
    """In place ``W += alpha * U @ V``.

    With a sparse factor only the entries in the pattern of ``U @ V`` are
    read and written, row by row: threads own disjoint rows of `W`. With two
    dense factors the update is one `blocked_gemm` with ``beta=1``.

    Parameters
    ----------
    W : ndarray of shape (m_in, m_out)
        Writeable, C-contiguous, float32 or float64; updated in place.
    U : ndarray or sparse matrix of shape (m_in, r)
    V : ndarray or sparse matrix of shape (r, m_out)
        Converted to the dtype of `W`.
    alpha : float, default=1.0
    n_threads : int, default=None
        None: all CPUs allowed by OMP_NUM_THREADS / affinity; -1: all CPUs;
        k > 0: k threads.
    """
    W = _check_inplace_target(W)
    U = _check_factor(U, "U", (W.shape[0], None), W.dtype)
    V = _check_factor(V, "V", (U.shape[1], W.shape[1]), W.dtype)
    _apply(W, U, V, check_scalar(alpha, "alpha"), n_threads)


class LowRankWeight:
    """A weight matrix kept as ``W_base + U @ V`` with stacked factors.

    Updates are appended to the factors instead of touching the whole
    matrix; products are answered as ``H @ W_base + (H @ U) @ V`` without
    forming the sum. When the stacked rank would exceed `max_rank` the
    factors are merged into `W_base` with one `blocked_gemm`.

    Parameters
    ----------
    W : ndarray of shape (m_in, m_out)
        Initial weights, float32 or float64.
    max_rank : int, default=64
        Largest stacked rank kept before merging.
    copy : bool, default=True
        Copy `W`; if False and `W` is a C-contiguous float array, it is
        used (and merged into) directly.
    n_threads : int, default=None
        Threads for every product and merge.

    Attributes
    ----------
    base : ndarray of shape (m_in, m_out)
        ``W_base``; equals the weights whenever `rank` is 0.
    n_merges : int
        How many times the factors were merged into `base`.

    Examples
    --------
    >>> import numpy as np
    >>> from subquad.linalg import LowRankWeight
    >>> W = LowRankWeight(np.zeros((3, 4)), max_rank=2)
    >>> W.add(np.ones((3, 1)), np.ones((1, 4)), alpha=2.0)
    >>> W.rank, W.toarray()[0, 0]
    (1, 2.0)
    """

    def __init__(self, W, max_rank=64, copy=True, n_threads=None):
        if isinstance(max_rank, bool) or not isinstance(max_rank, numbers.Integral) or max_rank < 1:
            raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
        effective_n_threads(n_threads)
        base = check_float_matrix(W, "W")
        if copy and base is W:
            base = base.copy()
        self.base = base
        self.max_rank = int(max_rank)
        self.n_threads = n_threads
        self.n_merges = 0
        m_in, m_out = base.shape
        self._U = np.zeros((m_in, self.max_rank), dtype=base.dtype)
        self._V = np.zeros((self.max_rank, m_out), dtype=base.dtype)
        self._rank = 0

    @property
    def shape(self):
        return self.base.shape

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def rank(self):
        """Rank of the stacked correction ``U @ V`` not yet merged."""
        return self._rank

    def _factors(self):
        return self._U[:, : self._rank], self._V[: self._rank]

    def add(self, U, V, alpha=1.0):
        """Add ``alpha * U @ V`` (U: (m_in, r), V: (r, m_out), dense or sparse).

        A correction wider than `max_rank` on its own is applied to `base`
        in place with `lowrank_update_`.
        """
        m_in, m_out = self.shape
        U = _check_factor(U, "U", (m_in, None), self.dtype)
        V = _check_factor(V, "V", (U.shape[1], m_out), self.dtype)
        alpha = check_scalar(alpha, "alpha")
        r = U.shape[1]
        if r > self.max_rank:
            _apply(self.base, U, V, alpha, self.n_threads)
            return
        if self._rank + r > self.max_rank:
            self.materialize()
        self._U[:, self._rank : self._rank + r] = U.toarray() if sp.issparse(U) else U
        block = V.toarray() if sp.issparse(V) else V
        np.multiply(block, alpha, out=self._V[self._rank : self._rank + r])
        self._rank += r

    def materialize(self):
        """Merge the stacked factors into `base` (one blocked GEMM)."""
        if self._rank:
            U, V = self._factors()
            blocked_gemm(np.ascontiguousarray(U), V, C=self.base, beta=1.0,
                         n_threads=self.n_threads)
            self._rank = 0
            self.n_merges += 1

    def _correction(self, H):
        if not self._rank:
            return None, None
        U, V = self._factors()
        return np.ascontiguousarray(H @ U, dtype=self.dtype), V

    def matmul(self, H):
        """Dense ``H @ (W_base + U @ V)`` for dense or CSR `H` of shape (n, m_in)."""
        H = check_operand(H, "H", self.dtype, self.shape[0])
        P, V = self._correction(H)
        return product_dense(H, self.base, P, V, n_threads=self.n_threads)

    def threshold_matmul(self, H, threshold, bias=None):
        """``max(H @ W + bias - threshold, 0)`` as CSR, like
        `subquad.linalg.threshold_matmul`, with the correction fused in."""
        m_out = self.shape[1]
        H = check_operand(H, "H", self.dtype, self.shape[0])
        shift = -check_vector(threshold, "threshold", m_out, self.dtype)
        if bias is not None:
            shift += check_vector(bias, "bias", m_out, self.dtype)
        P, V = self._correction(H)
        return threshold_csr(H, self.base, shift, P, V, n_threads=self.n_threads)

    def toarray(self):
        """``W_base + U @ V`` as a new dense array."""
        out = self.base.copy()
        if self._rank:
            U, V = self._factors()
            blocked_gemm(np.ascontiguousarray(U), V, C=out, beta=1.0, n_threads=self.n_threads)
        return out

    def __repr__(self):
        return (f"LowRankWeight(shape={self.shape}, dtype={self.dtype}, rank={self.rank}, "
                f"max_rank={self.max_rank})")
