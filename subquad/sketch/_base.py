"""Shared plumbing of the sketches: argument checks, random tables, and the
dispatch from dense/CSR input to the compiled kernels."""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array

from . import _kernels

# Rows per chunk are chosen so that a chunk's intermediate buffers hold about
# this many elements (8 MB in float64): small enough to stay in cache between
# the steps of a chunk (measured up to 1.5x faster than 32 MB chunks), and
# wide trees (many leaves times many components) never need memory
# proportional to n_samples.
CHUNK_ELEMENTS = 1 << 20


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} of type "
                        f"{type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def next_power_of_two(n):
    return 1 << max(0, int(n - 1).bit_length())


def check_input(X, n_features, name="X"):
    """Validate one input matrix: float32 stays float32, anything else becomes
    float64; CSR stays CSR (with index arrays of one common dtype)."""
    if isinstance(X, (str, bytes)) or X is None:
        raise TypeError(f"{name} must be an array-like or scipy sparse matrix of shape "
                        f"(n_samples, {n_features}), got {type(X).__name__}")
    X = check_array(X, accept_sparse="csr", dtype=[np.float64, np.float32], order="C",
                    input_name=name)
    if X.shape[1] != n_features:
        raise ValueError(f"{name} must have shape (n_samples, {n_features}), got "
                         f"{X.shape}")
    if sp.issparse(X) and X.indices.dtype != X.indptr.dtype:
        X = X.copy()
        X.indices = X.indices.astype(np.int64)
        X.indptr = X.indptr.astype(np.int64)
    return X


# Waking a team of OpenMP threads costs microseconds on an idle machine and
# up to milliseconds on a busy one; below this much work per thread a single
# thread is faster (and the result is identical, see _kernels.pyx).
_MIN_WORK_PER_THREAD = 1 << 16


def threads_for(n_threads, n_rows, work_per_row):
    return max(1, min(n_threads, n_rows * work_per_row // _MIN_WORK_PER_THREAD))


# Chunks never have fewer rows than this: each runs one OpenMP region per
# tree node, and on a busy machine waking the threads costs up to
# milliseconds, which dominated deep trees chunked a dozen rows at a time.
MIN_CHUNK_ROWS = 64


def row_chunks(n_rows, elements_per_row):
    step = max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // max(1, elements_per_row))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


# Tiles of the dense sparse embedding: a feature tile of every table column
# (index + value) should stay in L2 while a row tile streams over it.
_TILE_ROWS = 32
_TILE_TABLE_BYTES = 256 << 10


def _embed_tiles(nnz, itemsize):
    return _TILE_ROWS, max(256, _TILE_TABLE_BYTES // (nnz * (4 + itemsize)))


class SparseTable:
    """Column-wise description of a sparse sketch matrix: input coordinate j
    adds ``values[j, t] * x_j`` to output ``indices[j, t]``."""

    def __init__(self, indices, values):
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        self._values = {np.dtype(np.float64): np.ascontiguousarray(values, np.float64)}
        self._transposed = {}

    def values(self, dtype):
        dtype = np.dtype(dtype)
        if dtype not in self._values:
            self._values[dtype] = self._values[np.dtype(np.float64)].astype(dtype)
        return self._values[dtype]

    def transposed(self, dtype):
        """Tables in the (column, feature) layout of the dense kernel."""
        dtype = np.dtype(dtype)
        if dtype not in self._transposed:
            self._transposed[dtype] = (np.ascontiguousarray(self.indices.T),
                                       np.ascontiguousarray(self.values(dtype).T))
        return self._transposed[dtype]

    def apply(self, X, row_scale, bias, out, n_threads):
        """``out = S x̃`` for every row; `out` is overwritten."""
        work = (X.nnz // max(1, X.shape[0]) if sp.issparse(X) else X.shape[1])
        n_threads = threads_for(n_threads, X.shape[0], work * self.indices.shape[1]
                                + out.shape[1])
        if sp.issparse(X):
            _kernels.sparse_embed_csr(X.data, X.indices, X.indptr, X.shape[1], row_scale,
                                      bias, self.indices, self.values(out.dtype), out,
                                      n_threads)
        else:
            indices_t, values_t = self.transposed(out.dtype)
            row_tile, feature_tile = _embed_tiles(indices_t.shape[0], out.itemsize)
            _kernels.sparse_embed_dense(X, row_scale, bias, indices_t, values_t, out,
                                        row_tile, feature_tile, n_threads)


def osnap_table(n_features, n_components, density, rng, n_copies=1):
    """`n_copies` independent OSNAP matrices stacked side by side.

    Each column has `density` nonzeros ``±1/sqrt(density)``, one in each of
    `density` contiguous row blocks, so the rows of a column are distinct
    without rejection sampling and ``E[SᵀS] = I``. ``density=1`` is a
    CountSketch.
    """
    bounds = np.arange(density + 1) * n_components // density
    low, high = bounds[:-1], bounds[1:]
    shape = (n_features, n_copies, density)
    offsets = (np.arange(n_copies) * n_components)[None, :, None]
    indices = offsets + low + rng.randint(0, high - low, size=shape)
    values = rng.choice([-1.0, 1.0], size=shape) / np.sqrt(density)
    return SparseTable(indices.reshape(n_features, -1), values.reshape(n_features, -1))


class SRHTFactor:
    """One randomised Hadamard transform ``x ↦ (H D x)[sample]`` (``H``
    unnormalised, size the next power of two of the input dimension)."""

    def __init__(self, n_features, sample, rng):
        size = next_power_of_two(n_features)
        self.signs = rng.choice([-1.0, 1.0], size=size)
        self.sample = np.ascontiguousarray(sample(size), dtype=np.int32)
        self._signs = {}

    def apply(self, X, row_scale, bias, scale, out, multiply, n_threads):
        size = len(self.signs)
        n_threads = threads_for(n_threads, X.shape[0], size * max(1, size.bit_length()))
        dtype = out.dtype
        if dtype not in self._signs:
            self._signs[dtype] = self.signs.astype(dtype)
        signs = self._signs[dtype]
        if sp.issparse(X):
            _kernels.srht_gather_csr(X.data, X.indices, X.indptr, X.shape[1], row_scale,
                                     bias, signs, self.sample, scale, out, multiply,
                                     n_threads)
        else:
            _kernels.srht_gather_dense(X, row_scale, bias, signs, self.sample, scale, out,
                                       multiply, n_threads)


def unit_scale(n_rows, dtype):
    return np.ones(n_rows, dtype=dtype)
